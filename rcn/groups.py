"""Order guarantee IDs (DESIGN.md 4; 【0063】【0064】): the group a pair's writes are ordered in.

====== ==================================== ===============================================
policy one ID per                              the ID
====== ==================================== ===============================================
A-1    (source storage, target storage)     bit 30 set; the low 30 bits: CRC-32 of the two
                                            WWNs, 8 bytes each, big-endian
A-2    (source edge, target edge)           bit 31 set; the low 30 bits: CRC-32 of
                                            ``"{source}>{target}"``, the two edges as text
                                            (their log-transfer addresses)
B      given by the administrator           the pair's own, 1..:data:`MAX_B_GROUP` (bits 30
                                            and 31 clear, so never an A-1 or A-2 ID)
====== ==================================== ===============================================

One pure function, :func:`group_id`, for both places that compute them: an edge at
PAIR_CREATE (``rcn.edge.pairs.EdgePairs.group_for``) and the management server in
every snapshot (``rcn.mgmt.settings``); they must agree.
"""

from __future__ import annotations

import zlib

__all__ = ["POLICIES", "MAX_B_GROUP", "group_id"]

POLICIES = ("A-1", "A-2", "B")
MAX_B_GROUP = 0x3FFFFFFF       # bits 30 and 31 mark the IDs policies give
_A1, _A2 = 0x40000000, 0x80000000


def group_id(policy: str, group: int, source_wwn: int, target_wwn: int, source_edge,
             target_edge) -> int:
    """The order guarantee ID of a pair under ``policy``: B's given ``group``; A-1's from
    the two storages' WWNs; A-2's from the two edges (anything whose ``str`` names the
    edge: the server and the edges both pass log-transfer addresses)."""
    if policy == "A-1":
        key = source_wwn.to_bytes(8, "big") + target_wwn.to_bytes(8, "big")
        return _A1 | (zlib.crc32(key) & MAX_B_GROUP)
    if policy == "A-2":
        return _A2 | (zlib.crc32(f"{source_edge}>{target_edge}".encode()) & MAX_B_GROUP)
    if policy == "B":
        return group
    raise ValueError(f"group policy must be one of {', '.join(POLICIES)}, got {policy!r}")
