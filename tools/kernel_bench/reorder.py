"""Benchmark rows of the sequence reorder buffer (datapath.kernels.reorder).

A buffer of ``capacity = 2**16 * scale`` (rounded to a power of two) slots:

insert   a random permutation of the whole window into an empty buffer.
release  the whole buffer, full, released as one run into a preallocated array
         (the issue's target: >= 50 M sequences/s).
missing  the NAK ranges of a window 90 % full with random holes (items: the
         sequences scanned).

Every variant does the same work on the same input; each timed call starts
from the same state, set up outside the timed region. The numpy variants are
the best vectorised alternatives over the same four state arrays.
"""

from __future__ import annotations

import time

import numpy as np

from datapath.kernels.reorder import (
    STATE_COUNT, STATE_HIGHEST, STATE_NEXT, VERDICT_ACCEPTED, VERDICT_APPLIED_DUPLICATE,
    VERDICT_BEYOND_WINDOW, VERDICT_BUFFERED_DUPLICATE, ReorderBuffer,
)
from datapath.reference.reorder import ReorderModel
from tools.kernel_bench import Row

RELEASE_TARGET = 50e6       # sequences/s, from the issue
FIRST = 1


def best_time_setup(setup, func, repeat: int = 5) -> float:
    """Like ``best_time``, but ``setup()`` runs untimed before each call and passes its result."""
    func(setup())
    best = float("inf")
    for _ in range(repeat):
        arg = setup()
        start = time.perf_counter()
        func(arg)
        best = min(best, time.perf_counter() - start)
    return best


# -- numpy alternatives -----------------------------------------------------------------

def numpy_insert(buffer: ReorderBuffer, sequences: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Vectorised insert: window test by modular difference, first occurrence via np.unique."""
    capacity = buffer.capacity
    state = buffer.state
    ahead = sequences - state[STATE_NEXT]                      # wraps mod 2**64
    verdicts = np.full(sequences.shape[0], VERDICT_BEYOND_WINDOW, dtype=np.uint8)
    verdicts[ahead >= np.uint64(1 << 63)] = VERDICT_APPLIED_DUPLICATE
    inside = np.flatnonzero(ahead < np.uint64(capacity))
    slots = (sequences[inside] & np.uint64(capacity - 1)).astype(np.int64)
    first = np.zeros(inside.shape[0], dtype=bool)
    first[np.unique(slots, return_index=True)[1]] = True
    accept = first & (buffer.slot_full[slots] == 0)
    verdicts[inside] = np.where(accept, VERDICT_ACCEPTED, VERDICT_BUFFERED_DUPLICATE)
    taken, where = slots[accept], inside[accept]
    buffer.slot_sequence[taken] = sequences[where]
    buffer.slot_handle[taken] = handles[where]
    buffer.slot_full[taken] = 1
    if where.shape[0]:
        span = (int(state[STATE_HIGHEST]) + 1 - int(state[STATE_NEXT])) % (1 << 64)  # 0 if empty
        best = where[np.argmax(ahead[where])]
        if int(ahead[best]) + 1 > span:
            state[STATE_HIGHEST] = sequences[best]
        state[STATE_COUNT] += np.uint64(where.shape[0])
    return verdicts


def numpy_release(buffer: ReorderBuffer, out_handles: np.ndarray) -> int:
    """Vectorised release: the run is found with argmin over at most two slices (the wrap)."""
    capacity = buffer.capacity
    slot_full, slot_handle, state = buffer.slot_full, buffer.slot_handle, buffer.state
    limit = min(out_handles.shape[0], int(state[STATE_COUNT]))
    start = int(state[STATE_NEXT]) & (capacity - 1)
    n = 0
    for begin in (start, 0):                     # the part up to the end, then after the wrap
        segment = slot_full[begin:begin + min(limit - n, capacity - begin)]
        run = segment.shape[0] if segment.all() else int(np.argmin(segment))
        out_handles[n:n + run] = slot_handle[begin:begin + run]
        slot_full[begin:begin + run] = 0
        n += run
        if n == limit or run < segment.shape[0]:
            break
    state[STATE_NEXT] = np.uint64((int(state[STATE_NEXT]) + n) % (1 << 64))
    state[STATE_COUNT] -= np.uint64(n)
    return n


def numpy_missing(buffer: ReorderBuffer) -> np.ndarray:
    """Vectorised missing ranges: edges of the absent runs with np.diff (no wrap split)."""
    capacity = buffer.capacity
    state = buffer.state
    nxt = int(state[STATE_NEXT])
    span = (int(state[STATE_HIGHEST]) + 1 - nxt) % (1 << 64)
    start = nxt & (capacity - 1)
    window = np.roll(buffer.slot_full, -start)[:span]
    absent = np.concatenate(([0], (window == 0).view(np.int8), [0]))
    edges = np.diff(absent)
    firsts = np.flatnonzero(edges == 1).astype(np.uint64)
    lasts = np.flatnonzero(edges == -1).astype(np.uint64) - np.uint64(1)
    return np.stack((firsts, lasts), axis=1) + np.uint64(nxt)


# -- rows -------------------------------------------------------------------------------

def _capacity(scale: float) -> int:
    size = max(1024, int((1 << 16) * scale))
    return 1 << (size.bit_length() - 1)


def rows(scale: float = 1.0) -> list[Row]:
    capacity = _capacity(scale)
    rng = np.random.default_rng(20240805)
    offsets = rng.permutation(capacity).astype(np.uint64)
    sequences = offsets + np.uint64(FIRST)
    handles = offsets.astype(np.int64)
    seq_list, handle_list = sequences.tolist(), handles.tolist()

    # insert: an empty buffer each time
    kernel_insert = best_time_setup(lambda: ReorderBuffer(capacity, FIRST),
                                    lambda b: b.insert(sequences, handles))
    reference_insert = best_time_setup(lambda: ReorderModel(capacity, FIRST),
                                       lambda m: m.insert(seq_list, handle_list), repeat=3)
    numpy_insert_s = best_time_setup(lambda: ReorderBuffer(capacity, FIRST),
                                     lambda b: numpy_insert(b, sequences, handles))
    a, b = ReorderBuffer(capacity, FIRST), ReorderBuffer(capacity, FIRST)
    assert np.array_equal(a.insert(sequences, handles), numpy_insert(b, sequences, handles))
    assert all(np.array_equal(x, y) for x, y in zip(a.snapshot().values(), b.snapshot().values()))

    # release: the full buffer, one run
    full = a.snapshot()
    out = np.empty(capacity, dtype=np.int64)

    def filled():
        buffer = ReorderBuffer(capacity, FIRST)
        buffer.restore(full)
        return buffer

    def filled_model():
        model = ReorderModel(capacity, FIRST)
        model.buffered = dict(zip(seq_list, handle_list))
        return model

    kernel_release = best_time_setup(filled, lambda b: b.release(out))
    reference_release = best_time_setup(filled_model, lambda m: m.release(), repeat=3)
    numpy_release_s = best_time_setup(filled, lambda b: numpy_release(b, out))
    check = np.empty(capacity, dtype=np.int64)
    assert numpy_release(filled(), check) == capacity and np.array_equal(check, filled().release()[0])

    # missing: 90 % of the window present, random holes
    present = rng.random(capacity) < 0.9
    present[-1] = True
    holey = ReorderBuffer(capacity, FIRST)
    holey.insert(sequences[np.argsort(offsets)][present], handles[np.argsort(offsets)][present])
    holey_model = ReorderModel(capacity, FIRST)
    holey_model.insert(sequences[np.argsort(offsets)][present].tolist(),
                       handles[np.argsort(offsets)][present].tolist())
    kernel_missing = best_time_setup(lambda: holey, lambda b: b.missing())
    reference_missing = best_time_setup(lambda: holey_model, lambda m: m.missing(), repeat=3)
    numpy_missing_s = best_time_setup(lambda: holey, numpy_missing)
    assert np.array_equal(holey.missing(), numpy_missing(holey))

    return [
        Row("reorder", "insert", "sequences", capacity, kernel_insert, reference_insert,
            numpy_insert_s, None),
        Row("reorder", "release", "sequences", capacity, kernel_release, reference_release,
            numpy_release_s, RELEASE_TARGET),
        Row("reorder", "missing", "sequences", capacity, kernel_missing, reference_missing,
            numpy_missing_s, None),
    ]


if __name__ == "__main__":
    def rate(items, seconds):
        return f"{items / seconds / 1e6:10.2f}" if seconds else "         -"

    print(f"{'operation':10} {'items':>8} {'kernel M/s':>10} {'ref M/s':>10} {'numpy M/s':>10} "
          f"{'target M/s':>10}")
    for row in rows():
        target = f"{row.target_per_s / 1e6:10.2f}" if row.target_per_s else "         -"
        print(f"{row.operation:10} {row.items:8d} {rate(row.items, row.kernel_s)} "
              f"{rate(row.items, row.reference_s)} {rate(row.items, row.numpy_s)} {target}")
