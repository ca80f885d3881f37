"""The hop envelope: every log-transfer datagram between neighbours (DESIGN.md 9).

A sealed datagram is a 24-byte hop header, the log entry (or BATCH) in clear, and a
16-byte tag::

    | HOP_HEADER (24) | log entry or BATCH (logentry.py) | tag (16) |

The tag is AES-256-GCM's over an empty plaintext with associated data (GMAC) of what
:func:`hop_covered` names: the whole entry or BATCH, except for a datagram of one entry
sealed end to end (``logentry``'s ``seal``, a type in ``SEALABLE_TYPES``), where it is the
entry's 88-byte header only. That body is bound already, under the group key's tag, which
only the target edge can check: a hop tag over it would make every hop pass over the
customer's data twice (check, re-tag) to prove what the target proves anyway. So a hop
proves who sent the datagram, that its header did not change and that it is not a replay;
a body altered on a link passes the cores and is refused at the target edge
(``e2e_bad_tag``, then a NAK or the sender's timer resends it), as a datagram dropped on
the link would be. The rule reads only header bytes, which the tag covers either way: a
datagram whose ``seal`` or type was changed in flight fails its tag. Key: the link's key of
epoch ``key_epoch``, one per sending direction (HKDF from the link key, ``rcn.logxfer.seal``).
Nonce: the header's last 12 bytes, ``reserved2`` (zero) then ``counter`` -- a 64-bit counter
per sending device that starts at the wall clock's nanoseconds when the device starts, so it
never repeats across restarts, and that receivers check with a sliding replay window. So
every hop header byte is bound without being associated data (which would make a sender copy
the entry behind it): the epoch picks the key, the nonce is in the tag, and a receiver
requires ``version``, ``suite`` and ``reserved`` to be exactly 1, 1, 0. A sender gathers
header, entry and tag into one datagram (``sendmsg``) without copying the entry.

An inline AES-GCM engine in a NIC computes this tag as the datagram streams out (the
same place IPsec or kTLS offload puts it); see ``hdl_models/README.md``.
"""

from __future__ import annotations

from datapath.frames.fields import Layout, raw, uint
from datapath.frames.logentry import HEADER_SIZE, LOG_HEADER, SEALABLE_TYPES, Seal

HOP_MAGIC = 0x52434E48      # "RCNH"
HOP_VERSION = 1
HOP_TAG_SIZE = 16
SUITE_AES_256_GCM = 1

HOP_HEADER = Layout("hop", [
    uint("magic", 4, "0x52434E48 'RCNH'"),
    uint("version", 1, "hop envelope version, 1"),
    uint("suite", 1, "1: AES-256-GCM tag (GMAC) over the entry, or over its header when its "
                     "body is sealed end to end", values={1: "AES-256-GCM"}),
    raw("reserved", 2, "0"),
    uint("key_epoch", 4, "epoch of the link key"),
    raw("reserved2", 4, "0"),
    uint("counter", 8, "sender's datagram counter: the nonce's last 8 bytes, checked by a "
                       "replay window"),
], doc="RCN hop envelope header")

HOP_HEADER_SIZE = HOP_HEADER.size          # 24
HOP_OVERHEAD = HOP_HEADER_SIZE + HOP_TAG_SIZE
HOP_MAGIC_BYTES = HOP_MAGIC.to_bytes(4, "big")
_PACK = HOP_HEADER.packer


def build_hop_header(key_epoch: int, counter: int) -> bytes:
    return _PACK.pack(HOP_MAGIC, HOP_VERSION, SUITE_AES_256_GCM, b"\x00\x00", key_epoch,
                      b"\x00\x00\x00\x00", counter)


def hop_nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


_SEAL_AT = LOG_HEADER.offsets["seal"]
_TYPE_AT = LOG_HEADER.offsets["entry_type"]       # one byte
_E2E_TYPES = frozenset(int(t) for t in SEALABLE_TYPES)
_E2E_SEALED = int(Seal.AES_256_GCM)


def hop_covered(inner):
    """What a hop tag authenticates of ``inner`` (a log entry or BATCH): its header alone
    when it is one entry sealed end to end, else all of it (see the module doc)."""
    if len(inner) > HEADER_SIZE and inner[_SEAL_AT] == _E2E_SEALED \
            and inner[_TYPE_AT] in _E2E_TYPES:
        return inner[:HEADER_SIZE]
    return inner
