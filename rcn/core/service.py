"""The core device as a Twisted service.

:func:`make_service` builds the relay (:class:`~rcn.core.relay.CoreRelay`, a
plain object) and puts it behind its sockets: the log-transfer UDP socket
(through ``rcn.logxfer.protocol.listen``, which sets ``maxPacketSize`` for the
largest datagram and the kernel buffers from the configuration) and, when
``[metrics] listen`` is set, Prometheus ``/metrics`` over HTTP. On stop, what
waits in the batch queues is sent before the socket closes. Sealed, the first
service starts the hop layer's state file (``KEYS.hop``, beside the key file: its counter
reservation written before the socket opens, the replay windows saved while it
runs) and saves it last, after the socket closed. The reactor is passed in;
nothing here imports the global one.
"""

from __future__ import annotations


from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from rcn.config import Reader, read_routes
from rcn.console.service import serve_console
from rcn.core.config import CoreConfig
from rcn.core.console import core_console
from rcn.core.relay import CoreRelay
from rcn.logxfer.keys import KeyRing
from rcn.logxfer.protocol import Drops, LogTransferProtocol, listen
from rcn.logxfer.routes import Address
from rcn.logxfer.hopstate import state_path
from rcn.logxfer.seal import HopSeal, hop_at_start, keys_at_start
from rcn.metrics import MetricsRegistry, metrics_site
from rcn.mgmtlink.client import MgmtClient, client_service
from rcn.tap import OpenAtStart

_log = Logger()


class UdpListenService(service.Service):
    """Listens with :func:`rcn.logxfer.protocol.listen` while running (``port`` once started)."""

    def __init__(self, reactor, protocol: LogTransferProtocol, address: Address):
        self.reactor = reactor
        self.protocol = protocol
        self.address = address
        self.port = None

    def startService(self):
        super().startService()
        self.port = listen(self.reactor, self.protocol, self.address)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


class _FlushOnStop(service.Service):
    def __init__(self, relay: CoreRelay):
        self.relay = relay

    def stopService(self):
        self.relay.flush_all()
        return super().stopService()


def register_metrics(registry: MetricsRegistry, relay: CoreRelay,
                     protocol: LogTransferProtocol) -> None:
    """The core's figures, read at scrape time: ``rcn_core_*`` (relay counters, drops by
    reason, queue depth per next hop), ``rcn_logxfer_*`` (the UDP socket's counters) and,
    sealed, ``rcn_hop_*`` (datagrams sealed and opened)."""
    if protocol.hop is not None:
        registry.counters("hop", lambda: protocol.hop.counts, "hop layer: datagrams sealed "
                          "and opened")
    registry.counters("core", relay.counters, "core relay",
                      gauges=("queued_entries", "queued_bytes"))
    registry.counters("logxfer", lambda: protocol.counters, "log-transfer socket")
    registry.labelled("core_dropped", "counter",
                      "log datagrams and entries dropped, by reason", ("reason",),
                      lambda: [((reason,), n) for reason, n in relay.drops.by_reason.items()])
    registry.labelled("core_queue_entries", "gauge", "entries waiting for a batch, per next hop",
                      ("next_hop",),
                      lambda: [((hop,), n) for hop, (n, _) in relay.queue_depths().items()])
    registry.labelled("core_queue_bytes", "gauge", "bytes waiting for a batch, per next hop",
                      ("next_hop",),
                      lambda: [((hop,), b) for hop, (_, b) in relay.queue_depths().items()])
    registry.gauge("core_routes", lambda: len(relay.routes), "routes in the route table")


def apply_snapshot(relay: CoreRelay, version: int, doc: dict, hop: HopSeal | None = None,
                   keys_path: str | None = None) -> None:
    """The routes (table 408) of a management server's snapshot replace the relay's.
    (A core keeps no copy: until the server is reached again it uses its file's routes.)
    Its link keys replace the hop layer's, and are kept in ``keys_path`` for a restart; a
    core takes no group key, whatever a snapshot holds."""
    relay.set_routes(read_routes(Reader({"route": doc.get("route", [])}, "snapshot.")))
    if hop is not None and "keys" in doc:
        ring = KeyRing.from_snapshot(doc["keys"]).only_links()
        if keys_path is not None:
            ring.save(keys_path)        # first: a crash never leaves keys the file lacks
        hop.set_ring(ring)
    _log.info("core: settings version {version} applied: {n} routes", version=version,
              n=len(relay.routes))


def _no_groups(group: int) -> dict:
    raise LookupError("a core keeps no log entries")


def make_service(config: CoreConfig, reactor, metrics_registry: MetricsRegistry | None = None
                 ) -> tuple[service.MultiService, CoreRelay]:
    """The core's services and its relay. ``metrics_registry``: register the core's
    figures there (else a new registry, served when ``[metrics] listen`` is set).

    The UDP service is the child named ``"logxfer"`` (its ``port`` once started).
    """
    drops = Drops(config.id)
    ring = keys_at_start(config.id, config.seal, config.mgmt is not None)
    hop = None if ring is None else hop_at_start(config.listen, ring.only_links(), drops,
                                                 state_path(config.seal.keys), reactor)
    protocol = LogTransferProtocol(None, drops, receive_buffer=config.receive_buffer,
                                   send_buffer=config.send_buffer, hop=hop)
    relay = CoreRelay(config.routes, config.listen, protocol.send, reactor, batch=config.batch,
                      drops=drops)
    protocol.handler = relay
    top = service.MultiService()
    if hop is not None:          # first: starts before the socket opens, stops after it closed
        OpenAtStart(f"rcn-core {config.id}", hop.start, hop.stop).setServiceParent(top)
    udp = UdpListenService(reactor, protocol, config.listen)
    udp.setName("logxfer")
    udp.setServiceParent(top)
    _FlushOnStop(relay).setServiceParent(top)     # stops first: flushes while the socket is open
    registry = metrics_registry
    if registry is None and config.metrics is not None:
        registry = MetricsRegistry()
    if registry is not None:
        register_metrics(registry, relay, protocol)
    if config.metrics is not None:
        endpoint = endpoints.serverFromString(reactor, config.metrics)   # an endpoint string
        metrics = internet.StreamServerEndpointService(endpoint, metrics_site(registry))
        metrics.setName("metrics")
        metrics.setServiceParent(top)
    if config.console is not None:
        serve_console(core_console(config, relay, udp), config.id, f"RCN core {config.id}",
                      config.console, reactor).setServiceParent(top)
    if config.mgmt is not None:
        client = MgmtClient(reactor, config.id, "core", str(config.listen),
                            lambda version, doc: apply_snapshot(relay, version, doc, hop,
                                                                config.seal.keys),
                            relay.counters, _no_groups)
        client_service(client, reactor, config.mgmt).setServiceParent(top)
    policy = config.batch
    _log.info("rcn-core {id}: relaying log entries on udp {listen}, {n} routes, batching {batch}, "
              "metrics {metrics}", id=config.id, listen=str(config.listen), n=len(config.routes),
              batch=(f"up to {policy.max_delay * 1000:g} ms / {policy.max_bytes} bytes / "
                     f"{policy.max_entries} entries" if policy.enabled else "off"),
              metrics=config.metrics or "off")
    return top, relay
