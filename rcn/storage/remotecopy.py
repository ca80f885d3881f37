"""The array's remote copy program: pair lifecycle, host write path, incoming RIOs.

One plain object, :class:`RemoteCopy`, with no sockets and no global reactor, so the
daemon (:mod:`rcn.storage.service`) and an in-process simulation drive it alike.
The contract it implements is ``docs/pairs.md``; states and events are
:mod:`rcn.pairstate`'s.

What it needs
-------------
``RemoteCopy(clock, session_for, volumes, pairs=None, *, track_size=65536,
copy_chunk=1 MiB, copy_window=8)``

* ``clock``: anything with ``seconds()`` (a reactor, ``task.Clock``); only for
  the timestamps of copy runs.
* ``session_for(partner_wwn) -> Deferred[session]``: a session to the partner's
  (virtual) storage through this array's edge, or a failure when there is no
  link. ``session.write(lun, lba, data, attribute, fua)`` and
  ``session.execute(lun, cdb, data_out, data_in_length, attribute)`` return
  ``Deferred[rcn.rio.fcp.ScsiResult]`` (:class:`rcn.rio.array.RioSession`).
* ``volumes``: ``{lun: volume}``; a volume has ``lun``, ``capacity``,
  ``block_size``, ``read(offset, length) -> bytes``, ``write(offset, data,
  fua=False)`` and, optionally, ``allocated_extents() -> [(offset, length)]``
  (without it the initial copy copies the whole volume).
* ``pairs``: a :class:`~rcn.storage.pairs.PairTable` (rows from the config).

What it offers
--------------
Host write path (the NBD export calls ``around_host_write`` with its local write):

* ``around_host_write(lun, offset, length, fua, apply)``: the three below in order,
  with the write's tracks marked in the pair's write-intent bitmap (``store``) from
  before ``apply()`` until the partner or 1211 has them;
* ``check_host_write(lun)``: raises :class:`HostWriteRefused` (a ``VolumeError``
  with errno EPERM: NBD answers EPERM) for a target volume whose pair is not in
  simplex, suspend or failure-suspend;
* ``written(lun, offset, length, fua=False)``: after the local write; returns
  None, or a Deferred the host's reply must wait for (sync mode: the WROK;
  async mode: a place in the pair's bounded queue). Source pairs in
  initial-copying/duplex/duplex-pending send the written blocks as ORDERED RIO
  WRs (<= 1 MiB each); in suspending/suspend/failure-suspend they mark the
  bitmap (1211); a target in suspend/failure-suspend marks 1213. A failed or
  refused WR -> failure-suspend, and its blocks go into the bitmap.
* ``host_write(lun, offset, data, fua=False) -> Deferred``: ``around_host_write`` of a
  volume write.

Host commands, each ``-> Deferred[dict]`` (the pair as ``describe`` shows it);
a refusal fails it with :class:`rcn.pairstate.PairStateError` (this array's
state forbids it), :class:`PartnerRefused` (the answer's sense, explained),
:class:`PartnerUnreachable` (no link, timeout), :class:`NotFound`,
:class:`BadRequest` or :class:`Conflict` (wrong role, another command running):

* ``pair_create(lun, partner_wwpn, partner_lun, mode="sync", group=0, queue_limit=1024)``:
  PAIR_CREATE; fires on ICOK, when the initial copy (every allocated extent,
  ``copy_window`` RIO WRs of <= ``copy_chunk`` in flight) has started; when the
  copy is done the pair sends DUPLEX and DOK makes it duplex;
* ``suspend(lun, fast=False)``: at a source, SUSPEND after suspending; at a
  target, failover (SUSPEND to its edge, FAST flag for the fast variant) -> a
  ``residual`` report in the answer when the edge sends one;
* ``resync(lun)``: RESYNC, merge DPOK's bitmap into 1211, copy only its tracks;
* ``takeover(lun)``: at a target, TAKEOVER -> failure-suspend and ``residual``;
* ``pair_delete(lun, local=False)``: DELETE (not with ``local``), drop the row;
* ``reverse(lun)``: local only: turn a suspended row round, keeping its bitmap.

Lookups: ``pairs`` (the table), ``describe_pairs()``, ``partners()`` (WWNs to log
in to).

RIO target side (:class:`rcn.storage.array.ArrayTarget` calls these):
``control_received(command) -> ScsiResult`` for RCN CONTROL, and
``admit_write(command) -> ScsiResult | None`` (None: apply the WRITE(16)).

Figures: ``counters`` (host write RIOs), ``control`` (control RIOs sent and
received), and per pair ``Pair.copy`` (the current or last copy run:
``bytes_total``, ``bytes_copied``, ``tracks``, ``outcome``), ``copies_completed``,
``bytes_copied_total``, ``last_error``, ``residual``. ``observers``: callables
``(pair, state_before, why)`` called after every event applied to a row.

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

import errno
from collections import deque

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.fcp import RcnServiceAction as Action
from datapath.frames.fcp import TaskAttribute
from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import DEFAULT_TRACK_SIZE, DifferentialBitmap, geometry
from rcn.pairstate import (ASC_IN_PROGRESS, ASC_NO_PAIR, ASC_PAIR_PARAMS, REPLICATING,
                           TARGET_WRITABLE, Event, PairState, PairStateError, allows, explain,
                           refusal, state_refusal)
from rcn.rio.fcp import (INVALID_FIELD_IN_CDB, LU_NOT_SUPPORTED, ScsiCommand, ScsiResult, SenseKey,
                         check_condition)
from rcn.storage.pairs import CopyProgress, Pair, PairTable
from rcn.storage.volume import VolumeError

__all__ = ["RemoteCopy", "RemoteCopyError", "BadRequest", "NotFound", "Conflict", "Busy",
           "PartnerRefused", "PartnerUnreachable", "HostWriteRefused", "resync_allocation"]

S = PairState
COPY_CHUNK = 1 << 20          # bytes per RIO WR (host writes and copies)
COPY_WINDOW = 8               # copy RIO WRs in flight per pair
AUTO_RESYNC_FIRST = 5.0       # seconds after an unanswered RIO before resyncing by itself
AUTO_RESYNC_MAX = 60.0        # the longest wait between attempts
RESIDUAL_SIZE = fcp.RCN_RESIDUAL_REPORT.size
#: states in which a target volume takes RIO WRs from its edge
TARGET_ACCEPTS = frozenset({S.INITIAL_COPYING, S.DUPLEX, S.DUPLEX_PENDING, S.FAILURE_SUSPEND})
_STOPPED = frozenset({S.SUSPEND, S.FAILURE_SUSPEND})

_log = Logger()


# -- errors ----------------------------------------------------------------------

class RemoteCopyError(Exception):
    """A host command that failed; ``http_status`` is what the control API answers."""
    http_status = 500


class BadRequest(RemoteCopyError, ValueError):
    http_status = 400


class NotFound(RemoteCopyError, LookupError):
    http_status = 404

    def __str__(self):            # LookupError would quote the message
        return self.args[0] if self.args else ""


class Conflict(RemoteCopyError):
    """The command does not fit this array's side of the pair (role, a command running)."""
    http_status = 409


class Busy(Conflict):
    """Another host command of the pair is still running."""


class PartnerRefused(Conflict):
    """The partner (or an edge on the way) answered CHECK CONDITION; ``result`` is the answer."""

    def __init__(self, message: str, result: ScsiResult, residual: dict | None = None):
        super().__init__(message)
        self.result = result
        self.residual = residual


class PartnerUnreachable(RemoteCopyError):
    """No answer: no link to the edge, a login failed, the exchange timed out."""
    http_status = 503


class HostWriteRefused(VolumeError):
    """A host write the pair's state forbids (NBD answers EPERM)."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)


def resync_allocation(track_count: int) -> int:
    """RESYNC's allocation length: a RAW DPOK bitmap of ``track_count`` tracks at most."""
    return 44 + 8 * -(-track_count // 64)


def _names(states) -> str:
    names = [s.value for s in PairState if s in states]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _format_residual(r: dict) -> str:
    return (f"the target edge applied up to sequence {r['applied']}, received up to "
            f"{r['received_max']}, discarded {r['discarded']}, knows {r['known_missing']} missing")


def _residual(result: ScsiResult) -> dict | None:
    if len(result.data_in) != RESIDUAL_SIZE:
        return None
    return fcp.parse_residual_report(bytes(result.data_in))


# -- counters ------------------------------------------------------------------------

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


def _control_counters() -> dict:
    return {"sent": 0, "good": 0, "refused": 0, "unreachable": 0, "received": 0,
            "received_refused": 0}


# -- one copy run ----------------------------------------------------------------------

class _CopyRun:
    """Copies ``ranges`` (sorted, disjoint byte ranges, already marked in the bitmap)."""

    def __init__(self, owner: "RemoteCopy", pair: Pair, volume, kind: str, ranges):
        self.owner, self.pair, self.volume = owner, pair, volume
        self.state = pair.state               # the copy state this run belongs to
        self.ranges = deque(ranges)
        self.active = True
        self.outstanding = 0
        self.cursor = 0                       # tracks below it are cleared
        self._pumping = self._again = False
        self.progress = CopyProgress(kind, sum(n for _, n in ranges), pair.bitmap.popcount(),
                                     owner.clock.seconds())
        pair.copy = self.progress

    def stop(self, outcome: str) -> None:
        if self.active:
            self.active = False
            self.progress.outcome = outcome
            self.progress.finished = self.owner.clock.seconds()

    def _next_chunk(self) -> tuple[int, int]:
        offset, length = self.ranges[0]
        n = min(length, self.owner.copy_chunk)
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
                while self.active and self.ranges and self.outstanding < self.owner.copy_window:
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
            self.owner._copy_failed(self, f"reading the volume for the copy failed: {exc}")
            return
        upto = (offset + length) // pair.track_size   # every track below is read now
        if upto > self.cursor:
            bitmap.clear_range(self.cursor, upto - self.cursor)
            self.cursor = upto
        self.progress.bytes_sent += length
        self.outstanding += 1
        store = self.owner.store         # cleared above, not yet at the partner: intent
        span = store.intend(pair, offset, length) if store is not None else None
        d = self.owner._rio_write(pair, offset // self.volume.block_size, data, False)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(offset, length),
                       errbackArgs=(offset, length))
        if span is not None:
            d.addBoth(_then, lambda: store.done(pair, span))

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
        self.owner._wr_failed(self.pair, offset, length, why, unanswered)

    def _finish(self) -> None:
        bitmap = self.pair.bitmap
        if self.cursor < bitmap.track_count:      # the last, partly read track
            bitmap.clear_range(self.cursor, bitmap.track_count - self.cursor)
            self.cursor = bitmap.track_count
        self.owner._copy_done(self)


# -- the program ---------------------------------------------------------------------

class RemoteCopy:
    """See the module docstring."""

    def __init__(self, clock, session_for, volumes: dict, pairs: PairTable | None = None, *,
                 track_size: int = DEFAULT_TRACK_SIZE, copy_chunk: int = COPY_CHUNK,
                 copy_window: int = COPY_WINDOW, auto_resync: bool = True, store=None):
        self.clock = clock
        self.auto_resync = auto_resync
        self.store = store            # a PairStore: rows and bitmaps on disk (None: memory)
        self.session_for = session_for
        self.volumes = volumes
        self.pairs = pairs if pairs is not None else PairTable()
        self.track_size = track_size
        self.copy_chunk = copy_chunk
        self.copy_window = copy_window
        self.counters = ReplicationCounters()
        self.control = _control_counters()
        self.known_partners: set[int] = set()
        self._runs: dict[int, _CopyRun] = {}
        self._auto_timers: dict[int, object] = {}     # lun -> next automatic resync attempt
        self._auto_delay: dict[int, float] = {}       # lun -> wait before the next one
        self._refusal_logged: dict[int, PairState] = {}
        #: callables ``(pair, state_before, why)`` told of every event applied (tests, sims)
        self.observers: list = []
        for pair in self.pairs:
            if pair.lun not in volumes:
                raise ValueError(f"{pair.name}: no volume has LUN {pair.lun}")

    # -- lookups --------------------------------------------------------------------
    def partners(self) -> set[int]:
        """Every partner WWN to log in to: the rows', and those of every pair made since
        start (a target must still be reachable for a new PAIR_CREATE after a delete)."""
        return self.pairs.partners() | self.known_partners

    def describe(self, pair: Pair) -> dict:
        return pair.as_dict()

    def describe_pairs(self) -> list[dict]:
        return [self.describe(pair) for pair in self.pairs]

    def _volume(self, lun: int):
        volume = self.volumes.get(lun)
        if volume is None:
            raise NotFound(f"LUN {lun}: no such volume (LUNs: "
                           f"{', '.join(str(n) for n in sorted(self.volumes)) or 'none'})")
        return volume

    def _pair(self, lun: int) -> Pair:
        self._volume(lun)
        pair = self.pairs.for_lun(lun)
        if pair is None:
            raise NotFound(f"LUN {lun} has no pair")
        return pair

    def _present(self, pair: Pair) -> bool:
        return self.pairs.for_lun(pair.lun) is pair

    # -- state changes ------------------------------------------------------------------
    def _event(self, pair: Pair, event: Event) -> bool:
        """Apply ``event`` if the state allows it (a late answer may find it moved on)."""
        if not allows(pair.state, event):
            _log.info("{pair}: {event} ignored in state {state}", pair=pair.name,
                      event=event.value, state=pair.state.value)
            return False
        before = pair.state
        pair.apply(event)
        self._changed(pair, before, event.value)
        run = self._runs.get(pair.lun)
        if run is not None and run.pair is pair and run.active and pair.state is not run.state:
            run.stop("failed" if event is Event.FAILED else "stopped")
        return True

    def _changed(self, pair: Pair, before: PairState, why: str) -> None:
        if pair.state is not before:
            _log.info("{pair}: {before} -> {after} ({why})", pair=pair.name,
                      before=before.value, after=pair.state.value, why=why)
        self._save()
        for observer in self.observers:
            observer(pair, before, why)

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.pairs)

    def flush(self) -> None:
        """The host flushed: the bitmaps go to the disk with the volume's data."""
        if self.store is not None:
            self.store.flush()

    @staticmethod
    def _require(pair: Pair, command: str, states) -> None:
        if pair.state not in states:
            raise PairStateError(f"{pair.name} is {pair.state.value}: {command} needs "
                                 f"{_names(states)}", pair.state)

    @staticmethod
    def _require_role(pair: Pair, role: str, command: str, hint: str) -> None:
        if pair.role != role:
            raise Conflict(f"{pair.name} is {pair.state.value}: {command} is for the {role} of "
                           f"a pair; {hint}")

    def _start(self, pair: Pair, command: str, work) -> Deferred:
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

    def _failed_command(self, failure, pair: Pair, command: str):
        """Record a failed command's reason on the pair (and log it), pass the failure on."""
        if failure.check(RemoteCopyError, PairStateError) and not failure.check(Busy):
            pair.last_error = f"{command}: {failure.getErrorMessage()}"
            _log.warn("{pair}: {command} failed: {why}", pair=pair.name, command=command,
                      why=failure.getErrorMessage())
        return failure

    # -- control RIOs we send -------------------------------------------------------------
    def _addressing(self, pair: Pair) -> tuple[int, int]:
        """(FCP LUN, source LUN) of a control RIO from this end (docs/pairs.md table)."""
        if pair.role == "source":
            return pair.partner_lun, pair.lun
        return pair.lun, pair.partner_lun

    def _send_control(self, pair: Pair, action: Action, data_out: bytes = b"",
                      data_in_length: int = 0, fast: bool = False) -> Deferred:
        """RCN CONTROL to the partner; Deferred[ScsiResult] (GOOD), else PartnerRefused or
        PartnerUnreachable."""
        fcp_lun, source_lun = self._addressing(pair)
        cdb = fcp.build_rcn_control(action, pair.group, source_lun, data_in_length, fast=fast)
        self.control["sent"] += 1
        d = self.session_for(pair.partner_wwpn)
        d.addCallback(lambda session: session.execute(fcp_lun, cdb, data_out, data_in_length,
                                                      TaskAttribute.ORDERED))

        def answered(result: ScsiResult) -> ScsiResult:
            if result.good:
                self.control["good"] += 1
                return result
            self.control["refused"] += 1
            residual = _residual(result)
            text = f"{pair.name}: {action.name} refused: {explain(result)}"
            if residual is not None:
                text += f" ({_format_residual(residual)})"
            raise PartnerRefused(text, result, residual)

        def unreachable(failure):
            self.control["unreachable"] += 1
            raise PartnerUnreachable(f"{pair.name}: {action.name} got no answer from "
                                     f"{format_wwn(pair.partner_wwpn)}: "
                                     f"{failure.getErrorMessage()}") from failure.value
        return d.addCallbacks(answered, unreachable)

    # -- host commands ------------------------------------------------------------------
    def pair_create(self, lun: int, partner_wwpn: int, partner_lun: int, mode: str = "sync",
                    group: int = 0, queue_limit: int = 1024) -> Deferred:
        try:
            volume = self._volume(lun)
            if mode not in ("sync", "async"):
                raise BadRequest(f"mode: {mode!r} is not sync or async")
            for name, value, high in (("partner_wwpn", partner_wwpn, (1 << 64) - 1),
                                      ("partner_lun", partner_lun, fcp.FLAT_LUN_LIMIT - 1),
                                      ("group", group, (1 << 32) - 1),
                                      ("queue_limit", queue_limit, 1 << 20)):
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                    raise BadRequest(f"{name}: {value!r} is not an integer in 0..{high}")
            old = self.pairs.for_lun(lun)
            if old is not None:
                if old.busy:
                    raise Busy(f"{old.name}: {old.busy} is still running")
                self._require(old, "pair-create", {S.SIMPLEX})
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        if old is not None:
            self.pairs.remove(lun)
        pair = Pair(lun, partner_wwpn, partner_lun, group, S.SIMPLEX, mode, queue_limit,
                    "source", volume.capacity, self.track_size)
        self.pairs.add(pair)
        params = fcp.build_pair_params(volume.capacity, volume.block_size, pair.track_size,
                                       0 if mode == "sync" else 1)

        def created(result: ScsiResult) -> dict:
            if not self._present(pair):
                raise Conflict(f"{pair.name} was deleted while pair-create ran")
            self._event(pair, Event.CREATED)
            self.known_partners.add(partner_wwpn)     # logged in to at every link-up now
            pair.last_error = None
            self._start_copy(pair, "initial")
            return self.describe(pair)

        def refused(failure):
            if self._present(pair):          # leave things as they were
                self.pairs.remove(lun)
                if old is not None:
                    self.pairs.add(old)
                    old.last_error = f"pair-create: {failure.getErrorMessage()}"
            _log.warn("{pair}: pair-create failed: {why}", pair=pair.name,
                      why=failure.getErrorMessage())
            return failure
        return self._start(pair, "pair-create", lambda: self._send_control(
            pair, Action.PAIR_CREATE, params).addCallbacks(created, refused))

    def suspend(self, lun: int, fast: bool = False) -> Deferred:
        try:
            pair = self._pair(lun)
            if pair.role == "target":
                return self._failover(pair, fast)
            if fast:
                raise BadRequest("fast: only a target's suspend (failover) has a fast variant")
            self._require(pair, "suspend", REPLICATING)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)

        def work():
            self._event(pair, Event.SUSPEND_REQUESTED)     # writes go to 1211 from now on
            d = self._send_control(pair, Action.SUSPEND)

            def done(_):
                self._event(pair, Event.SUSPENDED)
                return self.describe(pair)

            def failed(failure):
                # writes since SUSPENDING were not sent: the pair cannot go back
                self._event(pair, Event.FAILED)
                return failure
            return d.addCallbacks(done, failed)
        return self._start(pair, "suspend", work).addErrback(self._failed_command, pair,
                                                              "suspend")

    def _failover(self, pair: Pair, fast: bool) -> Deferred:
        if pair.state in _STOPPED:                 # nothing to fail over: answer at once
            return succeed(self.describe(pair))
        self._require(pair, "suspend (failover)", REPLICATING)
        return self._start(pair, "suspend", lambda: self._residual_command(
            pair, Action.SUSPEND, fast)).addErrback(self._failed_command, pair, "suspend")

    def takeover(self, lun: int) -> Deferred:
        try:
            pair = self._pair(lun)
            self._require_role(pair, "target", "takeover",
                               "at the source, suspend the pair or delete it")
            self._require(pair, "takeover", TARGET_ACCEPTS)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        return self._start(pair, "takeover", lambda: self._residual_command(
            pair, Action.TAKEOVER, False)).addErrback(self._failed_command, pair, "takeover")

    def _residual_command(self, pair: Pair, action: Action, fast: bool) -> Deferred:
        """Failover SUSPEND or TAKEOVER from the target: GOOD -> failure-suspend."""
        def done(result: ScsiResult) -> dict:
            pair.residual = _residual(result)
            self._event(pair, Event.FAILED)
            if pair.residual is not None:
                _log.info("{pair}: {action} done: {residual}", pair=pair.name,
                          action=action.name, residual=_format_residual(pair.residual))
            return self.describe(pair)

        def failed(failure):
            if failure.check(PartnerRefused) and failure.value.residual is not None:
                pair.residual = failure.value.residual
            return failure
        return self._send_control(pair, action, data_in_length=RESIDUAL_SIZE,
                                  fast=fast).addCallbacks(done, failed)

    def resync(self, lun: int) -> Deferred:
        try:
            pair = self._pair(lun)
            self._require_role(pair, "source", "resync",
                               "reverse the pair first to copy from this side")
            self._require(pair, "resync", _STOPPED)
        except (RemoteCopyError, PairStateError) as exc:
            return fail(exc)
        allocation = resync_allocation(pair.bitmap.track_count)

        def dpok(result: ScsiResult) -> dict:
            if not self._present(pair):
                raise Conflict(f"{pair.name} was deleted while resync ran")
            self._merge_dpok(pair, result.data_in)
            pair.link_lost = False
            if not self._event(pair, Event.RESYNCED):
                raise PairStateError(f"{pair.name} is {pair.state.value} after DPOK: "
                                     f"resync cannot go on", pair.state)
            pair.last_error = None
            self._start_copy(pair, "resync")
            return self.describe(pair)
        return self._start(pair, "resync", lambda: self._send_control(
            pair, Action.RESYNC, data_in_length=allocation).addCallback(dpok)).addErrback(
            self._failed_command, pair, "resync")

    def link_restored(self) -> list[Deferred]:
        """The RIO link to the edge is up again. With ``auto_resync``, every source pair in
        failure Suspend because its RIOs got no answer (``Pair.link_lost``: the link dropped,
        the edge crashed or stopped answering) resynchronises by itself: the edge answered
        GOOD only for writes it had made durable, so its log still carries every write this
        array was told was sent, and 1211 holds the rest. Returns the resyncs started.

        The link need not drop for RIOs to go unanswered (an edge that stops and goes on):
        such a pair also tries by itself ``AUTO_RESYNC_FIRST`` seconds after it failed, and
        again after each attempt that got no answer, the wait doubling up to
        ``AUTO_RESYNC_MAX``. A refusal ends the attempts: the operator decides."""
        if not self.auto_resync:
            return []
        started = []
        for pair in self.pairs:
            if self._auto_resyncable(pair):
                self._auto_delay.pop(pair.lun, None)
                started.append(self._auto_resync(pair, "the link to the edge is back"))
        return started

    def _auto_resyncable(self, pair: Pair) -> bool:
        return (self.auto_resync and self._present(pair) and pair.role == "source"
                and pair.link_lost and not pair.busy and pair.state is S.FAILURE_SUSPEND)

    def _auto_resync(self, pair: Pair, why: str) -> Deferred:
        timer = self._auto_timers.pop(pair.lun, None)
        if timer is not None and timer.active():
            timer.cancel()
        _log.info("{pair}: {why}; resynchronising by itself (auto_resync)", pair=pair.name,
                  why=why)
        return self.resync(pair.lun).addErrback(self._auto_resync_failed, pair)

    def _auto_resync_later(self, pair: Pair) -> None:
        call_later = getattr(self.clock, "callLater", None)
        if not self.auto_resync or call_later is None or pair.lun in self._auto_timers:
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
            self._auto_resync_later(pair)
        elif not failure.check(Busy):
            pair.link_lost = False          # refused: the operator decides (rcn array resync)
            self._save()

    def stop(self) -> None:
        """Cancel the automatic resync attempts (the array is shutting down)."""
        for timer in self._auto_timers.values():
            if timer.active():
                timer.cancel()
        self._auto_timers.clear()

    def _merge_dpok(self, pair: Pair, data: bytes) -> None:
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

    def pair_delete(self, lun: int, local: bool = False) -> Deferred:
        try:
            pair = self._pair(lun)
        except RemoteCopyError as exc:
            return fail(exc)
        if local or pair.state is S.SIMPLEX:      # nobody else holds a simplex row
            self._drop(pair)
            return succeed(self.describe(pair))

        def deleted(_):
            self._drop(pair)
            return self.describe(pair)

        def failed(failure):
            if failure.check(RemoteCopyError):
                failure.value.args = (f"{failure.getErrorMessage()}; pair-delete with local "
                                      f"(--local) drops this array's row only",)
            return failure
        return self._start(pair, "pair-delete", lambda: self._send_control(
            pair, Action.DELETE).addCallbacks(deleted, failed)).addErrback(
            self._failed_command, pair, "pair-delete")

    def _drop(self, pair: Pair) -> None:
        if self._present(pair):
            self._event(pair, Event.DELETED)
            self.pairs.remove(pair.lun)
            self._save()
            self._runs.pop(pair.lun, None)
            _log.info("{pair}: deleted", pair=pair.name)
        waiting, pair.waiting = pair.waiting, []
        for waiter in waiting:                      # queued host writes need not wait now
            waiter.callback(None)

    def reverse(self, lun: int) -> Deferred:
        try:
            pair = self._pair(lun)
            self._require(pair, "reverse", _STOPPED)
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
        self._changed(pair, state, "reversed")
        return succeed(self.describe(pair))

    # -- copies ------------------------------------------------------------------------
    def _start_copy(self, pair: Pair, kind: str) -> None:
        volume = self.volumes[pair.lun]
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
        run = self._runs[pair.lun] = _CopyRun(self, pair, volume, kind, ranges)
        _log.info("{pair}: {kind} copy of {n} bytes ({tracks} tracks)", pair=pair.name, kind=kind,
                  n=run.progress.bytes_total, tracks=run.progress.tracks)
        run.pump()

    def _copy_failed(self, run: _CopyRun, why: str) -> None:
        run.pair.last_error = why
        _log.error("{pair}: {why}; failure suspend", pair=run.pair.name, why=why)
        self._event(run.pair, Event.FAILED)
        run.stop("failed")

    def _copy_done(self, run: _CopyRun) -> None:
        pair = run.pair
        if pair.state is not run.state or not self._present(pair):
            run.stop("stopped")
            return

        def dok(_):
            run.progress.outcome = "done"
            run.progress.finished = self.clock.seconds()
            if self._event(pair, Event.DUPLEXED):
                pair.copies_completed += 1

        def failed(failure):
            run.progress.outcome = "failed"
            run.progress.finished = self.clock.seconds()
            pair.last_error = f"DUPLEX after the copy: {failure.getErrorMessage()}"
            _log.error("{pair}: {why}; failure suspend", pair=pair.name, why=pair.last_error)
            self._event(pair, Event.FAILED)
        self._send_control(pair, Action.DUPLEX).addCallbacks(dok, failed)

    # -- host write path ---------------------------------------------------------------
    def check_host_write(self, lun: int) -> None:
        pair = self.pairs.for_lun(lun)
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
        """Check, write the volume, replicate: Deferred firing when the host may be answered."""
        try:
            volume = self._volume(lun)
        except NotFound as exc:
            return fail(exc)
        return maybeDeferred(self.around_host_write, lun, offset, len(data), fua,
                             lambda: volume.write(offset, data, fua))

    def around_host_write(self, lun: int, offset: int, length: int, fua: bool, apply):
        """A host's change of ``length`` bytes at ``offset``: check it, mark its write intent
        (``store``), ``apply()`` it to the volume, replicate it; returns what :meth:`written`
        does. The intent is cleared once the partner has the write or 1211 has it."""
        self.check_host_write(lun)
        pair = self.pairs.for_lun(lun)
        span = None
        if self.store is not None and pair is not None and pair.replicating:
            span = self.store.intend(pair, offset, length)
        sent = None if span is None else lambda: self.store.done(pair, span)
        try:
            apply()
        except Exception:
            if sent is not None:
                sent()
            raise
        return self.written(lun, offset, length, fua, sent)

    def written(self, lun: int, offset: int, length: int, fua: bool = False, sent=None):
        """The host wrote ``length`` bytes at ``offset`` of ``lun`` (already on the volume).
        ``sent()`` is called once the write is at the partner or in the bitmap."""
        pair = self.pairs.for_lun(lun)
        if pair is None or length <= 0 or not pair.replicating:
            self._written_locally(pair, offset, length)
            if sent is not None:
                sent()
            return None
        volume = self.volumes[lun]
        bs = volume.block_size
        first, last = offset // bs, -(-(offset + length) // bs)
        step = max(self.copy_chunk // bs, 1)
        sends = [(start, min(last - start, step)) for start in range(first, last, step)]
        if pair.mode == "sync":
            d = self._send_all(pair, sends, fua)
            return d if sent is None else d.addBoth(_then, sent)
        return self._admit(pair).addCallback(lambda _: self._send_async(pair, sends, fua, sent))

    def _written_locally(self, pair: Pair | None, offset: int, length: int) -> None:
        """A host write that is not replicated: 1211 (a stopped source) or 1213 (a stopped
        target) records it."""
        if pair is None or length <= 0 or pair.state is S.SIMPLEX:
            return
        if pair.role == "source" or pair.state in _STOPPED:
            self._record(pair, offset, length)

    def _record(self, pair: Pair, offset: int, length: int) -> None:
        pair.mark(offset, length)
        self.counters.recorded_in_bitmap += 1

    def _rio_write(self, pair: Pair, lba: int, data, fua: bool) -> Deferred:
        d = self.session_for(pair.partner_wwpn)
        return d.addCallback(lambda session: session.write(pair.partner_lun, lba, data,
                                                           TaskAttribute.ORDERED, fua))

    def _send_all(self, pair: Pair, sends, fua) -> Deferred:
        d = succeed(None)
        for start, count in sends:
            d.addCallback(lambda _, s=start, c=count: self._send(pair, s, c, fua))
        return d

    def _send(self, pair: Pair, lba: int, blocks: int, fua: bool) -> Deferred:
        """One RIO WR of blocks already on the local volume; never fails."""
        bs = self.volumes[pair.lun].block_size
        if not pair.replicating or not self._present(pair):
            if self._present(pair):
                self._record(pair, lba * bs, blocks * bs)
            return succeed(None)
        data = self.volumes[pair.lun].read(lba * bs, blocks * bs)
        self.counters.sent += 1
        self.counters.bytes_sent += len(data)
        d = self._rio_write(pair, lba, data, fua)
        d.addCallback(self._answered, pair, lba * bs, len(data))
        d.addErrback(self._host_wr_failed, pair, lba * bs, len(data))
        return d

    def _answered(self, result: ScsiResult, pair: Pair, offset: int, length: int) -> None:
        if not result.good:
            self.counters.failed += 1
            self._wr_failed(pair, offset, length, f"the partner refused a WR: {explain(result)}")
            return
        self.counters.acknowledged += 1

    def _host_wr_failed(self, failure, pair: Pair, offset: int, length: int) -> None:
        self.counters.failed += 1
        self._wr_failed(pair, offset, length, f"RIO WR failed: {failure.getErrorMessage()}",
                        True)

    def _wr_failed(self, pair: Pair, offset: int, length: int, why: str,
                   unanswered: bool = False) -> None:
        """A WR (host or copy) did not land: mark it, and stop replicating (【0084】).
        ``unanswered``: no answer at all (the link or the edge went away), so the pair
        resynchronises by itself when the link is back (:meth:`link_restored`)."""
        if not self._present(pair):
            return
        pair.mark(offset, length)
        self.counters.recorded_in_bitmap += 1
        if pair.state in REPLICATING or pair.state is S.SUSPENDING:
            pair.last_error = why
            pair.link_lost = unanswered
            if unanswered:
                self._auto_resync_later(pair)
            _log.error("{pair}: {why}; failure Suspend, writes are recorded in the "
                       "differential bitmap", pair=pair.name, why=why)
            self._event(pair, Event.FAILED)

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
            d.addBoth(_then, sent)

    # -- RIOs from the edge ------------------------------------------------------------
    def admit_write(self, command: ScsiCommand) -> ScsiResult | None:
        """None if a WRITE(16) from the edge may be applied to ``command.lun``; else the refusal."""
        pair = self.pairs.for_lun(command.lun)
        if (pair is None or pair.role != "target"
                or pair.partner_wwpn != command.initiator_wwn):
            _log.warn("RIO WR to LUN {lun} from {wwn} refused: no pair of that volume as its "
                      "target with that partner", lun=command.lun,
                      wwn=format_wwn(command.initiator_wwn))
            return refusal(ASC_NO_PAIR)
        if pair.state not in TARGET_ACCEPTS:
            _log.warn("RIO WR to {pair} refused: the pair is {state}", pair=pair.name,
                      state=pair.state.value)
            return state_refusal(pair.state)
        return None

    def control_received(self, command: ScsiCommand) -> ScsiResult:
        """RCN CONTROL from the edge (a relayed source command, or an edge's own notice)."""
        self.control["received"] += 1
        result = self._control_received(command)
        if not result.good:
            self.control["received_refused"] += 1
        return result

    def _control_received(self, command: ScsiCommand) -> ScsiResult:
        p = command.parsed
        try:
            action = Action(p["service_action"])
        except ValueError:
            return self._refuse_control(command, "?", INVALID_FIELD_IN_CDB,
                                        f"unknown service action {p['service_action']}")
        flags, source_lun, wwn = p["control_flags"], p["source_lun"], command.initiator_wwn
        failure = bool(flags & fcp.RCN_CONTROL_FAILURE)
        if action is Action.SUSPEND and failure:
            # an edge's failure notice to a source volume: source_lun = that volume; the FCP
            # LUN is the target's (docs/pairs.md's table) or, by the general rule, ours
            pair = self.pairs.for_lun(source_lun)
            if (pair is not None and pair.role == "source" and pair.partner_wwpn == wwn
                    and command.lun in (pair.partner_lun, pair.lun)):
                return self._incoming_event(pair, Event.FAILED, action)
        if action is Action.PAIR_CREATE:
            return self._incoming_create(command, source_lun)
        pair = self.pairs.for_lun(command.lun)
        if (pair is None or pair.role != "target" or pair.partner_wwpn != wwn
                or pair.partner_lun != source_lun):
            return self._refuse_control(command, action.name, None,
                                        "no pair of this volume as target with that source",
                                        refusal(ASC_NO_PAIR))
        if action is Action.DUPLEX:
            return self._incoming_event(pair, Event.DUPLEXED, action)
        if action is Action.SUSPEND:
            return self._incoming_event(pair, Event.FAILED if failure else Event.SUSPENDED, action)
        if action is Action.RESYNC:
            return self._incoming_resync(command, pair)
        if action is Action.DELETE:
            result = self._incoming_event(pair, Event.DELETED, action)
            self._drop(pair)
            return result
        return self._refuse_control(command, action.name, INVALID_FIELD_IN_CDB,
                                    f"{action.name} is answered by the target edge, not an array")

    def _refuse_control(self, command: ScsiCommand, name: str, asc_ascq, why: str,
                        result: ScsiResult | None = None) -> ScsiResult:
        _log.warn("RCN CONTROL {name} to LUN {lun} from {wwn} refused: {why}", name=name,
                  lun=command.lun, wwn=format_wwn(command.initiator_wwn), why=why)
        return result or check_condition(SenseKey.ILLEGAL_REQUEST, asc_ascq)

    def _incoming_event(self, pair: Pair, event: Event, action: Action) -> ScsiResult:
        if not allows(pair.state, event):
            _log.warn("{pair}: {action} from the edge refused in state {state}", pair=pair.name,
                      action=action.name, state=pair.state.value)
            return state_refusal(pair.state)
        self._event(pair, event)
        return ScsiResult()

    def _incoming_create(self, command: ScsiCommand, source_lun: int) -> ScsiResult:
        lun, wwn = command.lun, command.initiator_wwn
        volume = self.volumes.get(lun)
        if volume is None:
            return self._refuse_control(command, "PAIR_CREATE", LU_NOT_SUPPORTED, "no such LUN")
        try:
            params = fcp.parse_pair_params(bytes(command.data))
            problem = None
            if not 0 < params["capacity"] <= volume.capacity:
                problem = (f"the source's {params['capacity']} bytes do not fit the target "
                           f"volume's {volume.capacity}")
            elif params["block_size"] != volume.block_size:
                problem = (f"block size {params['block_size']} differs from the target "
                           f"volume's {volume.block_size}")
            elif (params["track_size"] < volume.block_size
                  or params["track_size"] & (params["track_size"] - 1)):
                problem = (f"track size {params['track_size']} is not a power of two of at "
                           f"least the block size {volume.block_size}")
            elif params["mode"] not in (0, 1):
                problem = f"mode {params['mode']} is neither 0 (sync) nor 1 (async)"
            else:
                geometry(params["capacity"], params["track_size"])
        except ValueError as exc:       # DecodeError too
            problem = f"bad pair parameters: {exc}"
        if problem:
            return self._refuse_control(command, "PAIR_CREATE", None, problem,
                                        refusal(ASC_PAIR_PARAMS))
        old = self.pairs.for_lun(lun)
        if old is not None:
            if old.state is not S.SIMPLEX:
                return self._refuse_control(command, "PAIR_CREATE", None,
                                            f"{old.name} is {old.state.value}",
                                            state_refusal(old.state))
            if old.busy:
                return self._refuse_control(command, "PAIR_CREATE", None,
                                            f"{old.name}: {old.busy} is running",
                                            refusal(ASC_IN_PROGRESS))
            self.pairs.remove(lun)
        pair = Pair(lun, wwn, source_lun, command.parsed["group_id"], S.SIMPLEX,
                    "sync" if params["mode"] == 0 else "async", role="target",
                    capacity=params["capacity"], track_size=params["track_size"])
        self.pairs.add(pair)
        self.known_partners.add(wwn)
        self._event(pair, Event.CREATED)
        _log.info("{pair}: created by the partner ({n} bytes, tracks of {t}); initial-copying",
                  pair=pair.name, n=pair.capacity, t=pair.track_size)
        return ScsiResult()

    def _incoming_resync(self, command: ScsiCommand, pair: Pair) -> ScsiResult:
        if not allows(pair.state, Event.RESYNCED):
            return self._incoming_event(pair, Event.RESYNCED, Action.RESYNC)
        data = pair.bitmap.serialize()
        room = command.parsed["allocation_length"]
        if command.data_in_length < room:
            room = command.data_in_length
        if len(data) > room:
            # refuse rather than cut the bitmap: it is cleared once sent
            return self._refuse_control(
                command, "RESYNC", INVALID_FIELD_IN_CDB,
                f"the DPOK bitmap is {len(data)} bytes; the allocation length "
                f"{command.parsed['allocation_length']} / FCP_DL {command.data_in_length} "
                f"has room for {room}")
        self._event(pair, Event.RESYNCED)
        pair.bitmap.clear_range(0, pair.bitmap.track_count)
        return ScsiResult(data_in=data)


def _then(result, call):
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
