"""The array's pair rows and bitmaps on disk (rcn.storage.pairstore): a restart resumes."""

from __future__ import annotations

import json
import os

from twisted.internet import task
from twisted.internet.defer import succeed
from twisted.trial.unittest import TestCase

from datapath.frames.fcp import RcnServiceAction as A
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.pairstate import PairState as S
from rcn.rio.fcp import ScsiResult
from rcn.rio.errors import LinkDown
from rcn.storage.pairs import PairTable
from rcn.storage.pairstore import PairStore, PairStoreError
from rcn.storage.remotecopy import RemoteCopy
from tests.rcn.storage.support import PARTNER, TRACK, FakeSession, MemoryVolume, control_command

MiB = 1 << 20


class Array:
    """A RemoteCopy with a PairStore in ``directory``: one 'process' of the array."""

    def __init__(self, directory: str, volumes: dict, session: FakeSession):
        self.session = session
        self.link_up = True
        self.table = PairTable()
        self.store = PairStore(directory)
        self.store.load(self.table, volumes)
        self.rc = RemoteCopy(task.Clock(), self.session_for, volumes, self.table,
                             track_size=TRACK, store=self.store)

    def session_for(self, wwn):
        from twisted.internet.defer import fail
        return succeed(self.session) if self.link_up else fail(LinkDown("cut"))


class PairStoreTests(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.volumes = {0: MemoryVolume(0, 4 * MiB), 1: MemoryVolume(1, 4 * MiB)}

    def restart(self, session: FakeSession | None = None) -> Array:
        return Array(self.dir, self.volumes, session or FakeSession())

    def test_a_pair_made_by_the_partner_survives_a_restart(self):
        """The target array's rows (pair-create from the partner) and 1213 come back."""
        from datapath.frames import fcp
        first = self.restart()
        result = first.rc.control_received(control_command(
            A.PAIR_CREATE, 1, 5, data=fcp.build_pair_params(4 * MiB, 512, TRACK, 0)))
        self.assertTrue(result.good)
        first.rc.control_received(control_command(A.DUPLEX, 1, 5))
        first.rc.control_received(control_command(A.SUSPEND, 1, 5, failure=True))
        self.successResultOf(first.rc.host_write(1, 3 * TRACK, b"\1" * 512))   # into 1213
        again = self.restart()
        pair = again.table.for_lun(1)
        self.assertEqual((pair.role, pair.state, pair.partner_wwpn, pair.partner_lun, pair.group),
                         ("target", S.FAILURE_SUSPEND, PARTNER, 5, 7))
        self.assertEqual(pair.bitmap.popcount(), 1)
        self.assertTrue(pair.bitmap.words[0] & (1 << 3))
        # a replayed WR from the edge is taken again (was: "no pair of that volume")
        from tests.rcn.storage.support import write_command
        self.assertIsNone(again.rc.admit_write(write_command(1, 0, b"\0" * 512)))

    def test_a_deleted_pair_stays_deleted_and_its_bitmaps_go(self):
        first = self.restart()
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "lun0.bitmap")))
        self.successResultOf(first.rc.pair_delete(0))
        self.assertIsNone(self.restart().table.for_lun(0))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "lun0.bitmap")))

    def test_writes_in_flight_at_a_crash_are_resynced_when_the_link_is_up(self):
        session = FakeSession()
        first = self.restart(session)
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5))
        self.assertEqual(first.table.for_lun(0).state, S.DUPLEX)
        session.hold = True
        first.rc.host_write(0, 9 * TRACK, b"\2" * 4096)        # sent, no answer: the crash
        first.rc.host_write(0, 20 * TRACK, b"\3" * 512)
        session.release(1)                                    # the first is at the partner
        again = self.restart()
        pair = again.table.for_lun(0)
        self.assertEqual((pair.state, pair.link_lost), (S.FAILURE_SUSPEND, True))
        dirty = [int(t) for t in range(pair.bitmap.track_count)
                 if int(pair.bitmap.words[t >> 6]) >> (t & 63) & 1]
        self.assertEqual(dirty, [20])                         # only the unanswered one
        again.session.control["RESYNC"] = ScsiResult(data_in=DifferentialBitmap(
            4 * MiB, TRACK).serialize())                      # the target's 1213: clean
        again.rc.link_restored()
        self.assertEqual(again.session.controls, ["RESYNC", "DUPLEX"])
        self.assertEqual([w["lba"] for w in again.session.writes], [20 * TRACK // 512])
        self.assertEqual(pair.state, S.DUPLEX)

    def test_a_copy_stopped_by_a_crash_resumes_from_the_bitmap(self):
        session = FakeSession()
        self.volumes[0].write(0, b"\7" * (3 * MiB))
        first = self.restart(session)
        session.hold = True
        first.rc.pair_create(0, PARTNER, 5)
        session.release(1)                                    # ICOK: the copy starts
        session.release(1)                                    # one chunk of three answered
        again = self.restart()
        pair = again.table.for_lun(0)
        self.assertEqual((pair.state, pair.link_lost), (S.FAILURE_SUSPEND, True))
        self.assertEqual(pair.bitmap.popcount() * TRACK, 2 * MiB)   # the two unanswered
        again.session.control["RESYNC"] = ScsiResult(data_in=DifferentialBitmap(
            4 * MiB, TRACK).serialize())
        again.rc.link_restored()
        self.assertEqual(pair.state, S.DUPLEX)
        self.assertEqual(pair.copy.kind, "resync")
        self.assertEqual(pair.copy.bytes_total, 2 * MiB)

    def test_an_idle_duplex_pair_restarts_duplex(self):
        first = self.restart()
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5))
        self.successResultOf(first.rc.host_write(0, 0, b"\1" * 512))
        pair = self.restart().table.for_lun(0)
        self.assertEqual((pair.state, pair.bitmap.popcount(), pair.link_lost),
                         (S.DUPLEX, 0, False))

    def test_an_unreadable_pair_file_is_named(self):
        with open(os.path.join(self.dir, "pairs.json"), "w") as f:
            f.write("{not json")
        error = self.assertRaises(PairStoreError, self.restart)
        self.assertIn("pairs.json: unreadable pair table", str(error))
        self.assertIn("move it away", str(error))

    def test_a_row_beyond_its_volume_is_refused_before_any_bitmap_file_is_made(self):
        first = self.restart()
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5))
        path = os.path.join(self.dir, "pairs.json")
        with open(path) as f:
            doc = json.load(f)
        os.unlink(os.path.join(self.dir, "lun0.bitmap"))
        for key, value, why in (("capacity", 1 << 50, "does not fit its volume"),
                                ("partner_lun", "5", "partner_lun: '5' is not an integer"),
                                ("track_size", 1000, "track")):
            with open(path, "w") as f:
                json.dump({"version": 1, "rows": [dict(doc["rows"][0], **{key: value})]}, f)
            error = self.assertRaises(PairStoreError, self.restart)
            self.assertIn("pairs.json: unreadable pair table", str(error))
            self.assertIn(why, str(error))
            self.assertFalse(os.path.exists(os.path.join(self.dir, "lun0.bitmap")))

    def test_a_bitmap_file_of_the_wrong_size_is_named(self):
        first = self.restart()
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5))
        with open(os.path.join(self.dir, "lun0.bitmap"), "ab") as f:
            f.write(b"\0" * 8)
        error = self.assertRaises(PairStoreError, self.restart)
        self.assertIn("lun0.bitmap", str(error))

    def test_rows_are_json_a_person_can_read(self):
        first = self.restart()
        self.successResultOf(first.rc.pair_create(0, PARTNER, 5, group=9))
        with open(os.path.join(self.dir, "pairs.json")) as f:
            doc = json.load(f)
        self.assertEqual(doc["rows"][0]["partner_wwpn"], "50:0a:09:80:00:00:00:02")
        self.assertEqual((doc["rows"][0]["state"], doc["rows"][0]["group"]), ("duplex", 9))


class AutoResyncTests(TestCase):
    """A pair whose RIOs went unanswered while the link stayed up (an edge that stopped and
    went on) resyncs by itself after a while, retrying with a growing wait."""

    def test_unanswered_rios_without_a_link_drop_resync_by_themselves(self):
        from tests.rcn.storage.support import Rig
        rig = Rig()
        pair = rig.add_pair(state=S.DUPLEX)
        rig.session.control["RESYNC"] = ScsiResult(data_in=DifferentialBitmap(
            4 * MiB, TRACK).serialize())
        rig.session.write_answer = LinkDown("the exchange timed out")
        self.successResultOf(rig.rc.host_write(0, 0, b"\1" * 512))
        self.assertEqual((pair.state, pair.link_lost), (S.FAILURE_SUSPEND, True))
        rig.session_error = LinkDown("still no answer")
        rig.clock.advance(5)                          # first attempt: unreachable
        self.assertEqual(pair.state, S.FAILURE_SUSPEND)
        self.assertEqual(rig.session.controls, [])
        rig.session_error = None
        rig.session.write_answer = None
        rig.clock.advance(9.9)                        # the wait doubled: not yet
        self.assertEqual(rig.session.controls, [])
        rig.clock.advance(0.1)
        self.assertEqual(rig.session.controls, ["RESYNC", "DUPLEX"])
        self.assertEqual((pair.state, pair.link_lost), (S.DUPLEX, False))
        self.assertEqual([w["lba"] for w in rig.session.writes][-1:], [0])   # 1211's track

    def test_a_refused_automatic_resync_is_left_to_the_operator(self):
        from rcn.pairstate import state_refusal
        from tests.rcn.storage.support import Rig
        rig = Rig()
        pair = rig.add_pair(state=S.DUPLEX)
        rig.session.write_answer = LinkDown("no answer")
        self.successResultOf(rig.rc.host_write(0, 0, b"\1" * 512))
        rig.session.control["RESYNC"] = state_refusal(S.SUSPENDING)
        rig.clock.advance(5)
        self.assertEqual(rig.session.controls, ["RESYNC"])
        self.assertEqual((pair.state, pair.link_lost), (S.FAILURE_SUSPEND, False))
        self.assertIn("suspending", pair.last_error)
        rig.clock.advance(3600)
        self.assertEqual(rig.session.controls, ["RESYNC"])       # no more attempts
