"""The management server under devices reporting every second: its CPU share and API latency.

``python -m tools.bench_mgmt [--devices 50] [--seconds 10] [--pairs 100]``

Starts ``twistd rcn-mgmt`` as its own process with a topology of ``--devices``
devices (a fifth of them edges, the rest cores in a ring, every edge linked to
two cores) and ``--pairs`` ordered pairs between edges. Then, in this process,
that many AMP clients (``rcn.mgmtlink.client.MgmtClient``) register and report
figures shaped like an edge's ``/status`` every second, while a reader asks the
REST API for ``/status`` (the per-pair figures the dashboard polls) ten times a
second. The server's CPU comes from ``/proc``; the baseline row is the same API
load with no device connected, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api(base: str, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def configure(base: str, token: str, devices: int, pairs: int, amp_port: int) -> list[dict]:
    edges = max(2, devices // 5)
    names = [f"edge{i}" for i in range(edges)] + [f"core{i}" for i in range(devices - edges)]
    cores = names[edges:]
    for i, name in enumerate(names):
        api(base, token, "POST", "/devices", {
            "id": name, "role": "edge" if name.startswith("edge") else "core",
            "log_address": f"10.0.{i // 250}.{i % 250 + 1}:47001",
            "processing_limit": 0 if name.startswith("edge") else 1e6})
    for i, core in enumerate(cores):
        api(base, token, "POST", "/links", {"a": core, "b": cores[(i + 1) % len(cores)],
                                            "capacity": 1e10})
    for i in range(edges):
        for j in (0, len(cores) // 2):
            api(base, token, "POST", "/links", {"a": f"edge{i}",
                                                "b": cores[(i * 3 + j) % len(cores)]})
    api(base, token, "POST", "/customers", {"id": "bench"})
    for i in range(edges):
        api(base, token, "POST", "/storages", {"storage_wwn": f"{0x500A098000000000 + i:016x}",
                                               "edge_id": f"edge{i}", "customer_id": "bench"})
    made = []
    for n in range(pairs):
        a, b = n % edges, (n + 1 + n // edges) % edges
        if a == b:
            b = (b + 1) % edges
        made.append(api(base, token, "POST", "/pairs", {
            "customer_id": "bench", "source_wwn": f"{0x500A098000000000 + a:016x}",
            "source_lun": n, "target_wwn": f"{0x500A098000000000 + b:016x}", "target_lun": n,
            "policy": "A-1", "load_entries": 10}))
    return [{"id": name} for name in names]


def figures_for(device: str, pairs: list[dict]) -> dict:
    mine = [p for p in pairs if device in (p["source_edge"], p["target_edge"])]
    return {"pairs": [{"source_wwn": p["source_wwn"], "source_lun": p["source_lun"],
                       "target_wwn": p["target_wwn"], "target_lun": p["target_lun"],
                       "state": "duplex"} for p in mine if p["source_edge"] == device],
            "groups": [{"group": p["group"], "log_retained_entries": 3, "lag_s": 0.02,
                        "applied_bytes": 1 << 20} for p in mine],
            "counters": {"writes": 1000, "wroks": 900}, "ack_latency_p99_s": 0.001}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="rcn-bench-mgmt-")
    http, amp = free_port(), free_port()
    config = os.path.join(directory, "mgmt.toml")
    with open(config, "w") as f:
        f.write(f'[mgmt]\nid = "bench"\nhttp = "tcp:{http}:interface={HOST}"\n'
                f'amp = "tcp:{amp}:interface={HOST}"\n')
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = open(os.path.join(directory, "mgmt.log"), "ab")
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "rcn-mgmt", "--config", config],
                            cwd=directory, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{http}/api/v1"
    try:
        token_file = os.path.join(directory, "operator.token")
        deadline = time.monotonic() + 30
        while not os.path.exists(token_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        token = open(token_file).read().strip()
        started = time.perf_counter()
        devices = configure(base, token, args.devices, args.pairs, amp)
        configure_s = time.perf_counter() - started
        pairs = api(base, token, "GET", "/pairs")["pairs"]
        print(f"rcn-mgmt pid {proc.pid}: {len(devices)} devices, {len(pairs)} pairs configured "
              f"through the API in {configure_s:.1f} s; {os.cpu_count()} CPUs", flush=True)
        rows = measure_rows(base, token, proc.pid, args.seconds, devices, pairs, amp)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{'load':34} {'server CPU':>10} {'API p50 ms':>11} {'API p99 ms':>11} "
          f"{'requests':>9} {'reports':>8}")
    for name, r in rows:
        print(f"{name:34} {r['cpu_share']:10.1%} {r['p50'] * 1000:11.2f} {r['p99'] * 1000:11.2f} "
              f"{r['requests']:9d} {r['reports']:8d}")
    return 0


def measure_rows(base, token, pid, seconds, devices, pairs, amp_port):
    """Baseline (API only), then the same with every device reporting each second."""
    from twisted.internet import endpoints, reactor, task, threads

    from rcn.mgmtlink.client import MgmtClient
    rows = []
    clients = []
    results = {}

    def phase(name, connect):
        def run():
            latencies = []
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            while time.monotonic() - wall0 < seconds:
                start = time.perf_counter()
                api(base, token, "GET", "/status")
                latencies.append(time.perf_counter() - start)
                time.sleep(max(0.0, 0.1 - (time.perf_counter() - start)))
            wall = time.monotonic() - wall0
            latencies.sort()
            return {"cpu_share": (cpu_seconds(pid) - cpu0) / wall, "requests": len(latencies),
                    "p50": latencies[len(latencies) // 2],
                    "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}
        if connect:
            for device in devices:
                client = MgmtClient(reactor, device["id"], "edge" if device["id"].startswith(
                    "edge") else "core", "127.0.0.1:1", lambda v, doc: None,
                    lambda d=device["id"]: figures_for(d, pairs), lambda g: {})
                clients.append(client)
                endpoints.TCP4ClientEndpoint(reactor, HOST, amp_port).connect(client)
        d = task.deferLater(reactor, 2.0 if connect else 0.0, lambda: None)
        d.addCallback(lambda _: threads.deferToThread(run))

        def done(result):
            sent = sum(c.counters["reports_sent"] for c in clients)
            results[name] = dict(result, reports=sent)
        return d.addCallback(done)

    def go():
        d = phase("baseline: API only", False)
        d.addCallback(lambda _: phase(f"{len(devices)} devices reporting each 1 s", True))
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    for name in results:
        rows.append((name, results[name]))
    return rows


if __name__ == "__main__":
    sys.exit(main())
