"""Batch coalescing: plan batch boundaries, pack BATCH log entries, unpack them
(which writes of a batch a receiver may drop: ``datapath.kernels.coalesce``).

The BATCH layout is ``datapath.frames.logentry``'s: one 88-byte ``LOG_HEADER``
(``entry_type`` BATCH, ``rio_length`` = ``total_length`` = body length, CRC32C
over the header with its ``crc32c`` field zero and the body), then the body:
``COUNT_HEADER`` (count u32, reserved u32) and ``count`` whole log entries,
each padded with zero bytes to a multiple of 8. :func:`pack` output is byte
for byte what ``logentry.build_batch`` builds for the same entries and fields.

Operations (each a ``@njit`` kernel with a checking wrapper):

``plan_batches(lengths, byte_budget, count_limit)``
    Greedy, order-preserving batch boundaries. A batch's size is its whole
    datagram, ``88 + 8 + sum(padded entry lengths)``; a batch closes when the
    next entry would take it over ``byte_budget`` or when it holds
    ``count_limit`` entries. **An entry that alone exceeds the budget is put in
    a batch of its own** (so that batch, and only such a batch, is larger than
    the budget): nothing is dropped or reordered, and the caller can spot those
    batches as the ones over budget.
``pack(buf, offsets, lengths, starts, ends, ...)``
    Copies the entries into one output buffer, one BATCH datagram after the
    other, headers stored big-endian at ``LOG_HEADER.offsets``, padding and
    reserved bytes zeroed. CRC32C: the kernel leaves ``crc32c`` zero and the
    wrapper then computes each batch's CRC32C with the ``crc32c`` package (SSE4.2
    hardware CRC, ~13 GB/s here: one call per batch, not per entry) and a
    second kernel stores them. A table-driven slicing-by-8 CRC32C in numba
    measured 1.2 GB/s on this machine, which would cut packing from ~3.8 to
    under 1 GB/s; an FPGA computes the CRC in its datapath anyway.
``unpack(batch, base=0, check_crc=False)``
    ``(offsets, lengths)`` of the inner entries, with the same checks, in the
    same order, as ``logentry.parse_batch`` (which checks no CRC and not the
    outer ``entry_type``). The kernel returns an error code and the offending
    offset instead of raising; the wrapper raises the ``DecodeError`` that
    ``parse_batch`` raises for the same bytes (same layer, field, offset and
    reason). Bytes after the batch are ignored, as by ``parse_batch``.
"""

from __future__ import annotations

import crc32c as _crc32c
import numpy as np
from numba import config as _numba_config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from datapath.frames import logentry
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import COUNT_HEADER, HEADER_SIZE, LOG_HEADER, MAX_BATCH
from datapath.kernels._checks import require_array

__all__ = [
    "BATCH_OVERHEAD", "MAX_DATAGRAM", "plan_batches", "batch_bounds", "pack", "unpack",
    "warm_up",
]

# -- layout constants (read by the kernels as compile-time constants) --------------------
_HEADER = HEADER_SIZE                                   # 88
_COUNT_SIZE = COUNT_HEADER.size                         # 8
BATCH_OVERHEAD = _HEADER + _COUNT_SIZE                  # header + count prefix: 96 bytes
MAX_DATAGRAM = _HEADER + 0xFFFFFFFF                     # rio_length is 32 bits
_MAX_BATCH = MAX_BATCH
_MAGIC = logentry.MAGIC
# The log entry version is NOT a compile-time constant: it is an argument of the unpack
# kernels, read from ``logentry.VERSION`` at each call. numba's cache is keyed on this
# file's own source only, so a kernel cached while VERSION was 1 would silently go on
# accepting version 1 (and refusing 2) after logentry.py changed the number.
_BATCH_TYPE = int(logentry.EntryType.BATCH)
_MIN_TYPE = min(int(t) for t in logentry.EntryType)
_MAX_TYPE = max(int(t) for t in logentry.EntryType)
if sorted(int(t) for t in logentry.EntryType) != list(range(_MIN_TYPE, _MAX_TYPE + 1)):
    raise ImportError("batching: entry types are no longer one contiguous range")
_OFF = LOG_HEADER.offsets
_MAGIC_AT = _OFF["magic"]
_VERSION_AT = _OFF["version"]
_TYPE_AT = _OFF["entry_type"]
_SEQUENCE_AT = _OFF["sequence"]
_SEG_INDEX_AT = _OFF["segment_index"]
_SEG_COUNT_AT = _OFF["segment_count"]
_SEG_OFFSET_AT = _OFF["segment_offset"]
_TOTAL_AT = _OFF["total_length"]
_RIO_AT = _OFF["rio_length"]
_CRC_AT = _OFF["crc32c"]
_COUNT_AT = _HEADER + COUNT_HEADER.offsets["count"]
_COUNT_RESERVED_AT = _HEADER + COUNT_HEADER.offsets["reserved"]
_U32_MAX = 0xFFFFFFFF
for _name, _width in (("magic", 4), ("version", 1), ("entry_type", 1), ("sequence", 8),
                      ("segment_index", 2), ("segment_count", 2), ("segment_offset", 4),
                      ("total_length", 4), ("rio_length", 4), ("crc32c", 4)):
    if LOG_HEADER.by_name[_name].width != _width:
        raise ImportError(f"batching: LOG_HEADER.{_name} is no longer {_width} bytes wide")

#: header fields ``pack`` computes itself (or that a batch never sets)
_COMPUTED_FIELDS = frozenset({"magic", "entry_type", "rio_length", "total_length", "crc32c",
                              "segment_index", "segment_count", "segment_offset"})

# unpack error codes (info[0]); info[1] is the byte offset the error is about
E_OK = 0
E_HEADER_TRUNCATED = 1    # info[1] entry start, info[2] bytes available
E_MAGIC = 2               # info[2] magic
E_VERSION = 3             # info[2] version
E_ENTRY_TYPE = 4          # info[2] entry type
E_SEGMENT = 5             # info[2] index, info[3] count
E_TOTAL_LENGTH = 6        # info[2] segment offset, info[3] rio length, info[4] total length
E_RIO_TRUNCATED = 7       # info[2] rio length, info[3] bytes present after the header
E_COUNT_TRUNCATED = 8     # info[2] body bytes available
E_COUNT_MAX = 9           # info[2] count
E_NESTED = 10             # info[1] the inner entry's entry_type byte
E_COUNT_END = 11          # info[2] count, info[3] where the entries end, info[4] batch length
E_CAPACITY = 12           # the output arrays are too short (only with caller-made arrays)
_INFO_SIZE = 6

# -- numba types -------------------------------------------------------------------------
_u8 = types.Array(types.uint8, 1, "C")
_u8_ro = types.Array(types.uint8, 1, "C", readonly=True)
_i64 = types.Array(types.int64, 1, "C")
_u32 = types.Array(types.uint32, 1, "C")


# -- byte copy ---------------------------------------------------------------------------
if _numba_config.DISABLE_JIT:
    def _copy_bytes(dst, dst_at, src, src_at, count):
        """``dst[dst_at:dst_at + count] = src[src_at:src_at + count]`` (plain Python)."""
        dst[dst_at:dst_at + count] = src[src_at:src_at + count]
else:
    @intrinsic
    def _copy_bytes(typingctx, dst, dst_at, src, src_at, count):
        """One ``llvm.memmove`` of ``count`` bytes (the kernel's DMA copy).

        numba's slice assignment copies element by element (3 GB/s here) and an
        explicit byte loop does not vectorise (the arrays may alias); memmove
        runs at memory speed (~7 GB/s). Bounds are the caller's: the wrappers
        check every entry against its buffer before the kernel runs.
        """
        sig = types.void(dst, dst_at, src, src_at, count)

        def codegen(context, builder, signature, args):
            dst_value, dst_index, src_value, src_index, length = args
            dst_array = context.make_array(signature.args[0])(context, builder, dst_value)
            src_array = context.make_array(signature.args[2])(context, builder, src_value)
            cgutils.raw_memmove(builder, builder.gep(dst_array.data, [dst_index]),
                                builder.gep(src_array.data, [src_index]), length, 1)
            return context.get_dummy_value()

        return sig, codegen


# -- plan --------------------------------------------------------------------------------
@njit(types.int64(_i64, types.int64, types.int64, _i64, _i64), cache=True, nogil=True)
def _plan_kernel(lengths, byte_budget, count_limit, starts, ends):
    """Greedy boundaries into ``starts``/``ends`` (each at least ``len(lengths)`` long).

    Returns the number of batches. Lengths are non-negative (the wrapper checks).
    """
    n = lengths.shape[0]
    batches = np.int64(0)
    size = np.int64(BATCH_OVERHEAD)
    count = np.int64(0)
    for i in range(n):
        padded = (lengths[i] + np.int64(7)) & np.int64(-8)
        if count > 0 and (count >= count_limit or size + padded > byte_budget):
            ends[batches] = i
            batches += 1
            size = np.int64(BATCH_OVERHEAD)
            count = np.int64(0)
        if count == 0:
            starts[batches] = i
        size += padded
        count += 1
    if count > 0:
        ends[batches] = n
        batches += 1
    return batches


@njit(types.int64(_i64, _i64, _i64, _i64), cache=True, nogil=True)
def _layout_kernel(lengths, starts, ends, batch_offsets):
    """Start of each batch in the packed output into ``batch_offsets`` (n_batches + 1).

    Returns -1 - k if batch k's body does not fit the 32-bit ``rio_length``, else 0.
    """
    pos = np.int64(0)
    nb = starts.shape[0]
    for k in range(nb):
        batch_offsets[k] = pos
        body = np.int64(_COUNT_SIZE)
        for i in range(starts[k], ends[k]):
            body += (lengths[i] + np.int64(7)) & np.int64(-8)
        if body > _U32_MAX:
            return -1 - k
        pos += _HEADER + body
    batch_offsets[nb] = pos
    return 0


# -- pack --------------------------------------------------------------------------------
def _pack_impl(buf, offsets, lengths, starts, ends, batch_offsets, template, sequences, out):
    """Write every batch; ``sequences`` holds 8 big-endian bytes per batch, or is empty.

    Bounds were checked by the wrapper. The ``crc32c`` field is left zero.
    """
    nb = starts.shape[0]
    per_batch_sequence = sequences.shape[0] > 0
    for k in range(nb):
        pos = batch_offsets[k]
        for j in range(_HEADER):
            out[pos + j] = template[j]
        if per_batch_sequence:
            for j in range(8):
                out[pos + _SEQUENCE_AT + j] = sequences[8 * k + j]
        body = batch_offsets[k + 1] - pos - _HEADER
        for at in (pos + _RIO_AT, pos + _TOTAL_AT):
            out[at] = (body >> 24) & 0xFF
            out[at + 1] = (body >> 16) & 0xFF
            out[at + 2] = (body >> 8) & 0xFF
            out[at + 3] = body & 0xFF
        count = ends[k] - starts[k]
        at = pos + _COUNT_AT
        out[at] = (count >> 24) & 0xFF
        out[at + 1] = (count >> 16) & 0xFF
        out[at + 2] = (count >> 8) & 0xFF
        out[at + 3] = count & 0xFF
        for j in range(4):
            out[pos + _COUNT_RESERVED_AT + j] = 0
        p = pos + BATCH_OVERHEAD
        for i in range(starts[k], ends[k]):
            length = lengths[i]
            src = offsets[i]
            _copy_bytes(out, p, buf, src, length)
            p += length
            pad = (np.int64(8) - (length & np.int64(7))) & np.int64(7)
            for j in range(pad):
                out[p + j] = 0
            p += pad
    return 0


_pack_kernel = njit(
    [types.int64(b, _i64, _i64, _i64, _i64, _i64, _u8, _u8, _u8) for b in (_u8, _u8_ro)],
    cache=True, nogil=True)(_pack_impl)


@njit(types.void(_u8, _i64, _u32), cache=True, nogil=True)
def _store_crc_kernel(out, batch_offsets, crcs):
    """Store each batch's CRC32C big-endian into its header."""
    for k in range(crcs.shape[0]):
        at = batch_offsets[k] + _CRC_AT
        crc = crcs[k]
        out[at] = (crc >> 24) & 0xFF
        out[at + 1] = (crc >> 16) & 0xFF
        out[at + 2] = (crc >> 8) & 0xFF
        out[at + 3] = crc & 0xFF


# -- unpack ------------------------------------------------------------------------------
def _check_entry_impl(buf, at, limit, version_wanted, info):
    """The checks of ``logentry.parse_entry`` on the entry at ``at`` of ``buf[:limit]``
    (``version_wanted``: ``logentry.VERSION``, passed in -- see ``_MAGIC``'s note).

    Returns the entry's ``rio_length`` (>= 0), or -1 after filling ``info``.
    """
    available = limit - at
    if available < _HEADER:
        info[0] = E_HEADER_TRUNCATED
        info[1] = at
        info[2] = available if available > 0 else 0
        return -1
    magic = ((np.int64(buf[at + _MAGIC_AT]) << 24) | (np.int64(buf[at + _MAGIC_AT + 1]) << 16)
             | (np.int64(buf[at + _MAGIC_AT + 2]) << 8) | np.int64(buf[at + _MAGIC_AT + 3]))
    if magic != _MAGIC:
        info[0] = E_MAGIC
        info[1] = at + _MAGIC_AT
        info[2] = magic
        return -1
    version = np.int64(buf[at + _VERSION_AT])
    if version != version_wanted:
        info[0] = E_VERSION
        info[1] = at + _VERSION_AT
        info[2] = version
        return -1
    entry_type = np.int64(buf[at + _TYPE_AT])
    if entry_type < _MIN_TYPE or entry_type > _MAX_TYPE:
        info[0] = E_ENTRY_TYPE
        info[1] = at + _TYPE_AT
        info[2] = entry_type
        return -1
    index = (np.int64(buf[at + _SEG_INDEX_AT]) << 8) | np.int64(buf[at + _SEG_INDEX_AT + 1])
    count = (np.int64(buf[at + _SEG_COUNT_AT]) << 8) | np.int64(buf[at + _SEG_COUNT_AT + 1])
    if count == 0 or index >= count:
        info[0] = E_SEGMENT
        info[1] = at + _SEG_INDEX_AT
        info[2] = index
        info[3] = count
        return -1
    p = at + _SEG_OFFSET_AT
    seg_offset = ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
                  | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))
    p = at + _TOTAL_AT
    total = ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
             | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))
    p = at + _RIO_AT
    rio = ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
           | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))
    if seg_offset + rio > total:
        info[0] = E_TOTAL_LENGTH
        info[1] = at + _TOTAL_AT
        info[2] = seg_offset
        info[3] = rio
        info[4] = total
        return -1
    if at + _HEADER + rio > limit:
        info[0] = E_RIO_TRUNCATED
        info[1] = at + _RIO_AT
        info[2] = rio
        info[3] = limit - at - _HEADER
        return -1
    return rio


_check_entry = njit(
    [types.int64(b, types.int64, types.int64, types.int64, _i64) for b in (_u8, _u8_ro)],
    cache=True, nogil=True)(_check_entry_impl)


def _unpack_impl(buf, offsets, lengths, version, info):
    """Inner entries of the BATCH at ``buf[0:]`` into ``offsets``/``lengths``.

    Returns the number of inner entries, or -1 with ``info`` = (code, offset, values...).
    The checks and their order are ``logentry.parse_batch``'s.
    """
    for j in range(info.shape[0]):
        info[j] = 0
    rio = _check_entry(buf, np.int64(0), np.int64(buf.shape[0]), version, info)
    if rio < 0:
        return -1
    outer_length = _HEADER + rio
    if rio < _COUNT_SIZE:
        info[0] = E_COUNT_TRUNCATED
        info[1] = _HEADER
        info[2] = rio
        return -1
    count = ((np.int64(buf[_COUNT_AT]) << 24) | (np.int64(buf[_COUNT_AT + 1]) << 16)
             | (np.int64(buf[_COUNT_AT + 2]) << 8) | np.int64(buf[_COUNT_AT + 3]))
    if count > _MAX_BATCH:
        info[0] = E_COUNT_MAX
        info[1] = _HEADER
        info[2] = count
        return -1
    at = np.int64(BATCH_OVERHEAD)
    for k in range(count):
        inner_rio = _check_entry(buf, at, outer_length, version, info)
        if inner_rio < 0:
            return -1
        if np.int64(buf[at + _TYPE_AT]) == _BATCH_TYPE:
            info[0] = E_NESTED
            info[1] = at + _TYPE_AT
            return -1
        if k >= offsets.shape[0] or k >= lengths.shape[0]:
            info[0] = E_CAPACITY
            info[1] = at
            info[2] = k
            return -1
        length = _HEADER + inner_rio
        offsets[k] = at
        lengths[k] = length
        at += (length + np.int64(7)) & np.int64(-8)
    if at != outer_length:
        info[0] = E_COUNT_END
        info[1] = _HEADER
        info[2] = count
        info[3] = at
        info[4] = outer_length
        return -1
    return count


_unpack_kernel = njit(
    [types.int64(b, _i64, _i64, types.int64, _i64) for b in (_u8, _u8_ro)],
    cache=True, nogil=True)(_unpack_impl)


# -- wrappers ----------------------------------------------------------------------------
def _int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is not in {low}..{high}")
    return int(value)


def _byte_array(name: str, data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return require_array(name, data, np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = np.frombuffer(data, dtype=np.uint8)
        if not view.flags.c_contiguous:
            raise ValueError(f"{name}: buffer must be contiguous")
        return view
    raise TypeError(f"{name}: expected bytes, bytearray, memoryview or a uint8 array, "
                    f"got {type(data).__name__}")


def _check_lengths(name: str, lengths: np.ndarray) -> None:
    if lengths.size and int(lengths.min()) < 0:
        raise ValueError(f"{name}: negative length at index {int(np.argmin(lengths))}")


def plan_batches(lengths: np.ndarray, byte_budget: int,
                 count_limit: int = MAX_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Greedy, order-preserving batch boundaries for entries of ``lengths`` bytes.

    ``lengths``: int64 array. ``byte_budget``: the largest batch datagram in
    bytes (header, count prefix and padded entries), 96..``MAX_DATAGRAM`` (the
    88-byte header plus the largest 32-bit ``rio_length``).
    ``count_limit``: most entries in one batch, 1..``MAX_BATCH`` (4096, what
    ``parse_batch`` accepts). Returns int64 ``(starts, ends)``: batch k holds
    entries ``starts[k]:ends[k]``; batches are non-empty, consecutive and cover
    every entry. An entry that alone exceeds the budget gets a batch of its own
    (the only batches larger than the budget).
    """
    lengths = require_array("lengths", lengths, np.int64)
    byte_budget = _int("byte_budget", byte_budget, BATCH_OVERHEAD, MAX_DATAGRAM)
    count_limit = _int("count_limit", count_limit, 1, MAX_BATCH)
    _check_lengths("lengths", lengths)
    if lengths.size and int(lengths.max()) > _U32_MAX - BATCH_OVERHEAD:
        raise ValueError("lengths: an entry does not fit one BATCH (32-bit rio_length)")
    starts = np.empty(lengths.shape[0], dtype=np.int64)
    ends = np.empty(lengths.shape[0], dtype=np.int64)
    batches = _plan_kernel(lengths, np.int64(byte_budget), np.int64(count_limit), starts, ends)
    return starts[:batches].copy(), ends[:batches].copy()


def batch_bounds(lengths: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Where each batch starts in :func:`pack`'s output: int64, ``len(starts) + 1`` long.

    The last element is the whole output's size; batch k's datagram is
    ``out[offsets[k]:offsets[k + 1]]``. Allocate ``out`` from it to reuse a buffer.
    """
    lengths = require_array("lengths", lengths, np.int64)
    starts = require_array("starts", starts, np.int64)
    ends = require_array("ends", ends, np.int64, shape=(starts.shape[0],))
    _check_lengths("lengths", lengths)
    n = lengths.shape[0]
    if starts.size:
        if int(starts.min()) < 0 or int(ends.max()) > n:
            raise ValueError(f"starts/ends: a batch reaches outside the {n} entries")
        counts = ends - starts
        if int(counts.min()) < 0:
            raise ValueError(f"starts/ends: batch {int(np.argmin(counts))} ends before it starts")
        if int(counts.max()) > MAX_BATCH:
            raise ValueError(f"starts/ends: batch {int(np.argmax(counts))} holds more than "
                             f"{MAX_BATCH} entries")
    batch_offsets = np.empty(starts.shape[0] + 1, dtype=np.int64)
    status = _layout_kernel(lengths, starts, ends, batch_offsets)
    if status < 0:
        raise ValueError(f"starts/ends: batch {-1 - status} is longer than a 32-bit rio_length")
    return batch_offsets


def pack(buf, offsets: np.ndarray, lengths: np.ndarray, starts: np.ndarray, ends: np.ndarray,
         *, out: np.ndarray | None = None, sequences: np.ndarray | None = None,
         **fields) -> tuple[np.ndarray, np.ndarray]:
    """Pack entries ``buf[offsets[i]:offsets[i] + lengths[i]]`` into BATCH datagrams.

    Batch k holds entries ``starts[k]:ends[k]`` (e.g. from :func:`plan_batches`;
    any ranges of at most ``MAX_BATCH`` entries will do). ``fields`` are the
    batch headers' fields as ``logentry.build_batch`` takes them (``group_id``,
    ``sequence``, ``ttl``...); the length, type, CRC and segment fields are
    computed. ``sequences`` (uint64, one per batch) gives each batch its own
    ``sequence`` instead. ``out`` (uint8, at least ``batch_bounds(...)[-1]``
    bytes) is written in place if given (reuse it: fresh memory costs a page
    fault per 4 KiB on first touch).

    Returns ``(out, batch_offsets)``: batch k is ``out[batch_offsets[k]:batch_offsets[k + 1]]``,
    byte-identical to ``logentry.build_batch(entries_k, **fields)``. Inner entries
    are copied as they are (``unpack`` will insist they are valid log entries).
    """
    data = _byte_array("buf", buf)
    offsets = require_array("offsets", offsets, np.int64)
    lengths = require_array("lengths", lengths, np.int64, shape=(offsets.shape[0],))
    if offsets.size:
        if int(offsets.min()) < 0:
            raise ValueError(f"offsets: negative offset at index {int(np.argmin(offsets))}")
        _check_lengths("lengths", lengths)
        reach = offsets + lengths
        if int(reach.max()) > data.shape[0]:
            raise ValueError(f"offsets/lengths: entry {int(np.argmax(reach))} runs past the "
                             f"{data.shape[0]}-byte buffer")
    batch_offsets = batch_bounds(lengths, starts, ends)
    starts, ends = np.ascontiguousarray(starts), np.ascontiguousarray(ends)
    nb = starts.shape[0]
    bad = _COMPUTED_FIELDS.intersection(fields)
    if bad:
        raise ValueError(f"pack computes {sorted(bad)} itself")
    if sequences is not None:
        sequences = require_array("sequences", sequences, np.uint64, shape=(nb,))
        if "sequence" in fields:
            raise ValueError("pack: give either sequence= or sequences=, not both")
        sequence_bytes = np.ascontiguousarray(sequences.astype(">u8").view(np.uint8))
    else:
        sequence_bytes = np.zeros(0, dtype=np.uint8)
    template = np.frombuffer(bytearray(logentry.build_entry(logentry.EntryType.BATCH, b"",
                                                             **fields)[:_HEADER]), dtype=np.uint8)
    template[_CRC_AT:_CRC_AT + 4] = 0
    total = int(batch_offsets[-1])
    if out is None:
        out = np.empty(total, dtype=np.uint8)
    else:
        out = require_array("out", out, np.uint8, writeable=True)
        if out.shape[0] < total:
            raise ValueError(f"out: {out.shape[0]} bytes, the batches need {total}")
        if np.may_share_memory(out, data):
            raise ValueError("out: overlaps buf")
    _pack_kernel(data, offsets, lengths, starts, ends, batch_offsets, template, sequence_bytes,
                 out)
    crcs = np.empty(nb, dtype=np.uint32)
    crc = _crc32c.crc32c
    for k in range(nb):
        crcs[k] = crc(out[batch_offsets[k]:batch_offsets[k + 1]])
    _store_crc_kernel(out, batch_offsets, crcs)
    return out, batch_offsets


def _raise_decode_error(info: np.ndarray, base: int, data: np.ndarray) -> None:
    code, at = int(info[0]), int(info[1])
    a, b, c = int(info[2]), int(info[3]), int(info[4])
    if code == E_HEADER_TRUNCATED:
        cut = LOG_HEADER.field_at(a)
        raise DecodeError("log", cut.name, base + at + LOG_HEADER.offsets[cut.name],
                          f"truncated: need {LOG_HEADER.size} bytes, have {a}")
    if code == E_MAGIC:
        raise DecodeError("log", "magic", base + at, f"0x{a:08x} is not 'RCNL'")
    if code == E_VERSION:
        raise DecodeError("log", "version", base + at, f"unknown version {a}")
    if code == E_ENTRY_TYPE:
        raise DecodeError("log", "entry_type", base + at, f"unknown entry type {a}")
    if code == E_SEGMENT:
        raise DecodeError("log", "segment_index", base + at, f"segment {a} of {b}")
    if code == E_TOTAL_LENGTH:
        raise DecodeError("log", "total_length", base + at,
                          f"segment at {a} of {b} bytes overruns total length {c}")
    if code == E_RIO_TRUNCATED:
        raise DecodeError("log", "rio_length", base + at,
                          f"truncated: body of {a} bytes, {b} present")
    if code == E_COUNT_TRUNCATED:
        cut = COUNT_HEADER.field_at(a)
        raise DecodeError(COUNT_HEADER.layer, cut.name,
                          base + at + COUNT_HEADER.offsets[cut.name],
                          f"truncated: need {COUNT_HEADER.size} bytes, have {a}")
    if code == E_COUNT_MAX:
        raise DecodeError(COUNT_HEADER.layer, "count", base + at,
                          f"{a} entries exceed {MAX_BATCH}")
    if code == E_NESTED:
        raise DecodeError("log", "entry_type", base + at, "a batch inside a batch")
    if code == E_COUNT_END:
        raise DecodeError(COUNT_HEADER.layer, "count", base + at,
                          f"{a} entries end at byte {b}, the batch at {c}")
    raise RuntimeError(f"batching: unpack kernel error code {code} at {at}")


def unpack(batch, base: int = 0, check_crc: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, lengths)`` (int64) of the entries inside the BATCH at ``batch[0:]``.

    ``batch``: bytes, bytearray, memoryview or a uint8 array. Offsets count from
    ``batch[0]`` plus ``base``, like ``logentry.parse_batch``'s spans, and a
    malformed batch raises the same ``DecodeError`` (layer, field, offset with
    ``base``, reason). Like ``parse_batch`` this checks no CRC and not the outer
    entry type; ``check_crc=True`` also raises ``DecodeError`` on ``log.crc32c``
    when the outer CRC32C is wrong (inner entries carry their own CRCs).
    """
    data = _byte_array("batch", batch)
    base = _int("base", base, -(1 << 62), 1 << 62)
    capacity = min(MAX_BATCH, max(0, data.shape[0] - BATCH_OVERHEAD) // _HEADER)
    offsets = np.empty(capacity, dtype=np.int64)
    lengths = np.empty(capacity, dtype=np.int64)
    info = np.empty(_INFO_SIZE, dtype=np.int64)
    count = _unpack_kernel(data, offsets, lengths, logentry.VERSION, info)
    if count < 0:
        _raise_decode_error(info, base, data)
    if check_crc:
        length = _HEADER + int.from_bytes(data[_RIO_AT:_RIO_AT + 4].tobytes(), "big")
        header = data[:_HEADER].tobytes()
        want = int.from_bytes(header[_CRC_AT:_CRC_AT + 4], "big")
        got = logentry.entry_crc(header, data[_HEADER:length])
        if got != want:
            raise DecodeError("log", "crc32c", base + _CRC_AT,
                              f"CRC32C 0x{want:08x}, computed 0x{got:08x}")
    if base:
        offsets[:count] += base
    return offsets[:count], lengths[:count]


def warm_up() -> None:
    """Run every kernel once on tiny inputs (fills numba's cache)."""
    entry = np.frombuffer(logentry.build_entry(logentry.EntryType.WR, b"abc"), dtype=np.uint8)
    offsets = np.zeros(2, dtype=np.int64)
    lengths = np.full(2, entry.shape[0], dtype=np.int64)
    starts, ends = plan_batches(lengths, 1 << 16, 2)
    out, bounds = pack(entry, offsets, lengths, starts, ends)
    pack(entry.copy(), offsets, lengths, starts, ends,
         sequences=np.arange(starts.shape[0], dtype=np.uint64))
    for view in (out, out.tobytes()):
        unpack(view[:int(bounds[1])])
