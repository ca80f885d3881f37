"""Log entries over UDP: datagrams in, checked entries out (DESIGN.md 3.3).

:class:`LogTransferProtocol` is thin: its hop layer (``rcn.logxfer.seal.HopSeal``, when
sealed: DESIGN.md 9) opens each datagram from a neighbour and seals each one it sends;
then it parses each datagram as one log entry
(``logentry.parse_datagram``), drops what is malformed, of an unknown version
or with a bad CRC32C -- counted by reason in :class:`Drops` and logged -- and
hands good entries to its handler (an edge's or core's plain object). Sending
is ``send(data, address)``.

Socket sizes are set deliberately: Twisted's ``listenUDP`` reads at most
``maxPacketSize`` bytes (8192 by default) and silently truncates the rest, and
the kernel's default receive buffer (about 200 KiB) drops bursts. Use
:func:`listen` (``maxPacketSize`` = the largest UDP payload) and the protocol
asks for ``receive_buffer`` bytes of kernel buffer (``SO_RCVBUFFORCE`` when
running as root, else ``SO_RCVBUF``, which ``net.core.rmem_max`` caps).
"""

from __future__ import annotations

import socket
from typing import Protocol

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from datapath.frames.errors import DecodeError
from datapath.frames.hop import HOP_OVERHEAD
from datapath.frames.logentry import LogEntry, parse_datagram
from rcn.logxfer.routes import Address

MAX_UDP_PAYLOAD = 65507            # IPv4: 65535 - 20 (IP) - 8 (UDP)
#: the largest log entry or BATCH datagram: one UDP datagram with its hop envelope
MAX_ENTRY_DATAGRAM = MAX_UDP_PAYLOAD - HOP_OVERHEAD
DEFAULT_RECEIVE_BUFFER = 16 << 20
DEFAULT_SEND_BUFFER = 4 << 20
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

_log = Logger()


class EntryHandler(Protocol):
    def entry_received(self, entry: LogEntry, data: bytes, sender: Address) -> None:
        """A datagram that parsed and passed its CRC (``data``: the datagram as received)."""


class Drops:
    """Dropped datagrams by reason; the first few of each reason are logged in full,
    then one in every ``log_every`` (a flood must not flood the log too)."""

    def __init__(self, device: str = "", log_first: int = 10, log_every: int = 1000):
        self.device = device
        self.by_reason: dict[str, int] = {}
        self.log_first = log_first
        self.log_every = log_every

    def drop(self, reason: str, peer, detail: str = "") -> None:
        n = self.by_reason.get(reason, 0) + 1
        self.by_reason[reason] = n
        if n <= self.log_first or n % self.log_every == 0:
            _log.warn("{device}dropped a log datagram from {peer}: {reason}{detail} ({n} so far)",
                      device=f"{self.device}: " if self.device else "", peer=str(peer),
                      reason=reason, detail=f": {detail}" if detail else "", n=n)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def decode_reason(error: DecodeError) -> str:
    """A short counter name for why a datagram did not parse."""
    if error.reason.startswith("truncated"):
        # a header cut short names the field it was cut in (magic, version...)
        return "malformed"
    if error.layer == "log" and error.field == "version":
        return "unknown_version"
    if error.layer == "log" and error.field == "magic":
        return "bad_magic"
    return "malformed"


class LogTransferProtocol(DatagramProtocol):
    """One UDP socket of a device. ``handler.entry_received`` gets every good entry."""

    def __init__(self, handler: EntryHandler, drops: Drops | None = None, *,
                 receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
                 send_buffer: int = DEFAULT_SEND_BUFFER, hop=None):
        self.handler = handler
        self.drops = drops if drops is not None else Drops()
        #: the hop layer (``rcn.logxfer.seal.HopSeal``); None: datagrams travel bare
        self.hop = hop
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer
        self.counters = {"received": 0, "received_bytes": 0, "sent": 0, "sent_bytes": 0,
                         "send_errors": 0}

    def startProtocol(self):
        size_buffers(self.transport, self.receive_buffer, self.send_buffer)

    def datagramReceived(self, data: bytes, addr) -> None:
        sender = Address(addr[0], addr[1])
        self.counters["received"] += 1
        self.counters["received_bytes"] += len(data)
        if self.hop is not None:
            data = self.hop.open(data, sender)
            if data is None:
                return
        try:
            entry = parse_datagram(data, fast=True)
        except DecodeError as exc:
            self.drops.drop(decode_reason(exc), sender, str(exc))
            return
        if not entry.crc_ok:
            self.drops.drop("bad_crc", sender)
            return
        try:
            self.handler.entry_received(entry, data, sender)
        except Exception:
            self.drops.drop("handler_error", sender)
            _log.failure("log entry handler failed on a datagram from {peer}", peer=str(sender))

    def send(self, data: bytes, address: Address) -> bool:
        """Send one datagram (sealed by the hop layer when there is one); False (counted)
        when it has no key for ``address`` or the kernel refused it."""
        if self.transport is None:
            self.counters["send_errors"] += 1
            return False
        size = len(data)
        try:
            if self.hop is None:
                self.transport.write(data, address.pair)
            else:
                parts = self.hop.seal_parts(data, address)
                if parts is None:
                    self.counters["send_errors"] += 1
                    return False
                size = self._send_sealed(parts[0], data, parts[1], address)
        except OSError as exc:
            self.counters["send_errors"] += 1
            _log.warn("log datagram of {n} bytes to {peer} not sent: {why}", n=size,
                      peer=str(address), why=exc)
            return False
        self.counters["sent"] += 1
        self.counters["sent_bytes"] += size
        return True

    def _send_sealed(self, header: bytes, data, tag: bytes, address: Address) -> int:
        """Header, datagram and tag as one UDP datagram, gathered by ``sendmsg`` where the
        transport has a socket (the datagram is not copied to be sealed), else joined for
        ``write``; its size. Errors as ``transport.write`` has them."""
        size = len(header) + len(data) + len(tag)
        sock = getattr(self.transport, "socket", None)
        if sock is None:
            self.transport.write(b"".join((header, data, tag)), address.pair)
            return size
        while True:
            try:
                sock.sendmsg((header, data, tag), (), 0, address.pair)
                return size
            except InterruptedError:
                continue
            except ConnectionRefusedError:
                return size     # an ICMP error of an earlier datagram: as transport.write

    def connectionRefused(self):
        # An ICMP port unreachable for an earlier datagram: the next hop is down. The
        # sender's retransmission covers it; counting is all there is to do.
        self.counters["send_errors"] += 1


def size_buffers(transport, receive: int, send: int) -> None:
    """Set a UDP transport's kernel buffers (the FORCE options when privileged)."""
    sock = getattr(transport, "socket", None)
    if sock is not None:
        _set_buffer(sock, socket.SO_RCVBUF, _SO_RCVBUFFORCE, receive)
        _set_buffer(sock, socket.SO_SNDBUF, _SO_SNDBUFFORCE, send)


def _set_buffer(sock, option: int, force: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:
            _log.warn("cannot set socket buffer to {size} bytes: {why}", size=size, why=exc)


def listen(reactor, protocol: LogTransferProtocol, address: Address):
    """``listenUDP`` with ``maxPacketSize`` big enough for any datagram."""
    return reactor.listenUDP(address.port, protocol, interface=address.host,
                             maxPacketSize=MAX_UDP_PAYLOAD + 1)
