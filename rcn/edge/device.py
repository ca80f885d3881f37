"""The edge device's data plane as one plain object: :class:`EdgeDevice`.

Source side (Fig. 16, 【0082】 steps 1-4): a write from an attached array to a
virtual storage reaches :meth:`EdgeDevice.rio_command` (the virtual storage's
SCSI target). The pair table (411) gives the order guarantee group; the
group's generation counter gives the sequence; the entry (801-805, RIO area =
the exchange's frames) is appended to the log storage area; once it is
durable the array gets GOOD and the entry goes to the :class:`Sender`. A
WROK deletes it (delete counter). Pair control RIOs and other commands travel
as CTRL entries the same way, but the array's answer waits for the far
side's CTRL_OK (the edge relays them, 【0080】).

Target side (Fig. 19, 20): entries for storages attached here go to a
:class:`~rcn.edge.receiver.GroupReceiver` per group, which applies them in
order through the virtual storage that stands for the source array on the
target array's link, and sends WROKs back along the path.

Everything is driven by ``entry_received`` (the UDP protocol's handler) and
the RIO target hook; the reactor (clock) is injected, so the whole device runs
inside one simulated network in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import (HEADER_SIZE, EntryFlag, EntryType, LOG_HEADER, LogEntry,
                                      build_keepalive, parse_entry, parse_keepalive,
                                      parse_nak_ranges, segment_entry)
from datapath.frames.names import format_wwn
from datapath.kernels import batching
from rcn.decode.reassembly import SegmentAssembler
from rcn.edge.control import PairControl
from rcn.edge.logstore import LogStoreFull
from rcn.edge.pairs import EdgePairs, PairEntry, PairRow
from rcn.edge.receiver import ApplyTarget, GroupReceiver, ReceiverConfig
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import RioCommand, command_area, parse_response_area
from rcn.logxfer.routes import Address, RouteTable, goes_backward
from rcn.logxfer.sender import Sender, TokenBucket
from rcn.metrics import LatencyHistogram
from rcn.pairstate import REPLICATING, PairState, state_refusal
from rcn.rio.errors import NotLoggedIn
from rcn.rio.fcp import ScsiCommand, ScsiResult, ScsiTarget, SenseKey, check_condition

_log = Logger()
_WRITE16 = int(fcp.Opcode.WRITE_16)
_TUR = 0x00
_LU_NOT_SUPPORTED = (0x25, 0x00)
_INVALID_OPCODE = (0x20, 0x00)
_BUSY = fcp.ScsiStatus.BUSY
_CUMULATIVE = int(EntryFlag.CUMULATIVE)


@dataclass
class EdgeSettings:
    """What an edge runs with (from its TOML file, or built directly in tests)."""
    me: Address                              # this edge's log-transfer address
    pairs: list[PairEntry] = field(default_factory=list)
    routes: RouteTable = field(default_factory=RouteTable)
    bandwidth: dict[str, float] = field(default_factory=dict)   # customer -> bytes/s
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    window_bytes: int = 64 << 20
    rto: float = 0.5
    rto_max: float = 5.0
    max_datagram_body: int = 65000 - HEADER_SIZE
    batch_bytes: int = 65000                 # first sends batched up to this; 0: one per entry
    ttl: int = 16
    max_segment_entries: int = 4096          # incomplete segmented entries held
    group_policy: str = "B"                  # order guarantee IDs of new pairs (【0064】)
    failure_timeout: float | None = 60.0     # an entry unacknowledged this long: failure Suspend
    failover_timeout: float = 30.0           # a failover SUSPEND waits this long for the SOK


class SourceTarget(ScsiTarget):
    """The SCSI target behind every virtual storage of an edge (``FabricConfig.attach``).

    ``rio_command`` takes the group's next sequence number synchronously, so the order of
    the writes' effects is fixed when they are dispatched: ORDERED writes pipeline.
    """

    orders_by_dispatch = True

    def __init__(self, edge: "EdgeDevice", partner_wwn: int):
        self.edge = edge
        self.partner_wwn = partner_wwn

    def execute(self, command: ScsiCommand):
        return self.edge.rio_command(command, self.partner_wwn)


class FabricApplyTarget:
    """Applies through the virtual storage standing for ``source_wwn`` on the link of the
    array ``target_wwn`` (found afresh for each command: links come and go)."""

    def __init__(self, links: Callable[[], list], target_wwn: int, source_wwn: int):
        self.links = links
        self.target_wwn = target_wwn
        self.source_wwn = source_wwn

    def _virtual_storage(self):
        for port in self.links():
            if port.array_wwn != self.target_wwn:
                continue
            for vs in port.virtual_storages:
                if vs.partner_wwn == self.source_wwn and vs.array_logged_in:
                    return vs
        return None

    def execute(self, command: RioCommand, lun: int):
        vs = self._virtual_storage()
        if vs is None:
            return fail(NotLoggedIn(f"rio: array {format_wwn(self.target_wwn)} is not logged in "
                                    f"to the virtual storage for {format_wwn(self.source_wwn)}"))
        if command.cdb[0] == _WRITE16:
            return vs.send_write(lun, command.parsed["lba"], command.data_out, command.attribute,
                                 bool(command.parsed.get("cdb_flags", 0) & 0x08))
        return vs.send_command(lun, command.cdb, command.data_out, command.data_in_length,
                               command.attribute)


class _ControlTarget:
    """A CTRL entry's apply target: pair control sees it before the target array does."""

    __slots__ = ("controls", "header", "bound")

    def __init__(self, controls, header: dict, bound):
        self.controls = controls
        self.header = header
        self.bound = bound

    def execute(self, command: RioCommand):
        return self.controls.at_target(self.header, command, self.bound)


class _BoundTarget:
    """An ApplyTarget for one entry's target LUN."""

    __slots__ = ("target", "lun")

    def __init__(self, target, lun: int):
        self.target = target
        self.lun = lun

    def execute(self, command: RioCommand):
        return self.target.execute(command, self.lun)


def _ids(command: ScsiCommand) -> tuple[int, int, int]:
    return command.initiator_port_id, command.target_port_id, command.ox_id


def _header_of(datagram: bytes) -> dict:
    return LOG_HEADER.parse(datagram, 0, 0, True)


def split_datagrams(blob: bytes) -> list[bytes]:
    """The datagrams of a stored entry (they are stored back to back)."""
    out, at = [], 0
    rio_at = LOG_HEADER.offsets["rio_length"]
    while at < len(blob):
        length = HEADER_SIZE + int.from_bytes(blob[at + rio_at:at + rio_at + 4], "big")
        out.append(blob[at:at + length])
        at += length
    return out


class EdgeDevice:
    """See the module doc. ``transmit(datagram, address)`` sends one UDP datagram."""

    def __init__(self, clock, settings: EdgeSettings, log_store, apply_state,
                 transmit: Callable[[bytes, Address], object],
                 apply_target_for: Callable[[dict], object] | None = None,
                 name: str = "edge", pairs_path: str | None = None):
        self.clock = clock
        self.settings = settings
        self.name = name
        self.log_store = log_store
        self.apply_state = apply_state
        self.transmit = transmit
        self.routes = settings.routes
        self.me = settings.me
        self.pairs = EdgePairs(settings.group_policy, pairs_path)
        for p in settings.pairs:
            self.pairs.add(PairRow(p, "source", PairState.DUPLEX))
        self.pairs.load()
        self.controls = PairControl(self)
        buckets = {c: TokenBucket(clock, rate) for c, rate in settings.bandwidth.items() if rate}
        self.sender = Sender(clock, transmit, window_bytes=settings.window_bytes, rto=settings.rto,
                             rto_max=settings.rto_max, buckets=buckets,
                             batch_bytes=settings.batch_bytes,
                             failure_timeout=settings.failure_timeout,
                             on_failure=lambda group, why: self.controls.group_failed(group, why))
        self.receivers: dict[int, GroupReceiver] = {}
        self.assembler = SegmentAssembler(max_entries=settings.max_segment_entries)
        self.drops = Drops(name)
        self.links: Callable[[], list] = lambda: []
        self.apply_target_for = apply_target_for or self.fabric_target
        self._fabric_targets: dict[tuple[int, int], FabricApplyTarget] = {}
        self._waiting_ctrl: dict[tuple[int, int], Deferred] = {}
        self.ack_latency = LatencyHistogram()
        self.lag = LatencyHistogram()
        self.debug = False                            # the console's debug log-transfer
        self.counters = {"writes": 0, "write_bytes": 0, "controls": 0, "refused": 0, "busy": 0,
                         "wroks": 0, "ctrl_oks": 0, "naks_received": 0, "entries_received": 0,
                         "batches_received": 0, "keepalives": 0, "replayed": 0}

    # -- tables from the management server -----------------------------------------
    def set_tables(self, routes: RouteTable, pairs: list[PairEntry],
                   bandwidth: dict[str, float]) -> None:
        """A snapshot's tables 408 and 411 and the customers' bandwidth. New pairs start in
        Simplex (the arrays create them); the rows of known pairs keep their state."""
        self.routes = routes
        for entry in pairs:
            if entry.key not in self.pairs.rows:
                self.pairs.add(PairRow(entry, "source", PairState.SIMPLEX))
        self.sender.buckets = {c: TokenBucket(self.clock, rate)
                               for c, rate in bandwidth.items() if rate}
        self.pairs.save()

    # -- start-up -----------------------------------------------------------------
    def replay(self, replayed) -> int:
        """Send again what the log storage area still holds (after a restart); a memory-mode
        log held nothing over the restart, so its groups fail (PairControl.log_lost)."""
        if self.pairs.restarted and self.log_store.mode == "memory":
            self.controls.log_lost()
        count = 0
        for group, entries in replayed.entries.items():
            for sequence, blob in entries:
                datagrams = split_datagrams(blob)
                header = _header_of(datagrams[0])
                path = self._next_hop(header, backward=False)
                if path is None:
                    _log.warn("{edge}: replayed group {group} sequence {seq} has no route",
                              edge=self.name, group=group, seq=sequence)
                    continue
                self.sender.submit(group, sequence, datagrams, path, self._customer(group))
                count += 1
        self.counters["replayed"] += count
        return count

    # -- source side: the array's commands --------------------------------------
    def rio_command(self, command: ScsiCommand, partner_wwn: int):
        """What the array sent to a virtual storage; partner_wwn: the real storage behind it."""
        opcode = command.cdb[0] if command.cdb else -1
        if opcode == _TUR:
            return ScsiResult()
        if opcode == _WRITE16:
            row = self.pairs.find(command.initiator_wwn, partner_wwn, command.lun)
            if row is None or row.side != "source":
                return self._refuse(command, partner_wwn, "no pair for this LUN")
            return self.write(row.entry, command.cdb, command.data, command.attribute,
                              _ids(command))
        if opcode == int(fcp.Opcode.RCN_CONTROL):
            return self.controls.from_array(command, partner_wwn)
        return check_condition(SenseKey.ILLEGAL_REQUEST, _INVALID_OPCODE)

    def _refuse(self, command: ScsiCommand, partner_wwn: int, why: str) -> ScsiResult:
        self.counters["refused"] += 1
        _log.warn("{edge}: {cmd} from {array} to {partner} LUN {lun} refused: {why}",
                  edge=self.name, cmd=fcp.Opcode(command.cdb[0]).name
                  if command.cdb[0] in fcp.Opcode._value2member_map_ else hex(command.cdb[0]),
                  array=format_wwn(command.initiator_wwn), partner=format_wwn(partner_wwn),
                  lun=command.lun, why=why)
        return check_condition(SenseKey.ILLEGAL_REQUEST, _LU_NOT_SUPPORTED)

    def _entry(self, entry_type: int, pair: PairEntry, group: int, cdb: bytes, data_out,
               data_in_length: int, attribute: int, ids: tuple[int, int, int], flags: int = 0):
        started = self.clock.seconds()
        sequence = self.log_store.next_sequence(group)
        s_id, d_id, ox_id = ids
        area = command_area(s_id, d_id, ox_id, pair.target_lun, cdb, data_out, data_in_length,
                            attribute)
        datagrams = segment_entry(entry_type, area, self.settings.max_datagram_body,
                                  group_id=group, sequence=sequence,
                                  io_time_ns=int(started * 1e9), target_wwn=pair.target_wwn,
                                  target_lun=pair.target_lun, source_wwn=pair.source_wwn,
                                  source_lun=pair.source_lun, ttl=self.settings.ttl,
                                  flags=flags)
        path = self.routes.next_hop(pair.source_wwn, pair.target_wwn, self.me)
        try:
            durable = self.log_store.append(group, sequence, b"".join(datagrams))
        except LogStoreFull as exc:   # quota overflow is failure Suspend
            self.counters["busy"] += 1
            self.controls.group_failed(group, f"log quota overflow ({exc})")
            row = self.pairs.rows.get(pair.key)
            if row is not None and row.state is not PairState.DUPLEX:
                return None, succeed(state_refusal(row.state))
            return None, succeed(ScsiResult(status=_BUSY))
        return (group, sequence, datagrams, path, started), durable

    def write(self, pair: PairEntry, cdb: bytes, data, attribute: int = fcp.TaskAttribute.SIMPLE,
              ids: tuple[int, int, int] = (0, 0, 0)) -> Deferred:
        """Log a write (WRITE(16) ``cdb``) of ``pair``: Deferred[ScsiResult], GOOD once durable."""
        row = self.pairs.rows.get(pair.key)
        if row is not None and row.state not in REPLICATING:
            self.counters["refused"] += 1
            return succeed(state_refusal(row.state))
        info, durable = self._entry(EntryType.WR, pair, pair.group, cdb, data, 0, attribute, ids)
        if info is None:
            return durable
        self.counters["writes"] += 1
        self.counters["write_bytes"] += len(data)
        return durable.addCallback(self._written, info)

    def _written(self, _, info) -> ScsiResult:
        group, sequence, datagrams, path, started = info
        self.ack_latency.observe(self.clock.seconds() - started)
        self._submit(group, sequence, datagrams, path)
        return ScsiResult()

    def _submit(self, group, sequence, datagrams, path) -> None:
        if path is None:
            self.drops.drop("no_route", self.me, f"group {group} sequence {sequence} retained")
            self.controls.group_failed(group, "no route to the target")
            return
        self.sender.submit(group, sequence, datagrams, path, self._customer(group))

    def control(self, pair: PairEntry, group: int, cdb: bytes, data_out=b"",
                data_in_length: int = 0, attribute: int = fcp.TaskAttribute.SIMPLE,
                ids: tuple[int, int, int] = (0, 0, 0), flags: int = 0) -> Deferred:
        """Relay a command to the target storage in the group's order (CTRL entry);
        Deferred[ScsiResult] with the far side's answer (data-in included)."""
        info, durable = self._entry(EntryType.CTRL, pair, group, cdb, data_out, data_in_length,
                                    attribute, ids, flags)
        if info is None:
            return durable
        self.counters["controls"] += 1
        answer = Deferred()
        self._waiting_ctrl[(group, info[1])] = answer

        def sent(_):
            self._submit(*info[:4])
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

    @staticmethod
    def stored_entry(blob: bytes) -> tuple[dict, bytes]:
        """The header and RIO area of an entry as the log storage area keeps it."""
        datagrams = split_datagrams(blob)
        return _header_of(datagrams[0]), b"".join(d[HEADER_SIZE:] for d in datagrams)

    # -- the log-transfer channel --------------------------------------------------
    def entry_received(self, entry: LogEntry, data: bytes, sender: Address) -> None:
        self.counters["entries_received"] += 1
        entry_type = entry.header["entry_type"]
        if self.debug:
            h = entry.header
            _log.info("{edge}: {type} from {sender}: group {group} sequence {seq}, {n} bytes",
                      edge=self.name, type=EntryType(entry_type).name, sender=sender,
                      group=h["group_id"], seq=h["sequence"], n=len(data))
        if entry_type == EntryType.BATCH:
            self._batch(data, sender)
            return
        self._single(entry.header, entry.payload, data, sender)

    def _batch(self, data: bytes, sender: Address) -> None:
        self.counters["batches_received"] += 1
        try:
            offsets, lengths = batching.unpack(data)
        except DecodeError as exc:
            self.drops.drop("malformed_batch", sender, str(exc))
            return
        for offset, length in zip(offsets.tolist(), lengths.tolist()):
            inner = parse_entry(data, offset, fast=True)
            if not inner.crc_ok:
                self.drops.drop("bad_crc", sender, "inside a batch")
                continue
            self._single(inner.header, inner.payload, data[offset:offset + length], sender)

    def _single(self, header: dict, body: bytes, data: bytes, sender: Address) -> None:
        entry_type = header["entry_type"]
        if entry_type == EntryType.KEEPALIVE:
            try:
                probe = parse_keepalive(body)
            except DecodeError as exc:
                self.drops.drop("malformed", sender, str(exc))
                return
            self.counters["keepalives"] += 1
            self.transmit(build_keepalive(probe["probe_id"], probe["echo_time_ns"]), sender)
            return
        backward = goes_backward(entry_type, header["flags"])
        if not self.routes.on_path(header["source_wwn"], header["target_wwn"], self.me):
            self.drops.drop("no_route", sender, f"{EntryType(entry_type).name} "
                            f"{format_wwn(header['source_wwn'])} -> "
                            f"{format_wwn(header['target_wwn'])} does not pass here")
            return
        onward = self._next_hop(header, backward)
        if onward is not None:
            self.drops.drop("not_an_end", sender, "edges do not relay")
            return
        if entry_type == EntryType.NAK:
            self.counters["naks_received"] += 1
            try:
                ranges = parse_nak_ranges(body)
            except DecodeError as exc:
                self.drops.drop("malformed", sender, str(exc))
                return
            group = header["group_id"]
            if ranges and not self._sent_here(group, max(last for _, last in ranges), "NAK",
                                              sender):
                return
            self.sender.nak(group, ranges)
            return
        if header["segment_count"] > 1:
            try:
                area = self.assembler.add(header, body)
            except DecodeError as exc:
                self.drops.drop("malformed", sender, str(exc))
                return
            if area is None:
                return
        else:
            area = body
        if entry_type == EntryType.CTRL and backward:
            self.controls.failover_request(header, area)
        elif backward:
            self._answer(header, area, sender)
        else:
            if entry_type == EntryType.WR and (header["source_wwn"], header["target_wwn"],
                                                header["target_lun"]) not in self.pairs.rows:
                self._learn_pair(header)
            self.receiver(header["group_id"]).entry(header, area)

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

    def _answer(self, header: dict, area: bytes, sender: Address) -> None:
        group, sequence = header["group_id"], header["sequence"]
        if header["entry_type"] == EntryType.WROK:
            if not self._sent_here(group, sequence, "ACK", sender):
                return
            self.counters["wroks"] += 1
            if header["flags"] & _CUMULATIVE:
                self._acknowledge_through(group, sequence)
            else:
                self.sender.acknowledged(group, sequence)
                self.log_store.delete(group, sequence)
            return
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

    def _acknowledge_through(self, group: int, sequence: int) -> None:
        """A cumulative WROK: every WR of the group up to ``sequence`` is applied (a CTRL
        waits for its own answer). The work is the entries the sender holds up to it."""
        for item in self.sender.acknowledge_through(
                group, sequence, keep=lambda seq: (group, seq) in self._waiting_ctrl):
            self.log_store.delete(group, item.sequence)

    def _next_hop(self, header: dict, backward: bool) -> Address | None:
        return self.routes.next_hop(header["source_wwn"], header["target_wwn"], self.me, backward)

    # -- target side -------------------------------------------------------------
    def _learn_pair(self, header: dict) -> None:
        """A WR for a pair set up before the RCN: the target side's row, in Duplex."""
        self.pairs.add(PairRow(PairEntry(header["source_wwn"], header["source_lun"],
                                         header["target_wwn"], header["target_lun"],
                                         header["group_id"]), "target", PairState.DUPLEX))

    def receiver(self, group: int) -> GroupReceiver:
        receiver = self.receivers.get(group)
        if receiver is None:
            receiver = GroupReceiver(group, self.clock, self.settings.receiver,
                                     self.apply_state.applied(group), self._target_for,
                                     self.apply_state.record, self.send_back, self.lag.observe,
                                     self.apply_state.durable, self.settings.max_datagram_body,
                                     self.controls.target_group_failed)
            self.receivers[group] = receiver
        return receiver

    def _target_for(self, header: dict) -> ApplyTarget | None:
        target = self.apply_target_for(header)
        if target is None:
            return None
        bound = _BoundTarget(target, header["target_lun"])
        if header["entry_type"] == EntryType.CTRL:
            return _ControlTarget(self.controls, header, bound)
        return bound

    def fabric_target(self, header: dict):
        """The apply target over the FCIP link of the entry's target array."""
        key = (header["target_wwn"], header["source_wwn"])
        target = self._fabric_targets.get(key)
        if target is None:
            target = self._fabric_targets[key] = FabricApplyTarget(lambda: self.links(), *key)
        return target

    def send_back(self, header: dict, datagrams: list[bytes]) -> None:
        back = self._next_hop(header, backward=True)
        if back is None:
            self.drops.drop("no_route", self.me, "no way back for an answer")
            return
        for datagram in datagrams:
            self.transmit(datagram, back)

    def stop(self) -> None:
        self.sender.stop()
        self.controls.stop()
        for receiver in self.receivers.values():
            receiver.stop()
        for waiting in list(self._waiting_ctrl.values()):
            waiting.callback(check_condition(SenseKey.ABORTED_COMMAND, (0x00, 0x00)))
        self._waiting_ctrl.clear()

    # -- figures -------------------------------------------------------------------
    def describe_groups(self) -> list[dict]:
        out = []
        groups = set(self.receivers) | {row.entry.group for row in self.pairs}
        for group in sorted(groups):
            info = {"group": group}
            info.update({f"log_{k}": v for k, v in self.log_store.group_stats(group).items()})
            if group in self.receivers:
                info.update(self.receivers[group].describe())
            out.append(info)
        return out
