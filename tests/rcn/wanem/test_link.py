"""EmulatedLink (loss, duplication, reorder, delay, rate, queue, DOWN) and the UDP relay."""

from __future__ import annotations

import struct

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcn.wanem.link import (DEFAULTS, RANGES, EmulatedLink, LinkSpec, LinkStats, RelayLink,
                            WanEmulator)
from tests.rcn.logxfer.test_protocol import FakeTransport

N = 10_000
_INDEX = struct.Struct(">I")


def datagram(i: int, size: int = 100) -> bytes:
    return _INDEX.pack(i) + bytes(size - 4)


def index(data: bytes) -> int:
    return _INDEX.unpack_from(data)[0]


def run(clock: Clock, until: float | None = None) -> None:
    """Fire every timer at exactly its time (up to ``until``), so arrival times are exact."""
    while clock.getDelayedCalls():
        t = min(call.getTime() for call in clock.getDelayedCalls())
        if until is not None and t > until:
            break
        clock.advance(max(0.0, t - clock.seconds()))
    if until is not None and until > clock.seconds():
        clock.advance(until - clock.seconds())


class Harness:
    """A link on a task.Clock, recording (arrival time, index, data)."""

    def __init__(self, **settings):
        self.clock = Clock()
        self.arrived: list[tuple[float, int, bytes]] = []
        self.link = EmulatedLink(self.clock, self._deliver, **settings)

    def _deliver(self, data: bytes) -> None:
        self.arrived.append((self.clock.seconds(), index(data), data))

    def send_spaced(self, count: int, interval: float, size: int = 100) -> dict[int, float]:
        """``count`` datagrams ``interval`` s apart; returns index -> send time."""
        sent = {}
        for i in range(count):
            run(self.clock, until=i * interval)
            sent[i] = self.clock.seconds()
            self.link.send(datagram(i, size))
        run(self.clock)
        return sent

    @property
    def order(self) -> list[int]:
        return [i for _, i, _ in self.arrived]


def late(order: list[int]) -> int:
    """Datagrams that arrived after one sent later than them."""
    highest, count = -1, 0
    for i in order:
        if i < highest:
            count += 1
        highest = max(highest, i)
    return count


class FractionTests(SynchronousTestCase):
    """Over 10,000 datagrams the fractions are the settings' (binomial: 5 sigma tolerance)."""

    def test_loss_fraction(self):
        h = Harness(seed=1, loss=0.1, delay=0.005)
        h.send_spaced(N, 0.001)
        lost = h.link.dropped["loss"]
        self.assertTrue(850 <= lost <= 1150, lost)
        self.assertEqual(len(h.arrived), N - lost)
        self.assertEqual(h.order, sorted(h.order))
        stats = h.link.stats()
        self.assertEqual((stats.packets_in, stats.packets_out, stats.loss), (N, N - lost, lost))

    def test_duplicate_fraction(self):
        h = Harness(seed=2, duplicate=0.05, delay=0.005)
        h.send_spaced(N, 0.001)
        duplicated = h.link.stats().duplicated
        self.assertTrue(390 <= duplicated <= 610, duplicated)
        self.assertEqual(len(h.arrived), N + duplicated)
        self.assertEqual(h.link.stats().packets_out, N + duplicated)
        # the copy follows its original at once, identical
        pairs = sum(1 for a, b in zip(h.arrived, h.arrived[1:]) if a == b)
        self.assertEqual(pairs, duplicated)
        self.assertEqual(sorted(set(h.order)), list(range(N)))

    def test_reorder_fraction(self):
        # 1 ms apart, held 10 ms more: every reordered datagram is overtaken
        h = Harness(seed=3, reorder=0.1, delay=0.02)
        h.send_spaced(N, 0.001)
        reordered = h.link.stats().reordered
        self.assertTrue(850 <= reordered <= 1150, reordered)
        self.assertEqual(late(h.order), reordered)
        self.assertEqual(sorted(h.order), list(range(N)))

    def test_reorder_hold_exactly(self):
        h = Harness(seed=3, reorder=1.0, delay=0.02, reorder_hold=0.05)
        sent = h.send_spaced(10, 0.5)
        self.assertEqual([round(t - sent[i], 9) for t, i, _ in h.arrived], [0.07] * 10)

    def test_no_impairment_delivers_all_in_order(self):
        h = Harness(seed=4)
        h.send_spaced(1000, 0.0)
        self.assertEqual(h.order, list(range(1000)))
        self.assertEqual(h.link.stats(), LinkStats(packets_in=1000, packets_out=1000))

    def test_nothing_delivered_from_inside_send(self):
        h = Harness()
        h.link.send(datagram(1))
        self.assertEqual(h.arrived, [])
        h.clock.advance(0)
        self.assertEqual(h.order, [1])


class DelayTests(SynchronousTestCase):
    def test_delay_without_jitter_is_exact(self):
        h = Harness(delay=0.02)
        sent = h.send_spaced(100, 0.003)
        self.assertEqual({round(t - sent[i], 9) for t, i, _ in h.arrived}, {0.02})

    def test_jitter_distribution(self):
        # 100 ms apart: FIFO never raises a delay, the samples are the raw distribution
        h = Harness(seed=5, delay=0.02, jitter=0.01)
        sent = h.send_spaced(5000, 0.1)
        delays = [t - sent[i] for t, i, _ in h.arrived]
        self.assertEqual(len(delays), 5000)
        self.assertGreaterEqual(min(delays), 0.02 - 1e-9)
        self.assertLessEqual(max(delays), 0.03 + 1e-9)
        self.assertLess(min(delays), 0.0201)            # the whole range is used
        self.assertGreater(max(delays), 0.0299)
        mean = sum(delays) / len(delays)
        self.assertLess(abs(mean - 0.025), 0.0003, mean)      # uniform: delay + jitter / 2
        # uniform: each tenth of the range holds about a tenth of the samples
        deciles = [0] * 10
        for d in delays:
            deciles[min(9, int((d - 0.02) / 0.001))] += 1
        self.assertTrue(all(400 <= n <= 600 for n in deciles), deciles)

    def test_jitter_keeps_fifo_order_within_bounds(self):
        h = Harness(seed=6, delay=0.02, jitter=0.01)
        sent = h.send_spaced(2000, 0.0005)
        self.assertEqual(h.order, list(range(2000)))
        delays = [t - sent[i] for t, i, _ in h.arrived]
        self.assertGreaterEqual(min(delays), 0.02 - 1e-9)
        self.assertLessEqual(max(delays), 0.03 + 1e-9)

    def test_delay_change_applies_to_later_datagrams(self):
        h = Harness(delay=0.1)
        h.link.send(datagram(0))
        h.link.configure(delay=0.01)
        h.link.send(datagram(1))
        run(h.clock)
        # FIFO: the second waits for the first
        self.assertEqual([(round(t, 9), i) for t, i, _ in h.arrived], [(0.1, 0), (0.1, 1)])


class RateTests(SynchronousTestCase):
    def test_throughput_is_the_rate(self):
        # 1 Mbit/s, offered 2 Mbit/s for 10 s: the queue fills and the rate holds
        rate = 125_000
        h = Harness(seed=7, rate=rate, delay=0.01, queue_limit=64_000)
        depth = []
        for i in range(2500):
            run(h.clock, until=i * 0.004)
            h.link.send(datagram(i, 1000))
            depth.append(h.link.queue_bytes)
        run(h.clock)
        first, last = h.arrived[0][0], h.arrived[-1][0]
        throughput = (len(h.arrived) - 1) * 1000 / (last - first)
        self.assertLess(abs(throughput / rate - 1), 0.02, throughput)
        self.assertGreater(h.link.dropped["queue_full"], 1000)
        self.assertEqual(len(h.arrived) + h.link.dropped["queue_full"], 2500)
        self.assertLessEqual(max(depth), 64_000)
        self.assertEqual(max(depth), 64_000)             # it did fill
        self.assertEqual(h.order, sorted(h.order))

    def test_serialisation_time_and_delay_add(self):
        h = Harness(rate=1000, delay=0.5, queue_limit=10_000)
        for i in range(3):
            h.link.send(datagram(i, 500))
        run(h.clock)
        self.assertEqual([round(t, 9) for t, _, _ in h.arrived], [1.0, 1.5, 2.0])

    def test_queue_bound(self):
        h = Harness(rate=1000, queue_limit=3000)
        for i in range(5):
            h.link.send(datagram(i, 1000))
        stats = h.link.stats()
        self.assertEqual((stats.queue_packets, stats.queue_bytes, stats.queue_full), (3, 3000, 2))
        h.link.send(datagram(9, 3001))                   # larger than the whole queue
        self.assertEqual(h.link.dropped["queue_full"], 3)
        run(h.clock)
        self.assertEqual(h.order, [0, 1, 2])
        self.assertEqual((h.link.queue_packets, h.link.queue_bytes), (0, 0))

    def test_smaller_queue_limit_drops_the_newest(self):
        h = Harness(rate=1000, queue_limit=5000)
        for i in range(5):
            h.link.send(datagram(i, 1000))
        h.link.configure(queue_limit=2500)
        self.assertEqual((h.link.queue_packets, h.link.dropped["queue_full"]), (2, 3))
        run(h.clock)
        self.assertEqual(h.order, [0, 1])

    def test_unlimited_rate_releases_the_queue(self):
        h = Harness(rate=1000, queue_limit=5000)
        for i in range(4):
            h.link.send(datagram(i, 1000))
        h.clock.advance(0.5)
        h.link.configure(rate=0)
        self.assertEqual(h.link.queue_packets, 0)
        h.clock.advance(0)
        self.assertEqual(h.order, [0, 1, 2, 3])
        self.assertEqual(h.clock.seconds(), 0.5)

    def test_wire_bound(self):
        h = Harness(delay=1.0, wire_limit=2500)
        for i in range(3):
            h.link.send(datagram(i, 1000))
        self.assertEqual(h.link.dropped["wire_full"], 1)
        self.assertEqual(h.link.wire_packets, 2)
        run(h.clock)
        self.assertEqual(h.order, [0, 1])


class StateTests(SynchronousTestCase):
    def test_down_drops_everything_and_flushes_the_queue(self):
        h = Harness(rate=1000, delay=1.0, queue_limit=10_000)
        for i in range(5):
            h.link.send(datagram(i, 500))
        h.clock.advance(1.2)        # two serialised (on the wire), three queued
        self.assertEqual((h.link.wire_packets, h.link.queue_packets), (2, 3))
        h.link.set_state(False)
        self.assertEqual((h.link.wire_packets, h.link.queue_packets, h.link.queue_bytes),
                         (0, 0, 0))
        self.assertEqual(h.link.dropped["down"], 5)
        for i in range(5, 10):
            h.link.send(datagram(i, 500))
        run(h.clock, until=100)
        self.assertEqual(h.arrived, [])
        self.assertEqual(h.link.dropped, {"down": 10, "loss": 0, "queue_full": 0,
                                          "wire_full": 0})
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.link.set_state(True)
        h.link.send(datagram(10, 500))
        run(h.clock)
        # the serialiser starts afresh: 0.5 s to send, 1 s on the wire
        self.assertEqual([(round(t, 9), i) for t, i, _ in h.arrived], [(101.5, 10)])


class SettingTests(SynchronousTestCase):
    def test_out_of_range_names_setting_and_range(self):
        link = Harness().link
        bad = {"delay": 10.5, "jitter": -0.001, "loss": 1.01, "duplicate": -1, "reorder": 2,
               "rate": 0.5, "queue_limit": 0}
        for name, value in bad.items():
            exc = self.assertRaises(ValueError, link.configure, **{name: value})
            self.assertIn(name, str(exc))
            lo, hi, _ = RANGES[name]
            self.assertIn(f"{hi:g}", str(exc))
        self.assertIn("0 (unlimited)", str(self.assertRaises(ValueError, link.configure,
                                                             rate=13e9)))
        self.assertRaises(ValueError, link.configure, delay=float("nan"))
        self.assertRaises(ValueError, link.configure, queue_limit=1000.5)
        self.assertRaises(ValueError, link.configure, speed=1)
        self.assertIn("delay", str(self.assertRaises(TypeError, link.configure, delay="20")))
        self.assertRaises(TypeError, link.configure, loss=True)
        self.assertEqual(link.settings(), DEFAULTS)

    def test_ranges_inclusive(self):
        link = Harness().link
        link.configure(delay=10, jitter=10, loss=1, duplicate=1, reorder=1, rate=12.5e9,
                       queue_limit=1 << 30)
        link.configure(delay=0, jitter=0, loss=0, duplicate=0, reorder=0, rate=1,
                       queue_limit=1)
        self.assertEqual((link.rate, link.queue_limit), (1.0, 1))

    def test_configure_is_all_or_nothing(self):
        link = Harness(delay=0.1).link
        self.assertRaises(ValueError, link.configure, delay=0.2, loss=5)
        self.assertEqual((link.delay, link.loss), (0.1, 0.0))

    def test_constructor_checks(self):
        clock = Clock()
        self.assertRaises(ValueError, EmulatedLink, clock, print, loss=-0.1)
        self.assertRaises(ValueError, EmulatedLink, clock, print, reorder_hold=0)
        self.assertRaises(ValueError, EmulatedLink, clock, print, wire_limit=0)


class DeterminismTests(SynchronousTestCase):
    SETTINGS = dict(loss=0.1, duplicate=0.1, reorder=0.1, delay=0.01, jitter=0.005)

    def fates(self, seed, interval=0.001, **changes):
        h = Harness(seed=seed, **{**self.SETTINGS, **changes})
        sent = h.send_spaced(500, interval)
        return [(i, round(t - sent[i], 9)) for t, i, _ in h.arrived], h

    def test_same_seed_same_fates(self):
        self.assertEqual(self.fates(11)[0], self.fates(11)[0])
        self.assertNotEqual(self.fates(11)[0], self.fates(12)[0])

    def test_reset_reseeds_and_restores(self):
        first, h = self.fates(13)
        h.link.configure(loss=0.9, delay=1.0)
        h.link.set_state(False)
        h.link.reset()
        self.assertEqual((h.link.up, h.link.loss, h.link.delay), (True, 0.1, 0.01))
        self.assertEqual(h.link.initial_settings(), {**DEFAULTS, **self.SETTINGS})
        counted = h.link.stats().packets_in
        h.arrived.clear()
        start = h.clock.seconds()
        for i in range(500):
            run(h.clock, until=start + i * 0.001)
            h.link.send(datagram(i))
        run(h.clock)
        again = [(i, round(t - start - i * 0.001, 9)) for t, i, _ in h.arrived]
        self.assertEqual(again, first)
        self.assertEqual(h.link.stats().packets_in, counted + 500)   # counters kept

    def test_a_setting_does_not_shift_the_other_draws(self):
        # four draws per datagram whatever the settings: survivors keep their jitter
        # (20 ms apart, so FIFO order never raises a delay)
        with_loss = dict(self.fates(14, 0.02, loss=0.5, duplicate=0, reorder=0)[0])
        without = dict(self.fates(14, 0.02, loss=0.0, duplicate=0, reorder=0)[0])
        self.assertTrue(200 < len(with_loss) < 300)
        self.assertEqual(with_loss, {i: without[i] for i in with_loss})

    def test_counters_add_up(self):
        _, h = self.fates(15, rate=20_000, queue_limit=1000)
        s = h.link.stats()
        self.assertEqual(s.packets_in, s.packets_out - s.duplicated + s.dropped)
        self.assertTrue(s.loss and s.queue_full and s.duplicated and s.reordered, s)
        self.assertEqual(LinkStats(packets_in=1, down=2) + LinkStats(packets_in=3, loss=1),
                         LinkStats(packets_in=4, down=2, loss=1))


# -- the relay ---------------------------------------------------------------------------

A_HOST = ("10.0.0.1", 5000)
B_ADDRESS = ("10.0.9.9", 47001)




class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.wanem = WanEmulator(self.clock, [
            LinkSpec(47001, B_ADDRESS, settings={"delay": 0.02}),
            LinkSpec(47002, ("10.0.9.8", 47001), a_address=("10.0.0.2", 47001), seed=7),
        ])
        self.transports = []
        for link in self.wanem.links:
            a, b = FakeTransport(), FakeTransport()
            link.a_socket.makeConnection(a)
            link.b_socket.makeConnection(b)
            self.transports.append((a, b))

    def test_both_ways(self):
        link = self.wanem.link(1)
        a, b = self.transports[0]
        link.a_socket.datagramReceived(b"to B", A_HOST)
        self.clock.advance(0.019)
        self.assertEqual(b.written, [])
        self.clock.advance(0.001)
        self.assertEqual(b.written, [(b"to B", B_ADDRESS)])
        # the answer goes back to whoever sent on the A socket
        link.b_socket.datagramReceived(b"to A", B_ADDRESS)
        self.clock.advance(0.02)
        self.assertEqual(a.written, [(b"to A", A_HOST)])
        self.assertEqual((link.stats("ab").packets_out, link.stats("ba").packets_out), (1, 1))
        self.assertEqual(link.stats().packets_in, 2)

    def test_configured_a_address(self):
        link = self.wanem.link(2)
        a, b = self.transports[1]
        link.a_socket.datagramReceived(b"x", A_HOST)
        link.b_socket.datagramReceived(b"y", ("10.0.9.8", 47001))
        self.clock.advance(0)
        self.assertEqual(b.written, [(b"x", ("10.0.9.8", 47001))])
        self.assertEqual(a.written, [(b"y", ("10.0.0.2", 47001))])

    def test_no_a_peer_yet(self):
        link = self.wanem.link(1)
        link.b_socket.datagramReceived(b"early", B_ADDRESS)
        self.clock.advance(1)
        self.assertEqual(self.transports[0][0].written, [])
        self.assertEqual(link.errors["no_peer"], 1)

    def test_send_error_is_counted(self):
        link = self.wanem.link(2)
        link.b_socket.transport = FakeTransport(OSError(90, "Message too long"))
        link.a_socket.datagramReceived(b"x", A_HOST)
        self.clock.advance(0)
        self.assertEqual(link.errors["send_error"], 1)
        link.b_socket.connectionRefused()
        self.assertEqual(link.errors["refused"], 1)

    def test_not_attached(self):
        link = RelayLink(self.clock, LinkSpec(1, B_ADDRESS))
        link.from_a(b"x", A_HOST)
        self.clock.advance(0)
        self.assertEqual(link.errors["not_attached"], 1)

    def test_directions_have_their_own_seeds(self):
        link1, link2 = self.wanem.links
        self.assertEqual((link1.ab.seed, link1.ba.seed), (2, 3))     # seed: link number
        self.assertEqual((link2.ab.seed, link2.ba.seed), (14, 15))
        link2.configure(loss=0.5)
        a, b = self.transports[1]
        for i in range(200):
            link2.from_a(datagram(i), A_HOST)
            link2.from_b(datagram(i), B_ADDRESS)
        self.clock.advance(0)
        self.assertNotEqual([index(d) for d, _ in a.written], [index(d) for d, _ in b.written])

    def test_settings_apply_to_both_directions(self):
        link = self.wanem.link(1)
        self.assertEqual(link.setting("delay"), 0.02)
        link.configure(delay=0.05, rate=1000)
        self.assertEqual((link.ab.delay, link.ba.delay, link.ba.rate), (0.05, 0.05, 1000.0))
        self.assertRaises(ValueError, link.configure, delay=0.01, loss=3)
        self.assertEqual(link.ba.delay, 0.05)
        self.assertRaises(ValueError, link.setting, "speed")
        link.set_state(False)
        self.assertEqual((link.up, link.ab.up, link.ba.up), (False, False, False))
        self.wanem.reset()
        self.assertEqual((link.up, link.setting("delay"), link.setting("rate")),
                         (True, 0.02, 0.0))
        self.assertRaises(ValueError, link.stats, "up")

    def test_link_numbers(self):
        self.assertIs(self.wanem.link(2), self.wanem.links[1])
        exc = self.assertRaises(IndexError, self.wanem.link, 3)
        self.assertIn("1..2", str(exc))
        self.assertRaises(IndexError, self.wanem.link, 0)

    def test_listen_opens_both_sockets_with_full_size(self):
        calls = []

        class FakeReactor:
            def listenUDP(self, port, proto, interface="", maxPacketSize=8192):
                calls.append((port, proto, interface, maxPacketSize))
                return port

        self.assertEqual(self.wanem.listen(FakeReactor()), [47001, 0, 47002, 0])
        link1 = self.wanem.link(1)
        self.assertEqual(calls[0], (47001, link1.a_socket, "", 65508))
        self.assertEqual(calls[1], (0, link1.b_socket, "", 65508))


class _Catcher(protocol.DatagramProtocol):
    def __init__(self):
        self.received = defer.Deferred()

    def datagramReceived(self, data, addr):
        if not self.received.called:
            self.received.callback((data, addr))


class RealSocketTests(TestCase):
    """One round trip through real loopback sockets (ephemeral ports, no impairment)."""

    @defer.inlineCallbacks
    def test_round_trip(self):
        far, near = _Catcher(), _Catcher()
        far_port = reactor.listenUDP(0, far, interface="127.0.0.1", maxPacketSize=65536)
        self.addCleanup(far_port.stopListening)
        near_port = reactor.listenUDP(0, near, interface="127.0.0.1", maxPacketSize=65536)
        self.addCleanup(near_port.stopListening)
        wanem = WanEmulator(reactor, [LinkSpec(0, ("127.0.0.1", far_port.getHost().port),
                                               interface="127.0.0.1")])
        ports = wanem.listen(reactor)
        for port in ports:
            self.addCleanup(port.stopListening)
        a_port, b_port = ports[0].getHost().port, ports[1].getHost().port
        near.transport.write(b"ping" * 3000, ("127.0.0.1", a_port))    # above 8192 bytes
        data, sender = yield far.received
        self.assertEqual((data, sender[1]), (b"ping" * 3000, b_port))
        far.transport.write(b"pong", sender)
        data, sender = yield near.received
        self.assertEqual((data, sender[1]), (b"pong", a_port))
