"""What an independent client sees: gRPC reflection lists fedge's services and the health
service on every server, health checks answer SERVING, /metrics serves fedge metrics, and
--help on every binary explains its flags and exits 0. The gRPC calls are encoded by hand
here, so the check depends on nothing fedge generated."""

import os
import re
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedge_e2e

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf, i):
    """Returns (value, next index) of the varint at buf[i]."""
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, i = read_varint(buf, i)
            yield num, wt, value
        elif wt == 2:
            n, i = read_varint(buf, i)
            yield num, wt, buf[i:i + n]
            i += n
        else:
            raise ValueError("unexpected wire type %d" % wt)


def list_services(port):
    channel = grpc.insecure_channel("127.0.0.1:%d" % port)
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    # ServerReflectionRequest { string list_services = 7; }
    request = b"\x3a" + varint(1) + b"*"
    names = []
    for response in call(iter([request]), timeout=10):
        for num, _, value in fields(response):
            if num == 6:  # list_services_response
                for _, _, service in fields(value):
                    for n, _, name in fields(service):
                        if n == 1:
                            names.append(name.decode())
    channel.close()
    return names


def health(port, service=""):
    channel = grpc.insecure_channel("127.0.0.1:%d" % port)
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    request = (b"\x0a" + varint(len(service)) + service.encode()) if service else b""
    response = check(request, timeout=10)
    channel.close()
    status = dict((n, v) for n, _, v in fields(response)).get(1, 0)
    return status  # 1 = SERVING


def test(fleet):
    cloud = fleet.start_cloud()
    edge = fleet.start_edge("edge-0", ["--synthetic_site=0"])

    fleet_services = list_services(cloud["fleet"])
    admin_services = list_services(cloud["admin"])
    edge_services = list_services(edge["inference"])
    assert "fedge.v1.Fleet" in fleet_services, fleet_services
    assert "fedge.v1.Admin" in admin_services, admin_services
    assert "fedge.v1.Inference" in edge_services, edge_services
    for services in (fleet_services, admin_services, edge_services):
        assert "grpc.health.v1.Health" in services, services
        assert "grpc.reflection.v1alpha.ServerReflection" in services, services
    assert "fedge.v1.Admin" not in fleet_services  # the ports stay apart
    for port in (cloud["fleet"], cloud["admin"], edge["inference"]):
        assert health(port) == 1
    assert health(cloud["fleet"], "fedge.v1.Fleet") == 1

    fleet.wait_nodes(1)
    # The edge has no site label, so it counts under site="none". The health and reflection
    # calls above are not fedge methods, so the coordinator counts them as method="other".
    for port, metrics in ((cloud["metrics"], ['fedge_cloud_connected_nodes{site="none"} 1',
                                              'fedge_cloud_nodes{site="none"} 1',
                                              'fedge_cloud_grpc_requests_total{code="OK",'
                                              'method="Admin.ListJobs"} 0']),
                          (edge["metrics"], ["fedge_edge_connected 1"])):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
        for metric in metrics:
            assert metric in text, (metric, text[:2000])
        assert urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10).status == 200
        other = re.search(r'fedge_cloud_grpc_requests_total\{code="OK",method="other"\} (\d+)', text)
        if port == cloud["metrics"]:
            assert other and int(other.group(1)) >= 3, text
        # The exposition passes Prometheus's own linter.
        check = subprocess.run([fedge_e2e.promtool(), "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    binaries = {
        "cloud/fedge-cloud": ["--data_dir", "--fleet_address", "--admin_address",
                              "--metrics_address", "--ports_file", "--verbosity"],
        "edge/fedge-edge": ["--node_id", "--cloud", "--state_dir", "--data_csv",
                            "--label_column", "--synthetic_site", "--inference_address"],
        "tools/fedgectl/fedgectl": ["--admin", "--output", "--rounds", "--selector"],
        "tools/baseline/fedge-baseline": ["--archive", "--epochs"],
    }
    for path, flags in binaries.items():
        res = subprocess.run([os.path.join(fleet.build, path), "--help"], capture_output=True,
                             text=True, timeout=30)
        text = res.stdout + res.stderr
        assert res.returncode == 0, (path, "--help exited %d" % res.returncode, text[:500])
        assert "No flags matched" not in text, (path, text[:500])
        for flag in flags:
            assert flag in text, (path, flag, text[:3000])

    # Every flag can come from a --flagfile, as systemd units and Kubernetes pass them.
    flagfile = os.path.join(fleet.work, "fedgectl.flags")
    with open(flagfile, "w") as f:
        f.write("--admin=127.0.0.1:%d\n--insecure\n--output=json\n" % cloud["admin"])
    res = subprocess.run([os.path.join(fleet.build, "tools/fedgectl/fedgectl"),
                          "--flagfile=" + flagfile, "nodes", "list"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and '"node_id": "edge-0"' in res.stdout, res.stdout + res.stderr
    edge_flags = os.path.join(fleet.work, "edge.flags")
    with open(edge_flags, "w") as f:
        f.write("--node_id=edge-f\n--state_dir=%s\n--cloud=\n--inference_address=127.0.0.1:0\n"
                "--metrics_address=127.0.0.1:0\n--ports_file=%s\n"
                % (os.path.join(fleet.work, "edge-f"), os.path.join(fleet.work, "edge-f.ports")))
    proc = subprocess.Popen([os.path.join(fleet.build, "edge/fedge-edge"), "--flagfile=" + edge_flags],
                            stderr=subprocess.DEVNULL)
    try:
        ports = fleet._ports(os.path.join(fleet.work, "edge-f.ports"))
        assert health(ports["inference"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # A wrong command line exits 2; a refusal from the cloud exits 1.
    ctl = [os.path.join(fleet.build, "tools/fedgectl/fedgectl"), "--insecure",
           "--admin=127.0.0.1:%d" % cloud["admin"]]
    assert subprocess.run(ctl + ["models", "promote", "nope"], capture_output=True).returncode == 2
    assert subprocess.run(ctl + ["models", "show", "nope"], capture_output=True).returncode == 1
    assert subprocess.run(ctl + ["bogus"], capture_output=True).returncode == 2

    # Retraining from the command line: a policy, then the manual trigger.
    fleet.ctl("models", "register", "--name=svc", "--builtin=mlp", "--synthetic")
    res = fleet.ctl("models", "retrain-policy", "svc", "--drift_quorum_nodes=2", "--rounds=1",
                    json_output=False, check=False)
    assert res.returncode == 0 and "retraining enabled" in res.stdout, res.stdout + res.stderr
    job = fleet.ctl("models", "retrain", "svc", "--reason=new labels")
    assert job["spec"]["trigger"] == "manual: new labels", job
    assert fleet.wait_job(job["id"])["state"] == "JOB_SUCCEEDED"
    res = fleet.ctl("models", "retrain", "nope", check=False, json_output=False)
    assert res.returncode == 1 and "no retraining policy" in res.stderr, res.stderr

    # Bad flags get a message naming the problem, not a crash.
    res = subprocess.run([os.path.join(fleet.build, "edge/fedge-edge"), "--node_id=x",
                          "--state_dir=" + os.path.join(fleet.work, "s"), "--insecure",
                          "--data_csv=/nonexistent.csv"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and "nonexistent.csv" in res.stderr, res.stderr

    # Plaintext is an explicit choice, and it is logged loudly.
    with open(os.path.join(fleet.work, "cloud.log"), errors="replace") as f:
        assert "--insecure: the Fleet, Admin and REST ports are PLAINTEXT" in f.read()
    # TLS files that cannot be used stop the coordinator with a message naming them.
    res = subprocess.run([os.path.join(fleet.build, "cloud/fedge-cloud"),
                          "--data_dir=" + os.path.join(fleet.work, "tls-cloud"),
                          "--fleet_address=127.0.0.1:0", "--admin_address=127.0.0.1:0",
                          "--metrics_address=127.0.0.1:0", "--rest_address=",
                          "--tls_cert=/nonexistent/tls.crt", "--tls_key=/nonexistent/tls.key"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "/nonexistent/tls.crt" in res.stderr, res.stderr
    res = subprocess.run([os.path.join(fleet.build, "cloud/fedge-cloud"),
                          "--data_dir=" + os.path.join(fleet.work, "tls-cloud"),
                          "--tls_cert=/nonexistent/tls.crt"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and "--tls_key" in res.stderr, res.stderr
    # An edge dialling a TLS coordinator needs the CA to trust.
    res = subprocess.run([os.path.join(fleet.build, "edge/fedge-edge"), "--node_id=x",
                          "--state_dir=" + os.path.join(fleet.work, "s2"),
                          "--metrics_address=127.0.0.1:0", "--inference_address=127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--ca_file" in res.stderr, res.stderr


if __name__ == "__main__":
    fedge_e2e.run(test)
