"""A real Prometheus server (Debian's `prometheus`) scrapes a live local fleet: one coordinator
and three edges of the real binaries. The fleet trains, deploys and serves; then every Grafana
panel expression in helm/fedge/dashboards and every alert expression in
helm/fedge/rules/fedge-alerts.yaml is evaluated through Prometheus's HTTP API. Each must be
valid PromQL; each panel must return data; every rule must load healthy; and the alerts that a
healthy fleet must not raise stay quiet.

Skipped, with a message, only when the prometheus binary is missing (scripts/bootstrap.sh
installs it)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "prometheus"))
import check_dashboards

SCRAPE_SECONDS = 1
# What Grafana would put in for its own variables on a short time range.
GRAFANA_VARIABLES = {"__rate_interval": "30s", "__range": "10m", "__interval": "2s"}
# With a fleet that trains, deploys and serves without trouble, these must not fire.
QUIET_ALERTS = {"FedgeCoordinatorDown", "FedgeRoundsFailing", "FedgeRolloutRolledBack",
                "FedgeEdgesOffline", "FedgeOutboxDrops", "FedgeNoRoundProgress"}


def free_port():
    # Prometheus takes no port 0, so ask the kernel for a free loopback port and hand it over.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_variables(expr):
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${%s}" % name, value).replace("$" + name, value)
    return expr


class Prometheus:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def get(self, path, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:  # a bad query answers 400 with a JSON error
            return json.loads(e.read())

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)

    def value(self, expr):
        res = self.query(expr)
        if res.get("status") != "success" or not res["data"]["result"]:
            return None
        return float(res["data"]["result"][0]["value"][1])

    def wait(self, what, check, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if check():
                    return
            except (OSError, ValueError):
                pass  # not up yet
            time.sleep(0.5)
        raise RuntimeError("prometheus: timed out waiting for " + what)


def start_prometheus(fleet, cloud, edges):
    work = os.path.join(fleet.work, "prometheus")
    os.makedirs(work)
    config = os.path.join(work, "prometheus.yml")
    rules = os.path.join(ROOT, "helm", "fedge", "rules", "fedge-alerts.yaml")
    # The job names are the ones the Helm chart's ServiceMonitor gives (the alerts read them).
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: %ds\n  evaluation_interval: %ds\n"
                "rule_files:\n  - %s\n"
                "scrape_configs:\n"
                "  - job_name: fedge-cloud\n    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n"
                "  - job_name: fedge-edge\n    static_configs:\n"
                "      - targets: [%s]\n"
                % (SCRAPE_SECONDS, SCRAPE_SECONDS, rules, cloud["metrics"],
                   ", ".join("'127.0.0.1:%d'" % e["metrics"] for e in edges)))
    port = free_port()
    fleet._start("prometheus", [
        shutil.which("prometheus"), "--config.file=" + config,
        "--storage.tsdb.path=" + os.path.join(work, "data"),
        "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"])
    prom = Prometheus(port)
    prom.wait("readiness", lambda: urllib.request.urlopen(prom.base + "/-/ready", timeout=2)
              .status == 200)
    targets = len(edges) + 1
    prom.wait("%d healthy targets" % targets,
              lambda: prom.value("sum(up)") == targets)
    return prom


def test(fleet):
    if shutil.which("prometheus") is None:
        print("SKIPPED: the prometheus binary is missing; run scripts/bootstrap.sh "
              "(it installs Debian's prometheus package)")
        return
    cloud = fleet.start_cloud()
    edges = [fleet.start_edge("plant-%d" % i, ["--synthetic_site=%d" % i,
                                               "--labels=site=plant-%d" % (i % 2),
                                               "--drift_window=40"])
             for i in range(3)]
    fleet.wait_nodes(3)
    prom = start_prometheus(fleet, cloud, edges)

    # The whole lifecycle, so that every panel has something to show.
    fleet.ctl("models", "register", "--name=pump", "--builtin=mlp", "--synthetic")
    job = fleet.ctl("jobs", "start", "--model=pump", "--rounds=3", "--min_clients=3")
    done = fleet.wait_job(job["id"])
    assert done["state"] == "JOB_SUCCEEDED", done
    res = fleet.ctl("deploy", "create", "--model=pump", "--version=2", "--watch",
                    json_output=False)
    assert res.returncode == 0, res.stdout + res.stderr
    loads = [subprocess.Popen(
        [os.path.join(fleet.build, "tools/loadgen/fedge-loadgen"),
         "--edge=127.0.0.1:%d" % e["inference"], "--duration_ms=4000", "--interval_ms=5"],
        stdout=subprocess.PIPE, text=True) for e in edges]
    for p in loads:
        out = json.loads(p.communicate(timeout=60)[0])
        assert out["errors"] == 0, out

    # Wait until Prometheus has seen the end of it all.
    prom.wait("the job in the metrics", lambda: prom.value(
        'fedge_cloud_jobs_finished_total{state="succeeded"}') == 1)
    prom.wait("the deployment in the metrics", lambda: prom.value(
        'fedge_cloud_deployment_state{model="pump",state="succeeded"}') == 1)
    prom.wait("predictions in the metrics", lambda: (prom.value(
        'sum(fedge_edge_predictions_total{result="ok"})') or 0) > 0)
    prom.wait("drift windows in the metrics", lambda: (prom.value(
        "sum(fedge_edge_drift_windows_total)") or 0) > 0)
    time.sleep(3 * SCRAPE_SECONDS)  # a few more samples for the rates

    # The active version as the edges report it, and the sites as labelled.
    assert prom.value('count(fedge_edge_model_info{model="pump",version="2"})') == 3
    assert prom.value('fedge_cloud_connected_nodes{site="plant-0"}') == 2
    assert prom.value('fedge_cloud_nodes{site="plant-1"}') == 1
    assert prom.value('sum(fedge_cloud_grpc_requests_total{method="Fleet.UploadUpdate",'
                      'code="OK"})') == 9  # 3 rounds x 3 edges

    # Every panel of every dashboard: valid, and with data.
    problems = []
    panels = 0
    dashboards_dir = os.path.join(ROOT, "helm", "fedge", "dashboards")
    for name in sorted(os.listdir(dashboards_dir)):
        with open(os.path.join(dashboards_dir, name)) as f:
            dashboard = json.load(f)
        for panel in check_dashboards.panels_of(dashboard):
            for target in panel.get("targets", []):
                expr = with_variables(target["expr"])
                panels += 1
                res = prom.query(expr)
                where = "%s panel %r (%s)" % (name, panel.get("title"), expr)
                if res.get("status") != "success":
                    problems.append("%s: %s" % (where, res.get("error")))
                elif not res["data"]["result"]:
                    problems.append("%s: no data" % where)
    assert not problems, "\n".join(problems)
    assert panels >= 40, panels

    # Every rule: loaded and evaluated without error; every alert expression is valid PromQL.
    prom.wait("a rule evaluation", lambda: all(
        r.get("lastEvaluation", "").startswith("20") and r["health"] == "ok"
        for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]))
    groups = prom.get("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 7, rules
    firing = set()
    for rule in rules:
        assert rule["health"] == "ok", rule
        res = prom.query(rule["query"])
        assert res.get("status") == "success", (rule["name"], res)
        if rule.get("state") in ("pending", "firing"):
            firing.add(rule["name"])
    assert not (firing & QUIET_ALERTS), (firing, rules)
    print("prometheus: %d panel expressions with data, %d rules healthy, active: %s"
          % (panels, len(rules), sorted(firing) or "none"))


if __name__ == "__main__":
    fedge_e2e.run(test)
