"""Log storage area throughput: group commit against one fsync per entry.

Rows, all in one run on the same directory (so on the same file system):

* ``baseline``: a plain loop of ``os.write`` + ``os.fdatasync`` of one
  ``--size`` record at a time (one fsync per entry): what an edge that syncs
  every write on its own would get.
* ``durable, N outstanding``: ``LogStore`` in durable mode driven by the real
  reactor and ``deferToThread``, with N appends in flight (each completion
  deletes its entry, as an immediate WROK would, and issues the next append).
  Group commit lets one fsync cover the appends that arrived while the
  previous commit ran, so entries/fsync grows with N.
* ``memory``: the patent's memory mode (no files), a synchronous loop of
  next_sequence + append + delete: the store's own bookkeeping cost.

``vs baseline`` is entries/s over the baseline's entries/s; ``CPU us/entry`` is
the process's CPU time (every thread: the reactor's and the commits') per
entry, the figure a refactoring must not raise. fsync cost
depends on the file system and the device below it, so the directory's mount
(from /proc/mounts) is printed with the table. MB is 10^6 bytes of entries.

    python -m tools.bench_logstore [--seconds 3] [--size 4096] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from rcn.edge.logstore import LogStore

DEPTHS = (1, 16, 64)
GROUP = 1


def filesystem_of(path: str) -> str:
    """The /proc/mounts line of the mount that holds ``path``."""
    real = os.path.realpath(path)
    best = None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 4:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) >= len(best[1])):
                    best = fields
    except OSError as exc:
        return f"unknown ({exc.strerror})"
    if best is None:
        return "unknown"
    return f"{best[0]} on {best[1]} type {best[2]} ({best[3]})"


def baseline(directory: str, size: int, seconds: float) -> dict:
    path = os.path.join(directory, "baseline.dat")
    record = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    count = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            os.write(fd, record)
            os.fdatasync(fd)
            count += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return {"entries": count, "elapsed": elapsed, "fsyncs": count, "commit_ms": None}


def _cpu_row(row: dict, cpu_started: float) -> dict:
    row["cpu"] = time.process_time() - cpu_started
    return row


async def durable(directory: str, depth: int, size: int, seconds: float) -> dict:
    store = LogStore(directory)
    store.open()
    payload = os.urandom(size)
    finished: Deferred = Deferred()
    state = {"done": 0, "active": depth, "error": None}
    deadline = time.perf_counter() + seconds

    def issue() -> None:
        sequence = store.next_sequence(GROUP)
        store.append(GROUP, sequence, payload).addCallbacks(written, failed,
                                                            callbackArgs=(sequence,))

    def written(_, sequence: int) -> None:
        state["done"] += 1
        store.delete(GROUP, sequence)
        if time.perf_counter() < deadline:
            issue()
        else:
            retire()

    def failed(failure) -> None:
        state["error"] = failure
        retire()

    def retire() -> None:
        state["active"] -= 1
        if state["active"] == 0:
            finished.callback(None)

    start = time.perf_counter()
    for _ in range(depth):
        issue()
    await finished
    elapsed = time.perf_counter() - start
    counters = store.counters()
    await store.close()
    if state["error"] is not None:
        state["error"].raiseException()
    commits = counters["commits"] or 1
    return {"entries": state["done"], "elapsed": elapsed, "fsyncs": counters["fsyncs"],
            "commit_ms": counters["commit_ns_total"] / commits / 1e6}


def memory(size: int, seconds: float) -> dict:
    store = LogStore(None, mode="memory")
    store.open()
    payload = os.urandom(size)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(256):
            sequence = store.next_sequence(GROUP)
            store.append(GROUP, sequence, payload)
            store.delete(GROUP, sequence)
        count += 256
        if time.perf_counter() >= deadline:
            break
    return {"entries": count, "elapsed": time.perf_counter() - start, "fsyncs": 0,
            "commit_ms": None}


def render(rows: list[tuple[str, dict]], size: int) -> str:
    base = rows[0][1]["entries"] / rows[0][1]["elapsed"]
    lines = [f"{'mode':<26} {'entries/s':>10} {'MB/s':>8} {'fsyncs/s':>9} "
             f"{'entries/fsync':>14} {'commit ms':>10} {'vs baseline':>12} {'CPU us/entry':>13}"]
    for name, r in rows:
        rate = r["entries"] / r["elapsed"]
        fsyncs = r["fsyncs"] / r["elapsed"]
        per = f"{r['entries'] / r['fsyncs']:.1f}" if r["fsyncs"] else "-"
        commit = f"{r['commit_ms']:.2f}" if r["commit_ms"] is not None else "-"
        lines.append(f"{name:<26} {rate:>10.0f} {rate * size / 1e6:>8.1f} {fsyncs:>9.0f} "
                     f"{per:>14} {commit:>10} {rate / base:>11.2f}x "
                     f"{r['cpu'] / r['entries'] * 1e6:>13.2f}")
    return "\n".join(lines)


async def run(args) -> None:
    parent = args.dir
    if parent:
        os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_logstore-", dir=parent)
    try:
        print(f"log store benchmark: {args.size}-byte entries, {args.seconds:g} s per row, "
              f"directory {work}")
        print(f"filesystem: {filesystem_of(work)}")
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}\n", flush=True)
        cpu = time.process_time()
        rows = [("baseline write+fdatasync",
                 _cpu_row(baseline(work, args.size, args.seconds), cpu))]
        for depth in DEPTHS:
            directory = os.path.join(work, f"durable-{depth}")
            cpu = time.process_time()
            row = await durable(directory, depth, args.size, args.seconds)
            rows.append((f"durable, {depth} outstanding", _cpu_row(row, cpu)))
        cpu = time.process_time()
        rows.append(("memory", _cpu_row(memory(args.size, args.seconds), cpu)))
        print(render(rows, args.size))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_logstore",
        description="Log store throughput (entries/s, MB/s, fsyncs/s) with group commit, "
                    "against one write+fdatasync per entry.")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="duration of each row, seconds (default 3)")
    parser.add_argument("--size", type=int, default=4096, help="entry size, bytes (default 4096)")
    parser.add_argument("--dir", help="parent directory for the files (default: the system "
                        "temp directory); its file system is what is measured")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.size < 1:
        parser.error("--seconds and --size must be positive")
    task.react(lambda reactor: ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
