"""A bench host: stamped block writes over NBD, journalled, with a status file.

    python -m rcn.bench.workload --url nbd://H:P/EXPORT --journal FILE --status FILE
        [--block 4096] [--depth 16] [--rate 0] [--region OFFSET:LENGTH] [--seed 1]
        [--run-id N] [--seconds 0]

Each write is one stamped block (:func:`rcn.bench.consistency.stamp`) at a random block
of the region, never one with a write in flight, so writes to one block are ordered by
the host. ``--depth`` writes are in flight at most; ``--rate`` paces them (writes/s,
0: as fast as the depth allows). Every completion appends a journal record at once (one
``os.write``), so the journal is complete up to any instant; the status file (JSON) is
replaced atomically every 0.25 s and at the end.

SIGTERM, SIGINT or ``--seconds`` end the run: no more writes are issued, the ones in
flight are awaited (at most 30 s, then counted failed), the export is flushed and the
connection closed; the final status has ``done: true`` and the exit status is 0. A write
the server refuses is counted failed (journal ``ok`` 0, ``last_error`` in the status)
and the run goes on; a lost connection, or none at all, ends it with ``error`` in the
final status and exit status 1. Bad options exit 2.

:class:`Workload` is the state machine (a client with ``write(offset, data)`` returning
a Deferred, an injected clock); :func:`main` is the only place the global reactor is used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from rcn.bench.consistency import JOURNAL_RECORD, journal_header, stamp
from rcn.config import parse_size

DRAIN_TIMEOUT = 30.0         # seconds to wait for the writes in flight when stopping
MAX_OWED = 1.0               # seconds of writes a paced run catches up after a stall
STATUS_INTERVAL = 0.25
MAX_DEPTH = 4096
MAX_BLOCK = 32 << 20


class WorkloadError(Exception):
    pass


class JournalWriter:
    """The journal file: a header, then one record per completed write, each written at
    once with ``os.write`` (no buffer between the workload and the file)."""

    def __init__(self, path: str, run_id: int, block: int):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, journal_header(run_id, block))

    def record(self, index: int, offset: int, issued_at: float, completed_at: float,
               ok: bool) -> None:
        os.write(self._fd, JOURNAL_RECORD.pack(index, offset, issued_at, completed_at, ok))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_status(path: str, body: dict) -> None:
    """Replace the status file atomically (readers never see half of it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


def _fatal(failure) -> bool:
    """A failure that ends the run: anything but an error reply from the server."""
    return getattr(failure.value, "code", None) is None


class Workload:
    """Issues stamped writes and journals their completions (see the module docstring).

    ``start()`` returns a Deferred that fires once ``stop()`` (or ``fail()``) was called and
    the writes in flight are done or abandoned. ``error`` is then None or why the run
    ended early.
    """

    def __init__(self, client, journal: JournalWriter, *, block: int, depth: int,
                 rate: float, region_offset: int, region_length: int, seed: int,
                 run_id: int, clock, now=time.monotonic):
        self._client = client
        self._journal = journal
        self.block, self.depth, self.rate = block, depth, rate
        self.region_offset, self.blocks = region_offset, region_length // block
        self.run_id = run_id
        self._clock, self._now = clock, now
        self._rng = random.Random(seed)
        self._limit = min(depth, self.blocks)       # a block takes one write at a time
        self._in_flight: dict[int, tuple[int, int, float]] = {}   # index -> block, offset, t
        self._busy: set[int] = set()
        self._origin = 0.0            # the pacing schedule: write n is due at origin + n/rate
        self._timer = None
        self._drain_timer = None
        self._pumping = False
        self._stopping = False
        self.finished: Deferred = Deferred()
        self.started: float | None = None
        self.issued = self.acked = self.failed = self.bytes_acked = 0
        self.last_error: str | None = None
        self.error: str | None = None

    # -- control ---------------------------------------------------------------------------

    def start(self) -> Deferred:
        self.started = self._origin = self._now()
        self._pump()
        return self.finished

    def stop(self) -> None:
        """Issue no more; finish once the writes in flight are done (or DRAIN_TIMEOUT)."""
        if self._stopping:
            return
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._in_flight:
            self._drain_timer = self._clock.callLater(DRAIN_TIMEOUT, self._abandon)
        self._check_drained()

    def fail(self, reason: str) -> None:
        """End the run with an error (the connection is gone)."""
        if self.error is None:
            self.error = reason
        self.stop()

    def figures(self) -> dict:
        now = self._now()
        return {"started": self.started, "issued": self.issued, "acked": self.acked,
                "failed": self.failed, "bytes_acked": self.bytes_acked,
                "in_flight": len(self._in_flight),
                "elapsed_s": None if self.started is None else round(now - self.started, 6),
                "last_error": self.last_error}

    # -- issuing ---------------------------------------------------------------------------

    def _owed(self) -> int:
        """Writes due now by the pacing schedule (rate > 0)."""
        elapsed = self._now() - self._origin
        owed = math.floor(elapsed * self.rate + 1e-9) + 1 - self.issued
        most = max(1, math.floor(self.rate * MAX_OWED))
        if owed > most:       # a long stall: catch up one second's worth, not all of it
            self._origin += (owed - most) / self.rate
            owed = most
        return owed

    def _pump(self) -> None:
        if self._pumping:     # a write that failed at once re-enters through _completed
            return
        self._pumping = True
        try:
            while (not self._stopping and len(self._in_flight) < self._limit
                   and (self.rate <= 0 or self._owed() > 0)):
                self._issue()
            if (self.rate > 0 and not self._stopping and len(self._in_flight) < self._limit
                    and self._timer is None):
                due = self._origin + self.issued / self.rate
                self._timer = self._clock.callLater(max(0.0, due - self._now()), self._tick)
        finally:
            self._pumping = False
        self._check_drained()

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _pick(self) -> int:
        for _ in range(16):
            k = self._rng.randrange(self.blocks)
            if k not in self._busy:
                return k
        # only a region not much larger than the depth gets here
        return self._rng.choice([k for k in range(self.blocks) if k not in self._busy])

    def _issue(self) -> None:
        k = self._pick()
        self.issued += 1
        index = self.issued
        offset = self.region_offset + k * self.block
        issued_at = self._now()
        self._in_flight[index] = (k, offset, issued_at)
        self._busy.add(k)
        d = self._client.write(offset, stamp(self.run_id, index, offset, issued_at, self.block))
        d.addCallbacks(self._acked, self._failed, callbackArgs=(index,), errbackArgs=(index,))

    def _acked(self, _, index: int) -> None:
        self._completed(index, None)

    def _failed(self, failure, index: int) -> None:
        self._completed(index, failure)

    def _completed(self, index: int, failure) -> None:
        entry = self._in_flight.pop(index, None)
        if entry is None:
            return            # abandoned at the drain timeout: already journalled as failed
        k, offset, issued_at = entry
        self._busy.discard(k)
        ok = failure is None
        self._journal.record(index, offset, issued_at, self._now(), ok)
        if ok:
            self.acked += 1
            self.bytes_acked += self.block
        else:
            self.failed += 1
            self.last_error = f"write {index} at offset {offset}: {failure.getErrorMessage()}"
            if _fatal(failure):
                self.fail(self.last_error)
        self._pump()

    def _abandon(self) -> None:
        self._drain_timer = None
        now = self._now()
        stuck = sorted(self._in_flight.items())
        for index, (_, offset, issued_at) in stuck:
            self._journal.record(index, offset, issued_at, now, False)
        self.failed += len(stuck)
        self._in_flight.clear()
        self._busy.clear()
        self.last_error = (f"{len(stuck)} writes still in flight {DRAIN_TIMEOUT:g} s after the "
                           f"stop: counted failed")
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._in_flight and not self.finished.called:
            if self._drain_timer is not None and self._drain_timer.active():
                self._drain_timer.cancel()
            self.finished.callback(None)


# -- the process ---------------------------------------------------------------------------

@dataclass
class Settings:
    url: str
    journal: str
    status: str
    block: int = 4096
    depth: int = 16
    rate: float = 0.0
    region: tuple[int, int] | None = None     # (offset, length); None: the whole export
    seed: int = 1
    run_id: int = 1
    seconds: float = 0.0


async def run(reactor, settings: Settings, report) -> None:
    """Connect, write until stopped, flush, disconnect. ``report(workload, done, error)``
    writes the status (the final one once the workload exists); ``settings`` arrive
    checked. Raises WorkloadError."""
    from rcn.nbd import protocol as P
    from rcn.nbd.client import connect_url

    stop_requested = []
    control = {"stop": lambda: stop_requested.append(True)}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(control["stop"]))
    try:
        client = await connect_url(reactor, settings.url)
    except Exception as exc:
        raise WorkloadError(f"cannot connect to {settings.url}: {exc}") from None
    block = settings.block
    offset, length = settings.region or (0, client.size // block * block)
    if length <= 0 or offset + length > client.size:
        await client.disconnect()
        raise WorkloadError(f"--region {offset}:{length}: the export {settings.url} has "
                            f"{client.size} bytes, too few to hold it")
    try:
        journal = JournalWriter(settings.journal, settings.run_id, block)
    except OSError as exc:
        await client.disconnect()
        raise WorkloadError(f"journal {settings.journal}: {exc}") from None
    workload = Workload(client, journal, block=block, depth=settings.depth, rate=settings.rate,
                        region_offset=offset, region_length=length, seed=settings.seed,
                        run_id=settings.run_id, clock=reactor)
    leaving = []
    client.closed.addCallback(
        lambda _: None if leaving else workload.fail(f"NBD: connection to {settings.url} lost"))
    control["stop"] = workload.stop
    status = LoopingCall(lambda: report(workload, False, None))
    status.clock = reactor
    status.start(STATUS_INTERVAL)
    try:
        if settings.seconds > 0:
            reactor.callLater(settings.seconds, workload.stop)
        if stop_requested:
            workload.stop()
        await workload.start()
        if workload.error is None:
            if client.flags & P.FLAG_SEND_FLUSH:
                try:
                    await client.flush()
                except Exception as exc:
                    workload.fail(f"NBD flush: {exc}")
        leaving.append(True)
        await client.disconnect()
    finally:
        if status.running:
            status.stop()
        journal.close()
        report(workload, True, workload.error)
    if workload.error is not None:
        raise WorkloadError(workload.error)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _region(text: str) -> tuple[int, int]:
    offset, colon, length = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"{text!r} is not OFFSET:LENGTH")
    return _size(offset), _size(length)


def _url(text: str) -> str:
    from rcn.nbd.client import parse_nbd_url
    try:
        parse_nbd_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rcn.bench.workload",
        description="Write stamped blocks to an NBD export as a host would, journal every "
                    "completion and keep a JSON status file, until SIGTERM/SIGINT or "
                    "--seconds; then wait for the writes in flight (at most 30 s), flush and "
                    "disconnect. Exit 0 when the run ended as asked, 1 when the connection "
                    "failed or was lost (the error is in the status file), 2 for bad options. "
                    "Sizes take KiB/MiB/GiB suffixes.")
    parser.add_argument("--url", required=True, type=_url, help="nbd://HOST[:PORT]/EXPORT")
    parser.add_argument("--journal", required=True, metavar="FILE",
                        help="journal file (replaced): one record per completed write")
    parser.add_argument("--status", required=True, metavar="FILE",
                        help="JSON status file, replaced every 0.25 s and at the end")
    parser.add_argument("--block", type=_size, default=4096,
                        help="bytes per write, a multiple of 512 (default 4096)")
    parser.add_argument("--depth", type=int, default=16,
                        help=f"writes in flight at most, 1..{MAX_DEPTH} (default 16)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="writes per second; 0: as fast as --depth allows (default 0)")
    parser.add_argument("--region", type=_region, metavar="OFFSET:LENGTH",
                        help="the byte range written, block-aligned (default: the whole "
                             "export)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the random block choice (default 1)")
    parser.add_argument("--run-id", type=int, metavar="N",
                        help="run id in every stamp, 1..2^64-1 (default: random)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this many seconds; 0: run until SIGTERM/SIGINT "
                             "(default 0)")
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    block = args.block
    if block < 512 or block % 512 or block > MAX_BLOCK:
        parser.error(f"--block {block}: a multiple of 512, from 512 to {MAX_BLOCK}")
    if not 1 <= args.depth <= MAX_DEPTH:
        parser.error(f"--depth {args.depth}: from 1 to {MAX_DEPTH}")
    if not (args.rate >= 0 and math.isfinite(args.rate)):
        parser.error(f"--rate {args.rate}: a number of writes per second, 0 or more")
    if not (args.seconds >= 0 and math.isfinite(args.seconds)):
        parser.error(f"--seconds {args.seconds}: 0 or more")
    if args.region is not None:
        offset, length = args.region
        if offset % block or length % block or length <= 0:
            parser.error(f"--region {offset}:{length}: offset and length must be multiples "
                         f"of --block {block}, the length positive")
    run_id = args.run_id if args.run_id is not None else secrets.randbits(63) + 1
    if not 1 <= run_id < 1 << 64:
        parser.error(f"--run-id {run_id}: from 1 to 2^64-1")
    return Settings(url=args.url, journal=args.journal, status=args.status, block=block,
                    depth=args.depth, rate=args.rate, region=args.region, seed=args.seed,
                    run_id=run_id, seconds=args.seconds)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    from twisted.internet import reactor     # the process owns the reactor
    from twisted.internet.defer import ensureDeferred

    base = {"pid": os.getpid(), "url": settings.url, "run_id": settings.run_id,
            "block": settings.block, "depth": settings.depth, "rate": settings.rate,
            "journal": settings.journal}
    empty = {"started": None, "issued": 0, "acked": 0, "failed": 0, "bytes_acked": 0,
             "in_flight": 0, "elapsed_s": None, "last_error": None}

    outcome: dict = {"workload": None, "reported_error": None, "error": None}

    def report(workload, done: bool, error: str | None) -> None:
        outcome["workload"] = workload
        figures = workload.figures() if workload is not None else empty
        region = ({"region_offset": workload.region_offset,
                   "region_length": workload.blocks * workload.block} if workload else {})
        write_status(settings.status, {**base, **region, **figures, "done": done,
                                       "error": error})
        outcome["reported_error"] = error

    def finished(result):
        if hasattr(result, "getErrorMessage"):
            outcome["error"] = (result.getErrorMessage() if isinstance(result.value, WorkloadError)
                                else f"unexpected: {result.getTraceback()}")
        reactor.stop()

    try:
        report(None, False, None)
    except OSError as exc:
        print(f"workload: status file {settings.status}: {exc}", file=sys.stderr)
        return 1
    reactor.callWhenRunning(
        lambda: ensureDeferred(run(reactor, settings, report)).addBoth(finished))
    reactor.run(installSignalHandlers=False)
    error = outcome["error"]
    if error is None:
        return 0
    if outcome["reported_error"] != error:     # failed before or outside the run's report
        report(outcome["workload"], True, error)
    print(f"workload: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
