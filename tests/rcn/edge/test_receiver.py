"""GroupReceiver: order, duplicates, non-overlapping writes in flight, WROK after durability."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.frames.logentry import (EntryFlag, EntryType, LogHeader, parse_datagram,
                                      parse_nak_ranges)
from rcn.edge.receiver import GroupReceiver, ReceiverConfig
from rcn.logxfer.rioarea import command_area
from rcn.rio.fcp import ScsiResult, build_write16_cdb


def header(sequence: int, entry_type: int = EntryType.WR, flags: int = 0) -> LogHeader:
    return LogHeader(entry_type=entry_type, flags=flags, group_id=7, sequence=sequence,
                     io_time_ns=0, target_wwn=2, target_lun=0, source_wwn=1, source_lun=0)


def control_area() -> bytes:
    return command_area(1, 2, 3, 0, fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 7, 0), b"")


def area(lba: int, blocks: int = 1) -> bytes:
    return command_area(1, 2, 3, 0, build_write16_cdb(lba, blocks), bytes(blocks * 512))


class FakeTarget:
    def __init__(self):
        self.calls: list[tuple[int, Deferred]] = []

    def execute(self, command):
        d = Deferred()
        self.calls.append((command.parsed["lba"], d))
        return d


class ReceiverTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.target = FakeTarget()
        self.records: list[tuple[int, Deferred]] = []
        self.back: list[dict] = []

        def record(group, value):
            d = Deferred()
            self.records.append((value, d))
            return d

        def send_back(hdr, datagrams):
            for d in datagrams:
                entry = parse_datagram(d)
                self.back.append(dict(entry.header._asdict(), body=entry.payload))
        self.receiver = GroupReceiver(7, clock=self.clock,
                                      config=ReceiverConfig(window=16, nak_delay=0.01,
                                                            nak_interval=0.05),
                                      applied=0, target_for=lambda h: self.target,
                                      record_applied=record, send_back=send_back)

    def test_applies_in_sequence_order_whatever_the_arrival(self):
        for seq in (3, 1, 2):
            self.receiver.entry(header(seq), area(seq * 10))
        self.assertEqual([lba for lba, _ in self.target.calls], [10, 20, 30])

    def test_overlapping_write_waits_until_the_earlier_is_durable(self):
        self.receiver.entry(header(1), area(0, 8))
        self.receiver.entry(header(2), area(4, 8))          # overlaps blocks 4..7
        self.receiver.entry(header(3), area(100, 1))        # waits behind 2: order
        self.assertEqual([lba for lba, _ in self.target.calls], [0])
        self.target.calls[0][1].callback(ScsiResult())
        self.assertEqual([v for v, _ in self.records], [1])
        self.assertEqual(len(self.target.calls), 1)          # answered but not yet durable
        self.records[0][1].callback(None)
        self.assertEqual([lba for lba, _ in self.target.calls], [0, 4, 100])

    def test_disjoint_and_touching_writes_go_together(self):
        for seq, (lba, blocks) in enumerate([(100, 8), (0, 4), (4, 4), (108, 1), (50, 10)], 1):
            self.receiver.entry(header(seq), area(lba, blocks))
        self.assertEqual([lba for lba, _ in self.target.calls], [100, 0, 4, 108, 50])
        self.receiver.entry(header(6), area(55, 1))           # inside 50..59: waits
        self.receiver.entry(header(7), area(200, 1))          # behind it: waits too (order)
        self.assertEqual(len(self.target.calls), 5)

    def test_wrok_only_after_the_counter_is_durable(self):
        self.receiver.entry(header(1), area(0))
        self.target.calls[0][1].callback(ScsiResult())
        self.assertEqual(self.back, [])
        self.records[0][1].callback(None)
        self.assertEqual([(b["entry_type"], b["sequence"]) for b in self.back],
                         [(EntryType.WROK, 1)])

    def test_writes_durable_together_get_one_cumulative_wrok(self):
        for seq in (1, 2, 3):
            self.receiver.entry(header(seq), area(seq * 10))
        for _, d in self.target.calls:
            d.callback(ScsiResult())
        self.assertEqual([v for v, _ in self.records], [1, 2, 3])
        self.records[-1][1].callback(None)                   # 3 durable covers 1 and 2
        wroks = [b for b in self.back if b["entry_type"] == EntryType.WROK]
        self.assertEqual([(w["sequence"], w["flags"]) for w in wroks],
                         [(3, EntryFlag.CUMULATIVE)])

    def test_first_of_several_records_fired_by_one_fsync_answers_for_all(self):
        durable = {"value": 0}
        receiver = GroupReceiver(7, clock=self.clock, config=ReceiverConfig(window=16), applied=0,
                                 target_for=lambda h: self.target,
                                 record_applied=lambda g, v: self.records_for(v),
                                 send_back=lambda h, d: self.back.extend(
                                     parse_datagram(x).header._asdict() for x in d),
                                 durable_of=lambda g: durable["value"])
        self.pending_records = []
        for seq in (1, 2, 3):
            receiver.entry(header(seq), area(seq * 10))
        for _, d in self.target.calls:
            d.callback(ScsiResult())
        durable["value"] = 3                                  # one fsync made all three durable
        for d in self.pending_records:
            d.callback(None)
        wroks = [b for b in self.back if b["entry_type"] == EntryType.WROK]
        self.assertEqual([w["sequence"] for w in wroks], [3])

    def records_for(self, value):
        d = Deferred()
        self.pending_records.append(d)
        return d

    def test_duplicate_of_an_applied_entry_gets_its_wrok_again(self):
        self.receiver.entry(header(1), area(0))
        self.target.calls[0][1].callback(ScsiResult())
        self.records[0][1].callback(None)
        self.receiver.entry(header(1), area(0))
        self.assertEqual(len(self.target.calls), 1)
        self.assertEqual(self.back[-1]["flags"], EntryFlag.RESENT_ACK | EntryFlag.CUMULATIVE)
        self.assertEqual(self.back[-1]["sequence"], 1)
        self.assertEqual(self.receiver.stats.duplicates_applied, 1)

    def test_gap_is_nakked_after_the_delay(self):
        self.receiver.entry(header(1), area(0))
        self.receiver.entry(header(4), area(40))
        self.clock.advance(0.011)
        naks = [b for b in self.back if b["entry_type"] == EntryType.NAK]
        self.assertEqual(len(naks), 1)
        self.assertEqual(parse_nak_ranges(naks[0]["body"]), [(2, 3)])

    def test_failed_apply_is_retried_in_order(self):
        self.receiver.entry(header(1), area(0))
        self.receiver.entry(header(2), area(10))
        self.target.calls[0][1].errback(RuntimeError("link down"))
        self.assertEqual(self.receiver.stats.apply_errors, 1)
        self.clock.advance(self.receiver.config.retry_delay)
        self.assertEqual([lba for lba, _ in self.target.calls][-1:], [0])

    def unusable_receiver(self) -> list:
        stopped: list = []
        self.receiver.on_unusable = lambda group, seq, why: stopped.append((group, seq, why))
        return stopped

    def test_an_unusable_area_is_asked_for_again_and_a_good_copy_goes_on(self):
        stopped = self.unusable_receiver()
        bad = area(20)[:-100]                          # FCP_DATA cut short: does not parse
        self.receiver.entry(header(1), area(10))
        self.receiver.entry(header(2), bad)
        naks = [b for b in self.back if b["entry_type"] == EntryType.NAK]
        self.assertEqual(parse_nak_ranges(naks[0]["body"]), [(2, 2)])   # at once
        self.assertEqual(self.receiver.stats.bad_areas, 1)
        self.receiver.entry(header(3), area(30))
        self.receiver.entry(header(2), area(20))       # the retransmission is good
        self.assertEqual([lba for lba, _ in self.target.calls], [10, 20, 30])
        self.assertEqual(stopped, [])

    def test_the_same_unusable_area_twice_stops_the_group_instead_of_wedging_it(self):
        stopped = self.unusable_receiver()
        bad = area(20)[:-100]
        self.receiver.entry(header(1), area(10))
        self.receiver.entry(header(2), bad)
        self.receiver.entry(header(3), area(30))
        self.receiver.entry(header(2), bad)
        self.assertEqual([(g, s) for g, s, _ in stopped], [(7, 2)])
        self.assertIn("RIO area of sequence 2 unusable in 2 copies", stopped[0][2])
        self.assertEqual(self.receiver.describe()["closed"], True)
        self.assertIn("unusable in 2 copies", self.receiver.describe()["unusable"])
        self.receiver.entry(header(2), bad)            # once: no second report
        self.assertEqual(len(stopped), 1)
        self.assertEqual([lba for lba, _ in self.target.calls], [10])
        # the source edge's failure notice (RESTART) opens the group again
        self.receiver.entry(header(5, EntryType.CTRL, EntryFlag.RESTART), control_area())
        self.assertIsNone(self.receiver.unusable)

    def test_a_refusal_retrying_cannot_change_stops_the_group(self):
        from rcn.pairstate import ASC_NO_PAIR, refusal
        stopped = self.unusable_receiver()
        self.receiver.entry(header(1), area(0))
        self.receiver.entry(header(2), area(10))
        self.target.calls[0][1].callback(refusal(ASC_NO_PAIR))
        self.assertEqual([(g, s) for g, s, _ in stopped], [(7, 1)])
        self.assertIn("the target refused sequence 1", stopped[0][2])
        self.assertIn("no such pair", stopped[0][2])
        calls = len(self.target.calls)
        self.clock.advance(10 * self.receiver.config.retry_delay)
        self.assertEqual(len(self.target.calls), calls)           # no retry storm
        self.assertEqual(self.receiver.stats.refused, 1)

    def test_a_refusal_that_may_pass_is_retried(self):
        from rcn.rio.fcp import SenseKey, check_condition
        stopped = self.unusable_receiver()
        self.receiver.entry(header(1), area(0))
        self.target.calls[0][1].callback(check_condition(SenseKey.NOT_READY, (0x04, 0x00)))
        self.clock.advance(self.receiver.config.retry_delay)
        self.assertEqual([lba for lba, _ in self.target.calls], [0, 0])
        self.assertEqual(stopped, [])

    def test_restart_from_a_persisted_counter_skips_applied_entries(self):
        receiver = GroupReceiver(7, clock=self.clock, config=ReceiverConfig(window=16), applied=5,
                                 target_for=lambda h: self.target,
                                 record_applied=lambda g, v: succeed(None),
                                 send_back=lambda h, d: None)
        receiver.entry(header(5), area(50))
        receiver.entry(header(6), area(60))
        self.assertEqual([lba for lba, _ in self.target.calls], [60])


class RestartAndCloseTests(TestCase):
    """A RESTART CTRL voids the holes failure Suspend left; close() stops the group."""

    def setUp(self):
        self.clock = Clock()
        self.applied: list[tuple[str, int]] = []
        self.records: list[int] = []
        self.back: list[dict] = []
        receiver_self = self

        class Target:
            def execute(self, command):
                what = "ctrl" if command.cdb[0] == fcp.Opcode.RCN_CONTROL else "wr"
                receiver_self.applied.append((what, command.parsed.get("lba", -1)))
                return succeed(ScsiResult())

        def record(group, value):
            self.records.append(value)
            return succeed(None)

        def send_back(hdr, datagrams):
            for d in datagrams:
                entry = parse_datagram(d)
                self.back.append(entry.header._asdict())
        self.receiver = GroupReceiver(7, clock=self.clock, config=ReceiverConfig(window=16),
                                      applied=0, target_for=lambda h: Target(),
                                      record_applied=record, send_back=send_back)

    def test_restart_voids_the_holes_and_what_waits_behind_them(self):
        r = self.receiver
        r.entry(header(1), area(10))
        r.entry(header(3), area(30))           # 2 never comes: source dropped 2..5
        r.entry(header(5), area(50))
        r.entry(header(6, EntryType.CTRL, EntryFlag.RESTART), control_area())
        r.entry(header(7), area(70))
        self.assertEqual(self.applied, [("wr", 10), ("ctrl", -1), ("wr", 70)])
        self.assertEqual((r.applied, r.durable), (7, 7))
        self.assertEqual(self.records[-1], 7)
        self.assertEqual(r.stats.voided, 2)
        ctrl_ok = [b for b in self.back if b["entry_type"] == EntryType.CTRL_OK]
        self.assertEqual([b["sequence"] for b in ctrl_ok], [6])
        # a late copy of a voided entry is a duplicate, never applied
        r.entry(header(4), area(40))
        self.assertNotIn(("wr", 40), self.applied)

    def test_restart_without_holes_changes_nothing(self):
        r = self.receiver
        r.entry(header(1), area(10))
        r.entry(header(2, EntryType.CTRL, EntryFlag.RESTART), control_area())
        self.assertEqual(self.applied, [("wr", 10), ("ctrl", -1)])
        self.assertEqual(r.stats.voided, 0)

    def test_close_stops_the_group_and_reports_what_is_missing(self):
        r = self.receiver
        for seq in (1, 2, 4, 5):
            r.entry(header(seq), area(seq * 10))
        r.entry(header(9), area(90))
        report = r.close()
        self.assertEqual(report, {"applied": 2, "received_max": 9, "discarded": 3,
                                  "known_missing": 4})
        r.entry(header(3), area(30))           # too late: the target is the host's now
        self.assertEqual(self.applied, [("wr", 10), ("wr", 20)])
        self.assertEqual(r.stats.after_close, 1)
        # a RESTART (resync) opens it again
        r.entry(header(12, EntryType.CTRL, EntryFlag.RESTART), control_area())
        self.assertEqual(self.applied[-1], ("ctrl", -1))
        self.assertEqual(r.applied, 12)

    def test_residual_counts_without_closing(self):
        r = self.receiver
        for seq in (1, 2, 5):
            r.entry(header(seq), area(seq * 10))
        self.assertEqual(r.residual(), {"applied": 2, "received_max": 5, "discarded": 0,
                                        "known_missing": 2})
        r.entry(header(3), area(30))
        self.assertEqual(self.applied[-1], ("wr", 30))


class SmallDatagramNakTests(TestCase):
    """With the smallest ``max_datagram`` a NAK of many gaps does not fit one datagram:
    it goes as several whole NAKs, never as segments."""

    def test_many_gaps_go_as_several_naks_each_one_datagram(self):
        from rcn.edge.receiver import nak_ranges_per_datagram
        from rcn.logxfer.seal import GroupSeal
        from tests.support import key_ring
        seal = GroupSeal(key_ring(groups=[7]))
        sent: list[bytes] = []
        clock, target = Clock(), FakeTarget()
        receiver = GroupReceiver(
            7, clock=clock, config=ReceiverConfig(window=1024, nak_delay=0.01,
                                                  max_nak_ranges=64),
            applied=0, target_for=lambda h: target, record_applied=lambda g, v: Deferred(),
            send_back=lambda h, datagrams: sent.extend(datagrams), max_datagram_body=512,
            seal=seal)
        for seq in range(2, 200, 2):                 # 1, 3, 5, ... missing: 64+ gaps
            receiver.entry(header(seq), area(seq))
        clock.advance(0.011)
        per_nak = nak_ranges_per_datagram(512)
        self.assertEqual(per_nak, 29)
        self.assertEqual(len(sent), 3)                # 64 ranges: 29 + 29 + 6
        ranges = []
        for datagram in sent:
            entry = parse_datagram(datagram)
            self.assertEqual((entry.header.entry_type, entry.header.segment_count),
                             (EntryType.NAK, 1))
            self.assertLessEqual(len(entry.payload), 512)
            ranges += parse_nak_ranges(seal.open(entry.header, entry.payload))
        self.assertEqual(ranges, [(s, s) for s in range(1, 128, 2)])
        self.assertEqual(receiver.stats.naks_sent, 3)

    def test_one_range_fits_whatever_the_datagram(self):
        from rcn.edge.receiver import nak_ranges_per_datagram
        self.assertEqual(nak_ranges_per_datagram(0), 1)
        self.assertEqual(nak_ranges_per_datagram(65000 - 88), (65000 - 88 - 28 - 8) // 16)
