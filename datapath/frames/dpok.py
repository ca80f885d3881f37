"""The DPOK differential bitmap's serial form header (RESYNC's FCP data-in).

The body and the encoder/decoder are in :mod:`datapath.kernels.bitmap`; the
header lives here with the other wire layouts.
"""

from __future__ import annotations

from datapath.frames.fields import Layout, uint

MAGIC = 0x44504F4B  # "DPOK"
VERSION = 1
ENCODING_RAW = 0
ENCODING_RUNS = 1

HEADER = Layout("dpok_bitmap", [
    uint("magic", 4, "0x44504F4B, ASCII DPOK"),
    uint("version", 1, "serial form version, 1"),
    uint("encoding", 1, "body encoding", values={ENCODING_RAW: "RAW", ENCODING_RUNS: "RUNS"}),
    uint("reserved", 2, "0"),
    uint("track_size", 4, "bytes per track, a power of two"),
    uint("volume_bytes", 8, "volume size in bytes"),
    uint("track_count", 8, "ceil(volume_bytes / track_size)"),
    uint("dirty_tracks", 8, "number of dirty tracks"),
    uint("items", 8, "RAW: little-endian uint64 words in the body; RUNS: (first, last) uint32 pairs"),
], doc="DPOK differential bitmap, as sent in an FCP data-in sequence")
