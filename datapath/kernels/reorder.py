"""Sequence reorder buffer: one per order guarantee group (DESIGN.md section 6).

Log entries of a group carry a uint64 ``sequence``; they arrive out of order
and must be applied in order. A :class:`ReorderBuffer` holds up to
``capacity`` (a power of two) entries, each as the caller's int64 ``handle``
(e.g. an index into its pending-entry table), in the slot ``sequence &
(capacity - 1)``.

Window
    ``[next_expected, next_expected + capacity)``, modulo 2**64. Every
    comparison uses the modular distance ``ahead = (sequence - next_expected)
    mod 2**64``: ``ahead < capacity`` is inside the window; ``ahead >= 2**63``
    (up to 2**63 behind) is an entry already applied (released); anything else
    is beyond the window. So sequences wrap from 2**64 - 1 to 0 like any other
    step.

Operations
    ``insert``  a batch of (sequence, handle); one verdict per entry:
                :data:`VERDICT_ACCEPTED`, :data:`VERDICT_APPLIED_DUPLICATE`,
                :data:`VERDICT_BUFFERED_DUPLICATE` (also a repeat inside the same
                batch: entries are taken in order), :data:`VERDICT_BEYOND_WINDOW`.
                Only accepted entries change the buffer.
    ``release`` the contiguous run of handles from ``next_expected``, bounded by
                the output array (or ``limit``); ``next_expected`` moves past it.
    ``missing`` inclusive ``(first, last)`` ranges of absent sequences from
                ``next_expected`` to the highest buffered sequence, lowest first
                (the body of a NAK). A range never crosses the wrap point: a
                run through 2**64 - 1 and 0 is reported as two ranges, so
                ``first <= last`` holds as plain integers.

State
    Four numpy arrays, nothing else: ``slot_sequence`` (uint64[capacity]),
    ``slot_handle`` (int64[capacity]), ``slot_full`` (uint8[capacity], 0 or 1)
    and ``state`` (uint64[STATE_SIZE]: ``STATE_NEXT``, ``STATE_HIGHEST``,
    ``STATE_COUNT``). ``snapshot()`` copies them into a dict (``np.savez``
    ready); ``restore``/``from_snapshot`` check and load one. Invariants: every
    full slot ``i`` holds a sequence ``s`` with ``s & mask == i`` inside the
    window; ``STATE_COUNT`` is the number of full slots; ``STATE_HIGHEST`` is
    the buffered sequence furthest ahead, or ``next_expected - 1`` when the
    buffer is empty. Empty slots keep stale sequence and handle values.

Kernels (``_insert``, ``_release``, ``_missing``) take the arrays directly;
the :class:`ReorderBuffer` methods check arguments and allocate outputs.
uint64 arithmetic goes through :func:`_sub`, :func:`_add` and :func:`_inc`, which never
overflow, so the kernels behave the same as plain Python (NUMBA_DISABLE_JIT=1)
without numpy overflow warnings.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from datapath.kernels._checks import require_array, require_power_of_two

VERDICT_ACCEPTED = 0
VERDICT_APPLIED_DUPLICATE = 1
VERDICT_BUFFERED_DUPLICATE = 2
VERDICT_BEYOND_WINDOW = 3
VERDICT_NAMES = ("accepted", "applied duplicate", "buffered duplicate", "beyond window")

STATE_NEXT = 0       # next expected sequence
STATE_HIGHEST = 1    # highest buffered sequence; next - 1 when empty
STATE_COUNT = 2      # number of buffered entries
STATE_SIZE = 3

SEQUENCE_MODULUS = 1 << 64
MAX_CAPACITY = 1 << 30

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_MAX = np.uint64(SEQUENCE_MODULUS - 1)
_HALF = np.uint64(1 << 63)
_ACCEPTED = np.uint8(VERDICT_ACCEPTED)
_APPLIED = np.uint8(VERDICT_APPLIED_DUPLICATE)
_BUFFERED = np.uint8(VERDICT_BUFFERED_DUPLICATE)
_BEYOND = np.uint8(VERDICT_BEYOND_WINDOW)
_FULL = np.uint8(1)
_EMPTY = np.uint8(0)


@njit("uint64(uint64, uint64)", cache=True, nogil=True)
def _sub(a, b):
    """``(a - b) mod 2**64`` without overflowing."""
    if a >= b:
        return a - b
    return _MAX - (b - a) + _ONE


@njit("uint64(uint64, uint64)", cache=True, nogil=True)
def _add(a, b):
    """``(a + b) mod 2**64`` without overflowing."""
    if a <= _MAX - b:
        return a + b
    return b - (_MAX - a) - _ONE


@njit("uint64(uint64)", cache=True, nogil=True)
def _inc(a):
    """``(a + 1) mod 2**64`` without overflowing."""
    if a == _MAX:
        return _ZERO
    return a + _ONE


@njit("int64(uint64[::1], int64[::1], uint8[::1], uint64[::1], uint64[::1], int64[::1], uint8[::1])",
      cache=True, nogil=True)
def _insert(slot_sequence, slot_handle, slot_full, state, sequences, handles, verdicts):
    """Insert ``sequences[i]``/``handles[i]`` in order; verdict of each into ``verdicts``.

    Returns the number accepted. ``handles`` and ``verdicts`` are at least as
    long as ``sequences`` (the wrapper checks equal lengths).
    """
    capacity = np.uint64(slot_full.shape[0])
    mask = capacity - _ONE
    nxt = state[STATE_NEXT]
    highest = state[STATE_HIGHEST]
    count = state[STATE_COUNT]
    span = _sub(_inc(highest), nxt)      # highest's distance + 1; 0 when empty
    accepted = 0
    for i in range(sequences.shape[0]):
        seq = sequences[i]
        ahead = _sub(seq, nxt)
        if ahead < capacity:
            slot = np.int64(seq & mask)
            if slot_full[slot] != _EMPTY:
                verdicts[i] = _BUFFERED
            else:
                slot_sequence[slot] = seq
                slot_handle[slot] = handles[i]
                slot_full[slot] = _FULL
                count += _ONE
                accepted += 1
                if ahead >= span:
                    span = ahead + _ONE
                    highest = seq
                verdicts[i] = _ACCEPTED
        elif ahead >= _HALF:
            verdicts[i] = _APPLIED
        else:
            verdicts[i] = _BEYOND
    state[STATE_HIGHEST] = highest
    state[STATE_COUNT] = count
    return accepted


@njit("int64(int64[::1], uint8[::1], uint64[::1], int64[::1])", cache=True, nogil=True)
def _release(slot_handle, slot_full, state, out_handles):
    """Move the contiguous run from ``next_expected`` into ``out_handles``.

    At most ``len(out_handles)`` entries; returns how many. The released
    sequences are ``next_expected`` (before the call) onwards.
    """
    mask = np.int64(slot_full.shape[0] - 1)
    nxt = state[STATE_NEXT]
    limit = out_handles.shape[0]
    buffered = np.int64(state[STATE_COUNT])
    if buffered < limit:
        limit = buffered
    slot = np.int64(nxt & np.uint64(mask))
    n = 0
    while n < limit:
        if slot_full[slot] == _EMPTY:
            break
        out_handles[n] = slot_handle[slot]
        slot_full[slot] = _EMPTY
        n += 1
        slot = (slot + 1) & mask
    state[STATE_NEXT] = _add(nxt, np.uint64(n))
    state[STATE_COUNT] = np.uint64(buffered - n)
    return n


@njit("int64(uint8[::1], uint64[::1], uint64[:, ::1])", cache=True, nogil=True)
def _missing(slot_full, state, out_ranges):
    """Absent sequences from ``next_expected`` to the highest buffered one.

    Writes inclusive ``(first, last)`` rows into ``out_ranges``, lowest first,
    at most ``out_ranges.shape[0]`` of them (the rest are dropped); a range
    is split where the sequence wraps to 0. Returns the number of rows.
    """
    mask = np.int64(slot_full.shape[0] - 1)
    nxt = state[STATE_NEXT]
    span = np.int64(_sub(_inc(state[STATE_HIGHEST]), nxt))
    max_ranges = out_ranges.shape[0]
    slot = np.int64(nxt & np.uint64(mask))
    seq = nxt
    n = 0
    in_gap = False
    for _ in range(span):
        if slot_full[slot] == _EMPTY:
            if in_gap and seq != _ZERO:
                out_ranges[n - 1, 1] = seq
            else:
                if n == max_ranges:
                    break
                out_ranges[n, 0] = seq
                out_ranges[n, 1] = seq
                n += 1
                in_gap = True
        else:
            if n == max_ranges:
                break
            in_gap = False
        slot = (slot + 1) & mask
        seq = _inc(seq)
    return n


def _sequence(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < SEQUENCE_MODULUS:
        raise ValueError(f"{name}: {value} is not a uint64 sequence number")
    return value


def _count(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}: {value} is negative")
    return int(value)


class ReorderBuffer:
    """Reorder buffer of one order guarantee group; state in four numpy arrays."""

    def __init__(self, capacity: int, first_sequence: int = 1):
        capacity = require_power_of_two("capacity", capacity, MAX_CAPACITY)
        first_sequence = _sequence("first_sequence", first_sequence)
        self.slot_sequence = np.zeros(capacity, dtype=np.uint64)
        self.slot_handle = np.zeros(capacity, dtype=np.int64)
        self.slot_full = np.zeros(capacity, dtype=np.uint8)
        self.state = np.zeros(STATE_SIZE, dtype=np.uint64)
        self.state[STATE_NEXT] = first_sequence
        self.state[STATE_HIGHEST] = (first_sequence - 1) % SEQUENCE_MODULUS
        self._one_sequence = np.zeros(1, dtype=np.uint64)     # insert_one's arguments
        self._one_handle = np.zeros(1, dtype=np.int64)
        self._one_verdict = np.zeros(1, dtype=np.uint8)

    # -- read-only views of the state -------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.slot_full.shape[0]

    @property
    def next_expected(self) -> int:
        return int(self.state[STATE_NEXT])

    @property
    def occupancy(self) -> int:
        """Number of buffered entries."""
        return int(self.state[STATE_COUNT])

    @property
    def highest_buffered(self) -> int | None:
        """The buffered sequence furthest ahead, ``None`` when empty."""
        return int(self.state[STATE_HIGHEST]) if self.occupancy else None

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Buffered ``(sequences, handles)`` in window order (a copy; for checks and dumps)."""
        full = np.flatnonzero(self.slot_full)
        start = self.next_expected & (self.capacity - 1)
        order = np.argsort((full - start) & (self.capacity - 1), kind="stable")
        return self.slot_sequence[full[order]].copy(), self.slot_handle[full[order]].copy()

    # -- operations -----------------------------------------------------------------

    def insert(self, sequences: np.ndarray, handles: np.ndarray,
               out: np.ndarray | None = None) -> np.ndarray:
        """Insert a batch; returns ``uint8[n]`` verdicts (``out`` if given)."""
        sequences = require_array("sequences", sequences, np.uint64)
        handles = require_array("handles", handles, np.int64, shape=(sequences.shape[0],))
        if out is None:
            out = np.empty(sequences.shape[0], dtype=np.uint8)
        else:
            out = require_array("out", out, np.uint8, shape=(sequences.shape[0],), writeable=True)
        _insert(self.slot_sequence, self.slot_handle, self.slot_full, self.state,
                sequences, handles, out)
        return out

    def insert_one(self, sequence: int, handle: int) -> int:
        """One entry's verdict. The per-datagram path of a receiver: the same kernel on
        arrays of one kept by the buffer, without the batch path's argument checks."""
        self._one_sequence[0] = sequence
        self._one_handle[0] = handle
        _insert(self.slot_sequence, self.slot_handle, self.slot_full, self.state,
                self._one_sequence, self._one_handle, self._one_verdict)
        return int(self._one_verdict[0])

    def release(self, out_handles: np.ndarray | None = None,
                limit: int | None = None) -> tuple[np.ndarray, int]:
        """Release the contiguous run from ``next_expected``.

        Returns ``(handles, first_sequence)``: the released handles (a view of
        ``out_handles``, or a new array) for sequences ``first_sequence``,
        ``first_sequence + 1``, ... (mod 2**64). At most ``len(out_handles)``
        and at most ``limit`` entries.
        """
        if limit is not None:
            limit = _count("limit", limit)
        if out_handles is None:
            size = self.occupancy if limit is None else min(limit, self.occupancy)
            out_handles = np.empty(size, dtype=np.int64)
        else:
            out_handles = require_array("out_handles", out_handles, np.int64, writeable=True)
            if limit is not None and limit < out_handles.shape[0]:
                out_handles = out_handles[:limit]
        first = self.next_expected
        n = _release(self.slot_handle, self.slot_full, self.state, out_handles)
        return out_handles[:n], first

    def missing(self, max_ranges: int | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
        """Inclusive ``(first, last)`` ranges of absent sequences, ``uint64[m, 2]``.

        From ``next_expected`` to the highest buffered sequence, lowest first;
        at most ``max_ranges`` (default: all; a NAK of a fixed size passes its
        limit) and at most ``len(out)`` rows. A view of ``out`` if given.
        """
        if max_ranges is not None:
            max_ranges = _count("max_ranges", max_ranges)
        if out is None:
            # every gap ends at a buffered entry; +1 for a gap split at the wrap
            most = self.occupancy + 1 if self.occupancy else 0
            out = np.empty((most if max_ranges is None else min(most, max_ranges), 2),
                           dtype=np.uint64)
        else:
            out = require_array("out", out, np.uint64, ndim=2, shape=(None, 2), writeable=True)
            if max_ranges is not None and max_ranges < out.shape[0]:
                out = out[:max_ranges]
        n = _missing(self.slot_full, self.state, out)
        return out[:n]

    # -- checkpoint -----------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the four state arrays (``np.savez(path, **snapshot)`` stores them)."""
        return {
            "slot_sequence": self.slot_sequence.copy(),
            "slot_handle": self.slot_handle.copy(),
            "slot_full": self.slot_full.copy(),
            "state": self.state.copy(),
        }

    def restore(self, snapshot) -> None:
        """Load a snapshot of a buffer of the same capacity; checked, then copied."""
        arrays = _check_snapshot(snapshot, self.capacity)
        np.copyto(self.slot_sequence, arrays["slot_sequence"])
        np.copyto(self.slot_handle, arrays["slot_handle"])
        np.copyto(self.slot_full, arrays["slot_full"])
        np.copyto(self.state, arrays["state"])

    @classmethod
    def from_snapshot(cls, snapshot) -> "ReorderBuffer":
        """A new buffer holding ``snapshot`` (capacity from its arrays)."""
        try:
            slot_full = snapshot["slot_full"]
        except (KeyError, TypeError):
            slot_full = None
        if not isinstance(slot_full, np.ndarray) or slot_full.ndim != 1:
            raise ValueError("snapshot: slot_full must be a 1-dimensional array")
        buffer = cls(slot_full.shape[0])
        buffer.restore(snapshot)
        return buffer

    def __repr__(self) -> str:
        return (f"ReorderBuffer(capacity={self.capacity}, next_expected={self.next_expected}, "
                f"occupancy={self.occupancy}, highest_buffered={self.highest_buffered})")


def _check_snapshot(snapshot, capacity: int) -> dict[str, np.ndarray]:
    """The snapshot's arrays if they describe a consistent buffer; else ``ValueError``."""
    try:
        arrays = {name: snapshot[name]
                  for name in ("slot_sequence", "slot_handle", "slot_full", "state")}
    except (KeyError, TypeError) as e:
        raise ValueError(f"snapshot: missing array {e}") from None
    slot_sequence = require_array("snapshot slot_sequence", arrays["slot_sequence"], np.uint64,
                                  shape=(capacity,))
    require_array("snapshot slot_handle", arrays["slot_handle"], np.int64, shape=(capacity,))
    slot_full = require_array("snapshot slot_full", arrays["slot_full"], np.uint8,
                              shape=(capacity,))
    state = require_array("snapshot state", arrays["state"], np.uint64, shape=(STATE_SIZE,))
    if np.any(slot_full > 1):
        raise ValueError("snapshot: slot_full holds values other than 0 and 1")
    full = np.flatnonzero(slot_full)
    count = int(state[STATE_COUNT])
    if count != full.shape[0]:
        raise ValueError(f"snapshot: count {count} but {full.shape[0]} full slots")
    sequences = slot_sequence[full]
    mask = np.uint64(capacity - 1)
    if np.any((sequences & mask) != full.astype(np.uint64)):
        raise ValueError("snapshot: a full slot holds a sequence of another slot")
    nxt = int(state[STATE_NEXT])
    ahead = sequences - np.uint64(nxt)          # array arithmetic wraps mod 2**64
    if np.any(ahead >= np.uint64(capacity)):
        raise ValueError("snapshot: a buffered sequence lies outside the window")
    expected = (nxt - 1) % SEQUENCE_MODULUS if count == 0 else int(sequences[np.argmax(ahead)])
    if int(state[STATE_HIGHEST]) != expected:
        raise ValueError(f"snapshot: highest {int(state[STATE_HIGHEST])}, expected {expected}")
    return arrays


def warm_up() -> None:
    """Call every kernel once on tiny inputs (fills numba's cache)."""
    buffer = ReorderBuffer(4, first_sequence=SEQUENCE_MODULUS - 1)
    buffer.insert(np.array([0, SEQUENCE_MODULUS - 1, 2], dtype=np.uint64),
                  np.array([1, 0, 2], dtype=np.int64))
    buffer.missing()
    buffer.release()
