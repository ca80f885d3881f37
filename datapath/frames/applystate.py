"""The target edge's apply-counter file: two slots of one table (rcn.edge.applystate).

The file holds two copies (slots) of the table, at offsets 0 and ``SLOT_BYTES``;
each is a ``SLOT`` header then ``count`` ``ITEM``\\ s, all big-endian::

    offset  size  field
    0       4     magic b"RCAS"
    4       2     version, 2
    6       2     reserved, zero
    8       4     count n
    12      4     CRC32C of the generation (8 bytes, big-endian) and the n items
    16      8     generation (the write's number, from 1)
    24      12*n  n times ITEM: group u32, apply counter u64 (ascending groups)

A slot of zero bytes is an unwritten slot. Why two slots, and which one is read,
is explained in ``rcn.edge.applystate``.
"""

from __future__ import annotations

from datapath.frames.fields import Layout, raw, uint

MAGIC = b"RCAS"
VERSION = 2
SLOT_BYTES = 1 << 20

SLOT = Layout("applystate_slot", [
    raw("magic", 4, "b'RCAS'"),
    uint("version", 2, "file layout version, 2"),
    uint("reserved", 2, "zero"),
    uint("count", 4, "ITEMs that follow"),
    uint("crc32c", 4, "CRC32C of the generation and the items"),
    uint("generation", 8, "the write's number, from 1; the higher valid slot is current"),
], doc="apply counter file slot header")

ITEM = Layout("applystate_item", [
    uint("group", 4, "order guarantee ID"),
    uint("applied", 8, "apply counter: highest sequence applied to the target array"),
], doc="one group's apply counter")

MAX_GROUPS = (SLOT_BYTES - SLOT.size) // ITEM.size      # 87,379
