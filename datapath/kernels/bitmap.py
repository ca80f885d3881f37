"""Differential bitmaps: one bit per track of a volume (DESIGN.md section 6).

A :class:`DifferentialBitmap` records which tracks of a volume changed while a
pair was suspended, so a resync copies only those. A track is ``track_size``
bytes (a power of two, default 64 KiB); a volume of ``volume_bytes`` has
``track_count = ceil(volume_bytes / track_size)`` tracks, at most
:data:`MAX_TRACKS` (2**32: 256 TiB at 64 KiB tracks; a 16 TiB volume is 2**28
tracks, 32 MiB of bits). The bits live in ``words``, a ``uint64`` array of
``ceil(track_count / 64)`` words: bit ``i`` (LSB first) of word ``w`` is track
``64 * w + i``. Bits past ``track_count`` in the last word are always 0. The
array is the whole state (checkpoint it, hand it back to the constructor).

Operations: mark a batch of extents ``(lba, blocks)`` of ``block_size`` bytes;
set or clear a range of tracks; OR-merge other bitmaps of the same geometry;
popcount; the dirty runs ``(first track, count)`` for a differential copy,
paged by ``max_runs``/``start_track``; a compact serial form (the DPOK bitmap
that travels in an FCP data-in sequence) and its inverse.

Extents: an extent covers bytes ``[lba * block_size, (lba + blocks) *
block_size)`` and dirties the tracks that overlap them. It must lie inside the
volume's whole blocks: ``lba + blocks <= volume_bytes // block_size`` (the
check is made for zero-length extents too, which mark nothing). If any extent
of a batch is out of range, :meth:`DifferentialBitmap.mark_extents` raises
``ValueError`` naming the first one and marks nothing; the kernel checks the
whole batch before it writes, so no call writes outside ``words``.

Serial form (``serialize`` / ``deserialize``): a 44-byte header
(:data:`HEADER`, big-endian like every other wire header) and a body.

=====  =====  =================================================================
bytes  field  meaning
=====  =====  =================================================================
0-3    magic         0x44504F4B, ASCII ``DPOK``
4      version       1
5      encoding      0 RAW, 1 RUNS (see below)
6-7    reserved      0
8-11   track_size    bytes per track, a power of two in 1..2**30
12-19  volume_bytes  volume size in bytes, >= 1
20-27  track_count   ceil(volume_bytes / track_size), <= 2**32
28-35  dirty_tracks  number of set bits (a check on the body)
36-43  items         RAW: words in the body; RUNS: runs in the body
44-    body          ``items`` * 8 bytes, nothing after it
=====  =====  =================================================================

* RAW body: the first ``items`` words as little-endian ``uint64`` (so byte
  ``k`` bit ``j``, LSB first, is track ``8 * k + j``); the words after them
  are zero (the writer drops trailing zero words). Bits past ``track_count``
  must be 0.
* RUNS body: ``items`` pairs ``(first, last)`` of big-endian ``uint32``: the
  dirty tracks ``first..last`` inclusive. Runs are sorted and disjoint
  (``first[i] > last[i - 1]``; adjacent runs are accepted, the writer never
  emits them) and ``last < track_count``.

The writer picks RUNS when its body is strictly smaller than RAW's (fewer runs
than non-zero-trimmed words), else RAW; an empty bitmap is RAW with no items.
Malformed input raises :class:`datapath.frames.errors.DecodeError` (a
``ValueError``) naming the field: truncated header or body, trailing bytes,
bad magic/version/encoding/reserved, bad geometry, too many items, bits past
``track_count``, runs out of range, unsorted or overlapping runs, or a
``dirty_tracks`` that does not match the body.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from datapath.frames.errors import DecodeError
from datapath.frames.dpok import ENCODING_RAW, ENCODING_RUNS, HEADER, MAGIC, VERSION  # noqa: F401
from datapath.kernels._checks import require_array, require_power_of_two

MAX_TRACKS = 1 << 32
MAX_TRACK_SIZE = 1 << 30
MAX_BLOCK_SIZE = 1 << 30
DEFAULT_TRACK_SIZE = 65536


_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_SIX = np.uint64(6)
_63 = np.uint64(63)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_M7F = np.uint64(0x7F)

_JIT = dict(cache=True, nogil=True)


# -- kernels ---------------------------------------------------------------
# Every loop is bounded by an array length; all arithmetic is uint64 or int64
# and stays below 2**63, so no value wraps (JIT or NUMBA_DISABLE_JIT=1).

@njit("uint64(uint64)", **_JIT)
def _popcount64(x):
    """Set bits of one word (SWAR; no multiply, so no overflow in plain Python)."""
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    x = x + (x >> np.uint64(8))
    x = x + (x >> np.uint64(16))
    x = x + (x >> np.uint64(32))
    return x & _M7F


@njit("int64(uint64)", **_JIT)
def _ctz64(x):
    """Trailing zero bits of a non-zero word."""
    low = x & (~x + _ONE)          # lowest set bit; ~x + 1 <= 2**64 - 1 as x != 0
    return np.int64(_popcount64(low - _ONE))


@njit("void(uint64[::1], int64, int64)", **_JIT)
def _set_span(words, first, last):
    """Set tracks ``first..last`` inclusive (caller checked 0 <= first <= last < tracks)."""
    w0 = first >> 6
    w1 = last >> 6
    lo = _ALL << np.uint64(first & 63)
    hi = _ALL >> np.uint64(63 - (last & 63))
    if w0 == w1:
        words[w0] |= lo & hi
        return
    words[w0] |= lo
    for w in range(w0 + 1, w1):
        words[w] = _ALL
    words[w1] |= hi


@njit("void(uint64[::1], int64, int64)", **_JIT)
def _clear_span(words, first, last):
    """Clear tracks ``first..last`` inclusive (caller checked the range)."""
    w0 = first >> 6
    w1 = last >> 6
    lo = _ALL << np.uint64(first & 63)
    hi = _ALL >> np.uint64(63 - (last & 63))
    if w0 == w1:
        words[w0] &= ~(lo & hi)
        return
    words[w0] &= ~lo
    for w in range(w0 + 1, w1):
        words[w] = _ZERO
    words[w1] &= ~hi


@njit(["int64(uint64[::1], uint64[::1], uint32[::1], uint64, uint64, uint64)",
       "int64(uint64[::1], uint64[::1], uint64[::1], uint64, uint64, uint64)"], **_JIT)
def _mark_extents(words, lba, blocks, limit_blocks, block_shift, track_shift):
    """Mark extents ``(lba[i], blocks[i])``; returns -1, or the first bad index.

    ``limit_blocks`` is the number of whole blocks in the volume. The first
    pass checks ``lba + blocks <= limit_blocks`` for every extent (without
    overflow); if one fails, its index is returned and nothing is written.
    The caller guarantees ``limit_blocks << block_shift`` fits the words.
    """
    n = lba.shape[0]
    for i in range(n):
        start = lba[i]
        if start > limit_blocks or np.uint64(blocks[i]) > limit_blocks - start:
            return np.int64(i)
    for i in range(n):
        count = np.uint64(blocks[i])
        if count == _ZERO:
            continue
        start = lba[i]
        first = np.int64((start << block_shift) >> track_shift)
        last = np.int64((((start + count) << block_shift) - _ONE) >> track_shift)
        _set_span(words, first, last)
    return np.int64(-1)


@njit("int64(uint64[::1], uint64[::1], uint64[::1], int64)", **_JIT)
def _set_runs(words, first, count, track_count):
    """Set runs ``(first[i], count[i])``; returns -1, or the first out-of-range index.

    A run is in range if ``first + count <= track_count``; zero counts set
    nothing. Nothing is written if any run is out of range.
    """
    n = first.shape[0]
    limit = np.uint64(track_count)
    for i in range(n):
        if first[i] > limit or count[i] > limit - first[i]:
            return np.int64(i)
    for i in range(n):
        if count[i] != _ZERO:
            start = np.int64(first[i])
            _set_span(words, start, start + np.int64(count[i]) - 1)
    return np.int64(-1)


@njit("void(uint64[::1], uint64[::1])", **_JIT)
def _or_into(dst, src):
    """``dst |= src`` word by word (same length, checked by the caller)."""
    for i in range(dst.shape[0]):
        dst[i] |= src[i]


@njit("int64(uint64[::1])", **_JIT)
def _popcount(words):
    total = _ZERO
    for i in range(words.shape[0]):
        total += _popcount64(words[i])
    return np.int64(total)


@njit("int64(uint64[::1])", **_JIT)
def _count_runs(words):
    """Number of maximal runs of set bits (a run start is a 1 whose lower neighbour is 0)."""
    total = _ZERO
    carry = _ZERO          # top bit of the previous word, as bit 0
    for i in range(words.shape[0]):
        x = words[i]
        total += _popcount64(x & ~((x << _ONE) | carry))
        carry = x >> _63
    return np.int64(total)


@njit("int64(uint64[::1])", **_JIT)
def _used_words(words):
    """1 + index of the last non-zero word, 0 if all are zero."""
    for i in range(words.shape[0] - 1, -1, -1):
        if words[i] != _ZERO:
            return np.int64(i + 1)
    return np.int64(0)


@njit("int64(uint64[::1], int64, int64, bool_)", **_JIT)
def _next_bit(words, track, track_count, value):
    """First track ``>= track`` whose bit equals ``value``; ``track_count`` if none."""
    if track >= track_count:
        return track_count
    w = track >> 6
    flip = _ZERO if value else _ALL
    x = (words[w] ^ flip) & (_ALL << np.uint64(track & 63))
    nwords = words.shape[0]
    while x == _ZERO:           # bounded: w only grows, and stops at nwords
        w += 1
        if w >= nwords:
            return track_count
        x = words[w] ^ flip
    found = (w << 6) + _ctz64(x)
    return found if found < track_count else track_count


@njit("UniTuple(int64, 2)(uint64[::1], int64, int64, uint64[::1], uint64[::1])", **_JIT)
def _dirty_runs(words, track_count, start_track, out_first, out_count):
    """Maximal dirty runs at or after ``start_track``, at most ``len(out_first)`` of them.

    Returns ``(n, next_track)``: ``n`` runs written to ``out_first[:n]`` /
    ``out_count[:n]``, and ``next_track``: ``track_count`` if the scan
    finished, else the first track of the run that did not fit (call again
    from there). A run that starts before ``start_track`` is cut at it.
    """
    capacity = out_first.shape[0]
    n = np.int64(0)
    track = start_track
    for _ in range(capacity + 1):
        start = _next_bit(words, track, track_count, True)
        if start >= track_count:
            return n, track_count
        if n == capacity:
            return n, start
        end = _next_bit(words, start, track_count, False)
        out_first[n] = np.uint64(start)
        out_count[n] = np.uint64(end - start)
        n += 1
        track = end
    return n, track_count   # not reached: the loop returns by capacity + 1


@njit("void(uint64[::1], int64, int64)", **_JIT)
def _clear_range(words, first_track, count):
    """Clear ``count`` tracks from ``first_track`` (caller checked the range)."""
    if count > 0:
        _clear_span(words, first_track, first_track + count - 1)


@njit("void(uint64[::1], int64, int64)", **_JIT)
def _set_range(words, first_track, count):
    """Set ``count`` tracks from ``first_track`` (caller checked the range)."""
    if count > 0:
        _set_span(words, first_track, first_track + count - 1)


# -- wrappers --------------------------------------------------------------

class DirtyRuns(NamedTuple):
    first: np.ndarray      # uint64[m]: first track of each run
    count: np.ndarray      # uint64[m]: tracks in each run
    next_track: int        # track_count if complete, else where to resume


def _int_arg(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} not in {low}..{high}")
    return value


def geometry(volume_bytes: int, track_size: int = DEFAULT_TRACK_SIZE) -> tuple[int, int]:
    """``(track_count, word_count)`` of a volume; ``ValueError`` if it is out of bounds."""
    track_size = require_power_of_two("track_size", track_size, MAX_TRACK_SIZE)
    volume_bytes = _int_arg("volume_bytes", volume_bytes, 1, MAX_TRACKS * track_size)
    track_count = -(-volume_bytes // track_size)
    return track_count, -(-track_count // 64)


class DifferentialBitmap:
    """One bit per track of a volume; ``words`` is the whole state.

    ``words`` (optional) is an existing ``uint64`` array of the right length
    to adopt without copying (a checkpoint); its bits past ``track_count``
    must be 0.
    """

    __slots__ = ("volume_bytes", "track_size", "track_count", "words")

    def __init__(self, volume_bytes: int, track_size: int = DEFAULT_TRACK_SIZE,
                 words: np.ndarray | None = None):
        self.track_count, word_count = geometry(volume_bytes, track_size)
        self.volume_bytes = int(volume_bytes)
        self.track_size = int(track_size)
        if words is None:
            words = np.zeros(word_count, dtype=np.uint64)
        else:
            require_array("words", words, np.uint64, shape=(word_count,), writeable=True)
            tail = self.track_count & 63
            if tail and int(words[-1]) >> tail:
                raise ValueError(f"words: bits set past track_count {self.track_count}")
        self.words = words

    def __repr__(self):
        return (f"<DifferentialBitmap {self.track_count} tracks of {self.track_size} bytes,"
                f" {self.popcount()} dirty>")

    def __eq__(self, other):
        if not isinstance(other, DifferentialBitmap):
            return NotImplemented
        return (self.geometry == other.geometry
                and bool(np.array_equal(self.words, other.words)))

    __hash__ = None

    @property
    def geometry(self) -> tuple[int, int]:
        return (self.volume_bytes, self.track_size)

    def copy(self) -> DifferentialBitmap:
        return DifferentialBitmap(self.volume_bytes, self.track_size, self.words.copy())

    # -- marking ---------------------------------------------------------
    def mark_extents(self, lba: np.ndarray, blocks: np.ndarray, block_size: int) -> None:
        """Dirty the tracks under extents ``(lba[i], blocks[i])`` of ``block_size`` bytes.

        ``lba`` is ``uint64``, ``blocks`` ``uint32`` or ``uint64``, same
        length. ``ValueError`` (and nothing marked) if an extent reaches past
        ``volume_bytes // block_size`` blocks.
        """
        require_array("lba", lba, np.uint64)
        if not isinstance(blocks, np.ndarray) or blocks.dtype not in (np.uint32, np.uint64):
            got = blocks.dtype if isinstance(blocks, np.ndarray) else type(blocks).__name__
            raise TypeError(f"blocks: expected dtype uint32 or uint64, got {got}")
        require_array("blocks", blocks, blocks.dtype, shape=(lba.shape[0],))
        block_size = require_power_of_two("block_size", block_size, MAX_BLOCK_SIZE)
        limit = self.volume_bytes // block_size
        bad = _mark_extents(self.words, lba, blocks, np.uint64(limit),
                            np.uint64(block_size.bit_length() - 1),
                            np.uint64(self.track_size.bit_length() - 1))
        if bad >= 0:
            raise ValueError(
                f"extent {bad} (lba {int(lba[bad])}, {int(blocks[bad])} blocks of {block_size})"
                f" reaches past the volume's {limit} blocks; nothing marked")

    def _check_range(self, first_track: int, count: int) -> tuple[int, int]:
        first_track = _int_arg("first_track", first_track, 0, self.track_count)
        count = _int_arg("count", count, 0, self.track_count - first_track)
        return first_track, count

    def set_range(self, first_track: int, count: int) -> None:
        """Dirty ``count`` tracks from ``first_track``; ``ValueError`` past the end."""
        first_track, count = self._check_range(first_track, count)
        _set_range(self.words, first_track, count)

    def clear_range(self, first_track: int, count: int) -> None:
        """Clean ``count`` tracks from ``first_track``; ``ValueError`` past the end."""
        first_track, count = self._check_range(first_track, count)
        _clear_range(self.words, first_track, count)

    def mark_runs(self, first: np.ndarray, count: np.ndarray) -> None:
        """Dirty runs ``(first[i], count[i])`` (``uint64``, any order, may overlap).

        ``ValueError`` (and nothing marked) if a run reaches past ``track_count``.
        """
        require_array("first", first, np.uint64)
        require_array("count", count, np.uint64, shape=(first.shape[0],))
        bad = _set_runs(self.words, first, count, self.track_count)
        if bad >= 0:
            raise ValueError(f"run {bad} (first {int(first[bad])}, count {int(count[bad])})"
                             f" reaches past track_count {self.track_count}; nothing marked")

    def merge(self, *others: DifferentialBitmap) -> DifferentialBitmap:
        """OR ``others`` into this bitmap (same geometry required); returns self."""
        merge_into(self, *others)
        return self

    # -- reading ---------------------------------------------------------
    def popcount(self) -> int:
        """Number of dirty tracks."""
        return int(_popcount(self.words))

    def run_count(self) -> int:
        """Number of maximal dirty runs."""
        return int(_count_runs(self.words))

    def dirty_runs(self, max_runs: int | None = None, start_track: int = 0) -> DirtyRuns:
        """Maximal dirty runs ``(first, count)`` at or after ``start_track``.

        At most ``max_runs`` (all if ``None``); ``next_track`` is where to
        resume (``track_count`` when complete). A run that starts before
        ``start_track`` is cut at it.
        """
        start_track = _int_arg("start_track", start_track, 0, self.track_count)
        if max_runs is None:
            capacity = self.run_count()   # a run cut at start_track replaces one
        else:
            capacity = _int_arg("max_runs", max_runs, 0, MAX_TRACKS)
        out_first = np.empty(capacity, dtype=np.uint64)
        out_count = np.empty(capacity, dtype=np.uint64)
        n, next_track = _dirty_runs(self.words, self.track_count, start_track,
                                    out_first, out_count)
        return DirtyRuns(out_first[:n], out_count[:n], int(next_track))

    # -- serial form -----------------------------------------------------
    def serialize(self, encoding: int | None = None) -> bytes:
        return serialize(self, encoding)

    @classmethod
    def deserialize(cls, data) -> DifferentialBitmap:
        return deserialize(data)


def merge_into(dst: DifferentialBitmap, *srcs: DifferentialBitmap) -> DifferentialBitmap:
    """``dst |= src`` for each of ``srcs``; ``ValueError`` if a geometry differs."""
    for i, src in enumerate(srcs):
        if not isinstance(src, DifferentialBitmap):
            raise TypeError(f"srcs[{i}]: expected a DifferentialBitmap, got {type(src).__name__}")
        if src.geometry != dst.geometry:
            raise ValueError(f"srcs[{i}]: geometry {src.geometry} (volume_bytes, track_size)"
                             f" differs from {dst.geometry}")
    for src in srcs:
        _or_into(dst.words, src.words)
    return dst


def serialize(bitmap: DifferentialBitmap, encoding: int | None = None) -> bytes:
    """The serial form (module docstring); ``encoding`` forces RAW or RUNS."""
    used = int(_used_words(bitmap.words))
    if encoding is None:
        encoding = ENCODING_RUNS if bitmap.run_count() < used else ENCODING_RAW
    if encoding == ENCODING_RAW:
        items = used
        body = bitmap.words[:used].astype("<u8").tobytes()
    elif encoding == ENCODING_RUNS:
        first, count, _ = bitmap.dirty_runs()
        items = len(first)
        pairs = np.empty((items, 2), dtype=">u4")
        pairs[:, 0] = first
        pairs[:, 1] = first + count - np.uint64(1)
        body = pairs.tobytes()
    else:
        raise ValueError(f"encoding: {encoding!r} is neither ENCODING_RAW nor ENCODING_RUNS")
    header = HEADER.build(
        magic=MAGIC, version=VERSION, encoding=encoding, track_size=bitmap.track_size,
        volume_bytes=bitmap.volume_bytes, track_count=bitmap.track_count,
        dirty_tracks=bitmap.popcount(), items=items)
    return header + body


def _fail(field: str, reason: str) -> DecodeError:
    return DecodeError(HEADER.layer, field, HEADER.offsets.get(field, HEADER.size), reason)


def deserialize(data) -> DifferentialBitmap:
    """Inverse of :func:`serialize`; ``DecodeError`` for malformed input."""
    data = memoryview(data).cast("B")
    HEADER.check_length(data)
    h = HEADER.parse(data, fast=True)
    if h["magic"] != MAGIC:
        raise _fail("magic", f"0x{h['magic']:08X} is not 0x{MAGIC:08X} (DPOK)")
    if h["version"] != VERSION:
        raise _fail("version", f"version {h['version']} not supported (only {VERSION})")
    if h["encoding"] not in (ENCODING_RAW, ENCODING_RUNS):
        raise _fail("encoding", f"unknown encoding {h['encoding']}")
    if h["reserved"]:
        raise _fail("reserved", f"must be 0, is {h['reserved']}")
    track_size = h["track_size"]
    if track_size == 0 or track_size & (track_size - 1) or track_size > MAX_TRACK_SIZE:
        raise _fail("track_size", f"{track_size} is not a power of two in 1..{MAX_TRACK_SIZE}")
    volume_bytes = h["volume_bytes"]
    if not 1 <= volume_bytes <= MAX_TRACKS * track_size:
        raise _fail("volume_bytes", f"{volume_bytes} not in 1..{MAX_TRACKS * track_size}"
                                    f" for tracks of {track_size} bytes")
    track_count, word_count = geometry(volume_bytes, track_size)
    if h["track_count"] != track_count:
        raise _fail("track_count", f"{h['track_count']} is not ceil({volume_bytes} / {track_size})"
                                   f" = {track_count}")
    items = h["items"]
    body = data[HEADER.size:]
    if h["encoding"] == ENCODING_RAW:
        if items > word_count:
            raise _fail("items", f"{items} words, the bitmap has only {word_count}")
    elif items > (track_count + 1) // 2:
        raise _fail("items", f"{items} runs, {track_count} tracks hold at most"
                             f" {(track_count + 1) // 2}")
    if len(body) < items * 8:
        raise _fail("body", f"truncated: need {items * 8} bytes, have {len(body)}")
    if len(body) > items * 8:
        raise DecodeError(HEADER.layer, "body", HEADER.size + items * 8,
                          f"{len(body) - items * 8} trailing bytes after {items} items")
    bitmap = DifferentialBitmap(volume_bytes, track_size)
    if h["encoding"] == ENCODING_RAW:
        bitmap.words[:items] = np.frombuffer(body, dtype="<u8")
        tail = track_count & 63
        if items == word_count and tail and int(bitmap.words[-1]) >> tail:
            raise DecodeError(HEADER.layer, "body", HEADER.size + 8 * (items - 1),
                              f"bits set past track_count {track_count}")
    else:
        pairs = np.frombuffer(body, dtype=">u4").reshape(items, 2).astype(np.int64)
        first, last = pairs[:, 0], pairs[:, 1]
        out_of_range = (last < first) | (last >= track_count)
        overlapping = np.zeros(items, dtype=bool)
        overlapping[1:] = first[1:] <= last[:-1]
        bad = np.flatnonzero(out_of_range | overlapping)
        if len(bad):
            i = int(bad[0])
            if out_of_range[i]:
                reason = (f"run {i} ({int(first[i])}..{int(last[i])}) is empty or reaches"
                          f" past track_count {track_count}")
            else:
                reason = (f"run {i} ({int(first[i])}..{int(last[i])}) overlaps or precedes"
                          f" run {i - 1} ({int(first[i - 1])}..{int(last[i - 1])})")
            raise DecodeError(HEADER.layer, "body", HEADER.size + 8 * i, reason)
        bitmap.mark_runs(first.astype(np.uint64), (last - first + 1).astype(np.uint64))
    dirty = bitmap.popcount()
    if h["dirty_tracks"] != dirty:
        raise _fail("dirty_tracks", f"header says {h['dirty_tracks']}, body has {dirty}")
    return bitmap


def warm_up() -> None:
    """Call every kernel once on tiny inputs (fills numba's cache)."""
    bitmap = DifferentialBitmap(1 << 20, 4096)
    bitmap.mark_extents(np.array([0, 100], dtype=np.uint64), np.array([8, 300], dtype=np.uint32), 512)
    bitmap.mark_extents(np.array([7], dtype=np.uint64), np.array([1], dtype=np.uint64), 4096)
    bitmap.mark_runs(np.array([250], dtype=np.uint64), np.array([3], dtype=np.uint64))
    other = bitmap.copy()
    other.set_range(200, 20)
    bitmap.merge(other)
    bitmap.clear_range(3, 70)
    deserialize(serialize(bitmap, ENCODING_RAW))
    deserialize(serialize(bitmap, ENCODING_RUNS))
    bitmap.dirty_runs(1, 5)
