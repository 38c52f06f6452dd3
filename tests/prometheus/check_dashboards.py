#!/usr/bin/env python3
"""Checks the Grafana dashboards and the alert rules in helm/fedge.

Every dashboard must be JSON with a `datasource` template variable of type prometheus; every
panel and every target must use that variable as its data source; every target needs a PromQL
expression that uses no template variable but the ones Grafana itself defines; dashboard uids
must be unique; and every fedge_ metric that a dashboard or an alert reads must be listed in
docs/metrics.md. When promtool is available, each expression is also parsed by promtool, as a
recording rule in a temporary rules file.

Usage: check_dashboards.py [--root DIR] [--promtool PATH]
Exits 1 and names the dashboard and panel of every problem found.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, which a later test replaces by concrete durations.
ALLOWED_VARIABLES = {"__rate_interval", "__range", "__interval"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bfedge_[a-z0-9_]+\b")
VARIABLE_RE = re.compile(r"\$\{?(\w+)")


def documented_metrics(metrics_md):
    """Metric names in the first column of the tables of docs/metrics.md."""
    names = set()
    with open(metrics_md, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\|\s*`(fedge_[a-z0-9_]+)`\s*\|", line)
            if m:
                names.add(m.group(1))
    return names


def undocumented(expr, documented):
    missing = []
    for name in METRIC_RE.findall(expr):
        if name in documented:
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base in documented:
            continue
        missing.append(name)
    return sorted(set(missing))


def panels_of(dashboard):
    """All panels, including those folded into rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        for inner in panel.get("panels", []):
            yield inner


def concrete(expr):
    """The expression as Prometheus would receive it from Grafana."""
    for name in ALLOWED_VARIABLES:
        expr = expr.replace("${%s}" % name, "5m").replace("$" + name, "5m")
    return expr


class Checker:
    def __init__(self, root):
        self.root = root
        self.errors = []
        self.documented = documented_metrics(os.path.join(root, "docs", "metrics.md"))
        # (record name, where, expression) for the promtool parse.
        self.expressions = []

    def error(self, where, message):
        self.errors.append(f"{where}: {message}")

    def check_dashboard(self, path, uids):
        name = os.path.relpath(path, self.root)
        try:
            with open(path, encoding="utf-8") as f:
                dashboard = json.load(f)
        except (OSError, ValueError) as e:
            self.error(name, f"not valid JSON: {e}")
            return
        uid = dashboard.get("uid")
        if not uid:
            self.error(name, "has no uid")
        elif uid in uids:
            self.error(name, f"uid {uid!r} is also the uid of {uids[uid]}")
        else:
            uids[uid] = name
        if "fedge" not in dashboard.get("tags", []):
            self.error(name, "lacks the tag 'fedge'")

        variables = dashboard.get("templating", {}).get("list", [])
        datasource_vars = [v for v in variables if v.get("name") == "datasource"]
        if not datasource_vars:
            self.error(name, "has no template variable 'datasource'")
        elif (datasource_vars[0].get("type") != "datasource"
              or datasource_vars[0].get("query") != "prometheus"):
            self.error(name, "variable 'datasource' must have type 'datasource' and query "
                       "'prometheus'")
        extra = [v.get("name") for v in variables if v.get("name") != "datasource"]
        if extra:
            self.error(name, f"has template variables other than 'datasource': {extra}")

        panels = list(panels_of(dashboard))
        if not panels:
            self.error(name, "has no panels")
        ids = set()
        for panel in panels:
            where = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
            if panel.get("id") in ids:
                self.error(where, "panel id is used twice")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            if panel.get("datasource") != DATASOURCE:
                self.error(where, f"datasource must be {DATASOURCE}, "
                           f"not {panel.get('datasource')}")
            targets = panel.get("targets") or []
            if not targets:
                self.error(where, "has no targets")
            for target in targets:
                self.check_target(where, uid, panel, target)

    def check_target(self, where, uid, panel, target):
        where = f"{where} target {target.get('refId')}"
        if target.get("datasource") != DATASOURCE:
            self.error(where, f"datasource must be {DATASOURCE}, not {target.get('datasource')}")
        expr = target.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            self.error(where, "has no expr")
            return
        if re.search(r"\bjob\s*(=|!=|=~|!~)", expr):
            self.error(where, f"selects a scrape job; select by metric name only: {expr}")
        for variable in VARIABLE_RE.findall(expr):
            if variable not in ALLOWED_VARIABLES:
                self.error(where, f"uses ${variable}; only {sorted(ALLOWED_VARIABLES)} may "
                           f"appear in an expression")
        for metric in undocumented(expr, self.documented):
            self.error(where, f"{metric} is not listed in docs/metrics.md")
        record = "dashboard_check:{}:panel{}_{}".format(
            re.sub(r"[^a-zA-Z0-9_]", "_", str(uid)), panel.get("id"), target.get("refId"))
        self.expressions.append((record, where, concrete(expr)))

    def check_rules(self, path):
        name = os.path.relpath(path, self.root)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError as e:
            self.error(name, f"cannot read: {e}")
            return
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
            for metric in undocumented(text, self.documented):
                self.error(f"{name}:{number}", f"{metric} is not listed in docs/metrics.md")

    def parse_with_promtool(self, promtool):
        """Parses every dashboard expression with `promtool check rules`."""
        by_record = {record: where for record, where, _ in self.expressions}
        with tempfile.TemporaryDirectory() as tmp:
            rules = os.path.join(tmp, "dashboard-expressions.yaml")
            with open(rules, "w", encoding="utf-8") as f:
                f.write("groups:\n  - name: dashboard_expressions\n    rules:\n")
                for record, _, expr in self.expressions:
                    # A JSON string is a valid YAML double-quoted scalar.
                    f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
            result = subprocess.run([promtool, "check", "rules", rules], capture_output=True,
                                    text=True, check=False)
        if result.returncode == 0:
            return
        output = result.stdout + result.stderr
        named = False
        for line in output.splitlines():
            for record, where in by_record.items():
                if f'"{record}"' in line:
                    self.error(where, "promtool cannot parse the expression: "
                               + line.split(f'"{record}":', 1)[-1].strip())
                    named = True
        if not named:
            self.error("promtool check rules", output.strip())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                        help="the repository (default: two levels above this script)")
    parser.add_argument("--promtool", help="promtool to parse expressions with (default: the "
                        "one on PATH; without one, expressions are not parsed)")
    args = parser.parse_args()

    checker = Checker(args.root)
    dashboards_dir = os.path.join(args.root, "helm", "fedge", "dashboards")
    paths = sorted(os.path.join(dashboards_dir, n) for n in os.listdir(dashboards_dir)
                   if n.endswith(".json"))
    if not paths:
        checker.error(dashboards_dir, "holds no dashboard")
    uids = {}
    for path in paths:
        checker.check_dashboard(path, uids)
    rules_dir = os.path.join(args.root, "helm", "fedge", "rules")
    for n in sorted(os.listdir(rules_dir)):
        if n.endswith((".yaml", ".yml")):
            checker.check_rules(os.path.join(rules_dir, n))

    promtool = args.promtool or shutil.which("promtool")
    if args.promtool and not os.access(args.promtool, os.X_OK):
        checker.error(args.promtool, "not an executable promtool")
    elif promtool and checker.expressions:
        checker.parse_with_promtool(promtool)

    for e in checker.errors:
        print(e, file=sys.stderr)
    if checker.errors:
        print(f"FAILED: {len(checker.errors)} problem(s)", file=sys.stderr)
        return 1
    parsed = "parsed with " + promtool if promtool else "not parsed (no promtool on PATH)"
    print(f"OK: {len(paths)} dashboards, {len(checker.expressions)} expressions ({parsed}), "
          f"{len(checker.documented)} documented metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
