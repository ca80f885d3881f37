"""The whole RCN on this machine: write throughput, IOPS, ack latency and lag.

``python -m tools.bench_lab [--seconds S] [--cores N] [--log-mode durable|memory]
[--rows all|saturation|seal]``

Each row starts a fresh lab (``rcn.lab.up``: 2 arrays, 2 edges, N cores, as
real daemons on loopback), runs one workload through NBD against the source
array's volume, waits until the target edge has applied everything, and
reads the edges' ``/status`` (ack latency at the source edge, lag at the
target edge -- fresh histograms, since every row has its own lab). The
baseline rows write the same workload straight to the target array's volume
(its NBD export, no replication), in the same run.

Rows:
  64 KiB writes, 32 in flight          MB/s            target >= 150 MB/s
  the same with ``seal = "none"``
  4 KiB writes, 64 in flight           IOPS            target >= 10,000 (durable log)
  the same with ``seal = "none"``
  4 KiB writes at half the max rate    ack p50/p99 at the source edge (target p99 < 2 ms)
                                       lag p50/p99 at the target edge (target p99 < 100 ms)

Each RCN row also reports the log-transfer channel's work: entries sent by
the source edge, its retransmissions (by timeout and by NAK) per entry, and
the CPU seconds each role's daemons spent per write (``/proc/PID/stat``
utime + stime from just before the workload until everything is applied).
``--rows saturation`` runs only the two saturated RCN rows (64 KiB qd32, 4 KiB
qd64): the retransmission storm of issue 15 item 3 shows there. ``--rows seal``
runs those two sealed (the lab's default) and with ``seal = "none"``; ``--repeat N``
measures each of them N times, sealed and unsealed alternating, and pools the runs
(writes, seconds and CPU added up; latencies of the last run).

The seal's cost (DESIGN.md 9; every row but ``saturation``): the saturated rows
sealed and unsealed side by side, CPU milliseconds per write of edgeA, the core and
edgeB and of the three (what sealing adds work to; the arrays' CPU is left out), the
overhead in percent (target: <= 10% at 64 KiB, <= 15% at 4 KiB) and the throughput's
change, then the AEAD's raw rate on this machine (AES-256-GCM encrypting 4 KiB and 64 KiB, and a
tag only over 64 KiB, as the hop layer computes per datagram).

A workload runs in a child process (``--workload``), since a reactor runs
once per process; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

MB = 1e6


def workload(url: str, block: int, depth: int, seconds: float, rate: float, seed: int) -> dict:
    """Write ``block``-byte writes for ``seconds`` (at most ``rate`` writes/s if > 0)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred

    from rcn.nbd.client import connect_url

    out: dict = {}

    async def run():
        client = await connect_url(reactor, url)
        blocks = client.size // block
        rng = random.Random(seed)
        payloads = [rng.randbytes(block) for _ in range(64)]
        latencies: list[float] = []
        state = {"inflight": 0, "issued": 0, "error": None}
        finished = Deferred()
        begin = time.perf_counter()
        stop_at = begin + seconds

        def issue():
            now = time.perf_counter()
            while state["inflight"] < depth and now < stop_at and state["error"] is None:
                if rate > 0 and state["issued"] >= (now - begin) * rate:
                    reactor.callLater(max(0.0, begin + (state["issued"] + 1) / rate - now), issue)
                    return
                offset = rng.randrange(blocks) * block
                state["inflight"] += 1
                state["issued"] += 1
                client.write(offset, payloads[state["issued"] % 64]).addCallbacks(
                    acked, failed, (time.perf_counter(),))
            if state["inflight"] == 0 and not finished.called and (
                    now >= stop_at or state["error"] is not None):
                finished.callback(None)

        def acked(_, started):
            latencies.append(time.perf_counter() - started)
            state["inflight"] -= 1
            issue()

        def failed(failure):
            state["inflight"] -= 1
            state["error"] = failure.getErrorMessage()
            issue()

        issue()
        await finished
        elapsed = time.perf_counter() - begin
        await client.disconnect()
        latencies.sort()
        pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
                if latencies else None)
        out.update(writes=len(latencies), seconds=elapsed, bytes=len(latencies) * block,
                   p50=pick(0.5), p99=pick(0.99), error=state["error"])

    def done(result):
        if hasattr(result, "getErrorMessage"):
            out["error"] = result.getErrorMessage()
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(run()).addBoth(done))
    reactor.run(installSignalHandlers=False)
    return out


def run_workload(url: str, block: int, depth: int, seconds: float, rate: float = 0.0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tools.bench_lab", "--workload", url,
                           str(block), str(depth), str(seconds), str(rate)],
                          capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("error"):
        raise RuntimeError(f"workload against {url}: {result['error']}")
    return result


def cpu_seconds(lab: dict) -> dict[str, float]:
    """CPU seconds (user + system) each role's daemons have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for device in lab["devices"]:
        try:
            with open(f"/proc/{device['pid']}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, KeyError, TypeError):
            continue
        role = device["name"] if device["role"] == "edge" else device["role"]
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def one_row(topology, block: int, depth: int, seconds: float, rate: float = 0.0,
            baseline: bool = False) -> dict:
    from rcn import lab as lablib
    directory = tempfile.mkdtemp(prefix="rcn-bench-")
    if baseline:
        # volumes only: a pair's secondary volume refuses host writes (DATA_PROTECT)
        topology = dataclasses.replace(topology, pair_setup="create")
    lab = lablib.up(topology, directory)
    try:
        pair = lab["pairs"][0]
        target = next(d for d in lab["devices"] if d["name"] == "arrayB")
        url = target["volumes"][0]["nbd_url"] if baseline else pair["nbd_url"]
        cpu_before = cpu_seconds(lab)
        result = run_workload(url, block, depth, seconds, rate)
        if not baseline:
            started = time.monotonic()
            edges = lablib.wait_applied(lab, timeout=300)
            cpu_after = cpu_seconds(lab)
            result["cpu"] = {role: cpu_after[role] - cpu_before.get(role, 0.0)
                             for role in cpu_after}
            sender = edges["source"].get("sender", {})
            result["entries"] = sender.get("entries_sent", 0)
            result["nak_retransmits"] = sender.get("nak_retransmits", 0)
            result["apply_wait"] = time.monotonic() - started
            result["edge_ack_p50"] = edges["source"].get("ack_latency_p50_s")
            result["edge_ack_p99"] = edges["source"].get("ack_latency_p99_s")
            result["lag_p50"] = edges["target"].get("lag_p50_s")
            result["lag_p99"] = edges["target"].get("lag_p99_s")
            result["retransmits"] = sender.get("retransmits", 0)
        return result
    finally:
        lablib.down(directory, quiet=True)
        shutil.rmtree(directory, ignore_errors=True)     # a row's volumes and logs


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def aead_rates(seconds: float = 0.3) -> list[tuple[str, float, float]]:
    """The AEAD's raw rate on this machine (``cryptography``'s AES-256-GCM, i.e. OpenSSL):
    (what, MB/s, microseconds per call) for encrypting 4 KiB and 64 KiB, and for a tag only
    (empty plaintext) over 64 KiB of associated data -- the hop layer's work per datagram."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    out = []
    for what, size, call in (
            ("encrypt 4 KiB", 4096, lambda data: aead.encrypt(nonce, data, b"")),
            ("encrypt 64 KiB", 65536, lambda data: aead.encrypt(nonce, data, b"")),
            ("tag only over 64 KiB", 65536, lambda data: aead.encrypt(nonce, b"", data))):
        data = os.urandom(size)
        calls, begin = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - begin) < seconds:
            for _ in range(64):
                call(data)
            calls += 64
        out.append((what, calls * size / elapsed / MB, elapsed / calls * 1e6))
    return out


def pooled(runs: list[dict]) -> dict:
    """Repetitions of one row as one: writes, bytes, seconds, CPU and the log-transfer
    counts added up; the latency figures of the last repetition."""
    out = dict(runs[-1])
    for key in ("writes", "bytes", "seconds", "entries", "retransmits", "nak_retransmits"):
        if key in out:
            out[key] = sum(r[key] for r in runs)
    if "cpu" in out:
        out["cpu"] = {role: sum(r["cpu"].get(role, 0.0) for r in runs) for role in out["cpu"]}
    return out


def measure(args, topology) -> list[tuple]:
    """Every row of ``--rows``: (name, MB/s, IOPS, result, target)."""
    rows = []
    unsealed = dataclasses.replace(topology, seal="none")

    def row(name, result, target=""):
        mbs = result["bytes"] / result["seconds"] / MB
        iops = result["writes"] / result["seconds"]
        rows.append((name, mbs, iops, result, target))
        print(f"  measured: {name}: {mbs:.1f} MB/s, {iops:.0f} IOPS", file=sys.stderr, flush=True)
        return result

    def saturated(name, block, depth, target):
        """The row sealed and (but for ``saturation``) unsealed, ``--repeat`` times each,
        alternating (so a change of the host's other load meets both alike)."""
        kinds = [topology] + ([unsealed] if args.rows != "saturation" else [])
        runs = [[] for _ in kinds]
        for _ in range(args.repeat):
            for topo, done in zip(kinds, runs):
                done.append(one_row(topo, block, depth, args.seconds))
        sealed = row(name, pooled(runs[0]), target)
        if len(runs) > 1:
            row(f"{name} unsealed", pooled(runs[1]))
        return sealed

    every = args.rows == "all"
    if every:
        row("baseline 64K qd32 -> target array", one_row(topology, 65536, 32, args.seconds,
                                                         baseline=True))
    saturated("RCN 64K qd32", 65536, 32, ">= 150 MB/s")
    if every:
        row("baseline 4K qd64 -> target array", one_row(topology, 4096, 64, args.seconds,
                                                        baseline=True))
    small = saturated("RCN 4K qd64", 4096, 64, ">= 10,000 IOPS")
    if every:
        half = small["writes"] / small["seconds"] / 2
        row(f"RCN 4K at {half:.0f}/s (half)", one_row(topology, 4096, 64, args.seconds,
                                                       rate=half),
            "ack p99 < 2 ms, lag p99 < 100 ms")
    return rows


def cpu_per_write(result: dict) -> dict[str, float]:
    """CPU milliseconds per write of each role (edgeA, core, edgeB, storage), ``all`` of
    them and ``path`` (the edges and the core: what sealing adds work to)."""
    writes = max(result["writes"], 1)
    cpu = {k: v * 1000 / writes for k, v in result["cpu"].items()}
    cpu["all"] = sum(cpu.values())
    cpu["path"] = sum(cpu.get(k, 0.0) for k in ("edgeA", "core", "edgeB"))
    return cpu


def print_rows(rows: list[tuple]) -> None:
    bases = {("64K" in name): (mbs, iops) for name, mbs, iops, _, _ in rows
             if name.startswith("baseline")}
    print(f"{'workload':38} {'MB/s':>8} {'IOPS':>8} {'vs base':>8} {'host p50/p99 ms':>16} "
          f"{'edge ack p50/p99':>17} {'lag p50/p99 ms':>15}  target")
    for name, mbs, iops, r, target in rows:
        big_row = "64K" in name
        base = bases.get(big_row)
        ratio = "-" if base is None else f"{(mbs / base[0]) if big_row else (iops / base[1]):.2f}"
        print(f"{name:38} {mbs:8.1f} {iops:8.0f} {ratio:>8} "
              f"{_ms(r.get('p50')) + '/' + _ms(r.get('p99')):>16} "
              f"{_ms(r.get('edge_ack_p50')) + '/' + _ms(r.get('edge_ack_p99')):>17} "
              f"{_ms(r.get('lag_p50')) + '/' + _ms(r.get('lag_p99')):>15}  {target}")
    print(f"\n{'log transfer':38} {'entries':>8} {'retx':>7} {'retx/entry':>10} {'by NAK':>7} "
          f"{'CPU ms/write: edgeA':>20} {'core':>6} {'edgeB':>6} {'all':>6}")
    for name, _, _, r, _ in rows:
        if "entries" not in r:
            continue
        cpu = cpu_per_write(r)
        print(f"{name:38} {r['entries']:8d} {r['retransmits']:7d} "
              f"{r['retransmits'] / max(r['entries'], 1):10.4f} {r['nak_retransmits']:7d} "
              f"{cpu.get('edgeA', 0):20.3f} {cpu.get('core', 0):6.3f} {cpu.get('edgeB', 0):6.3f} "
              f"{cpu['all']:6.3f}")


def print_seal(rows: list[tuple]) -> None:
    """Sealed against ``seal = "none"``, same run: CPU per write of the edges and the core
    and the overhead (target: <= 10% at 64 KiB, <= 15% at 4 KiB), then the AEAD's raw rate."""
    by_name = {name: r for name, _, _, r, _ in rows}
    print(f"\n{'sealed vs seal = none':22} {'CPU ms/write: edgeA':>20} {'core':>7} "
          f"{'edgeB':>7} {'e+c+e':>7} {'MB/s':>8} {'IOPS':>8}")
    for size, limit in (("64K qd32", 10), ("4K qd64", 15)):
        sealed, clear = by_name.get(f"RCN {size}"), by_name.get(f"RCN {size} unsealed")
        if sealed is None or clear is None:
            continue
        cs, cc = cpu_per_write(sealed), cpu_per_write(clear)
        rate = (lambda r: (r["bytes"] / r["seconds"] / MB, r["writes"] / r["seconds"]))
        for label, cpu, r in (("sealed", cs, sealed), ("none", cc, clear)):
            mbs, iops = rate(r)
            print(f"{size + ' ' + label:22} {cpu.get('edgeA', 0):20.3f} {cpu.get('core', 0):7.3f} "
                  f"{cpu.get('edgeB', 0):7.3f} {cpu['path']:7.3f} {mbs:8.1f} {iops:8.0f}")
        pct = {k: (cs.get(k, 0) / cc[k] - 1) * 100 if cc.get(k) else float("nan")
               for k in ("edgeA", "core", "edgeB", "path")}
        (mbs_s, _), (mbs_c, _) = rate(sealed), rate(clear)
        print(f"{size + ' overhead':22} {pct['edgeA']:19.1f}% {pct['core']:6.1f}% "
              f"{pct['edgeB']:6.1f}% {pct['path']:6.1f}% {(mbs_s / mbs_c - 1) * 100:7.1f}%"
              f"  (target: CPU of edges and core <= {limit}%: "
              f"{'met' if pct['path'] <= limit else 'NOT met'})")
    print("\nAEAD raw rate (AES-256-GCM, cryptography/OpenSSL, one core):")
    for what, mbs, us in aead_rates():
        print(f"  {what:22} {mbs:9.0f} MB/s  {us:8.2f} us/call")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument("--cores", type=int, default=1, help="cores in the path (default 1)")
    parser.add_argument("--log-mode", choices=("durable", "memory"), default="durable")
    parser.add_argument("--rows", choices=("all", "saturation", "seal"), default="all",
                        help="saturation: only the two saturated RCN rows; seal: those two "
                             "sealed and with seal = \"none\"")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each saturated row (sealed and unsealed) this many "
                             "times, alternating, and pool them (default 1)")
    parser.add_argument("--workload", nargs=5, metavar=("URL", "BLOCK", "DEPTH", "SECONDS", "RATE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        url, block, depth, seconds, rate = args.workload
        print(json.dumps(workload(url, int(block), int(depth), float(seconds), float(rate), 1)))
        return 0

    from rcn import lab as lablib
    topology = lablib.Topology(cores=args.cores, log_mode=args.log_mode, capacity=1 << 30)
    print(f"whole lab on loopback: 2 arrays, 2 edges, {args.cores} core(s), log "
          f"{args.log_mode}; {args.seconds:g} s per row; {os.cpu_count()} CPUs", flush=True)
    rows = measure(args, topology)
    print_rows(rows)
    if args.rows != "saturation":
        print_seal(rows)
    by_name = {name: r for name, _, _, r, _ in rows}
    big, small = by_name["RCN 64K qd32"], by_name["RCN 4K qd64"]
    paced = next((r for name, _, _, r, _ in rows if "(half)" in name), None)
    print(f"targets: 64K {big['bytes'] / big['seconds'] / MB:.1f} MB/s (>= 150); "
          f"4K {small['writes'] / small['seconds']:.0f} IOPS (>= 10000)"
          + ("" if paced is None else
             f"; ack p99 {_ms(paced.get('edge_ack_p99'))} ms (< 2); lag p99 "
             f"{_ms(paced.get('lag_p99'))} ms (< 100)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
