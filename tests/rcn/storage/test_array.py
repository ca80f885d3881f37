"""The array's host write path (replication, async back-pressure, failure Suspend) and RIO target."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from rcn.rio.fcp import ScsiCommand, ScsiResult, parse_sense
from rcn.storage.array import ArrayTarget, ReplicatedExport, Replicator
from rcn.storage.pairs import Pair, PairState, PairTable
from rcn.storage.volume import Volume

PARTNER = 0x500A098000000002
MiB = 1 << 20


class FakeSession:
    """Records RIO WRs; each answer is a Deferred the test fires (or fires at once)."""

    def __init__(self, auto: bool = True):
        self.auto = auto
        self.writes = []
        self.pending = []

    def write(self, lun, lba, data, attribute, fua):
        self.writes.append((lun, lba, bytes(data), attribute))
        if self.auto:
            return succeed(ScsiResult())
        d = Deferred()
        self.pending.append(d)
        return d


class ReplicatorTests(TestCase):
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.volume = Volume(os.path.join(directory, "v0.img"), 0, 4 * MiB)
        self.addCleanup(self.volume.close)
        self.session = FakeSession()
        self.session_result = None

    def make(self, mode="sync", queue_limit=4, state=PairState.DUPLEX):
        self.pair = Pair(0, PARTNER, 9, 7, state, mode, queue_limit)
        self.replicator = Replicator(self.session_for, {0: self.volume}, PairTable([self.pair]))
        return ReplicatedExport(self.volume, "v0", self.replicator)

    def session_for(self, wwn):
        self.assertEqual(wwn, PARTNER)
        return self.session_result or succeed(self.session)

    def test_sync_write_completes_after_the_wrok(self):
        self.session.auto = False
        export = self.make()
        d = export.write(1024, b"\x11" * 1024, False)
        self.assertNoResult(d)
        self.assertEqual(self.session.writes, [(9, 2, b"\x11" * 1024, fcp.TaskAttribute.ORDERED)])
        self.session.pending[0].callback(ScsiResult())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.replicator.counters.acknowledged, 1)

    def test_unaligned_write_sends_the_surrounding_blocks(self):
        self.volume.write(0, b"\x22" * 1024)
        export = self.make()
        self.successResultOf(export.write(100, b"\x33" * 10, False))
        lun, lba, data, _ = self.session.writes[0]
        self.assertEqual((lun, lba, len(data)), (9, 0, 512))
        self.assertEqual(data, b"\x22" * 100 + b"\x33" * 10 + b"\x22" * 402)

    def test_large_write_goes_in_1_mib_rios_in_order(self):
        export = self.make()
        self.successResultOf(export.write(0, b"\x44" * (2 * MiB + 512), False))
        self.assertEqual([(lba, len(data)) for _, lba, data, _ in self.session.writes],
                         [(0, MiB), (2048, MiB), (4096, 512)])

    def test_trim_is_replicated_as_zeroes(self):
        self.volume.write(0, b"\x55" * 4096)
        export = self.make()
        self.successResultOf(export.trim(0, 4096))
        self.assertEqual(self.session.writes[0][2], bytes(4096))

    def test_failed_rio_suspends_the_pair_and_records_the_blocks(self):
        export = self.make()
        self.session_result = fail(RuntimeError("no link"))
        self.assertIsNone(self.successResultOf(export.write(0, b"\x66" * 4096, False)))
        self.assertEqual(self.pair.state, PairState.FAILURE_SUSPEND)
        bitmap = self.replicator.links[0].bitmap
        self.assertEqual(bitmap.popcount(), 1)
        self.session_result = None
        self.assertIsNone(export.write(3 * MiB, b"\x77" * 512, False))   # recorded, not sent
        self.assertEqual((self.session.writes, bitmap.popcount()), ([], 2))

    def test_check_condition_answer_suspends_too(self):
        export = self.make()
        self.session.write = lambda *a: succeed(ScsiResult(fcp.ScsiStatus.CHECK_CONDITION))
        self.successResultOf(export.write(0, b"\x01" * 512, False))
        self.assertEqual(self.pair.state, PairState.FAILURE_SUSPEND)

    def test_suspended_pair_only_records(self):
        export = self.make(state=PairState.SUSPEND)
        self.assertIsNone(export.write(0, b"\x01" * 512, False))
        self.assertEqual(self.session.writes, [])
        self.assertEqual(self.replicator.links[0].bitmap.popcount(), 1)

    def test_async_mode_queues_at_most_queue_limit(self):
        self.session.auto = False
        export = self.make(mode="async", queue_limit=2)
        first = export.write(0, b"a" * 512, False)
        second = export.write(512, b"b" * 512, False)
        third = export.write(1024, b"c" * 512, False)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertNoResult(third)                    # back-pressure: the queue is full
        self.assertEqual(len(self.session.writes), 2)
        self.session.pending[0].callback(ScsiResult())
        self.successResultOf(third)
        self.assertEqual([lba for _, lba, _, _ in self.session.writes], [0, 1, 2])
        self.assertEqual(self.replicator.counters.waits_for_queue, 1)

    def test_unpaired_volume_is_not_replicated(self):
        self.make()
        self.assertIsNone(self.replicator.written(3, 0, 512))


class ArrayTargetTests(TestCase):
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.volume = Volume(os.path.join(directory, "v1.img"), 1, MiB)
        self.addCleanup(self.volume.close)
        self.target = ArrayTarget({1: self.volume})

    def command(self, cdb: bytes, lun: int = 1, data: bytes = b"", data_in_length: int = 0):
        return ScsiCommand(0x010100, PARTNER, 0x010200, 0x500A098000000001, lun, cdb,
                           fcp.parse_cdb(cdb), data=data, data_in_length=data_in_length)

    def test_write_then_read(self):
        result = self.target.execute(self.command(fcp.build_write16(4, 2), data=b"\x99" * 1024))
        self.assertTrue(result.good)
        self.assertEqual(self.volume.read(2048, 1024), b"\x99" * 1024)
        result = self.target.execute(self.command(fcp.build_read16(4, 2), data_in_length=1024))
        self.assertEqual(result.data_in, b"\x99" * 1024)

    def test_errors_are_check_conditions(self):
        cases = [(self.command(fcp.build_write16(0, 1), lun=7, data=bytes(512)), 0x25),
                 (self.command(fcp.build_write16(2047, 2), data=bytes(1024)), 0x21),
                 (self.command(fcp.build_write16(0, 2), data=bytes(512)), 0x24),
                 (self.command(bytes([0x12, 0, 0, 0, 36, 0])), 0x20)]
        for command, asc in cases:
            result = self.target.execute(command)
            self.assertEqual(result.status, fcp.ScsiStatus.CHECK_CONDITION)
            self.assertEqual(parse_sense(result.sense)[:2], (5, asc))
        self.assertEqual((self.target.applied, self.target.refused), (0, 4))
