"""The edge's log storage area on disk: segment records (DESIGN.md 3.3; rcn.edge.logstore).

A segment file (``NNNNNNNNNNNNNNNN.seg``) is a sequence of records, each a
16-byte ``RECORD`` header and its payload; all integers are big-endian::

    offset  size  field
    0       4     magic  b"RCLS"
    4       1     kind   1 ENTRY, 2 CHECKPOINT
    5       3     reserved, zero (not checked on reading)
    8       4     length of the payload (u32, at most MAX_PAYLOAD)
    12      4     CRC32C of the payload (u32)
    16      ...   payload

Payloads:

* ENTRY: ``ENTRY_PREFIX`` (group u32 | sequence u64), then the entry's bytes.
* CHECKPOINT: ``CHECKPOINT_COUNT`` (n u32), then ``n`` ``CHECKPOINT_ITEM``\\ s
  (group u32 | generation u64 | deleted u64).

The code that writes and reads them is ``rcn.edge.logrecords``; what the
values mean (generation and delete counters, torn tails) is explained in
``rcn.edge.logstore``.
"""

from __future__ import annotations

from datapath.frames.fields import Layout, raw, uint

MAGIC = b"RCLS"
KIND_ENTRY = 1
KIND_CHECKPOINT = 2
KIND_NAMES = {KIND_ENTRY: "ENTRY", KIND_CHECKPOINT: "CHECKPOINT"}
MAX_PAYLOAD = 1 << 30

RECORD = Layout("logstore_record", [
    raw("magic", 4, "b'RCLS'"),
    uint("kind", 1, "ENTRY 1, CHECKPOINT 2", values=KIND_NAMES),
    raw("reserved", 3, "zero"),
    uint("length", 4, "payload bytes after this header, at most 2**30"),
    uint("crc32c", 4, "CRC32C of the payload"),
], doc="log store segment record header")

ENTRY_PREFIX = Layout("logstore_entry", [
    uint("group", 4, "order guarantee ID"),
    uint("sequence", 8, "sequence number within the group"),
], doc="first bytes of an ENTRY payload; the entry's bytes follow")

CHECKPOINT_COUNT = Layout("logstore_checkpoint", [
    uint("count", 4, "CHECKPOINT_ITEMs that follow"),
], doc="first bytes of a CHECKPOINT payload")

CHECKPOINT_ITEM = Layout("logstore_checkpoint_item", [
    uint("group", 4, "order guarantee ID"),
    uint("generation", 8, "highest sequence handed to the file (or the delete counter)"),
    uint("deleted", 8, "delete counter: every sequence up to it is deleted"),
], doc="one group's counters in a CHECKPOINT payload")
