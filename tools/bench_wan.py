"""Source ack latency and lag against WAN delay, and the WAN emulator's forwarding rate (issue 8).

``python -m tools.bench_wan [--seconds 10] [--rate 1000] [--delay-ms 20]``

Part 1, one lab and one run (``rcn-bench``'s runner): a WAN emulator link between
edgeA and core1, a workload writing 4 KiB blocks at ``--rate`` per second to the
source array, in four phases of ``--seconds`` each: the link's delay 0,
``--delay-ms``, ``--delay-ms``, 0 (what drifts with the time into the run -- the page
cache filling, writeback -- weighs on both delays alike), a settling second after
each change not counted. Per phase and per delay: the host's write latency (acknowledged by the source array after the source edge logged it) p50/p99
from the workload's journal, and the lag p99 from the runner's samples. The ack
latency must not grow with the WAN's delay -- that is the point of the RCN; the lag
does.

Part 2, the emulator alone: UDP datagrams (1,400 and 8,192 bytes) blasted through
an unimpaired ``rcn-wanem`` link by one process and counted by another, against the
same sender and receiver on a direct path, in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np

from rcn import lab as lablib
from rcn.bench.runner import Runner
from rcn.bench.scenario import parse_scenario

SCENARIO = """
[scenario]
name = "bench-wan"
sample_interval = 0.25
[lab]
cores = 1
log_mode = "{log_mode}"
[[wanem]]
between = ["edgeA", "core1"]
seed = 1
[[step]]
do = "workload"
rate = {rate}
depth = 64
"""
STEP = """[[step]]
at = {at}
do = "{do}"
"""
SETTLE = 1.0      # seconds after each change that no phase counts


def percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else None


def replication(seconds: float, rate: int, delay: float, out: str | None = None,
                log_mode: str = "durable") -> list[dict]:
    """Phases 0, delay, delay, 0 ms (ABBA: whatever drifts with time in the run -- the
    page cache filling, writeback -- weighs on both delays alike); a row per phase and
    one per delay over its phases."""
    delays = [0.0, delay, delay, 0.0]
    text = SCENARIO.format(rate=rate, log_mode=log_mode)
    windows = []
    at = 1.0                                     # the workload's own start-up first
    for i, d in enumerate(delays):
        if i == 0 or d != delays[i - 1]:
            text += STEP.format(at=at, do="impair") + f"delay_ms = {d}\n"
        windows.append((d, at + SETTLE, at + SETTLE + seconds))
        at += SETTLE + seconds
    text += STEP.format(at=at, do="stop_workload")
    scenario = parse_scenario(tomllib.loads(text), "bench-wan.toml")
    directory = tempfile.mkdtemp(prefix="rcn-bench-wan-")
    runner = Runner(scenario, directory, say=lambda text: print(text, file=sys.stderr, flush=True))
    try:
        record = runner.run()
    finally:
        lablib.down(directory, quiet=True)
    if record["checks"] and not record["passed"]:
        raise SystemExit(f"the run stopped: {record['checks'][-1]['detail']}")
    if out:
        from rcn.bench import report
        os.makedirs(out, exist_ok=True)
        report.write_json(record, os.path.join(out, "bench-wan.json"))
        report.plot(record, os.path.join(out, "bench-wan.png"), title="bench-wan")
    workload = runner.workloads["w1"]

    def figures(label: str, spans: list[tuple[float, float]]) -> dict:
        acks = np.concatenate([workload.latency_between(runner.t0 + a, runner.t0 + b)
                               for a, b in spans]) * 1000
        lags = [s["lag_ms"]["7"] for s in record["samples"]
                if any(a <= s["t"] < b for a, b in spans) and s["lag_ms"]["7"] is not None]
        return {"phase": label, "writes": len(acks), "ack_p50": percentile(acks, 50),
                "ack_p99": percentile(acks, 99), "lag_p50": percentile(lags, 50),
                "lag_p99": percentile(lags, 99)}
    rows = [figures(f"{i + 1}: WAN {d:g} ms", [(a, b)]) for i, (d, a, b) in enumerate(windows)]
    for d in sorted(set(delays)):
        rows.append(figures(f"all WAN {d:g} ms", [(a, b) for dd, a, b in windows if dd == d]))
    shutil.rmtree(directory, ignore_errors=True)
    return rows


# -- part 2: forwarding rate ------------------------------------------------------------------

def _receive(port: int, seconds: float, queue) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.5)
    count = size = 0
    first = last = None
    while True:
        try:
            data = s.recv(65536)
        except socket.timeout:
            if first is not None:
                break
            continue
        if data == b"end":
            break
        now = time.monotonic()
        first = first or now
        last = now
        count += 1
        size += len(data)
    queue.put((count, size, (last or 0) - (first or 0)))


def blast(target: int, receiver_port: int, size: int, seconds: float) -> dict:
    queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receive, args=(receiver_port, seconds, queue))
    receiver.start()
    time.sleep(0.3)                  # the receiver binds before the first datagram
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = os.urandom(size)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(64):
            try:
                s.sendto(payload, ("127.0.0.1", target))
                sent += 1
            except BlockingIOError:
                pass
    time.sleep(0.5)
    count, received, span = queue.get(timeout=30)
    receiver.join()
    return {"sent": sent, "received": count, "pps": count / span if span else 0.0,
            "mb_s": received / span / 1e6 if span else 0.0}


def forwarding(seconds: float) -> list[dict]:
    from rcn.lab import free_ports
    directory = tempfile.mkdtemp(prefix="rcn-bench-wanem-")
    (scpi,), (a_port, b_port, direct, behind) = free_ports(1, 4)
    config = os.path.join(directory, "wanem.toml")
    with open(config, "w") as f:
        f.write(f'[wanem]\nid = "bench"\n[console]\ntcp = "tcp:{scpi}:interface=127.0.0.1"\n'
                f'[[link]]\na = "127.0.0.1:{a_port}"\nb = "127.0.0.1:{behind}"\n'
                f'b_from = "127.0.0.1:{b_port}"\n')
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    proc = subprocess.Popen([twistd, "-n", "--pidfile", "", "--logfile",
                             os.path.join(directory, "wanem.log"), "rcn-wanem", "--config",
                             config], cwd=directory)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", scpi), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"rcn-wanem did not start; see {directory}/wanem.log")
                time.sleep(0.1)
        rows = []
        for size in (1400, 8192):
            base = blast(direct, direct, size, seconds)
            through = blast(a_port, behind, size, seconds)
            rows.append({"size": size, "direct": base, "wanem": through})
        return rows
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def fmt(value, spec=".2f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds per phase (default 10)")
    parser.add_argument("--rate", type=int, default=1000,
                        help="host writes per second, 4 KiB each (default 1000)")
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="the WAN delay of the second phase (default 20)")
    parser.add_argument("--blast-seconds", type=float, default=3.0,
                        help="seconds per forwarding measurement (default 3)")
    parser.add_argument("--log-mode", choices=("durable", "memory"), default="durable",
                        help="the edges' log storage area (default durable)")
    parser.add_argument("--out", help="also write the run's record and plot here "
                                      "(bench-wan.json, bench-wan.png)")
    args = parser.parse_args(argv)
    rows = replication(args.seconds, args.rate, args.delay_ms, args.out, args.log_mode)
    print(f"host writes of 4 KiB at {args.rate}/s through a lab with a WAN emulator between "
          f"edgeA and core1, {args.seconds:g} s per phase")
    print(f"{'phase':16} {'writes':>7} {'ack p50 ms':>11} {'ack p99 ms':>11} {'lag p50 ms':>11} "
          f"{'lag p99 ms':>11}")
    for r in rows:
        print(f"{r['phase']:16} {r['writes']:7d} {fmt(r['ack_p50']):>11} {fmt(r['ack_p99']):>11} "
              f"{fmt(r['lag_p50']):>11} {fmt(r['lag_p99']):>11}")
    print()
    print(f"UDP forwarding, {args.blast_seconds:g} s per row (one sender, one receiver process)")
    print(f"{'datagram':>9} {'path':8} {'sent':>9} {'received':>9} {'datagrams/s':>12} "
          f"{'MB/s':>8}")
    for r in forwarding(args.blast_seconds):
        for path in ("direct", "wanem"):
            f = r[path]
            print(f"{r['size']:9d} {path:8} {f['sent']:9d} {f['received']:9d} {f['pps']:12,.0f} "
                  f"{f['mb_s']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
