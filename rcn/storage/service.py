"""The storage array emulator as a Twisted service.

:class:`StorageArray` holds the parts (volumes, pair table, replicator, NBD
exports, RIO target, the link to the edge) as plain objects; :func:`make_service`
puts them behind sockets: the NBD host interface, the control API and, when the
configuration names an edge, a RIO connection that reconnects with backoff.
The reactor is passed in; nothing here imports the global one.
"""

from __future__ import annotations

import os

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.defer import fail
from twisted.logger import Logger
from twisted.web.server import Site

from datapath.frames.names import format_wwn
from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.server import NbdServerFactory
from rcn.rio.array import ArrayConfig, ArrayPort
from rcn.rio.errors import RioError
from rcn.rio.protocol import FcipClientFactory, FcipProtocol
from rcn.storage.array import ArrayTarget, ReplicatedExport, Replicator
from rcn.storage.config import StorageConfig
from rcn.storage.control import ControlResource
from rcn.storage.pairs import PairTable
from rcn.storage.volume import Volume

_log = Logger()


class EdgeUnavailable(RioError):
    """There is no RIO link to the edge right now."""


class PartnerLoggingPort(ArrayPort):
    """An ArrayPort that logs in to every partner as soon as the link is up.

    So the edge can send RIOs to the array (the target side) before this array
    has written anything, and a first host write does not wait for logins.
    """

    def __init__(self, clock, config: ArrayConfig, partners: set[int]):
        super().__init__(clock, config)
        self.partners = partners

    def link_up(self, link) -> None:
        super().link_up(link)
        for wwn in sorted(self.partners):
            self.session(wwn).addErrback(self._session_failed, wwn)

    def _session_failed(self, failure, wwn: int) -> None:
        _log.warn("rio: login to partner {wwn} failed: {why}", wwn=format_wwn(wwn),
                  why=failure.getErrorMessage())


class ArrayLinkFactory(FcipClientFactory):
    def __init__(self, clock, config: ArrayConfig, partners: set[int]):
        super().__init__(clock, config)
        self.partners = partners

    def buildProtocol(self, addr):
        self.port = PartnerLoggingPort(self.clock, self.config, self.partners)
        protocol = FcipProtocol(self.port, self.frame_tap)
        protocol.factory = self
        return protocol


class StorageArray:
    """One emulated array; ``clock`` is the reactor (``callLater``)."""

    def __init__(self, config: StorageConfig, clock):
        self.config = config
        self.clock = clock
        os.makedirs(config.data_dir, exist_ok=True)
        self.volumes = {v.lun: Volume(os.path.join(config.data_dir, f"{v.name}.img"), v.lun,
                                      v.capacity) for v in config.volumes}
        self.names = {v.lun: v.name for v in config.volumes}
        self.pairs = PairTable.from_config(config.pairs)
        self.replicator = Replicator(self.session_for, self.volumes, self.pairs)
        self.exports = ExportTable(
            ReplicatedExport(self.volumes[lun], self.names[lun], self.replicator,
                             f"LUN {lun} of {format_wwn(config.wwpn)}")
            if self.pairs.for_lun(lun) else
            VolumeExport(self.volumes[lun], self.names[lun], f"LUN {lun} of {format_wwn(config.wwpn)}")
            for lun in sorted(self.volumes))
        self.target = ArrayTarget(self.volumes)
        self.rio = ArrayLinkFactory(clock, ArrayConfig(
            port_wwn=config.wwpn, node_wwn=config.wwnn, target=self.target,
            exchange_timeout=config.edge.timeout if config.edge else 30.0), self.pairs.partners())
        self.nbd = NbdServerFactory(self.exports, clock)

    def session_for(self, partner_wwn: int):
        """Deferred[RioSession] to the partner through the current link (fails without one)."""
        port = self.rio.port
        if port is None or port.link is None:
            return fail(EdgeUnavailable("rio: no link to the edge"))
        return port.session(partner_wwn)

    # -- what the control API shows -------------------------------------
    def describe_status(self) -> dict:
        port = self.rio.port
        return {"wwpn": format_wwn(self.config.wwpn), "wwnn": format_wwn(self.config.wwnn),
                "edge": None if self.config.edge is None else
                f"{self.config.edge.host}:{self.config.edge.port}",
                "edge_link": "up" if port is not None and port.link is not None else "down",
                "n_port_id": None if port is None else port.port_id,
                "nbd": dict(self.nbd.counters),
                "replication": vars(self.replicator.counters),
                "rio_target": {"applied": self.target.applied, "refused": self.target.refused}}

    def describe_volumes(self) -> list[dict]:
        return [{"lun": lun, "name": self.names[lun], "capacity": v.capacity, "path": v.path,
                 "block_size": v.block_size} for lun, v in sorted(self.volumes.items())]

    def describe_pairs(self) -> list[dict]:
        out = []
        for pair in self.pairs:
            info = pair.as_dict()
            info["dirty_tracks"] = self.replicator.links[pair.lun].bitmap.popcount()
            out.append(info)
        return out

    def close(self) -> None:
        for volume in self.volumes.values():
            volume.close()


class _Closing(service.Service):
    def __init__(self, array: StorageArray):
        self.array = array

    def stopService(self):
        self.array.close()
        return super().stopService()


def make_service(config: StorageConfig, reactor) -> tuple[service.MultiService, StorageArray]:
    array = StorageArray(config, reactor)
    top = service.MultiService()
    _Closing(array).setServiceParent(top)
    nbd = endpoints.TCP4ServerEndpoint(reactor, config.nbd.port, interface=config.nbd.host)
    internet.StreamServerEndpointService(nbd, array.nbd).setServiceParent(top)
    control = endpoints.TCP4ServerEndpoint(reactor, config.control.port,
                                           interface=config.control.host)
    internet.StreamServerEndpointService(control, Site(ControlResource(array))).setServiceParent(top)
    if config.edge is not None:
        edge = endpoints.TCP4ClientEndpoint(reactor, config.edge.host, config.edge.port)
        internet.ClientService(edge, array.rio, clock=reactor).setServiceParent(top)
    _log.info("rcn-storage {wwn}: {n} volumes, {p} pairs, NBD on {nbd}, control on {ctl}, edge {edge}",
              wwn=format_wwn(config.wwpn), n=len(config.volumes), p=len(config.pairs),
              nbd=f"{config.nbd.host}:{config.nbd.port}",
              ctl=f"{config.control.host}:{config.control.port}",
              edge=f"{config.edge.host}:{config.edge.port}" if config.edge else "none")
    return top, array
