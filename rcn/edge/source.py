"""The source edge: a write becomes a durable log entry on its way (DESIGN.md 1, 3.3).

Follow one write (Fig. 16, 【0082】 steps 1-4) through :meth:`SourceSide.write`:

1. **pair state** -- the pair's row of table 411 (:mod:`rcn.edge.pairs`) must be
   replicating (``rcn.pairstate.REPLICATING``), else the array gets the state's refusal;
2. **sequence** -- the group's generation counter (table 413) in the log storage
   area gives the next sequence number (804, ``log_store.next_sequence``);
3. **RIO area** (805) -- the exchange as FC frames (``rcn.logxfer.rioarea.command_area``);
4. **entry** -- the header fields 801-805 (``datapath/frames/logentry.py``'s table), cut
   into datagrams of at most ``max_datagram_body`` bytes (``segment_entry``, 【0078】);
5. **durable append** -- ``log_store.append`` (group commit, DESIGN.md 5 invariant 2); a
   full quota is failure Suspend (``on_failure``) and the array gets BUSY or the refusal;
6. **GOOD** to the array once durable, and the entry goes to the
   :class:`~rcn.logxfer.sender.Sender` toward the next hop of its route (table 408).

A CTRL entry (pair control, an NBD read: :meth:`SourceSide.control`) takes the same
steps, but the array's answer waits for the far side's CTRL_OK.

Acknowledgements (backward entries that end here; :class:`~rcn.edge.device.EdgeDevice`
routes them by type): a WROK deletes its entry (the delete counter), a CUMULATIVE one
every WR of the group up to its sequence (【0088】 steps 7-9); a CTRL_OK answers the
waiting CTRL; a NAK sends the named entries again at once. An answer or NAK for a
sequence beyond what this edge has sent is refused and counted (``*_beyond_sent``).

Key rotation: the log keeps an entry sealed under the group key epoch it was logged with,
maybe long after a rotation (a target unreachable for days). What goes to the wire is
always under the group's current send epoch: before each send of an entry (first, again,
after a restart's replay; the sender's ``prepare`` hook) it is re-sealed if its epoch is
another (``GroupSeal.reseal``: a fresh nonce, the log keeps the original) -- a comparison
of one header field otherwise, so a rotation costs nothing until an entry goes out, and
then only that entry. A retired epoch the log still uses stays *held* at this edge to open
them (``GroupSeal``, ``LogStore.epochs``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import (HEADER_SIZE, LOG_HEADER, EntryFlag, EntryType,
                                      LogHeader, parse_nak_ranges)
from rcn.edge.logstore import LogStoreFull
from rcn.edge.pairs import EdgePairs, PairEntry
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import command_area, parse_response_area
from rcn.logxfer.routes import Address, Hops
from rcn.logxfer.seal import GroupSeal, SealRefused
from rcn.logxfer.sender import Sender
from rcn.metrics import LatencyHistogram
from rcn.pairstate import REPLICATING, PairState, state_refusal
from rcn.rio.fcp import ScsiResult, SenseKey, check_condition

_log = Logger()
_BUSY = fcp.ScsiStatus.BUSY
_CUMULATIVE = int(EntryFlag.CUMULATIVE)
_RIO_AT = LOG_HEADER.offsets["rio_length"]


def split_datagrams(blob: bytes) -> list[bytes]:
    """The datagrams of a stored entry (the log storage area keeps them back to back)."""
    out, at = [], 0
    while at < len(blob):
        length = HEADER_SIZE + int.from_bytes(blob[at + _RIO_AT:at + _RIO_AT + 4], "big")
        out.append(blob[at:at + length])
        at += length
    return out


def stored_entry(blob: bytes) -> tuple[LogHeader, bytes]:
    """The header and RIO area of an entry as the log storage area keeps it (sealed, when
    the group's entries are: ``GroupSeal.open`` gives the clear area)."""
    datagrams = split_datagrams(blob)
    return LogHeader.parse(datagrams[0], fast=True), b"".join(d[HEADER_SIZE:] for d in datagrams)


class _Logged(NamedTuple):
    """An entry appended to the log, waiting to be durable before it is sent."""
    group: int
    sequence: int
    datagrams: list[bytes]
    path: Address | None
    started: float


class SourceSide:
    """The source half of an edge (see the module doc). ``on_failure(group, why)`` puts a
    group in failure Suspend (``PairControl.group_failed``); ``counters`` is the edge's."""

    def __init__(self, *, clock, log_store, pairs: EdgePairs, hops: Hops, sender: Sender,
                 counters: dict[str, int], drops: Drops, ack_latency: LatencyHistogram,
                 on_failure: Callable[[int, str], None], max_datagram_body: int, ttl: int,
                 name: str = "edge", seal: GroupSeal | None = None):
        self.clock = clock
        self.seal = seal if seal is not None else GroupSeal(sealed=False)
        self.log_store = log_store
        self.pairs = pairs
        self.hops = hops
        self.sender = sender
        self.counters = counters
        self.drops = drops
        self.ack_latency = ack_latency
        self.on_failure = on_failure
        self.max_datagram_body = max_datagram_body
        self.ttl = ttl
        self.name = name
        self._waiting_ctrl: dict[tuple[int, int], Deferred] = {}
        sender.prepare = self._under_current_key

    # -- a write, step by step ----------------------------------------------------------
    def write(self, pair: PairEntry, cdb: bytes, data, attribute: int = fcp.TaskAttribute.SIMPLE,
              ids: tuple[int, int, int] = (0, 0, 0)) -> Deferred:
        """Log a write (WRITE(16) ``cdb``) of ``pair``: Deferred[ScsiResult], GOOD once durable.
        ``ids``: the exchange's (S_ID, D_ID, OX_ID), kept in the RIO area."""
        row = self.pairs.rows.get(pair.key)
        if row is not None and row.state not in REPLICATING:
            self.counters["refused"] += 1
            return succeed(state_refusal(row.state))
        logged, durable = self._append(EntryType.WR, pair, pair.group, cdb, data, 0, attribute,
                                       ids)
        if logged is None:
            return durable
        self.counters["writes"] += 1
        self.counters["write_bytes"] += len(data)
        return durable.addCallback(self._written, logged)

    def _append(self, entry_type: int, pair: PairEntry, group: int, cdb: bytes, data_out,
                data_in_length: int, attribute: int, ids: tuple[int, int, int], flags: int = 0):
        """Steps 2-5: (the logged entry, Deferred firing once it is durable), or (None, the
        array's answer) when the log refused it."""
        started = self.clock.seconds()
        sequence = self.log_store.next_sequence(group)
        s_id, d_id, ox_id = ids
        area = command_area(s_id, d_id, ox_id, pair.target_lun, cdb, data_out, data_in_length,
                            attribute)
        path = self.hops.next(pair.source_wwn, pair.target_wwn)
        try:
            # sealed under the group key before the durable append: the log holds ciphertext
            datagrams = self.seal.datagrams(
                entry_type, area, self.max_datagram_body, group_id=group, sequence=sequence,
                io_time_ns=int(started * 1e9), target_wwn=pair.target_wwn,
                target_lun=pair.target_lun, source_wwn=pair.source_wwn,
                source_lun=pair.source_lun, ttl=self.ttl, flags=flags)
            durable = self.log_store.append(group, sequence, b"".join(datagrams))
        except (LogStoreFull, SealRefused) as exc:   # quota overflow, no key: failure Suspend
            self.counters["busy"] += 1
            self.on_failure(group, f"log quota overflow ({exc})" if isinstance(exc, LogStoreFull)
                            else f"entries cannot be sealed ({exc})")
            row = self.pairs.rows.get(pair.key)
            if row is not None and row.state is not PairState.DUPLEX:
                return None, succeed(state_refusal(row.state))
            return None, succeed(ScsiResult(status=_BUSY))
        return _Logged(group, sequence, datagrams, path, started), durable

    def _written(self, _, logged: _Logged) -> ScsiResult:
        """Step 6: durable -- GOOD to the array, the entry to the sender."""
        self.ack_latency.observe(self.clock.seconds() - logged.started)
        self._submit(logged)
        return ScsiResult()

    def _submit(self, logged: _Logged) -> None:
        group, sequence = logged.group, logged.sequence
        if logged.path is None:
            self.drops.drop("no_route", self.hops.me, f"group {group} sequence {sequence} retained")
            self.on_failure(group, "no route to the target")
            return
        self.sender.submit(group, sequence, logged.datagrams, logged.path,
                           self._customer(group))

    # -- key rotation -------------------------------------------------------------------
    def _under_current_key(self, item) -> None:
        """The sender's ``prepare``: ``item``'s datagrams re-sealed under its group's send
        epoch if they are under another; left as they are when they cannot be (counted
        ``reseal_refused``: no key opens them, or none to send with -- the target will
        refuse them, and the failure timer acts as for any entry that is not answered)."""
        try:
            resealed = self.seal.reseal(item.datagrams)
        except SealRefused as exc:
            self.seal.counts["reseal_refused"] += 1
            _log.warn("{edge}: group {group} sequence {seq} could not be re-sealed under the "
                      "current key: {why}", edge=self.name, group=item.group,
                      seq=item.sequence, why=exc)
            return
        if resealed is not None:
            item.datagrams = resealed

    def control(self, pair: PairEntry, group: int, cdb: bytes, data_out=b"",
                data_in_length: int = 0, attribute: int = fcp.TaskAttribute.SIMPLE,
                ids: tuple[int, int, int] = (0, 0, 0), flags: int = 0) -> Deferred:
        """Relay a command to the target storage in the group's order (CTRL entry);
        Deferred[ScsiResult] with the far side's answer (data-in included)."""
        logged, durable = self._append(EntryType.CTRL, pair, group, cdb, data_out,
                                       data_in_length, attribute, ids, flags)
        if logged is None:
            return durable
        self.counters["controls"] += 1
        answer = Deferred()
        self._waiting_ctrl[(group, logged.sequence)] = answer

        def sent(_):
            self._submit(logged)
            return answer
        return durable.addCallback(sent)

    def take_waiting_control(self, group: int, sequence: int) -> Deferred | None:
        """The array's exchange waiting for a CTRL's answer, taken out (None if none)."""
        return self._waiting_ctrl.pop((group, sequence), None)

    def _customer(self, group: int) -> str:
        rows = self.pairs.in_group(group)
        return rows[0].entry.customer if rows else ""

    def customer_of(self, source_wwn: int, target_wwn: int) -> str:
        """The customer of a new pair: that of a configured pair between the same arrays."""
        for row in self.pairs:
            if (row.entry.source_wwn, row.entry.target_wwn) == (source_wwn, target_wwn):
                return row.entry.customer
        return ""

    def replay(self, replayed) -> int:
        """Send again what the log storage area still holds (after a restart); how many."""
        count = 0
        for group, entries in replayed.entries.items():
            for sequence, blob in entries:
                datagrams = split_datagrams(blob)
                header = LogHeader.parse(datagrams[0], fast=True)
                path = self.hops.next(header.source_wwn, header.target_wwn)
                if path is None:
                    _log.warn("{edge}: replayed group {group} sequence {seq} has no route",
                              edge=self.name, group=group, seq=sequence)
                    continue
                self.sender.submit(group, sequence, datagrams, path, self._customer(group))
                count += 1
        self.counters["replayed"] += count
        return count

    # -- acknowledgements -----------------------------------------------------------------
    def wrok(self, header: LogHeader, area: bytes, sender: Address) -> None:
        """A WROK: the write is applied at the target; its entry is deleted (all up to it
        when CUMULATIVE)."""
        group, sequence = header.group_id, header.sequence
        if not self._sent_here(group, sequence, "ACK", sender):
            return
        self.counters["wroks"] += 1
        if header.flags & _CUMULATIVE:
            self._acknowledge_through(group, sequence)
        else:
            self.sender.acknowledged(group, sequence)
            self.log_store.delete(group, sequence)

    def ctrl_ok(self, header: LogHeader, area: bytes, sender: Address) -> None:
        """A CTRL_OK: the far side's answer (``area``) goes to the waiting array."""
        group, sequence = header.group_id, header.sequence
        if not self._sent_here(group, sequence, "ACK", sender):
            return
        self.sender.acknowledged(group, sequence)
        self.log_store.delete(group, sequence)
        self.counters["ctrl_oks"] += 1
        waiting = self._waiting_ctrl.pop((group, sequence), None)
        if waiting is None:
            return
        try:
            result = parse_response_area(area)
        except DecodeError as exc:
            _log.warn("{edge}: CTRL_OK for group {group} sequence {seq} unreadable: {why}",
                      edge=self.name, group=group, seq=sequence, why=exc)
            result = check_condition(SenseKey.ABORTED_COMMAND, (0x00, 0x00))
        waiting.callback(result)

    def nak(self, header: LogHeader, body: bytes, sender: Address) -> None:
        """A NAK: the target lacks these sequences; send them again now."""
        self.counters["naks_received"] += 1
        try:
            ranges = parse_nak_ranges(body)
        except DecodeError as exc:
            self.drops.drop("malformed", sender, str(exc))
            return
        group = header.group_id
        if ranges and not self._sent_here(group, max(last for _, last in ranges), "NAK", sender):
            return
        self.sender.nak(group, ranges)

    def _sent_here(self, group: int, sequence: int, what: str, sender: Address) -> bool:
        """Whether ``sequence`` of ``group`` is one this edge has sent: an answer or NAK
        beyond it is forged or confused, and refused (a counted drop)."""
        if sequence <= self.sender.highest(group):
            return True
        deleted = self.log_store.group_stats(group)["deleted"]
        if sequence <= deleted:
            return True         # sent before a restart and deleted since: a late duplicate
        self.drops.drop(f"{what.lower()}_beyond_sent", sender,
                        f"{what} for group {group} sequence {sequence}, beyond the highest "
                        f"sent ({max(self.sender.highest(group), deleted)}); ignored")
        return False

    def _acknowledge_through(self, group: int, sequence: int) -> None:
        """A cumulative WROK: every WR of the group up to ``sequence`` is applied (a CTRL
        waits for its own answer). The work is the entries the sender holds up to it."""
        for item in self.sender.acknowledge_through(
                group, sequence, keep=lambda seq: (group, seq) in self._waiting_ctrl):
            self.log_store.delete(group, item.sequence)

    def stop(self) -> None:
        """Answer every waiting CTRL with ABORTED COMMAND (the edge is shutting down)."""
        for waiting in list(self._waiting_ctrl.values()):
            waiting.callback(check_condition(SenseKey.ABORTED_COMMAND, (0x00, 0x00)))
        self._waiting_ctrl.clear()
