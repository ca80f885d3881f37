"""The remote copy program's host commands: the pair's state changes asked by the operator.

:class:`PairCommands` runs ``pair_create``, ``suspend`` (a target's: failover),
``takeover``, ``resync``, ``pair_delete`` and ``reverse`` for
:class:`rcn.storage.remotecopy.RemoteCopy`, one command per pair at a time, and
the automatic resync of a source pair whose RIOs went unanswered
(``link_restored`` and the back-off timer). Each command returns
``Deferred[dict]`` (the pair as ``describe`` shows it) or fails with an error of
:mod:`rcn.storage.copyerrors` or :class:`rcn.pairstate.PairStateError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.fcp import RcnServiceAction as Action
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.pairstate import (REPLICATING, STOPPED, TARGET_ACCEPTS, Event, PairState,
                            PairStateError)
from rcn.rio.fcp import ScsiResult
from rcn.storage.copyerrors import (RESIDUAL_SIZE, BadRequest, Busy, Conflict, PartnerRefused,
                                    PartnerUnreachable, RemoteCopyError, format_residual,
                                    residual_of)
from rcn.storage.pairs import Pair

if TYPE_CHECKING:
    from rcn.storage.remotecopy import RemoteCopy

S = PairState
AUTO_RESYNC_FIRST = 5.0       # seconds after an unanswered RIO before resyncing by itself
AUTO_RESYNC_MAX = 60.0        # the longest wait between attempts

_log = Logger(namespace="rcn.storage.remotecopy")   # one namespace for the whole program


def resync_allocation(track_count: int) -> int:
    """RESYNC's allocation length: a RAW DPOK bitmap of ``track_count`` tracks at most."""
    return 44 + 8 * -(-track_count // 64)


def _names(states) -> str:
    names = [s.value for s in PairState if s in states]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _require(pair: Pair, command: str, states) -> None:
    if pair.state not in states:
        raise PairStateError(f"{pair.name} is {pair.state.value}: {command} needs "
                             f"{_names(states)}", pair.state)


def _require_role(pair: Pair, role: str, command: str, hint: str) -> None:
    if pair.role != role:
        raise Conflict(f"{pair.name} is {pair.state.value}: {command} is for the {role} of "
                       f"a pair; {hint}")


def _start(pair: Pair, command: str, work) -> Deferred:
    """Run ``work()`` as ``pair``'s one control command at a time."""
    if pair.busy:
        return fail(Busy(f"{pair.name}: {pair.busy} is still running; try again "
                         f"when it is done"))
    pair.busy = command

    def done(result):
        if pair.busy == command:
            pair.busy = None
        return result
    return maybeDeferred(work).addBoth(done)


def _failed_command(failure, pair: Pair, command: str):
    """Record a failed command's reason on the pair (and log it), pass the failure on."""
    if failure.check(RemoteCopyError, PairStateError) and not failure.check(Busy):
        pair.last_error = f"{command}: {failure.getErrorMessage()}"
        _log.warn("{pair}: {command} failed: {why}", pair=pair.name, command=command,
                  why=failure.getErrorMessage())
    return failure


def _check_create(old: Pair | None, mode: str, partner_wwpn: int, partner_lun: int,
                  group: int, queue_limit: int) -> None:
    """Raise unless pair-create's arguments and the volume's current row allow it."""
    if mode not in ("sync", "async"):
        raise BadRequest(f"mode: {mode!r} is not sync or async")
    for name, value, high in (("partner_wwpn", partner_wwpn, (1 << 64) - 1),
                              ("partner_lun", partner_lun, fcp.FLAT_LUN_LIMIT - 1),
                              ("group", group, (1 << 32) - 1),
                              ("queue_limit", queue_limit, 1 << 20)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise BadRequest(f"{name}: {value!r} is not an integer in 0..{high}")
    if old is not None:
        if old.busy:
            raise Busy(f"{old.name}: {old.busy} is still running")
        _require(old, "pair-create", {S.SIMPLEX})


class PairCommands:
    """The host commands of one array's pairs (see the module doc)."""

    def __init__(self, rc: RemoteCopy):
        self.rc = rc
        self._auto_timers: dict[int, object] = {}     # lun -> next automatic resync attempt
        self._auto_delay: dict[int, float] = {}       # lun -> wait before the next one

    def pair_create(self, lun: int, partner_wwpn: int, partner_lun: int, mode: str = "sync",
                    group: int = 0, queue_limit: int = 1024) -> Deferred:
        rc = self.rc
        try:
            volume = rc._volume(lun)
            old = rc.pairs.for_lun(lun)
            _check_create(old, mode, partner_wwpn, partner_lun, group, queue_limit)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        if old is not None:
            rc.pairs.remove(lun)
        pair = Pair(lun, partner_wwpn, partner_lun, group, S.SIMPLEX, mode, queue_limit,
                    "source", volume.capacity, rc.track_size)
        rc.pairs.add(pair)
        params = fcp.build_pair_params(volume.capacity, volume.block_size, pair.track_size,
                                       0 if mode == "sync" else 1)

        def created(result: ScsiResult) -> dict:
            if not rc._present(pair):
                raise Conflict(f"{pair.name} was deleted while pair-create ran")
            rc._event(pair, Event.CREATED)
            rc.known_partners.add(partner_wwpn)     # logged in to at every link-up now
            pair.last_error = None
            rc.copies.start(pair, "initial")
            return rc.describe(pair)

        def refused(failure):
            if rc._present(pair):          # leave things as they were
                rc.pairs.remove(lun)
                if old is not None:
                    rc.pairs.add(old)
                    old.last_error = f"pair-create: {failure.getErrorMessage()}"
            _log.warn("{pair}: pair-create failed: {why}", pair=pair.name,
                      why=failure.getErrorMessage())
            return failure
        return _start(pair, "pair-create", lambda: rc._send_control(
            pair, Action.PAIR_CREATE, params).addCallbacks(created, refused))

    def suspend(self, lun: int, fast: bool = False) -> Deferred:
        rc = self.rc
        try:
            pair = rc._pair(lun)
            if pair.role == "target":
                return self._failover(pair, fast)
            if fast:
                raise BadRequest("fast: only a target's suspend (failover) has a fast variant")
            _require(pair, "suspend", REPLICATING)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)

        def work():
            rc._event(pair, Event.SUSPEND_REQUESTED)     # writes go to 1211 from now on
            d = rc._send_control(pair, Action.SUSPEND)

            def done(_):
                rc._event(pair, Event.SUSPENDED)
                return rc.describe(pair)

            def failed(failure):
                # writes since SUSPENDING were not sent: the pair cannot go back
                rc._event(pair, Event.FAILED)
                return failure
            return d.addCallbacks(done, failed)
        return _start(pair, "suspend", work).addErrback(_failed_command, pair, "suspend")

    def _failover(self, pair: Pair, fast: bool) -> Deferred:
        if pair.state in STOPPED:                 # nothing to fail over: answer at once
            return succeed(self.rc.describe(pair))
        _require(pair, "suspend (failover)", REPLICATING)
        return _start(pair, "suspend", lambda: self._residual_command(
            pair, Action.SUSPEND, fast)).addErrback(_failed_command, pair, "suspend")

    def takeover(self, lun: int) -> Deferred:
        try:
            pair = self.rc._pair(lun)
            _require_role(pair, "target", "takeover",
                          "at the source, suspend the pair or delete it")
            _require(pair, "takeover", TARGET_ACCEPTS)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        return _start(pair, "takeover", lambda: self._residual_command(
            pair, Action.TAKEOVER, False)).addErrback(_failed_command, pair, "takeover")

    def _residual_command(self, pair: Pair, action: Action, fast: bool) -> Deferred:
        """Failover SUSPEND or TAKEOVER from the target: GOOD -> failure-suspend."""
        rc = self.rc

        def done(result: ScsiResult) -> dict:
            pair.residual = residual_of(result)
            rc._event(pair, Event.FAILED)
            if pair.residual is not None:
                _log.info("{pair}: {action} done: {residual}", pair=pair.name,
                          action=action.name, residual=format_residual(pair.residual))
            return rc.describe(pair)

        def failed(failure):
            if failure.check(PartnerRefused) and failure.value.residual is not None:
                pair.residual = failure.value.residual
            return failure
        return rc._send_control(pair, action, data_in_length=RESIDUAL_SIZE,
                                fast=fast).addCallbacks(done, failed)

    def resync(self, lun: int) -> Deferred:
        rc = self.rc
        try:
            pair = rc._pair(lun)
            _require_role(pair, "source", "resync",
                          "reverse the pair first to copy from this side")
            _require(pair, "resync", STOPPED)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        allocation = resync_allocation(pair.bitmap.track_count)

        def dpok(result: ScsiResult) -> dict:
            if not rc._present(pair):
                raise Conflict(f"{pair.name} was deleted while resync ran")
            _merge_dpok(pair, result.data_in)
            pair.link_lost = False
            if not rc._event(pair, Event.RESYNCED):
                raise PairStateError(f"{pair.name} is {pair.state.value} after DPOK: "
                                     f"resync cannot go on", pair.state)
            pair.last_error = None
            rc.copies.start(pair, "resync")
            return rc.describe(pair)
        return _start(pair, "resync", lambda: rc._send_control(
            pair, Action.RESYNC, data_in_length=allocation).addCallback(dpok)).addErrback(
            _failed_command, pair, "resync")

    def pair_delete(self, lun: int, local: bool = False) -> Deferred:
        rc = self.rc
        try:
            pair = rc._pair(lun)
        except RemoteCopyError as exc:
            return fail(exc)
        if local or pair.state is S.SIMPLEX:      # nobody else holds a simplex row
            rc._drop(pair)
            return succeed(rc.describe(pair))

        def deleted(_):
            rc._drop(pair)
            return rc.describe(pair)

        def failed(failure):
            if failure.check(RemoteCopyError):
                failure.value.args = (f"{failure.getErrorMessage()}; pair-delete with local "
                                      f"(--local) drops this array's row only",)
            return failure
        return _start(pair, "pair-delete", lambda: rc._send_control(
            pair, Action.DELETE).addCallbacks(deleted, failed)).addErrback(
            _failed_command, pair, "pair-delete")

    def reverse(self, lun: int) -> Deferred:
        try:
            pair = self.rc._pair(lun)
            _require(pair, "reverse", STOPPED)
            if pair.busy:
                raise Busy(f"{pair.name}: {pair.busy} is still running")
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        before = pair.name
        # rcn.pairstate has no event for this: the row turns round in place, suspended
        state = pair.state
        pair.role = "target" if pair.role == "source" else "source"
        pair.state = S.SUSPEND
        _log.info("{before}: reversed, now {pair} in suspend keeping its {n} dirty tracks",
                  before=before, pair=pair.name, n=pair.bitmap.popcount())
        self.rc._changed(pair, state, "reversed")
        return succeed(self.rc.describe(pair))

    # -- automatic resync ----------------------------------------------------------------
    def link_restored(self) -> list[Deferred]:
        """See :meth:`rcn.storage.remotecopy.RemoteCopy.link_restored`."""
        if not self.rc.auto_resync:
            return []
        started = []
        for pair in self.rc.pairs:
            if self._auto_resyncable(pair):
                self._auto_delay.pop(pair.lun, None)
                started.append(self._auto_resync(pair, "the link to the edge is back"))
        return started

    def _auto_resyncable(self, pair: Pair) -> bool:
        return (self.rc.auto_resync and self.rc._present(pair) and pair.role == "source"
                and pair.link_lost and not pair.busy and pair.state is S.FAILURE_SUSPEND)

    def _auto_resync(self, pair: Pair, why: str) -> Deferred:
        timer = self._auto_timers.pop(pair.lun, None)
        if timer is not None and timer.active():
            timer.cancel()
        _log.info("{pair}: {why}; resynchronising by itself (auto_resync)", pair=pair.name,
                  why=why)
        return self.resync(pair.lun).addErrback(self._auto_resync_failed, pair)

    def auto_resync_later(self, pair: Pair) -> None:
        """``pair``'s RIOs went unanswered: try a resync after the back-off delay."""
        call_later = getattr(self.rc.clock, "callLater", None)
        if not self.rc.auto_resync or call_later is None or pair.lun in self._auto_timers:
            return
        delay = self._auto_delay.get(pair.lun, AUTO_RESYNC_FIRST)
        self._auto_delay[pair.lun] = min(delay * 2, AUTO_RESYNC_MAX)

        def attempt():
            self._auto_timers.pop(pair.lun, None)
            if self._auto_resyncable(pair):
                self._auto_resync(pair, f"no answer from the edge {delay:g} s ago")
        self._auto_timers[pair.lun] = call_later(delay, attempt)

    def _auto_resync_failed(self, failure, pair: Pair) -> None:
        # last_error has the reason (_failed_command)
        _log.warn("{pair}: automatic resync failed: {why}", pair=pair.name,
                  why=failure.getErrorMessage())
        if failure.check(PartnerUnreachable):
            self.auto_resync_later(pair)
        elif not failure.check(Busy):
            pair.link_lost = False          # refused: the operator decides (rcn array resync)
            self.rc._save()

    def stop(self) -> None:
        """Cancel the automatic resync attempts (the array is shutting down)."""
        for timer in self._auto_timers.values():
            if timer.active():
                timer.cancel()
        self._auto_timers.clear()


def _merge_dpok(pair: Pair, data: bytes) -> None:
    """OR the partner's bitmap (1209) into ours; an unusable one dirties everything."""
    try:
        other = DifferentialBitmap.deserialize(data)
    except ValueError as exc:
        _log.warn("{pair}: the DPOK bitmap is unusable ({why}); the resync copies the whole "
                  "pair", pair=pair.name, why=str(exc))
        pair.mark(0, pair.capacity)
        return
    if other.geometry == pair.bitmap.geometry:
        pair.bitmap.merge(other)
        return
    # another geometry (a config-made row): map its runs onto our tracks, a superset
    first, count, _ = other.dirty_runs()
    for f, c in zip(first.tolist(), count.tolist()):
        start = f * other.track_size
        pair.mark(start, min((f + c) * other.track_size, other.volume_bytes) - start)
