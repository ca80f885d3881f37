"""Pair control at an edge: the state of each pair as control RIOs pass (docs/pairs.md).

DESIGN.md 3.1 (pair control RIOs: opcode 0xC1, service actions and their answers ICOK,
DOK, DPOK, SOK) and 4 (pair states and the flows of Fig. 10-13, 【0084】【0087】).

:class:`PairControl` is a plain object given the parts of the edge it works with (the
pair table, the log storage area, the sender, the source and target sides: see
``rcn.edge.device``, which builds it). At the **source edge** it takes the array's
RCN CONTROL commands (PAIR_CREATE, DUPLEX, SUSPEND, RESYNC, DELETE), checks them
against the pair's state, relays them as CTRL entries in the group's order and
moves the pair when the far side's answer comes back (merging the target's DPOK
bitmap 1213 with 727 into 1209 on RESYNC). It puts a group in **failure Suspend** when the sender
gives it up, the route is gone or the log quota overflows: retained WRs become
727, the array is told, and a failure notice (flag RESTART) waits for the RCN to
carry it to the target edge. At the **target edge** it sees every CTRL entry
before the target array does (making and moving the target-side rows, refusing a
group ID another source uses) and serves the target array's own commands:
SUSPEND (failover, Fig. 13; FAST for 【0087】) and TAKEOVER.

State transitions are ``rcn.pairstate``'s table (``Event`` -> next state); the marks
that must survive a restart (failed groups, pending RESTART, SOK sent) live in the
pair file with the rows (``rcn.edge.pairs.EdgePairs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import EntryFlag, EntryType, LogHeader
from datapath.kernels.bitmap import DifferentialBitmap, merge_into
from rcn.edge.pairs import EdgePairs, PairEntry, PairRow
from rcn.edge.source import SourceSide, stored_entry
from rcn.edge.target import TargetSide
from rcn.logxfer.rioarea import RioCommand, command_area, parse_command_area
from rcn.logxfer.routes import Hops
from rcn.logxfer.seal import SealRefused
from rcn.logxfer.sender import Sender
from rcn.pairstate import (ASC_GROUP_CONFLICT, ASC_IN_PROGRESS, ASC_NO_PAIR, ASC_PAIR_PARAMS,
                           ASC_RCN_FAILED, REPLICATING, Event, PairState, PairStateError, allows,
                           explain, refusal, state_refusal)
from rcn.rio.fcp import INVALID_FIELD_IN_CDB, ScsiCommand, ScsiResult, SenseKey, check_condition

_log = Logger()
A = fcp.RcnServiceAction
_CONTROL = int(fcp.Opcode.RCN_CONTROL)
_WRITE16 = int(fcp.Opcode.WRITE_16)
_FAILURE = fcp.RCN_CONTROL_FAILURE
_FAST = fcp.RCN_CONTROL_FAST
#: the event a GOOD answer to each relayed command brings
_ON_GOOD = {A.PAIR_CREATE: Event.CREATED, A.DUPLEX: Event.DUPLEXED, A.SUSPEND: Event.SUSPENDED,
            A.RESYNC: Event.RESYNCED, A.DELETE: Event.DELETED}


@dataclass
class _Failover:
    answer: Deferred
    row: PairRow
    timer: object
    resend: object = None
    asked_ns: int = 0           # io_time_ns of the SUSPEND: the same in every copy


def _control_command(row: PairRow, action: int, failure: bool = False) -> RioCommand:
    cdb = fcp.build_rcn_control(action, row.entry.group, row.entry.source_lun, failure=failure)
    return RioCommand(row.entry.target_lun, cdb, fcp.TaskAttribute.SIMPLE, b"", 0,
                      fcp.parse_cdb(cdb))


class PairControl:
    """See the module doc. ``settings``: the edge's (``failover_timeout``, ``rto``, ``ttl``,
    ``max_datagram_body``); ``send_back(header, datagrams)`` sends toward the source edge
    of ``header``'s (source, target)."""

    def __init__(self, *, name: str, clock, settings, pairs: EdgePairs, hops: Hops, log_store,
                 sender: Sender, source: SourceSide, target: TargetSide,
                 send_back: Callable[[LogHeader, list[bytes]], None]):
        self.name = name
        self.clock = clock
        self.settings = settings
        self.pairs = pairs
        self.hops = hops
        self.log_store = log_store
        self.sender = sender
        self.source = source
        self.target = target
        self.send_back = send_back
        # kept in the pair file with the rows (a restart must not forget a pending RESTART);
        # the same objects, so EdgePairs.load fills them
        self.failed_groups = pairs.failed_groups        # source side: dropped
        self.restart_pending = pairs.restart_pending    # group -> mark: next CTRL RESTART
        self.sok_sent = pairs.sok_sent                  # source side: failover answered
        self._restart_in_flight: set[int] = set()   # a CTRL carrying RESTART, unanswered
        self._marks = 0                             # the last mark given (see _mark_restart)
        self.failovers: dict[int, _Failover] = {}   # target side: group -> waiting SUSPEND
        self.target_failures: dict[int, _Failover] = {}   # target side: stopped, asking
        self.counters = {"controls_refused": 0, "failure_suspends": 0, "entries_to_bitmap": 0,
                         "failovers": 0, "stale_failovers": 0, "takeovers": 0,
                         "notices_to_arrays": 0, "target_failures": 0}

    # -- the source array's commands (source edge) --------------------------------
    def from_array(self, command: ScsiCommand, partner_wwn: int):
        parsed = command.parsed
        action = parsed["service_action"]
        row = self.pairs.find(command.initiator_wwn, partner_wwn, command.lun)
        if row is None and action in (A.SUSPEND, A.TAKEOVER):
            mirror = self.pairs.find(partner_wwn, command.initiator_wwn, command.lun)
            if mirror is not None and mirror.side == "target":
                return self._target_command(mirror, action, bool(parsed["control_flags"] & _FAST))
        if action == A.PAIR_CREATE:
            return self._create(command, partner_wwn, row)
        if row is None and action == A.RESYNC:
            row = self._reversed(partner_wwn, command.initiator_wwn, parsed["source_lun"],
                                 command.lun, "source")
        if row is None or row.side != "source" or action == A.TAKEOVER:
            return self._refused(ASC_NO_PAIR, command, "no pair here for this command")
        if row.busy:
            return self._refused(ASC_IN_PROGRESS, command, f"{row.busy} still running")
        if action == A.SUSPEND:
            if not allows(row.state, Event.SUSPEND_REQUESTED):
                return self._state_refused(row, A.SUSPEND)
            before = row.state
            row.apply(Event.SUSPEND_REQUESTED)
            return self._relay(row, command, action, before)
        if not allows(row.state, _ON_GOOD[action]):
            return self._state_refused(row, action)
        return self._relay(row, command, action, row.state)

    def _reversed(self, source_wwn: int, target_wwn: int, target_lun: int, new_target_lun: int,
                  side: str) -> PairRow | None:
        """Failback (docs/pairs.md): a RESYNC the other way round finds the pair's row of the
        old direction, suspended, and turns it round in place, keeping group and 727."""
        old = self.pairs.find(source_wwn, target_wwn, target_lun)
        if old is None or old.side == side or old.state not in (PairState.SUSPEND,
                                                                PairState.FAILURE_SUSPEND):
            return None
        e = old.entry
        self.pairs.remove(old)
        row = self.pairs.add(PairRow(PairEntry(e.target_wwn, e.target_lun, e.source_wwn,
                                               new_target_lun, e.group, e.customer), side,
                                     old.state, old.geometry, old.bitmap, old._extents))
        self._mark_restart(e.group)            # a new direction: sequences start afresh
        self.failed_groups.discard(e.group)
        self.sok_sent.discard(e.group)
        _log.info("{edge}: {old} turned round for failback: {new}", edge=self.name,
                  old=e.describe(), new=row.entry.describe())
        self.pairs.save()
        return row

    def _create(self, command: ScsiCommand, partner_wwn: int, row: PairRow | None):
        if row is not None and row.state is not PairState.SIMPLEX:
            return self._state_refused(row, A.PAIR_CREATE)
        try:
            params = fcp.parse_pair_params(bytes(command.data))
        except DecodeError as exc:
            self.counters["controls_refused"] += 1
            _log.warn("{edge}: PAIR_CREATE with bad parameters: {why}", edge=self.name,
                      why=exc)
            return check_condition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        created = row is None
        if created:
            if self.pairs.policy == "B" and not command.parsed["group_id"]:
                return self._refused(ASC_NO_PAIR, command, "policy B: the pair must be "
                                     "configured with its order guarantee ID first")
            route = self.hops.route(command.initiator_wwn, partner_wwn)
            if route is None:
                return self._refused(ASC_RCN_FAILED, command, "no route to the target")
            group = command.parsed["group_id"] or self.pairs.group_for(
                command.initiator_wwn, partner_wwn, route.path[0], route.path[-1])
            entry = PairEntry(command.initiator_wwn, command.parsed["source_lun"], partner_wwn,
                              command.lun, group, self.source.customer_of(command.initiator_wwn,
                                                                        partner_wwn))
            row = self.pairs.add(PairRow(entry, "source", PairState.SIMPLEX))
        row.geometry = (params["capacity"], params["block_size"], params["track_size"])
        self.pairs.save()
        return self._relay(row, command, A.PAIR_CREATE, PairState.SIMPLEX, drop_on_refusal=created)

    def _relay(self, row: PairRow, command: ScsiCommand, action: int, before: PairState,
               drop_on_refusal: bool = False) -> Deferred:
        group = row.entry.group
        row.busy = A(action).name
        d = self._send_control(row, group, command.cdb, command.data, command.data_in_length,
                               command.attribute,
                               (command.initiator_port_id, command.target_port_id, command.ox_id))
        return d.addCallback(self._answered, row, action, before, drop_on_refusal)

    def _send_control(self, row: PairRow, group: int, cdb: bytes, data_out=b"",
                      data_in_length: int = 0, attribute: int = fcp.TaskAttribute.SIMPLE,
                      ids=(0, 0, 0)) -> Deferred:
        """A CTRL entry of the group; the first after a drop or a failover carries RESTART.

        The mark leaves the pair file only when that CTRL is answered: a crash before then
        replays it from the log with its flag and marks the next CTRL too, which is harmless
        (nothing of the group is sent between the two). Two CTRLs in flight never both
        take it (the second could void the first at the target edge)."""
        mark = self.restart_pending.get(group)
        flags = 0
        if mark is not None and group not in self._restart_in_flight:
            flags = int(EntryFlag.RESTART)
            self._restart_in_flight.add(group)
        d = self.source.control(row.entry, group, cdb, data_out, data_in_length, attribute, ids,
                              flags=flags)
        if flags:
            d.addBoth(self._restart_carried, group, mark)
        return d

    def _restart_carried(self, result, group: int, mark: int):
        self._restart_in_flight.discard(group)
        if self.restart_pending.get(group) == mark:     # not marked again meanwhile
            del self.restart_pending[group]
            self.pairs.save()
        return result

    def _mark_restart(self, group: int) -> None:
        """The next CTRL of the group carries RESTART (saved with the pair file)."""
        # marks go on past those the pair file brought back (EdgePairs.load, after __init__)
        self._marks = max(self._marks, max(self.restart_pending.values(), default=0)) + 1
        self.restart_pending[group] = self._marks

    def _answered(self, result: ScsiResult, row: PairRow, action: int, before: PairState,
                  drop_on_refusal: bool) -> ScsiResult:
        row.busy = None
        if not result.good:
            _log.warn("{edge}: {what} {action} refused by the far side: {why}",
                      edge=self.name, what=row.entry.describe(), action=A(action).name,
                      why=explain(result))
            if drop_on_refusal:
                self.pairs.remove(row)
            elif row.state is PairState.SUSPENDING and before is not PairState.SUSPENDING:
                row.state = before
            self.pairs.save()
            return result
        if action == A.RESYNC:
            result = self._merge_dpok(row, result)
            if not result.good:
                return result
            self.failed_groups.discard(row.entry.group)
            self.sok_sent.discard(row.entry.group)        # a later failover is a new one
            self.sender.recovered(row.entry.group)
        if action == A.DELETE:
            self.pairs.remove(row)
        else:
            self._follow(row, _ON_GOOD[action])
        self.pairs.save()
        return result

    def _merge_dpok(self, row: PairRow, result: ScsiResult) -> ScsiResult:
        """1213 (the target's, in the answer) | 727 (ours) -> 1209, for the source array."""
        try:
            bitmap_1213 = DifferentialBitmap.deserialize(result.data_in)
            bitmap_1209 = merge_into(bitmap_1213, row.bitmap_727(*bitmap_1213.geometry))
        except (DecodeError, ValueError) as exc:
            _log.error("{edge}: {what}: cannot merge the DPOK bitmap: {why}",
                       edge=self.name, what=row.entry.describe(), why=exc)
            return refusal(ASC_PAIR_PARAMS)
        row.clear_727()
        return ScsiResult(data_in=bitmap_1209.serialize())

    # -- failure Suspend (source edge, 【0084】) --------------------------------------
    def group_failed(self, group: int, why: str) -> None:
        rows = [r for r in self.pairs.in_group(group, "source")
                if r.state in REPLICATING or r.state is PairState.SUSPENDING]
        if group in self.failed_groups or not rows:
            return
        self.failed_groups.add(group)
        self.counters["failure_suspends"] += 1
        _log.error("{edge}: group {group} goes to failure Suspend: {why}; {n} retained "
                   "entries become differential bitmaps", edge=self.name, group=group,
                   why=why, n=len(self.log_store.retained(group)))
        for row in rows:
            self._follow(row, Event.FAILED)
            row.last_error = why
        self._drop_retained(group)
        self._mark_restart(group)
        for row in rows:
            self._notify_array(row)
        for row in rows:     # the notice waits in the log for the RCN to carry it
            self._send_control(row, group, _control_command(row, A.SUSPEND, True).cdb
                               ).addErrback(lambda _: None)
        self.pairs.save()

    def log_lost(self) -> int:
        """This edge restarted with a memory-mode log: the writes it acknowledged and had
        not seen applied are gone, and no one knows which. Every replicating group goes to
        failure Suspend with 727 = the whole volume, so the resync copies everything rather
        than leave the target silently short. Returns how many groups."""
        groups = {r.entry.group for r in self.pairs if r.side == "source"
                  and (r.state in REPLICATING or r.state is PairState.SUSPENDING)}
        for group in sorted(groups):
            for row in self.pairs.in_group(group, "source"):
                row.lost_everything()
            self.group_failed(group, "the edge restarted with its memory-mode log lost: "
                                     "the whole volume must be copied again")
        return len(groups)

    def _drop_retained(self, group: int) -> None:
        extents: dict[tuple, tuple[list, list]] = {}
        unreadable: set[tuple] = set()      # a WR whose extent is unknown: the whole volume
        for sequence in self.log_store.retained(group):
            blob = self.log_store.get(group, sequence)
            waiting = self.source.take_waiting_control(group, sequence)
            if waiting is not None:
                waiting.callback(refusal(ASC_RCN_FAILED))
            elif blob is not None:
                header, area = stored_entry(blob)
                try:
                    # this edge's own entry: an epoch held for the log opens it too
                    command = parse_command_area(self.source.seal.open_stored(header, area))
                except (DecodeError, SealRefused):
                    command = None
                key = (header.source_wwn, header.target_wwn, header.target_lun)
                if command is None and header.entry_type == EntryType.WR:
                    unreadable.add(key)
                elif command is not None and command.cdb[0] == _WRITE16:
                    lbas, blocks = extents.setdefault(key, ([], []))
                    lbas.append(command.parsed["lba"])
                    blocks.append(command.parsed["transfer_length"])
            self.sender.cancel(group, sequence)
            self.log_store.delete(group, sequence)
            self.counters["entries_to_bitmap"] += 1
        for key, (lbas, blocks) in extents.items():
            row = self.pairs.rows.get(key)
            if row is not None:
                row.dropped(np.array(lbas, np.uint64), np.array(blocks, np.uint64))
        for key in unreadable:
            row = self.pairs.rows.get(key)
            if row is not None:
                _log.error("{edge}: a retained write of {pair} could not be read back; the "
                           "whole volume is marked for the resync", edge=self.name,
                           pair=row.entry.describe())
                row.lost_everything()

    def _notify_array(self, row: PairRow) -> None:
        """SUSPEND+FAILURE to this edge's array of the pair (source or target side)."""
        e = row.entry
        mine, other = ((e.source_wwn, e.target_wwn) if row.side == "source"
                       else (e.target_wwn, e.source_wwn))
        target = self.target.apply_target_for(LogHeader(
            entry_type=EntryType.CTRL, target_wwn=mine, target_lun=e.target_lun,
            source_wwn=other))
        self.counters["notices_to_arrays"] += 1
        if target is None:
            return
        d = maybeDeferred(target.execute, _control_command(row, A.SUSPEND, failure=True),
                          e.target_lun)
        d.addErrback(lambda f: _log.warn("{edge}: could not tell the array of {what} about "
                                         "failure Suspend: {why}", edge=self.name,
                                         what=e.describe(), why=f.getErrorMessage()))

    # -- failover (Fig. 13), at the source edge -----------------------------------------
    def failover_request(self, header: LogHeader, area: bytes = b"", sender=None) -> None:
        """The target edge's SUSPEND (a REVERSE CTRL): SOK after every retained entry; with
        the FAILURE flag, the target edge stopped the group (:meth:`target_group_failed`)."""
        group = header.group_id
        row = self.pairs.find(header.source_wwn, header.target_wwn, header.target_lun)
        if row is None or row.side != "source":
            return
        try:
            # a CDB other than RCN CONTROL carries no control flags: read as none, like an
            # area that does not decode
            flags = parse_command_area(area).parsed.get("control_flags", 0) if area else 0
        except DecodeError:
            flags = 0
        if flags & _FAILURE:
            # only while the entry it names is still retained: a late copy of the notice
            # must not fail the group again after a resync
            sequence = header.sequence
            if self.sender.holds(group, sequence):
                self.group_failed(group, f"the target edge could not apply sequence "
                                         f"{sequence}")
            return
        if group in self.sok_sent:
            return
        if header.io_time_ns <= self.pairs.failover_seen.get(group, -1):
            # sealed end to end, so the target edge sent it -- but for a failover already
            # acted on (and resynced since): a replay must not fail the group again
            self.counters["stale_failovers"] += 1
            _log.warn("{edge}: a failover SUSPEND for group {group} from before the last "
                      "one acted on was ignored (a replay)", edge=self.name, group=group)
            return
        self.pairs.failover_seen[group] = header.io_time_ns
        self.sok_sent.add(group)
        self.counters["failovers"] += 1
        rows = self.pairs.in_group(group, "source")
        for r in rows:
            self._follow(r, Event.FAILED)
            self._notify_array(r)
        self._send_control(row, group, _control_command(row, A.SUSPEND, True).cdb
                           ).addErrback(lambda _: None)
        # the SOK closes the group at the target edge: the next CTRL (a RESYNC from the
        # source array) reopens it
        self._mark_restart(group)
        self.pairs.save()

    # -- the target edge ----------------------------------------------------------------
    def _target_command(self, row: PairRow, action: int, fast: bool):
        group = row.entry.group
        if not allows(row.state, Event.FAILED):
            return self._state_refused(row, action)
        receiver = self.target.receiver(group)
        if action == A.TAKEOVER:
            self.counters["takeovers"] += 1
            report = self._close_target_group(group, row)
            _log.warn("{edge}: TAKEOVER of group {group}: applied through {applied}, {missing} "
                      "known missing, {discarded} discarded", edge=self.name, group=group,
                      applied=report["applied"], missing=report["known_missing"],
                      discarded=report["discarded"])
            return ScsiResult(data_in=fcp.build_residual_report(**report))
        if row.state in (PairState.SUSPEND, PairState.FAILURE_SUSPEND):
            return ScsiResult()
        if group in self.failovers:
            return self._refused(ASC_IN_PROGRESS, None, "a failover of this group is running")
        self.counters["failovers"] += 1
        if fast:
            report = receiver.residual()
            self._fail_target_group(group, except_row=row)
            self._ask_source(self.failovers.setdefault(group, _Failover(None, row, None)))
            return ScsiResult(data_in=fcp.build_residual_report(**report))
        answer = Deferred()
        timer = self.clock.callLater(self.settings.failover_timeout,
                                          self._failover_timed_out, group)
        self._ask_source(self.failovers.setdefault(group, _Failover(answer, row, timer)))
        return answer

    def target_group_failed(self, group: int, sequence: int, why: str) -> None:
        """The receiver stopped ``group`` at ``sequence``, which can never be applied: the
        target-side rows go to failure Suspend and the source edge is asked (a REVERSE CTRL
        SUSPEND+FAILURE naming the sequence, again every rto) to fail the group as
        【0084】 does -- its retained entries become 727, and its failure notice (RESTART)
        reopens the group here and tells the target array."""
        if group in self.target_failures:
            return
        self.counters["target_failures"] += 1
        rows = self.pairs.in_group(group, "target")
        for r in rows:
            self._follow(r, Event.FAILED)
            r.last_error = why
        self.pairs.save()
        if not rows:
            return
        failure = self.target_failures[group] = _Failover(None, rows[0], None)
        self._ask_source(failure, failure=True, sequence=sequence)

    def _ask_source(self, failover: _Failover, failure: bool = False, sequence: int = 0) -> None:
        """Send the SUSPEND back to the source edge, again every rto until the SOK (or, with
        ``failure``, until the source edge's failure notice)."""
        e = failover.row.entry
        cdb = fcp.build_rcn_control(A.SUSPEND, e.group, e.source_lun, failure=failure)
        area = command_area(0, 0, 0, e.target_lun, cdb)
        waiting = self.target_failures if failure else self.failovers
        back = LogHeader(source_wwn=e.source_wwn, target_wwn=e.target_wwn)     # its route

        def send():
            if waiting.get(e.group) is not failover:
                return
            try:
                # sealed at each send: a rotation meanwhile must not leave it under an
                # epoch the source edge no longer accepts
                datagrams = self.source.seal.datagrams(
                    EntryType.CTRL, area, self.settings.max_datagram_body,
                    flags=int(EntryFlag.REVERSE), group_id=e.group, sequence=sequence,
                    io_time_ns=failover.asked_ns, target_wwn=e.target_wwn,
                    target_lun=e.target_lun, source_wwn=e.source_wwn,
                    source_lun=e.source_lun, ttl=self.settings.ttl)
            except SealRefused as exc:
                _log.error("{edge}: cannot ask the source edge to suspend group {group}: "
                           "{why}", edge=self.name, group=e.group, why=exc)
                return
            self.send_back(back, datagrams)
            failover.resend = self.clock.callLater(self.settings.rto, send)
        failover.asked_ns = int(self.clock.seconds() * 1e9)
        send()

    def _failover_timed_out(self, group: int) -> None:
        failover = self.failovers.pop(group, None)
        if failover is None:
            return
        self._cancel(failover)
        report = self._close_target_group(group, failover.row)
        _log.error("{edge}: failover of group {group}: no SOK from the source edge in "
                   "{t} s; stopped at sequence {applied}", edge=self.name, group=group,
                   t=self.settings.failover_timeout, applied=report["applied"])
        result = refusal(ASC_RCN_FAILED)
        result.data_in = fcp.build_residual_report(**report)
        failover.answer.callback(result)

    def _cancel(self, failover: _Failover) -> None:
        for call in (failover.timer, failover.resend):
            if call is not None and call.active():
                call.cancel()

    def _close_target_group(self, group: int, row: PairRow) -> dict:
        """The group stops here: its receiver closes (what it had: the residual report's
        figures) and its pairs other than ``row`` fail."""
        report = self.target.receiver(group).close()
        self._fail_target_group(group, except_row=row)
        return report

    def _fail_target_group(self, group: int, except_row: PairRow) -> None:
        for r in self.pairs.in_group(group, "target"):
            self._follow(r, Event.FAILED)
            if r is not except_row:
                self._notify_array(r)
        self.pairs.save()

    def at_target(self, header: LogHeader, command: RioCommand, target) -> Deferred | ScsiResult:
        """A CTRL entry reaching its turn at the target edge (``target``: the bound apply
        target of the target array)."""
        if command.cdb[0] != _CONTROL:
            return target.execute(command)
        action = command.parsed["service_action"]
        flags = command.parsed["control_flags"]
        group = header.group_id
        key = (header.source_wwn, header.target_wwn, header.target_lun)
        row = self.pairs.rows.get(key)
        if action == A.PAIR_CREATE:
            if row is not None and row.state is not PairState.SIMPLEX:
                return state_refusal(row.state)
            others = self.pairs.group_sources(group) - {key[:2]}
            if others:
                _log.warn("{edge}: PAIR_CREATE for group {group} refused: the ID is in use by "
                          "another source", edge=self.name, group=group)
                return refusal(ASC_GROUP_CONFLICT)
            if row is None:
                row = self.pairs.add(PairRow(PairEntry(header.source_wwn, header.source_lun,
                                                       header.target_wwn, header.target_lun,
                                                       group), "target", PairState.SIMPLEX))
            created = row
        else:
            created = None
        if row is None and action == A.RESYNC:
            row = self._reversed(header.target_wwn, header.source_wwn, header.source_lun,
                                 header.target_lun, "target")
        if action == A.SUSPEND and flags & _FAILURE:
            return self._sok_or_notice(group, row, command, target)
        return target.execute(command).addCallback(self._target_answered, row, action, created)

    def _target_answered(self, result: ScsiResult, row: PairRow | None, action: int,
                         created: PairRow | None) -> ScsiResult:
        if row is None:
            return result
        if not result.good:
            if created is not None:
                self.pairs.remove(created)
        elif action == A.DELETE:
            self.pairs.remove(row)
        else:
            if action == A.RESYNC and (row.bitmap is not None or row._extents):
                result = self._merge_dpok(row, result)   # failback: our 727 travels too
                if not result.good:
                    return result
            self._follow(row, _ON_GOOD[action])
        self.pairs.save()
        return result

    def _sok_or_notice(self, group: int, row: PairRow | None, command: RioCommand, target):
        """SUSPEND+FAILURE from the source edge: the failover's SOK, or a failure notice."""
        stopped = self.target_failures.pop(group, None)
        if stopped is not None:
            self._cancel(stopped)                # asked for this: the group reopened
        failover = self.failovers.pop(group, None)
        if failover is not None:
            self._cancel(failover)
            report = self._close_target_group(group, failover.row)
            if failover.answer is not None:
                failover.answer.callback(ScsiResult(data_in=fcp.build_residual_report(**report)))
            return ScsiResult()
        if row is not None:
            self._follow(row, Event.FAILED)
            self.pairs.save()
        return target.execute(command)

    def stop(self) -> None:
        """Cancel the failovers' timers (the device is shutting down)."""
        for failover in (*self.failovers.values(), *self.target_failures.values()):
            self._cancel(failover)

    # -- helpers --------------------------------------------------------------------
    def _follow(self, row: PairRow, event: Event) -> None:
        try:
            row.apply(event)
        except PairStateError as exc:
            _log.warn("{edge}: {why}; the pair stays so", edge=self.name, why=exc)

    def _state_refused(self, row: PairRow, action: int) -> ScsiResult:
        self.counters["controls_refused"] += 1
        _log.warn("{edge}: {what} is {state}: {action} refused", edge=self.name,
                  what=row.entry.describe(), state=row.state.value, action=A(action).name)
        return state_refusal(row.state)

    def _refused(self, asc: int, command: ScsiCommand | None, why: str) -> ScsiResult:
        self.counters["controls_refused"] += 1
        _log.warn("{edge}: control command refused: {why}", edge=self.name, why=why)
        return refusal(asc)

