"""SegmentAssembler: the segments of a split log entry joined, bounded, checked."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import logentry
from datapath.frames.errors import DecodeError
from rcn.logxfer.reassembly import SegmentAssembler

AREA = bytes(range(256)) * 10                    # 2560 bytes: three segments of 1000


def segments(sequence: int = 4, area: bytes = AREA) -> list[logentry.LogEntry]:
    return [logentry.parse_datagram(d) for d in logentry.segment_entry(
        logentry.EntryType.WR, area, 1000, group_id=3, sequence=sequence, source_wwn=1,
        target_wwn=2)]


class SegmentAssemblerTests(SynchronousTestCase):
    def test_the_last_segment_to_arrive_gives_the_whole_area_in_order(self):
        assembler = SegmentAssembler()
        first, second, third = segments()
        for part in (third, first):
            self.assertIsNone(assembler.add(part.header, part.payload))
        self.assertIsNone(assembler.add(third.header, third.payload))   # seen twice: ignored
        self.assertEqual(assembler.add(second.header, second.payload), AREA)
        self.assertEqual((assembler.pending_count(), assembler.held_bytes), (0, 0))

    def test_segments_that_do_not_tile_the_area_are_refused_at_the_given_offset(self):
        assembler = SegmentAssembler()
        first, second, third = segments()
        assembler.add(first.header, first.payload)
        assembler.add(third.header, third.payload)
        overlapping = second.header._replace(segment_offset=900)
        with self.assertRaises(DecodeError) as caught:
            assembler.add(overlapping, second.payload, at=123)
        self.assertEqual((caught.exception.field, caught.exception.offset),
                         ("segment_offset", 123))
        self.assertEqual(assembler.pending_count(), 0)

    def test_assembler_holds_a_bounded_number_of_entries(self):
        assembler = SegmentAssembler(max_entries=2)
        for sequence in range(5):
            entry = segments(sequence)[0]
            self.assertIsNone(assembler.add(entry.header, entry.payload))
        self.assertEqual((assembler.pending_count(), assembler.evicted), (2, 3))
        self.assertEqual(assembler.held_bytes, 2 * 1000)

    def test_assembler_holds_a_bounded_number_of_bytes(self):
        assembler = SegmentAssembler(max_bytes=2500)
        for sequence in range(3):
            entry = segments(sequence)[0]
            assembler.add(entry.header, entry.payload)
        self.assertEqual((assembler.pending_count(), assembler.evicted), (2, 1))
        self.assertLessEqual(assembler.held_bytes, 2500)


GROUP_KEY = bytes(range(32))
ANSWER = dict(group_id=3, sequence=9, io_time_ns=5, source_wwn=1, target_wwn=2,
              flags=logentry.EntryFlag.RESENT_ACK)


def sealings(n: int = 2, area: bytes = AREA, **fields) -> tuple[list[list], object]:
    """``n`` sealings of one CTRL_OK (the same header, each under a fresh nonce), three
    segments each; and the group seal that opens them."""
    from rcn.logxfer.keys import Key, KeyRing
    from rcn.logxfer.seal import GroupSeal
    ring = KeyRing()
    ring.add_group(3, Key(1, GROUP_KEY, True))
    seal = GroupSeal(ring)
    out = [[logentry.parse_datagram(d) for d in seal.datagrams(
        logentry.EntryType.CTRL_OK, area, 1000, **dict(ANSWER, **fields))] for _ in range(n)]
    return out, seal


class TwoSealingsTests(SynchronousTestCase):
    """Segments of two sealings of one entry look alike; they never make one area."""

    def add(self, assembler, seal, entry):
        return assembler.add(entry.header, entry.payload,
                             opener=lambda area: seal.open(entry.header, area))

    def test_the_sealings_are_alike_but_for_their_bytes(self):
        (a, b), _ = sealings()
        self.assertEqual(len(a), 3)
        self.assertEqual([s.header._replace(crc32c=0) for s in a],
                         [s.header._replace(crc32c=0) for s in b])
        self.assertTrue(all(x.payload != y.payload for x, y in zip(a, b)))

    def test_interleaved_segments_of_two_sealings_open_as_one_of_them(self):
        import random
        from rcn.logxfer.seal import SealRefused
        rng = random.Random(7)
        plain_mixed = 0
        for _ in range(40):
            (a, b), seal = sealings()
            order = a + b
            rng.shuffle(order)
            assembler, plain = SegmentAssembler(), SegmentAssembler()
            opened = []
            for entry in order:
                joined = plain.add(entry.header, entry.payload)       # first copies
                if joined is not None:
                    try:
                        seal.open(entry.header, joined)
                    except SealRefused:
                        plain_mixed += 1
                try:
                    area = self.add(assembler, seal, entry)
                except SealRefused:
                    continue            # a mixture filled every index first: held on
                if area is not None:
                    opened.append(area)
            names = [("a" if entry in a else "b") + str(entry.header.segment_index)
                     for entry in order]
            self.assertGreaterEqual(len(opened), 1, f"order {names}")
            self.assertEqual(set(opened), {AREA})
        # the orders did mix: joining the first copy of each index fails to open in some
        self.assertGreater(plain_mixed, 5)

    def test_a_mixture_that_does_not_open_is_refused_and_the_next_copy_completes_it(self):
        from rcn.logxfer.seal import SealRefused
        (a, b), seal = sealings()
        assembler = SegmentAssembler()
        for entry in (a[0], b[1]):
            self.assertIsNone(self.add(assembler, seal, entry))
        with self.assertRaises(SealRefused):
            self.add(assembler, seal, a[2])         # a0 b1 a2: every index full, no opening
        self.assertEqual(assembler.pending_count(), 1)              # held, for another copy
        self.assertEqual(self.add(assembler, seal, a[1]), AREA)     # a0 a1 a2
        self.assertEqual((assembler.pending_count(), assembler.held_bytes), (0, 0))

    def test_without_an_opener_the_first_copy_of_each_index_is_joined(self):
        (a, b), _ = sealings()
        assembler = SegmentAssembler()
        for entry in (a[0], b[0], a[1]):
            self.assertIsNone(assembler.add(entry.header, entry.payload))
        self.assertEqual(assembler.copies_ignored, 1)
        area = assembler.add(a[2].header, a[2].payload)
        self.assertEqual(area, b"".join(s.payload for s in a))

    def test_entries_that_differ_in_a_sealed_header_field_never_meet(self):
        (a,), seal = sealings(1)
        (b,), _ = sealings(1, flags=0)              # the first answer, not a resend
        assembler = SegmentAssembler()
        for entry in (a[0], b[1], a[1], b[0]):
            self.assertIsNone(assembler.add(entry.header, entry.payload))
        self.assertEqual(assembler.pending_count(), 2)

    def test_copies_per_index_and_trials_are_bounded(self):
        sets, seal = sealings(6)
        assembler = SegmentAssembler(max_copies=3, max_trials=4)
        calls = []

        def opener(area, header=sets[0][0].header):
            calls.append(area)
            return seal.open(header, area)
        for entry in [s[0] for s in sets] + [s[1] for s in sets]:
            self.assertIsNone(assembler.add(entry.header, entry.payload, opener=opener))
        self.assertEqual(assembler.copies_ignored, 6)           # 3 of 6 at each index
        self.assertEqual(calls, [])
        # the 3rd segment of sealing 5: mixtures only, held on (not a refusal: two sealings)
        self.assertIsNone(assembler.add(sets[5][2].header, sets[5][2].payload, opener=opener))
        self.assertEqual((len(calls), assembler.joins_refused), (4, 1))
