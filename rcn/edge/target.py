"""The target edge: entries of the groups whose target storage is attached here (DESIGN.md 3.3).

Follow one write's entry (Fig. 19, 20): :class:`~rcn.edge.device.EdgeDevice` hands a
whole WR or CTRL entry (segments joined) to :meth:`TargetSide.entry`, which

* learns the pair from a WR it has no row for (a pair set up before the RCN: the
  target side's row of table 411, in Duplex);
* gives it to the group's :class:`~rcn.edge.receiver.GroupReceiver` (one per order
  guarantee group, made on first use from the group's persisted apply counter): reorder
  -> apply to the target array in sequence order -> apply counter made durable
  (``rcn.edge.applystate``) -> WROK back along the path (【0088】【0089】).

What an entry is applied through: ``apply_target_for(header)`` -- by default the virtual
storage that stands for the source array on the FCIP link of the target array
(:class:`FabricApplyTarget`); the daemon names NBD servers for some LUNs
(``rcn.edge.nbdapply``). A CTRL entry meets pair control first (``at_target``:
``PairControl.at_target``), which creates and moves the target-side rows.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import fail

from datapath.frames import fcp
from datapath.frames.logentry import EntryType, LogHeader
from datapath.frames.names import format_wwn
from rcn.edge.pairs import EdgePairs, PairEntry, PairRow
from rcn.edge.receiver import ApplyTarget, GroupReceiver, ReceiverConfig
from rcn.logxfer.rioarea import RioCommand
from rcn.logxfer.seal import GroupSeal
from rcn.metrics import LatencyHistogram
from rcn.pairstate import PairState
from rcn.rio.errors import NotLoggedIn

_WRITE16 = int(fcp.Opcode.WRITE_16)


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

    __slots__ = ("at_target", "header", "bound")

    def __init__(self, at_target, header: LogHeader, bound):
        self.at_target = at_target
        self.header = header
        self.bound = bound

    def execute(self, command: RioCommand):
        return self.at_target(self.header, command, self.bound)


class _BoundTarget:
    """An ApplyTarget for one entry's target LUN."""

    __slots__ = ("target", "lun")

    def __init__(self, target, lun: int):
        self.target = target
        self.lun = lun

    def execute(self, command: RioCommand):
        return self.target.execute(command, self.lun)


class TargetSide:
    """The target half of an edge (see the module doc).

    ``send_back(header, datagrams)`` sends answers toward the source edge; ``at_target``
    and ``on_unusable`` are pair control's (``PairControl.at_target``,
    ``PairControl.target_group_failed``); ``links()`` lists the FCIP links (the daemon
    sets it once the fabric exists)."""

    def __init__(self, *, clock, config: ReceiverConfig, apply_state, pairs: EdgePairs,
                 send_back: Callable[[LogHeader, list[bytes]], None], lag: LatencyHistogram,
                 max_datagram_body: int, at_target, on_unusable: Callable[[int, int, str], None],
                 apply_target_for: Callable[[LogHeader], object] | None = None,
                 seal: GroupSeal | None = None):
        self.clock = clock
        self.seal = seal
        self.config = config
        self.apply_state = apply_state
        self.pairs = pairs
        self.send_back = send_back
        self.lag = lag
        self.max_datagram_body = max_datagram_body
        self.at_target = at_target
        self.on_unusable = on_unusable
        self.apply_target_for = apply_target_for or self.fabric_target
        self.links: Callable[[], list] = lambda: []
        self.receivers: dict[int, GroupReceiver] = {}
        self._fabric_targets: dict[tuple[int, int], FabricApplyTarget] = {}

    def entry(self, header: LogHeader, area: bytes, sender=None) -> None:
        """A whole WR or CTRL entry for a storage attached here."""
        if header.entry_type == EntryType.WR and (header.source_wwn, header.target_wwn,
                                                  header.target_lun) not in self.pairs.rows:
            self._learn_pair(header)
        self.receiver(header.group_id).entry(header, area)

    def _learn_pair(self, header: LogHeader) -> None:
        """A WR for a pair set up before the RCN: the target side's row, in Duplex."""
        self.pairs.add(PairRow(PairEntry(header.source_wwn, header.source_lun,
                                         header.target_wwn, header.target_lun,
                                         header.group_id), "target", PairState.DUPLEX))

    def receiver(self, group: int) -> GroupReceiver:
        receiver = self.receivers.get(group)
        if receiver is None:
            apply_state = self.apply_state
            receiver = self.receivers[group] = GroupReceiver(
                group, clock=self.clock, config=self.config, applied=apply_state.applied(group),
                target_for=self._target_for, record_applied=apply_state.record,
                send_back=self.send_back, observe_lag=self.lag.observe,
                durable_of=apply_state.durable, max_datagram_body=self.max_datagram_body,
                on_unusable=self.on_unusable, seal=self.seal)
        return receiver

    def _target_for(self, header: LogHeader) -> ApplyTarget | None:
        target = self.apply_target_for(header)
        if target is None:
            return None
        bound = _BoundTarget(target, header.target_lun)
        if header.entry_type == EntryType.CTRL:
            return _ControlTarget(self.at_target, header, bound)
        return bound

    def fabric_target(self, header: LogHeader):
        """The apply target over the FCIP link of the entry's target array."""
        key = (header.target_wwn, header.source_wwn)
        target = self._fabric_targets.get(key)
        if target is None:
            target = self._fabric_targets[key] = FabricApplyTarget(lambda: self.links(), *key)
        return target

    def stop(self) -> None:
        for receiver in self.receivers.values():
            receiver.stop()
