"""A fleet with hostile members, against the real binaries: a coordinator with TLS under a
1,024 open-file limit keeps enrolling and training honest edges through 2,000 hostile TLS
connections; a user model whose code spins on data the model check never fed it is scored in
the helper, which is killed, not in the coordinator; and SIGTERM still stops the coordinator
within its grace period."""

import csv
import json
import os
import signal
import socket
import ssl
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

import torch

FEATURES = ["f%d" % i for i in range(4)]
LABELS = ["a", "b", "c"]


class Trap(torch.nn.Module):
    """Passes every check on ordinary data; spins forever on an input above 1e6."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        n = 0
        while bool(x.max() > 1e6):
            n += 1
        return self.fc(x)


def metric(port, series):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(series):
            total += float(line.rsplit(" ", 1)[1])
    return total


def flood(port, count):
    """`count` connections from 127.0.0.2 that finish TLS without a certificate and then idle."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            held.append(ctx.wrap_socket(s))
        except OSError:
            s.close()
    return held


def test(fleet):
    fleet.start_cloud(wrapper=("prlimit", "--nofile=1024:1024"),
                      extra=["--model_check_cpu_s=3", "--model_check_timeout_s=30",
                             "--shutdown_grace_s=10"])
    ports = fleet.cloud_ports

    # 2,000 hostile connections first, then honest edges enroll and train through them.
    held = flood(ports["fleet"], 2000)
    print("hostile connections that finished TLS:", len(held))
    token = fleet.enroll_token(uses=2)
    fleet.env["FEDGE_ENROLL_TOKEN"] = token
    start = time.time()
    for i in range(2):
        fleet.start_edge("edge-%d" % i, ["--synthetic_site=%d" % i])
    del fleet.env["FEDGE_ENROLL_TOKEN"]
    fleet.wait_nodes(2, timeout=60)
    print("two honest edges enrolled and connected in %.1f s" % (time.time() - start))
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=1", "--min_clients=2")
    done = fleet.wait_job(job["id"], timeout=120)
    assert done["state"] == "JOB_SUCCEEDED", done
    # fedgectl's JSON names zero fields too, so scripts can read them.
    assert done["rounds"][0]["partial"] == 0 and done["rounds"][0]["dropped"] == 0, done
    # The README's REST call, over HTTPS with the coordinator's CA.
    ctx = ssl.create_default_context(cafile=fleet.ca_file())
    req = urllib.request.Request(
        "https://localhost:%d/v1/admin/GetJob" % ports["rest"], method="POST",
        data=json.dumps({"id": job["id"]}).encode(), headers={"X-Fedge-Principal": "ci"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as res:
        assert json.loads(res.read())["state"] == "JOB_SUCCEEDED"
    refused = metric(ports["metrics"], "fedge_cloud_connections_refused_total")
    assert refused > 0, "the flood was not limited"
    print("connections refused or closed by the limits:", refused)
    for s in held:
        s.close()

    # A user model that spins on an input above 1e6: the check (ordinary data) accepts it...
    path = os.path.join(fleet.work, "trap.pt")
    torch.jit.save(torch.jit.script(Trap()), path)
    fleet.ctl("models", "register", "--name=trap", "--archive=" + path,
              "--features=" + ",".join(FEATURES), "--labels=" + ",".join(LABELS))
    # ...and validating it on data that trips it is refused by the helper's CPU limit, while the
    # coordinator stays responsive.
    holdout = os.path.join(fleet.work, "holdout.csv")
    with open(holdout, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FEATURES + ["label"])
        for i in range(50):
            w.writerow([1e7 if i == 0 else 0.5, 0.1, 0.2, 0.3, LABELS[i % 3]])
    start = time.time()
    res = fleet.ctl("models", "validate", "trap", "--holdout_csv=" + holdout, check=False,
                    json_output=False)
    took = time.time() - start
    assert res.returncode != 0, res.stdout
    assert "CPU limit" in res.stderr or "killed" in res.stderr, res.stderr
    print("validation refused in %.1f s: %s" % (took, res.stderr.strip()[:200]))
    assert fleet.ctl("nodes", "list").get("nodes"), "the coordinator stopped answering"

    # SIGTERM stops the coordinator within its grace period.
    proc = fleet.procs.pop("cloud")
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    print("coordinator stopped in %.1f s (exit %d)" % (time.time() - start, code))
    assert time.time() - start < 15


if __name__ == "__main__":
    fedge_e2e.run(test, secure=True)
