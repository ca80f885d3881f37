"""FCIP encapsulation (RFC 3643 header with the RFC 3821 FCIP values).

One encapsulated frame on the TCP stream is::

    28-byte encapsulation header | SOF word | FC header | payload | FC CRC | EOF word

``frame_len`` counts 32-bit words from the first header byte through the EOF
word; legal values are 15..545. Every redundant byte is checked (protocol and
version complements, the copy in the protocol-specific word, pFlags and
reserved complements, the length complement) so a receiver that lost framing
notices at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from datapath.frames.errors import DecodeError
from datapath.frames.fc import (
    Eof, FcFrame, Sof, build_fc_frame, delimiter_word, parse_delimiter_word, parse_fc_frame)
from datapath.frames.fields import Layout, uint

FCIP_PROTOCOL = 1
FCIP_VERSION = 1
FCIP_PORT = 3225
MIN_FRAME_WORDS = 15
MAX_FRAME_WORDS = 545
PFLAG_CHANGED = 0x80
PFLAG_SPECIAL_FRAME = 0x01
FLAG_CRCV = 0x01   # in the 6-bit flags sub-field (0x0400 of the 16-bit word)

FCIP_HEADER = Layout("fcip", [
    uint("protocol", 1, "encapsulating protocol number, 1 = FCIP"),
    uint("version", 1, "encapsulation version, 1"),
    uint("protocol_c", 1, "ones' complement of protocol"),
    uint("version_c", 1, "ones' complement of version"),
    uint("protocol_specific", 4, "FCIP: a copy of bytes 0-3"),
    uint("pflags", 1, "0x80 changed, 0x01 special frame"),
    uint("reserved", 1, "0"),
    uint("pflags_c", 1, "ones' complement of pflags"),
    uint("reserved_c", 1, "ones' complement of reserved"),
    uint("flags_len", 2, "flags (6 bits, CRCV 0x01) and frame length in words (10 bits)",
         bits=(("flags", 6), ("frame_len", 10))),
    uint("flags_len_c", 2, "ones' complement of flags_len"),
    uint("ts_seconds", 4, "timestamp, integer seconds (0: no synchronised clock)"),
    uint("ts_fraction", 4, "timestamp, fraction of a second"),
    uint("encap_crc", 4, "encapsulation CRC, 0 for FCIP"),
], doc="FCIP encapsulation header (RFC 3643)")

HEADER_SIZE = FCIP_HEADER.size          # 28
OVERHEAD = HEADER_SIZE + 4 + 4          # header, SOF word, EOF word
_PROTOCOL_WORD = bytes((FCIP_PROTOCOL, FCIP_VERSION, ~FCIP_PROTOCOL & 0xFF, ~FCIP_VERSION & 0xFF))
#: the first 8 bytes of every FCIP frame: what a receiver looks for to re-synchronise
SYNC_PATTERN = _PROTOCOL_WORD * 2


@dataclass
class FcipFrame:
    encap: dict
    fc: FcFrame | None        # None for a special frame
    length: int               # bytes on the stream
    special_body: bytes = b""


def encapsulate(fc_frame: bytes, sof: int = Sof.I3, eof: int = Eof.T, ts_seconds: int = 0,
                ts_fraction: int = 0, special: bool = False) -> bytes:
    """Wrap an FC frame (header + payload + CRC, as from ``build_fc_frame``)."""
    total = HEADER_SIZE + 4 + len(fc_frame) + 4
    if total % 4:
        raise ValueError(f"fcip: frame of {len(fc_frame)} bytes is not word aligned")
    words = total // 4
    if not MIN_FRAME_WORDS <= words <= MAX_FRAME_WORDS:
        raise ValueError(f"fcip: frame length {words} words outside {MIN_FRAME_WORDS}..{MAX_FRAME_WORDS}")
    pflags = PFLAG_SPECIAL_FRAME if special else 0
    flags_len = words
    header = FCIP_HEADER.build(
        protocol=FCIP_PROTOCOL, version=FCIP_VERSION,
        protocol_c=~FCIP_PROTOCOL & 0xFF, version_c=~FCIP_VERSION & 0xFF,
        protocol_specific=int.from_bytes(_PROTOCOL_WORD, "big"),
        pflags=pflags, reserved=0, pflags_c=~pflags & 0xFF, reserved_c=0xFF,
        flags_len=flags_len, flags_len_c=~flags_len & 0xFFFF,
        ts_seconds=ts_seconds, ts_fraction=ts_fraction, encap_crc=0)
    return header + delimiter_word(sof) + fc_frame + delimiter_word(eof)


def build_fcip_frame(header: dict, payload: bytes = b"", sof: int = Sof.I3, eof: int = Eof.T,
                     **encap) -> bytes:
    return encapsulate(build_fc_frame(header, payload), sof, eof, **encap)


def _complement(encap, a: str, b: str, width_mask: int, base: int, offset: int) -> None:
    if encap[b] != (~encap[a] & width_mask):
        raise DecodeError("fcip", b, base + offset + FCIP_HEADER.offsets[b],
                          f"0x{encap[b]:x} is not the complement of {a} 0x{encap[a]:x}")


def check_header(data, offset: int = 0, base: int = 0, fast: bool = False) -> dict:
    """Parse and check the encapsulation header; return it (``frame_len`` in words)."""
    encap = FCIP_HEADER.parse(data, offset, base, fast)
    at = base + offset
    if encap["protocol"] != FCIP_PROTOCOL:
        raise DecodeError("fcip", "protocol", at, f"protocol {encap['protocol']} is not FCIP (1)")
    if encap["version"] != FCIP_VERSION:
        raise DecodeError("fcip", "version", at + 1, f"unknown version {encap['version']}")
    _complement(encap, "protocol", "protocol_c", 0xFF, base, offset)
    _complement(encap, "version", "version_c", 0xFF, base, offset)
    if encap["protocol_specific"].to_bytes(4, "big") != _PROTOCOL_WORD:
        raise DecodeError("fcip", "protocol_specific", at + 4,
                          "FCIP requires a copy of bytes 0-3 here")
    _complement(encap, "pflags", "pflags_c", 0xFF, base, offset)
    if encap["reserved"] != 0:
        raise DecodeError("fcip", "reserved", at + 9, f"reserved byte is 0x{encap['reserved']:02x}")
    _complement(encap, "reserved", "reserved_c", 0xFF, base, offset)
    _complement(encap, "flags_len", "flags_len_c", 0xFFFF, base, offset)
    if encap["flags"] & FLAG_CRCV:
        raise DecodeError("fcip", "flags", at + 12, "CRCV set; FCIP requires it clear")
    words = encap["frame_len"]
    if not MIN_FRAME_WORDS <= words <= MAX_FRAME_WORDS:
        raise DecodeError("fcip", "frame_len", at + 12,
                          f"{words} words outside {MIN_FRAME_WORDS}..{MAX_FRAME_WORDS}")
    return encap


def parse_fcip_frame(data, offset: int = 0, base: int = 0, fast: bool = False) -> FcipFrame:
    """Decode one FCIP frame at ``data[offset:]``; raises :class:`DecodeError`."""
    encap = check_header(data, offset, base, fast)
    length = encap["frame_len"] * 4
    end = offset + length
    if end > len(data):
        raise DecodeError("fcip", "frame_len", base + offset + 12,
                          f"truncated: frame of {length} bytes, {len(data) - offset} present")
    if encap["pflags"] & PFLAG_SPECIAL_FRAME:
        return FcipFrame(encap, None, length, bytes(data[offset + HEADER_SIZE:end]))
    sof = parse_delimiter_word(data, offset + HEADER_SIZE, "fcip", "sof", Sof, base)
    eof = parse_delimiter_word(data, end - 4, "fcip", "eof", Eof, base)
    fc = parse_fc_frame(data, offset + HEADER_SIZE + 4, end - 4, base, fast)
    fc.sof, fc.eof = sof, eof
    return FcipFrame(encap, fc, length)
