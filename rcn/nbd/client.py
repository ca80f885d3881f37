"""An NBD client: fixed newstyle handshake, NBD_OPT_GO, simple replies, many requests in flight.

``NbdClient`` is a plain state machine (bytes in through ``data_received``,
bytes out through a ``Link``), and ``NbdClientProtocol`` the thin Twisted
protocol over it, as ``rcn.nbd.session`` / ``rcn.nbd.server`` are for the
server side::

    client = await connect(reactor, "127.0.0.1", 10809, "vol0")   # Deferred[NbdClient]
    client.size, client.flags                   # from NBD_INFO_EXPORT
    await client.write(0, data, fua=True)       # Deferred[None]
    data = await client.read(0, 4096)           # Deferred[bytes]
    await client.flush()
    await client.disconnect()                   # NBD_CMD_DISC, fires when the connection ends

Negotiation: the client sets NBD_FLAG_C_FIXED_NEWSTYLE (and NO_ZEROES when the
server offers it), asks NBD_OPT_GO for the export with an NBD_INFO_BLOCK_SIZE
request, and takes NBD_REP_INFO replies until NBD_REP_ACK. A server that
answers NBD_REP_ERR_UNSUP to NBD_OPT_GO (an old one) is asked again with
NBD_OPT_EXPORT_NAME; any other refusal fails ``ready`` with :class:`NbdError`
naming the reply (``NBD_REP_ERR_UNKNOWN: no export 'x'``) and closes the
connection.

Transmission: every request gets a fresh cookie (handle) and a Deferred; the
replies may come in any order and are matched by cookie. Requests may be issued
before ``ready`` fires: they are sent once the handshake ends. The caller
chooses how many are in flight. A request the export does not allow (a write to
a read-only export, FUA or FLUSH the server did not advertise, a range beyond
the export) fails at once without being sent. An error reply fails that
request's Deferred with :class:`NbdError` whose ``name`` is the NBD error
(``EIO``, ``ENOSPC``...). Bad input from the server (a wrong magic, an unknown
cookie, a structured reply that was not negotiated) closes the connection and
fails everything outstanding with an error saying what and where.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from urllib.parse import unquote, urlsplit

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from rcn.nbd import protocol as P

__all__ = ["NbdError", "NbdClient", "NbdClientProtocol", "ExportInfo", "connect",
           "connect_url", "parse_nbd_url"]

_REPLY_NAMES = {getattr(P, n): f"NBD_{n}" for n in dir(P) if n.startswith("REP_ERR_")}


class NbdError(Exception):
    """An NBD failure: ``code`` and ``name`` are the NBD error (``5``, ``"EIO"``) of a
    refused request, or None for a negotiation or protocol failure."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code
        self.name = (P.ERROR_NAMES.get(code, f"error {code}") if code is not None else None)


@dataclass
class ExportInfo:
    name: str
    size: int
    flags: int
    block_sizes: tuple[int, int, int] | None = None   # minimum, preferred, maximum

    @property
    def read_only(self) -> bool:
        return bool(self.flags & P.FLAG_READ_ONLY)


class Link(TypingProtocol):
    def write_sequence(self, chunks: list[bytes]) -> None: ...
    def close(self) -> None: ...


# states
HANDSHAKE, OPTION_REPLY, EXPORT_NAME_REPLY, TRANSMISSION, READ_DATA, CLOSED = range(6)


class NbdClient:
    """The client side of one NBD connection (see the module docstring)."""

    _log = Logger()

    def __init__(self, link: Link, export_name: str = ""):
        self._link = link
        self.export_name = export_name
        self._name = export_name.encode()
        self.state = HANDSHAKE
        self.ready: Deferred = Deferred()          # fires with ExportInfo
        self.closed: Deferred = Deferred()         # fires when the connection is gone
        self.info: ExportInfo | None = None
        self.no_zeroes = False
        self._buffer = bytearray()
        self._option = 0
        self._size: int | None = None
        self._flags = 0
        self._block_sizes = None
        self._cookies = itertools.count(1)
        self._pending: dict[int, tuple[int, int, Deferred]] = {}   # cookie -> cmd, length, d
        self._reading: tuple[int, int, Deferred] | None = None      # READ reply awaiting data
        self._early: list[list[bytes]] = []        # requests issued before the handshake ended
        self._error: NbdError | None = None
        self.counters = {"requests": 0, "replies": 0, "errors": 0, "bytes_written": 0,
                         "bytes_read": 0}

    # -- facts -----------------------------------------------------------------------------

    @property
    def size(self) -> int | None:
        return self.info.size if self.info else None

    @property
    def flags(self) -> int:
        return self.info.flags if self.info else 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- events from the connection -------------------------------------------------------------

    def connection_made(self) -> None:
        pass    # the server speaks first

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self._buffer += data
        try:
            self._parse()
        except NbdError as exc:
            self._fail(exc)

    def connection_lost(self, reason: str = "connection closed") -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        error = self._error or NbdError(f"NBD: {reason}")
        if not self.ready.called:
            self.ready.errback(error)
        pending, self._pending = self._pending, {}
        for _, _, d in pending.values():
            d.errback(NbdError(f"NBD: connection lost with the request outstanding ({error})"))
        self.closed.callback(None)

    # -- requests --------------------------------------------------------------------------

    def read(self, offset: int, length: int, fua: bool = False) -> Deferred:
        """Deferred[bytes] of ``length`` bytes at ``offset``."""
        return self._request(P.CMD_READ, offset, length, fua)

    def write(self, offset: int, data: bytes, fua: bool = False) -> Deferred:
        """Deferred[None]: fires when the server has the write (durably with ``fua``)."""
        return self._request(P.CMD_WRITE, offset, len(data), fua, data)

    def flush(self) -> Deferred:
        return self._request(P.CMD_FLUSH, 0, 0, False)

    def disconnect(self) -> Deferred:
        """Send NBD_CMD_DISC and close; fires when the connection is gone."""
        if self.state == TRANSMISSION or self.state == READ_DATA:
            self._link.write_sequence([P.request(P.CMD_DISC, next(self._cookies))])
        if self.state != CLOSED:
            self._link.close()
        return self.closed

    def _request(self, cmd: int, offset: int, length: int, fua: bool, data=None) -> Deferred:
        if self.state == CLOSED:
            return fail(NbdError(f"NBD: {P.COMMAND_NAMES[cmd]} on a closed connection"
                                 + (f" ({self._error})" if self._error else "")))
        problem = self._check(cmd, offset, length, fua)
        if problem:
            return fail(NbdError(f"NBD: {P.COMMAND_NAMES[cmd]} not sent: {problem}"))
        cookie = next(self._cookies)
        d = Deferred()
        self._pending[cookie] = (cmd, length, d)
        header = P.REQUEST.pack(P.REQUEST_MAGIC, P.CMD_FLAG_FUA if fua else 0, cmd, cookie,
                                offset, length)
        chunks = [header, data] if data is not None else [header]
        self.counters["requests"] += 1
        if cmd == P.CMD_WRITE:
            self.counters["bytes_written"] += length
        if self.state in (TRANSMISSION, READ_DATA):
            self._link.write_sequence(chunks)
        else:
            self._early.append(chunks)
        return d

    def _check(self, cmd: int, offset: int, length: int, fua: bool) -> str | None:
        if self.info is None:
            return None        # checked by the server once it answers
        flags = self.info.flags
        if cmd == P.CMD_WRITE and flags & P.FLAG_READ_ONLY:
            return f"export {self.export_name!r} is read-only"
        if fua and not flags & P.FLAG_SEND_FUA:
            return "the server did not advertise FUA"
        if cmd == P.CMD_FLUSH and not flags & P.FLAG_SEND_FLUSH:
            return "the server did not advertise FLUSH"
        if cmd in (P.CMD_READ, P.CMD_WRITE) and (offset < 0 or offset + length > self.info.size):
            return (f"{length} bytes at offset {offset} go beyond the export's "
                    f"{self.info.size} bytes")
        return None

    # -- parsing ---------------------------------------------------------------------------

    def _take(self, n: int) -> bytes | None:
        if len(self._buffer) < n:
            return None
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _parse(self) -> None:
        while self.state != CLOSED:
            state = self.state
            if state == TRANSMISSION:
                if not self._reply():
                    return
            elif state == READ_DATA:
                cookie, length, d = self._reading
                data = self._take(length)
                if data is None:
                    return
                self._reading = None
                self.state = TRANSMISSION
                self.counters["bytes_read"] += length
                d.callback(data)
            elif state == HANDSHAKE:
                if not self._handshake():
                    return
            elif state == OPTION_REPLY:
                if not self._option_reply():
                    return
            elif state == EXPORT_NAME_REPLY:
                if not self._export_name_reply():
                    return

    def _handshake(self) -> bool:
        unit = self._take(P.HANDSHAKE.size)
        if unit is None:
            return False
        magic, opt, flags = P.HANDSHAKE.unpack(unit)
        if magic != P.NBDMAGIC:
            raise NbdError(f"NBD handshake: magic 0x{magic:016x} at offset 0 is not NBDMAGIC: "
                           f"not an NBD server?")
        if opt != P.IHAVEOPT:
            raise NbdError(f"NBD handshake: 0x{opt:016x} at offset 8 is not IHAVEOPT (an "
                           f"oldstyle server: it is not supported)")
        if not flags & P.FLAG_FIXED_NEWSTYLE:
            raise NbdError("NBD handshake: the server does not offer fixed newstyle "
                           f"negotiation (handshake flags 0x{flags:04x})")
        self.no_zeroes = bool(flags & P.FLAG_NO_ZEROES)
        client_flags = P.FLAG_C_FIXED_NEWSTYLE | (P.FLAG_C_NO_ZEROES if self.no_zeroes else 0)
        self._option = P.OPT_GO
        self._link.write_sequence([P.CLIENT_FLAGS.pack(client_flags), P.option_request(
            P.OPT_GO, P.go_data(self._name, (P.INFO_BLOCK_SIZE,)))])
        self.state = OPTION_REPLY
        return True

    def _option_reply(self) -> bool:
        if len(self._buffer) < P.OPTION_REPLY.size:
            return False
        magic, option, reply, length = P.OPTION_REPLY.unpack_from(self._buffer)
        if magic != P.OPTION_REPLY_MAGIC:
            raise NbdError(f"NBD option reply: magic 0x{magic:016x} is not the option reply "
                           f"magic")
        if length > 16 * P.MAX_STRING:
            raise NbdError(f"NBD option reply: {length} bytes of data is too long")
        if len(self._buffer) < P.OPTION_REPLY.size + length:
            return False
        del self._buffer[:P.OPTION_REPLY.size]
        data = self._take(length)
        if option != self._option:
            raise NbdError(f"NBD option reply: for option {option}, but "
                           f"{P.OPTION_NAMES.get(self._option)} was asked")
        if reply == P.REP_INFO:
            self._info(data)
        elif reply == P.REP_ACK:
            if self._size is None:
                raise NbdError("NBD_OPT_GO: the server acknowledged without NBD_INFO_EXPORT")
            self._go()
        elif reply & P.REP_FLAG_ERROR:
            if reply == P.REP_ERR_UNSUP and option == P.OPT_GO:
                self._option = P.OPT_EXPORT_NAME    # an old server: the old way
                self._link.write_sequence([P.option_request(P.OPT_EXPORT_NAME, self._name)])
                self.state = EXPORT_NAME_REPLY
                return True
            text = data.decode("utf-8", "replace")
            raise NbdError(f"NBD: the server refused export {self.export_name!r}: "
                           f"{_REPLY_NAMES.get(reply, f'error reply 0x{reply:08x}')}"
                           + (f": {text}" if text else ""))
        # other replies (REP_SERVER, REP_META_CONTEXT) are not expected for GO: ignore
        return True

    def _info(self, data: bytes) -> None:
        if len(data) < 2:
            raise NbdError(f"NBD_REP_INFO: {len(data)} bytes, too short for its type")
        (kind,) = P.U16.unpack_from(data)
        if kind == P.INFO_EXPORT:
            if len(data) != P.INFO_EXPORT_LAYOUT.size:
                raise NbdError(f"NBD_INFO_EXPORT: {len(data)} bytes, expected "
                               f"{P.INFO_EXPORT_LAYOUT.size}")
            _, self._size, self._flags = P.INFO_EXPORT_LAYOUT.unpack(data)
        elif kind == P.INFO_BLOCK_SIZE and len(data) == P.INFO_BLOCK_SIZE_LAYOUT.size:
            self._block_sizes = P.INFO_BLOCK_SIZE_LAYOUT.unpack(data)[1:]

    def _export_name_reply(self) -> bool:
        need = P.EXPORT_NAME_REPLY.size + (0 if self.no_zeroes else P.EXPORT_NAME_PAD)
        unit = self._take(need)
        if unit is None:
            return False
        self._size, self._flags = P.EXPORT_NAME_REPLY.unpack_from(unit)
        self._go()
        return True

    def _go(self) -> None:
        self.info = ExportInfo(self.export_name, self._size, self._flags, self._block_sizes)
        self.state = TRANSMISSION
        early, self._early = self._early, []
        for chunks in early:
            self._link.write_sequence(chunks)
        self.ready.callback(self.info)

    def _reply(self) -> bool:
        if len(self._buffer) < P.SIMPLE_REPLY.size:
            return False
        magic, error, cookie = P.SIMPLE_REPLY.unpack_from(self._buffer)
        if magic != P.SIMPLE_REPLY_MAGIC:
            what = ("a structured reply, which was not negotiated"
                    if magic == P.STRUCTURED_REPLY_MAGIC else f"magic 0x{magic:08x}")
            raise NbdError(f"NBD reply: {what} (expected simple reply magic "
                           f"0x{P.SIMPLE_REPLY_MAGIC:08x})")
        request = self._pending.pop(cookie, None)
        if request is None:
            raise NbdError(f"NBD reply: cookie {cookie} matches no request in flight")
        del self._buffer[:P.SIMPLE_REPLY.size]
        cmd, length, d = request
        self.counters["replies"] += 1
        if error:
            self.counters["errors"] += 1
            d.errback(NbdError(f"NBD {P.COMMAND_NAMES[cmd]}: the server answered "
                               f"{P.ERROR_NAMES.get(error, f'error {error}')}", error))
        elif cmd == P.CMD_READ and length:
            self._reading = (cookie, length, d)
            self.state = READ_DATA
        else:
            d.callback(None)
        return True

    def _fail(self, error: NbdError) -> None:
        self._log.warn("{error}", error=str(error))
        self._error = error
        self._link.close()
        self.connection_lost(str(error))


class NbdClientProtocol(Protocol):
    """Bytes in, bytes out; the state lives in ``self.client``."""

    def __init__(self, export_name: str = ""):
        self.client = NbdClient(self, export_name)

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.client.connection_made()

    def dataReceived(self, data: bytes) -> None:
        self.client.data_received(data)

    def connectionLost(self, reason=None) -> None:
        self.client.connection_lost(reason.getErrorMessage() if reason is not None
                                    else "connection closed")

    def write_sequence(self, chunks: list[bytes]) -> None:
        self.transport.writeSequence(chunks)

    def close(self) -> None:
        self.transport.loseConnection()


def connect(reactor, host: str, port: int, export_name: str = "",
            timeout: float = 30.0) -> Deferred:
    """Deferred[NbdClient], fired once the export is negotiated."""
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    d = endpoints.connectProtocol(endpoint, NbdClientProtocol(export_name))
    d.addCallback(lambda proto: proto.client.ready.addCallback(lambda _: proto.client))
    return d


def parse_nbd_url(url: str) -> tuple[str, int, str]:
    """``nbd://HOST[:PORT]/NAME`` -> (host, port, export name); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "nbd" or not parts.hostname:
        raise ValueError(f"{url!r} is not an nbd://HOST[:PORT]/NAME URL")
    return parts.hostname, parts.port or 10809, unquote(parts.path.lstrip("/"))


def connect_url(reactor, url: str, timeout: float = 30.0) -> Deferred:
    try:
        host, port, name = parse_nbd_url(url)
    except ValueError as exc:
        return fail(exc)
    return connect(reactor, host, port, name, timeout)

