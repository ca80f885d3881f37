"""Stamps, journals and the prefix / final checks, on target files and journals built by
hand (512-byte blocks, a few writes)."""

from __future__ import annotations

import os
import random

import numpy as np
from twisted.trial.unittest import TestCase

from rcn.bench import consistency as C
from rcn.bench.consistency import (INITIAL, JOURNAL_RECORD, STAMPED, TORN, ConsistencyError,
                                   check_final, check_prefix, decode_blocks, journal_header,
                                   read_journal, stamp)

RUN = 0xC0FFEE
BLOCK = 512
BLOCKS = 8
REGION = BLOCKS * BLOCK


class Lab:
    """A target file of BLOCKS blocks and a journal, written by the test."""

    def __init__(self, testcase: TestCase, run_id: int = RUN, block: int = BLOCK):
        self.dir = testcase.mktemp()
        os.makedirs(self.dir)
        self.target = os.path.join(self.dir, "target.img")
        self.journal = os.path.join(self.dir, "journal")
        self.run_id, self.block = run_id, block
        with open(self.target, "wb") as f:
            f.write(bytes(BLOCKS * block))
        with open(self.journal, "wb") as f:
            f.write(journal_header(run_id, block))
        self.writes: dict[int, tuple[int, float]] = {}     # index -> block, issued_at

    def write(self, index: int, block_no: int, issued: float, completed: float | None,
              ok: bool = True) -> None:
        """Write ``index`` was issued; with ``completed`` it is in the journal."""
        self.writes[index] = (block_no, issued)
        if completed is not None:
            with open(self.journal, "ab") as f:
                f.write(JOURNAL_RECORD.pack(index, block_no * self.block, issued, completed, ok))

    def land(self, index: int) -> None:
        """Put write ``index`` on the target."""
        block_no, issued = self.writes[index]
        self.put(block_no, stamp(self.run_id, index, block_no * self.block, issued, self.block))

    def put(self, block_no: int, data: bytes) -> None:
        with open(self.target, "r+b") as f:
            f.seek(block_no * self.block)
            f.write(data)

    def prefix(self, **kw):
        return check_prefix(read_journal(self.journal), self.target, 0, REGION, **kw)

    def final(self):
        return check_final(read_journal(self.journal), self.target, 0, REGION)


class StampTests(TestCase):
    def test_stamp_layout(self):
        data = stamp(RUN, 3, 1024, 12.5, BLOCK)
        self.assertEqual(len(data), BLOCK)
        self.assertEqual(C.STAMP_HEADER.unpack_from(data), (b"RCNSTAMP", RUN, 3, 1024, 12.5))
        fill = C.FILL.pack(C.splitmix64(RUN ^ 3))
        self.assertEqual(data[40:], fill * ((BLOCK - 40) // 8))

    def test_vectorised_splitmix_matches_the_scalar_one(self):
        rng = random.Random(5)
        values = [rng.getrandbits(64) for _ in range(1000)] + [0, (1 << 64) - 1]
        got = C._splitmix64_array(np.array(values, dtype="<u8"))
        self.assertEqual([int(v) for v in got], [C.splitmix64(v) for v in values])

    def test_decode_states(self):
        good = stamp(RUN, 7, 512, 3.25, BLOCK)
        other_run = stamp(RUN + 1, 7, 1024, 3.25, BLOCK)
        bad_body = bytearray(stamp(RUN, 8, 1536, 4.0, BLOCK))
        bad_body[300] ^= 1
        moved = stamp(RUN, 9, 0, 5.0, BLOCK)                  # says offset 0, lies at 2048
        data = bytes(BLOCK) + good + other_run + bytes(bad_body) + moved
        decoded = decode_blocks(data, BLOCK, RUN, 0)
        self.assertEqual(decoded.state.tolist(), [INITIAL, STAMPED, INITIAL, TORN, TORN])
        self.assertEqual(decoded.index.tolist(), [0, 7, 0, 0, 0])
        self.assertEqual(decoded.issued_at[1], 3.25)
        self.assertTrue(np.isnan(decoded.issued_at[[0, 2, 3, 4]]).all())

    def test_decode_refuses_partial_blocks(self):
        with self.assertRaisesRegex(ConsistencyError, "whole number"):
            decode_blocks(bytes(BLOCK + 8), BLOCK, RUN, 0)


class JournalTests(TestCase):
    def test_truncated_tail_ignored(self):
        lab = Lab(self)
        lab.write(1, 0, 1.0, 1.5)
        lab.write(2, 1, 2.0, 2.5, ok=False)
        with open(lab.journal, "ab") as f:
            f.write(JOURNAL_RECORD.pack(3, 1024, 3.0, 3.5, 1)[:20])     # mid-write
        journal = read_journal(lab.journal)
        self.assertEqual((journal.run_id, journal.block), (RUN, BLOCK))
        self.assertEqual(journal.index.tolist(), [1, 2])
        self.assertEqual(journal.offset.tolist(), [0, 512])
        self.assertEqual(journal.ok.tolist(), [True, False])
        self.assertEqual(journal.completed_at.tolist(), [1.5, 2.5])

    def test_not_a_journal(self):
        lab = Lab(self)
        with open(lab.journal, "wb") as f:
            f.write(b"NOTAJRNL" + bytes(24))
        with self.assertRaisesRegex(ConsistencyError, "magic"):
            read_journal(lab.journal)


class PrefixTests(TestCase):
    def test_consistent_prefix_ok(self):
        lab = Lab(self)
        for i in range(1, 5):
            lab.write(i, 4 - i, float(i), i + 0.5)     # blocks 3, 2, 1, 0
        lab.land(1)
        lab.land(2)               # 3 and 4 acked at the source, not applied yet
        result = lab.prefix()
        self.assertTrue(result.ok, result.violations)
        self.assertEqual(result.figures["cut_time"], 2.0)
        self.assertEqual(result.figures["required"], 1)     # write 1, acked at 1.5 < 2.0
        self.assertEqual((result.figures["stamped"], result.figures["missing"]), (2, 0))
        self.assertIn("8 blocks", result.summary)

    def test_missing_older_acked_write_names_both(self):
        lab = Lab(self)
        lab.write(1, 5, 1.0, 1.5)          # acked at 1.5 ...
        lab.write(2, 0, 2.0, 2.5)          # ... then write 2 issued: it may depend on 1
        lab.land(2)
        result = lab.prefix()
        self.assertFalse(result.ok)
        self.assertEqual(result.violation_count, 1)
        self.assertEqual(result.figures["missing"], 1)
        self.assertEqual(result.violations[0],
                         "write 1 (offset 2560, acked at 1.500000) is missing from the target, "
                         "yet write 2 (offset 0, issued at 2.000000) is there")

    def test_still_file_requires_writes_before_any_stamp(self):
        lab = Lab(self)
        lab.write(1, 0, 1.0, 1.5)
        lab.write(2, 5, 2.0, 2.5)          # the newer write lies after the missing one
        lab.land(2)
        result = lab.prefix(live=False)
        self.assertFalse(result.ok)
        self.assertIn("write 1 (offset 0, acked at 1.500000) is missing", result.violations[0])
        self.assertIn("yet write 2 (offset 2560", result.violations[0])

    def test_live_scan_requires_only_by_stamps_read_before(self):
        # Read in ascending order while the target applies: block 0 may have been read
        # before write 1 landed and block 5 after write 2 did, so no verdict is sound.
        lab = Lab(self)
        lab.write(1, 0, 1.0, 1.5)
        lab.write(2, 5, 2.0, 2.5)
        lab.land(2)
        result = lab.prefix()
        self.assertTrue(result.ok, result.violations)
        self.assertEqual(result.figures["required"], 0)

    def test_torn_block_is_a_violation(self):
        lab = Lab(self)
        lab.write(1, 3, 1.0, 1.5)
        torn = bytearray(stamp(RUN, 1, 3 * BLOCK, 1.0, BLOCK))
        torn[BLOCK - 1] ^= 0xFF
        lab.put(3, bytes(torn))
        result = lab.prefix()
        self.assertFalse(result.ok)
        self.assertEqual(result.figures["torn"], 1)
        self.assertEqual(result.violations, [
            "block at offset 1536 is torn: this run's stamp header, but its body, offset or "
            "index is wrong"])

    def test_torn_look_read_again(self):
        # The target was writing the block while the scan read it: the second read is whole.
        lab = Lab(self)
        lab.write(1, 3, 1.0, 1.5)
        whole = stamp(RUN, 1, 3 * BLOCK, 1.0, BLOCK)
        lab.put(3, whole[:200] + bytes(BLOCK - 200))
        real_pread = os.pread

        def pread(fd, n, offset):
            lab.put(3, whole)
            return real_pread(fd, n, offset)
        self.patch(C.os, "pread", pread)
        result = lab.prefix()
        self.assertTrue(result.ok, result.violations)
        self.assertEqual((result.figures["torn"], result.figures["reread"]), (0, 1))

    def test_write_in_flight_present_is_ok(self):
        lab = Lab(self)
        lab.write(1, 2, 1.0, 1.5)
        lab.write(2, 1, 2.0, 2.5)
        lab.write(3, 0, 3.0, None)         # in flight: not in the journal, yet on the target
        for i in (1, 2, 3):
            lab.land(i)
        lab.put(4, stamp(RUN + 1, 99, 4 * BLOCK, 50.0, BLOCK))     # another run: INITIAL
        result = lab.prefix()
        self.assertTrue(result.ok, result.violations)
        self.assertEqual(result.figures["cut_time"], 3.0)
        self.assertEqual(result.figures["required"], 2)
        self.assertEqual(result.figures["stamped"], 3)

    def test_overwritten_block_is_ok(self):
        lab = Lab(self)
        lab.write(1, 2, 1.0, 1.5)
        lab.write(2, 2, 2.0, 2.5)          # the same block again, later
        lab.write(3, 0, 3.0, 3.5)
        lab.land(2)
        lab.land(3)
        result = lab.prefix(live=False)
        self.assertTrue(result.ok, result.violations)
        self.assertEqual(result.figures["required"], 2)   # writes 1 and 2, both covered

    def test_phantom_stamp(self):
        lab = Lab(self)
        lab.write(1, 0, 1.0, 1.5)
        lab.write(2, 1, 100.0, 100.5)
        lab.land(1)
        lab.land(2)
        lab.put(3, stamp(RUN, 7, 3 * BLOCK, 60.0, BLOCK))    # unknown, 40 s older than 100.5
        lab.put(4, stamp(RUN, 8, 4 * BLOCK, 80.0, BLOCK))    # unknown, but may be in flight
        result = lab.prefix()
        self.assertFalse(result.ok)
        self.assertEqual(result.figures["phantoms"], 1)
        self.assertEqual(len(result.violations), 1)
        self.assertIn("block at offset 1536 holds write 7 issued at 60.000000",
                      result.violations[0])

    def test_violations_capped(self):
        lab = Lab(self)
        big = 64
        with open(lab.target, "wb") as f:
            f.write(bytes(big * BLOCK))
        for k in range(big):
            torn = bytearray(stamp(RUN, k + 1, k * BLOCK, 1.0, BLOCK))
            torn[-1] ^= 1
            lab.put(k, bytes(torn))
        result = check_prefix(read_journal(lab.journal), lab.target, 0, big * BLOCK)
        self.assertEqual(len(result.violations), C.MAX_VIOLATIONS)
        self.assertEqual(result.violation_count, big)
        self.assertIn("64 violations", result.summary)

    def test_region_checks(self):
        lab = Lab(self)
        with self.assertRaisesRegex(ConsistencyError, "multiples of the 512-byte block"):
            check_prefix(read_journal(lab.journal), lab.target, 100, REGION)
        with self.assertRaisesRegex(ConsistencyError, "the region ends at byte 8192"):
            check_prefix(read_journal(lab.journal), lab.target, REGION, REGION)

    def test_path_journal_and_offset_region(self):
        lab = Lab(self)
        lab.write(1, 4, 1.0, 1.5)
        lab.write(2, 5, 2.0, 2.5)
        lab.write(3, 1, 3.0, 3.5)          # outside the checked region
        lab.land(2)
        result = check_prefix(lab.journal, lab.target, 4 * BLOCK, 4 * BLOCK, live=False)
        self.assertFalse(result.ok)
        self.assertEqual(result.figures["blocks"], 4)
        self.assertIn("write 1 (offset 2048", result.violations[0])


class FinalTests(TestCase):
    def build(self) -> Lab:
        lab = Lab(self)
        lab.write(1, 0, 1.0, 1.5)
        lab.write(2, 0, 2.0, 2.5)          # the last acked write to block 0
        lab.write(3, 1, 3.0, 3.5, ok=False)
        lab.write(4, 2, 4.0, 4.5)
        lab.write(5, 2, 5.0, 5.5, ok=False)    # after 4: block 2 may show 4 or 5
        return lab

    def test_final_ok(self):
        lab = self.build()
        lab.land(2)
        lab.land(3)
        lab.land(5)
        result = lab.final()
        self.assertTrue(result.ok, result.violations)
        self.assertEqual(result.figures["written"], 2)
        lab.land(4)
        lab.put(1, bytes(BLOCK))
        self.assertTrue(lab.final().ok)

    def test_stale_block(self):
        lab = self.build()
        lab.land(1)
        lab.land(4)
        result = lab.final()
        self.assertFalse(result.ok)
        self.assertEqual(result.figures["missing"], 1)
        self.assertEqual(result.violations, [
            "block at offset 0 shows write 1, but write 2 was the last acked to it"])

    def test_unwritten_block_must_stay_initial(self):
        lab = self.build()
        lab.land(2)
        lab.land(4)
        lab.put(6, stamp(RUN, 3, 6 * BLOCK, 3.0, BLOCK))    # write 3 belongs to block 1
        result = lab.final()
        self.assertFalse(result.ok)
        self.assertEqual(result.violations, [
            "block at offset 3072 shows write 3, which no acked or failed write to it "
            "explains (it should be unwritten)"])
        lab.put(6, stamp(RUN, 9, 6 * BLOCK, 3.0, BLOCK))    # a write the journal lacks
        self.assertIn("shows write 9, which no acked or failed write to it explains",
                      lab.final().violations[0])

    def test_acked_write_not_there(self):
        lab = self.build()
        lab.land(2)
        result = lab.final()
        self.assertFalse(result.ok)
        self.assertEqual(result.violations, [
            "block at offset 1024 shows no stamp of this run, but write 4 was the last acked "
            "to it"])
