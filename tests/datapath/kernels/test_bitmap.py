"""Differential bitmap kernel (``datapath.kernels.bitmap``) against its reference model.

Hypothesis runs derandomized; sizes stay small so the file also runs quickly
with ``NUMBA_DISABLE_JIT=1``. The 16 TiB tests touch only a few words at the
ends of the array and read it back with numpy.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.frames.errors import DecodeError
from datapath.kernels import bitmap as kb
from datapath.reference import bitmap as rb

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

TIB = 1 << 40
TRACK_SIZES = [1, 512, 4096, 65536, 1 << 20, 1 << 30]
BLOCK_SIZES = [1, 512, 4096, 65536]


@st.composite
def geometries(draw, max_tracks: int = 300):
    """``(volume_bytes, track_size)``, the last track often partial."""
    track_size = draw(st.sampled_from(TRACK_SIZES))
    tracks = draw(st.integers(1, max_tracks))
    tail = draw(st.one_of(st.just(track_size), st.integers(1, track_size)))
    return (tracks - 1) * track_size + tail, track_size


@st.composite
def extents(draw, volume_bytes: int, max_size: int = 40):
    """``(lba list, blocks list, block_size)``, all inside the volume."""
    block_size = draw(st.sampled_from(BLOCK_SIZES))
    limit = volume_bytes // block_size
    lba, blocks = [], []
    for _ in range(draw(st.integers(0, max_size))):
        start = draw(st.integers(0, limit))
        count = draw(st.one_of(st.integers(0, min(limit - start, 8)),
                               st.integers(0, limit - start), st.just(limit - start)))
        lba.append(start)
        blocks.append(count)
    if lba and draw(st.booleans()):          # duplicates
        lba += lba[: len(lba) // 2 + 1]
        blocks += blocks[: len(blocks) // 2 + 1]
    return lba, blocks, block_size


@st.composite
def pairs(draw, max_tracks: int = 300, max_extents: int = 40):
    """A kernel bitmap and a reference bitmap with the same random marks."""
    volume_bytes, track_size = draw(geometries(max_tracks))
    k = kb.DifferentialBitmap(volume_bytes, track_size)
    r = rb.DifferentialBitmap(volume_bytes, track_size)
    for _ in range(draw(st.integers(0, 3))):
        lba, blocks, block_size = draw(extents(volume_bytes, max_extents))
        mark(k, r, lba, blocks, block_size)
    if draw(st.booleans()):
        k.set_range(0, k.track_count)             # full bitmap
        r.set_range(0, r.track_count)
        first = draw(st.integers(0, k.track_count))
        count = draw(st.integers(0, k.track_count - first))
        k.clear_range(first, count)
        r.clear_range(first, count)
    return k, r


def mark(k, r, lba, blocks, block_size, blocks_dtype=np.uint32) -> None:
    if blocks_dtype == np.uint32 and any(b >= 1 << 32 for b in blocks):
        blocks_dtype = np.uint64
    k.mark_extents(np.array(lba, dtype=np.uint64), np.array(blocks, dtype=blocks_dtype),
                   block_size)
    r.mark_extents(lba, blocks, block_size)


def u64(values) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


class ModelTests(TestCase):
    """Kernel wrapper == reference model on random input."""

    def assertSame(self, k, r):
        self.assertEqual(k.words.tolist(), r.to_words())
        self.assertEqual(k.track_count, r.track_count)

    @SETTINGS
    @given(st.data(), st.sampled_from([np.uint32, np.uint64]))
    def test_mark_extents_matches_reference(self, data, blocks_dtype):
        volume_bytes, track_size = data.draw(geometries())
        k = kb.DifferentialBitmap(volume_bytes, track_size)
        r = rb.DifferentialBitmap(volume_bytes, track_size)
        for _ in range(data.draw(st.integers(1, 3))):
            lba, blocks, block_size = data.draw(extents(volume_bytes))
            mark(k, r, lba, blocks, block_size, blocks_dtype)
            self.assertSame(k, r)

    @SETTINGS
    @given(st.data())
    def test_out_of_range_batch_raises_in_both_and_marks_nothing(self, data):
        k, r = data.draw(pairs())
        before = k.words.copy()
        lba, blocks, block_size = data.draw(extents(k.volume_bytes))
        limit = k.volume_bytes // block_size
        bad_at = data.draw(st.integers(0, len(lba)))
        start = data.draw(st.integers(0, limit + 2))
        lba.insert(bad_at, start)
        blocks.insert(bad_at, limit - start + 1 if start <= limit else data.draw(st.integers(0, 9)))
        with self.assertRaises(ValueError) as caught:
            k.mark_extents(u64(lba), u64(blocks), block_size)
        self.assertIn(f"extent {bad_at} ", str(caught.exception))
        self.assertRaises(ValueError, r.mark_extents, lba, blocks, block_size)
        self.assertEqual(k.words.tolist(), before.tolist())
        self.assertSame(k, r)

    @SETTINGS
    @given(st.data())
    def test_merge_matches_reference(self, data):
        k, r = data.draw(pairs())
        others = []
        for _ in range(data.draw(st.integers(0, 3))):
            ko = kb.DifferentialBitmap(k.volume_bytes, k.track_size)
            ro = rb.DifferentialBitmap(r.volume_bytes, r.track_size)
            lba, blocks, block_size = data.draw(extents(k.volume_bytes, 10))
            mark(ko, ro, lba, blocks, block_size)
            others.append((ko, ro))
        if data.draw(st.booleans()):
            self.assertIs(k.merge(*[o[0] for o in others]), k)
        else:
            self.assertIs(kb.merge_into(k, *[o[0] for o in others]), k)
        r.merge(*[o[1] for o in others])
        self.assertSame(k, r)

    @SETTINGS
    @given(pairs())
    def test_popcount_and_run_count_match_reference(self, pair):
        k, r = pair
        self.assertEqual(k.popcount(), r.popcount())
        self.assertEqual(k.run_count(), r.run_count())

    @SETTINGS
    @given(st.data())
    def test_dirty_runs_match_reference(self, data):
        k, r = data.draw(pairs())
        max_runs = data.draw(st.one_of(st.none(), st.integers(0, 6)))
        start = data.draw(st.integers(0, k.track_count))
        first, count, next_track = k.dirty_runs(max_runs, start)
        self.assertEqual(first.dtype, np.uint64)
        self.assertEqual(count.dtype, np.uint64)
        self.assertEqual((first.tolist(), count.tolist(), next_track),
                         r.dirty_runs(max_runs, start))

    @SETTINGS
    @given(pairs(), st.integers(1, 4))
    def test_paging_dirty_runs_gives_all_runs(self, pair, page):
        k, r = pair
        firsts, counts, track = [], [], 0
        for _ in range(k.track_count + 1):
            first, count, track = k.dirty_runs(page, track)
            self.assertLessEqual(len(first), page)
            firsts += first.tolist()
            counts += count.tolist()
            if track == k.track_count:
                break
        self.assertEqual((firsts, counts, track), r.dirty_runs())

    @SETTINGS
    @given(st.data())
    def test_set_and_clear_range_match_reference(self, data):
        k, r = data.draw(pairs())
        for _ in range(data.draw(st.integers(1, 4))):
            first = data.draw(st.integers(0, k.track_count))
            count = data.draw(st.integers(0, k.track_count - first))
            op = data.draw(st.sampled_from(["set_range", "clear_range"]))
            getattr(k, op)(first, count)
            getattr(r, op)(first, count)
            self.assertSame(k, r)

    @SETTINGS
    @given(st.data())
    def test_mark_runs_matches_reference(self, data):
        k, r = data.draw(pairs())
        n = data.draw(st.integers(0, 8))
        first = [data.draw(st.integers(0, k.track_count)) for _ in range(n)]
        count = [data.draw(st.integers(0, k.track_count - f)) for f in first]
        k.mark_runs(u64(first), u64(count))
        r.mark_runs(first, count)
        self.assertSame(k, r)

    @SETTINGS
    @given(pairs(), st.sampled_from([None, kb.ENCODING_RAW, kb.ENCODING_RUNS]))
    def test_serialize_matches_reference_bytes_and_round_trips(self, pair, encoding):
        k, r = pair
        data = kb.serialize(k, encoding)
        self.assertEqual(data, r.serialize(encoding))
        self.assertEqual(kb.deserialize(data), k)
        self.assertEqual(rb.deserialize(data).to_words(), k.words.tolist())

    @SETTINGS
    @given(pairs())
    def test_automatic_encoding_is_the_smaller(self, pair):
        k, _ = pair
        sizes = [len(kb.serialize(k, e)) for e in (kb.ENCODING_RAW, kb.ENCODING_RUNS)]
        self.assertEqual(len(kb.serialize(k)), min(sizes))

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(pairs(max_tracks=200, max_extents=8), st.sampled_from([kb.ENCODING_RAW, kb.ENCODING_RUNS]),
           st.data())
    def test_mutated_serial_form_decodes_like_reference(self, pair, encoding, data):
        """Truncated, overwritten or extended input: same error (field, offset) or same bitmap."""
        k, _ = pair
        wire = bytearray(kb.serialize(k, encoding))
        for _ in range(data.draw(st.integers(1, 3))):
            action = data.draw(st.sampled_from(["truncate", "poke", "append"]))
            if action == "truncate":
                del wire[data.draw(st.integers(0, len(wire))):]
            elif action == "poke" and wire:
                wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
            else:
                wire += data.draw(st.binary(min_size=1, max_size=9))
        wire = bytes(wire)
        try:
            expected = rb.deserialize(wire)
        except DecodeError as exc:
            with self.assertRaises(DecodeError) as caught:
                kb.deserialize(wire)
            self.assertEqual((caught.exception.layer, caught.exception.field,
                              caught.exception.offset), (exc.layer, exc.field, exc.offset))
            return
        got = kb.deserialize(wire)
        self.assertEqual((got.volume_bytes, got.track_size), (expected.volume_bytes,
                                                              expected.track_size))
        self.assertEqual(got.words.tolist(), expected.to_words())


class MarkTests(TestCase):
    def test_extent_ending_on_a_track_boundary_marks_one_track(self):
        b = kb.DifferentialBitmap(4 * 65536)
        b.mark_extents(u64([128]), np.array([128], dtype=np.uint32), 512)
        self.assertEqual(b.words.tolist(), [0b10])

    def test_extent_one_byte_past_a_boundary_marks_two_tracks(self):
        b = kb.DifferentialBitmap(4 * 65536)
        b.mark_extents(u64([65535]), np.array([2], dtype=np.uint32), 1)
        self.assertEqual(b.words.tolist(), [0b11])

    def test_zero_length_extent_marks_nothing(self):
        b = kb.DifferentialBitmap(4 * 65536)
        b.mark_extents(u64([0, 512]), np.array([0, 0], dtype=np.uint32), 512)
        self.assertEqual(b.popcount(), 0)

    def test_zero_length_extent_past_the_end_is_rejected(self):
        b = kb.DifferentialBitmap(4 * 65536)
        self.assertRaises(ValueError, b.mark_extents, u64([513]), np.array([0], np.uint32), 512)

    def test_long_extent_sets_whole_words(self):
        b = kb.DifferentialBitmap(1000 * 4096, 4096)
        b.mark_extents(u64([3]), np.array([700], dtype=np.uint32), 4096)
        self.assertEqual(b.words.tolist(), [(1 << 64) - 8] + [(1 << 64) - 1] * 9 + [(1 << 63) - 1]
                         + [0] * 5)

    def test_empty_batch_marks_nothing(self):
        b = kb.DifferentialBitmap(4 * 65536)
        b.mark_extents(u64([]), np.array([], dtype=np.uint32), 512)
        self.assertEqual(b.popcount(), 0)

    def test_block_size_larger_than_track_marks_every_track_under_the_block(self):
        b = kb.DifferentialBitmap(16 * 512, 512)
        b.mark_extents(u64([1]), np.array([1], dtype=np.uint32), 4096)
        self.assertEqual(b.dirty_runs().first.tolist(), [8])
        self.assertEqual(b.dirty_runs().count.tolist(), [8])

    def test_partial_last_block_is_not_addressable(self):
        b = kb.DifferentialBitmap(1000, 512)             # one whole block of 512
        b.mark_extents(u64([0]), np.array([1], dtype=np.uint32), 512)
        self.assertRaises(ValueError, b.mark_extents, u64([1]), np.array([1], np.uint32), 512)

    def test_extents_near_uint64_max_are_rejected_without_wrapping(self):
        b = kb.DifferentialBitmap(4 * 65536)
        top = (1 << 64) - 1
        for lba, blocks in [(top, 1), (top, 0), (1, top), (top - 5, 10), (2, (1 << 64) - 2)]:
            self.assertRaises(ValueError, b.mark_extents, u64([lba]), u64([blocks]), 512)
        self.assertEqual(b.popcount(), 0)

    def test_kernel_reports_first_bad_index_and_writes_nothing(self):
        words = np.zeros(1, dtype=np.uint64)
        bad = kb._mark_extents(words, u64([0, 9, 20]), np.array([1, 2, 1], dtype=np.uint32),
                               np.uint64(10), np.uint64(0), np.uint64(0))
        self.assertEqual(bad, 1)
        self.assertEqual(words.tolist(), [0])

    def test_kernel_marks_and_returns_minus_one(self):
        words = np.zeros(1, dtype=np.uint64)
        bad = kb._mark_extents(words, u64([0, 8]), u64([1, 2]), np.uint64(10),
                               np.uint64(0), np.uint64(0))
        self.assertEqual(bad, -1)
        self.assertEqual(words.tolist(), [0b1100000001])


class LargeVolumeTests(TestCase):
    """16 TiB at 64 KiB tracks: 2**28 tracks, 2**22 words; only the ends are touched."""

    def setUp(self):
        self.b = kb.DifferentialBitmap(16 * TIB)

    def test_sixteen_tib_has_two_to_the_28_tracks(self):
        self.assertEqual((self.b.track_count, self.b.words.shape), (1 << 28, (1 << 22,)))

    def test_last_block_marks_the_last_track(self):
        last_lba = 16 * TIB // 512 - 1
        self.b.mark_extents(u64([last_lba, 0]), np.array([1, 1], dtype=np.uint32), 512)
        self.assertEqual(np.flatnonzero(self.b.words).tolist(), [0, (1 << 22) - 1])
        self.assertEqual(int(self.b.words[-1]), 1 << 63)
        self.assertEqual(int(self.b.words[0]), 1)

    def test_one_block_past_the_end_is_rejected(self):
        last_lba = 16 * TIB // 4096
        self.assertRaises(ValueError, self.b.mark_extents, u64([last_lba - 1]),
                          np.array([2], dtype=np.uint32), 4096)
        self.assertEqual(np.count_nonzero(self.b.words), 0)

    def test_runs_and_clear_at_the_end(self):
        tracks = 1 << 28
        self.b.set_range(tracks - 200, 200)
        self.b.set_range(tracks - 1000, 10)
        first, count, nxt = self.b.dirty_runs(5, tracks - 2000)
        self.assertEqual((first.tolist(), count.tolist(), nxt),
                         ([tracks - 1000, tracks - 200], [10, 200], tracks))
        first, count, nxt = self.b.dirty_runs(1, tracks - 2000)
        self.assertEqual((first.tolist(), nxt), ([tracks - 1000], tracks - 200))
        self.b.clear_range(tracks - 100, 100)
        self.assertEqual(self.b.dirty_runs(5, tracks - 150).count.tolist(), [50])
        self.assertEqual(np.flatnonzero(self.b.words).min(), (tracks - 1000) // 64)

    def test_largest_geometry_is_max_tracks(self):
        self.assertEqual(kb.geometry(kb.MAX_TRACKS * 65536), (1 << 32, 1 << 26))
        self.assertRaises(ValueError, kb.geometry, kb.MAX_TRACKS * 65536 + 1)


class RunTests(TestCase):
    def test_run_spanning_a_word_boundary_is_one_run(self):
        b = kb.DifferentialBitmap(200 * 512, 512)
        b.set_range(60, 10)
        self.assertEqual((b.run_count(), b.dirty_runs().first.tolist(),
                          b.dirty_runs().count.tolist()), (1, [60], [10]))

    def test_full_bitmap_is_one_run_of_every_track(self):
        b = kb.DifferentialBitmap(130 * 512, 512)
        b.set_range(0, 130)
        first, count, nxt = b.dirty_runs()
        self.assertEqual((first.tolist(), count.tolist(), nxt), ([0], [130], 130))
        self.assertEqual(int(b.words[-1]), 0b11)

    def test_start_inside_a_run_cuts_it(self):
        b = kb.DifferentialBitmap(100 * 512, 512)
        b.set_range(10, 20)
        first, count, _ = b.dirty_runs(None, 15)
        self.assertEqual((first.tolist(), count.tolist()), ([15], [15]))

    def test_zero_max_runs_returns_where_the_first_run_starts(self):
        b = kb.DifferentialBitmap(100 * 512, 512)
        b.set_range(42, 3)
        self.assertEqual(b.dirty_runs(0)[2], 42)
        self.assertEqual(len(b.dirty_runs(0)[0]), 0)

    def test_clean_bitmap_has_no_runs_and_is_complete(self):
        b = kb.DifferentialBitmap(100 * 512, 512)
        first, count, nxt = b.dirty_runs()
        self.assertEqual((len(first), len(count), nxt), (0, 0, 100))

    def test_kernel_reports_truncation_with_the_resume_track(self):
        words = u64([0b1010101])
        out_first = np.zeros(2, dtype=np.uint64)
        out_count = np.zeros(2, dtype=np.uint64)
        self.assertEqual(tuple(kb._dirty_runs(words, 64, 0, out_first, out_count)), (2, 4))
        self.assertEqual((out_first.tolist(), out_count.tolist()), ([0, 2], [1, 1]))

    def test_popcount_of_all_ones_words(self):
        b = kb.DifferentialBitmap(1000 * 512, 512)
        b.set_range(0, 1000)
        self.assertEqual(b.popcount(), 1000)


class SerialFormTests(TestCase):
    def setUp(self):
        self.b = kb.DifferentialBitmap(1000 * 65536 + 7)         # 1001 tracks
        self.b.set_range(3, 5)
        self.b.set_range(900, 101)

    def test_header_layout_is_44_bytes_with_documented_offsets(self):
        self.assertEqual(kb.HEADER.size, 44)
        self.assertEqual(kb.HEADER.offsets, rb.FIELD_OFFSETS)
        self.assertEqual(rb.HEADER_FORMAT.size, 44)

    def test_sparse_bitmap_is_sent_as_runs(self):
        data = kb.serialize(self.b)
        h = kb.HEADER.parse(data, fast=True)
        self.assertEqual((h["magic"], h["version"], h["encoding"], h["track_size"],
                          h["volume_bytes"], h["track_count"], h["dirty_tracks"], h["items"]),
                         (0x44504F4B, 1, kb.ENCODING_RUNS, 65536, 1000 * 65536 + 7, 1001, 106, 2))
        self.assertEqual(data[:4], b"DPOK")
        self.assertEqual(data[44:], bytes.fromhex("00000003 00000007 00000384 000003E8"))

    def test_dense_bitmap_is_sent_as_raw_little_endian_words(self):
        b = kb.DifferentialBitmap(128 * 512, 512)
        b.set_range(0, 1)
        b.set_range(2, 1)
        b.set_range(65, 1)                              # 3 runs > 2 words
        data = kb.serialize(b)
        self.assertEqual(data[5], kb.ENCODING_RAW)
        self.assertEqual(data[44:], bytes([0b101]) + bytes(7) + bytes([0b10]) + bytes(7))

    def test_trailing_zero_words_are_dropped_from_raw(self):
        b = kb.DifferentialBitmap(640 * 512, 512)
        b.set_range(1, 1)
        data = kb.serialize(b, kb.ENCODING_RAW)
        self.assertEqual(len(data), 44 + 8)
        self.assertEqual(kb.deserialize(data), b)

    def test_empty_bitmap_is_raw_with_no_items(self):
        b = kb.DifferentialBitmap(12345)
        data = b.serialize()
        self.assertEqual((len(data), data[5]), (44, kb.ENCODING_RAW))
        self.assertEqual(kb.DifferentialBitmap.deserialize(data), b)

    def test_adjacent_runs_are_accepted(self):
        data = bytearray(kb.serialize(self.b, kb.ENCODING_RUNS))
        data[36:44] = (3).to_bytes(8, "big")
        data[44:] = bytes.fromhex("00000003 00000004 00000005 00000007 00000384 000003E8")
        self.assertEqual(kb.deserialize(bytes(data)), self.b)

    def runs_form(self, body: str, dirty: int = 106) -> bytes:
        data = bytearray(kb.serialize(self.b, kb.ENCODING_RUNS)[:44])
        raw = bytes.fromhex(body)
        data[28:36] = dirty.to_bytes(8, "big")
        data[36:44] = (len(raw) // 8).to_bytes(8, "big")
        return bytes(data) + raw

    def assertDecodeError(self, data, field, offset=None):
        with self.assertRaises(DecodeError) as caught:
            kb.deserialize(data)
        self.assertEqual(caught.exception.field, field, str(caught.exception))
        if offset is not None:
            self.assertEqual(caught.exception.offset, offset, str(caught.exception))
        self.assertIsInstance(caught.exception, ValueError)
        with self.assertRaises(DecodeError) as ref:
            rb.deserialize(data)
        self.assertEqual((ref.exception.field, ref.exception.offset),
                         (caught.exception.field, caught.exception.offset))

    def poke(self, offset: int, value: bytes, encoding=kb.ENCODING_RUNS) -> bytes:
        data = bytearray(kb.serialize(self.b, encoding))
        data[offset:offset + len(value)] = value
        return bytes(data)

    def test_truncated_header_is_rejected(self):
        data = kb.serialize(self.b)
        self.assertDecodeError(data[:0], "magic", 0)
        self.assertDecodeError(data[:10], "track_size", 8)
        self.assertDecodeError(data[:43], "items", 36)

    def test_truncated_body_is_rejected(self):
        self.assertDecodeError(kb.serialize(self.b)[:-1], "body", 44)

    def test_trailing_bytes_are_rejected(self):
        self.assertDecodeError(kb.serialize(self.b) + b"\0", "body", 44 + 16)

    def test_bad_magic_is_rejected(self):
        self.assertDecodeError(self.poke(0, b"DPOL"), "magic", 0)

    def test_bad_version_is_rejected(self):
        self.assertDecodeError(self.poke(4, b"\x02"), "version", 4)

    def test_unknown_encoding_is_rejected(self):
        self.assertDecodeError(self.poke(5, b"\x02"), "encoding", 5)

    def test_nonzero_reserved_is_rejected(self):
        self.assertDecodeError(self.poke(7, b"\x01"), "reserved", 6)

    def test_track_size_not_a_power_of_two_is_rejected(self):
        self.assertDecodeError(self.poke(8, (65535).to_bytes(4, "big")), "track_size", 8)
        self.assertDecodeError(self.poke(8, bytes(4)), "track_size", 8)
        self.assertDecodeError(self.poke(8, (1 << 31).to_bytes(4, "big")), "track_size", 8)

    def test_zero_or_huge_volume_is_rejected(self):
        self.assertDecodeError(self.poke(12, bytes(8)), "volume_bytes", 12)
        self.assertDecodeError(self.poke(12, (1 << 63).to_bytes(8, "big")), "volume_bytes", 12)

    def test_inconsistent_track_count_is_rejected(self):
        self.assertDecodeError(self.poke(20, (1000).to_bytes(8, "big")), "track_count", 20)

    def test_too_many_items_are_rejected(self):
        self.assertDecodeError(self.poke(36, (502).to_bytes(8, "big")), "items", 36)
        self.assertDecodeError(self.poke(36, (17).to_bytes(8, "big"), kb.ENCODING_RAW),
                               "items", 36)

    def test_wrong_dirty_count_is_rejected(self):
        self.assertDecodeError(self.poke(28, (105).to_bytes(8, "big")), "dirty_tracks", 28)

    def test_raw_bits_past_track_count_are_rejected(self):
        data = bytearray(kb.serialize(self.b, kb.ENCODING_RAW))
        data[-1] |= 0x80
        self.assertDecodeError(bytes(data), "body", len(data) - 8)

    def test_run_past_track_count_is_rejected(self):
        self.assertDecodeError(self.runs_form("00000003 00000007 00000384 000003E9"), "body", 52)

    def test_run_with_last_before_first_is_rejected(self):
        self.assertDecodeError(self.runs_form("00000007 00000003 00000384 000003E8"), "body", 44)

    def test_overlapping_runs_are_rejected(self):
        self.assertDecodeError(self.runs_form("00000003 00000007 00000007 00000008", 7), "body",
                               52)

    def test_unsorted_runs_are_rejected(self):
        self.assertDecodeError(self.runs_form("00000384 000003E8 00000003 00000007"), "body", 52)

    def test_first_bad_run_is_reported_whatever_its_kind(self):
        body = "00000003 00000007 00000002 00000002 00000384 000003E9"
        self.assertDecodeError(self.runs_form(body), "body", 52)

    def test_bytearray_and_memoryview_input_decode(self):
        data = kb.serialize(self.b)
        self.assertEqual(kb.deserialize(bytearray(data)), self.b)
        self.assertEqual(kb.deserialize(memoryview(data)), self.b)


class WrapperTests(TestCase):
    def setUp(self):
        self.b = kb.DifferentialBitmap(64 * 65536)

    def test_lba_must_be_uint64(self):
        self.assertRaises(TypeError, self.b.mark_extents, np.array([0], np.int64),
                          np.array([1], np.uint32), 512)

    def test_lba_must_be_an_array(self):
        self.assertRaises(TypeError, self.b.mark_extents, [0], np.array([1], np.uint32), 512)

    def test_blocks_must_be_uint32_or_uint64(self):
        self.assertRaises(TypeError, self.b.mark_extents, u64([0]), np.array([1], np.int32), 512)
        self.assertRaises(TypeError, self.b.mark_extents, u64([0]), [1], 512)

    def test_lengths_must_match(self):
        self.assertRaises(ValueError, self.b.mark_extents, u64([0, 1]), np.array([1], np.uint32),
                          512)

    def test_arrays_must_be_contiguous(self):
        self.assertRaises(ValueError, self.b.mark_extents, u64([0, 1, 2, 3])[::2],
                          np.array([1, 1], np.uint32), 512)

    def test_block_size_must_be_a_power_of_two(self):
        for bad in (0, 3, 520, 1 << 31):
            self.assertRaises(ValueError, self.b.mark_extents, u64([0]), u64([1]), bad)

    def test_geometry_is_checked(self):
        self.assertRaises(ValueError, kb.DifferentialBitmap, 0)
        self.assertRaises(ValueError, kb.DifferentialBitmap, 1000, 3000)
        self.assertRaises(ValueError, kb.DifferentialBitmap, 1000, 1 << 31)
        self.assertRaises(TypeError, kb.DifferentialBitmap, 1000.0)
        self.assertRaises(ValueError, kb.DifferentialBitmap, (1 << 32) * 512 + 1, 512)

    def test_ranges_are_checked(self):
        for first, count in [(-1, 1), (0, 65), (64, 1), (65, 0), (10, -1)]:
            self.assertRaises(ValueError, self.b.clear_range, first, count)
            self.assertRaises(ValueError, self.b.set_range, first, count)
        self.assertRaises(TypeError, self.b.clear_range, True, 1)
        self.b.set_range(64, 0)
        self.b.clear_range(0, 64)

    def test_mark_runs_past_the_end_raises_and_marks_nothing(self):
        with self.assertRaises(ValueError):
            self.b.mark_runs(u64([0, 60]), u64([3, 5]))
        self.assertEqual(self.b.popcount(), 0)
        self.assertRaises(ValueError, self.b.mark_runs, u64([(1 << 64) - 1]), u64([2]))
        self.assertRaises(ValueError, self.b.mark_runs, u64([0]), u64([1, 2]))

    def test_merge_requires_the_same_geometry(self):
        self.assertRaises(ValueError, self.b.merge, kb.DifferentialBitmap(64 * 65536, 4096))
        self.assertRaises(ValueError, self.b.merge, kb.DifferentialBitmap(64 * 65536 + 1))
        self.assertRaises(TypeError, self.b.merge, rb.DifferentialBitmap(64 * 65536))

    def test_failed_merge_changes_nothing(self):
        good = kb.DifferentialBitmap(64 * 65536)
        good.set_range(0, 64)
        self.assertRaises(ValueError, kb.merge_into, self.b, good, kb.DifferentialBitmap(1))
        self.assertEqual(self.b.popcount(), 0)

    def test_dirty_runs_arguments_are_checked(self):
        self.assertRaises(ValueError, self.b.dirty_runs, -1)
        self.assertRaises(ValueError, self.b.dirty_runs, None, 65)
        self.assertRaises(ValueError, self.b.dirty_runs, None, -1)

    def test_serialize_rejects_unknown_encoding(self):
        self.assertRaises(ValueError, self.b.serialize, 7)

    def test_words_are_adopted_without_copy_and_checked(self):
        words = np.zeros(1, dtype=np.uint64)
        b = kb.DifferentialBitmap(64 * 512, 512, words)
        b.set_range(5, 1)
        self.assertEqual(words.tolist(), [32])
        self.assertRaises(ValueError, kb.DifferentialBitmap, 63 * 512, 512, u64([1 << 63]))
        self.assertRaises(ValueError, kb.DifferentialBitmap, 64 * 512, 512, u64([0, 0]))
        self.assertRaises(TypeError, kb.DifferentialBitmap, 64 * 512, 512, np.zeros(1, np.int64))
        read_only = np.zeros(1, dtype=np.uint64)
        read_only.flags.writeable = False
        self.assertRaises(ValueError, kb.DifferentialBitmap, 64 * 512, 512, read_only)

    def test_copy_is_independent(self):
        self.b.set_range(1, 2)
        other = self.b.copy()
        other.clear_range(0, 64)
        self.assertEqual((self.b.popcount(), other.popcount()), (2, 0))
        self.assertNotEqual(self.b, other)

    def test_warm_up_runs(self):
        kb.warm_up()
