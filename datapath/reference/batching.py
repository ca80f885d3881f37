"""Reference model of ``datapath.kernels.batching``: batch coalescing in plain Python.

The same operations as the kernel wrappers, on lists, bytes and sets:
``plan_batches`` (greedy batch boundaries under a byte budget and a count
limit), ``pack`` (``logentry.build_batch`` per batch), ``unpack``
(``logentry.parse_batch``) and ``coalesce_plan`` (sets of block numbers).
"""

from __future__ import annotations

from datapath.frames import logentry
from datapath.frames.logentry import COUNT_HEADER, HEADER_SIZE, MAX_BATCH

BATCH_OVERHEAD = HEADER_SIZE + COUNT_HEADER.size     # 96


def padded(length: int) -> int:
    """An entry's share of a batch body: its length rounded up to 8."""
    return length + (-length % 8)


def plan_batches(lengths: list[int], byte_budget: int,
                 count_limit: int = MAX_BATCH) -> tuple[list[int], list[int]]:
    """``(starts, ends)``: batch k holds entries ``starts[k]:ends[k]``.

    Greedy in order: an entry joins the open batch if the batch then holds at
    most ``count_limit`` entries and its datagram (96 + padded lengths) stays
    within ``byte_budget``; else it opens a new batch. An entry too big for
    the budget on its own therefore sits alone in its batch.
    """
    batches: list[list[int]] = []
    size = 0
    for i, length in enumerate(lengths):
        if batches and len(batches[-1]) < count_limit and size + padded(length) <= byte_budget:
            batches[-1].append(i)
            size += padded(length)
        else:
            batches.append([i])
            size = BATCH_OVERHEAD + padded(length)
    return [b[0] for b in batches], [b[-1] + 1 for b in batches]


def pack(data: bytes, offsets: list[int], lengths: list[int], starts: list[int],
         ends: list[int], sequences: list[int] | None = None, **fields) -> list[bytes]:
    """One BATCH datagram per batch, built by ``logentry.build_batch``."""
    out = []
    for k, (start, end) in enumerate(zip(starts, ends)):
        entries = [bytes(data[offsets[i]:offsets[i] + lengths[i]]) for i in range(start, end)]
        extra = {} if sequences is None else {"sequence": sequences[k]}
        out.append(logentry.build_batch(entries, **fields, **extra))
    return out


def unpack(batch: bytes, base: int = 0) -> tuple[list[int], list[int]]:
    """``(offsets, lengths)`` of the inner entries; ``DecodeError`` as ``parse_batch`` raises."""
    _, spans = logentry.parse_batch(bytes(batch), base)
    return [o for o, _ in spans], [n for _, n in spans]


def coalesce_plan(keys: list[int], lbas: list[int], blocks: list[int]) -> list[bool]:
    """Write i is droppable iff it covers a block and every block it covers is
    covered by a later write of the same key. Valid to apply only when the
    receiver applies the whole batch atomically (see the kernel's docstring)."""
    later: dict[int, set[int]] = {}
    droppable = [False] * len(keys)
    for i in range(len(keys) - 1, -1, -1):
        covered = later.setdefault(keys[i], set())
        own = set(range(lbas[i], lbas[i] + blocks[i]))
        droppable[i] = bool(own) and own <= covered
        covered |= own
    return droppable
