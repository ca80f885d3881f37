"""EdgeDevice, source side: WR and CTRL entries to the log and the sender; answers delete them.
Start-up: the pair file is read by open(); the table of who takes each entry."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.frames.logentry import (SEALABLE_TYPES, EntryFlag, EntryType, LogHeader, build_entry,
                                      build_keepalive, build_nak, parse_datagram)
from rcn.edge.applystate import ApplyState
from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
from rcn.edge.logstore import LogStore
from rcn.edge.pairs import EdgePairs, PairRow
from rcn.logxfer.rioarea import response_area
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.pairstate import PairState
from rcn.rio.fcp import ScsiCommand, ScsiResult, ScsiStatus, build_write16_cdb

A, B = 0x500A098000000001, 0x500A098000000002
ME, CORE, FAR = Address("10.0.0.1", 1), Address("10.0.0.2", 1), Address("10.0.0.3", 1)
PAIR = PairEntry(A, 0, B, 4, 7)


def write_command(lba: int) -> ScsiCommand:
    cdb = build_write16_cdb(lba, 1)
    return ScsiCommand(0x010100, A, 0x010200, B, 4, cdb, fcp.parse_cdb(cdb),
                       fcp.TaskAttribute.ORDERED, bytes(512), 0, lba)


class SourceEdgeTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.sent: list[tuple[LogHeader, Address]] = []
        store = LogStore(None, mode="memory")
        store.open()
        state = ApplyState(None)
        state.open()
        settings = EdgeSettings(me=ME, pairs=[PAIR],
                                routes=RouteTable([Route(A, B, (ME, CORE, FAR))]))
        self.edge = EdgeDevice(self.clock, settings, store, state,
                               lambda d, addr: self.sent.append((parse_datagram(d).header, addr)))

    def answer(self, entry_type, sequence: int, flags: int = 0, result=None) -> None:
        data = build_entry(entry_type, response_area(0, 0, 0, 0, result or ScsiResult()),
                           group_id=7, sequence=sequence, source_wwn=A, target_wwn=B,
                           flags=flags)
        self.edge.entry_received(parse_datagram(data), data, CORE)

    def test_write_is_logged_answered_and_sent_to_the_next_hop(self):
        result = self.successResultOf(self.edge.rio_command(write_command(8), B))
        self.assertTrue(result.good)
        self.clock.advance(0)                    # first sends leave at the end of the turn
        header, address = self.sent[0]
        self.assertEqual(address, CORE)
        self.assertEqual((header.entry_type, header.group_id, header.sequence,
                          header.target_lun, header.source_wwn), (EntryType.WR, 7, 1, 4, A))
        self.assertEqual(self.edge.log_store.retained(7), [1])

    def test_write_to_a_lun_without_a_pair_is_refused(self):
        command = write_command(8)
        command.lun = 5
        result = self.edge.rio_command(command, B)
        self.assertEqual(result.status, ScsiStatus.CHECK_CONDITION)
        self.assertEqual(self.sent, [])

    def test_cumulative_wrok_deletes_every_write_up_to_it_but_not_a_control(self):
        for lba in (1, 2):
            self.edge.rio_command(write_command(lba), B)
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, 7, 0, 0)
        control = self.edge.source_side.control(PAIR, 7, cdb)               # sequence 3
        self.edge.rio_command(write_command(4), B)               # sequence 4
        self.answer(EntryType.WROK, 4, EntryFlag.CUMULATIVE)
        self.assertEqual(self.edge.log_store.retained(7), [3])
        self.assertNoResult(control)
        self.answer(EntryType.CTRL_OK, 3)
        self.assertTrue(self.successResultOf(control).good)
        self.assertEqual(self.edge.log_store.retained(7), [])
        self.assertEqual(len(self.edge.sender.outstanding), 0)

    def test_keepalive_is_echoed_and_a_malformed_one_counted(self):
        probe = build_keepalive(5, 123, target_wwn=0)
        self.edge.entry_received(parse_datagram(probe), probe, CORE)
        self.assertEqual([(h.entry_type, a) for h, a in self.sent], [(EntryType.KEEPALIVE, CORE)])
        bad = build_entry(EntryType.KEEPALIVE, b"short")
        self.edge.entry_received(parse_datagram(bad), bad, CORE)
        self.assertEqual(self.edge.drops.by_reason, {"malformed": 1})
        self.assertEqual(len(self.sent), 1)

    def test_single_wrok_deletes_only_its_entry(self):
        for lba in (1, 2):
            self.edge.rio_command(write_command(lba), B)
        self.answer(EntryType.WROK, 2)
        self.assertEqual(self.edge.log_store.retained(7), [1])

    def test_cumulative_wrok_beyond_what_was_sent_is_refused_without_scanning(self):
        for lba in (1, 2):
            self.edge.rio_command(write_command(lba), B)
        holds = self.edge.sender.holds
        calls = []

        def counting(group, sequence):
            calls.append(sequence)
            if len(calls) > 1000:
                raise AssertionError("the WROK scanned more than 1000 sequences")
            return holds(group, sequence)
        self.edge.sender.holds = counting
        self.answer(EntryType.WROK, 2**62, EntryFlag.CUMULATIVE)
        self.assertEqual(self.edge.drops.by_reason, {"ack_beyond_sent": 1})
        self.assertEqual(self.edge.log_store.retained(7), [1, 2])
        self.answer(EntryType.WROK, 2, EntryFlag.CUMULATIVE)     # still answering
        self.assertEqual(self.edge.log_store.retained(7), [])

    def test_single_wrok_and_ctrl_ok_beyond_what_was_sent_are_refused(self):
        self.edge.rio_command(write_command(1), B)
        self.answer(EntryType.WROK, 2)
        self.answer(EntryType.CTRL_OK, 5)
        self.assertEqual(self.edge.drops.by_reason, {"ack_beyond_sent": 2})
        self.assertEqual(self.edge.log_store.retained(7), [1])
        self.assertEqual(self.edge.counters["wroks"] + self.edge.counters["ctrl_oks"], 0)

    def test_nak_beyond_what_was_sent_is_refused(self):
        for lba in (1, 2):
            self.edge.rio_command(write_command(lba), B)
        self.clock.advance(0)
        sent = len(self.sent)
        for ranges in ([(1, 1), (5, 10**8)], [(2, 2)]):
            nak = build_nak(ranges, group_id=7, sequence=1, source_wwn=A, target_wwn=B)
            self.edge.entry_received(parse_datagram(nak), nak, CORE)
        self.assertEqual(self.edge.drops.by_reason, {"nak_beyond_sent": 1})
        self.assertEqual([h.sequence for h, _ in self.sent[sent:]], [2])


class StartUpTests(TestCase):
    """Building an edge touches no file (twistd's --umask and --uid apply from
    startService on); open() reads the pair file."""

    def test_the_pair_file_is_read_by_open_not_by_the_constructor(self):
        path = self.mktemp()
        kept = EdgePairs("B", path)
        kept.add(PairRow(PAIR, "source", PairState.FAILURE_SUSPEND))
        kept.restart_pending[7] = 5
        kept.save()
        store = LogStore(None, mode="memory")
        store.open()
        settings = EdgeSettings(me=ME, pairs=[PAIR],
                                routes=RouteTable([Route(A, B, (ME, CORE, FAR))]))
        edge = EdgeDevice(Clock(), settings, store, ApplyState(None), lambda d, addr: None,
                          pairs_path=path)
        self.assertIs(edge.pairs.find(A, B, 4).state, PairState.DUPLEX)     # as configured
        self.assertFalse(edge.pairs.restarted)
        edge.open()
        self.assertIs(edge.pairs.find(A, B, 4).state, PairState.FAILURE_SUSPEND)
        self.assertIs(edge.controls.restart_pending, edge.pairs.restart_pending)
        edge.controls._mark_restart(8)              # marks go on past the file's
        self.assertEqual(edge.pairs.restart_pending, {7: 5, 8: 6})

    def test_every_entry_that_can_end_here_has_one_handler(self):
        edge = EdgeDevice(Clock(), EdgeSettings(me=ME), LogStore(None, mode="memory"),
                          ApplyState(None), lambda d, addr: None)
        self.assertEqual(set(edge.handlers), {
            (EntryType.WR, False), (EntryType.CTRL, False), (EntryType.CTRL, True),
            (EntryType.WROK, True), (EntryType.CTRL_OK, True), (EntryType.NAK, True)})
        # each is opened under the group key before its handler sees it
        self.assertLessEqual({entry_type for entry_type, _ in edge.handlers}, SEALABLE_TYPES)


class GroupKeyScopeTests(TestCase):
    """A group's key opens entries for that group's pairs only: an edge holding group 7's
    key cannot write into a pair of group 8 at a target edge serving both."""

    def setUp(self):
        from rcn.logxfer.seal import GroupSeal
        from tests.support import key_ring
        self.ring = key_ring(groups=[7, 8])
        store = LogStore(None, mode="memory")
        store.open()
        state = ApplyState(None)
        state.open()
        routes = RouteTable([Route(A, B, (FAR, CORE, ME))])
        self.applied = []
        self.edge = EdgeDevice(Clock(), EdgeSettings(me=ME, routes=routes), store, state,
                               lambda d, addr: None, lambda header: None,
                               seal=GroupSeal(self.ring))
        for lun, group in ((4, 7), (5, 8)):
            self.edge.pairs.add(PairRow(PairEntry(A, 0, B, lun, group), "target",
                                        PairState.DUPLEX))

    def wr(self, group: int, lun: int) -> bytes:
        from rcn.logxfer.rioarea import command_area
        from rcn.logxfer.seal import GroupSeal
        cdb = build_write16_cdb(0, 1)
        datagram, = GroupSeal(self.ring).datagrams(
            EntryType.WR, command_area(0x010100, 0x010200, 1, lun, cdb, bytes(512)), 65000,
            group_id=group, sequence=1, source_wwn=A, target_wwn=B, target_lun=lun)
        return datagram

    def test_a_wr_sealed_under_one_groups_key_for_another_groups_pair_is_dropped(self):
        for group, lun in ((7, 5), (8, 4)):
            data = self.wr(group, lun)
            self.edge.entry_received(parse_datagram(data), data, CORE)
        self.assertEqual(self.edge.drops.by_reason, {"wrong_group": 2})
        self.assertEqual(self.edge.target_side.receivers, {})
        data = self.wr(7, 4)                              # its own pair: taken
        self.edge.entry_received(parse_datagram(data), data, CORE)
        self.assertEqual(self.edge.drops.by_reason, {"wrong_group": 2})
        self.assertEqual(list(self.edge.target_side.receivers), [7])


class SegmentedAnswerTests(TestCase):
    """Every entry type that ends at an edge has its segments joined before it is opened:
    a NAK split by a peer's small ``max_datagram`` reaches the source side whole."""

    def setUp(self):
        from rcn.logxfer.seal import GroupSeal
        from tests.support import key_ring
        self.ring = key_ring(groups=[7])
        store = LogStore(None, mode="memory")
        store.open()
        state = ApplyState(None)
        state.open()
        self.edge = EdgeDevice(Clock(), EdgeSettings(
            me=ME, routes=RouteTable([Route(A, B, (ME, CORE, FAR))])), store, state,
            lambda d, addr: None, seal=GroupSeal(self.ring))
        self.edge.pairs.add(PairRow(PAIR, "source", PairState.DUPLEX))
        self.taken = []
        self.edge.handlers[(EntryType.NAK, True)] = \
            lambda header, body, sender: self.taken.append(body)

    def test_a_split_nak_is_joined_and_opened(self):
        from datapath.frames.logentry import nak_body
        from rcn.logxfer.seal import GroupSeal
        body = nak_body([(s, s) for s in range(1, 128, 2)])         # 64 ranges, 1032 bytes
        datagrams = GroupSeal(self.ring).datagrams(
            EntryType.NAK, body, 400, group_id=7, sequence=1, source_wwn=A, target_wwn=B,
            target_lun=4)
        self.assertEqual(len(datagrams), 3)
        for datagram in reversed(datagrams):
            self.edge.entry_received(parse_datagram(datagram), datagram, CORE)
        self.assertEqual(self.taken, [body])
        self.assertEqual(self.edge.drops.by_reason, {})

    def test_two_sealings_of_one_answer_interleaved_open_once_without_a_drop(self):
        from rcn.logxfer.seal import GroupSeal
        taken = []
        self.edge.handlers[(EntryType.CTRL_OK, True)] = \
            lambda header, body, sender: taken.append(body)
        area = response_area(0, 0, 0, 0, ScsiResult(data_in=bytes(range(256)) * 4))
        seal = GroupSeal(self.ring)
        a, b = (seal.datagrams(EntryType.CTRL_OK, area, 400, flags=EntryFlag.RESENT_ACK,
                               group_id=7, sequence=1, source_wwn=A, target_wwn=B,
                               target_lun=4) for _ in range(2))
        self.assertEqual(len(a), 3)
        for datagram in (a[0], b[1], b[0], b[2], a[1], a[2]):     # b0 b1 b2 opens first
            self.edge.entry_received(parse_datagram(datagram), datagram, CORE)
        self.assertEqual(taken, [area])
        self.assertEqual(self.edge.drops.by_reason, {})
