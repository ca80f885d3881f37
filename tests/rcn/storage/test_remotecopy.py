"""The remote copy program with a fake session: initial copy, host writes during it,
suspend, resync, failure during a copy, failover/takeover, delete, reverse."""

from __future__ import annotations

import errno
import random

from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.pairstate import (ASC_NO_PAIR, ASC_RCN_FAILED, PairState, PairStateError, refusal,
                           state_refusal)
from rcn.rio.fcp import ScsiResult
from rcn.storage.copier import allocated_ranges
from rcn.storage.copyerrors import (Conflict, HostWriteRefused, NotFound, PartnerRefused,
                                    PartnerUnreachable)
from rcn.storage.paircommands import resync_allocation
from tests.rcn.storage.support import PARTNER, TRACK, KiB, MiB, MemoryVolume, Rig

S = PairState


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def replica(session, capacity: int) -> bytes:
    """The target volume after applying the session's WRs in the order sent."""
    out = bytearray(capacity)
    for r in session.writes:
        out[r["lba"] * 512:r["lba"] * 512 + len(r["data"])] = r["data"]
    return bytes(out)


def tracks_of(bitmap) -> list[int]:
    first, count, _ = bitmap.dirty_runs()
    return [t for f, c in zip(first.tolist(), count.tolist()) for t in range(f, f + c)]


class InitialCopyTests(TestCase):
    def setUp(self):
        self.rig = Rig()
        self.volume = self.rig.volumes[0]

    def test_copies_exactly_the_allocated_extents_then_duplex(self):
        self.volume.write(4096, pattern(8192, 1))
        self.volume.write(MiB, pattern(2 * MiB + 512, 2))
        pair = self.successResultOf(self.rig.rc.pair_create(0, PARTNER, 5))
        session = self.rig.session
        self.assertEqual(session.controls, ["PAIR_CREATE", "DUPLEX"])
        create = session.log[0]
        self.assertEqual((create["lun"], create["cdb"]["source_lun"], create["cdb"]["group_id"]),
                         (5, 0, 0))
        self.assertEqual(fcp.parse_pair_params(create["data_out"]),
                         {"capacity": 4 * MiB, "block_size": 512, "track_size": TRACK, "mode": 0,
                          "reserved": bytes(7)})
        self.assertEqual(session.written_ranges(),
                         [(4096, 8192), (MiB, MiB), (2 * MiB, MiB), (3 * MiB, 512)])
        self.assertEqual({(r["lun"], r["attribute"]) for r in session.writes},
                         {(5, fcp.TaskAttribute.ORDERED)})
        self.assertEqual(session.log[-1]["action"], "DUPLEX")        # after every copy WR
        self.assertEqual(replica(session, 4 * MiB), bytes(self.volume.data))
        row = self.rig.rc.pairs.for_lun(0)
        self.assertEqual((row.state, row.bitmap.popcount(), row.copies_completed),
                         (S.DUPLEX, 0, 1))
        self.assertEqual((row.copy.kind, row.copy.bytes_total, row.copy.bytes_copied,
                          row.copy.outcome), ("initial", 8192 + 2 * MiB + 512,
                                              8192 + 2 * MiB + 512, "done"))
        self.assertEqual(pair["lun"], 0)

    def test_answer_comes_at_icok_while_the_copy_runs(self):
        self.volume.write(0, pattern(3 * MiB, 3))
        session = self.rig.session
        session.hold = True
        d = self.rig.rc.pair_create(0, PARTNER, 5, mode="async", group=9)
        self.assertNoResult(d)
        self.assertEqual(self.rig.rc.pairs.for_lun(0).state, S.SIMPLEX)
        session.release()                                   # ICOK
        pair = self.successResultOf(d)
        self.assertEqual((pair["state"], pair["mode"], pair["group"], pair["bytes_to_copy"],
                          pair["bytes_copied"]), ("initial-copying", "async", 9, 3 * MiB, 0))
        self.assertEqual(pair["dirty_tracks"], 0)          # all 3 chunks read and sent
        self.assertEqual(len(session.pending), 3)
        session.release()
        self.assertEqual(self.rig.rc.pairs.for_lun(0).state, S.INITIAL_COPYING)
        self.assertEqual(session.controls, ["PAIR_CREATE", "DUPLEX"])
        session.release()                                   # DOK
        self.assertEqual(self.rig.rc.pairs.for_lun(0).state, S.DUPLEX)

    def test_window_bounds_the_copy_writes_in_flight(self):
        rig = Rig(volumes=((0, 16 * MiB),), window=3, chunk=256 * KiB)
        rig.volumes[0].write(0, pattern(4 * MiB, 4))
        rig.session.hold = True
        rig.rc.pair_create(0, PARTNER, 5)
        rig.session.release()
        for _ in range(14):                  # 16 chunks: 3 in flight until the last is sent
            self.assertEqual(len(rig.session.pending), 3)
            rig.session.release(1)
        self.assertEqual((len(rig.session.pending), len(rig.session.writes)), (2, 16))
        self.assertEqual(max(length for _, length in rig.session.written_ranges()), 256 * KiB)

    def test_host_writes_during_the_copy_are_sent_in_order(self):
        self.volume.write(0, pattern(4 * MiB, 5))
        session = self.rig.session
        session.hold = True
        self.rig.rc.pair_create(0, PARTNER, 5)
        session.release()                                   # ICOK; 4 copy WRs in flight
        copy_writes = len(session.writes)
        host = self.rig.rc.host_write(0, 3 * MiB + 100, b"\xee" * 1000)   # not copied yet? sent
        self.assertNoResult(host)                           # sync: waits for its WROK
        self.assertEqual(len(session.writes), copy_writes + 1)
        self.assertEqual(session.writes[-1]["lba"], (3 * MiB) // 512)
        early = self.rig.rc.host_write(0, 0, b"\x11" * 512)  # a region already copied
        session.release()
        self.successResultOf(host)
        self.successResultOf(early)
        session.hold = False
        session.release()
        self.assertEqual(self.rig.rc.pairs.for_lun(0).state, S.DUPLEX)
        self.assertEqual(replica(session, 4 * MiB), bytes(self.volume.data))
        self.assertEqual(self.rig.rc.counters.sent, 2)

    def test_empty_volume_goes_straight_to_duplex(self):
        self.successResultOf(self.rig.rc.pair_create(0, PARTNER, 5))
        self.assertEqual(self.rig.session.controls, ["PAIR_CREATE", "DUPLEX"])
        self.assertEqual(self.rig.rc.pairs.for_lun(0).copy.bytes_total, 0)

    def test_refused_create_leaves_no_row_and_names_the_partners_state(self):
        self.rig.session.control["PAIR_CREATE"] = state_refusal(S.DUPLEX)
        failure = self.failureResultOf(self.rig.rc.pair_create(0, PARTNER, 5), PartnerRefused)
        self.assertIn("PAIR_CREATE refused: the partner's pair is duplex", str(failure.value))
        self.assertIsNone(self.rig.rc.pairs.for_lun(0))
        self.assertEqual(self.rig.session.writes, [])

    def test_no_link_is_unreachable(self):
        self.rig.session_error = RuntimeError("rio: no link to the edge")
        failure = self.failureResultOf(self.rig.rc.pair_create(0, PARTNER, 5),
                                       PartnerUnreachable)
        self.assertIn("no link to the edge", str(failure.value))
        self.assertIsNone(self.rig.rc.pairs.for_lun(0))

    def test_create_for_a_missing_volume_is_not_found(self):
        failure = self.failureResultOf(self.rig.rc.pair_create(3, PARTNER, 5), NotFound)
        self.assertIn("LUN 3: no such volume", str(failure.value))

    def test_failure_during_the_copy_leaves_the_rest_in_the_bitmap(self):
        rig = Rig(window=1)
        volume = rig.volumes[0]
        volume.write(0, pattern(4 * MiB, 6))
        calls = []

        def answer(record):
            calls.append(record)
            return RuntimeError("link down") if len(calls) == 3 else None
        rig.session.write_answer = answer
        self.successResultOf(rig.rc.pair_create(0, PARTNER, 5))
        row = rig.rc.pairs.for_lun(0)
        self.assertEqual(row.state, S.FAILURE_SUSPEND)
        self.assertIn("link down", row.last_error)
        self.assertEqual(tracks_of(row.bitmap), list(range(32, 64)))   # chunks 3 and 4
        self.assertEqual((row.copy.outcome, row.copy.bytes_copied), ("failed", 2 * MiB))
        self.assertNotIn("DUPLEX", rig.session.controls)
        # resync finishes the job: an empty DPOK, only the rest is copied
        rig.session.write_answer = None
        rig.session.control["RESYNC"] = ScsiResult(data_in=DifferentialBitmap(
            4 * MiB, TRACK).serialize())
        before = len(rig.session.writes)
        self.successResultOf(rig.rc.resync(0))
        self.assertEqual(row.state, S.DUPLEX)
        self.assertEqual(row.copy.bytes_copied, 2 * MiB)
        self.assertEqual(rig.session.written_ranges()[before:], [(2 * MiB, MiB), (3 * MiB, MiB)])
        target = bytearray(replica(rig.session, 4 * MiB))
        self.assertEqual(bytes(target), bytes(volume.data))

    def test_refused_copy_write_is_a_failure_too(self):
        self.volume.write(0, pattern(MiB, 7))
        self.rig.session.write_answer = refusal(ASC_RCN_FAILED)
        self.successResultOf(self.rig.rc.pair_create(0, PARTNER, 5))
        row = self.rig.rc.pairs.for_lun(0)
        self.assertEqual(row.state, S.FAILURE_SUSPEND)
        self.assertIn("the RCN cannot reach the partner", row.last_error)
        self.assertEqual(row.bitmap.popcount(), 16)

    def test_duplex_refused_after_the_copy_is_failure_suspend(self):
        self.rig.session.control["DUPLEX"] = refusal(ASC_NO_PAIR)
        self.successResultOf(self.rig.rc.pair_create(0, PARTNER, 5))
        row = self.rig.rc.pairs.for_lun(0)
        self.assertEqual((row.state, row.copy.outcome), (S.FAILURE_SUSPEND, "failed"))
        self.assertIn("DUPLEX", row.last_error)

    def test_suspend_during_the_copy_keeps_the_uncopied_tracks(self):
        self.volume.write(0, pattern(4 * MiB, 8))
        session = self.rig.session
        session.hold = True
        self.rig.rc.pair_create(0, PARTNER, 5)
        session.release()                     # ICOK; chunks 0..3 in flight (all 4 MiB read)
        session.release(2)                    # two acknowledged
        row = self.rig.rc.pairs.for_lun(0)
        d = self.rig.rc.suspend(0)
        self.assertEqual(row.state, S.SUSPENDING)
        session.release()
        self.successResultOf(d)
        self.assertEqual((row.state, row.copy.outcome), (S.SUSPEND, "stopped"))
        self.assertEqual(session.controls, ["PAIR_CREATE", "SUSPEND"])
        self.assertEqual(row.bitmap.popcount(), 0)     # every chunk was sent before SUSPEND

    def test_suspend_stops_a_copy_before_it_reads_the_rest(self):
        rig = Rig(window=1)
        rig.volumes[0].write(0, pattern(4 * MiB, 9))
        rig.session.hold = True
        rig.rc.pair_create(0, PARTNER, 5)
        rig.session.release()                 # ICOK, chunk 0 in flight
        rig.rc.suspend(0)
        rig.session.release()                 # chunk 0 WROK, SOK
        row = rig.rc.pairs.for_lun(0)
        self.assertEqual(row.state, S.SUSPEND)
        self.assertEqual(tracks_of(row.bitmap), list(range(16, 64)))
        self.assertEqual(len(rig.session.writes), 1)


class HostWriteTests(TestCase):
    def setUp(self):
        self.rig = Rig()

    def test_suspend_records_writes_and_sends_nothing(self):
        pair = self.rig.add_pair(state=S.DUPLEX)
        self.successResultOf(self.rig.rc.suspend(0))
        self.assertEqual((pair.state, self.rig.session.controls), (S.SUSPEND, ["SUSPEND"]))
        self.assertEqual((self.rig.session.log[0]["lun"],
                          self.rig.session.log[0]["cdb"]["source_lun"]), (5, 0))
        for offset, n in ((0, 512), (TRACK + 10, 3 * TRACK), (4 * MiB - 1, 1)):
            self.successResultOf(self.rig.rc.host_write(0, offset, b"\x01" * n))
        self.assertEqual(self.rig.session.writes, [])
        self.assertEqual(tracks_of(pair.bitmap), [0, 1, 2, 3, 4, 63])
        self.assertEqual(self.rig.rc.counters.recorded_in_bitmap, 3)

    def test_failed_host_write_suspends_and_records(self):
        pair = self.rig.add_pair()
        self.rig.session.write_answer = RuntimeError("no link")
        self.assertIsNone(self.successResultOf(self.rig.rc.host_write(0, 0, b"\x66" * 4096)))
        self.assertEqual((pair.state, pair.bitmap.popcount()), (S.FAILURE_SUSPEND, 1))
        self.assertIn("no link", pair.last_error)
        self.rig.session.write_answer = None
        self.successResultOf(self.rig.rc.host_write(0, 3 * MiB, b"\x77" * 512))
        self.assertEqual((len(self.rig.session.writes), pair.bitmap.popcount()), (1, 2))

    def test_target_volume_refuses_host_writes_while_replicating(self):
        pair = self.rig.add_pair(role="target", state=S.DUPLEX)
        failure = self.failureResultOf(self.rig.rc.host_write(0, 0, b"x" * 512),
                                       HostWriteRefused)
        self.assertEqual(failure.value.errno, errno.EPERM)
        self.assertIn("state duplex", str(failure.value))
        self.assertEqual(self.rig.volumes[0].written, [])
        pair.state = S.FAILURE_SUSPEND
        self.successResultOf(self.rig.rc.host_write(0, TRACK * 2, b"x" * 512))
        self.assertEqual((tracks_of(pair.bitmap), self.rig.session.log), ([2], []))

    def test_simplex_volume_is_neither_sent_nor_recorded(self):
        pair = self.rig.add_pair(state=S.SIMPLEX)
        self.successResultOf(self.rig.rc.host_write(0, 0, b"x" * 512))
        self.assertEqual((self.rig.session.log, pair.bitmap.popcount()), ([], 0))
        self.assertIsNone(self.rig.rc.written(2, 0, 512))         # no pair at all

    def test_async_queue_is_bounded(self):
        self.rig.add_pair(mode="async", queue_limit=2)
        self.rig.session.hold = True
        first = self.rig.rc.host_write(0, 0, b"a" * 512)
        second = self.rig.rc.host_write(0, 512, b"b" * 512)
        third = self.rig.rc.host_write(0, 1024, b"c" * 512)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertNoResult(third)
        self.rig.session.release(1)
        self.successResultOf(third)
        self.assertEqual([r["lba"] for r in self.rig.session.writes], [0, 1, 2])
        self.assertEqual(self.rig.rc.counters.waits_for_queue, 1)

    def test_deleting_a_pair_releases_queued_writers(self):
        self.rig.add_pair(mode="async", queue_limit=1)
        self.rig.session.hold = True
        self.rig.rc.host_write(0, 0, b"a" * 512)
        waiting = self.rig.rc.host_write(0, 512, b"b" * 512)
        self.assertNoResult(waiting)
        self.successResultOf(self.rig.rc.pair_delete(0, local=True))
        self.successResultOf(waiting)


class ResyncTests(TestCase):
    CAPACITY = 4 * MiB - 3 * 512           # the last track is short

    def setUp(self):
        self.rig = Rig(volumes=((0, self.CAPACITY),))
        self.volume = self.rig.volumes[0]
        self.volume.write(0, pattern(self.CAPACITY, 10))

    def test_merges_dpok_and_copies_only_the_dirty_tracks(self):
        pair = self.rig.add_pair(state=S.FAILURE_SUSPEND)
        pair.bitmap.set_range(1, 2)                       # ours (1211): tracks 1, 2
        partner = DifferentialBitmap(self.CAPACITY, TRACK)
        partner.set_range(2, 3)                           # 1209: tracks 2, 3, 4
        partner.set_range(63, 1)                          # and the short last one
        self.rig.session.control["RESYNC"] = ScsiResult(data_in=partner.serialize())
        answer = self.successResultOf(self.rig.rc.resync(0))
        self.assertEqual(answer["state"], "duplex")
        resync = self.rig.session.log[0]
        self.assertEqual(resync["action"], "RESYNC")
        self.assertEqual(resync["cdb"]["allocation_length"], 44 + 8 * 1)
        self.assertEqual(resync["data_in_length"], resync_allocation(64))
        dirty = [1, 2, 3, 4, 63]
        expected = len(dirty) * TRACK - (64 * TRACK - self.CAPACITY)   # clipped at the end
        self.assertEqual(pair.copy.bytes_copied, expected)
        self.assertEqual(pair.copy.tracks, 5)
        self.assertEqual(sum(n for _, n in self.rig.session.written_ranges()), expected)
        self.assertEqual(self.rig.session.written_ranges(),
                         [(TRACK, 4 * TRACK), (63 * TRACK, self.CAPACITY - 63 * TRACK)])
        self.assertEqual(self.rig.session.controls, ["RESYNC", "DUPLEX"])
        self.assertEqual((pair.state, pair.bitmap.popcount(), pair.copies_completed),
                         (S.DUPLEX, 0, 1))

    def test_writes_during_the_resync_are_sent(self):
        pair = self.rig.add_pair(state=S.SUSPEND)
        pair.bitmap.set_range(0, 10)
        self.rig.session.control["RESYNC"] = ScsiResult(
            data_in=DifferentialBitmap(self.CAPACITY, TRACK).serialize())
        self.rig.session.hold = True
        self.rig.rc.resync(0)
        self.rig.rc.host_write(0, 20 * TRACK, b"\x55" * 512)   # still SUSPEND: recorded
        self.assertEqual(tracks_of(pair.bitmap), list(range(10)) + [20])
        self.rig.session.release()                             # DPOK
        self.assertEqual(pair.state, S.DUPLEX_PENDING)
        self.rig.rc.host_write(0, 30 * TRACK, b"\x66" * 512)   # now: sent
        self.rig.session.hold = False
        self.rig.session.release()
        self.assertEqual(pair.state, S.DUPLEX)
        self.assertEqual(pair.copy.bytes_copied, 11 * TRACK)
        self.assertEqual(replica(self.rig.session, self.CAPACITY)[30 * TRACK:30 * TRACK + 512],
                         b"\x66" * 512)

    def test_resync_of_a_simplex_pair_names_simplex(self):
        self.rig.add_pair(state=S.SIMPLEX)
        failure = self.failureResultOf(self.rig.rc.resync(0), PairStateError)
        self.assertIn("is simplex: resync needs suspend or failure-suspend", str(failure.value))
        self.assertEqual(self.rig.session.log, [])

    def test_resync_without_a_pair_is_not_found(self):
        failure = self.failureResultOf(self.rig.rc.resync(0), NotFound)
        self.assertEqual(str(failure.value), "LUN 0 has no pair")

    def test_partner_refusal_leaves_the_state(self):
        pair = self.rig.add_pair(state=S.SUSPEND)
        self.rig.session.control["RESYNC"] = state_refusal(S.DUPLEX)
        failure = self.failureResultOf(self.rig.rc.resync(0), PartnerRefused)
        self.assertIn("RESYNC refused: the partner's pair is duplex", str(failure.value))
        self.assertEqual(pair.state, S.SUSPEND)
        self.assertIn("the partner's pair is duplex", pair.last_error)

    def test_a_bitmap_of_another_geometry_is_mapped_onto_ours(self):
        self.rig.add_pair(state=S.SUSPEND)
        other = DifferentialBitmap(8 * MiB, 4096)
        other.set_range(17, 1)            # bytes 68 KiB..72 KiB: our track 1
        other.set_range(2000, 1)          # past our capacity: nothing
        self.rig.session.control["RESYNC"] = ScsiResult(data_in=other.serialize())
        self.successResultOf(self.rig.rc.resync(0))
        self.assertEqual(self.rig.session.written_ranges(), [(TRACK, TRACK)])

    def test_an_unusable_dpok_copies_the_whole_pair(self):
        pair = self.rig.add_pair(state=S.SUSPEND)
        self.rig.session.control["RESYNC"] = ScsiResult(data_in=b"junk")
        self.successResultOf(self.rig.rc.resync(0))
        self.assertEqual((pair.state, pair.copy.bytes_copied), (S.DUPLEX, self.CAPACITY))

    def test_busy_pair_refuses_a_second_command(self):
        self.rig.add_pair(state=S.SUSPEND)
        self.rig.session.hold = True
        self.rig.rc.resync(0)
        failure = self.failureResultOf(self.rig.rc.resync(0), Conflict)
        self.assertIn("resync is still running", str(failure.value))


RESIDUAL = fcp.build_residual_report(applied=41, received_max=45, discarded=2, known_missing=1)


class TargetSideTests(TestCase):
    def setUp(self):
        self.rig = Rig()

    def test_fast_failover_sends_suspend_and_shows_the_residual_report(self):
        pair = self.rig.add_pair(role="target", state=S.DUPLEX, partner_lun=3)
        self.rig.session.control["SUSPEND"] = ScsiResult(data_in=RESIDUAL)
        answer = self.successResultOf(self.rig.rc.suspend(0, fast=True))
        record = self.rig.session.log[0]
        self.assertEqual((record["action"], record["lun"], record["cdb"]["source_lun"],
                          record["cdb"]["control_flags"], record["data_in_length"]),
                         ("SUSPEND", 0, 3, fcp.RCN_CONTROL_FAST, 24))
        self.assertEqual(self.rig.sessions_asked, [PARTNER])
        self.assertEqual(answer["residual"], {"applied": 41, "received_max": 45, "discarded": 2,
                                              "known_missing": 1})
        self.assertEqual((answer["state"], pair.state), ("failure-suspend", S.FAILURE_SUSPEND))
        self.successResultOf(self.rig.rc.host_write(0, 0, b"x" * 512))   # now writable

    def test_failover_without_fast_and_already_suspended(self):
        pair = self.rig.add_pair(role="target", state=S.INITIAL_COPYING)
        answer = self.successResultOf(self.rig.rc.suspend(0))
        self.assertEqual((answer["state"], answer["residual"]), ("failure-suspend", None))
        self.assertEqual(self.rig.session.log[0]["cdb"]["control_flags"], 0)
        self.successResultOf(self.rig.rc.suspend(0))                     # at once: no RIO
        self.assertEqual(len(self.rig.session.log), 1)
        self.assertEqual(pair.state, S.FAILURE_SUSPEND)

    def test_failover_timeout_answer_keeps_the_state_and_the_report(self):
        pair = self.rig.add_pair(role="target", state=S.DUPLEX)
        self.rig.session.control["SUSPEND"] = ScsiResult(
            refusal(ASC_RCN_FAILED).status, refusal(ASC_RCN_FAILED).sense, RESIDUAL)
        failure = self.failureResultOf(self.rig.rc.suspend(0), PartnerRefused)
        self.assertIn("the RCN cannot reach the partner", str(failure.value))
        self.assertIn("applied up to sequence 41", str(failure.value))
        self.assertEqual((pair.state, pair.residual["received_max"]), (S.DUPLEX, 45))

    def test_takeover(self):
        pair = self.rig.add_pair(role="target", state=S.DUPLEX_PENDING)
        self.rig.session.control["TAKEOVER"] = ScsiResult(data_in=RESIDUAL)
        answer = self.successResultOf(self.rig.rc.takeover(0))
        self.assertEqual(self.rig.session.controls, ["TAKEOVER"])
        self.assertEqual((answer["residual"]["applied"], pair.state), (41, S.FAILURE_SUSPEND))

    def test_takeover_at_a_source_is_refused(self):
        self.rig.add_pair(role="source", state=S.DUPLEX)
        failure = self.failureResultOf(self.rig.rc.takeover(0), Conflict)
        self.assertIn("is duplex: takeover is for the target", str(failure.value))


class DeleteAndReverseTests(TestCase):
    def setUp(self):
        self.rig = Rig()

    def test_delete_sends_delete_and_drops_the_row(self):
        self.rig.add_pair(state=S.DUPLEX)
        answer = self.successResultOf(self.rig.rc.pair_delete(0))
        self.assertEqual((answer["state"], self.rig.session.controls), ("simplex", ["DELETE"]))
        self.assertIsNone(self.rig.rc.pairs.for_lun(0))

    def test_local_delete_sends_nothing(self):
        self.rig.add_pair(state=S.FAILURE_SUSPEND)
        self.successResultOf(self.rig.rc.pair_delete(0, local=True))
        self.assertEqual((self.rig.session.log, len(self.rig.rc.pairs)), ([], 0))

    def test_refused_delete_keeps_the_row_and_tells_about_local(self):
        self.rig.add_pair(state=S.DUPLEX)
        self.rig.session_error = RuntimeError("rio: no link to the edge")
        failure = self.failureResultOf(self.rig.rc.pair_delete(0), PartnerUnreachable)
        self.assertIn("--local", str(failure.value))
        self.assertIsNotNone(self.rig.rc.pairs.for_lun(0))

    def test_reverse_keeps_the_bitmaps_both_ways(self):
        target = self.rig.add_pair(role="target", state=S.FAILURE_SUSPEND)
        self.successResultOf(self.rig.rc.host_write(0, 5 * TRACK, b"t" * 100))
        answer = self.successResultOf(self.rig.rc.reverse(0))
        self.assertEqual((answer["role"], answer["state"], answer["bitmap"]),
                         ("source", "suspend", "1211"))
        self.assertIs(self.rig.rc.pairs.for_lun(0), target)
        self.assertEqual(tracks_of(target.bitmap), [5])
        self.assertEqual(self.rig.session.log, [])
        # the new source resyncs the union of both sides' bitmaps
        partner = DifferentialBitmap(4 * MiB, TRACK)
        partner.set_range(9, 1)
        self.rig.session.control["RESYNC"] = ScsiResult(data_in=partner.serialize())
        self.successResultOf(self.rig.rc.resync(0))
        self.assertEqual(self.rig.session.written_ranges(),
                         [(5 * TRACK, TRACK), (9 * TRACK, TRACK)])
        self.assertEqual(self.rig.session.log[0]["lun"], 5)       # to the partner's LUN now

    def test_reverse_a_source(self):
        source = self.rig.add_pair(state=S.SUSPEND)
        source.bitmap.set_range(3, 2)
        answer = self.successResultOf(self.rig.rc.reverse(0))
        self.assertEqual((answer["role"], answer["state"], answer["bitmap"],
                          answer["dirty_tracks"]), ("target", "suspend", "1213", 2))


class ExtentTests(TestCase):
    def test_allocated_ranges_are_block_aligned_merged_and_clipped(self):
        volume = MemoryVolume(0, 8192)
        volume.written = [(100, 10), (500, 100), (4000, 5000)]
        self.assertEqual(allocated_ranges(volume, 8192), [(0, 1024), (3584, 8192 - 3584)])

    def test_a_volume_that_cannot_tell_is_copied_whole(self):
        class Plain:
            lun, capacity, block_size = 0, 4096, 512
        self.assertEqual(allocated_ranges(Plain(), 4096), [(0, 4096)])
