"""The model lifecycle over real binaries: train, validate, promote, deploy, then a canary of a
version that really predicts worse. Four edges serve Predict and receive Feedback labels from
load generators; the first wave's node reports its accuracy on those labels, the health gate
trips, and the controller rolls the fleet back on its own. The reason shows in the audit log,
in the events, and in a signed webhook checked here with an independent HMAC. REST starts a
job with plain HTTP, and an exported version runs in Python."""

import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

import torch

SECRET = "e2e-webhook-secret"


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def rest(port, method, body):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/admin/%s" % (port, method),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-Fedge-Principal": "ci-pipeline"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read() or b"{}")


def test(fleet):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret_file = os.path.join(fleet.work, "webhook.secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    try:
        run(fleet, server, secret_file)
    finally:
        server.shutdown()


def run(fleet, server, secret_file):
    cloud = fleet.start_cloud(extra=[
        "--webhook_urls=http://127.0.0.1:%d/hook" % server.server_address[1],
        "--webhook_secret_file=" + secret_file])
    edges = {}
    for i in range(4):
        edges["plant-%d" % i] = fleet.start_edge(
            "plant-%d" % i, ["--synthetic_site=%d" % i, "--labels=site=plant-%d" % i])
    fleet.wait_nodes(4)

    # Train and gate: the policy validates every new version on the synthetic holdout.
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    fleet.ctl("models", "policy", "pump", "--min_accuracy=0.8", "--holdout_synthetic",
              "--max_regression=0.05")
    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=6", "--min_clients=4")
    done = fleet.wait_job(job["id"])
    assert done["state"] == "JOB_SUCCEEDED", done
    v2 = fleet.ctl("models", "show", "pump", "--version=2")
    assert v2["validation"]["passed"], v2  # validated on registration
    # The untrained v1 fails its gate and cannot be promoted without --force.
    res = fleet.ctl("models", "validate", "pump", "--version=1", check=False, json_output=False)
    assert res.returncode == 1 and "FAILED" in res.stdout, res.stdout + res.stderr
    res = fleet.ctl("models", "promote", "pump", "--version=1", check=False, json_output=False)
    assert res.returncode == 1 and "cannot be promoted" in res.stderr, res.stderr
    assert "--force --reason=WHY" in res.stderr, res.stderr  # names the flags to pass
    fleet.ctl("models", "promote", "pump", "--version=2", "--reason=passed the gate")
    assert fleet.ctl("models", "show", "pump", "--version=2")["aliases"] == ["production"]
    lineage = fleet.ctl("models", "lineage", "pump", "--version=2")
    assert lineage["ancestors"][0]["version"] == "1" and lineage["job"]["id"] == job["id"]

    # Roll v2 out everywhere.
    res = fleet.ctl("deploy", "create", "--model=pump", "--version=2", "--watch",
                    json_output=False)
    assert res.returncode == 0, res.stdout + res.stderr

    # A version that really predicts worse: a fresh, untrained network.
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic", "--seed=99",
              "--reason=candidate from a bad export")
    loads = [subprocess.Popen(
        [os.path.join(fleet.build, "tools/loadgen/fedge-loadgen"),
         "--edge=127.0.0.1:%d" % ports["inference"], "--duration_ms=12000",
         "--interval_ms=10", "--offset=%d" % (i * 400)],
        stdout=subprocess.PIPE, text=True) for i, ports in enumerate(edges.values())]
    try:
        res = fleet.ctl("deploy", "create", "--model=pump", "--version=3", "--waves=0.25,0.5,1",
                        "--soak_ms=8000", "--min_feedback_accuracy=0.7", "--min_feedback=20",
                        "--reason=canary", "--watch", json_output=False, check=False)
    finally:
        outputs = [json.loads(p.communicate(timeout=60)[0]) for p in loads]
    assert res.returncode == 1, res.stdout + res.stderr  # rolled back: not a success
    deployments = fleet.ctl("deploy", "list")["deployments"]
    canary = [d for d in deployments if d["version"] == "3"][0]
    assert canary["state"] == "DEPLOYMENT_ROLLED_BACK", canary
    assert "accuracy on feedback" in canary["status_message"], canary
    waves = sorted(set(n["wave"] for n in canary["nodes"] if n["state"] != "pending"))
    assert waves == [1], canary  # it never left the first wave

    # Every edge ends on v2, and no request failed during the swaps.
    deadline = time.time() + 20
    while time.time() < deadline:
        nodes = fleet.ctl("nodes", "list")["nodes"]
        if all(n["active_versions"]["pump"]["version"] == "2" for n in nodes):
            break
        time.sleep(0.2)
    assert all(n["active_versions"]["pump"]["version"] == "2" for n in nodes), nodes
    assert sum(o["errors"] for o in outputs) == 0, outputs
    assert any("3" in o["by_version"] for o in outputs), outputs  # v3 really served

    # The reason is in the audit log and in the events.
    audit = fleet.ctl("models", "audit", "pump")["entries"]
    rollback = [e for e in audit if e["action"] == "deploy_rollback"]
    assert rollback and "accuracy on feedback" in rollback[0]["reason"], audit
    assert rollback[0]["principal"] == "controller"
    events = fleet.ctl("events", "list", "--types=deployment.", "--limit=100")["events"]
    kinds = [e["type"] for e in events]
    assert "deployment.rolled_back" in kinds and "deployment.completed" in kinds, kinds
    rolled = [e for e in events if e["type"] == "deployment.rolled_back"][0]
    assert "accuracy on feedback" in rolled["message"]

    # The webhook got it, signed: checked with Python's own HMAC.
    deadline = time.time() + 20
    while time.time() < deadline:
        hooks = [json.loads(b) for _, b in Receiver.received]
        if any(h.get("type") == "deployment.rolled_back" for h in hooks):
            break
        time.sleep(0.2)
    assert any(h.get("type") == "deployment.rolled_back" for h in hooks), hooks
    for headers, body in Receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Fedge-Signature-256"] == expected, headers
    deliveries = fleet.ctl("events", "deliveries", "--limit=500")["deliveries"]
    assert deliveries and all(d.get("delivered") for d in deliveries), deliveries[:3]

    # curl-style REST: start a job and read it back.
    status, started = rest(cloud["rest"], "StartJob",
                           {"spec": {"model": "pump", "rounds": 1, "min_clients": 1,
                                     "reason": "retrain from CI"}})
    assert status == 200 and started["id"].startswith("job-"), started
    assert started["creator"] == "ci-pipeline", started
    status, models = rest(cloud["rest"], "ListModels", {})
    assert status == 200 and models["models"][0]["name"] == "pump"
    try:
        rest(cloud["rest"], "GetVersion", {"model": "pump", "version": 42})
        assert False, "expected 404"
    except urllib.error.HTTPError as e:
        assert e.code == 404 and json.loads(e.read())["status"] == "NOT_FOUND"
    assert fleet.wait_job(started["id"])["state"] == "JOB_SUCCEEDED"

    # An exported version loads in Python and runs forward.
    path = os.path.join(fleet.work, "v2.pt")
    fleet.ctl("models", "export", "pump", "--version=2", "--out=" + path, json_output=False)
    m = torch.jit.load(path)
    out = m(torch.zeros(3, 12))
    assert tuple(out.shape) == (3, 5), out.shape


if __name__ == "__main__":
    fedge_e2e.run(test)
