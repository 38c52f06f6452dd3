"""The secure path with the real binaries: a coordinator with TLS and its own CA, edges that
enroll with a token and then talk mutual TLS, a training job over it, an edge without a token
that stays out, and a revoked edge that is cut off."""

import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e


def wait(predicate, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


def log_of(fleet, name):
    with open(os.path.join(fleet.work, name + ".log"), errors="replace") as f:
        return f.read()


def test(fleet):
    fleet.start_cloud()
    ca = fleet.ca_file()
    assert os.path.exists(ca), ca
    assert stat.S_IMODE(os.stat(os.path.join(fleet.work, "cloud", "ca", "ca.key")).st_mode) == 0o600

    # fedgectl without our CA does not trust the coordinator, and says what to pass.
    import subprocess
    res = subprocess.run([os.path.join(fleet.build, "tools/fedgectl/fedgectl"),
                          "--admin=127.0.0.1:%d" % fleet.cloud_ports["admin"], "--timeout_s=5",
                          "nodes", "list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "--ca_file" in res.stderr, res.stderr
    # Plaintext does not reach a TLS coordinator either.
    res = subprocess.run([os.path.join(fleet.build, "tools/fedgectl/fedgectl"), "--insecure",
                          "--admin=127.0.0.1:%d" % fleet.cloud_ports["admin"], "--timeout_s=5",
                          "nodes", "list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr

    token = fleet.enroll_token(uses=2, labels="region=north")
    fleet.env["FEDGE_ENROLL_TOKEN"] = token
    for i in range(2):
        fleet.start_edge("edge-%d" % i, ["--synthetic_site=%d" % i, "--labels=region=south"])
    del fleet.env["FEDGE_ENROLL_TOKEN"]
    nodes = fleet.wait_nodes(2)
    # The labels bound by the token win over what the edge claims.
    assert all(n["labels"]["region"] == "north" for n in nodes), nodes
    for i in range(2):
        key = os.path.join(fleet.work, "edge-%d" % i, "tls", "node.key")
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, oct(os.stat(key).st_mode)

    # A third edge without a token serves locally but never joins.
    fleet.start_edge("edge-x", ["--synthetic_site=2"])
    wait(lambda: "enroll_token" in log_of(fleet, "edge-x"), "edge-x to say it needs a token")
    # The token is spent: a second edge with it is refused.
    fleet.env["FEDGE_ENROLL_TOKEN"] = token
    fleet.start_edge("edge-y", ["--synthetic_site=3"])
    del fleet.env["FEDGE_ENROLL_TOKEN"]
    wait(lambda: "used 2 of 2" in log_of(fleet, "edge-y"), "edge-y to be refused")
    access = fleet.ctl("nodes", "access")["nodes"]
    assert sorted(n["node_id"] for n in access) == ["edge-0", "edge-1"], access

    # Federated training over mutual TLS.
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=2", "--min_clients=2",
                    "--holdout_synthetic")
    done = fleet.wait_job(job["id"])
    assert done["state"] == "JOB_SUCCEEDED", done

    # Revoking edge-1 cuts it off at once; it stays out although it keeps retrying.
    fleet.ctl("nodes", "revoke", "edge-1", "--reason=decommissioned")
    def edge1_gone():
        ns = {n["node_id"]: n for n in fleet.ctl("nodes", "list").get("nodes", [])}
        return not ns["edge-1"].get("connected")
    wait(edge1_gone, "edge-1 to be disconnected")
    time.sleep(2)
    assert edge1_gone()
    assert "revoked" in log_of(fleet, "edge-1")
    audit = fleet.ctl("models", "audit")
    actions = [e["action"] for e in audit.get("entries", [])]
    assert "node.revoke" in actions and "enrollment_token.create" in actions, actions


if __name__ == "__main__":
    fedge_e2e.run(test, secure=True)
