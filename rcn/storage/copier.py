"""The remote copy program's copies: initial copy and resync, one run per pair.

:class:`Copies` starts a run when a pair is created (every allocated extent) or
resynchronised (the tracks in the bitmap), stops it when the pair's state moves
on, and answers DUPLEX when it is done. :class:`CopyRun` keeps ``copy_window``
RIO WRs of at most ``copy_chunk`` bytes in flight.

How a copy keeps the bitmap right: the ranges to copy are marked in the bitmap
first; each chunk is read just before it is sent, and then every track that
lies wholly below the chunk's end is cleared (ranges go in ascending order, so
all of their data below it has been read). A host write after that is sent
itself (the pair is replicating) after the chunk, on the same ordered session;
a WR that fails marks its range again and the pair goes failure-suspend. So
when a copy stops for any reason the bitmap still holds every track not yet
copied, and a resync finishes the job.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.logger import Logger

from datapath.frames.fcp import RcnServiceAction as Action
from rcn.pairstate import Event, explain
from rcn.rio.fcp import ScsiResult
from rcn.storage.pairs import CopyProgress, Pair
from rcn.storage.volume import VolumeError

if TYPE_CHECKING:
    from rcn.storage.remotecopy import RemoteCopy

_log = Logger(namespace="rcn.storage.remotecopy")   # one namespace for the whole program


class CopyRun:
    """Copies ``ranges`` (sorted, disjoint byte ranges, already marked in the bitmap)."""

    def __init__(self, copies: "Copies", pair: Pair, volume, kind: str, ranges):
        self.copies, self.rc = copies, copies.rc
        self.pair, self.volume = pair, volume
        self.state = pair.state               # the copy state this run belongs to
        self.ranges = deque(ranges)
        self.active = True
        self.outstanding = 0
        self.cursor = 0                       # tracks below it are cleared
        self._pumping = self._again = False
        self.progress = CopyProgress(kind, sum(n for _, n in ranges), pair.bitmap.popcount(),
                                     self.rc.clock.seconds())
        pair.copy = self.progress

    def stop(self, outcome: str) -> None:
        if self.active:
            self.active = False
            self.progress.outcome = outcome
            self.progress.finished = self.rc.clock.seconds()

    def _next_chunk(self) -> tuple[int, int]:
        offset, length = self.ranges[0]
        n = min(length, self.rc.copy_chunk)
        if n == length:
            self.ranges.popleft()
        else:
            self.ranges[0] = (offset + n, length - n)
        return offset, n

    def pump(self) -> None:
        """Issue chunks up to the window; finish when all are acknowledged.

        Answers may come synchronously (a fake session): a nested call only asks
        the running loop to go round again, so the stack stays flat.
        """
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            again = True
            while again:
                self._again = False
                while self.active and self.ranges and self.outstanding < self.rc.copy_window:
                    self._issue()
                if self.active and not self.ranges and self.outstanding == 0:
                    self.active = False
                    self._finish()
                again = self._again
        finally:
            self._pumping = False

    def _issue(self) -> None:
        pair, bitmap = self.pair, self.pair.bitmap
        offset, length = self._next_chunk()
        try:
            data = self.volume.read(offset, length)
        except VolumeError as exc:
            self.copies.failed(self, f"reading the volume for the copy failed: {exc}")
            return
        upto = (offset + length) // pair.track_size   # every track below is read now
        if upto > self.cursor:
            bitmap.clear_range(self.cursor, upto - self.cursor)
            self.cursor = upto
        self.progress.bytes_sent += length
        self.outstanding += 1
        store = self.rc.store            # cleared above, not yet at the partner: intent
        span = store.intend(pair, offset, length) if store is not None else None
        d = self.rc._rio_write(pair, offset // self.volume.block_size, data, False)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(offset, length),
                       errbackArgs=(offset, length))
        if span is not None:
            d.addBoth(then, lambda: store.done(pair, span))

    def _answered(self, result: ScsiResult, offset: int, length: int) -> None:
        if not result.good:
            self._lost(offset, length, f"the partner refused a copy WR: {explain(result)}")
            return
        self.outstanding -= 1
        self.progress.bytes_copied += length
        self.pair.bytes_copied_total += length
        self.pump()

    def _failed(self, failure, offset: int, length: int) -> None:
        self._lost(offset, length, f"a copy WR failed: {failure.getErrorMessage()}", True)

    def _lost(self, offset: int, length: int, why: str, unanswered: bool = False) -> None:
        self.outstanding -= 1
        self.rc._wr_failed(self.pair, offset, length, why, unanswered)

    def _finish(self) -> None:
        bitmap = self.pair.bitmap
        if self.cursor < bitmap.track_count:      # the last, partly read track
            bitmap.clear_range(self.cursor, bitmap.track_count - self.cursor)
            self.cursor = bitmap.track_count
        self.copies.done(self)


class Copies:
    """The copy runs of one array, at most one per LUN."""

    def __init__(self, rc: RemoteCopy):
        self.rc = rc
        self._runs: dict[int, CopyRun] = {}

    def start(self, pair: Pair, kind: str) -> None:
        """Copy ``pair``'s volume: ``initial`` (every allocated extent) or ``resync`` (the
        tracks in its bitmap)."""
        volume = self.rc.volumes[pair.lun]
        limit = min(pair.capacity, volume.capacity)
        if kind == "initial":
            ranges = allocated_ranges(volume, limit)
            pair.bitmap.clear_range(0, pair.bitmap.track_count)
            for offset, length in ranges:
                pair.mark(offset, length)
        else:
            first, count, _ = pair.bitmap.dirty_runs()
            t = pair.track_size
            ranges = [(f * t, min((f + c) * t, limit) - f * t)
                      for f, c in zip(first.tolist(), count.tolist()) if f * t < limit]
        run = self._runs[pair.lun] = CopyRun(self, pair, volume, kind, ranges)
        _log.info("{pair}: {kind} copy of {n} bytes ({tracks} tracks)", pair=pair.name, kind=kind,
                  n=run.progress.bytes_total, tracks=run.progress.tracks)
        run.pump()

    def state_changed(self, pair: Pair, event: Event) -> None:
        """``pair`` took ``event``: a run of another state stops."""
        run = self._runs.get(pair.lun)
        if run is not None and run.pair is pair and run.active and pair.state is not run.state:
            run.stop("failed" if event is Event.FAILED else "stopped")

    def forget(self, lun: int) -> None:
        self._runs.pop(lun, None)

    def failed(self, run: CopyRun, why: str) -> None:
        run.pair.last_error = why
        _log.error("{pair}: {why}; failure suspend", pair=run.pair.name, why=why)
        self.rc._event(run.pair, Event.FAILED)
        run.stop("failed")

    def done(self, run: CopyRun) -> None:
        rc, pair = self.rc, run.pair
        if pair.state is not run.state or not rc._present(pair):
            run.stop("stopped")
            return

        def dok(_):
            run.progress.outcome = "done"
            run.progress.finished = rc.clock.seconds()
            if rc._event(pair, Event.DUPLEXED):
                pair.copies_completed += 1

        def failed(failure):
            run.progress.outcome = "failed"
            run.progress.finished = rc.clock.seconds()
            pair.last_error = f"DUPLEX after the copy: {failure.getErrorMessage()}"
            _log.error("{pair}: {why}; failure suspend", pair=pair.name, why=pair.last_error)
            rc._event(pair, Event.FAILED)
        rc._send_control(pair, Action.DUPLEX).addCallbacks(dok, failed)


def then(result, call):
    """A callback/errback that calls ``call()`` and passes the result on."""
    call()
    return result


def allocated_ranges(volume, limit: int) -> list[tuple[int, int]]:
    """The volume's allocated extents below ``limit``, widened to whole blocks, sorted and
    merged; the whole volume when it cannot tell."""
    query = getattr(volume, "allocated_extents", None)
    extents = query() if query is not None else [(0, volume.capacity)]
    bs = volume.block_size
    out: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        start = offset // bs * bs
        end = min(-(-(offset + length) // bs) * bs, limit)
        if end <= start:
            continue
        if out and start <= out[-1][0] + out[-1][1]:
            prev_start, prev_length = out[-1]
            out[-1] = (prev_start, max(prev_start + prev_length, end) - prev_start)
        else:
            out.append((start, end - start))
    return out
