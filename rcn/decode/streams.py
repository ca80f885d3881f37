"""TCP stream reassembly and FCIP frame delineation for captured traffic.

Each TCP direction is one byte stream. Segments are placed by sequence number
(mod 2**32): retransmitted and overlapping bytes are dropped, early segments
wait (up to a byte limit) for the gap to fill. The stream is then cut into
FCIP frames by the datapath's delineator; an invalid encapsulation header is
reported and the stream is re-synchronised at the next FCIP sync pattern. (Log entries split across
datagrams are joined by the log-transfer channel's own
:class:`rcn.logxfer.reassembly.SegmentAssembler`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datapath.frames import fcip
from datapath.frames.errors import DecodeError
from datapath.kernels.delineate import FRAME_DTYPE, delineate

_HALF = 1 << 31
_MOD = 1 << 32
_OFFSET, _LENGTH = 0, 1             # in a delineation record (FRAME_DTYPE) as a tuple
_RECORDS = 64                        # delineation records per kernel call


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
    """Cuts an in-order byte stream into FCIP frames with the datapath's delineator.

    Frames are cut by :func:`datapath.kernels.delineate.delineate`, the kernel the FCIP
    link's ``StreamDelineator`` runs, into one record array reused across feeds (the
    records are read at once). Where the kernel stops at an invalid frame the link drops
    the connection; a capture goes on: a bad encapsulation header is named by
    ``fcip.check_header`` and the stream resynchronised at the next FCIP sync pattern, and
    a frame whose header is good (but not its delimiters or length) is handed on whole
    for ``parse_fcip_frame`` to report. At most one incomplete frame (< 2180 bytes) is
    held between feeds.

    ``feed`` returns ``(stream_offset, frame_bytes)`` for complete frames and
    :class:`DecodeError` for each stretch of bytes it had to skip.
    """

    def __init__(self):
        self._held = b""              # the start of an incomplete frame
        self.offset = 0               # stream offset of ``_held``
        self._records = np.empty(_RECORDS, FRAME_DTYPE)

    def feed(self, data: bytes) -> list:
        block = self._held + data if self._held else data
        base, at, out = self.offset, 0, []
        while True:
            result = delineate(memoryview(block)[at:] if at else block, out=self._records)
            if len(result.frames):
                for record in result.frames.tolist():
                    start = at + record[_OFFSET]
                    out.append((base + start, bytes(block[start:start + record[_LENGTH]])))
            at += result.consumed
            if result.error:
                at = self._skip(block, at, base, out)
            elif len(result.frames) < _RECORDS:
                break                 # the rest is an incomplete frame
        self._held = bytes(block[at:])
        self.offset = base + at
        return out

    @staticmethod
    def _skip(block: bytes, at: int, base: int, out: list) -> int:
        """Report the invalid frame at ``block[at:]``; return where the stream goes on."""
        try:
            encap = fcip.check_header(block, at, base, fast=True)
        except DecodeError as exc:
            out.append(exc)
            sync = block.find(fcip.SYNC_PATTERN, at + 1)
            return sync if sync > 0 else max(len(block) - len(fcip.SYNC_PATTERN) + 1, at + 1)
        end = at + encap["frame_len"] * 4       # whole: delimiters are checked only then
        out.append((base + at, bytes(block[at:end])))
        return end

    def leftover(self) -> DecodeError | None:
        """The incomplete frame at the end of the capture, if any."""
        if not self._held:
            return None
        return DecodeError("fcip", "stream", self.offset,
                           f"truncated: {len(self._held)} bytes of an incomplete frame at end "
                           "of capture")
