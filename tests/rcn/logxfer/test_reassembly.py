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
