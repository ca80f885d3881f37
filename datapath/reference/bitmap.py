"""Reference model of ``datapath.kernels.bitmap``: a set of dirty track numbers.

Same public operations and errors as the kernel wrapper, written to be
obviously right: an extent dirties every track from the one holding its first
byte to the one holding its last; runs come from walking the sorted set. The
serial form is built and parsed here by hand with ``struct`` (not through the
kernel module's ``HEADER`` Layout), so the tests check the two agree byte for
byte. Layout: see the ``datapath.kernels.bitmap`` docstring.
"""

from __future__ import annotations

import struct

from datapath.frames.errors import DecodeError

MAX_TRACKS = 1 << 32
MAX_TRACK_SIZE = 1 << 30
MAX_BLOCK_SIZE = 1 << 30
MAGIC = 0x44504F4B
VERSION = 1
ENCODING_RAW = 0
ENCODING_RUNS = 1
LAYER = "dpok_bitmap"
# magic, version, encoding, reserved, track_size, volume_bytes, track_count, dirty_tracks, items
HEADER_FORMAT = struct.Struct(">IBBHIQQQQ")
FIELD_OFFSETS = {"magic": 0, "version": 4, "encoding": 5, "reserved": 6, "track_size": 8,
                 "volume_bytes": 12, "track_count": 20, "dirty_tracks": 28, "items": 36}


def _is_power_of_two(value, limit) -> bool:
    return isinstance(value, int) and 0 < value <= limit and value & (value - 1) == 0


class DifferentialBitmap:
    def __init__(self, volume_bytes: int, track_size: int = 65536):
        if not _is_power_of_two(track_size, MAX_TRACK_SIZE):
            raise ValueError(f"track_size: {track_size} is not a power of two")
        if not 1 <= volume_bytes <= MAX_TRACKS * track_size:
            raise ValueError(f"volume_bytes: {volume_bytes} out of range")
        self.volume_bytes = volume_bytes
        self.track_size = track_size
        self.track_count = (volume_bytes + track_size - 1) // track_size
        self.dirty: set[int] = set()

    def copy(self) -> DifferentialBitmap:
        other = DifferentialBitmap(self.volume_bytes, self.track_size)
        other.dirty = set(self.dirty)
        return other

    def mark_extents(self, lba, blocks, block_size: int) -> None:
        if not _is_power_of_two(block_size, MAX_BLOCK_SIZE):
            raise ValueError(f"block_size: {block_size} is not a power of two")
        lba = [int(x) for x in lba]
        blocks = [int(x) for x in blocks]
        if len(lba) != len(blocks):
            raise ValueError("lba and blocks differ in length")
        limit = self.volume_bytes // block_size
        for i, (start, count) in enumerate(zip(lba, blocks)):
            if start + count > limit:
                raise ValueError(f"extent {i} reaches past the volume; nothing marked")
        for start, count in zip(lba, blocks):
            if count:
                first_byte = start * block_size
                last_byte = (start + count) * block_size - 1
                for track in range(first_byte // self.track_size, last_byte // self.track_size + 1):
                    self.dirty.add(track)

    def _check_range(self, first_track: int, count: int) -> None:
        if first_track < 0 or count < 0 or first_track + count > self.track_count:
            raise ValueError(f"range {first_track}+{count} outside {self.track_count} tracks")

    def set_range(self, first_track: int, count: int) -> None:
        self._check_range(first_track, count)
        self.dirty.update(range(first_track, first_track + count))

    def clear_range(self, first_track: int, count: int) -> None:
        self._check_range(first_track, count)
        self.dirty.difference_update(range(first_track, first_track + count))

    def mark_runs(self, first, count) -> None:
        runs = [(int(f), int(c)) for f, c in zip(first, count)]
        for f, c in runs:
            if f + c > self.track_count:
                raise ValueError(f"run ({f}, {c}) reaches past the end; nothing marked")
        for f, c in runs:
            self.dirty.update(range(f, f + c))

    def merge(self, *others: DifferentialBitmap) -> DifferentialBitmap:
        for other in others:
            if (other.volume_bytes, other.track_size) != (self.volume_bytes, self.track_size):
                raise ValueError("geometry differs")
        for other in others:
            self.dirty |= other.dirty
        return self

    def popcount(self) -> int:
        return len(self.dirty)

    def run_count(self) -> int:
        return sum(1 for track in self.dirty if track - 1 not in self.dirty)

    def dirty_runs(self, max_runs: int | None = None, start_track: int = 0):
        """``(first list, count list, next_track)``, as the kernel's ``DirtyRuns``."""
        runs: list[list[int]] = []
        for track in sorted(t for t in self.dirty if t >= start_track):
            if runs and runs[-1][0] + runs[-1][1] == track:
                runs[-1][1] += 1
            else:
                runs.append([track, 1])
        next_track = self.track_count
        if max_runs is not None and len(runs) > max_runs:
            next_track = runs[max_runs][0]
            runs = runs[:max_runs]
        return [r[0] for r in runs], [r[1] for r in runs], next_track

    def to_words(self) -> list[int]:
        """The kernel's ``words``: bit ``t % 64`` of word ``t // 64`` is track ``t``."""
        words = [0] * ((self.track_count + 63) // 64)
        for track in self.dirty:
            words[track // 64] |= 1 << (track % 64)
        return words

    # -- serial form -----------------------------------------------------
    def serialize(self, encoding: int | None = None) -> bytes:
        words = self.to_words()
        while words and words[-1] == 0:
            words.pop()
        first, count, _ = self.dirty_runs()
        if encoding is None:
            encoding = ENCODING_RUNS if len(first) < len(words) else ENCODING_RAW
        if encoding == ENCODING_RAW:
            items = len(words)
            body = b"".join(w.to_bytes(8, "little") for w in words)
        elif encoding == ENCODING_RUNS:
            items = len(first)
            body = b"".join(struct.pack(">II", f, f + c - 1) for f, c in zip(first, count))
        else:
            raise ValueError(f"encoding: {encoding!r}")
        header = HEADER_FORMAT.pack(MAGIC, VERSION, encoding, 0, self.track_size,
                                    self.volume_bytes, self.track_count, len(self.dirty), items)
        return header + body

    @classmethod
    def deserialize(cls, data) -> DifferentialBitmap:
        data = bytes(data)

        def fail(field, reason, offset=None):
            return DecodeError(LAYER, field, FIELD_OFFSETS[field] if offset is None else offset,
                               reason)

        if len(data) < HEADER_FORMAT.size:
            # the first field that is not all there
            cut = [name for name, offset in FIELD_OFFSETS.items() if offset <= len(data)][-1]
            raise fail(cut, "truncated")
        (magic, version, encoding, reserved, track_size, volume_bytes, track_count,
         dirty_tracks, items) = HEADER_FORMAT.unpack_from(data)
        if magic != MAGIC:
            raise fail("magic", "bad magic")
        if version != VERSION:
            raise fail("version", "bad version")
        if encoding not in (ENCODING_RAW, ENCODING_RUNS):
            raise fail("encoding", "bad encoding")
        if reserved:
            raise fail("reserved", "not zero")
        if not _is_power_of_two(track_size, MAX_TRACK_SIZE):
            raise fail("track_size", "not a power of two")
        if not 1 <= volume_bytes <= MAX_TRACKS * track_size:
            raise fail("volume_bytes", "out of range")
        bitmap = cls(volume_bytes, track_size)
        if track_count != bitmap.track_count:
            raise fail("track_count", "inconsistent")
        body_at = HEADER_FORMAT.size
        if encoding == ENCODING_RAW and items > (track_count + 63) // 64:
            raise fail("items", "too many words")
        if encoding == ENCODING_RUNS and items > (track_count + 1) // 2:
            raise fail("items", "too many runs")
        body = data[body_at:]
        if len(body) < 8 * items:
            raise DecodeError(LAYER, "body", body_at, "truncated")
        if len(body) > 8 * items:
            raise DecodeError(LAYER, "body", body_at + 8 * items, "trailing bytes")
        if encoding == ENCODING_RAW:
            for w in range(items):
                word = int.from_bytes(body[8 * w:8 * w + 8], "little")
                for bit in range(64):
                    if word >> bit & 1:
                        track = 64 * w + bit
                        if track >= track_count:
                            raise DecodeError(LAYER, "body", body_at + 8 * w, "past track_count")
                        bitmap.dirty.add(track)
        else:
            previous_last = -1
            for i in range(items):
                first, last = struct.unpack_from(">II", body, 8 * i)
                if last < first or last >= track_count:
                    raise DecodeError(LAYER, "body", body_at + 8 * i, "run out of range")
                if first <= previous_last:
                    raise DecodeError(LAYER, "body", body_at + 8 * i, "runs overlap")
                previous_last = last
                bitmap.dirty.update(range(first, last + 1))
        if dirty_tracks != len(bitmap.dirty):
            raise fail("dirty_tracks", "does not match the body")
        return bitmap


def merge_into(dst: DifferentialBitmap, *srcs: DifferentialBitmap) -> DifferentialBitmap:
    return dst.merge(*srcs)


def serialize(bitmap: DifferentialBitmap, encoding: int | None = None) -> bytes:
    return bitmap.serialize(encoding)


def deserialize(data) -> DifferentialBitmap:
    return DifferentialBitmap.deserialize(data)
