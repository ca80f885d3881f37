"""The write-coalescing plan of one batch: which writes a receiver may drop because
later writes of the same batch cover every block they write.

``coalesce_plan(keys, lbas, blocks)`` (an ``@njit`` kernel with a checking wrapper;
``datapath.reference.batching.coalesce_plan`` is its model): see its docstring for when
the plan may be applied at all.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from datapath.kernels._checks import require_array

__all__ = ["coalesce_plan", "warm_up"]

_i64 = types.Array(types.int64, 1, "C")
_u64 = types.Array(types.uint64, 1, "C")
_u32 = types.Array(types.uint32, 1, "C")


def _coalesce_impl(order, point_key, point_hi, point_lo, blocks, rank, parent, droppable):
    """Droppable flags of ``n`` writes from their ``2n`` sorted interval end points.

    Point ``i`` (< n) is write i's first block, point ``n + i`` the block after its
    last (``point_hi`` 1 for 2**64). ``order`` sorts the points by (key, hi, lo).
    Equal points get one rank; the ranks cut each key's block space into
    elementary segments, segment r running from point rank r to rank r + 1.
    Writes are visited from last to first; ``parent`` is a union-find "next
    segment not yet covered by a later write" (path halving), so a write is
    droppable iff the first uncovered segment at or after its start lies at or
    after its end. Every loop is bounded by ``2n``.
    """
    n = blocks.shape[0]
    m = order.shape[0]
    r = np.int64(-1)
    for j in range(m):
        p = order[j]
        if j == 0 or (point_key[p] != point_key[order[j - 1]]
                      or point_hi[p] != point_hi[order[j - 1]]
                      or point_lo[p] != point_lo[order[j - 1]]):
            r += 1
        rank[p] = r
    for j in range(m + 1):
        parent[j] = j
    for i in range(n - 1, -1, -1):
        if blocks[i] == 0:
            droppable[i] = 0
            continue
        first = rank[i]
        end = rank[n + i]
        # find(first)
        x = first
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        droppable[i] = 1 if x >= end else 0
        # cover [x, end): every segment found uncovered now points past this write
        while x < end:
            parent[x] = end
            x = x + 1
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
    return 0


_coalesce_kernel = njit(
    types.int64(_i64, _u64, types.Array(types.uint8, 1, "C"), _u64, _u32, _i64, _i64,
                types.Array(types.uint8, 1, "C")),
    cache=True, nogil=True)(_coalesce_impl)


def coalesce_plan(keys: np.ndarray, lbas: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Which writes of one batch a receiver may drop: a bool array, True = droppable.

    ``keys`` (uint64: the volume, e.g. group or LUN id), ``lbas`` (uint64) and
    ``blocks`` (uint32) describe the batch's writes in order. Write i is
    droppable iff it covers at least one block and every block it covers
    (``lbas[i]`` .. ``lbas[i] + blocks[i] - 1``) is covered by the union of the
    writes *after* it in the batch with the same key. A write of zero blocks is
    never droppable (it carries no data, so dropping it saves nothing). A write
    may end at block 2**64 - 1; one that would run past it is a ``ValueError``.

    **When the plan may be applied**: only when the receiver applies the whole
    batch atomically: all of it or nothing, no intermediate state visible to
    anyone and no crash point between its writes. The result of applying the
    whole batch is the same with or without the dropped writes, but the states
    *between* its writes are not: if the receiver could stop part way (a crash,
    a power loss, a reader looking), a dropped write leaves the volume in a state
    that never existed at the source, breaking prefix consistency (every state
    of the copy must be a state the source had, in order). Without atomic
    application, drop nothing.

    Work: the wrapper sorts the 2n interval end points with numpy (one argsort
    of a packed 64-bit key when the keys' and LBAs' spreads fit side by side,
    else a lexsort); the kernel ranks them and runs a union-find over the
    elementary segments from the last write back: O(n log n) in all.
    """
    keys = require_array("keys", keys, np.uint64)
    n = keys.shape[0]
    lbas = require_array("lbas", lbas, np.uint64, shape=(n,))
    blocks = require_array("blocks", blocks, np.uint32, shape=(n,))
    droppable = np.zeros(n, dtype=np.uint8)
    if n == 0:
        return droppable.view(np.bool_)
    end_lo = lbas + blocks.astype(np.uint64)           # wraps to 0 for an end at 2**64
    wrapped = end_lo < lbas
    if wrapped.any():
        past = wrapped & (end_lo != 0)
        if past.any():
            i = int(np.argmax(past))
            raise ValueError(f"lbas/blocks: write {i} runs past block 2**64 - 1")
    point_key = np.concatenate((keys, keys))
    point_lo = np.concatenate((lbas, end_lo))
    point_hi = np.zeros(2 * n, dtype=np.uint8)
    order = None
    if not wrapped.any():
        # One 64-bit sort key when (key - min key, lba - min lba) fit side by side:
        # a plain argsort is ~4x faster than lexsort on two keys.
        low, high = int(lbas.min()), int(end_lo.max())
        key_low, key_high = int(keys.min()), int(keys.max())
        shift = (high - low).bit_length()
        if shift + (key_high - key_low).bit_length() <= 64:
            composite = point_lo - np.uint64(low)
            if key_high != key_low:
                composite |= (point_key - np.uint64(key_low)) << np.uint64(shift)
            order = np.argsort(composite)
            point_key = point_lo = composite       # equal composites <=> equal points
    if order is None:
        point_hi[n:] = wrapped
        order = np.lexsort((point_lo, point_hi, point_key))
    order = order.astype(np.int64, copy=False)
    rank = np.empty(2 * n, dtype=np.int64)
    parent = np.empty(2 * n + 1, dtype=np.int64)
    _coalesce_kernel(order, point_key, point_hi, point_lo, blocks, rank, parent, droppable)
    return droppable.view(np.bool_)


def warm_up() -> None:
    """Run the kernel once on tiny inputs (fills numba's cache): the packed-key sort and
    the lexsort (a write ending at block 2**64 - 1)."""
    coalesce_plan(np.zeros(2, dtype=np.uint64), np.arange(2, dtype=np.uint64),
                  np.ones(2, dtype=np.uint32))
    coalesce_plan(np.zeros(1, dtype=np.uint64), np.full(1, 2**64 - 1, dtype=np.uint64),
                  np.ones(1, dtype=np.uint32))
