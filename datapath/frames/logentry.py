"""Log entries: the unit of the log-transfer channel (UDP, port 47001).

Every datagram holds one entry: an 88-byte header (8-byte aligned, big-endian)
and the entry's body of ``rio_length`` bytes.

Version
    ``version`` is 2. A receiver rejects any other version (``DecodeError`` on
    ``log.version``) and counts it; a new version changes the magic-to-CRC
    layout only together with this number. Version 2 (sealed log transfer,
    DESIGN.md 9) turned version 1's reserved bytes into ``seal`` and
    ``key_epoch``; the layout's size and every other offset are unchanged.

End-to-end seal (``seal`` = 1)
    The body of a WR, WROK, CTRL, CTRL_OK or NAK is sealed by the edge that made
    it under the key of its order guarantee group (epoch ``key_epoch``), before
    it is cut into segments: ``nonce`` (12 random bytes), the ciphertext, then
    the 16-byte GCM tag (``SEALED_OVERHEAD`` = 28 bytes more than the clear
    body; ``total_length`` counts the sealed body). The associated data is the
    header itself with the fields a relay or a retransmission may change zeroed
    (:func:`e2e_aad`): ``ttl``, the RETRANSMIT flag, ``segment_index``,
    ``segment_count``, ``segment_offset``, ``rio_length`` and ``crc32c``. KEEPALIVE and BATCH are
    never sealed end to end (a BATCH's entries are, each on its own).

Types and bodies
    WR, CTRL, WROK, CTRL_OK
        the RIO area (patent 805): the exchange's FC frames, each as a unit of a
        4-byte length then the frame between SOF and EOF ordered sets (the
        layout Wireshark's ``fcsof`` dissector reads). WROK and CTRL_OK carry
        the answering FCP_RSP (and DPOK's bitmap data-in). A WROK with flag
        CUMULATIVE answers every WR of its group up to and including its
        sequence (CTRL entries keep their own CTRL_OK): a target edge that
        makes many applies durable at once sends one.
    NAK
        count, reserved, then ``count`` (first, last) sequence ranges.
    KEEPALIVE
        probe ID and the echoed sender time (a probe is answered by echoing).
    BATCH
        count, reserved, then ``count`` whole entries, each padded to 8 bytes.

Segmentation (patent 【0078】)
    An RIO area larger than one datagram is split: every segment repeats the
    header with ``segment_index`` of ``segment_count``, ``segment_offset`` into
    the area, ``total_length`` of the whole area; ``rio_length`` is this
    segment's share.

CRC32C covers the header (with ``crc32c`` zero) and the body.

Parsed headers are :class:`LogHeader` records (made from the ``LOG_HEADER`` table by
``fields.record_type``): ``entry.header.sequence``, never ``header["sequence"]``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c as _crc32c

from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, raw, record_type, uint

MAGIC = 0x52434E4C          # "RCNL"
VERSION = 2
LOG_PORT = 47001
UNIT_LENGTH_SIZE = 4
MIN_UNIT = 8 + 24 + 4       # ordered sets, FC header, CRC
MAX_BATCH = 4096


class EntryType(enum.IntEnum):
    WR = 1
    WROK = 2
    CTRL = 3
    CTRL_OK = 4
    NAK = 5
    BATCH = 6
    KEEPALIVE = 7


class EntryFlag(enum.IntFlag):
    RETRANSMIT = 0x0001      # the source edge sent this entry before
    RESENT_ACK = 0x0002      # a WROK re-sent for an entry the target had already applied
    CUMULATIVE = 0x0004      # a WROK for every WR of the group up to and including its sequence
    RESTART = 0x0008         # a CTRL: every unapplied sequence of the group below it is void
    REVERSE = 0x0010         # a CTRL from the target edge to the source edge (failover)


RIO_TYPES = frozenset({EntryType.WR, EntryType.WROK, EntryType.CTRL, EntryType.CTRL_OK})

LOG_HEADER = Layout("log", [
    uint("magic", 4, "0x52434E4C 'RCNL'"),
    uint("version", 1, "layout version, 2"),
    uint("entry_type", 1, "WR 1, WROK 2, CTRL 3, CTRL_OK 4, NAK 5, BATCH 6, KEEPALIVE 7",
         values={v.value: v.name for v in EntryType}),
    uint("flags", 2, "0x0001 retransmit, 0x0002 re-sent acknowledgement, 0x0004 cumulative WROK, "
                     "0x0008 restart (CTRL), 0x0010 reverse (CTRL)"),
    uint("group_id", 4, "order guarantee ID (803)"),
    uint("ttl", 1, "hops left; a relay drops the entry at 0"),
    uint("seal", 1, "RIO area (or NAK body) sealed end to end: 0 clear, 1 AES-256-GCM under "
                    "the group key of epoch key_epoch", values={0: "clear", 1: "AES-256-GCM"}),
    raw("reserved", 2, "0"),
    uint("sequence", 8, "sequence number within the group (804)"),
    uint("io_time_ns", 8, "time the source edge received the I/O, ns since the epoch (804)"),
    uint("target_wwn", 8, "target storage WWN (801)"),
    uint("target_lun", 8, "target LUN (801)"),
    uint("source_wwn", 8, "source storage WWN (802)"),
    uint("source_lun", 8, "source LUN (802)"),
    uint("segment_index", 2, "index of this segment"),
    uint("segment_count", 2, "segments of the entry"),
    uint("segment_offset", 4, "offset of this segment in the RIO area"),
    uint("total_length", 4, "bytes of the whole RIO area"),
    uint("rio_length", 4, "bytes after the header in this datagram"),
    uint("crc32c", 4, "CRC32C of header (this field zero) and body"),
    uint("key_epoch", 4, "epoch of the group key the body is sealed under; 0 when clear"),
], doc="RCN log entry header")

HEADER_SIZE = LOG_HEADER.size     # 88
#: a parsed log entry header: one attribute per row of LOG_HEADER
LogHeader = record_type(LOG_HEADER, "LogHeader", __name__)
_CRC_AT = LOG_HEADER.offsets["crc32c"]

COUNT_HEADER = Layout("log_count", [
    uint("count", 4, "number of items that follow"),
    uint("reserved", 4, "0"),
], doc="count prefix of NAK and BATCH bodies")

NAK_RANGE = Layout("log_nak_range", [
    uint("first", 8, "first missing sequence"),
    uint("last", 8, "last missing sequence (inclusive)"),
], doc="one missing range")

KEEPALIVE = Layout("log_keepalive", [
    uint("probe_id", 8, "probe identifier"),
    uint("echo_time_ns", 8, "sender's time, echoed back by the answer"),
], doc="keepalive / probe body")


@dataclass
class LogEntry:
    header: LogHeader
    payload: bytes
    crc_ok: bool
    length: int            # header + body bytes


SEAL_NONCE_SIZE = 12
SEAL_TAG_SIZE = 16
#: bytes a sealed body has more than the clear one: the nonce before, the tag after
SEALED_OVERHEAD = SEAL_NONCE_SIZE + SEAL_TAG_SIZE
SEALABLE_TYPES = frozenset({EntryType.WR, EntryType.WROK, EntryType.CTRL, EntryType.CTRL_OK,
                            EntryType.NAK})


_NOT_RETRANSMIT = ~int(EntryFlag.RETRANSMIT) & 0xFFFF


class Seal(enum.IntEnum):
    CLEAR = 0
    AES_256_GCM = 1


def e2e_aad(entry_type: int, header: "LogHeader | None" = None, **fields) -> bytes:
    """The associated data of an end-to-end seal: the header as the source built it, with
    the fields a relay, a retransmission or segmentation may change zeroed (ttl, the
    RETRANSMIT flag, segment_index, segment_count, segment_offset, rio_length, crc32c).
    From a parsed ``header``, or from ``build_entry``'s ``fields`` (``total_length``: the
    sealed body's)."""
    h = header if header is not None else _AAD_DEFAULTS._replace(**fields)
    return _HEADER_PACK.pack(
        MAGIC, h.version, entry_type, h.flags & _NOT_RETRANSMIT, h.group_id, 0, h.seal,
        b"\x00\x00", h.sequence, h.io_time_ns, h.target_wwn, h.target_lun, h.source_wwn,
        h.source_lun, 0, 0, 0, h.total_length, 0, 0, h.key_epoch)


#: what ``e2e_aad`` takes for a field ``build_entry``'s caller did not give
_AAD_DEFAULTS = LogHeader(*[0] * len(LOG_HEADER.fields))._replace(version=VERSION)


def entry_crc(header: bytes, body: bytes) -> int:
    zeroed = header[:_CRC_AT] + b"\x00\x00\x00\x00" + header[_CRC_AT + 4:]
    return _crc32c.crc32c(body, _crc32c.crc32c(zeroed))


_HEADER_PACK = LOG_HEADER.packer          # every field of the header fits a struct code
_BUILD_FIELDS = frozenset(LOG_HEADER.by_name) - {"magic", "entry_type", "rio_length", "crc32c"}
_ENTRY_TYPES = frozenset(int(t) for t in EntryType)


def build_entry(entry_type: int, body: bytes = b"", *, head: bytes = b"", **fields) -> bytes:
    """Header with CRC for ``head`` + ``body`` (the body's first bytes given apart, so a
    sealed body's nonce is not joined to its ciphertext only to be copied again); single
    segment unless segment fields are given.

    The daemons build one per log entry, so the header is one struct pack (the
    layout's own, byte-identical to ``LOG_HEADER.build``) and the CRC32C runs over
    the header as packed (its CRC field zero) and the body, without copies.
    """
    unknown = fields.keys() - _BUILD_FIELDS
    if unknown:
        raise KeyError(f"log: unknown fields {sorted(unknown)}")
    if entry_type not in _ENTRY_TYPES:
        raise ValueError(f"log: unknown entry type {entry_type}")
    get = fields.get
    size = len(head) + len(body)
    try:
        header = _HEADER_PACK.pack(
            MAGIC, get("version", VERSION), entry_type, get("flags", 0), get("group_id", 0),
            get("ttl", 16), get("seal", 0), get("reserved", b"\x00\x00"), get("sequence", 0),
            get("io_time_ns", 0), get("target_wwn", 0), get("target_lun", 0),
            get("source_wwn", 0), get("source_lun", 0), get("segment_index", 0),
            get("segment_count", 1), get("segment_offset", 0), get("total_length", size), size,
            0, get("key_epoch", 0))
    except struct.error as exc:
        raise ValueError(f"log: cannot build: {exc}") from None
    crc = _crc32c.crc32c(body, _crc32c.crc32c(head, _crc32c.crc32c(header)))
    return b"".join((header[:_CRC_AT], crc.to_bytes(4, "big"), header[_CRC_AT + 4:], head,
                     body))


def segment_entry(entry_type: int, area: bytes, max_body: int, *, head: bytes = b"",
                  **fields) -> list[bytes]:
    """One datagram per ``max_body`` bytes of the RIO area ``head`` + ``area`` (patent
    【0078】); ``head`` (shorter than ``max_body``) starts the first segment."""
    if max_body <= len(head):
        raise ValueError(f"log: segment body of {max_body} bytes")
    total = len(head) + len(area)
    count = max(1, -(-total // max_body))
    if count > 0xFFFF:
        raise ValueError(f"log: {total} bytes need {count} segments, more than 65535")
    if count > 1:
        area = memoryview(area)     # each segment's body is copied once, into its datagram
    first = max_body - len(head)
    out = [build_entry(entry_type, area[:first], head=head, segment_count=count,
                       total_length=total, **fields)]
    for index, offset in enumerate(range(max_body, total, max_body), 1):
        at = offset - len(head)
        out.append(build_entry(entry_type, area[at:at + max_body], segment_index=index,
                               segment_count=count, segment_offset=offset,
                               total_length=total, **fields))
    return out


def build_rio_area(units: list[bytes]) -> bytes:
    """Units are SOF..EOF frames (``fc.build_sof_eof_unit``)."""
    return b"".join(len(u).to_bytes(UNIT_LENGTH_SIZE, "big") + u for u in units)


def nak_body(ranges: list[tuple[int, int]]) -> bytes:
    return COUNT_HEADER.build(count=len(ranges)) + b"".join(
        NAK_RANGE.build(first=a, last=b) for a, b in ranges)


def build_nak(ranges: list[tuple[int, int]], **fields) -> bytes:
    return build_entry(EntryType.NAK, nak_body(ranges), **fields)


def build_keepalive(probe_id: int, echo_time_ns: int, **fields) -> bytes:
    return build_entry(EntryType.KEEPALIVE,
                       KEEPALIVE.build(probe_id=probe_id, echo_time_ns=echo_time_ns), **fields)


def build_batch(entries: list[bytes], **fields) -> bytes:
    body = bytearray(COUNT_HEADER.build(count=len(entries)))
    for entry in entries:
        body += entry + bytes(-len(entry) % 8)
    return build_entry(EntryType.BATCH, bytes(body), **fields)


def parse_entry(buf, offset: int = 0, base: int = 0, fast: bool = False) -> LogEntry:
    """One entry at ``buf[offset:]``; extra bytes after it are the caller's business."""
    header = LogHeader.parse(buf, offset, base, fast)
    at = base + offset
    if header.magic != MAGIC:
        raise DecodeError("log", "magic", at, f"0x{header.magic:08x} is not 'RCNL'")
    if header.version != VERSION:
        raise DecodeError("log", "version", at + 4, f"unknown version {header.version}")
    if header.entry_type not in _ENTRY_TYPES:
        raise DecodeError("log", "entry_type", at + 5,
                          f"unknown entry type {header.entry_type}")
    count, index = header.segment_count, header.segment_index
    if count == 0 or index >= count:
        raise DecodeError("log", "segment_index", at + LOG_HEADER.offsets["segment_index"],
                          f"segment {index} of {count}")
    if header.segment_offset + header.rio_length > header.total_length:
        raise DecodeError("log", "total_length", at + LOG_HEADER.offsets["total_length"],
                          f"segment at {header.segment_offset} of {header.rio_length} bytes "
                          f"overruns total length {header.total_length}")
    end = offset + HEADER_SIZE + header.rio_length
    if end > len(buf):
        raise DecodeError("log", "rio_length", at + LOG_HEADER.offsets["rio_length"],
                          f"truncated: body of {header.rio_length} bytes, "
                          f"{len(buf) - offset - HEADER_SIZE} present")
    raw_header = bytes(buf[offset:offset + HEADER_SIZE])
    body = bytes(buf[offset + HEADER_SIZE:end])
    return LogEntry(header, body, entry_crc(raw_header, body) == header.crc32c,
                    HEADER_SIZE + header.rio_length)


def parse_datagram(data: bytes, base: int = 0, fast: bool = False) -> LogEntry:
    """A whole datagram: exactly one entry, nothing after it."""
    entry = parse_entry(data, 0, base, fast)
    if entry.length != len(data):
        raise DecodeError("log", "rio_length", base + LOG_HEADER.offsets["rio_length"],
                          f"{len(data) - entry.length} bytes after the entry")
    return entry


def _counted(body: bytes, base: int, item: Layout | None) -> int:
    head = COUNT_HEADER.parse(body, 0, base)
    if item is not None and COUNT_HEADER.size + head["count"] * item.size != len(body):
        raise DecodeError(COUNT_HEADER.layer, "count", base,
                          f"{head['count']} items of {item.size} bytes do not fill "
                          f"{len(body) - COUNT_HEADER.size} bytes")
    return head["count"]


def parse_nak_ranges(body: bytes, base: int = 0) -> list[tuple[int, int]]:
    count = _counted(body, base, NAK_RANGE)
    ranges = []
    for i in range(count):
        at = COUNT_HEADER.size + i * NAK_RANGE.size
        r = NAK_RANGE.parse(body, at, base)
        if r["first"] > r["last"]:
            raise DecodeError("log_nak_range", "last", base + at + 8,
                              f"range {r['first']}..{r['last']} is reversed")
        ranges.append((r["first"], r["last"]))
    return ranges


def parse_keepalive(body: bytes, base: int = 0) -> dict:
    if len(body) != KEEPALIVE.size:
        KEEPALIVE.check_length(body, 0, base)
        raise DecodeError("log_keepalive", "echo_time_ns", base + KEEPALIVE.size,
                          f"{len(body) - KEEPALIVE.size} bytes after the probe")
    return KEEPALIVE.parse(body, 0, base)


def parse_batch(buf: bytes, base: int = 0, fast: bool = False) -> tuple[LogEntry, list[tuple[int, int]]]:
    """A BATCH entry and the ``(offset, length)`` of each inner entry (offsets with ``base``)."""
    outer = parse_entry(buf, 0, base, fast)
    body_at = HEADER_SIZE
    count = _counted(outer.payload, base + body_at, None)
    if count > MAX_BATCH:
        raise DecodeError("log_count", "count", base + body_at, f"{count} entries exceed {MAX_BATCH}")
    spans, at = [], body_at + COUNT_HEADER.size
    for _ in range(count):
        inner = parse_entry(buf[:outer.length], at, base, fast)
        if inner.header.entry_type == EntryType.BATCH:
            raise DecodeError("log", "entry_type", base + at + 5, "a batch inside a batch")
        spans.append((base + at, inner.length))
        at += inner.length + (-inner.length % 8)
    if at != outer.length:
        raise DecodeError("log_count", "count", base + body_at,
                          f"{count} entries end at byte {at}, the batch at {outer.length}")
    return outer, spans


def split_rio_area(area: bytes, base: int = 0) -> list[tuple[int, int]]:
    """``(offset, length)`` of each SOF..EOF unit in an RIO area (offsets with ``base``)."""
    units, at = [], 0
    while at < len(area):
        if len(area) - at < UNIT_LENGTH_SIZE:
            raise DecodeError("log_rio", "unit_length", base + at,
                              f"truncated: {len(area) - at} bytes left")
        length = int.from_bytes(area[at:at + UNIT_LENGTH_SIZE], "big")
        start = at + UNIT_LENGTH_SIZE
        if length < MIN_UNIT or length % 4 or start + length > len(area):
            raise DecodeError("log_rio", "unit_length", base + at,
                              f"unit of {length} bytes does not fit the {len(area) - start} left")
        units.append((base + start, length))
        at = start + length
    return units
