"""Helpers for end-to-end tests that drive the real fedge binaries over loopback.

Every server binds port 0 on 127.0.0.1 and reports its ports through --ports_file. Processes
are killed when the test ends, whatever happens.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class Fleet:
    """secure=False runs the coordinator with --insecure (plaintext, edges name themselves);
    secure=True runs it with TLS and its own CA, and edges enroll with tokens."""

    def __init__(self, build_dir, secure=False):
        self.build = os.path.abspath(build_dir)
        self.secure = secure
        self.work = tempfile.mkdtemp(prefix="fedge-e2e-")
        self.procs = {}
        self.env = dict(os.environ, OMP_NUM_THREADS="1")

    # --- processes ---------------------------------------------------------------------------

    def _start(self, name, argv):
        log = open(os.path.join(self.work, name + ".log"), "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env)
        self.procs[name] = proc
        return proc

    def _ports(self, path, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    lines = [l.strip() for l in f if "=" in l]
                if lines:
                    return {k: int(v) for k, v in (l.split("=", 1) for l in lines)}
            time.sleep(0.05)
        raise RuntimeError("no ports file %s; logs in %s" % (path, self.work))

    def start_cloud(self, fleet_port=0, extra=(), wrapper=()):
        """`wrapper` runs before the binary, e.g. ("prlimit", "--nofile=1024:1024")."""
        ports_file = os.path.join(self.work, "cloud.ports")
        if os.path.exists(ports_file):
            os.remove(ports_file)
        self._start("cloud", list(wrapper) + [
            os.path.join(self.build, "cloud/fedge-cloud"),
            "--data_dir=" + os.path.join(self.work, "cloud"),
            "--fleet_address=127.0.0.1:%d" % fleet_port,
            "--admin_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
            "--rest_address=127.0.0.1:0",
            "--ports_file=" + ports_file, "--heartbeat_interval_ms=300",
        ] + ([] if self.secure else ["--insecure"]) + list(extra))
        self.cloud_ports = self._ports(ports_file)
        return self.cloud_ports

    def ca_file(self):
        """The coordinator's own CA, which signs its server certificate and the nodes'."""
        return os.path.join(self.work, "cloud", "ca", "ca.crt")

    def enroll_token(self, uses=1, labels=""):
        args = ["nodes", "token", "create", "--uses=%d" % uses]
        if labels:
            args.append("--node_labels=" + labels)
        return self.ctl(*args)["secret"]

    def start_edge(self, node_id, extra=()):
        ports_file = os.path.join(self.work, node_id + ".ports")
        self._start(node_id, [
            os.path.join(self.build, "edge/fedge-edge"),
            "--node_id=" + node_id,
            "--cloud=127.0.0.1:%d" % self.cloud_ports["fleet"],
            "--state_dir=" + os.path.join(self.work, node_id),
            "--inference_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
            "--ports_file=" + ports_file, "--max_backoff_ms=500",
        ] + (["--ca_file=" + self.ca_file()] if self.secure else ["--insecure"]) + list(extra))
        return self._ports(ports_file)

    def kill(self, name, sig=signal.SIGKILL):
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(timeout=20)

    def stop_all(self):
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def dump_logs(self):
        for name in sorted(os.listdir(self.work)):
            if name.endswith(".log"):
                with open(os.path.join(self.work, name), errors="replace") as f:
                    tail = f.readlines()[-30:]
                sys.stderr.write("---- %s ----\n%s" % (name, "".join(tail)))

    # --- fedgectl ----------------------------------------------------------------------------

    def ctl(self, *args, check=True, json_output=True):
        argv = [os.path.join(self.build, "tools/fedgectl/fedgectl"),
                "--admin=127.0.0.1:%d" % self.cloud_ports["admin"],
                "--ca_file=" + self.ca_file() if self.secure else "--insecure"]
        if json_output:
            argv.append("--output=json")
        res = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise RuntimeError("fedgectl %s failed: %s" % (" ".join(args), res.stderr))
        if json_output and res.returncode == 0:
            return json.loads(res.stdout) if res.stdout.strip() else {}
        return res

    def wait_nodes(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            nodes = self.ctl("nodes", "list").get("nodes", [])
            if sum(1 for n in nodes if n.get("connected") and n.get("alive")) >= count:
                return nodes
            time.sleep(0.1)
        raise RuntimeError("fewer than %d nodes connected" % count)

    def wait_job(self, job_id, timeout=120, until=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.ctl("jobs", "status", job_id)
            if until is not None and until(job):
                return job
            if job.get("state") in ("JOB_SUCCEEDED", "JOB_FAILED"):
                return job
            time.sleep(0.05)
        raise RuntimeError("job %s did not finish" % job_id)


def promtool():
    """The path of Prometheus's promtool; scripts/bootstrap.sh installs it (Debian's prometheus)."""
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool not found: run scripts/bootstrap.sh (it installs the "
                           "prometheus package)")
    return path


def run(test, secure=False):
    """Runs test(fleet) with the build dir from argv[1]; exits non-zero on failure."""
    fleet = Fleet(sys.argv[1], secure=secure)
    ok = False
    try:
        test(fleet)
        ok = True
    finally:
        fleet.stop_all()
        if not ok:
            fleet.dump_logs()
        subprocess.run(["rm", "-rf", fleet.work])
    print("1 passed, 0 failed")
