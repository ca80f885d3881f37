"""The target edge: entries in, ordered apply to the target array, WROKs back.

DESIGN.md 3.3 (reliability: duplicates dropped, WROK re-sent, NAK) and 5 (invariants 1
prefix consistency, 3 idempotent apply, 5 bounded resources); the patent's 【0089】 (apply
strictly in sequence order per group) and table 413 (apply counter, apply lag). The
:class:`~rcn.edge.target.TargetSide` makes one receiver per group.

For each order guarantee group a :class:`GroupReceiver` holds

* a **reorder buffer** (``datapath.kernels.reorder``) of ``window`` entries:
  entries arrive in any order and leave in sequence order; a sequence at or
  below the persisted apply counter is a duplicate (its WROK is sent again,
  flag RESENT_ACK), one buffered already is dropped, one beyond the window is
  dropped (the source retransmits it);
* the **apply pipeline**: released entries go to the target (an
  :class:`ApplyTarget`: the target array over its RIO link, or an NBD server)
  with the ORDERED task attribute, up to ``apply_window`` at a time;
* **WROKs** are cumulative (flag CUMULATIVE): one per batch of writes made
  durable together, for every write of the group up to its sequence;
* the **apply counter**, persisted through :class:`rcn.edge.applystate.ApplyState`
  (group commit) before any WROK that relies on it leaves, so a restart never
  waits for an entry the source has already deleted nor applies one twice out
  of order (DESIGN.md invariants 1 and 3).

Why writes in flight never overlap: after a crash of this edge the entries
sent to the array but not yet durably counted as applied are applied again,
in order. Were two of them to touch the same block, replaying the older one
after the newer had landed would briefly expose a state that is no prefix of
the group's writes. So an entry whose blocks overlap an entry that is still
*uncertain* (sent, not durably counted) waits until that one is durable;
then replaying the uncertain set is harmless -- each of its blocks is written
by one entry only, with the value it already has or is about to get. A CTRL
entry (pair control, reads) is a barrier: it runs alone, after everything
before it is durable.

Restart and close (the pair lifecycle, docs/pairs.md): a CTRL entry with flag
RESTART voids every sequence below it that is not applied -- what the reorder
buffer holds below it and what waits to be sent is dropped, and the apply
counter jumps to just below it when it runs (a barrier, so everything sent
before it is durable by then). :meth:`GroupReceiver.close` stops the group
(failover, TAKEOVER): what is held is dropped, what is in flight completes,
and later entries are ignored until a RESTART reopens it.

NAKs: while a gap holds entries back for longer than ``nak_delay``, the
missing ranges (``ReorderBuffer.missing``, at most ``max_nak_ranges``) go back to the
source, again every ``nak_interval`` while the gap lasts. A NAK is never split into
segments: when the ranges (sealed) would not fit one datagram of ``max_datagram_body``,
they go as several NAKs, each a datagram of its own (a NAK is advisory; each stands alone).

Entries that can never be applied do not wedge the group. The RIO area is parsed as
the entry arrives: one that does not parse (its CRC32C was good, so the source built
it so, or something on the way did) is dropped and asked for again at once by NAK; a
second unusable copy of the same sequence stops the group. So does an answer from the
target that retrying cannot change (CHECK CONDITION with ILLEGAL REQUEST or DATA
PROTECT: no such pair, a state that refuses writes, ...), where a failed apply of any
other kind (no link, not logged in, BUSY, NOT READY) is tried again every
``retry_delay``. Stopping is :meth:`GroupReceiver.close` plus ``on_unusable(group,
sequence, why)``, once: the edge puts the group in failure Suspend (rcn.edge.control).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import (COUNT_HEADER, HEADER_SIZE, NAK_RANGE, SEALED_OVERHEAD,
                                      EntryFlag, EntryType, LogHeader, nak_body)
from datapath.kernels import reorder as reorder_kernel
from rcn.logxfer.rioarea import RioCommand, parse_command_area, response_area
from rcn.logxfer.seal import GroupSeal, SealRefused
from rcn.pairstate import explain
from rcn.rio.fcp import ScsiResult, SenseKey, parse_sense

_log = Logger()
_WRITE16 = int(fcp.Opcode.WRITE_16)
_ORDERED = int(fcp.TaskAttribute.ORDERED)
_BLOCK = fcp.BLOCK_SIZE


class ApplyTarget(Protocol):
    def execute(self, command: RioCommand) -> Deferred:
        """Run the command on the target storage; Deferred[ScsiResult]. Errors (no link,
        not logged in) fail the Deferred; the receiver tries again later."""


@dataclass(frozen=True)
class ReceiverConfig:
    window: int = 1 << 14              # reorder buffer entries per group (a power of two)
    apply_window: int = 256            # entries sent to the target and not yet durable
    max_pending_bytes: int = 256 << 20  # entries held per group waiting for their turn
    nak_delay: float = 0.02
    nak_interval: float = 0.2
    max_nak_ranges: int = 64
    retry_delay: float = 0.5           # apply failed (no link, CHECK CONDITION): again after


@dataclass(eq=False, slots=True)
class _Entry:
    sequence: int
    entry_type: int
    header: LogHeader
    area: bytes = field(repr=False)
    command: RioCommand | None = None
    extent: tuple[int, int] | None = None      # (first block, end block) of a write
    result: ScsiResult | None = None


@dataclass
class GroupStats:
    received: int = 0
    applied_entries: int = 0          # since this process started
    applied_bytes: int = 0
    duplicates_applied: int = 0
    duplicates_buffered: int = 0
    beyond_window: int = 0
    over_budget: int = 0
    apply_errors: int = 0
    naks_sent: int = 0
    wroks_sent: int = 0
    wroks_resent: int = 0
    bad_areas: int = 0                # RIO areas that did not parse (dropped, NAKed)
    refused: int = 0                  # answers retrying cannot change
    voided: int = 0                   # dropped by a RESTART or close
    after_close: int = 0              # arrived while the group was closed
    answers_unsealed: int = 0         # answers not sent: no group key to seal them with


def _extent(command: RioCommand) -> tuple[int, int] | None:
    if command.cdb and command.cdb[0] == _WRITE16 and command.parsed["transfer_length"]:
        lba = command.parsed["lba"]
        return lba, lba + command.parsed["transfer_length"]
    return None         # not a write, or one of no blocks: a barrier


class GroupReceiver:
    """One order guarantee group at the target edge (see the module doc).

    ``applied``: the group's persisted apply counter; ``target_for(header)``: what an
    entry is applied through (None: nothing yet, try later); ``record_applied(group,
    value)``: persist the apply counter (Deferred, fired once durable); ``send_back(header,
    datagrams)``: answers toward the source edge; ``durable_of(group)``: the counter known
    durable now; ``on_unusable(group, sequence, why)``: the group stopped."""

    def __init__(self, group: int, *, clock, config: ReceiverConfig, applied: int,
                 target_for: Callable[[LogHeader], ApplyTarget | None],
                 record_applied: Callable[[int, int], Deferred],
                 send_back: Callable[[LogHeader, list[bytes]], None],
                 observe_lag: Callable[[float], None] | None = None,
                 durable_of: Callable[[int], int] | None = None,
                 max_datagram_body: int = 65000 - HEADER_SIZE,
                 on_unusable: Callable[[int, int, str], None] | None = None,
                 seal: GroupSeal | None = None):
        self.group = group
        self.seal = seal if seal is not None else GroupSeal(sealed=False)
        self.on_unusable = on_unusable
        self.unusable: str | None = None       # why the group stopped (see the module doc)
        self._bad_copies: dict[int, int] = {}  # sequence -> unusable copies seen
        self.clock = clock
        self.config = config
        self.target_for = target_for
        self.record_applied = record_applied
        self.send_back = send_back
        self.observe_lag = observe_lag
        self.max_datagram_body = max_datagram_body     # the edge's: answers are split like entries
        # what is durable now: one fsync fires many record() Deferreds, and the first of
        # them can answer for all (one cumulative WROK instead of one each)
        self.durable_of = durable_of
        self.reorder = reorder_kernel.ReorderBuffer(config.window, first_sequence=applied + 1)
        self.stats = GroupStats()
        self.applied = applied                 # last sequence the target answered GOOD for
        self.durable = applied                 # last sequence whose apply counter is durable
        self.pending: dict[int, _Entry] = {}   # buffered in the reorder buffer, by handle
        self.pending_bytes = 0
        self.ready: deque[_Entry] = deque()    # released, in order, not yet sent
        self.uncertain: deque[_Entry] = deque()  # sent to the target, not yet durable
        self._starts: list[int] = []           # first blocks of the uncertain writes, sorted
        self._ends: dict[int, int] = {}        # first block -> end block
        self._barriers = 0                     # uncertain entries that are not writes
        self.done: dict[int, _Entry] = {}      # answered GOOD, waiting for durability
        self.answers: dict[int, tuple[LogHeader, bytes]] = {}   # recent CTRL answers (resends)
        self.last_header: LogHeader | None = None
        self.highest_seen = applied            # highest sequence received
        self.last_lag: float | None = None     # apply time minus I/O time of the last applied
        self.closed_after: int | None = None   # closed: nothing past this is applied
        self._handle = 0
        self._nak_call = None
        self._retry_call = None
        self._gap_since: float | None = None
        self._out = np.zeros(1024, np.int64)

    # -- entries in ---------------------------------------------------------
    def entry(self, header: LogHeader, area: bytes) -> None:
        """A whole WR or CTRL entry (segments joined)."""
        self.stats.received += 1
        sequence = header.sequence
        self.last_header = header
        if sequence > self.highest_seen:
            self.highest_seen = sequence
        restart = header.entry_type == EntryType.CTRL and header.flags & _RESTART
        if self.closed_after is not None and sequence > self.closed_after and not restart:
            self.stats.after_close += 1
            return
        if restart and sequence >= self.reorder.next_expected:
            self._restart_at(sequence)     # reopens a closed group even with no hole below
        if sequence <= self.durable:
            self.stats.duplicates_applied += 1
            self._resend_answer(header)
            return
        if sequence <= self.applied or self._in_flight(sequence):
            self.stats.duplicates_buffered += 1   # answered soon, once durable
            return
        if (self.pending_bytes + len(area) > self.config.max_pending_bytes
                and sequence != self.reorder.next_expected):
            self.stats.over_budget += 1
            return
        command = self._parse(header, area)
        if command is None:
            return
        handle = self._handle
        self._handle += 1
        verdict = self.reorder.insert_one(sequence, handle)
        if verdict == reorder_kernel.VERDICT_ACCEPTED:
            self._bad_copies.pop(sequence, None)
            self.pending[handle] = _Entry(sequence, header.entry_type, header, area, command,
                                          _extent(command))
            self.pending_bytes += len(area)
            self._release()
        elif verdict == reorder_kernel.VERDICT_BUFFERED_DUPLICATE:
            self.stats.duplicates_buffered += 1
        elif verdict == reorder_kernel.VERDICT_APPLIED_DUPLICATE:
            self.stats.duplicates_buffered += 1
        else:
            self.stats.beyond_window += 1
        self._check_gap()

    def _parse(self, header: LogHeader, area: bytes) -> RioCommand | None:
        """The entry's command; None (dropped, NAKed, or the group stopped) if unusable."""
        try:
            return parse_command_area(area)
        except DecodeError as exc:
            sequence = header.sequence
            self.stats.bad_areas += 1
            copies = self._bad_copies[sequence] = self._bad_copies.get(sequence, 0) + 1
            if copies >= 2:
                self._stop(sequence, f"RIO area of sequence {sequence} unusable in "
                                     f"{copies} copies: {exc}")
                return None
            if len(self._bad_copies) > self.config.window:      # bounded: oldest go first
                del self._bad_copies[next(iter(self._bad_copies))]
            _log.warn("group {group} sequence {seq}: unusable RIO area ({why}); asking the "
                      "source for it again", group=self.group, seq=sequence, why=exc)
            self._send_nak(header, [(sequence, sequence)])
            return None

    def _stop(self, sequence: int, why: str) -> None:
        """An entry that can never be applied: stop the group and say so, once."""
        if self.unusable is not None:
            return
        self.unusable = why
        _log.error("group {group}: stopped at sequence {seq}: {why}; failure Suspend",
                   group=self.group, seq=sequence, why=why)
        self.close()
        if self.on_unusable is not None:
            self.on_unusable(self.group, sequence, why)

    def _restart_at(self, sequence: int) -> None:
        """Void every sequence below ``sequence`` not yet sent to the target."""
        self.closed_after = None
        self.unusable = None
        self._drop_held(keep_from=sequence)
        self.reorder = self._rebuilt(sequence)

    def _rebuilt(self, first: int) -> reorder_kernel.ReorderBuffer:
        """A reorder buffer expecting ``first`` next, holding the pending entries."""
        buffer = reorder_kernel.ReorderBuffer(self.config.window, first_sequence=first)
        for handle, item in self.pending.items():
            buffer.insert_one(item.sequence, handle)
        return buffer

    def _drop_held(self, keep_from: int | None = None) -> int:
        """Drop what waits (buffered or released, not sent) below ``keep_from`` (all if
        None); returns how many."""
        dropped = len(self.ready)
        self.ready.clear()
        for handle, item in list(self.pending.items()):
            if keep_from is None or item.sequence < keep_from:
                del self.pending[handle]
                self.pending_bytes -= len(item.area)
                dropped += 1
        self.stats.voided += dropped
        return dropped

    def close(self) -> dict:
        """Stop applying (failover, TAKEOVER): drop what is held, let what is in flight
        complete, ignore later entries; returns the residual report's fields."""
        last = self.uncertain[-1].sequence if self.uncertain else self.applied
        discarded = self._drop_held()
        self.reorder = self._rebuilt(last + 1)
        self.closed_after = last
        return {"applied": last, "received_max": self.highest_seen, "discarded": discarded,
                "known_missing": max(0, self.highest_seen - last - discarded)}

    def residual(self) -> dict:
        """The residual report now, closing nothing (the fast failover's answer)."""
        held = self.reorder.occupancy + len(self.ready) + len(self.uncertain)
        return {"applied": self.applied, "received_max": self.highest_seen, "discarded": 0,
                "known_missing": max(0, self.highest_seen - self.applied - held)}

    def _in_flight(self, sequence: int) -> bool:
        return sequence < self.reorder.next_expected

    def _release(self) -> None:
        count = 0
        while True:
            released, _ = self.reorder.release(self._out)
            for handle in released.tolist():
                item = self.pending.pop(handle)
                self.pending_bytes -= len(item.area)
                self.ready.append(item)
            count += len(released)
            if len(released) < len(self._out):
                break
        if count:
            self.pump()

    # -- applying -------------------------------------------------------------
    def pump(self) -> None:
        while self.ready and len(self.uncertain) < self.config.apply_window:
            if self._retry_call is not None and self._retry_call.active():
                return               # a failed apply waits for its retry; order keeps the rest
            item = self.ready[0]
            if item.entry_type == EntryType.CTRL or item.extent is None:
                if self.uncertain:
                    return           # a barrier: everything before it durable first
            elif self._overlaps(item.extent):
                return
            target = self.target_for(item.header)
            if target is None:
                self._retry_later()
                return
            if item.header.flags & _RESTART and item.sequence - 1 > self.applied:
                self.applied = item.sequence - 1      # the voided ones count as done
            self.ready.popleft()
            self._hold(item)
            command = item.command
            if item.entry_type == EntryType.WR:
                command.attribute = _ORDERED
            maybeDeferred(target.execute, command).addCallbacks(
                self._answered, self._failed, (item,), None, (item,), None)

    # The uncertain writes' extents are disjoint (an overlapping write waits), so they are
    # kept sorted by first block: one bisection answers "does this extent overlap any?".
    def _overlaps(self, extent: tuple[int, int]) -> bool:
        if self._barriers:
            return True
        first, end = extent
        i = bisect.bisect_left(self._starts, end) - 1
        return i >= 0 and self._ends[self._starts[i]] > first

    def _hold(self, item: _Entry) -> None:
        self.uncertain.append(item)
        if item.extent is None or item.entry_type == EntryType.CTRL:
            self._barriers += 1
        else:
            bisect.insort(self._starts, item.extent[0])
            self._ends[item.extent[0]] = item.extent[1]

    def _let_go(self, item: _Entry) -> None:
        if item.extent is None or item.entry_type == EntryType.CTRL:
            self._barriers -= 1
        else:
            del self._starts[bisect.bisect_left(self._starts, item.extent[0])]
            del self._ends[item.extent[0]]

    def _answered(self, result: ScsiResult, item: _Entry) -> None:
        if item.entry_type == EntryType.WR and not result.good:
            self._failed(None, item, result)
            return
        item.result = result
        self.done[item.sequence] = item
        advanced = False
        while self.applied + 1 in self.done:
            self.applied += 1
            done = self.done[self.applied]
            self.stats.applied_entries += 1
            self.stats.applied_bytes += len(done.command.data_out) if done.command else 0
            lag = self.clock.seconds() - done.header.io_time_ns / 1e9
            self.last_lag = lag                  # table 413's apply lag (735)
            if self.observe_lag is not None:
                self.observe_lag(lag)
            advanced = True
        if advanced:
            self._record(self.applied)

    def _record(self, value: int) -> None:
        self.record_applied(self.group, value).addCallbacks(
            self._durable, self._record_failed, (value,), None, (value,), None)

    def _record_failed(self, failure, value: int) -> None:
        # No WROK may leave before the counter is durable: keep everything and try again.
        self.stats.apply_errors += 1
        _log.error("group {group}: apply counter {value} not persisted ({why}); retrying in "
                   "{delay} s", group=self.group, value=value, why=failure.getErrorMessage(),
                   delay=self.config.retry_delay)
        self.clock.callLater(self.config.retry_delay, self._record, value)

    def _failed(self, failure, item: _Entry, result: ScsiResult | None = None) -> None:
        self.stats.apply_errors += 1
        if result is not None and _final(result):
            self.stats.refused += 1
            self.uncertain.remove(item)
            self._let_go(item)
            self._stop(item.sequence, f"the target refused sequence {item.sequence}: "
                                      f"{_describe(result)}")
            return
        why = failure.getErrorMessage() if failure is not None else _describe(result)
        if self.stats.apply_errors <= 10 or self.stats.apply_errors % 1000 == 0:
            _log.warn("group {group} sequence {seq}: apply failed ({why}); retrying in "
                      "{delay} s", group=self.group, seq=item.sequence, why=why,
                      delay=self.config.retry_delay)
        # back to the head of the line, before anything released after it
        self.uncertain.remove(item)
        self._let_go(item)
        self.ready.appendleft(item)
        self._retry_later()

    def _retry_later(self) -> None:
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self.clock.callLater(self.config.retry_delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self.pump()

    def _durable(self, _, value: int) -> None:
        durable = max(self.durable, value)
        if self.durable_of is not None:
            durable = max(durable, min(self.durable_of(self.group), self.applied))
        last_write = None
        while self.uncertain and self.uncertain[0].sequence <= durable:
            item = self.uncertain.popleft()
            self._let_go(item)
            self.done.pop(item.sequence, None)
            if item.entry_type == EntryType.CTRL:
                self._answer_control(item)
            else:
                last_write = item
        self.durable = durable
        if last_write is not None:
            # one WROK for every write that became durable together
            self._send(EntryType.WROK, last_write.header, _GOOD_AREA, _CUMULATIVE)
            self.stats.wroks_sent += 1
        self.pump()

    def _answer_control(self, item: _Entry) -> None:
        result = item.result or ScsiResult()
        area = response_area(0, 0, 0, 0, result, item.command.data_in_length if item.command else 0)
        self.answers[item.sequence] = (item.header, area)
        while len(self.answers) > 64:
            del self.answers[next(iter(self.answers))]
        self._send(EntryType.CTRL_OK, item.header, area, 0)
        self.stats.wroks_sent += 1

    def _resend_answer(self, header: LogHeader) -> None:
        kept = self.answers.get(header.sequence)
        if header.entry_type == EntryType.CTRL:
            if kept is None:
                return      # too old to have kept the answer: the source's retry will time out
            self._send(EntryType.CTRL_OK, header, kept[1], EntryFlag.RESENT_ACK)
        else:
            # everything up to the durable counter, this duplicate included
            self._send(EntryType.WROK, header._replace(sequence=self.durable), _GOOD_AREA,
                       _CUMULATIVE | EntryFlag.RESENT_ACK)
        self.stats.wroks_resent += 1

    def _send(self, entry_type: int, header: LogHeader, area: bytes, flags: int) -> None:
        self._answer(entry_type, header, area, flags=flags, **_answer_fields(header))

    def _answer(self, entry_type: int, header: LogHeader, body: bytes, **fields) -> None:
        """Seal an answer under the group key and send it toward the source edge."""
        try:
            datagrams = self.seal.datagrams(entry_type, body, self.max_datagram_body, **fields)
        except SealRefused as exc:
            self.stats.answers_unsealed += 1
            _log.warn("group {group}: {type} not sent: {why}", group=self.group,
                      type=EntryType(entry_type).name, why=exc)
            return
        self.send_back(header, datagrams)

    # -- NAKs -----------------------------------------------------------------
    def _check_gap(self) -> None:
        if self.reorder.occupancy:
            if self._gap_since is None:
                self._gap_since = self.clock.seconds()
            if self._nak_call is None or not self._nak_call.active():
                self._nak_call = self.clock.callLater(self.config.nak_delay, self._nak)
        else:
            self._gap_since = None

    def _nak(self) -> None:
        self._nak_call = None
        if not self.reorder.occupancy or self.last_header is None:
            self._gap_since = None
            return
        ranges = self.reorder.missing(max_ranges=self.config.max_nak_ranges)
        ranges = [(int(a), int(b)) for a, b in ranges]
        if ranges:
            self._send_nak(self.last_header, ranges)
        self._nak_call = self.clock.callLater(self.config.nak_interval, self._nak)

    def _send_nak(self, header: LogHeader, ranges: list[tuple[int, int]]) -> None:
        """NAKs for ``ranges``: as many as it takes for each to fit one datagram."""
        fields = _answer_fields(header)
        fields["sequence"] = self.reorder.next_expected
        per_nak = nak_ranges_per_datagram(self.max_datagram_body)
        for at in range(0, len(ranges), per_nak):
            self._answer(EntryType.NAK, header, nak_body(ranges[at:at + per_nak]), **fields)
            self.stats.naks_sent += 1

    def stop(self) -> None:
        for call in (self._nak_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()

    def describe(self) -> dict:
        return {"group": self.group, "applied": self.applied, "durable": self.durable,
                "next_expected": self.reorder.next_expected, "buffered": self.reorder.occupancy,
                "ready": len(self.ready), "in_flight": len(self.uncertain),
                "highest_seen": self.highest_seen, "closed": self.closed_after is not None,
                "unusable": self.unusable,
                "lag_s": self.last_lag,
                **vars(self.stats)}


#: sense keys of answers that retrying the same command cannot change
_FINAL_SENSE = frozenset({SenseKey.ILLEGAL_REQUEST, SenseKey.DATA_PROTECT})


def _final(result: ScsiResult) -> bool:
    return (result.status == fcp.ScsiStatus.CHECK_CONDITION
            and parse_sense(result.sense)[0] in _FINAL_SENSE)


def _describe(result: ScsiResult) -> str:
    return f"status {result.status!r}: {explain(result)}"


def nak_ranges_per_datagram(max_body: int) -> int:
    """The most ranges one NAK holds without being split: its count header, the ranges and
    the end-to-end seal's nonce and tag in ``max_body`` bytes (at least one range: the
    edge's smallest ``max_datagram`` leaves room for dozens)."""
    return max(1, (max_body - SEALED_OVERHEAD - COUNT_HEADER.size) // NAK_RANGE.size)


def _answer_fields(header: LogHeader) -> dict:
    """What an answer (WROK, CTRL_OK, NAK) repeats of the entry it answers."""
    return {"group_id": header.group_id, "sequence": header.sequence,
            "io_time_ns": header.io_time_ns, "target_wwn": header.target_wwn,
            "target_lun": header.target_lun, "source_wwn": header.source_wwn,
            "source_lun": header.source_lun}


_GOOD_AREA = response_area(0, 0, 0, 0, ScsiResult())
_CUMULATIVE = int(EntryFlag.CUMULATIVE)
_RESTART = int(EntryFlag.RESTART)

