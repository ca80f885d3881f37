"""The remote copy program's host write path: check, write locally, replicate or record.

:class:`HostWrites` serves :class:`rcn.storage.remotecopy.RemoteCopy`'s
``around_host_write`` (which checks the write first), ``written`` and ``host_write`` (the
module doc there says what each does). A replicating source pair sends the
written blocks as ORDERED RIO WRs of at most ``copy_chunk`` bytes: in sync mode
the host's reply waits for them, in async mode for a place in the pair's queue
of ``queue_limit`` outstanding writes. A stopped pair records the write in its
bitmap instead (1211 at a source, 1213 at a stopped target).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger

from rcn.pairstate import STOPPED, TARGET_WRITABLE, PairState, explain
from rcn.rio.fcp import ScsiResult
from rcn.storage.copier import then
from rcn.storage.copyerrors import HostWriteRefused, NotFound
from rcn.storage.pairs import Pair

if TYPE_CHECKING:
    from rcn.storage.remotecopy import RemoteCopy

S = PairState

_log = Logger(namespace="rcn.storage.remotecopy")   # one namespace for the whole program


class ReplicationCounters:
    """Host-write RIOs (the copy's are counted per pair)."""

    def __init__(self):
        self.sent = 0
        self.acknowledged = 0
        self.failed = 0
        self.bytes_sent = 0
        self.recorded_in_bitmap = 0
        self.waits_for_queue = 0
        self.host_writes_refused = 0


class HostWrites:
    """The host write path of one array (see the module doc)."""

    def __init__(self, rc: RemoteCopy):
        self.rc = rc
        self.counters = rc.counters
        self._refusal_logged: dict[int, PairState] = {}

    def _check(self, lun: int, pair: Pair | None) -> None:
        if pair is None or pair.role != "target" or pair.state in TARGET_WRITABLE:
            return
        self.counters.host_writes_refused += 1
        message = (f"LUN {lun} is the target of {pair.name} in state {pair.state.value}: its "
                   f"host may write in simplex, suspend or failure-suspend only")
        if self._refusal_logged.get(lun) is not pair.state:    # once per state, not per write
            self._refusal_logged[lun] = pair.state
            _log.warn("host write refused (EPERM): {message}", message=message)
        raise HostWriteRefused(message)

    def host_write(self, lun: int, offset: int, data, fua: bool = False) -> Deferred:
        try:
            volume = self.rc._volume(lun)
        except NotFound as exc:
            return fail(exc)
        return maybeDeferred(self.around_host_write, lun, offset, len(data), fua,
                             lambda: volume.write(offset, data, fua))

    def around_host_write(self, lun: int, offset: int, length: int, fua: bool, apply):
        pair = self.rc.pairs.for_lun(lun)         # looked up once for the whole write
        self._check(lun, pair)
        store = self.rc.store
        span = None
        if store is not None and pair is not None and pair.replicating:
            span = store.intend(pair, offset, length)
        sent = None if span is None else lambda: store.done(pair, span)
        try:
            apply()
        except Exception:
            if sent is not None:
                sent()
            raise
        return self._written(pair, lun, offset, length, fua, sent)

    def written(self, lun: int, offset: int, length: int, fua: bool = False, sent=None):
        return self._written(self.rc.pairs.for_lun(lun), lun, offset, length, fua, sent)

    def _written(self, pair: Pair | None, lun: int, offset: int, length: int, fua: bool, sent):
        if pair is None or length <= 0 or not pair.replicating:
            self._written_locally(pair, offset, length)
            if sent is not None:
                sent()
            return None
        volume = self.rc.volumes[lun]
        bs = volume.block_size
        first, last = offset // bs, -(-(offset + length) // bs)
        step = max(self.rc.copy_chunk // bs, 1)
        sends = [(start, min(last - start, step)) for start in range(first, last, step)]
        if pair.mode == "sync":
            d = self._send_all(pair, sends, fua)
            return d if sent is None else d.addBoth(then, sent)
        return self._admit(pair).addCallback(lambda _: self._send_async(pair, sends, fua, sent))

    def _written_locally(self, pair: Pair | None, offset: int, length: int) -> None:
        """A host write that is not replicated: 1211 (a stopped source) or 1213 (a stopped
        target) records it."""
        if pair is None or length <= 0 or pair.state is S.SIMPLEX:
            return
        if pair.role == "source" or pair.state in STOPPED:
            self._record(pair, offset, length)

    def _record(self, pair: Pair, offset: int, length: int) -> None:
        pair.mark(offset, length)
        self.counters.recorded_in_bitmap += 1

    def _send_all(self, pair: Pair, sends, fua) -> Deferred:
        d = succeed(None)
        for start, count in sends:
            d.addCallback(lambda _, s=start, c=count: self._send(pair, s, c, fua))
        return d

    def _send(self, pair: Pair, lba: int, blocks: int, fua: bool) -> Deferred:
        """One RIO WR of blocks already on the local volume; never fails."""
        rc = self.rc
        bs = rc.volumes[pair.lun].block_size
        present = rc._present(pair)
        if not pair.replicating or not present:
            if present:
                self._record(pair, lba * bs, blocks * bs)
            return succeed(None)
        data = rc.volumes[pair.lun].read(lba * bs, blocks * bs)
        self.counters.sent += 1
        self.counters.bytes_sent += len(data)
        d = rc._rio_write(pair, lba, data, fua)
        d.addCallback(self._answered, pair, lba * bs, len(data))
        d.addErrback(self._failed, pair, lba * bs, len(data))
        return d

    def _answered(self, result: ScsiResult, pair: Pair, offset: int, length: int) -> None:
        if not result.good:
            self.counters.failed += 1
            self.rc._wr_failed(pair, offset, length,
                               f"the partner refused a WR: {explain(result)}")
            return
        self.counters.acknowledged += 1

    def _failed(self, failure, pair: Pair, offset: int, length: int) -> None:
        self.counters.failed += 1
        self.rc._wr_failed(pair, offset, length, f"RIO WR failed: {failure.getErrorMessage()}",
                           True)

    # async mode: a bounded number of outstanding RIOs per pair
    def _admit(self, pair: Pair) -> Deferred:
        if pair.outstanding < pair.queue_limit:
            pair.outstanding += 1
            return succeed(None)
        self.counters.waits_for_queue += 1
        waiter = Deferred()
        pair.waiting.append(waiter)
        return waiter

    def _release(self, _, pair: Pair) -> None:
        if pair.waiting:
            pair.waiting.pop(0).callback(None)    # the place passes to the next writer
        else:
            pair.outstanding -= 1

    def _send_async(self, pair: Pair, sends, fua, sent=None) -> None:
        d = self._send_all(pair, sends, fua).addBoth(self._release, pair)
        if sent is not None:
            d.addBoth(then, sent)
