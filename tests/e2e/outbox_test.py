"""Pull the plug on the coordinator while edges serve traffic: Predict never fails, the edges'
outboxes keep every message, and after the cloud returns each message is applied exactly once,
also when the cloud is SIGKILLed again in the middle of delivering the backlog."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

EDGES = ["edge-0", "edge-1", "edge-2"]
# Short heartbeats so the edges queue many reports while the cloud is down.
CLOUD_FLAGS = ["--heartbeat_interval_ms=40"]
# Predict traffic runs through the outages and ends on its own.
LOADGEN_MS = 30000


def metric(port, name):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    raise KeyError(name)


def inbox_ids(fleet):
    """message ids applied per node, read from the coordinator's inbox.db."""
    db = os.path.join(fleet.work, "cloud", "inbox.db")
    if not os.path.exists(db):
        return {}
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT node_id, message_id FROM reports").fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        conn.close()
    ids = {}
    for node, mid in rows:
        ids.setdefault(node, []).append(mid)
    return ids


def test(fleet):
    fleet.start_cloud(extra=CLOUD_FLAGS)
    edges = {}
    for i, name in enumerate(EDGES):
        edges[name] = fleet.start_edge(name, ["--synthetic_site=%d" % i,
                                              "--synthetic_samples=6000"])
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    fleet.wait_nodes(len(EDGES))
    fleet.ctl("deploy", "create", "--model=pump", "--version=1", "--reason=serve v1")
    deadline = time.time() + 60
    while time.time() < deadline:
        nodes = fleet.ctl("nodes", "list").get("nodes", [])
        if sum(1 for n in nodes if "pump" in n.get("active_versions", {})) >= len(EDGES):
            break
        time.sleep(0.1)

    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=3", "--min_clients=3",
                    "--epochs=2", "--wait_for_clients_ms=120000", "--round_timeout_ms=120000")
    job_id = job["id"]
    fleet.wait_job(job_id, until=lambda j: j.get("rounds") and
                   j["rounds"][-1].get("state") == "training")

    loadgens = [subprocess.Popen(
        [os.path.join(fleet.build, "tools/loadgen/fedge-loadgen"),
         "--edge=127.0.0.1:%d" % ports["inference"], "--duration_ms=%d" % LOADGEN_MS,
         "--interval_ms=5", "--offset=%d" % (i * 500)],
        stdout=subprocess.PIPE, text=True) for i, ports in enumerate(edges.values())]
    try:
        # 1. Kill -9 mid-round and keep it down while the edges serve and queue.
        fleet.kill("cloud", signal.SIGKILL)
        outage_start_ms = int(time.time() * 1000)
        time.sleep(8)
        queued = {n: metric(p["metrics"], "fedge_edge_outbox_messages") for n, p in edges.items()}
        assert all(q >= 50 for q in queued.values()), queued

        # 2. Restart, and SIGKILL again while the backlog is being delivered. The backlog is
        # delivered fast, so try until a kill lands mid-delivery.
        killed_mid_delivery = False
        for attempt in range(5):
            last = {n: metric(p["metrics"], "fedge_edge_outbox_last_id") for n, p in edges.items()}
            fleet.start_cloud(fleet_port=fleet.cloud_ports["fleet"], extra=CLOUD_FLAGS)
            before = {n: max(ids) if ids else 0 for n, ids in inbox_ids(fleet).items()}
            t_end = time.time() + 10
            while time.time() < t_end:
                now = inbox_ids(fleet)
                got = {n: max(now.get(n, [0])) for n in EDGES}
                started = any(got[n] > before.get(n, 0) for n in EDGES)
                unfinished = any(got[n] < last[n] for n in EDGES)
                if started and unfinished:
                    fleet.kill("cloud", signal.SIGKILL)
                    killed_mid_delivery = True
                    print("killed mid-delivery: applied %s of %s" % (got, last))
                    break
                if not unfinished:
                    break
                time.sleep(0.005)
            if killed_mid_delivery:
                break
            # Too late this time: let a new backlog build up and try again.
            fleet.kill("cloud", signal.SIGKILL)
            time.sleep(4)
        assert killed_mid_delivery, "no kill landed while the backlog was being delivered"
        time.sleep(2)

        # 3. Back for good: the backlog drains and the job finishes.
        fleet.start_cloud(fleet_port=fleet.cloud_ports["fleet"], extra=CLOUD_FLAGS)
        fleet.wait_nodes(len(EDGES), timeout=60)
        after = fleet.wait_job(job_id, timeout=240)
        assert after["state"] == "JOB_SUCCEEDED", after
    finally:
        results = [lg.communicate(timeout=LOADGEN_MS / 1000 + 60)[0] for lg in loadgens]
    for out in results:
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["requests"] > 500, summary
        assert summary["errors"] == 0, summary

    # Wait until every outbox is empty, then stop the edges and the cloud.
    deadline = time.time() + 60
    while time.time() < deadline:
        if all(metric(p["metrics"], "fedge_edge_outbox_messages") == 0 for p in edges.values()):
            break
        time.sleep(0.1)
    for name in EDGES:
        fleet.kill(name, signal.SIGTERM)
    fleet.kill("cloud", signal.SIGTERM)

    # Exactly once, no gaps: every id an edge ever assigned is either applied once at the cloud
    # or still in the edge's outbox, never both.
    applied = inbox_ids(fleet)
    outage_rows = 0
    for name in EDGES:
        conn = sqlite3.connect(os.path.join(fleet.work, name, "outbox.db"))
        last_id = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()[0]
        pending = [r[0] for r in conn.execute("SELECT id FROM messages")]
        dropped = conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'dropped_%' AND value != '0'").fetchone()[0]
        conn.close()
        ids = applied.get(name, [])
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        assert not dupes, "%s: applied twice: %s" % (name, dupes[:10])
        assert not set(ids) & set(pending), name
        assert sorted(ids + pending) == list(range(1, last_id + 1)), (
            "%s: gaps: %s" % (name, sorted(set(range(1, last_id + 1)) - set(ids) - set(pending))[:10]))
        assert dropped == 0, name
        print("%s: %d messages, %d applied once, %d still queued" % (name, last_id, len(ids), len(pending)))
    conn = sqlite3.connect(os.path.join(fleet.work, "cloud", "inbox.db"))
    outage_rows = conn.execute("SELECT COUNT(*) FROM reports WHERE queued_unix_ms >= ?",
                               (outage_start_ms,)).fetchone()[0]
    conn.close()
    assert outage_rows >= 150, outage_rows


fedge_e2e.run(test)
