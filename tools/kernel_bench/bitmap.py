"""Benchmark rows for the differential bitmap kernel (``datapath.kernels.bitmap``).

Input at ``scale=1.0``: a 16 TiB volume of 64 KiB tracks (2**28 tracks, 32 MiB
of bits) and 1M random extents of 4 KiB..1 MiB in 512-byte blocks (about 3 %
of the tracks end up dirty, ~1M runs). The kernel and the numpy alternative
run on exactly that input.

The reference model (a Python set of track numbers) would take minutes there,
so it runs on 1/16 of the work at the same density: 1/16 of the extents for
marking, a 1 TiB volume marked with 1/16 of the extents for merge, popcount
and dirty runs. Its time is multiplied by 16, so every column of a row is the
time for the row's ``items``. (The model's popcount is ``len(set)``, O(1), so
its popcount figure is not a per-track cost.)
"""

from __future__ import annotations

import numpy as np

from datapath.kernels import bitmap as kb
from datapath.reference import bitmap as rb
from tools.kernel_bench import Row, best_time

TIB = 1 << 40
BLOCK = 512
REFERENCE_SHARE = 16
TARGET_EXTENTS_PER_S = 20e6


def random_extents(rng, volume_bytes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` extents of 4 KiB..1 MiB in ``BLOCK``-byte blocks, anywhere in the volume."""
    blocks = rng.integers(4096 // BLOCK, (1 << 20) // BLOCK + 1, n).astype(np.uint32)
    lba = rng.integers(0, volume_bytes // BLOCK - (1 << 20) // BLOCK, n).astype(np.uint64)
    return lba, blocks


# -- numpy alternatives ------------------------------------------------------

def numpy_mark(words: np.ndarray, lba: np.ndarray, blocks: np.ndarray, block_size: int,
               track_size: int) -> None:
    """Expand every extent to its tracks (np.repeat), then ``np.bitwise_or.at``."""
    start = lba * np.uint64(block_size)
    first = (start // np.uint64(track_size)).astype(np.int64)
    last = ((start + blocks.astype(np.uint64) * np.uint64(block_size) - np.uint64(1))
            // np.uint64(track_size)).astype(np.int64)
    keep = blocks > 0
    first, last = first[keep], last[keep]
    spans = last - first + 1
    offsets = np.arange(int(spans.sum()), dtype=np.int64) - np.repeat(np.cumsum(spans) - spans,
                                                                        spans)
    tracks = np.repeat(first, spans) + offsets
    np.bitwise_or.at(words, tracks >> 6, np.left_shift(np.uint64(1), (tracks & 63).astype(np.uint64)))


def numpy_popcount(words: np.ndarray) -> int:
    return int(np.bitwise_count(words).sum(dtype=np.int64))


def numpy_dirty_runs(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack only the non-zero words to track numbers, then split where they jump."""
    nonzero = np.flatnonzero(words)
    bits = np.unpackbits(words[nonzero].view(np.uint8), bitorder="little")
    where = np.flatnonzero(bits)
    tracks = nonzero[where >> 6] * 64 + (where & 63)
    if len(tracks) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    breaks = np.flatnonzero(np.diff(tracks) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(tracks)]))
    return tracks[starts].astype(np.uint64), (ends - starts).astype(np.uint64)


# -- rows --------------------------------------------------------------------

def rows(scale: float = 1.0) -> list[Row]:
    rng = np.random.default_rng(20240601)
    volume = 16 * TIB
    n = max(REFERENCE_SHARE, int(1_000_000 * scale))
    n_ref = n // REFERENCE_SHARE
    lba, blocks = random_extents(rng, volume, n)
    lba2, blocks2 = random_extents(rng, volume, n)
    out: list[Row] = []

    # mark extents
    kernel = kb.DifferentialBitmap(volume)
    ref = rb.DifferentialBitmap(volume)
    npw = np.zeros_like(kernel.words)
    kernel_s = best_time(lambda: kernel.mark_extents(lba, blocks, BLOCK))
    ref_s = best_time(lambda: ref.mark_extents(lba[:n_ref], blocks[:n_ref], BLOCK), repeat=1)
    numpy_s = best_time(lambda: numpy_mark(npw, lba, blocks, BLOCK, kernel.track_size), repeat=2)
    assert np.array_equal(npw, kernel.words)
    out.append(Row("bitmap", "mark extents (16 TiB, 4K..1M)", "extents", n, kernel_s,
                   ref_s * n / n_ref, numpy_s, TARGET_EXTENTS_PER_S))
    del ref, npw

    # merge, popcount, dirty runs on the 16 TiB bitmap; the model on 1 TiB
    other = kb.DifferentialBitmap(volume)
    other.mark_extents(lba2, blocks2, BLOCK)
    small = volume // REFERENCE_SHARE
    ref = rb.DifferentialBitmap(small)
    ref_other = rb.DifferentialBitmap(small)
    ref.mark_extents(*random_extents(rng, small, n_ref), BLOCK)
    ref_other.mark_extents(*random_extents(rng, small, n_ref), BLOCK)

    nbytes = kernel.words.nbytes
    kernel_s = best_time(lambda: kernel.merge(other))
    ref_s = best_time(lambda: ref.merge(ref_other), repeat=1)
    numpy_s = best_time(lambda: np.bitwise_or(kernel.words, other.words, out=kernel.words))
    out.append(Row("bitmap", "merge (OR, 16 TiB)", "bytes", nbytes, kernel_s,
                   ref_s * REFERENCE_SHARE, numpy_s, None))

    tracks = kernel.track_count
    assert kernel.popcount() == numpy_popcount(kernel.words)
    kernel_s = best_time(kernel.popcount)
    ref_s = best_time(ref.popcount)
    numpy_s = best_time(lambda: numpy_popcount(kernel.words))
    out.append(Row("bitmap", "popcount (16 TiB)", "tracks", tracks, kernel_s,
                   ref_s * REFERENCE_SHARE, numpy_s, None))

    first, count, _ = kernel.dirty_runs()
    np_first, np_count = numpy_dirty_runs(kernel.words)
    assert np.array_equal(first, np_first) and np.array_equal(count, np_count)
    kernel_s = best_time(kernel.dirty_runs)
    ref_s = best_time(ref.dirty_runs, repeat=1)
    numpy_s = best_time(lambda: numpy_dirty_runs(kernel.words), repeat=3)
    out.append(Row("bitmap", f"dirty runs (16 TiB, {len(first)} runs)", "tracks", tracks,
                   kernel_s, ref_s * REFERENCE_SHARE, numpy_s, None))
    return out


if __name__ == "__main__":
    import sys

    for row in rows(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0):
        ref = f"{row.items / row.reference_s:12.4g}"
        num = f"{row.items / row.numpy_s:12.4g}" if row.numpy_s else f"{'-':>12}"
        target = f"{row.target_per_s:10.3g}" if row.target_per_s else f"{'-':>10}"
        print(f"{row.operation:40} {row.unit:8} kernel {row.items / row.kernel_s:12.4g}/s"
              f"  reference {ref}/s  numpy {num}/s  target {target}")
