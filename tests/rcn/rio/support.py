"""Shared pieces of the RIO channel tests: configurations, a recording SCSI target and an
in-memory link (an ArrayPort and a FabricPort joined by iosim, with a task.Clock)."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.test import iosim

from datapath.frames import fcip
from rcn.rio.array import ArrayConfig
from rcn.rio.fabric import FabricConfig, VirtualStorageEntry, access_table
from rcn.rio.fcp import ScsiResult, ScsiTarget
from rcn.rio.protocol import FcipClientFactory, FcipProtocol, FcipServerFactory

ARRAY_WWN = 0x500A098000000001          # the customer's source array
ARRAY_NODE = 0x500A098000000000
PARTNER_WWN = 0x500A098000000002        # its partner (a virtual storage on the edge)
FORBIDDEN_WWN = 0x500A0980000000EE      # a virtual storage of another customer
STRANGER_WWN = 0x500A0980000000AA       # an array the access table does not know
VIRTUAL_IDS = {PARTNER_WWN: 0x010200, FORBIDDEN_WWN: 0x010201}
ARRAY_ID = 0x010100


def edge_config(**kw) -> FabricConfig:
    values = dict(
        virtual_storages=[VirtualStorageEntry(wwn=PARTNER_WWN, partner_wwn=PARTNER_WWN,
                                              partner_edge_id="edge-b"),
                          VirtualStorageEntry(wwn=FORBIDDEN_WWN, partner_wwn=FORBIDDEN_WWN,
                                              partner_edge_id="edge-c")],
        access=access_table([(PARTNER_WWN, ARRAY_WWN)]))
    values.update(kw)
    return FabricConfig(**values)


def array_config(**kw) -> ArrayConfig:
    values = dict(port_wwn=ARRAY_WWN, node_wwn=ARRAY_NODE)
    values.update(kw)
    return ArrayConfig(**values)


class RecordingTarget(ScsiTarget):
    """Records every command; answers GOOD at once, or (``manual``) with a Deferred the test
    fires; ``result`` may be a ScsiResult or a function of the command."""

    def __init__(self, manual: bool = False, result=None):
        self.manual = manual
        self.result = result
        self.commands = []
        self.pending: list[tuple[object, Deferred]] = []

    def execute(self, command):
        self.commands.append(command)
        if self.manual:
            d = Deferred()
            self.pending.append((command, d))
            return d
        if callable(self.result):
            return self.result(command)
        return self.result if self.result is not None else ScsiResult()


class Link:
    """An ArrayPort (client) and a FabricPort (server) joined in memory.

    ``frames`` records every FCIP frame written, as ``(sender, FcFrame)`` with
    sender ``"array"`` or ``"edge"``.
    """

    def __init__(self, edge=None, array=None, clock=None, greet: bool = True):
        self.clock = clock or task.Clock()
        self.frames: list[tuple[str, object]] = []
        self.raw: list[tuple[str, bytes]] = []
        self.server_factory = FcipServerFactory(self.clock, edge or edge_config(),
                                                frame_tap=self._tap)
        self.client_factory = FcipClientFactory(self.clock, array or array_config(),
                                                frame_tap=self._tap)
        self.array_protocol, self.edge_protocol, self.pump = iosim.connectedServerAndClient(
            lambda: self.server_factory.buildProtocol(None),
            lambda: self.client_factory.buildProtocol(None), greet=greet)
        self.array = self.array_protocol.endpoint
        self.edge = self.edge_protocol.endpoint

    def _tap(self, protocol: FcipProtocol, frame: bytes) -> None:
        sender = "array" if protocol.factory is self.client_factory else "edge"
        self.raw.append((sender, frame))
        self.frames.append((sender, fcip.parse_fcip_frame(frame).fc))

    def flush(self) -> None:
        self.pump.flush()

    def sent(self, sender: str, r_ctl: int | None = None) -> list:
        return [f for who, f in self.frames if who == sender
                and (r_ctl is None or f.header["r_ctl"] == r_ctl)]

    def virtual(self, wwn: int = PARTNER_WWN):
        return self.edge.virtual_storage(wwn)
