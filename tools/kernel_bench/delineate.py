"""Benchmark rows of FCIP stream delineation (datapath.kernels.delineate).

Input: FCIP frames with a 2048-byte payload (2148 bytes on the stream), 64
distinct FC headers repeated.

chunk     one call on a buffer of ``50_000 * scale`` frames (~107 MB at scale 1;
          the issue's target: >= 2 M frames/s). The reference is timed on the
          first ``2_000 * scale`` frames of the same buffer and its time scaled
          linearly to the kernel's frame count (it is a plain per-frame loop),
          so ``items / reference_s`` is its frames/s.
stream    ``500 * scale`` TCP-like chunks of 64 KiB through ``StreamDelineator.feed``
          (what ``dataReceived`` does: a frame is cut across every chunk
          boundary), against ``datapath.reference``'s ``StreamDelineator``.
rcn       the same 64 KiB chunks; the ``reference_s`` column is the offline
          decoder's ``rcn.decode.streams.FcipDelineator.feed`` (this kernel behind
          the decoder's resynchronising wrapper, which copies each frame out).

numpy_s is None: the scan is a chain (each frame's start is the previous
start plus the length field of the previous header). A vectorised version
would have to check a candidate header at every word offset of the chunk and
then follow the chain by pointer jumping, i.e. read every byte several times,
where the kernel reads about 70 bytes per 2 KiB frame.
"""

from __future__ import annotations

import time

from datapath.frames import fcip
from datapath.kernels import delineate as kernel
from datapath.reference import delineate as reference
from rcn.decode.streams import FcipDelineator
from tools.kernel_bench import Row, best_time

TARGET = 2e6        # frames/s, from the issue
PAYLOAD = 2048
CHUNK = 64 << 10


def _frames(count: int) -> bytes:
    distinct = [fcip.build_fcip_frame({"r_ctl": 0x01, "d_id": 0x010200 + i, "s_id": 0x020300,
                                        "type": 0x08, "f_ctl": 0x290008, "seq_cnt": i,
                                        "ox_id": 0x1000 + i, "parameter": i * PAYLOAD},
                                       bytes(PAYLOAD)) for i in range(64)]
    block = b"".join(distinct)
    return block * (count // 64) + b"".join(distinct[:count % 64])


def _feed_all(delineator_type, chunks) -> int:
    stream = delineator_type()
    return sum(len(stream.feed(chunk)[1].frames) for chunk in chunks)


def _feed_rcn(chunks) -> int:
    stream = FcipDelineator()
    return sum(len(stream.feed(chunk)) for chunk in chunks)


def rows(scale: float = 1.0) -> list[Row]:
    count = max(1000, int(50_000 * scale))
    ref_count = max(200, int(2_000 * scale))
    data = _frames(count)
    frame_bytes = len(data) // count

    kernel_s = best_time(lambda: kernel.delineate(data))
    head = data[:ref_count * frame_bytes]
    reference_s = best_time(lambda: reference.delineate(head), repeat=3) * count / ref_count
    result = kernel.delineate(data)
    assert len(result.frames) == count and result.consumed == len(data) and not result.error

    n_chunks = max(20, int(500 * scale))
    chunks = [data[i:i + CHUNK] for i in range(0, n_chunks * CHUNK, CHUNK)]
    stream_frames = _feed_all(kernel.StreamDelineator, chunks)
    assert stream_frames == _feed_all(reference.StreamDelineator, chunks) == _feed_rcn(chunks)
    stream_s = best_time(lambda: _feed_all(kernel.StreamDelineator, chunks))
    stream_ref_s = best_time(lambda: _feed_all(reference.StreamDelineator, chunks), repeat=3)
    rcn_s = best_time(lambda: _feed_rcn(chunks), repeat=3)

    return [
        Row("delineate", f"chunk of {count} frames", "frames", count, kernel_s, reference_s,
            None, TARGET),
        Row("delineate", "64 KiB chunks, StreamDelineator.feed", "frames", stream_frames,
            stream_s, stream_ref_s, None, TARGET),
        Row("delineate", "64 KiB chunks, ref = rcn FcipDelineator", "frames", stream_frames,
            stream_s, rcn_s, None, TARGET),
    ]


if __name__ == "__main__":
    def rate(items, seconds):
        return f"{items / seconds / 1e6:10.3f}" if seconds else "         -"

    started = time.perf_counter()
    table = rows()
    print(f"{'operation':42} {'items':>8} {'kernel M/s':>10} {'ref M/s':>10} {'numpy M/s':>10} "
          f"{'target M/s':>10}")
    for row in table:
        target = f"{row.target_per_s / 1e6:10.3f}" if row.target_per_s else "         -"
        print(f"{row.operation:42} {row.items:8d} {rate(row.items, row.kernel_s)} "
              f"{rate(row.items, row.reference_s)} {rate(row.items, row.numpy_s)} {target}")
    print(f"({time.perf_counter() - started:.1f} s)")
