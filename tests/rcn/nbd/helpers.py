"""Test doubles for the NBD server: an in-memory export and a StringTransport client."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rcn.nbd import protocol as P
from rcn.nbd.export import ExportTable
from rcn.nbd.server import NbdServerFactory
from rcn.nbd.session import ServerLimits


class MemoryExport:
    """An export in memory that records its calls; ``deferred=True`` makes every
    call return an unfired Deferred kept in ``pending`` (fire with ``finish``)."""

    def __init__(self, name="mem", size=1 << 20, block_size=512, read_only=False,
                 description="in-memory test export", deferred=False, min_block_size=1):
        self.name = name
        self.size = size
        self.block_size = block_size
        self.read_only = read_only
        self.description = description
        self.min_block_size = min_block_size
        self.deferred = deferred
        self.data = bytearray(size)
        self.calls: list[tuple] = []
        self.pending: list[tuple[Deferred, object]] = []
        self.fail_with: BaseException | None = None

    def _result(self, value):
        if self.fail_with is not None:
            exc = self.fail_with
            if self.deferred:
                d = Deferred()
                self.pending.append((d, exc))
                return d
            raise exc
        if self.deferred:
            d = Deferred()
            self.pending.append((d, value))
            return d
        return value

    def finish(self, index: int = 0) -> None:
        d, value = self.pending.pop(index)
        if isinstance(value, BaseException):
            d.errback(value)
        else:
            d.callback(value)

    def read(self, offset, length):
        self.calls.append(("read", offset, length))
        return self._result(bytes(self.data[offset:offset + length]))

    def write(self, offset, data, fua):
        self.calls.append(("write", offset, bytes(data), fua))
        self.data[offset:offset + len(data)] = data
        return self._result(None)

    def flush(self):
        self.calls.append(("flush",))
        return self._result(None)

    def trim(self, offset, length):
        self.calls.append(("trim", offset, length))
        self.data[offset:offset + length] = bytes(length)
        return self._result(None)

    def write_zeroes(self, offset, length, may_trim):
        self.calls.append(("write_zeroes", offset, length, may_trim))
        self.data[offset:offset + length] = bytes(length)
        return self._result(None)


def parse_option_replies(data: bytes) -> list[tuple[int, int, bytes]]:
    """(option, reply type, data) for each option reply in ``data``; all must be whole."""
    out = []
    pos = 0
    while pos < len(data):
        magic, option, reply, length = P.OPTION_REPLY.unpack_from(data, pos)
        assert magic == P.OPTION_REPLY_MAGIC, hex(magic)
        pos += P.OPTION_REPLY.size
        out.append((option, reply, data[pos:pos + length]))
        pos += length
    assert pos == len(data), (pos, len(data))
    return out


def parse_simple_replies(data: bytes, read_lengths: dict[int, int] | None = None
                         ) -> list[tuple[int, int, bytes]]:
    """(cookie, error, data) for each simple reply; READ cookies need their lengths."""
    read_lengths = read_lengths or {}
    out = []
    pos = 0
    while pos < len(data):
        magic, error, cookie = P.SIMPLE_REPLY.unpack_from(data, pos)
        assert magic == P.SIMPLE_REPLY_MAGIC, hex(magic)
        pos += P.SIMPLE_REPLY.size
        payload = b""
        if error == 0 and cookie in read_lengths:
            payload = data[pos:pos + read_lengths[cookie]]
            pos += len(payload)
        out.append((cookie, error, payload))
    return out


class Client:
    """Drives one server connection over a StringTransport."""

    def __init__(self, exports, limits: ServerLimits | None = None, factory=None, clock=None):
        if factory is None:
            if not isinstance(exports, ExportTable):
                exports = ExportTable(exports)
            factory = NbdServerFactory(exports, clock or Clock(), limits)
        self.factory = factory
        self.clock = factory.clock
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    @property
    def session(self):
        return self.proto.session

    @property
    def counters(self) -> dict[str, int]:
        return self.factory.counters

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def take(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def flags(self, flags: int = P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES) -> None:
        self.send(P.CLIENT_FLAGS.pack(flags))

    def option(self, option: int, data: bytes = b"") -> list[tuple[int, int, bytes]]:
        self.send(P.option_request(option, data))
        return parse_option_replies(self.take())

    def go(self, name: str = "mem", info=(P.INFO_BLOCK_SIZE,)) -> list[tuple[int, int, bytes]]:
        return self.option(P.OPT_GO, P.go_data(name.encode(), tuple(info)))

    def start(self, name: str = "mem") -> None:
        """Client flags + NBD_OPT_GO: the connection is in transmission afterwards."""
        self.flags()
        replies = self.go(name)
        assert replies[-1][1] == P.REP_ACK, replies

    def request(self, cmd, cookie, offset=0, length=0, flags=0, data=b"") -> None:
        self.send(P.request(cmd, cookie, offset, length, flags, data))

    def replies(self, read_lengths: dict[int, int] | None = None):
        return parse_simple_replies(self.take(), read_lengths)

    def lose(self) -> None:
        self.proto.connectionLost(None)
