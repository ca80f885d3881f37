"""``rcn demo``: start a lab, write through it as a host would, prove the copy is exact.

Steps:

1. ``rcn lab up`` with the default topology (arrayA -> edgeA -> core1 -> edgeB ->
   arrayB, one pair in group 7, durable logs) in ``--dir`` (default: a new
   temporary directory); the volumes get ``--size`` bytes, at least 256 MiB;
2. write ``--size`` bytes of seeded pseudo-random data (``random.Random(--seed)``,
   block after block) to arrayA's volume over NBD with :mod:`rcn.nbd.client`,
   ``--depth`` writes of ``--block-size`` in flight, each write's host-observed
   latency (request sent to reply received) recorded; then an NBD flush. On a
   terminal a progress bar shows bytes, MB/s and ETA; otherwise a plain line
   every 2 seconds; with ``--json`` nothing but the final object;
3. wait until every entry is applied: the source edge retains no entries of the
   group and has none outstanding, and the target edge's apply counter (its
   ``durable`` figure, see :func:`rcn.lab.applied_counter`) equals the source
   edge's generation counter (``--timeout`` seconds, else an error
   with the figures);
4. sha256 of the source and target volume files (paths from ``lab.json``);
5. report: throughput (MB/s, 10^6 bytes) and IOPS of the write phase, host ack
   latency p50/p99, the source edge's ack latency p50/p99 and the target edge's
   lag p50/p99 (from their ``/status``; estimates from latency histograms), the
   counters (retransmits, NAKs, drops, core batches), whether log transfer ran
   sealed (the lab seals by default) with the entries sealed at edgeA and opened
   at edgeB and the datagrams hop-sealed and opened at the edges, both sha256 and
   EQUAL/DIFFERENT; ``--json``: one JSON object with the same figures;
6. ``rcn lab down`` unless ``--keep``. A temporary directory the demo made is
   removed afterwards when the volumes are equal and ``--keep`` is not given;
   otherwise the directory (logs, configurations, volumes) stays and its path is
   printed.

Exit status 0 only when the volumes are equal; 1 when they differ or a step
failed (its reason on stderr), 2 for bad usage.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

from rcn import lab as lablib
from rcn.cli.kit import CliError
from rcn.cli.lab import describe_up
from rcn.config import parse_size
from rcn.lab import group_status, sha256_file
from rcn.progress import Progress

MB = 1_000_000


class DemoError(Exception):
    pass


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _number(value) -> float | None:
    """A figure from /status: NaN (no samples yet) becomes None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def write_volume(url: str, size: int, block: int, depth: int, seed: int, progress: Progress
                 ) -> dict:
    """Write the seeded data through NBD (runs the reactor once); the write phase's figures."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred

    from rcn.nbd.client import connect_url

    result: dict = {}

    async def run():
        client = await connect_url(reactor, url)
        if client.size < size:
            raise DemoError(f"{url}: the export has {client.size} bytes, --size is {size}")
        rng = random.Random(seed)
        latencies: list[float] = []
        state = {"next": 0, "inflight": 0, "acked": 0, "error": None}
        finished = Deferred()

        def issue():
            while (state["inflight"] < depth and state["next"] < size
                   and state["error"] is None):
                offset = state["next"]
                n = min(block, size - offset)
                data = rng.randbytes(n)
                state["next"] += n
                state["inflight"] += 1
                started = time.perf_counter()
                client.write(offset, data).addCallbacks(acked, failed, (started, n), None,
                                                        (offset,))
            if state["inflight"] == 0 and not finished.called:
                if state["error"] is not None:
                    finished.errback(state["error"])
                else:
                    finished.callback(None)

        def acked(_, started, n):
            latencies.append(time.perf_counter() - started)
            state["inflight"] -= 1
            state["acked"] += n
            progress.update(state["acked"])
            issue()

        def failed(failure, offset):
            state["inflight"] -= 1
            if state["error"] is None:
                state["error"] = DemoError(f"NBD write at offset {offset} of {url} failed: "
                                           f"{failure.getErrorMessage()}")
            issue()

        begin = time.perf_counter()
        issue()
        await finished
        seconds = time.perf_counter() - begin
        await client.flush()
        progress.update(state["acked"], final=True)
        await client.disconnect()
        result.update(seconds=seconds, latencies=latencies, writes=len(latencies))

    def done(outcome):
        result["outcome"] = outcome
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(run()).addBoth(done))
    reactor.run(installSignalHandlers=False)
    outcome = result.pop("outcome", None)
    if hasattr(outcome, "getErrorMessage"):
        error = outcome.value
        raise error if isinstance(error, DemoError) else DemoError(
            f"writing {url}: {outcome.getErrorMessage()}")
    return result


def report(lab: dict, size: int, block: int, depth: int, written: dict, edges: dict,
           apply_wait: float) -> dict:
    source, target = edges["source"], edges["target"]
    cores = [lablib.device_figures(d) for d in lab["devices"] if d["role"] == "core"]
    pair = lab["pairs"][0]
    src_sha, dst_sha = sha256_file(pair["source_volume"]), sha256_file(pair["target_volume"])
    seconds = max(written["seconds"], 1e-9)
    lat = written["latencies"]
    ms = (lambda v: None if v is None else round(v * 1000, 3))
    groups_t = [group_status(target, p["group"]) for p in lab["pairs"]]
    sender = source.get("sender", {})
    counters = {
        "entries": sum(group_status(source, p["group"]).get("log_generation", 0) for p in lab["pairs"]),
        "retransmits": sender.get("retransmits", 0),
        "nak_retransmits": sender.get("nak_retransmits", 0),
        "naks_sent": sum(g.get("naks_sent", 0) for g in groups_t),
        "edge_drops": sum(source.get("drops", {}).values()) + sum(target.get("drops", {}).values()),
        "core_drops": sum(sum(c.get("drops", {}).values()) for c in cores),
        "core_forwarded": sum(c.get("forwarded", 0) for c in cores),
        "core_batches": sum(c.get("batches_sent", 0) for c in cores),
        "target_duplicates": sum(g.get("duplicates_applied", 0) for g in groups_t),
    }
    return {
        "dir": lab["dir"], "nbd_url": pair["nbd_url"], "size": size, "block_size": block,
        "depth": depth, "writes": written["writes"], "write_seconds": round(seconds, 3),
        "throughput_mb_s": round(size / seconds / MB, 2),
        "iops": round(written["writes"] / seconds, 1),
        "host_ack_latency_ms": {"p50": ms(percentile(lat, 0.5)), "p99": ms(percentile(lat, 0.99))},
        "edge_ack_latency_ms": {"p50": ms(_number(source.get("ack_latency_p50_s"))),
                                "p99": ms(_number(source.get("ack_latency_p99_s")))},
        "target_lag_ms": {"p50": ms(_number(target.get("lag_p50_s"))),
                          "p99": ms(_number(target.get("lag_p99_s")))},
        "apply_wait_seconds": round(apply_wait, 3),
        "counters": counters, "seal": _seal_figures(source, target),
        "source_sha256": src_sha, "target_sha256": dst_sha, "equal": src_sha == dst_sha,
    }


def _seal_figures(source: dict, target: dict) -> dict:
    """Whether log transfer ran sealed, and how much the edges sealed and opened (from their
    ``/status`` ``seal``: counts only, never a key)."""
    s, t = source.get("seal", {}), target.get("seal", {})
    return {"mode": s.get("mode", "none"),
            "hop_sealed": s.get("hop", {}).get("sealed", 0) + t.get("hop", {}).get("sealed", 0),
            "hop_opened": s.get("hop", {}).get("opened", 0) + t.get("hop", {}).get("opened", 0),
            "e2e_sealed": s.get("end_to_end", {}).get("sealed", 0),
            "e2e_opened": t.get("end_to_end", {}).get("opened", 0)}


def _seal_line(seal: dict) -> str:
    if seal["mode"] == "none":
        return 'log transfer        NOT sealed (seal = "none")'
    return (f"log transfer        sealed ({seal['mode']}): edgeA sealed {seal['e2e_sealed']} "
            f"entries end to end, edgeB opened {seal['e2e_opened']}; the edges hop-sealed "
            f"{seal['hop_sealed']} datagrams and opened {seal['hop_opened']}")


def render(r: dict) -> str:
    def pair(d):
        return " / ".join("-" if d[k] is None else f"{d[k]:.3f}" for k in ("p50", "p99"))
    c = r["counters"]
    lines = [
        f"wrote {r['size'] / (1 << 20):.1f} MiB to {r['nbd_url']} in {r['writes']} writes of "
        f"{r['block_size'] // 1024} KiB, {r['depth']} in flight, {r['write_seconds']:.2f} s",
        f"throughput          {r['throughput_mb_s']:.1f} MB/s, {r['iops']:.0f} IOPS",
        f"host ack latency    p50 / p99  {pair(r['host_ack_latency_ms'])} ms",
        f"edge ack latency    p50 / p99  {pair(r['edge_ack_latency_ms'])} ms  "
        f"(edgeA: WR in to GOOD out)",
        f"target lag          p50 / p99  {pair(r['target_lag_ms'])} ms  "
        f"(edgeB: applied minus I/O time)",
        f"applied everywhere  {r['apply_wait_seconds']:.2f} s after the last host ack",
        f"counters            entries {c['entries']}, retransmits {c['retransmits']} "
        f"(on NAK {c['nak_retransmits']}), NAKs {c['naks_sent']}, drops "
        f"{c['edge_drops'] + c['core_drops']} (edges {c['edge_drops']}, cores {c['core_drops']}), "
        f"core batches {c['core_batches']}, duplicates {c['target_duplicates']}",
        _seal_line(r["seal"]),
        f"source sha256       {r['source_sha256']}",
        f"target sha256       {r['target_sha256']}",
        f"volumes             {'EQUAL' if r['equal'] else 'DIFFERENT'}",
    ]
    return "\n".join(lines)


def run_demo(size: int, block: int, depth: int, directory: str | None, keep: bool,
             as_json: bool, seed: int = 1, timeout: float = 300.0, out=None,
             on_report=None) -> tuple[dict, str]:
    """Run the demo; (report, where the lab was). ``on_report(report)`` is called before the
    lab stops. Raises LabError/DemoError on failure."""
    out = out or sys.stdout
    made = directory is None
    directory = tempfile.mkdtemp(prefix="rcn-demo-") if made else os.path.abspath(directory)
    say = (lambda text: None) if as_json else (lambda text: (out.write(text + "\n"), out.flush()))
    capacity = max(lablib.DEFAULT_CAPACITY, -(-size // 512) * 512)
    topology = lablib.Topology(capacity=capacity)
    say(f"starting the lab in {directory} ...")
    lab = lablib.up(topology, directory, timeout=60.0)
    say(describe_up(lab))
    ok = False
    try:
        mode = "none" if as_json else ("bar" if out.isatty() else "lines")
        written = write_volume(lab["nbd_url"], size, block, depth, seed, Progress(size, out, mode))
        say("waiting until every entry is applied at the target ...")
        begin = time.monotonic()
        edges = lablib.wait_applied(lab, timeout)
        result = report(lab, size, block, depth, written, edges, time.monotonic() - begin)
        ok = result["equal"]
        if on_report is not None:
            on_report(result)
    finally:
        if keep:
            say(f"the lab keeps running: rcn lab down --dir {directory}")
        else:
            stopped = lablib.down(directory)
            say("lab stopped: " + ", ".join(f"{r['name']} {r['result']}" for r in stopped))
            if made and ok:
                shutil.rmtree(directory, ignore_errors=True)
                result["dir"] = None
            else:
                say(f"lab directory kept (configurations, logs, volumes): {directory}")
    return result, directory


def add_parser(groups) -> None:
    p = groups.add_parser("demo", help="start a lab, write through it, prove the copy is exact",
                          description="Start a lab (rcn lab up), write seeded data to the source "
                                      "array over NBD, wait until the target applied it all, "
                                      "compare the volumes and report the figures.")
    p.add_argument("--size", default="256MiB", help="bytes to write (default 256MiB)")
    p.add_argument("--block-size", default="64KiB", help="bytes per write (default 64KiB)")
    p.add_argument("--depth", type=int, default=16, help="writes in flight (default 16)")
    p.add_argument("--seed", type=int, default=1, help="data seed (default 1)")
    p.add_argument("--dir", help="lab directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="leave the lab running")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the target to apply everything (default 300)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args) -> str:
    try:
        size, block = parse_size(args.size), parse_size(args.block_size)
    except ValueError as exc:
        raise CliError(f"demo: {exc}", 2) from None
    if size <= 0 or size % 512 or block <= 0 or block % 512 or block > 32 << 20:
        raise CliError(f"demo: --size ({size}) and --block-size ({block}) must be positive "
                       f"multiples of 512, the block at most 32 MiB", 2)
    if args.depth < 1:
        raise CliError(f"demo: --depth {args.depth}: at least 1", 2)
    def show(result):
        if not args.json:
            sys.stdout.write(render(result) + "\n")
            sys.stdout.flush()
    try:
        result, _ = run_demo(size, block, args.depth, args.dir, args.keep, args.json, args.seed,
                             args.timeout, on_report=show)
    except (lablib.LabError, DemoError) as exc:
        raise CliError(f"demo: {exc}", getattr(exc, "status", 1)) from None
    if args.json:
        text = json.dumps(result, indent=1)
    else:
        verdict = "EQUALS" if result["equal"] else "DIFFERS FROM"
        text = f"demo: the target volume {verdict} the source"
    if not result["equal"]:
        sys.stdout.write(text + "\n")
        raise CliError("demo: the target volume DIFFERS from the source", 1)
    return text
