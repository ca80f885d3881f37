"""The differential bitmap unit (hdl_models.bitmap) against datapath.reference.bitmap: random
commands under back-pressure, the corners by name, the rates it claims, and its Verilog."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

try:

    from datapath.kernels.bitmap import geometry as kernel_geometry
    from hdl_models import bitmap
    from hdl_models.bitmap import (Clear, Count, Mark, MergeWord, Op, Popcount, ReadWord,
                                   Refused, Word)
    from hdl_models.cosim import check, run
    SKIP = None
except ImportError as exc:          # the hdl extra is not installed
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"

# 200 tracks of 4 KiB in 512-byte blocks (8 blocks a track): 4 words, the last holds 8 tracks
PARTIAL_WORD = {"volume_bytes": 200 * 4096, "track_size": 4096, "block_size": 512}
GEOMETRIES = {
    "partial last word": PARTIAL_WORD,
    # blocks of two tracks; the volume is neither whole blocks nor whole tracks: 101 tracks,
    # 50 blocks, so the last track is out of every extent's reach (but a merge may set it)
    "blocks bigger than tracks": {"volume_bytes": 100 * 4096 + 3000, "track_size": 4096,
                                  "block_size": 8192},
    "one word": {"volume_bytes": 10 * 4096, "track_size": 4096, "block_size": 4096},
    "whole words": {"volume_bytes": 128 * 512, "track_size": 512, "block_size": 512},
    "byte blocks": {"volume_bytes": 300 * 256 + 17, "track_size": 256, "block_size": 1},
}


def cosim(testcase, params, items, seed=0, **kw):
    """Run ``items`` through a fresh unit and the reference; fail on any difference, or on a
    hang (no command takes more than a pass over the bitmap; back-pressure may slow all
    ten-fold) rather than simulate the harness's million cycles."""
    words = bitmap.Geometry(**params).word_count
    kw.setdefault("max_cycles", 10 * len(items) * (words + 10) + 1000)
    return check(lambda: bitmap.build(**params), bitmap.codec(**params), items,
                 bitmap.reference(items, **params), seed=seed, **kw)


def with_popcounts(items):
    return [x for item in items for x in (item, Popcount())]


class ReferenceAdapterTests(SynchronousTestCase):
    skip = SKIP

    def test_answers_worked_out_by_hand(self):
        """The adapter's answers on a hand-made sequence (so a bug it shares with the
        hardware cannot hide): 200 tracks, 8 blocks a track, 1600 blocks."""
        items = [
            Mark(63 * 8, 16), Popcount(),            # tracks 63 and 64: across words 0 and 1
            ReadWord(0), ReadWord(1),
            Mark(5, 0), Mark(1600, 0),               # zero length, in range: nothing
            Mark(1601, 0),                           # zero length past the end: refused
            Mark(1599, 1), Mark(1599, 2),            # the last track; one block too many
            MergeWord(3, 0xFF), Popcount(),          # tracks 192..199 (199 already dirty)
            MergeWord(3, 1 << 8),                    # track 200 does not exist
            MergeWord(4, 0), MergeWord(4, 1),        # past the end: no bits is no harm
            ReadWord(3), ReadWord(4),
            MergeWord(1, 0b11), Popcount(),          # track 64 again, 65 new
            Clear(), Popcount(),
            Mark(0, 1600), Popcount(), ReadWord(3),  # the whole volume
        ]
        self.assertEqual(bitmap.reference(items, **PARTIAL_WORD), [
            Count(2),
            Word(0, 1 << 63), Word(1, 1),
            Refused(Op.MARK),
            Refused(Op.MARK),
            Count(10),
            Refused(Op.MERGE_WORD),
            Refused(Op.MERGE_WORD),
            Word(3, 0xFF), Refused(Op.READ_WORD),
            Count(11),
            Count(0),
            Count(200), Word(3, 0xFF),
        ])

    def test_geometry_matches_the_kernel(self):
        for params in [bitmap.PARAMS, bitmap.ICE40, *GEOMETRIES.values()]:
            g = bitmap.Geometry(**params)
            self.assertEqual((g.track_count, g.word_count),
                             kernel_geometry(params["volume_bytes"], params["track_size"]))
        self.assertEqual(bitmap.Geometry(**bitmap.PARAMS).track_count, 1 << 24)
        self.assertEqual(bitmap.Geometry(**bitmap.ICE40).word_count, 1024)


class CosimTests(SynchronousTestCase):
    skip = SKIP

    def test_random_commands_under_back_pressure(self):
        for name, params in GEOMETRIES.items():
            for seed in range(3):
                rng = random.Random(seed)
                items = bitmap.vectors(rng, 250, **params)
                result = cosim(self, params, items, seed=seed, valid_p=rng.uniform(0.3, 1.0),
                               ready_p=rng.uniform(0.3, 1.0), label=f"{name} seed {seed}")
                self.assertEqual(len(result.accepted_at), len(items), name)

    def test_corners(self):
        """Word boundaries, the whole volume, zero length, the last track, overlapping
        merges, the same word written on consecutive cycles; a popcount after each."""
        items = with_popcounts([
            Mark(63 * 8, 1), Mark(64 * 8 - 1, 2),    # last track of word 0, then across
            Mark(127 * 8 + 7, 1),                    # the last block of word 1's last track
            Mark(10 * 8, 190 * 8),                   # tracks 10..199: to the very end
            Mark(0, 0), Mark(1600, 0), Mark(1601, 0), Mark(1599, 1), Mark(1600, 1),
            Mark((1 << 64) - 1, (1 << 32) - 1),      # lba + blocks overflows 64 bits
            Mark(0, 1600),                           # the whole volume
            Clear(),
            MergeWord(2, 0xF0F0), MergeWord(2, 0xFF00), MergeWord(2, 0xFFFF),
            MergeWord(3, 0xFF), MergeWord(3, 0x1FF), MergeWord((1 << 32) - 1, 1),
            Mark(2 * 64 * 8, 8), MergeWord(2, 0b11), # a mark, then a merge on its word
        ])
        items += [MergeWord(1, 1 << n) for n in range(8)] + [Popcount(), ReadWord(1)]
        for seed, (valid_p, ready_p) in enumerate([(1.0, 1.0), (0.5, 0.5), (1.0, 0.2)]):
            cosim(self, PARTIAL_WORD, items, seed=seed, valid_p=valid_p, ready_p=ready_p,
                  label=f"corners at valid {valid_p}, ready {ready_p}")

    def test_unknown_opcodes_are_refused_and_the_unit_goes_on(self):
        params = GEOMETRIES["one word"]
        codec = bitmap.codec(**params)
        payloads = [codec.encode(Mark(0, 3))] + list(range(5, 8)) + [codec.encode(Popcount())]
        result = run(bitmap.build(**params), payloads, valid_p=0.7, ready_p=0.7)
        self.assertEqual([codec.decode(v) for v in result.outputs],
                         [Refused(5), Refused(6), Refused(7), Count(3)])

    def test_vectors_reach_the_corners(self):
        items = bitmap.vectors(random.Random(0), 1000, **PARTIAL_WORD)
        marks = [x for x in items if isinstance(x, Mark)]
        words = [(x.lba // 8 // 64, (x.lba + x.blocks - 1) // 8 // 64) for x in marks]
        self.assertTrue(any(first < last < 4 for first, last in words), "across words")
        self.assertIn(Mark(0, 1600), marks)
        self.assertIn(Mark(1599, 1), marks)
        self.assertTrue(any(x.blocks == 0 and x.lba <= 1600 for x in marks))
        self.assertTrue(any(x.blocks == 0 and x.lba > 1600 for x in marks))
        self.assertTrue(any(x.lba + x.blocks > 1 << 64 for x in marks))
        merges = [x for x in items if isinstance(x, MergeWord)]
        self.assertTrue(any(x.index == 3 and x.bits and x.bits < 1 << 8 for x in merges))
        answers = set(bitmap.reference(items, **PARTIAL_WORD))
        for op in (Op.MARK, Op.MERGE_WORD, Op.READ_WORD):
            self.assertIn(Refused(op), answers)
        self.assertIn(Count(0), answers)
        self.assertIn(Count(200), answers)
        self.assertTrue(any(isinstance(x, Clear) for x in items))


class RateTests(SynchronousTestCase):
    """The timing the module docstring claims, at full rate (valid and ready always high)."""
    skip = SKIP
    params = {"volume_bytes": 1024 * 4096, "track_size": 4096, "block_size": 512}  # 16 words

    def full_rate(self, items, params=None):
        params = params or self.params
        return cosim(self, params, items, valid_p=1.0, ready_p=1.0)

    @staticmethod
    def gaps(cycles):
        return [b - a for a, b in zip(cycles, cycles[1:])]

    def test_one_word_commands_take_one_cycle_each(self):
        marks = self.full_rate([Mark(8 * n + n % 8, 1 + n % 7) for n in range(60)])
        self.assertEqual(self.gaps(marks.accepted_at), [1] * 59)
        merges = self.full_rate([MergeWord(n % 16, 3 << n % 63) for n in range(60)])
        self.assertEqual(self.gaps(merges.accepted_at), [1] * 59)

    def test_a_mark_takes_one_cycle_per_word_it_touches(self):
        for words in (2, 5, 16):
            # starting mid-word 0 and ending mid-word (words - 1)
            result = self.full_rate([Mark(8 * 60, 8 * (64 * (words - 1)))] * 6)
            # the first is taken into C at once and the second behind it
            self.assertEqual(self.gaps(result.accepted_at)[1:], [words] * 4)

    def test_popcount_does_not_scan_the_bitmap(self):
        small = {"volume_bytes": 64 * 4096, "track_size": 4096, "block_size": 4096}
        big = {"volume_bytes": 4096 * 4096, "track_size": 4096, "block_size": 4096}
        for params in (small, big):
            alone = self.full_rate([Popcount()], params)
            self.assertEqual(alone.emitted_at[0] - alone.accepted_at[0], 8)
        # behind a whole-volume mark of 16 words: 16 cycles for the mark, then the same 8
        behind = self.full_rate([Mark(0, 8 * 1024), Popcount()])
        self.assertEqual(behind.emitted_at[0] - behind.accepted_at[0], 16 + 8)

    def test_answers_come_one_per_six_cycles(self):
        result = self.full_rate([Popcount(), ReadWord(3), ReadWord(99), Popcount()] * 5)
        self.assertEqual(self.gaps(result.emitted_at), [6] * 19)


class CodecAndBuildTests(SynchronousTestCase):
    skip = SKIP

    def test_fields_out_of_range_are_named(self):
        for item, field in [(Mark(1 << 64, 0), "lba"), (Mark(0, 1 << 32), "blocks"),
                            (Mark(-1, 0), "lba"), (MergeWord(0, 1 << 64), "bits"),
                            (MergeWord(1 << 32, 0), "index"), (ReadWord(-1), "index"),
                            (Mark(True, 1), "lba")]:
            with self.assertRaises(ValueError) as caught:
                bitmap.encode(item)
            self.assertTrue(str(caught.exception).startswith(field + ":"), caught.exception)
        with self.assertRaises(TypeError):
            bitmap.encode(3)

    def test_layout(self):
        self.assertEqual(bitmap.encode(Mark(5, 7)), Op.MARK | 5 << 3 | 7 << 67)
        self.assertEqual(bitmap.encode(MergeWord(2, 9)), Op.MERGE_WORD | 9 << 3 | 2 << 67)
        self.assertEqual(bitmap.encode(Clear()), Op.CLEAR)
        self.assertEqual(bitmap.decode(1 | 3 << 2 | 0xAB << 34), Word(3, 0xAB))
        self.assertEqual(bitmap.decode(0 | 42 << 34), Count(42))
        self.assertEqual(bitmap.decode(2 | Op.READ_WORD << 34), Refused(Op.READ_WORD))
        with self.assertRaises(ValueError):
            bitmap.decode(3)

    def test_bad_geometry_is_refused(self):
        for params, field in [
                ({"volume_bytes": 4096, "track_size": 1000, "block_size": 512}, "track_size"),
                ({"volume_bytes": 0, "track_size": 4096, "block_size": 512}, "volume_bytes"),
                ({"volume_bytes": 4096, "track_size": 4096, "block_size": 3}, "block_size"),
                ({"volume_bytes": 4096, "track_size": 4096, "block_size": 1 << 31},
                 "block_size")]:
            with self.assertRaises(ValueError) as caught:
                bitmap.build(**params)
            self.assertTrue(str(caught.exception).startswith(field), caught.exception)

