"""An edge device (DESIGN.md 2): its two doors, and the parts that follow a write.

:class:`EdgeDevice` is the composition root and the dispatcher; the work is in

* :class:`~rcn.edge.source.SourceSide` (``rcn/edge/source.py``): a write from an
  attached array -> sequence -> RIO area -> entry -> durable append -> GOOD -> the
  :class:`~rcn.logxfer.sender.Sender`; and the acknowledgements that come back;
* :class:`~rcn.edge.target.TargetSide` (``rcn/edge/target.py``): entries for storages
  attached here -> one :class:`~rcn.edge.receiver.GroupReceiver` per order guarantee
  group (reorder -> apply -> apply counter -> WROK);
* :class:`~rcn.edge.control.PairControl` (``rcn/edge/control.py``): pair states as
  control RIOs pass, failure Suspend, failover.

The two doors:

* the **RIO channel** (DESIGN.md 3.1): every virtual storage's SCSI target is a
  :class:`SourceTarget`, which calls :meth:`EdgeDevice.rio_command`: TEST UNIT READY is
  GOOD, WRITE(16) of a source-side pair is a write, RCN CONTROL is pair control's, any
  other command ILLEGAL REQUEST;
* the **log-transfer channel** (DESIGN.md 3.3): ``LogTransferProtocol`` hands every good
  entry to :meth:`EdgeDevice.entry_received`. A BATCH is unpacked; a KEEPALIVE probe is
  echoed; any other entry must end here (on its route, no hop further in its direction:
  ``routes.goes_backward``), then one table, :attr:`EdgeDevice.handlers`, names who takes
  it by (entry type, direction) -- WR and CTRL forward: the target side; WROK, CTRL_OK,
  NAK backward: the source side; CTRL backward (flag REVERSE): pair control's failover.
  Segments of every type are joined first (``rcn.logxfer.reassembly``; a target edge
  never splits a NAK, but a split one is joined too; of two sealings of one entry, only
  segments that open together make it); then the body is opened under the group key
  (``rcn.logxfer.seal.GroupSeal``: only the two edges of a group hold it), and one that
  does not open is a counted drop (``e2e_*``); nor may it name a pair of another group
  (``wrong_group``: a key must not reach another group's volumes).

The reactor (clock) is injected, so the whole device runs inside one simulated network in
tests. Building it touches no file: :meth:`EdgeDevice.open` reads the pair file (the
daemon calls it in ``startService``, under twistd's ``--umask`` and ``--uid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import (HEADER_SIZE, EntryType, LogEntry,
                                      LogHeader, build_keepalive, parse_entry, parse_keepalive)
from datapath.frames.names import format_wwn
from datapath.kernels import batching
from rcn.edge.control import PairControl
from rcn.edge.pairs import EdgePairs, PairEntry, PairRow
from rcn.edge.receiver import ReceiverConfig
from rcn.edge.source import SourceSide
from rcn.edge.target import TargetSide
from rcn.logxfer.protocol import Drops
from rcn.logxfer.reassembly import SegmentAssembler
from rcn.logxfer.routes import Address, Hops, RouteTable, goes_backward
from rcn.logxfer.seal import GroupSeal, SealRefused
from rcn.logxfer.sender import Sender, TokenBucket
from rcn.metrics import LatencyHistogram
from rcn.pairstate import PairState
from rcn.rio.fcp import (LU_NOT_SUPPORTED, ScsiCommand, ScsiResult, ScsiTarget, SenseKey,
                         check_condition, command_name)

_log = Logger()
_WRITE16 = int(fcp.Opcode.WRITE_16)
_CONTROL = int(fcp.Opcode.RCN_CONTROL)
_TUR = 0x00
_INVALID_OPCODE = (0x20, 0x00)
FORWARD, BACKWARD = False, True      # an entry's direction: routes.goes_backward


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


def _ids(command: ScsiCommand) -> tuple[int, int, int]:
    return command.initiator_port_id, command.target_port_id, command.ox_id


class EdgeDevice:
    """See the module doc. ``transmit(datagram, address)`` sends one UDP datagram;
    ``apply_target_for(header)``: what the target side applies an entry through (default:
    the FCIP link of its target array); ``pairs_path``: the pair file (read by :meth:`open`).
    """

    def __init__(self, clock, settings: EdgeSettings, log_store, apply_state,
                 transmit: Callable[[bytes, Address], object],
                 apply_target_for: Callable[[LogHeader], object] | None = None,
                 name: str = "edge", pairs_path: str | None = None,
                 seal: GroupSeal | None = None):
        self.clock = clock
        self.settings = settings
        #: the end-to-end seal (group keys); unsealed when not given (unit tests)
        self.seal = seal if seal is not None else GroupSeal(sealed=False)
        self.name = name
        self.log_store = log_store
        self.apply_state = apply_state
        self.transmit = transmit
        self.hops = Hops(settings.me, settings.routes)
        self.pairs = EdgePairs(settings.group_policy, pairs_path)
        for p in settings.pairs:
            self.pairs.add(PairRow(p, "source", PairState.DUPLEX))
        self.drops = Drops(name)
        self.ack_latency = LatencyHistogram()
        self.lag = LatencyHistogram()
        self.debug = False                            # the console's debug log-transfer
        self.counters = {"writes": 0, "write_bytes": 0, "controls": 0, "refused": 0, "busy": 0,
                         "wroks": 0, "ctrl_oks": 0, "naks_received": 0, "entries_received": 0,
                         "batches_received": 0, "keepalives": 0, "replayed": 0}
        # the parts call pair control back (failure Suspend, CTRL entries at the target),
        # and pair control needs them: it is built last, and they reach it through these
        def group_failed(group: int, why: str) -> None:
            self.controls.group_failed(group, why)
        buckets = {c: TokenBucket(clock, rate) for c, rate in settings.bandwidth.items() if rate}
        self.sender = Sender(clock, transmit, window_bytes=settings.window_bytes, rto=settings.rto,
                             rto_max=settings.rto_max, buckets=buckets,
                             batch_bytes=settings.batch_bytes,
                             failure_timeout=settings.failure_timeout, on_failure=group_failed)
        self.source_side = SourceSide(
            clock=clock, log_store=log_store, pairs=self.pairs, hops=self.hops,
            sender=self.sender, counters=self.counters, drops=self.drops,
            ack_latency=self.ack_latency, on_failure=group_failed,
            max_datagram_body=settings.max_datagram_body, ttl=settings.ttl, name=name,
            seal=self.seal)
        self.target_side = TargetSide(
            clock=clock, config=settings.receiver, apply_state=apply_state, pairs=self.pairs,
            send_back=self.send_back, lag=self.lag, max_datagram_body=settings.max_datagram_body,
            at_target=lambda *args: self.controls.at_target(*args),
            on_unusable=lambda *args: self.controls.target_group_failed(*args),
            apply_target_for=apply_target_for, seal=self.seal)
        self.controls = PairControl(
            name=name, clock=clock, settings=settings, pairs=self.pairs, hops=self.hops,
            log_store=log_store, sender=self.sender, source=self.source_side,
            target=self.target_side, send_back=self.send_back)
        # a group key epoch retired while the log retains entries under it stays held
        # (opens the log only) until the last of them goes; entries the sender holds are
        # re-sealed when a group's send epoch moves (rcn.edge.source, "Key rotation")
        if isinstance(getattr(log_store, "epochs", None), dict):
            self.seal.track(log_store.epochs)
            log_store.on_unused = self.seal.release
        self.assembler = SegmentAssembler(max_entries=settings.max_segment_entries)
        #: who takes an entry that ends here (its segments joined, its body opened):
        #: (entry type, direction) -> handler; every type that can arrive alone is here
        self.handlers = {
            (EntryType.WR, FORWARD): self.target_side.entry,
            (EntryType.CTRL, FORWARD): self.target_side.entry,
            (EntryType.WROK, BACKWARD): self.source_side.wrok,
            (EntryType.CTRL_OK, BACKWARD): self.source_side.ctrl_ok,
            (EntryType.NAK, BACKWARD): self.source_side.nak,
            (EntryType.CTRL, BACKWARD): self.controls.failover_request,
        }

    @property
    def routes(self) -> RouteTable:
        """The route table (408) in force."""
        return self.hops.table

    @routes.setter
    def routes(self, table: RouteTable) -> None:
        self.hops.table = table

    # -- start-up and tables from the management server --------------------------------
    def open(self) -> None:
        """Read the pair file (rows, states, 727, pending marks): at start-up, before a
        snapshot's tables or a replay touch the pairs."""
        self.pairs.load()

    def replay(self, replayed) -> int:
        """Send again what the log storage area still holds (``LogStore.open``'s, after a
        restart); how many. A memory-mode log held nothing over the restart, so its groups
        fail (``PairControl.log_lost``)."""
        if self.pairs.restarted and self.log_store.mode == "memory":
            self.controls.log_lost()
        # the log is read back: a held epoch none of its entries uses any more goes
        self.seal.release_unused()
        return self.source_side.replay(replayed)

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

    # -- the RIO channel: the array's commands to a virtual storage --------------------
    def rio_command(self, command: ScsiCommand, partner_wwn: int):
        """What the array sent to a virtual storage; partner_wwn: the real storage behind it."""
        opcode = command.cdb[0] if command.cdb else -1
        if opcode == _TUR:
            return ScsiResult()
        if opcode == _WRITE16:
            row = self.pairs.find(command.initiator_wwn, partner_wwn, command.lun)
            if row is None or row.side != "source":
                return self._refuse(command, partner_wwn, "no pair for this LUN")
            return self.source_side.write(row.entry, command.cdb, command.data,
                                          command.attribute, _ids(command))
        if opcode == _CONTROL:
            return self.controls.from_array(command, partner_wwn)
        return check_condition(SenseKey.ILLEGAL_REQUEST, _INVALID_OPCODE)

    def _refuse(self, command: ScsiCommand, partner_wwn: int, why: str) -> ScsiResult:
        self.counters["refused"] += 1
        _log.warn("{edge}: {cmd} from {array} to {partner} LUN {lun} refused: {why}",
                  edge=self.name, cmd=command_name(command.cdb),
                  array=format_wwn(command.initiator_wwn), partner=format_wwn(partner_wwn),
                  lun=command.lun, why=why)
        return check_condition(SenseKey.ILLEGAL_REQUEST, LU_NOT_SUPPORTED)

    # -- the log-transfer channel --------------------------------------------------------
    def entry_received(self, entry: LogEntry, data: bytes, sender: Address) -> None:
        self.counters["entries_received"] += 1
        header = entry.header
        if self.debug:
            _log.info("{edge}: {type} from {sender}: group {group} sequence {seq}, {n} bytes",
                      edge=self.name, type=EntryType(header.entry_type).name, sender=sender,
                      group=header.group_id, seq=header.sequence, n=len(data))
        if header.entry_type == EntryType.BATCH:
            self._batch(data, sender)
            return
        self._single(header, entry.payload, sender)

    def _batch(self, data: bytes, sender: Address) -> None:
        self.counters["batches_received"] += 1
        try:
            offsets, lengths = batching.unpack(data)
        except DecodeError as exc:
            self.drops.drop("malformed_batch", sender, str(exc))
            return
        for offset in offsets.tolist():
            inner = parse_entry(data, offset, fast=True)
            if not inner.crc_ok:
                self.drops.drop("bad_crc", sender, "inside a batch")
                continue
            self._single(inner.header, inner.payload, sender)

    def _single(self, header: LogHeader, body: bytes, sender: Address) -> None:
        entry_type = header.entry_type
        if entry_type == EntryType.KEEPALIVE:
            self._echo(body, sender)
            return
        backward = goes_backward(entry_type, header.flags)
        if not self.hops.passes(header.source_wwn, header.target_wwn):
            self.drops.drop("no_route", sender, f"{EntryType(entry_type).name} "
                            f"{format_wwn(header.source_wwn)} -> "
                            f"{format_wwn(header.target_wwn)} does not pass here")
            return
        if self.hops.next(header.source_wwn, header.target_wwn, backward) is not None:
            self.drops.drop("not_an_end", sender, "edges do not relay")
            return
        handler = self.handlers[(entry_type, backward)]
        # every type that ends here is sealable: only an edge of the group holds its key,
        # so what a core or a stranger made, or altered on the way, ends here
        opener = partial(self.seal.open, header)
        try:
            if header.segment_count > 1:
                # the opener picks, of two sealings of one entry, segments that go together
                area = self.assembler.add(header, body, opener=opener)
                if area is None:
                    return
            else:
                area = opener(body)
        except DecodeError as exc:
            self.drops.drop("malformed", sender, str(exc))
            return
        except SealRefused as exc:
            self.drops.drop(exc.reason, sender, f"{EntryType(entry_type).name} group "
                            f"{header.group_id} sequence {header.sequence}: {exc}")
            return
        if not self._group_owns(header):
            # a group's key opens entries for that group's pairs only
            self.drops.drop("wrong_group", sender, f"{EntryType(entry_type).name} group "
                            f"{header.group_id} for {format_wwn(header.source_wwn)} -> "
                            f"{format_wwn(header.target_wwn)} LUN {header.target_lun}, "
                            f"a pair of another group")
            return
        handler(header, area, sender)

    def _group_owns(self, header: LogHeader) -> bool:
        """Whether the pair an entry names is of its group: its row's group, or (a pair not
        known here yet, or one turned round) a group whose pairs run between the same two
        arrays, or none."""
        row = self.pairs.find(header.source_wwn, header.target_wwn, header.target_lun)
        if row is not None:
            return row.entry.group == header.group_id
        arrays = self.pairs.group_sources(header.group_id)
        ends = (header.source_wwn, header.target_wwn)
        return not arrays or ends in arrays or ends[::-1] in arrays     # or turned round

    def _echo(self, body: bytes, sender: Address) -> None:
        """A keepalive probe: echoed at once to whoever sent it."""
        try:
            probe = parse_keepalive(body)
        except DecodeError as exc:
            self.drops.drop("malformed", sender, str(exc))
            return
        self.counters["keepalives"] += 1
        self.transmit(build_keepalive(probe["probe_id"], probe["echo_time_ns"]), sender)

    def send_back(self, header: LogHeader, datagrams: list[bytes]) -> None:
        """Send answers for ``header``'s (source, target) toward the source edge."""
        back = self.hops.next(header.source_wwn, header.target_wwn, BACKWARD)
        if back is None:
            self.drops.drop("no_route", self.hops.me, "no way back for an answer")
            return
        for datagram in datagrams:
            self.transmit(datagram, back)

    def stop(self) -> None:
        self.sender.stop()
        self.controls.stop()
        self.target_side.stop()
        self.source_side.stop()

    # -- figures -------------------------------------------------------------------
    def describe_groups(self) -> list[dict]:
        receivers = self.target_side.receivers
        out = []
        for group in sorted(set(receivers) | {row.entry.group for row in self.pairs}):
            info = {"group": group}
            info.update({f"log_{k}": v for k, v in self.log_store.group_stats(group).items()})
            if group in receivers:
                info.update(receivers[group].describe())
            out.append(info)
        return out
