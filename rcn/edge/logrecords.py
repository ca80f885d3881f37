"""The log store's segment records: encoding, and the scan that reads them back.

The byte layout is the field tables of ``datapath.frames.logstore`` (its
docstring has the picture); records are packed and unpacked with their
``struct`` packers, so every byte comes from the one table. ``scan_records``
judges each record the way replay needs (``rcn.edge.logstore``, "Replay"): a
record that cannot be read raises ``BadRecord``, which says whether it could be
a crash's torn tail.
"""

from __future__ import annotations

import re

import crc32c as _crc32c

from datapath.frames.logstore import (CHECKPOINT_COUNT, CHECKPOINT_ITEM, ENTRY_PREFIX,
                                      KIND_CHECKPOINT, KIND_ENTRY, KIND_NAMES, MAGIC, MAX_PAYLOAD,
                                      RECORD)

MAX_ENTRY_BYTES = MAX_PAYLOAD - ENTRY_PREFIX.size
SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
LOCK_NAME = "LOCK"

_crc = _crc32c.crc32c
_RESERVED = bytes(RECORD.by_name["reserved"].width)
_pack_header = RECORD.packer.pack
_pack_prefix = ENTRY_PREFIX.packer.pack
_pack_count = CHECKPOINT_COUNT.packer.pack
_pack_item = CHECKPOINT_ITEM.packer.pack


def segment_name(number: int) -> str:
    return f"{number:016d}.seg"


def encode_entry(group: int, sequence: int, entry: bytes) -> list[bytes]:
    """An ENTRY record as pieces (header, prefix, entry): the entry is not copied."""
    prefix = _pack_prefix(group, sequence)
    crc = _crc(entry, _crc(prefix))
    return [_pack_header(MAGIC, KIND_ENTRY, _RESERVED, len(prefix) + len(entry), crc), prefix,
            entry]


def encode_checkpoint(items: list[tuple[int, int, int]]) -> bytes:
    """A CHECKPOINT record of (group, generation, deleted) items."""
    payload = _pack_count(len(items)) + b"".join(_pack_item(*item) for item in items)
    return _pack_header(MAGIC, KIND_CHECKPOINT, _RESERVED, len(payload), _crc(payload)) + payload


class BadRecord(Exception):
    def __init__(self, offset: int, reason: str, torn: bool):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.torn = torn      # could be a crash's torn tail, if it is in the last segment


def _bad_header(view, offset: int, magic: bytes, kind: int, length: int) -> BadRecord:
    zeroes = not any(view[offset:])
    what = (f"bad magic {bytes(magic)!r}" if magic != MAGIC else
            f"unknown kind {kind}" if kind not in KIND_NAMES else
            f"payload length {length} over the limit {MAX_PAYLOAD}")
    return BadRecord(offset, what + (" (zero bytes to the end)" if zeroes else ""), zeroes)


def _checkpoint_items(offset: int, payload, length: int) -> list[tuple[int, int, int]]:
    count = CHECKPOINT_COUNT.packer.unpack_from(payload)[0] if length >= CHECKPOINT_COUNT.size \
        else -1
    if count < 0 or length != CHECKPOINT_COUNT.size + count * CHECKPOINT_ITEM.size:
        raise BadRecord(offset, f"CHECKPOINT payload of {length} bytes does not hold "
                        f"the {count} items it announces", False)
    unpack = CHECKPOINT_ITEM.packer.unpack_from
    return [unpack(payload, CHECKPOINT_COUNT.size + i * CHECKPOINT_ITEM.size)
            for i in range(count)]


def scan_records(data: bytes):
    """Yield ``(offset, kind, value)`` for each record of a segment's bytes.

    ``value`` is ``(group, sequence, entry)`` for ENTRY and a list of
    ``(group, generation, deleted)`` for CHECKPOINT. Raises ``BadRecord`` at
    the first record that does not check out.
    """
    view = memoryview(data)
    end = len(data)
    offset = 0
    hsize = RECORD.size
    unpack_header = RECORD.packer.unpack_from
    unpack_prefix = ENTRY_PREFIX.packer.unpack_from
    while offset < end:
        if end - offset < hsize:
            raise BadRecord(offset, f"only {end - offset} bytes left, a header is {hsize}", True)
        magic, kind, _, length, crc = unpack_header(data, offset)
        if magic != MAGIC or kind not in KIND_NAMES or length > MAX_PAYLOAD:
            raise _bad_header(view, offset, magic, kind, length)
        start = offset + hsize
        stop = start + length
        if stop > end:
            raise BadRecord(offset, f"{KIND_NAMES[kind]} record of {length} bytes runs "
                            f"{stop - end} bytes past the end of the file", True)
        payload = view[start:stop]
        if _crc(payload) != crc:
            # Torn if nothing but zero bytes (pages a crash did not write) follow it.
            raise BadRecord(offset, f"CRC32C mismatch in a {KIND_NAMES[kind]} record of "
                            f"{length} bytes", stop == end or not any(view[stop:]))
        if kind == KIND_ENTRY:
            if length < ENTRY_PREFIX.size:
                raise BadRecord(offset, f"ENTRY payload of {length} bytes is shorter than "
                                f"its {ENTRY_PREFIX.size}-byte group/sequence prefix", False)
            group, sequence = unpack_prefix(payload)
            yield offset, kind, (group, sequence, bytes(payload[ENTRY_PREFIX.size:]))
        else:
            yield offset, kind, _checkpoint_items(offset, payload, length)
        offset = stop
