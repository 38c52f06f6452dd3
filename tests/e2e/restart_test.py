"""SIGKILL the coordinator mid-round; after a restart the registry is intact and the job
continues from its last completed round."""

import hashlib
import os
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

ROUNDS = 6


def test(fleet):
    fleet.start_cloud()
    # Enough local data that a round takes a moment, so the kill lands inside one.
    for i in range(3):
        fleet.start_edge("edge-%d" % i, ["--synthetic_site=%d" % i, "--synthetic_samples=6000"])
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    fleet.wait_nodes(3)
    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=%d" % ROUNDS, "--min_clients=3",
                    "--epochs=2", "--holdout_synthetic", "--wait_for_clients_ms=60000")
    job_id = job["id"]

    # Wait until two rounds are done and the third is training, then kill -9.
    def mid_round(j):
        rounds = j.get("rounds", [])
        return (j.get("completed_rounds", 0) >= 2 and rounds
                and rounds[-1].get("state") == "training")
    before = fleet.wait_job(job_id, until=mid_round)
    assert before["state"] == "JOB_RUNNING", before
    fleet.kill("cloud", signal.SIGKILL)
    done_before = [r for r in before["rounds"] if r.get("state") == "done"]
    completed = before["completed_rounds"]
    assert [r["round"] for r in done_before] == list(range(1, completed + 1)), done_before

    # The registry file is intact after the kill.
    db = os.path.join(fleet.work, "cloud", "registry.db")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    # Restart on the same fleet port; the edges reconnect by themselves.
    fleet.start_cloud(fleet_port=fleet.cloud_ports["fleet"])
    after = fleet.wait_job(job_id, timeout=180)
    assert after["state"] == "JOB_SUCCEEDED", after
    rounds = after["rounds"]
    done = [r for r in rounds if r.get("state") == "done"]
    # Every round completed exactly once, in order; the ones before the kill are unchanged.
    assert [r["round"] for r in done] == list(range(1, ROUNDS + 1)), [r["round"] for r in done]
    for old, new in zip(done_before, done[:completed]):
        assert old == new, (old, new)
    # The round in flight at the kill is recorded as interrupted, then run again.
    interrupted = [r for r in rounds if r.get("state") == "interrupted"]
    assert [r["round"] for r in interrupted] == [completed + 1], rounds

    versions = fleet.ctl("models", "versions", "pump")["versions"]
    assert [v["version"] for v in versions] == ["1", "2"], versions
    assert versions[1]["job_id"] == job_id and versions[1]["round"] == ROUNDS
    # Every blob still matches its digest.
    for v in versions:
        path = os.path.join(fleet.work, "cloud", "blobs", v["sha256"][:2], v["sha256"])
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == v["sha256"]


if __name__ == "__main__":
    fedge_e2e.run(test)
