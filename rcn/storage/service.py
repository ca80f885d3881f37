"""The storage array emulator as a Twisted service.

:class:`StorageArray` holds the parts (volumes, pair table, the remote copy
program, NBD exports, RIO target, the link to the edge) as plain objects; :func:`make_service`
puts them behind sockets: the NBD host interface, the control API (with
Prometheus ``/metrics``, from :attr:`StorageArray.metrics`) and, when the
configuration names an edge, a RIO connection that reconnects with backoff. The data
directory and volume files are created and opened in ``startService``
(:class:`rcn.tap.OpenAtStart`), under twistd's ``--umask`` and ``--uid``.
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
from rcn.metrics import MetricsRegistry, MetricsResource
from rcn.nbd.export import ExportTable
from rcn.nbd.server import NbdServerFactory
from rcn.rio.array import ArrayConfig, ArrayPort
from rcn.rio.errors import RioError
from rcn.rio.protocol import FcipClientFactory, FcipProtocol
from rcn.pairstate import PairState
from rcn.console.service import serve_console
from rcn.storage.console import array_console
from rcn.storage.array import ArrayTarget, ReplicatedExport
from rcn.storage.config import StorageConfig
from rcn.storage.control import ControlResource
from rcn.storage.pairs import PairTable
from rcn.storage.pairstore import PairStore
from rcn.storage.remotecopy import RemoteCopy
from rcn.storage.volume import Volume
from rcn.tap import OpenAtStart
from rcn.web import BoundedSite

_log = Logger()


class EdgeUnavailable(RioError):
    """There is no RIO link to the edge right now."""


class PartnerLoggingPort(ArrayPort):
    """An ArrayPort that logs in to every partner as soon as the link is up.

    So the edge can send RIOs to the array (the target side) before this array
    has written anything, and a first host write does not wait for logins.
    ``partners()`` is asked at each link-up: pairs made at run time count too.
    """

    def __init__(self, clock, config: ArrayConfig, partners, restored=lambda: None):
        super().__init__(clock, config)
        self.partners = partners
        self.restored = restored

    def link_up(self, link) -> None:
        super().link_up(link)
        for wwn in sorted(self.partners()):
            self.session(wwn).addErrback(self._session_failed, wwn)
        self.restored()

    def _session_failed(self, failure, wwn: int) -> None:
        _log.warn("rio: login to partner {wwn} failed: {why}", wwn=format_wwn(wwn),
                  why=failure.getErrorMessage())


class ArrayLinkFactory(FcipClientFactory):
    """``connections`` counts the FCIP connections made (each gets a new port and link,
    whose counters start from 0)."""

    def __init__(self, clock, config: ArrayConfig, partners, restored=lambda: None):
        super().__init__(clock, config)
        self.partners = partners            # () -> set of WWNs
        self.restored = restored            # called at every link-up
        self.connections = 0

    def buildProtocol(self, addr):
        self.connections += 1
        self.port = PartnerLoggingPort(self.clock, self.config, self.partners, self.restored)
        protocol = FcipProtocol(self.port, self.frame_tap)
        protocol.factory = self
        return protocol


class StorageArray:
    """One emulated array; ``clock`` is the reactor (``callLater``).

    Building it touches no file: :meth:`open` creates the data directory, opens (or
    creates) the volume files and loads the pair rows and bitmaps (``PairStore``),
    :meth:`close` closes them."""

    def __init__(self, config: StorageConfig, clock):
        self.config = config
        self.clock = clock
        self.volumes = {v.lun: Volume(os.path.join(config.data_dir, f"{v.name}.img"), v.lun,
                                      v.capacity, open_now=False) for v in config.volumes}
        self.names = {v.lun: v.name for v in config.volumes}
        self.pairs = PairTable.from_config(
            config.pairs, {lun: v.capacity for lun, v in self.volumes.items()}, config.track_size)
        self.pair_store = PairStore(config.data_dir)      # rows and bitmaps survive a restart
        self.remote_copy = RemoteCopy(clock, self.session_for, self.volumes, self.pairs,
                                      track_size=config.track_size,
                                      auto_resync=config.edge.auto_resync if config.edge
                                      else False, store=self.pair_store)
        # every volume may join a pair at run time, so every export asks the remote copy
        self.exports = ExportTable(
            ReplicatedExport(self.volumes[lun], self.names[lun], self.remote_copy,
                             f"LUN {lun} of {format_wwn(config.wwpn)}")
            for lun in sorted(self.volumes))
        self.target = ArrayTarget(self.volumes, self.remote_copy)
        self.rio = ArrayLinkFactory(clock, ArrayConfig(
            port_wwn=config.wwpn, node_wwn=config.wwnn, target=self.target,
            exchange_timeout=config.edge.timeout if config.edge else 30.0), self.partners,
            self.remote_copy.link_restored)
        self.nbd = NbdServerFactory(self.exports, clock)
        self.metrics = self._build_metrics()

    def partners(self) -> set[int]:
        """WWNs to log in to at link-up: ``[edge] partners``, the pairs', commands'."""
        extra = set(self.config.edge.partners) if self.config.edge is not None else set()
        return extra | self.remote_copy.partners()

    def session_for(self, partner_wwn: int):
        """Deferred[RioSession] to the partner through the current link (fails without one);
        a partner not logged in to yet is logged in to now."""
        port = self.rio.port
        if port is None or port.link is None:
            return fail(EdgeUnavailable("rio: no link to the edge"))
        return port.session(partner_wwn)

    # -- what /metrics shows (read at scrape time) ------------------------
    def _build_metrics(self) -> MetricsRegistry:
        m = MetricsRegistry()
        m.counters("nbd", lambda: self.nbd.counters, "NBD host interface",
                   gauges=("connections_active",))
        m.counters("replication", lambda: vars(self.remote_copy.counters),
                   "remote copy of host writes (RIO WRs to the partner)")
        m.counters("pair_control", lambda: self.remote_copy.control,
                   "RCN CONTROL RIOs: sent (good, refused, unreachable) and received (refused)")
        m.counters("rio_target", lambda: {"applied": self.target.applied,
                                          "refused": self.target.refused,
                                          "controls": self.target.controls},
                   "RIOs from the edge: WRs applied to this array's volumes, RIOs refused, "
                   "RCN CONTROLs")
        m.gauge("rio_link_up", self._link_up, "the FCIP link to the edge: 1 up, 0 down")
        m.counters("rio_link", lambda: {"connections": self.rio.connections},
                   "FCIP connections to the edge made")
        m.counters("rio_port", self._port_counters,
                   "the array's FC port on the current FCIP link (exchanges, FCP, ELS)")
        m.counters("fcip", self._fcip_counters, "the current FCIP link (frames, bytes, errors)")
        self._pair_metrics(m)
        return m

    def _pair_metrics(self, m: MetricsRegistry) -> None:
        """Per pair, labelled lun, role, partner (the partner's WWN)."""
        labels = ("lun", "role", "partner")

        def per_pair(value):
            return lambda: [((str(p.lun), p.role, format_wwn(p.partner_wwpn)), value(p))
                            for p in self.pairs]
        m.labelled("pair_state", "gauge",
                   "1 for the pair's current state, 0 for the others (label state)",
                   labels + ("state",),
                   lambda: [((str(p.lun), p.role, format_wwn(p.partner_wwpn), s.value),
                             int(p.state is s)) for p in self.pairs for s in PairState])
        m.labelled("pair_dirty_tracks", "gauge",
                   "tracks marked in the pair's differential bitmap (1211 source, 1213 target)",
                   labels, per_pair(lambda p: p.bitmap.popcount()))
        m.labelled("pair_link_lost", "gauge",
                   "1 while the pair is in failure Suspend because its RIOs got no answer "
                   "(it resyncs by itself at link-up with auto_resync)", labels,
                   per_pair(lambda p: int(p.link_lost)))
        m.labelled("pair_copy_bytes_to_copy", "gauge",
                   "bytes the current (or last) initial copy or resync copies", labels,
                   per_pair(lambda p: p.copy.bytes_total if p.copy else 0))
        m.labelled("pair_copy_tracks", "gauge",
                   "bitmap tracks the current (or last) copy set out to copy", labels,
                   per_pair(lambda p: p.copy.tracks if p.copy else 0))
        m.labelled("pair_copy_bytes_copied", "gauge",
                   "bytes of the current (or last) copy acknowledged by the partner", labels,
                   per_pair(lambda p: p.copy.bytes_copied if p.copy else 0))
        m.labelled("pair_copied_bytes", "counter",
                   "bytes copied by initial copies and resyncs (all runs)", labels,
                   per_pair(lambda p: p.bytes_copied_total))
        m.labelled("pair_copies_completed", "counter",
                   "initial copies and resyncs that ended in duplex", labels,
                   per_pair(lambda p: p.copies_completed))

    def _link_up(self) -> int:
        port = self.rio.port
        return int(port is not None and port.link is not None)

    def _fcip_counters(self) -> dict:
        port = self.rio.port
        return {} if port is None or port.link is None else port.link.counters

    def _port_counters(self) -> dict:
        """The port's own counters, without the link's (``port.counters`` includes them)."""
        port = self.rio.port
        if port is None:
            return {}
        out = port.counters
        for key in self._fcip_counters():
            out.pop(key, None)
        return out

    # -- what the control API shows -------------------------------------
    def describe_status(self) -> dict:
        port = self.rio.port
        return {"wwpn": format_wwn(self.config.wwpn), "wwnn": format_wwn(self.config.wwnn),
                "edge": None if self.config.edge is None else self.config.edge.connect,
                "edge_link": "up" if port is not None and port.link is not None else "down",
                "n_port_id": None if port is None else port.port_id,
                "nbd": dict(self.nbd.counters),
                "replication": vars(self.remote_copy.counters),
                "pair_control": dict(self.remote_copy.control),
                "rio_target": {"applied": self.target.applied, "refused": self.target.refused,
                               "controls": self.target.controls}}

    def describe_volumes(self) -> list[dict]:
        return [{"lun": lun, "name": self.names[lun], "capacity": v.capacity, "path": v.path,
                 "block_size": v.block_size} for lun, v in sorted(self.volumes.items())]

    def describe_pairs(self) -> list[dict]:
        return self.remote_copy.describe_pairs()

    def open(self) -> None:
        os.makedirs(self.config.data_dir, exist_ok=True)
        try:
            for volume in self.volumes.values():
                volume.open()
            self.pair_store.load(self.pairs, self.volumes)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.remote_copy.stop()
        for volume in self.volumes.values():
            volume.close()


def control_site(array: StorageArray) -> Site:
    """The control API (JSON) with ``/metrics`` (Prometheus), as served on the control port."""
    return BoundedSite(ControlResource(array, MetricsResource(array.metrics)))


def make_service(config: StorageConfig, reactor) -> tuple[service.MultiService, StorageArray]:
    array = StorageArray(config, reactor)
    top = service.MultiService()
    OpenAtStart(f"rcn-storage {format_wwn(config.wwpn)}", array.open, array.close
                ).setServiceParent(top)
    # the addresses are endpoint strings (rcn.config)
    for description, factory in ((config.nbd, array.nbd), (config.control, control_site(array))):
        internet.StreamServerEndpointService(endpoints.serverFromString(reactor, description),
                                             factory).setServiceParent(top)
    if config.console is not None:
        serve_console(array_console(array), format_wwn(config.wwpn),
                      f"RCN storage emulator {format_wwn(config.wwpn)}", config.console,
                      reactor).setServiceParent(top)
    if config.edge is not None:
        edge = endpoints.clientFromString(reactor, config.edge.connect)
        internet.ClientService(edge, array.rio, clock=reactor).setServiceParent(top)
    _log.info("rcn-storage {wwn}: {n} volumes, {p} pairs, NBD on {nbd}, control on {ctl}, edge {edge}",
              wwn=format_wwn(config.wwpn), n=len(config.volumes), p=len(config.pairs),
              nbd=config.nbd, ctl=config.control,
              edge=config.edge.connect if config.edge else "none")
    return top, array
