"""Benchmark rows for the batch coalescing kernels (``datapath.kernels.batching`` and
``datapath.kernels.coalesce``).

Inputs at ``scale=1.0``:

plan
    200k entry lengths of 512..8 KiB into 64 KiB batches (count limit 4096).
    Kernel, model and numpy (cumsum + one searchsorted per batch) all run on it.
pack
    100k entries of 512..8 KiB (random bytes, ~435 MB) at random places in
    one buffer, packed into the 64 KiB batches ``plan_batches`` chose, into a
    reused output buffer (fresh memory would add a page fault per 4 KiB). The
    unit is entry bytes. The numpy alternative is one ``np.concatenate`` of
    header/count/entry/padding views into the same output buffer, headers from
    ``LOG_HEADER.array_to_wire``; both compute CRC32C per batch with the
    ``crc32c`` package. The model (``logentry.build_batch`` per batch) runs on
    the first 1/10 of the batches and its time is scaled by the bytes.
unpack
    40k valid log entries with bodies of 0..256 bytes packed into 64 KiB
    batches (~300 entries each); one ``unpack`` call per batch datagram, as a
    receiver would. The model (``logentry.parse_batch``) runs on 1/10 of the
    batches, scaled by entries. No numpy alternative (a sequential walk).
coalescing plan
    50 batches of 4096 writes (the most entries a batch holds) on 8 volumes,
    1..64 blocks each in a 16k-block hot range (about half end up droppable);
    one ``coalesce_plan`` call per batch. The model (sets of block numbers)
    runs on 1/10 of the batches, scaled by writes. No numpy alternative.

Target (from the issue): batch packing >= 1 GB/s.
"""

from __future__ import annotations

import crc32c
import numpy as np

from datapath.frames import logentry
from datapath.frames.logentry import COUNT_HEADER, HEADER_SIZE, LOG_HEADER, MAX_BATCH
from datapath.kernels import batching as kb
from datapath.kernels.coalesce import coalesce_plan
from datapath.reference import batching as rb
from tools.kernel_bench import Row, best_time

BUDGET = 64 * 1024
REFERENCE_SHARE = 10
TARGET_PACK_BYTES_PER_S = 1e9
_CRC_AT = LOG_HEADER.offsets["crc32c"]


# -- numpy alternatives ------------------------------------------------------------------
def numpy_plan(lengths: np.ndarray, byte_budget: int, count_limit: int):
    """cumsum of padded lengths, then one searchsorted per batch."""
    padded = (lengths + 7) & -8
    cum = np.concatenate(([0], np.cumsum(padded)))
    n = len(lengths)
    starts, ends = [], []
    start = 0
    room = byte_budget - kb.BATCH_OVERHEAD
    while start < n:
        end = int(np.searchsorted(cum, cum[start] + room, side="right")) - 1
        end = min(max(end, start + 1), start + count_limit, n)
        starts.append(start)
        ends.append(end)
        start = end
    return np.array(starts, np.int64), np.array(ends, np.int64)


def numpy_pack(buf, offsets, lengths, starts, ends, out, **fields):
    """One np.concatenate of views into ``out``; headers vectorised; CRC per batch."""
    nb = len(starts)
    counts = ends - starts
    padded = (lengths + 7) & -8
    cum = np.concatenate(([0], np.cumsum(padded)))
    bodies = COUNT_HEADER.size + cum[ends] - cum[starts]
    headers = np.zeros(nb, dtype=LOG_HEADER.dtype)
    headers["magic"] = logentry.MAGIC
    headers["version"] = logentry.VERSION
    headers["entry_type"] = logentry.EntryType.BATCH
    headers["ttl"] = fields.get("ttl", 16)
    headers["group_id"] = fields.get("group_id", 0)
    headers["segment_count"] = 1
    headers["rio_length"] = bodies
    headers["total_length"] = bodies
    wire = np.frombuffer(LOG_HEADER.array_to_wire(headers), np.uint8).reshape(nb, HEADER_SIZE)
    count_rows = np.zeros((nb, COUNT_HEADER.size), np.uint8)
    count_rows[:, :4] = counts.astype(">u4").view(np.uint8).reshape(nb, 4)
    zeros = np.zeros(8, np.uint8)
    pieces = []
    append = pieces.append
    offsets_list, lengths_list = offsets.tolist(), lengths.tolist()
    for k in range(nb):
        append(wire[k])
        append(count_rows[k])
        for i in range(int(starts[k]), int(ends[k])):
            o, n = offsets_list[i], lengths_list[i]
            append(buf[o:o + n])
            if n & 7:
                append(zeros[:8 - (n & 7)])
    total = int(HEADER_SIZE * nb + bodies.sum())
    np.concatenate(pieces, out=out[:total])
    bounds = np.concatenate(([0], np.cumsum(HEADER_SIZE + bodies)))
    for k in range(nb):
        crc = crc32c.crc32c(out[bounds[k]:bounds[k + 1]])
        out[bounds[k] + _CRC_AT:bounds[k] + _CRC_AT + 4] = np.frombuffer(
            crc.to_bytes(4, "big"), np.uint8)
    return out, bounds


# -- inputs ------------------------------------------------------------------------------
def scattered(rng, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random byte buffer holding entries of ``lengths`` at shuffled places."""
    place = rng.permutation(len(lengths))
    sizes = lengths[place]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    offsets = np.empty(len(lengths), np.int64)
    offsets[place] = starts
    buf = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    return buf, offsets


def valid_entries(rng, n: int, max_body: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` WR log entries (headers vectorised, CRC left zero) back to back."""
    bodies = rng.integers(0, max_body + 1, n).astype(np.int64)
    headers = np.zeros(n, dtype=LOG_HEADER.dtype)
    headers["magic"] = logentry.MAGIC
    headers["version"] = logentry.VERSION
    headers["entry_type"] = logentry.EntryType.WR
    headers["segment_count"] = 1
    headers["rio_length"] = bodies
    headers["total_length"] = bodies
    headers["sequence"] = np.arange(n, dtype=np.uint64)
    wire = np.frombuffer(LOG_HEADER.array_to_wire(headers), np.uint8).reshape(n, HEADER_SIZE)
    lengths = HEADER_SIZE + bodies
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    buf = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    for i in range(n):
        buf[offsets[i]:offsets[i] + HEADER_SIZE] = wire[i]
    return buf, offsets, lengths


# -- rows --------------------------------------------------------------------------------
def _plan_row(rng, scale: float) -> Row:
    n = max(1000, int(200_000 * scale))
    lengths = rng.integers(512, 8193, n).astype(np.int64)
    as_list = lengths.tolist()
    kernel_s = best_time(lambda: kb.plan_batches(lengths, BUDGET, MAX_BATCH))
    ref_s = best_time(lambda: rb.plan_batches(as_list, BUDGET, MAX_BATCH), repeat=2)
    numpy_s = best_time(lambda: numpy_plan(lengths, BUDGET, MAX_BATCH), repeat=2)
    starts, ends = kb.plan_batches(lengths, BUDGET, MAX_BATCH)
    np_starts, np_ends = numpy_plan(lengths, BUDGET, MAX_BATCH)
    assert np.array_equal(starts, np_starts) and np.array_equal(ends, np_ends)
    return Row("batching", f"plan ({n // 1000}k x 512..8K into 64K)", "entries", n, kernel_s, ref_s,
               numpy_s, None)


def _pack_row(rng, scale: float) -> Row:
    n = max(1000, int(100_000 * scale))
    lengths = rng.integers(512, 8193, n).astype(np.int64)
    buf, offsets = scattered(rng, lengths)
    starts, ends = kb.plan_batches(lengths, BUDGET, MAX_BATCH)
    size = int(kb.batch_bounds(lengths, starts, ends)[-1])
    packed = np.empty(size, np.uint8)
    other = np.empty(size, np.uint8)
    entry_bytes = int(lengths.sum())
    kernel_s = best_time(lambda: kb.pack(buf, offsets, lengths, starts, ends, out=packed,
                                         group_id=7))
    numpy_s = best_time(lambda: numpy_pack(buf, offsets, lengths, starts, ends, other,
                                           group_id=7), repeat=2)
    assert np.array_equal(packed, other)
    nb_ref = max(1, len(starts) // REFERENCE_SHARE)
    data = buf.tobytes()
    ref_offsets, ref_lengths = offsets.tolist(), lengths.tolist()
    ref_starts, ref_ends = starts[:nb_ref].tolist(), ends[:nb_ref].tolist()
    ref_bytes = int(lengths[:ref_ends[-1]].sum())
    ref_s = best_time(lambda: rb.pack(data, ref_offsets, ref_lengths, ref_starts, ref_ends,
                                      group_id=7), repeat=1)
    assert b"".join(rb.pack(data, ref_offsets, ref_lengths, ref_starts[:3], ref_ends[:3],
                            group_id=7)) == packed[:int(kb.batch_bounds(
                                lengths, starts[:3], ends[:3])[-1])].tobytes()
    return Row("batching", f"pack ({n // 1000}k x 512..8K into 64K)", "bytes", entry_bytes, kernel_s,
               ref_s * entry_bytes / ref_bytes, numpy_s, TARGET_PACK_BYTES_PER_S)


def _unpack_row(rng, scale: float) -> Row:
    """One call per batch datagram."""
    n = max(1000, int(40_000 * scale))
    buf, offsets, lengths = valid_entries(rng, n, 256)
    starts, ends = kb.plan_batches(lengths, BUDGET, MAX_BATCH)
    packed, bounds = kb.pack(buf, offsets, lengths, starts, ends)
    views = [packed[bounds[k]:bounds[k + 1]] for k in range(len(starts))]
    datagrams = [v.tobytes() for v in views]
    nb_ref = max(1, len(views) // REFERENCE_SHARE)
    ref_entries = int(ends[nb_ref - 1])

    def kernel_unpack():
        for view in views:
            kb.unpack(view)

    def ref_unpack():
        for datagram in datagrams[:nb_ref]:
            rb.unpack(datagram)

    kernel_s = best_time(kernel_unpack)
    ref_s = best_time(ref_unpack, repeat=1)
    return Row("batching", f"unpack ({n // 1000}k entries, 64K batches)", "entries", n, kernel_s,
               ref_s * n / ref_entries, None, None)


def _coalesce_row(rng, scale: float) -> Row:
    """One call per batch of 4096 writes."""
    batches = max(REFERENCE_SHARE, int(50 * scale))
    writes = []
    for _ in range(batches):
        keys = rng.integers(0, 8, MAX_BATCH).astype(np.uint64)
        lbas = rng.integers(0, 1 << 14, MAX_BATCH).astype(np.uint64)
        blocks = rng.integers(1, 65, MAX_BATCH).astype(np.uint32)
        writes.append((keys, lbas, blocks))
    as_lists = [(k.tolist(), a.tolist(), b.tolist())
                for k, a, b in writes[:batches // REFERENCE_SHARE]]
    assert coalesce_plan(*writes[0]).tolist() == rb.coalesce_plan(*as_lists[0])

    def kernel_coalesce():
        for keys, lbas, blocks in writes:
            coalesce_plan(keys, lbas, blocks)

    def ref_coalesce():
        for keys, lbas, blocks in as_lists:
            rb.coalesce_plan(keys, lbas, blocks)

    kernel_s = best_time(kernel_coalesce)
    ref_s = best_time(ref_coalesce, repeat=1)
    total = batches * MAX_BATCH
    return Row("batching", f"coalescing plan ({batches} x 4096 writes)", "writes", total,
               kernel_s, ref_s * batches / len(as_lists), None, None)


def rows(scale: float = 1.0) -> list[Row]:
    # one generator through the rows in this order: each row's inputs as before
    rng = np.random.default_rng(20240602)
    return [make(rng, scale) for make in (_plan_row, _pack_row, _unpack_row, _coalesce_row)]


if __name__ == "__main__":
    for row in rows():
        line = (f"{row.operation:40s} {row.items:>12,d} {row.unit:8s}"
                f" kernel {row.items / row.kernel_s:12.4g}/s"
                f" reference {row.items / row.reference_s:10.4g}/s")
        if row.numpy_s is not None:
            line += f" numpy {row.items / row.numpy_s:10.4g}/s"
        if row.target_per_s is not None:
            line += f" target {row.target_per_s:.3g}/s"
        print(line)
