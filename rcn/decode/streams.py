"""TCP stream reassembly and FCIP frame delineation for captured traffic.

Each TCP direction is one byte stream. Segments are placed by sequence number
(mod 2**32): retransmitted and overlapping bytes are dropped, early segments
wait (up to a byte limit) for the gap to fill. The stream is then cut into
FCIP frames; an invalid encapsulation header is reported and the stream is
re-synchronised at the next FCIP sync pattern. (Log entries split across
datagrams are joined by the log-transfer channel's own
:class:`rcn.logxfer.reassembly.SegmentAssembler`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datapath.frames import fcip
from datapath.frames.errors import DecodeError

_HALF = 1 << 31
_MOD = 1 << 32


def _after(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in sequence space."""
    d = (a - b) % _MOD
    return d - _MOD if d >= _HALF else d


@dataclass
class StreamStats:
    retransmitted_bytes: int = 0
    out_of_order_segments: int = 0
    dropped_bytes: int = 0     # early data beyond the pending limit, lost


@dataclass
class TcpStream:
    """One direction of a TCP connection, delivering bytes in order."""

    pending_limit: int = 4 << 20
    next_seq: int | None = None
    stream_offset: int = 0          # stream bytes delivered so far
    pending: dict = field(default_factory=dict)   # seq -> bytes that arrived early
    pending_bytes: int = 0
    stats: StreamStats = field(default_factory=StreamStats)

    def add(self, seq: int, payload: bytes, syn: bool = False) -> bytes:
        """Accept one segment; return the bytes that are now in order."""
        if syn:
            self.next_seq = (seq + 1) % _MOD
            seq = self.next_seq
        if not payload:
            return b""
        if self.next_seq is None:
            self.next_seq = seq
        ahead = _after(seq, self.next_seq)
        if ahead > 0:
            self.stats.out_of_order_segments += 1
            if self.pending_bytes + len(payload) > self.pending_limit:
                self.stats.dropped_bytes += len(payload)
            elif seq not in self.pending or len(self.pending[seq]) < len(payload):
                self.pending_bytes += len(payload) - len(self.pending.get(seq, b""))
                self.pending[seq] = payload
            return b""
        if -ahead >= len(payload):
            self.stats.retransmitted_bytes += len(payload)
            return b""
        self.stats.retransmitted_bytes += -ahead
        out = bytearray(payload[-ahead:])
        self.next_seq = (self.next_seq + len(out)) % _MOD
        out += self._drain()
        self.stream_offset += len(out)
        return bytes(out)

    def _drain(self) -> bytes:
        out = bytearray()
        progress = True
        while self.pending and progress:
            progress = False
            for seq in list(self.pending):
                ahead = _after(seq, self.next_seq)
                if ahead > 0:
                    continue
                data = self.pending.pop(seq)
                self.pending_bytes -= len(data)
                if -ahead < len(data):
                    fresh = data[-ahead:]
                    out += fresh
                    self.next_seq = (self.next_seq + len(fresh)) % _MOD
                    progress = True
                else:
                    self.stats.retransmitted_bytes += len(data)
        return bytes(out)


class FcipDelineator:
    """Cuts an in-order byte stream into FCIP frames.

    ``feed`` returns ``(stream_offset, frame_bytes)`` for complete frames and
    :class:`DecodeError` for each stretch of bytes it had to skip.
    """

    def __init__(self, max_buffer: int = 1 << 20):
        self.buffer = bytearray()
        self.offset = 0               # stream offset of buffer[0]
        self.max_buffer = max_buffer

    def feed(self, data: bytes) -> list:
        self.buffer += data
        out = []
        while len(self.buffer) >= fcip.HEADER_SIZE:
            try:
                encap = fcip.check_header(self.buffer, 0, self.offset, fast=True)
            except DecodeError as exc:
                out.append(exc)
                self._resync()
                continue
            length = encap["frame_len"] * 4
            if length > len(self.buffer):
                break
            out.append((self.offset, bytes(self.buffer[:length])))
            self._consume(length)
        if len(self.buffer) > self.max_buffer:
            out.append(DecodeError("fcip", "stream", self.offset,
                                   f"{len(self.buffer)} bytes without a complete frame; dropped"))
            self._consume(len(self.buffer))
        return out

    def leftover(self) -> DecodeError | None:
        """The incomplete frame at the end of the capture, if any."""
        if not self.buffer:
            return None
        return DecodeError("fcip", "stream", self.offset,
                           f"truncated: {len(self.buffer)} bytes of an incomplete frame at end of capture")

    def _consume(self, n: int) -> None:
        del self.buffer[:n]
        self.offset += n

    def _resync(self) -> None:
        at = self.buffer.find(fcip.SYNC_PATTERN, 1)
        self._consume(at if at > 0 else max(len(self.buffer) - len(fcip.SYNC_PATTERN) + 1, 1))
