"""A user's own TorchScript model: scripted and saved by Python here, registered with fedgectl,
federated for 2 rounds over edges reading CSV files, exported, and served. Python's output on
fixed inputs equals the edge's Predict within 1e-5."""

import csv
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

import torch

FEATURES = ["f%d" % i for i in range(6)]
LABELS = ["low", "mid", "high"]


class UserNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc2 = torch.nn.Linear(16, 3)
        self.register_buffer("temperature", torch.tensor([1.5]))

    def forward(self, x):
        h = torch.relu(self.norm(self.fc1(x)))
        return self.fc2(h) / self.temperature


def write_csv(path, rng, n, shift):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FEATURES + ["label"])
        for _ in range(n):
            x = [rng.gauss(0, 1) + shift for _ in FEATURES]
            s = x[0] + 0.5 * x[1] - x[2]
            label = 0 if s < -0.5 else (1 if s < 0.5 else 2)
            w.writerow(["%.5f" % v for v in x] + [LABELS[label]])


def test(fleet):
    torch.manual_seed(0)
    model_path = os.path.join(fleet.work, "user.pt")
    torch.jit.save(torch.jit.script(UserNet()), model_path)

    rng = random.Random(3)
    fleet.start_cloud()
    edges = {}
    for i in range(2):
        data = os.path.join(fleet.work, "site%d.csv" % i)
        write_csv(data, rng, 400, shift=0.3 * i)
        edges["edge-%d" % i] = fleet.start_edge(
            "edge-%d" % i, ["--data_csv=" + data, "--label_names=" + ",".join(LABELS)])
    fleet.ctl("models", "register", "--name=user-net", "--archive=" + model_path,
              "--features=" + ",".join(FEATURES), "--labels=" + ",".join(LABELS))
    fleet.wait_nodes(2)
    job = fleet.ctl("jobs", "start", "--model=user-net", "--rounds=2", "--min_clients=2",
                    "--lr=0.05")
    done = fleet.wait_job(job["id"])
    assert done["state"] == "JOB_SUCCEEDED", done
    assert [r["round"] for r in done["rounds"]] == [1, 2]

    exported = os.path.join(fleet.work, "exported.pt")
    fleet.ctl("models", "export", "user-net", "--out=" + exported, json_output=False)
    trained = torch.jit.load(exported)
    trained.eval()
    # Federated training changed the weights, and the buffer travelled with the model.
    original = torch.jit.load(model_path)
    assert not torch.equal(trained.fc1.weight, original.fc1.weight)
    assert torch.equal(trained.temperature, original.temperature)

    fleet.ctl("deploy", "create", "--model=user-net", "--version=2")
    inputs = [[0.1, -0.2, 0.3, 0.0, 1.0, -1.0], [2.0, 1.5, -0.5, 0.25, -0.75, 0.5]]
    for values in inputs:
        expected = trained(torch.tensor([values]))[0].tolist()
        for node, ports in edges.items():
            argv = [os.path.join(fleet.build, "tools/fedgectl/fedgectl"), "predict",
                    "--output=json", "--edge=127.0.0.1:%d" % ports["inference"],
                    "--model=user-net", "--values=" + ",".join(repr(v) for v in values)]
            for _ in range(100):  # until the deploy has reached the edge
                res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                if res.returncode == 0 and json.loads(res.stdout)["version"]["version"] == "2":
                    break
                import time
                time.sleep(0.1)
            got = json.loads(res.stdout)["prediction"]["scores"]
            assert len(got) == 3
            for g, e in zip(got, expected):
                assert abs(g - e) <= 1e-5, (node, got, expected)


if __name__ == "__main__":
    fedge_e2e.run(test)
