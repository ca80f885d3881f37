"""CoreRelay with a recording send and task.Clock: routing, TTL, drops, batch forwarding."""

from __future__ import annotations

import random

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames.logentry import (COUNT_HEADER, HEADER_SIZE, EntryFlag, EntryType, build_batch,
                                      build_entry, build_keepalive, build_nak, parse_batch,
                                      parse_datagram)
from rcn.core.relay import BatchPolicy, CoreRelay, crc_ok
from rcn.logxfer.protocol import Drops
from rcn.logxfer.routes import Address, Route, RouteTable

SRC = 0x500A098000000001
DST = 0x500A098000000002
THIRD = 0x500A098000000003
EDGE_A = Address("127.0.0.1", 47001)
CORE = Address("127.0.0.1", 47002)
CORE_2 = Address("127.0.0.1", 47012)
EDGE_B = Address("127.0.0.1", 47003)
ROUTES = RouteTable([Route(SRC, DST, (EDGE_A, CORE, EDGE_B)),
                     Route(THIRD, DST, (EDGE_A, CORE_2, CORE)),     # this core ends the path
                     Route(DST, THIRD, (CORE, EDGE_B))])             # and starts this one


def entry(entry_type=EntryType.WR, sequence=1, size=64, ttl=16, source=SRC, target=DST,
          **fields) -> bytes:
    body = bytes((sequence + i) & 0xFF for i in range(size))
    return build_entry(entry_type, body, group_id=7, sequence=sequence, ttl=ttl,
                       source_wwn=source, target_wwn=target, io_time_ns=1_700_000_000 + sequence,
                       target_lun=3, source_lun=4, **fields)


def leaving(data: bytes) -> bytes:
    """``data`` as a relay sends it on: ttl - 1, CRC32C recomputed."""
    parsed = parse_datagram(data, fast=True)
    fields = {k: v for k, v in parsed.header._asdict().items()
              if k not in ("magic", "entry_type", "rio_length", "crc32c", "reserved")}
    fields["ttl"] -= 1
    return build_entry(parsed.header.entry_type, parsed.payload, **fields)


def inner(batch: bytes) -> list[bytes]:
    _, spans = parse_batch(batch)
    return [batch[offset:offset + length] for offset, length in spans]


def sequences(datagrams: list[bytes]) -> list[int]:
    """The sequence numbers of every entry sent, batches opened."""
    out = []
    for data in datagrams:
        parsed = parse_datagram(data, fast=True)
        assert parsed.crc_ok, "a datagram left with a bad CRC32C"
        if parsed.header.entry_type == EntryType.BATCH:
            out += [parse_datagram(e, fast=True).header.sequence for e in inner(data)]
        else:
            out.append(parsed.header.sequence)
    return out


class RelayTestCase(SynchronousTestCase):
    policy = BatchPolicy(enabled=False)

    def setUp(self):
        self.clock = task.Clock()
        self.sent: list[tuple[bytes, Address]] = []
        self.drops = Drops("core-test")
        self.relay = CoreRelay(ROUTES, CORE, lambda data, to: self.sent.append((data, to)),
                               self.clock, batch=self.policy, drops=self.drops)

    def deliver(self, data: bytes, sender: Address = EDGE_A) -> None:
        parsed = parse_datagram(data, fast=True)
        self.assertTrue(parsed.crc_ok)          # what the protocol guarantees its handler
        self.relay.entry_received(parsed, data, sender)

    def sent_to(self, address: Address) -> list[bytes]:
        return [data for data, to in self.sent if to == address]


class ForwardingTests(RelayTestCase):
    def test_forward_goes_to_the_next_address_with_ttl_minus_one(self):
        data = entry(sequence=5)
        self.deliver(data)
        self.assertEqual(self.sent, [(leaving(data), EDGE_B)])
        header = parse_datagram(self.sent[0][0]).header
        self.assertEqual((header.ttl, header.sequence), (15, 5))
        self.assertTrue(parse_datagram(self.sent[0][0]).crc_ok)

    def test_debug_logs_a_line_per_entry_relayed(self):
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.deliver(entry(sequence=1))
        self.relay.debug = True
        self.deliver(entry(sequence=2))
        self.deliver(entry(EntryType.WROK, sequence=2), EDGE_B)
        self.relay.debug = False
        self.deliver(entry(sequence=3))
        lines = [e["entry"] for e in seen if "entry" in e and e.get("me") == str(CORE)]
        self.assertEqual(len(lines), 2)
        self.assertIn("WR group", lines[0])
        self.assertIn("sequence 2", lines[0])
        self.assertIn("WROK", lines[1])
        self.assertEqual(len(self.sent), 4)            # debugging changes nothing relayed

    def test_answers_go_backward(self):
        for entry_type in (EntryType.WROK, EntryType.CTRL_OK):
            self.deliver(entry(entry_type), EDGE_B)
        nak = build_nak([(3, 9)], group_id=7, source_wwn=SRC, target_wwn=DST)
        self.deliver(nak, EDGE_B)
        self.assertEqual([to for _, to in self.sent], [EDGE_A] * 3)
        self.assertEqual(self.sent[2][0], leaving(nak))

    def test_requests_go_forward(self):
        for entry_type in (EntryType.WR, EntryType.CTRL):
            self.deliver(entry(entry_type))
        self.assertEqual([to for _, to in self.sent], [EDGE_B] * 2)

    def test_a_reverse_ctrl_goes_backward_alone_and_in_a_batch(self):
        reverse = entry(EntryType.CTRL, sequence=9, flags=EntryFlag.REVERSE)
        self.deliver(reverse, EDGE_B)
        self.deliver(build_batch([entry(sequence=1), reverse], ttl=1, sequence=3), CORE_2)
        self.assertEqual([to for _, to in self.sent], [EDGE_A, EDGE_B, EDGE_A])
        self.assertEqual(self.sent[0][0], leaving(reverse))
        restart = entry(EntryType.CTRL, sequence=10, flags=EntryFlag.RESTART)
        self.deliver(restart)
        self.assertEqual(self.sent[-1], (leaving(restart), EDGE_B))

    def test_no_route_is_dropped_and_counted(self):
        self.deliver(entry(source=DST, target=SRC))                # no such pair
        self.deliver(entry(source=SRC, target=THIRD))
        self.assertEqual(self.sent, [])
        self.assertEqual(self.drops.by_reason, {"no_route": 2})

    def test_the_ends_of_a_path_are_no_route(self):
        self.deliver(entry(source=THIRD, target=DST), CORE_2)      # forward past the last device
        self.deliver(entry(EntryType.WROK, source=DST, target=THIRD), EDGE_B)  # back past the first
        self.assertEqual(self.sent, [])
        self.assertEqual(self.drops.by_reason, {"no_route": 2})
        self.deliver(entry(EntryType.WROK, source=THIRD, target=DST), CORE)
        self.assertEqual(self.sent_to(CORE_2), [leaving(entry(EntryType.WROK, source=THIRD))])

    def test_ttl_zero_on_arrival_is_dropped(self):
        self.deliver(entry(ttl=0))
        self.assertEqual(self.sent, [])
        self.assertEqual(self.drops.by_reason, {"ttl_expired": 1})

    def test_ttl_one_leaves_with_zero(self):
        self.deliver(entry(ttl=1))
        self.assertEqual(parse_datagram(self.sent[0][0]).header.ttl, 0)
        self.assertEqual(self.drops.total, 0)

    def test_keepalive_to_the_core_is_echoed_to_its_sender(self):
        probe = build_keepalive(99, 123456789, ttl=4)
        self.deliver(probe, EDGE_B)
        [(echo, to)] = self.sent
        self.assertEqual(to, EDGE_B)
        parsed = parse_datagram(echo)
        self.assertTrue(parsed.crc_ok)
        self.assertEqual(parsed.payload, parse_datagram(probe).payload)
        self.assertEqual(echo, leaving(probe))
        self.assertEqual(self.relay.counters()["keepalives_answered"], 1)
        self.assertEqual(self.relay.counters()["forwarded"], 0)

    def test_keepalive_echoes_stop_when_ttl_runs_out(self):
        self.deliver(build_keepalive(1, 2, ttl=0))
        self.assertEqual((self.sent, self.drops.by_reason), ([], {"ttl_expired": 1}))

    def test_keepalive_with_a_target_travels_its_path(self):
        probe = build_keepalive(1, 2, source_wwn=SRC, target_wwn=DST)
        self.deliver(probe)
        self.assertEqual(self.sent, [(leaving(probe), EDGE_B)])

    def test_batch_is_unpacked_and_each_entry_routed(self):
        singles = [entry(sequence=1), entry(EntryType.WROK, sequence=2), entry(sequence=3)]
        self.deliver(build_batch(singles, ttl=1, sequence=77), CORE_2)
        self.assertEqual(self.sent, [(leaving(singles[0]), EDGE_B), (leaving(singles[1]), EDGE_A),
                                     (leaving(singles[2]), EDGE_B)])
        counters = self.relay.counters()
        self.assertEqual((counters["batches_received"], counters["unpacked_entries"],
                          counters["received"], counters["forwarded"]), (1, 3, 3, 3))

    def test_bad_inner_crc_drops_that_entry_alone(self):
        singles = [entry(sequence=i) for i in (1, 2, 3)]
        bad = bytearray(singles[1])
        bad[HEADER_SIZE + 5] ^= 0xFF                   # body changed, its CRC32C not
        batch = build_batch([singles[0], bytes(bad), singles[2]])   # the batch's own CRC is fine
        self.deliver(batch, CORE_2)
        self.assertEqual(sequences([d for d, _ in self.sent]), [1, 3])
        self.assertEqual(self.drops.by_reason, {"bad_crc": 1})

    def test_bad_inner_crc_in_the_header(self):
        bad = bytearray(entry(sequence=2))
        bad[16 + 7] ^= 1                               # the sequence number
        self.deliver(build_batch([entry(sequence=1), bytes(bad)]), CORE_2)
        self.assertEqual(sequences([d for d, _ in self.sent]), [1])
        self.assertEqual(self.drops.by_reason, {"bad_crc": 1})

    def test_malformed_batch_is_dropped_whole(self):
        singles = [entry(sequence=i) for i in (1, 2)]
        good = build_batch(singles)
        body = bytearray(good[HEADER_SIZE:])
        body[0:4] = (3).to_bytes(4, "big")             # claims three entries, holds two
        for batch in (build_entry(EntryType.BATCH, bytes(body)),
                      build_batch([singles[0], good]),                  # a batch in a batch
                      build_entry(EntryType.BATCH, b"\x00" * 4),        # no count
                      build_batch([singles[0], entry(sequence=2, version=3)])):  # inner version
            self.deliver(batch, CORE_2)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.drops.by_reason, {"malformed_batch": 4})
        self.assertEqual(self.relay.counters()["batches_received"], 4)

    def test_an_empty_batch_forwards_nothing(self):
        self.deliver(build_entry(EntryType.BATCH, COUNT_HEADER.build(count=0)), CORE_2)
        self.assertEqual((self.sent, self.drops.total), ([], 0))

    def test_without_batching_every_entry_leaves_at_once(self):
        for i in range(5):
            self.deliver(entry(sequence=i))
        self.assertEqual(sequences(self.sent_to(EDGE_B)), [0, 1, 2, 3, 4])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.relay.counters()["batches_sent"], 0)

    def test_new_route_table_replaces_the_old(self):
        self.relay.set_routes(RouteTable([Route(SRC, DST, (EDGE_A, CORE, CORE_2, EDGE_B))]))
        self.deliver(entry())
        self.deliver(entry(source=THIRD))
        self.assertEqual([to for _, to in self.sent], [CORE_2])
        self.assertEqual(self.drops.by_reason, {"no_route": 1})

    def test_counters(self):
        self.deliver(entry(size=100))
        self.deliver(entry(ttl=0))
        self.deliver(build_keepalive(1, 2))
        self.deliver(build_batch([entry(size=8), entry(source=DST)]), CORE_2)
        self.assertEqual(self.relay.counters(), {
            "received": 5, "forwarded": 2, "forwarded_bytes": HEADER_SIZE * 2 + 108,
            "batches_sent": 0, "batched_entries": 0, "batches_received": 1,
            "unpacked_entries": 2, "keepalives_answered": 1, "queued_entries": 0,
            "queued_bytes": 0})
        self.assertEqual(self.drops.by_reason, {"ttl_expired": 1, "no_route": 1})


class BatchingTests(RelayTestCase):
    policy = BatchPolicy(enabled=True, max_delay=0.002, max_bytes=65000, max_entries=256)

    def use(self, **kw):
        self.relay = CoreRelay(ROUTES, CORE, lambda data, to: self.sent.append((data, to)),
                               self.clock, batch=BatchPolicy(**kw), drops=self.drops)

    def test_entries_wait_for_the_delay_then_leave_as_one_batch(self):
        singles = [entry(sequence=i) for i in range(3)]
        for data in singles:
            self.deliver(data)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.relay.queue_depths(), {"127.0.0.1:47003": (3, 3 * (HEADER_SIZE + 64))})
        self.clock.advance(0.0019)
        self.assertEqual(self.sent, [])
        self.clock.advance(0.0001)
        [(batch, to)] = self.sent
        self.assertEqual(to, EDGE_B)
        self.assertEqual(inner(batch), [leaving(s) for s in singles])
        self.assertEqual(self.relay.queue_depths(), {"127.0.0.1:47003": (0, 0)})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_batch_is_byte_identical_to_build_batch(self):
        singles = [entry(sequence=i, size=i * 13) for i in range(5)]
        for data in singles[:3]:
            self.deliver(data)
        self.clock.advance(0.002)
        for data in singles[3:]:
            self.deliver(data)
        self.clock.advance(0.002)
        self.assertEqual([d for d, _ in self.sent], [
            build_batch([leaving(s) for s in singles[:3]], group_id=0, ttl=1, sequence=1),
            build_batch([leaving(s) for s in singles[3:]], group_id=0, ttl=1, sequence=2)])
        self.assertEqual((self.relay.counters()["batches_sent"],
                          self.relay.counters()["batched_entries"]), (2, 5))

    def test_flush_by_bytes(self):
        size = 1000                                    # 1088-byte entries, 1088 padded
        self.use(max_bytes=96 + 3 * 1088 + 100, max_delay=0.002)
        singles = [entry(sequence=i, size=size) for i in range(4)]
        for data in singles[:3]:
            self.deliver(data)
        self.assertEqual(self.sent, [])                # a fourth would not fit: still waiting
        self.deliver(singles[3])
        self.assertEqual(len(self.sent), 1)            # the fourth pushed out the first three
        self.assertEqual(inner(self.sent[0][0]), [leaving(s) for s in singles[:3]])
        self.assertLessEqual(len(self.sent[0][0]), 96 + 3 * 1088 + 100)
        self.clock.advance(0.002)
        self.assertEqual(self.sent[1][0], leaving(singles[3]))

    def test_flush_when_nothing_more_could_fit(self):
        self.use(max_bytes=96 + 2 * 1088 + 80, max_delay=0.002)   # not even a bare header
        for i in range(2):
            self.deliver(entry(sequence=i, size=1000))
        self.assertEqual(sequences([d for d, _ in self.sent]), [0, 1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_by_count(self):
        self.use(max_entries=3, max_delay=0.002)
        for i in range(7):
            self.deliver(entry(sequence=i))
        self.assertEqual([len(inner(d)) for d, _ in self.sent], [3, 3])
        self.clock.advance(0.002)
        self.assertEqual(sequences([d for d, _ in self.sent]), list(range(7)))
        self.assertEqual(self.sent[-1][0], leaving(entry(sequence=6)))    # the seventh alone

    def test_a_single_entry_leaves_plain(self):
        data = entry(sequence=9)
        self.deliver(data)
        self.clock.advance(0.002)
        self.assertEqual(self.sent, [(leaving(data), EDGE_B)])
        self.assertEqual(self.relay.counters()["batches_sent"], 0)

    def test_oversize_entry_leaves_alone_after_what_waits(self):
        self.use(max_bytes=4096, max_delay=0.002)
        small = [entry(sequence=i) for i in (1, 2)]
        big = entry(sequence=3, size=4096 - 96 - HEADER_SIZE + 1)
        for data in small + [big]:
            self.deliver(data)
        self.assertEqual([d for d, _ in self.sent], [
            build_batch([leaving(s) for s in small], group_id=0, ttl=1, sequence=1), leaving(big)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_entry_that_leaves_room_for_one_more_waits(self):
        self.use(max_bytes=4096, max_delay=0.002)
        fits = entry(size=4096 - 96 - 2 * HEADER_SIZE)     # room left for a bare header
        self.deliver(fits)
        self.assertEqual(len(self.sent), 0)
        self.clock.advance(0.002)
        self.assertEqual(self.sent, [(leaving(fits), EDGE_B)])

    def test_entry_that_fills_a_batch_leaves_at_once(self):
        self.use(max_bytes=4096, max_delay=0.002)
        full = entry(size=4096 - 96 - HEADER_SIZE)
        self.deliver(full)
        self.assertEqual(self.sent, [(leaving(full), EDGE_B)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_queues_are_per_next_hop(self):
        self.deliver(entry(sequence=1))
        self.deliver(entry(EntryType.WROK, sequence=2), EDGE_B)
        self.deliver(entry(sequence=3))
        self.deliver(entry(EntryType.WROK, sequence=4), EDGE_B)
        self.assertEqual(self.relay.counters()["queued_entries"], 4)
        self.clock.advance(0.002)
        self.assertEqual(sequences(self.sent_to(EDGE_B)), [1, 3])
        self.assertEqual(sequences(self.sent_to(EDGE_A)), [2, 4])
        self.assertEqual(self.relay.counters()["batches_sent"], 2)

    def test_order_preserved_per_next_hop(self):
        """Random sizes (some too big to share), both directions, batches in and out."""
        rng = random.Random(408)
        self.use(max_bytes=16384, max_entries=8, max_delay=0.001)
        expected = {EDGE_A: [], EDGE_B: []}
        pending = []
        for sequence in range(600):
            backward = rng.random() < 0.3
            size = rng.choice((0, 8, 100, 1000, 4000, 16384 - 96 - HEADER_SIZE + 8, 20000))
            data = entry(EntryType.WROK if backward else EntryType.WR, sequence=sequence, size=size)
            expected[EDGE_A if backward else EDGE_B].append(sequence)
            pending.append(data)
            if rng.random() < 0.4:                         # arrives as a batch from another core
                count = rng.randint(1, 6)
                if sum(len(d) for d in pending[-count:]) < 60000:
                    batch, pending = build_batch(pending[-count:]), pending[:-count]
                    for data in pending:
                        self.deliver(data, CORE_2)
                    pending = []
                    self.deliver(batch, CORE_2)
            if rng.random() < 0.1:
                self.clock.advance(rng.choice((0.0002, 0.001)))
        for data in pending:
            self.deliver(data, CORE_2)
        self.clock.advance(0.001)
        self.assertEqual(sequences(self.sent_to(EDGE_B)), expected[EDGE_B])
        self.assertEqual(sequences(self.sent_to(EDGE_A)), expected[EDGE_A])
        self.assertEqual(self.drops.total, 0)
        counters = self.relay.counters()
        self.assertGreater(counters["batches_sent"], 10)
        self.assertEqual(counters["forwarded"], 600)
        self.assertEqual(counters["queued_entries"], 0)
        for data, _ in self.sent:
            self.assertLessEqual(len(data), 20000 + HEADER_SIZE)
            if parse_datagram(data).header.entry_type == EntryType.BATCH:
                self.assertLessEqual(len(data), 16384)

    def test_received_batch_is_rebatched_with_new_ttls(self):
        singles = [entry(sequence=i, ttl=5) for i in range(4)]
        self.deliver(build_batch(singles, ttl=1, sequence=500), CORE_2)
        self.clock.advance(0.002)
        self.assertEqual([d for d, _ in self.sent],
                         [build_batch([leaving(s) for s in singles], group_id=0, ttl=1,
                                      sequence=1)])
        self.assertEqual(parse_datagram(inner(self.sent[0][0])[0]).header.ttl, 4)

    def test_every_entry_in_a_sent_batch_has_a_good_crc(self):
        for i in range(10):
            self.deliver(entry(sequence=i, size=i * 7))
        self.clock.advance(0.002)
        [(batch, _)] = self.sent
        self.assertTrue(parse_datagram(batch).crc_ok)
        self.assertTrue(all(crc_ok(e) for e in inner(batch)))

    def test_keepalive_is_answered_at_once_even_with_batching(self):
        self.deliver(entry(sequence=1), EDGE_A)
        self.deliver(build_keepalive(5, 6), EDGE_A)
        self.assertEqual(len(self.sent), 1)
        self.assertEqual(parse_datagram(self.sent[0][0]).header.entry_type, EntryType.KEEPALIVE)

    def test_flush_all_sends_what_waits(self):
        self.deliver(entry(sequence=1))
        self.deliver(entry(EntryType.WROK, sequence=2), EDGE_B)
        self.relay.flush_all()
        self.assertEqual(sorted(sequences([d for d, _ in self.sent])), [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_restarts_with_the_next_first_entry(self):
        self.deliver(entry(sequence=1))
        self.clock.advance(0.002)
        self.clock.advance(0.001)
        self.deliver(entry(sequence=2))
        self.clock.advance(0.0015)
        self.assertEqual(len(self.sent), 1)                # the second entry waits its own delay
        self.clock.advance(0.0005)
        self.assertEqual(sequences([d for d, _ in self.sent]), [1, 2])


class PolicyTests(SynchronousTestCase):
    def test_limits(self):
        for kw in ({"max_delay": -0.001}, {"max_delay": 1.5}, {"max_bytes": 271},
                   {"max_bytes": 65508}, {"max_entries": 0}, {"max_entries": 4097}):
            self.assertRaises(ValueError, BatchPolicy, **kw)
        BatchPolicy(max_bytes=272, max_entries=4096, max_delay=0)


class CrcTests(SynchronousTestCase):
    def test_crc_ok_on_bytes_and_views(self):
        data = entry(size=333)
        self.assertTrue(crc_ok(data))
        self.assertTrue(crc_ok(memoryview(b"xx" + data)[2:]))
        for at in (0, 80, 83, 84, len(data) - 1):
            bad = bytearray(data)
            bad[at] ^= 0x10
            self.assertFalse(crc_ok(bytes(bad)), at)
