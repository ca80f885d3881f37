"""The array's faces: the NBD export's host write path over a real volume file, and the
RIO target (ArrayTarget) for the edge's WRITE(16), READ(16) and RCN CONTROL."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.nbd import protocol as P
from rcn.nbd.export import error_code
from rcn.pairstate import (ASC_IN_PROGRESS, ASC_NO_PAIR, ASC_PAIR_PARAMS, ASC_PAIR_STATE, Event,
                           PairState, PairStateError)
from rcn.rio.fcp import parse_sense
from rcn.storage.array import ArrayTarget, ReplicatedExport
from rcn.storage.copyerrors import HostWriteRefused
from rcn.storage.pairs import Pair, PairTable
from rcn.storage.remotecopy import RemoteCopy
from rcn.storage.volume import Volume
from tests.rcn.storage.support import (PARTNER, TRACK, FakeSession, control_command,
                                       write_command)

MiB = 1 << 20
S = PairState
A = fcp.RcnServiceAction


class ExportTests(TestCase):
    """ReplicatedExport + RemoteCopy over a sparse volume file."""

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.volume = Volume(os.path.join(directory, "v0.img"), 0, 4 * MiB)
        self.addCleanup(self.volume.close)
        self.session = FakeSession()
        self.session_result = None

    def make(self, mode="sync", state=S.DUPLEX, role="source"):
        self.pair = Pair(0, PARTNER, 9, 7, state, mode, 4, role, 4 * MiB)
        self.rc = RemoteCopy(task.Clock(), self.session_for, {0: self.volume},
                             PairTable([self.pair]))
        return ReplicatedExport(self.volume, "v0", self.rc)

    def session_for(self, wwn):
        self.assertEqual(wwn, PARTNER)
        return self.session_result or succeed(self.session)

    def test_sync_write_completes_after_the_wrok(self):
        self.session.hold = True
        export = self.make()
        d = export.write(1024, b"\x11" * 1024, False)
        self.assertNoResult(d)
        self.assertEqual([(r["lun"], r["lba"], r["data"], r["attribute"])
                          for r in self.session.writes],
                         [(9, 2, b"\x11" * 1024, fcp.TaskAttribute.ORDERED)])
        self.session.release()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.rc.counters.acknowledged, 1)

    def test_unaligned_write_sends_the_surrounding_blocks(self):
        self.volume.write(0, b"\x22" * 1024)
        export = self.make()
        self.successResultOf(export.write(100, b"\x33" * 10, False))
        record = self.session.writes[0]
        self.assertEqual((record["lun"], record["lba"], len(record["data"])), (9, 0, 512))
        self.assertEqual(record["data"], b"\x22" * 100 + b"\x33" * 10 + b"\x22" * 402)

    def test_large_write_goes_in_1_mib_rios_in_order(self):
        export = self.make()
        self.successResultOf(export.write(0, b"\x44" * (2 * MiB + 512), False))
        self.assertEqual(self.session.written_ranges(), [(0, MiB), (MiB, MiB), (2 * MiB, 512)])

    def test_trim_is_replicated_as_zeroes(self):
        self.volume.write(0, b"\x55" * 4096)
        export = self.make()
        self.successResultOf(export.trim(0, 4096))
        self.assertEqual(self.session.writes[0]["data"], bytes(4096))

    def test_failed_rio_suspends_the_pair_and_records_the_blocks(self):
        export = self.make()
        self.session_result = fail(RuntimeError("no link"))
        self.assertIsNone(self.successResultOf(export.write(0, b"\x66" * 4096, False)))
        self.assertEqual((self.pair.state, self.pair.bitmap.popcount()), (S.FAILURE_SUSPEND, 1))

    def test_target_export_refuses_with_eperm_and_leaves_the_volume(self):
        export = self.make(role="target", state=S.DUPLEX)
        exc = self.assertRaises(HostWriteRefused, export.write, 0, b"\x01" * 512, False)
        self.assertEqual(error_code(exc), P.EPERM)
        self.assertRaises(HostWriteRefused, export.trim, 0, 512)
        self.assertRaises(HostWriteRefused, export.write_zeroes, 0, 512, False)
        self.assertEqual(self.volume.read(0, 512), bytes(512))

    def test_allocated_extents_of_a_sparse_file(self):
        self.assertEqual(self.volume.allocated_extents(), [])
        self.volume.write(MiB + 100, b"x" * 10)
        self.volume.write(3 * MiB, b"y" * 8192)
        extents = self.volume.allocated_extents()
        self.assertEqual(len(extents), 2)
        (a, alen), (b, blen) = extents          # file system blocks around the data
        self.assertTrue(a <= MiB + 100 < MiB + 110 <= a + alen < 3 * MiB, extents)
        self.assertTrue(b <= 3 * MiB and 3 * MiB + 8192 <= b + blen <= 4 * MiB, extents)


class ArrayTargetTests(TestCase):
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.volume = Volume(os.path.join(directory, "v1.img"), 1, MiB)
        self.addCleanup(self.volume.close)
        self.source = Volume(os.path.join(directory, "v2.img"), 2, MiB)
        self.addCleanup(self.source.close)
        self.session = FakeSession()
        self.rc = RemoteCopy(task.Clock(), lambda wwn: succeed(self.session),
                             {1: self.volume, 2: self.source})
        self.target = ArrayTarget({1: self.volume, 2: self.source}, self.rc)

    def pair(self, state=S.DUPLEX, role="target", lun=1, partner_lun=4) -> Pair:
        pair = Pair(lun, PARTNER, partner_lun, 7, state, role=role, capacity=MiB,
                    track_size=TRACK)
        self.rc.pairs.add(pair)
        return pair

    def sense(self, result) -> tuple[int, int, int]:
        self.assertFalse(result.good)
        return parse_sense(result.sense)

    def test_write_then_read(self):
        self.pair()
        result = self.target.execute(write_command(1, 4, b"\x99" * 1024))
        self.assertTrue(result.good)
        self.assertEqual(self.volume.read(2048, 1024), b"\x99" * 1024)
        read = fcp.build_read16(4, 2)
        command = write_command(1, 0, b"")
        command.cdb, command.parsed, command.data_in_length = read, fcp.parse_cdb(read), 1024
        self.assertEqual(self.target.execute(command).data_in, b"\x99" * 1024)

    def test_errors_are_check_conditions(self):
        self.pair()
        cases = [(write_command(7, 0, bytes(512)), 0x25),
                 (write_command(1, 2047, bytes(1024)), 0x21),
                 (write_command(1, 0, bytes(1024)), 0x24),
                 (write_command(1, 0, bytes(512)), 0x20)]
        cases[2][0].data = bytes(512)                              # fewer bytes than the CDB says
        cases[3][0].cdb = bytes([0x12, 0, 0, 0, 36, 0])
        cases[3][0].parsed = fcp.parse_cdb(cases[3][0].cdb)
        for command, asc in cases:
            self.assertEqual(self.sense(self.target.execute(command))[:2], (5, asc))
        self.assertEqual((self.target.applied, self.target.refused), (0, 4))

    def test_writes_are_refused_by_state_and_without_a_pair(self):
        self.assertEqual(self.sense(self.target.execute(write_command(1, 0, bytes(512))))[1],
                         ASC_NO_PAIR)
        pair = self.pair(state=S.SUSPEND)
        self.assertEqual(self.sense(self.target.execute(write_command(1, 0, b"\x01" * 512))),
                         (5, ASC_PAIR_STATE, S.SUSPEND.code))
        pair.state = S.FAILURE_SUSPEND                  # residual entries after a fast failover
        self.assertTrue(self.target.execute(write_command(1, 0, b"\x01" * 512)).good)
        self.assertEqual((self.target.applied, self.target.refused), (1, 2))
        self.assertEqual(self.volume.read(0, 512), b"\x01" * 512)

    def create(self, data=None, lun=1, **kw):
        if data is None:
            data = fcp.build_pair_params(MiB, 512, TRACK, 1)
        return self.target.execute(control_command(A.PAIR_CREATE, lun, 4, data=data, group=9, **kw))

    def test_pair_create_makes_a_target_row(self):
        self.assertTrue(self.create().good)
        row = self.rc.pairs.for_lun(1)
        self.assertEqual((row.role, row.state, row.partner_wwpn, row.partner_lun, row.group,
                          row.mode, row.capacity, row.track_size),
                         ("target", S.INITIAL_COPYING, PARTNER, 4, 9, "async", MiB, TRACK))
        self.assertEqual(self.rc.partners(), {PARTNER})
        self.assertTrue(self.target.execute(write_command(1, 0, bytes(512))).good)

    def test_pair_create_parameter_checks(self):
        cases = {
            "bigger source": fcp.build_pair_params(2 * MiB, 512, TRACK, 0),
            "other block size": fcp.build_pair_params(MiB, 4096, TRACK, 0),
            "track not a power of two": fcp.build_pair_params(MiB, 512, 3000, 0),
            "track below the block": fcp.build_pair_params(MiB, 512, 256, 0),
            "unknown mode": fcp.build_pair_params(MiB, 512, TRACK, 7),
            "zero capacity": fcp.build_pair_params(0, 512, TRACK, 0),
            "short data-out": b"\x00" * 10,
        }
        for name, data in cases.items():
            self.assertEqual(self.sense(self.create(data))[1], ASC_PAIR_PARAMS, name)
        self.assertIsNone(self.rc.pairs.for_lun(1))
        # a smaller source fits: the bitmap covers the source's bytes
        self.assertTrue(self.create(fcp.build_pair_params(MiB // 2, 512, 4096, 0)).good)
        self.assertEqual(self.rc.pairs.for_lun(1).bitmap.track_count, 128)

    def test_pair_create_on_a_paired_volume_is_refused_with_its_state(self):
        self.pair(state=S.DUPLEX, role="source")
        self.assertEqual(self.sense(self.create()), (5, ASC_PAIR_STATE, S.DUPLEX.code))
        self.rc.pairs.remove(1)
        busy = self.pair(state=S.SIMPLEX)
        busy.busy = "pair-create"
        self.assertEqual(self.sense(self.create())[1], ASC_IN_PROGRESS)

    def test_resync_answers_1213_and_clears_it(self):
        pair = self.pair(state=S.FAILURE_SUSPEND)
        pair.bitmap.set_range(3, 5)
        expected = pair.bitmap.serialize()
        result = self.target.execute(control_command(A.RESYNC, 1, 4, allocation_length=52))
        self.assertTrue(result.good)
        self.assertEqual(result.data_in, expected)
        self.assertEqual(DifferentialBitmap.deserialize(result.data_in).popcount(), 5)
        self.assertEqual((pair.state, pair.bitmap.popcount()), (S.DUPLEX_PENDING, 0))

    def test_resync_with_too_small_an_allocation_is_refused_and_keeps_1213(self):
        pair = self.pair(state=S.SUSPEND)
        pair.bitmap.set_range(0, 3)
        pair.bitmap.set_range(8, 2)          # two runs in one word: RAW, 44 + 8 bytes
        self.assertEqual(len(pair.bitmap.serialize()), 52)
        for alloc, fcp_dl in ((51, 51), (52, 20), (0, 0)):
            result = self.target.execute(control_command(A.RESYNC, 1, 4, allocation_length=alloc,
                                                         data_in_length=fcp_dl))
            self.assertEqual(self.sense(result)[1:], (0x24, 0), (alloc, fcp_dl))
        self.assertEqual((pair.state, pair.bitmap.popcount()), (S.SUSPEND, 5))

    def test_control_for_another_source_lun_finds_no_pair(self):
        self.pair(state=S.DUPLEX)
        result = self.target.execute(control_command(A.SUSPEND, 1, 6))
        self.assertEqual(self.sense(result)[1], ASC_NO_PAIR)
        self.assertEqual(self.rc.control["received_refused"], 1)

    def test_failure_notice_to_a_source_volume(self):
        pair = self.pair(state=S.DUPLEX, role="source", lun=2, partner_lun=8)
        result = self.target.execute(control_command(A.SUSPEND, 8, 2, failure=True))
        self.assertTrue(result.good)
        self.assertEqual(pair.state, S.FAILURE_SUSPEND)
        self.assertTrue(self.target.execute(control_command(A.SUSPEND, 8, 2, failure=True)).good)
        self.assertEqual((pair.state, self.target.controls), (S.FAILURE_SUSPEND, 2))

    def test_delete_drops_the_target_row(self):
        self.pair(state=S.SUSPEND)
        self.assertTrue(self.target.execute(control_command(A.DELETE, 1, 4)).good)
        self.assertIsNone(self.rc.pairs.for_lun(1))
        self.assertEqual(self.sense(self.target.execute(control_command(A.DELETE, 1, 4)))[1],
                         ASC_NO_PAIR)


class PairTableTests(TestCase):
    def test_rows_are_added_and_removed(self):
        table = PairTable()
        pair = Pair(0, PARTNER, 1, 7, S.SIMPLEX, capacity=MiB)
        table.add(pair)
        self.assertRaises(ValueError, table.add, Pair(0, PARTNER, 2, 7, S.SIMPLEX, capacity=MiB))
        self.assertIs(table.remove(0), pair)
        self.assertEqual(len(table), 0)

    def test_state_changes_go_through_the_shared_table(self):
        pair = Pair(3, PARTNER, 1, 7, S.SIMPLEX, capacity=MiB)
        pair.apply(Event.CREATED)
        self.assertEqual(pair.state, S.INITIAL_COPYING)
        exc = self.assertRaises(PairStateError, pair.apply, Event.CREATED)
        self.assertIn("pair LUN 3 (source, -> 50:0a:09:80:00:00:00:02 LUN 1) is initial-copying",
                      str(exc))

    def test_mark_and_dirty_bytes_clip_at_the_end(self):
        pair = Pair(0, PARTNER, 1, 7, S.SUSPEND, capacity=MiB + 512)
        pair.mark(MiB, 10000)                 # past the end: clipped
        pair.mark(0, 1)
        self.assertEqual((pair.bitmap.popcount(), pair.dirty_bytes()), (2, TRACK + 512))
        self.assertRaises(ValueError, Pair, 0, PARTNER, 1, 7, S.SIMPLEX, role="both",
                          capacity=MiB)

