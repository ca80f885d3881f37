"""Sender: window per path, retransmission timeout from measured round trips, NAKs, token
buckets, and work per input bounded by what is held."""

from __future__ import annotations

import random
from collections import OrderedDict, deque

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from datapath.frames.logentry import (EntryFlag, EntryType, build_entry, parse_batch,
                                      parse_datagram)
from rcn.logxfer.routes import Address
from rcn.logxfer.sender import RttEstimator, Sender, TokenBucket, mark_retransmit

HOP = Address("10.0.0.2", 47001)
OTHER = Address("10.0.0.3", 47001)


def datagram(sequence: int, size: int = 1000) -> bytes:
    return build_entry(EntryType.WR, bytes(size), group_id=7, sequence=sequence)


class SenderTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.sent: list[tuple[int, Address, int]] = []

        def transmit(data, address):
            entry = parse_datagram(data)
            self.sent.append((entry.header.sequence, address, entry.header.flags))
        self.transmit = transmit

    def sender(self, **kw) -> Sender:
        return Sender(self.clock, self.transmit, **kw)

    def test_window_holds_entries_until_acknowledged(self):
        s = self.sender(window_bytes=2500)
        for seq in (1, 2, 3):
            s.submit(7, seq, [datagram(seq)], HOP)
        self.assertEqual([x[0] for x in self.sent], [1, 2])
        self.assertEqual(s.path_stats()[str(HOP)]["queued"], 1)
        s.acknowledged(7, 1)
        self.assertEqual([x[0] for x in self.sent], [1, 2, 3])

    def test_prepare_may_replace_what_goes_out_before_every_send(self):
        # the source edge's hook (re-sealing under a rotated key): called before the first
        # send, batched or not, and before each retransmission; what it puts in goes out
        for batch_bytes in (0, 8000):
            self.sent.clear()
            s = self.sender(rto=0.1, rto_max=0.4, tick=0.01, batch_bytes=batch_bytes)
            seen = []

            def prepare(item):
                seen.append(item.sequence)
                item.datagrams = [datagram(item.sequence + 100)]
            s.prepare = prepare
            s.submit(7, 1, [datagram(1)], HOP)
            self.clock.advance(0)
            self.clock.advance(0.15)
            self.assertEqual(seen, [1, 1], batch_bytes)
            self.assertEqual([x[0] for x in self.sent], [101, 101], batch_bytes)
            self.assertTrue(self.sent[-1][2] & EntryFlag.RETRANSMIT)
            s.acknowledged(7, 1)

    def test_entry_larger_than_window_goes_alone(self):
        s = self.sender(window_bytes=500)
        s.submit(7, 1, [datagram(1)], HOP)
        s.submit(7, 2, [datagram(2)], HOP)
        self.assertEqual([x[0] for x in self.sent], [1])

    def test_paths_have_their_own_windows(self):
        s = self.sender(window_bytes=1500)
        s.submit(7, 1, [datagram(1)], HOP)
        s.submit(8, 1, [datagram(1)], OTHER)
        self.assertEqual([x[1] for x in self.sent], [HOP, OTHER])

    def test_retransmits_with_flag_and_backoff(self):
        s = self.sender(rto=0.1, rto_max=0.4, tick=0.01)
        s.submit(7, 1, [datagram(1)], HOP)
        times = []
        for _ in range(120):
            self.clock.advance(0.01)
            if len(self.sent) > len(times) + 1:
                times.append(round(self.clock.seconds(), 2))
        # timeouts 0.1, 0.2, 0.4, 0.4 (capped), each noticed by the next 0.01 s sweep
        self.assertEqual(len(times), 4)
        self.assertTrue(0.1 <= times[0] <= 0.11, times)
        self.assertEqual([round(b - a, 2) for a, b in zip(times, times[1:])], [0.2, 0.4, 0.4])
        self.assertTrue(all(flags & EntryFlag.RETRANSMIT for _, _, flags in self.sent[1:]))
        self.assertEqual(s.counters["retransmits"], 4)

    def test_acknowledged_entry_is_not_retransmitted(self):
        s = self.sender(rto=0.1, tick=0.01)
        s.submit(7, 1, [datagram(1)], HOP)
        self.assertIsNotNone(s.acknowledged(7, 1))
        self.clock.advance(1.0)
        self.assertEqual(len(self.sent), 1)
        self.assertIsNone(s.acknowledged(7, 1))
        self.assertEqual(s.counters["unknown_acks"], 1)

    def test_nak_resends_at_once_and_holds_off_repeats(self):
        s = self.sender(rto=10, rto_max=10, nak_holdoff=0.05)
        for seq in range(1, 6):
            s.submit(7, seq, [datagram(seq)], HOP)
        self.assertEqual(s.nak(7, [(2, 3), (5, 9)]), 3)
        self.assertEqual([x[0] for x in self.sent[5:]], [2, 3, 5])
        self.assertEqual(s.nak(7, [(2, 3)]), 0)
        self.clock.advance(0.06)
        self.assertEqual(s.nak(7, [(2, 3)]), 2)

    def test_token_bucket_paces_a_customer(self):
        buckets = {"acme": TokenBucket(self.clock, rate=10_000, burst=2_000)}
        s = self.sender(buckets=buckets)
        for seq in range(1, 6):
            s.submit(7, seq, [datagram(seq, 912)], HOP, customer="acme")   # 1000-byte datagrams
        self.assertEqual(len(self.sent), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sent), 3)
        self.clock.advance(0.2)
        self.assertEqual(len(self.sent), 5)
        self.assertGreater(s.counters["throttled"], 0)

    def test_token_bucket_lets_a_big_datagram_through_when_full(self):
        bucket = TokenBucket(self.clock, rate=1000, burst=100)
        self.assertEqual(bucket.take(5000), 0.0)
        self.assertGreater(bucket.take(10), 0.0)

    def test_entries_staged_in_one_turn_leave_as_batches(self):
        sent = []
        s = Sender(self.clock, lambda data, address: sent.append(data), batch_bytes=4000)
        for seq in range(1, 6):
            s.submit(7, seq, [datagram(seq)], HOP)        # 1088-byte datagrams
        self.assertEqual(sent, [])
        self.clock.advance(0)
        # 96 + 3 x 1088 fits 4000 bytes, a fourth would not
        inner = []
        for data in sent:
            outer, spans = parse_batch(data)
            self.assertEqual(outer.header.entry_type, EntryType.BATCH)
            inner.append([parse_datagram(data[at:at + n]).header.sequence for at, n in spans])
        self.assertEqual(inner, [[1, 2, 3], [4, 5]])
        self.assertEqual((s.counters["batches_sent"], s.counters["datagrams_sent"],
                          s.counters["entries_sent"]), (2, 2, 5))

    def test_a_lone_entry_is_sent_as_itself(self):
        sent = []
        s = Sender(self.clock, lambda data, address: sent.append(data), batch_bytes=60000)
        s.submit(7, 1, [datagram(1)], HOP)
        self.clock.advance(0)
        self.assertEqual(sent, [datagram(1)])

    def test_gives_up_a_group_once_after_failure_timeout(self):
        failures = []
        s = self.sender(rto=0.1, rto_max=0.2, tick=0.01, failure_timeout=1.0,
                        on_failure=lambda group, why: failures.append((group, why)))
        s.submit(7, 1, [datagram(1)], HOP)
        s.submit(7, 2, [datagram(2)], HOP)
        s.submit(8, 1, [datagram(1)], HOP)
        s.acknowledged(8, 1)
        self.clock.pump([0.01] * 95)
        self.assertEqual(failures, [])
        self.clock.pump([0.01] * 20)
        self.assertEqual([g for g, _ in failures], [7])
        self.assertIn("sequence 1 unacknowledged for 1.", failures[0][1])
        self.clock.pump([0.01] * 300)          # still retransmitting, not called again
        self.assertEqual(len(failures), 1)
        self.assertEqual(s.counters["gave_up"], 1)
        before = len(self.sent)
        self.clock.advance(0.3)
        self.assertGreater(len(self.sent), before)
        s.recovered(7)
        self.clock.pump([0.01] * 30)
        self.assertEqual(len(failures), 2)

    def test_a_group_that_keeps_advancing_is_not_given_up_however_deep_its_queue(self):
        failures = []
        s = self.sender(rto=0.1, rto_max=0.2, tick=0.01, failure_timeout=1.0,
                        on_failure=lambda group, why: failures.append((group, why)))
        for seq in range(1, 41):
            s.submit(7, seq, [datagram(seq)], HOP)
        for seq in range(1, 31):             # one applied every 0.1 s: 3 s of queue
            self.clock.pump([0.01] * 10)
            s.acknowledged(7, seq)
        self.assertEqual(failures, [])
        self.clock.pump([0.01] * 150)        # then nothing more for over failure_timeout
        self.assertEqual([g for g, _ in failures], [7])
        self.assertRegex(failures[0][1], r"unacknowledged for 4\.\d s .* the group without "
                                         r"progress for 1\.\d s")

    def test_cancel_stops_an_entry_without_counting_an_ack(self):
        s = self.sender(rto=0.1, tick=0.01, window_bytes=1500)
        s.submit(7, 1, [datagram(1)], HOP)
        s.submit(7, 2, [datagram(2)], HOP)       # queued behind the window
        self.assertEqual(s.entries_of(7), [1, 2])
        self.assertTrue(s.cancel(7, 1))
        self.assertTrue(s.cancel(7, 2))
        self.assertFalse(s.cancel(7, 3))
        self.assertEqual(s.entries_of(7), [])
        self.assertEqual((s.counters["acknowledged"], s.counters["cancelled"],
                          s.counters["unknown_acks"]), (0, 2, 0))
        sent = len(self.sent)
        self.clock.pump([0.01] * 50)
        self.assertEqual(len(self.sent), sent)

    def test_submit_twice_is_an_error(self):
        s = self.sender()
        s.submit(7, 1, [datagram(1)], HOP)
        self.assertRaises(ValueError, s.submit, 7, 1, [datagram(1)], HOP)

    def test_mark_retransmit_keeps_the_crc_good(self):
        marked = mark_retransmit(datagram(4))
        entry = parse_datagram(marked)
        self.assertTrue(entry.crc_ok)
        self.assertEqual(entry.header.flags, EntryFlag.RETRANSMIT)
        self.assertIs(mark_retransmit(marked), marked)


class _CountingDict(OrderedDict):
    """An ``outstanding`` table that fails a test looking up more than ``budget`` keys."""

    def __init__(self, budget: int):
        super().__init__()
        self.budget = budget
        self.lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        if self.lookups > self.budget:
            raise AssertionError(f"more than {self.budget} lookups for one input")
        return super().get(key, default)


class BoundedWorkTests(TestCase):
    """One datagram's worth of work is bounded by what the sender holds."""

    def setUp(self):
        self.clock = Clock()
        self.sent = []
        self.s = Sender(self.clock, lambda data, address: self.sent.append(data),
                        rto=10, rto_max=10)
        self.s.outstanding = _CountingDict(budget=10_000)
        for seq in range(1, 101):
            self.s.submit(7, seq, [datagram(seq)], HOP)

    def test_nak_of_4000_huge_ranges_looks_at_no_more_than_the_limit(self):
        ranges = [(1 + i, 10**8 + i) for i in range(4000)]        # overlapping, 10^8 each
        self.assertEqual(self.s.nak(7, ranges), 100)              # each held entry once
        self.assertLessEqual(self.s.outstanding.lookups, 4096)
        self.assertEqual(len(self.sent), 200)

    def test_nak_resends_only_held_sequences_inside_the_ranges(self):
        self.s.acknowledge_through(7, 50)
        self.assertEqual(self.s.nak(7, [(40, 55), (99, 10**18)]), 7)
        resent = [parse_datagram(d).header.sequence for d in self.sent[100:]]
        self.assertEqual(resent, [51, 52, 53, 54, 55, 99, 100])

    def test_cumulative_acknowledgement_of_a_huge_sequence_costs_what_is_held(self):
        done = self.s.acknowledge_through(7, 2**62)
        self.assertEqual([item.sequence for item in done], list(range(1, 101)))
        self.assertEqual((self.s.entries_of(7), self.s.counters["acknowledged"]), ([], 100))
        self.assertEqual(self.s.acknowledge_through(7, 2**62), [])

    def test_cumulative_acknowledgement_keeps_what_keep_names(self):
        self.s.acknowledged(7, 3)
        done = self.s.acknowledge_through(7, 10, keep=lambda seq: seq == 5)
        self.assertEqual([item.sequence for item in done], [1, 2, 4, 6, 7, 8, 9, 10])
        self.assertEqual(self.s.entries_of(7)[:2], [5, 11])

    def test_highest_is_the_highest_sequence_submitted(self):
        self.assertEqual((self.s.highest(7), self.s.highest(8)), (100, 0))
        self.s.acknowledge_through(7, 100)
        self.assertEqual(self.s.highest(7), 100)

    def test_index_is_compacted_after_single_acknowledgements(self):
        for seq in range(1, 101):
            self.s.acknowledged(7, seq)
        self.assertNotIn(7, self.s._index)
        self.s.submit(7, 101, [datagram(101)], HOP)
        self.assertEqual(self.s.entries_of(7), [101])


class PathModel:
    """The network and the target edge as one sender sees them, on a task.Clock.

    Datagrams take ``delay`` seconds each way (``lose(sequence, attempt)`` drops one on
    the way out). The target keeps what arrives, applies the group in order at ``rate``
    entries per second, answers each step that applied something with one cumulative
    WROK, and NAKs the gaps in what it holds (after 20 ms, then every 200 ms while there
    is one), as rcn.edge.receiver does. :meth:`run` advances time in ``step`` second steps.
    """

    def __init__(self, clock, delay: float, rate: float, lose=None, step: float = 0.01):
        self.clock = clock
        self.delay = delay
        self.rate = rate
        self.lose = lose or (lambda sequence, attempt: False)
        self.step = step
        self.outbound: deque = deque()         # (arrival time, sequence)
        self.inbound: deque = deque()          # (arrival time, kind, value)
        self.held: set[int] = set()
        self.applied = 0
        self.credit = 0.0
        self.attempts: dict[int, int] = {}
        self.gap_since: float | None = None
        self.last_nak = float("-inf")
        self.sender: Sender | None = None
        self.submitting = 0.0

    def transmit(self, data, address) -> None:
        sequence = parse_datagram(data).header.sequence
        attempt = self.attempts[sequence] = self.attempts.get(sequence, 0) + 1
        if not self.lose(sequence, attempt):
            self.outbound.append((self.clock.seconds() + self.delay, sequence))

    def _tick(self) -> None:
        now = self.clock.seconds()
        while self.outbound and self.outbound[0][0] <= now:
            sequence = self.outbound.popleft()[1]
            if sequence > self.applied:
                self.held.add(sequence)
        self.credit = min(self.credit + self.rate * self.step, self.rate)
        before = self.applied
        while self.credit >= 1 and self.applied + 1 in self.held:
            self.held.discard(self.applied + 1)
            self.applied += 1
            self.credit -= 1
        if self.applied > before:
            self.inbound.append((now + self.delay, "wrok", self.applied))
        if self.held and self.applied + 1 not in self.held:
            if self.gap_since is None:
                self.gap_since = now
            if now - self.gap_since >= 0.02 and now - self.last_nak >= 0.2:
                self.last_nak = now
                ranges, expected = [], self.applied + 1
                for sequence in sorted(self.held):
                    if sequence > expected:
                        ranges.append((expected, sequence - 1))
                    expected = sequence + 1
                self.inbound.append((now + self.delay, "nak", ranges))
        else:
            self.gap_since = None
        while self.inbound and self.inbound[0][0] <= now:
            _, kind, value = self.inbound.popleft()
            if kind == "wrok":
                self.sender.acknowledge_through(7, value)
            else:
                self.sender.nak(7, value)

    def run(self, seconds: float, submit_rate: float = 0.0, size: int = 1000) -> None:
        for _ in range(round(seconds / self.step)):
            self.submitting += submit_rate * self.step
            while self.submitting >= 1:
                self.submitting -= 1
                sequence = self.sender.highest(7) + 1
                self.sender.submit(7, sequence, [datagram(sequence, size)], HOP)
            self.clock.advance(self.step)
            self._tick()


class RetransmissionTimeoutTests(TestCase):
    """RFC 6298 RTO from measured round trips; the target's progress restarts timers."""

    def setUp(self):
        self.clock = Clock()

    def path(self, delay, rate, lose=None, **kw) -> PathModel:
        model = PathModel(self.clock, delay, rate, lose)
        model.sender = Sender(self.clock, model.transmit, **kw)
        return model

    def test_slow_lossless_path_with_a_deep_queue_retransmits_under_one_percent(self):
        # 2,000 entries/s offered, 1,000/s applied: the window (2,500 entries of 1,088
        # bytes) fills and the target's queue holds 2.5 s of work
        model = self.path(0.005, 1000, window_bytes=2500 * 1088, rto=0.5, rto_max=5.0)
        model.run(10, submit_rate=2000)
        model.run(15)
        s = model.sender
        self.assertEqual((s.entries_of(7), model.applied), ([], 20000))
        self.assertLess(s.counters["retransmits"], 0.01 * s.counters["entries_sent"],
                        s.counters)
        self.assertGreater(s.paths[HOP].rtt.srtt, 2.0)           # RTT rose to seconds

    def test_lossy_path_recovers_by_nak_and_by_timeout(self):
        rng = random.Random(15)
        lost = {seq for seq in range(1, 4001) if rng.random() < 0.02}
        lost |= set(range(3996, 4001))                          # the tail: nothing to NAK
        model = self.path(0.005, 5000, lambda seq, attempt: attempt == 1 and seq in lost,
                          rto=0.2, rto_max=2.0)
        model.run(4, submit_rate=1000)
        self.assertEqual(model.sender.highest(7), 4000)
        model.run(5)
        s = model.sender
        self.assertEqual((s.entries_of(7), model.applied), ([], 4000))
        self.assertGreater(s.counters["nak_retransmits"], 0)
        self.assertGreater(s.counters["timeout_retransmits"], 0)
        self.assertLess(s.counters["retransmits"], 3 * len(lost), s.counters)

    def test_lost_tail_is_recovered_within_a_few_rtos_sending_each_entry_once_more(self):
        model = self.path(0.005, 5000, lambda seq, attempt: attempt == 1 and seq > 100,
                          rto=0.2, rto_max=2.0)
        model.run(0.5, submit_rate=400)                        # 200 entries, 101.. lost
        model.run(0.5)
        s = model.sender
        self.assertEqual((s.entries_of(7), model.applied), ([], 200))
        self.assertGreater(s.counters["timeout_retransmits"], 0)   # a probe began it
        self.assertEqual(s.counters["retransmits"], 100)

    def test_a_silent_target_costs_one_probe_per_backed_off_rto_not_a_window(self):
        sent = []
        s = Sender(self.clock, lambda data, address: sent.append(parse_datagram(data).header),
                   rto=0.5, rto_max=5.0)
        for seq in range(1, 101):
            s.submit(7, seq, [datagram(seq)], HOP)
        self.clock.pump([0.05] * 80)               # 4 s of silence: probes at 0.5, 1.5, 3.5
        probes = sent[100:]
        self.assertEqual([h.sequence for h in probes], [1, 1, 1])
        self.assertTrue(all(h.flags & EntryFlag.RETRANSMIT for h in probes))
        self.assertEqual(len(s.acknowledge_through(7, 100)), 100)   # the stall ends
        self.clock.pump([0.05] * 100)
        self.assertEqual(len(sent), 103)

    def test_rto_converges_to_the_measured_round_trip(self):
        model = self.path(1.0, 10000, rto=0.5, rto_max=10.0)     # 2 s round trip, no queue
        model.run(4, submit_rate=20)             # the first RTO (0.5 s) is too short...
        early = model.sender.counters["retransmits"]
        self.assertGreater(early, 0)
        model.run(60, submit_rate=20)
        rtt = model.sender.paths[HOP].rtt
        self.assertLess(abs(rtt.srtt - 2.0), 0.03)      # 2 s and the model's 10 ms steps
        self.assertLess(abs(rtt.rto - 2.0), 0.1)
        self.assertEqual(model.sender.counters["retransmits"], early)   # ...then it learned

    def test_rto_stays_at_its_floor_on_a_fast_path(self):
        model = self.path(0.001, 10000, rto=0.5, rto_max=10.0)
        model.run(2, submit_rate=100)
        rtt = model.sender.paths[HOP].rtt
        self.assertLess(rtt.srtt, 0.05)
        self.assertEqual(rtt.rto, 0.5)

    def test_karn_no_sample_from_a_retransmitted_entry(self):
        sent = []
        s = Sender(self.clock, lambda data, address: sent.append(data), rto=0.1, tick=0.01)
        s.submit(7, 1, [datagram(1)], HOP)
        self.clock.pump([0.01] * 15)
        self.assertEqual(len(sent), 2)
        s.acknowledged(7, 1)
        self.assertEqual((s.counters["rtt_samples"], s.paths[HOP].rtt.srtt), (0, None))
        s.submit(7, 2, [datagram(2)], HOP)
        self.clock.advance(0.03)
        s.acknowledged(7, 2)
        self.assertEqual((s.counters["rtt_samples"], s.paths[HOP].rtt.srtt), (1, 0.03))

    def test_rtt_estimator_follows_rfc_6298(self):
        rtt = RttEstimator(floor=0.2, ceiling=5.0, granularity=0.05)
        self.assertEqual((rtt.srtt, rtt.rto), (None, 0.2))
        rtt.sample(1.0)                        # SRTT = R, RTTVAR = R/2, RTO = R + 4 R/2
        self.assertEqual((rtt.srtt, rtt.rttvar, rtt.rto), (1.0, 0.5, 3.0))
        rtt.sample(2.0)                        # RTTVAR = 3/4 0.5 + 1/4 1; SRTT = 7/8 + 2/8
        self.assertEqual((rtt.rttvar, rtt.srtt), (0.625, 1.125))
        self.assertEqual(rtt.rto, 1.125 + 4 * 0.625)
        for _ in range(10):
            rtt.sample(10.0)
        self.assertEqual(rtt.rto, 5.0)         # clamped to the ceiling
