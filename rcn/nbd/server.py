"""The NBD server: a thin Twisted protocol over ``NbdSession`` and its factory.

    exports = ExportTable([VolumeExport(Volume(path, 0, 1 << 30), "disk0")])
    factory = NbdServerFactory(exports, reactor)
    reactor.listenTCP(10809, factory, interface="127.0.0.1")
    factory.counters   # {"connections": ..., "requests_write": ..., "bytes_written": ...}

The factory takes its clock (anything with ``callLater``, usually the reactor)
as an argument: library code never imports the global reactor.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from rcn.nbd.export import ExportTable
from rcn.nbd.session import Clock, NbdSession, ServerLimits, new_counters


@implementer(IPushProducer)
class NbdServerProtocol(Protocol):
    """Bytes in, bytes out: all state lives in ``self.session``.

    It is also the push producer registered with its own transport, so a client
    that stops reading its replies stops the server from reading its requests.
    """

    session: NbdSession | None = None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        factory = self.factory
        self.session = NbdSession(self, factory.exports, factory.clock, factory.limits,
                                  factory.counters)
        factory.connection_opened(self)
        # Replies are small and pipelined: Nagle's algorithm would hold them back.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.transport.registerProducer(self, True)
        self.session.connection_made()

    def dataReceived(self, data: bytes) -> None:
        self.session.data_received(data)

    def connectionLost(self, reason=None) -> None:
        if self.session is not None:
            self.session.connection_lost()
            self.factory.connection_closed(self)
        transport = self.transport
        if transport is not None and getattr(transport, "producer", None) is self:
            transport.unregisterProducer()

    # Link, used by the session
    def write_sequence(self, chunks: list[bytes]) -> None:
        self.transport.writeSequence(chunks)

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    def close(self) -> None:
        self.transport.loseConnection()

    # IPushProducer, called by the transport about its send buffer
    def pauseProducing(self) -> None:
        self.session.output_paused()

    def resumeProducing(self) -> None:
        self.session.output_resumed()

    def stopProducing(self) -> None:
        pass


class NbdServerFactory(Factory):
    """Serves the exports of an ``ExportTable``; one ``NbdSession`` per connection.

    ``counters`` is a dict shared by all connections: connections, requests per
    type, bytes read and written, error replies (total and per NBD error code),
    protocol errors (disconnects for bad input), handshake timeouts,
    back-pressure pauses. Connections beyond ``limits.max_connections`` are
    closed at once and counted as ``connections_refused``.
    """

    protocol = NbdServerProtocol
    _log = Logger()

    def __init__(self, exports: ExportTable, clock: Clock, limits: ServerLimits | None = None):
        self.exports = exports
        self.clock = clock
        self.limits = limits or ServerLimits()
        self.counters: dict[str, int] = new_counters()
        self.connections: set[NbdServerProtocol] = set()

    def buildProtocol(self, addr):
        if len(self.connections) >= self.limits.max_connections:
            self.counters["connections_refused"] += 1
            self._log.warn("NBD: refusing connection from {addr}: {limit} connections open",
                           addr=addr, limit=self.limits.max_connections)
            return None
        return super().buildProtocol(addr)

    def connection_opened(self, proto: NbdServerProtocol) -> None:
        self.connections.add(proto)
        self.counters["connections"] += 1
        self.counters["connections_active"] = len(self.connections)

    def connection_closed(self, proto: NbdServerProtocol) -> None:
        self.connections.discard(proto)
        self.counters["connections_active"] = len(self.connections)

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters."""
        return dict(self.counters)
