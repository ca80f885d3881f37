"""make_service in this process, on real loopback sockets: relay, batch, stop, /metrics."""

from __future__ import annotations

import socket
import tomllib

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from datapath.frames.logentry import EntryType, parse_batch
from rcn.config import ConfigError
from rcn.core.config import parse_config
from rcn.core.service import make_service
from rcn.logxfer.routes import Address
from rcn.metrics import MetricsRegistry
from tests.rcn.core.support import Endpoint, core_toml, get_metrics, metric, sealed_core, wr
from tests.support import free_port, key_ring


class ServiceTests(TestCase):
    timeout = 20

    def start(self, **kw):
        self.source, self.target = Endpoint(self), Endpoint(self)
        self.core = Address("127.0.0.1", free_port(socket.SOCK_DGRAM))
        keys = sealed_core(self, self.core, self.source, self.target)
        self.config = parse_config(tomllib.loads(
            core_toml(self.core, self.source.address, self.target.address, keys=keys, **kw)))
        self.registry = MetricsRegistry()
        self.top, self.relay = make_service(self.config, reactor, self.registry)
        self.top.startService()
        self.addCleanup(self._stop)

    def _stop(self):
        if self.top.running:
            return self.top.stopService()

    @defer.inlineCallbacks
    def test_wr_forward_and_wrok_back(self):
        self.start(batch=False)
        self.source.send(wr(1), self.core)
        entry, data, sender = yield self.target.next_entry()
        self.assertEqual((entry.header.entry_type, entry.header.sequence, entry.header.ttl),
                         (EntryType.WR, 1, 15))
        self.assertEqual(sender, self.core)
        self.target.send(wr(1, size=32, entry_type=EntryType.WROK), self.core)
        entry, _, _ = yield self.source.next_entry()
        self.assertEqual((entry.header.entry_type, entry.header.ttl), (EntryType.WROK, 15))
        text = self.registry.render().decode()
        self.assertEqual(metric(text, "rcn_core_forwarded_total"), 2.0)
        self.assertEqual(metric(text, "rcn_logxfer_received_total"), 2.0)
        self.assertEqual(metric(text, "rcn_core_routes"), 1.0)

    @defer.inlineCallbacks
    def test_entries_of_one_read_leave_as_one_batch(self):
        self.start(batch=True, max_delay_ms=5)
        for sequence in (1, 2, 3):
            self.source.send(wr(sequence), self.core)
        entry, data, _ = yield self.target.next_entry()
        self.assertEqual(entry.header.entry_type, EntryType.BATCH)
        _, spans = parse_batch(data)
        self.assertEqual(len(spans), 3)
        self.assertEqual(self.relay.counters()["batches_sent"], 1)

    @defer.inlineCallbacks
    def test_stop_sends_what_waits(self):
        self.start(batch=True, max_delay_ms=1000)
        self.source.send(wr(9), self.core)

        def queued():
            if self.relay.counters()["queued_entries"] == 1:
                poll.stop()
        poll = task.LoopingCall(queued)
        yield poll.start(0.01)
        self.assertEqual(self.target.arrived, [])
        text = self.registry.render().decode()
        self.assertEqual(metric(text, f'rcn_core_queue_entries{{next_hop="{self.target.address}"}}'),
                         1.0)
        self.assertEqual(metric(text, f'rcn_core_queue_bytes{{next_hop="{self.target.address}"}}'),
                         float(len(wr(9))))
        yield self.top.stopService()
        entry, _, _ = yield self.target.next_entry()
        self.assertEqual(entry.header.sequence, 9)

    @defer.inlineCallbacks
    def test_the_hop_state_is_kept_beside_the_key_file(self):
        from rcn.logxfer.hopstate import HopStateFile
        self.start(batch=False)
        state = HopStateFile(self.config.seal.keys + ".hop")
        reserved, marks = state.load()
        self.assertGreater(reserved, 0)                 # reserved before the socket opened
        captured = self.source.protocol.hop.seal(wr(1), self.core)
        self.source.port.write(captured, self.core.pair)
        yield self.target.next_entry()
        yield self.top.stopService()
        reserved_after, marks = state.load()            # the clean stop saved the window
        self.assertEqual(reserved_after, reserved)
        self.assertEqual(set(marks), {(self.source.address, 1)})
        # the core restarts: the datagram captured before is refused as replayed
        self.top, self.relay = make_service(self.config, reactor)
        self.top.startService()
        self.source.port.write(captured, self.core.pair)

        def refused():
            if self.relay.drops.by_reason["replayed"] == 1:
                poll.stop()
        poll = task.LoopingCall(refused)
        yield poll.start(0.01)
        self.assertEqual(self.target.arrived[1:], [])

    def test_a_bad_hop_state_file_stops_make_service(self):
        from rcn.logxfer.keys import KeyFileError
        self.source, self.target = Endpoint(self), Endpoint(self)
        self.core = Address("127.0.0.1", free_port(socket.SOCK_DGRAM))
        keys = sealed_core(self, self.core, self.source, self.target)
        with open(keys + ".hop", "w") as f:
            f.write("reserved nonsense\n")
        config = parse_config(tomllib.loads(
            core_toml(self.core, self.source.address, self.target.address, keys=keys)))
        with self.assertRaises(KeyFileError) as caught:      # the daemon's UsageError
            make_service(config, task.Clock())
        self.assertIn(f"{keys}.hop line 1", str(caught.exception))

    @defer.inlineCallbacks
    def test_metrics_over_http(self):
        self.source, self.target = Endpoint(self), Endpoint(self)
        self.core, port = Address("127.0.0.1", free_port(socket.SOCK_DGRAM)), free_port(socket.SOCK_STREAM)
        keys = sealed_core(self, self.core, self.source, self.target)
        config = parse_config(tomllib.loads(core_toml(
            self.core, self.source.address, self.target.address, keys=keys, batch=False,
            metrics_port=port)))
        self.top, self.relay = make_service(config, reactor)
        self.top.startService()
        self.addCleanup(self._stop)
        self.source.send(b"not a log entry", self.core)
        self.source.send(wr(1), self.core)
        yield self.target.next_entry()
        code, text = yield get_metrics(port)
        self.assertEqual(code, 200)
        self.assertEqual(metric(text, "rcn_core_forwarded_total"), 1.0)
        self.assertEqual(metric(text, 'rcn_core_dropped_total{reason="malformed"}'), 1.0)
        self.assertEqual(metric(text, f'rcn_core_queue_entries{{next_hop="{self.target.address}"}}'),
                         None)                                       # no batching: no queues
        self.assertEqual(metric(text, "rcn_core_queued_entries"), 0.0)


class ManagedCoreTests(TestCase):
    def test_a_core_under_a_server_starts_without_routes_and_takes_a_snapshots(self):
        from rcn.core.relay import CoreRelay
        from rcn.core.service import apply_snapshot
        config = parse_config({"core": {"id": "c1", "listen": "127.0.0.1:47950"},
                               "mgmt": {"connect": "tcp:127.0.0.1:47100"},
                               "seal": {"keys": "keys/c1.keys"}})
        self.assertEqual((config.seal.mode, config.seal.keys), ("aes-256-gcm", "keys/c1.keys"))
        self.assertEqual((len(config.routes), config.mgmt), (0, "tcp:127.0.0.1:47100"))
        relay = CoreRelay(config.routes, config.listen, lambda data, to: None, task.Clock())
        apply_snapshot(relay, 4, {"route": [{
            "source_wwn": "50:0a:09:80:00:00:00:01", "target_wwn": "50:0a:09:80:00:00:00:02",
            "path": ["127.0.0.1:47001", "127.0.0.1:47950", "127.0.0.1:47002"]}]})
        self.assertEqual(relay.routes.next_hop(0x500A098000000001, 0x500A098000000002,
                                               config.listen), Address("127.0.0.1", 47002))
        with self.assertRaises(Exception):
            parse_config({"core": {"id": "c1", "listen": "127.0.0.1:47950"},
                          "mgmt": {"connect": "udp:nowhere"}})

    def test_a_sealed_core_under_a_server_must_name_its_key_file(self):
        # it keeps the server's keys and its hop counters' reservation (KEYS.hop) there
        with self.assertRaises(ConfigError) as caught:
            parse_config({"core": {"id": "c1", "listen": "127.0.0.1:47950"},
                          "mgmt": {"connect": "tcp:127.0.0.1:47100"}})
        self.assertIn("seal.keys", str(caught.exception))
        self.assertIn("KEYS.hop", str(caught.exception))
        unsealed = parse_config({"core": {"id": "c1", "listen": "127.0.0.1:47950"},
                                 "mgmt": {"connect": "tcp:127.0.0.1:47100"},
                                 "seal": {"mode": "none"}})
        self.assertEqual(unsealed.seal.keys, None)

    def test_a_snapshots_link_keys_replace_the_hop_layers_and_group_keys_are_refused(self):
        from rcn.core.relay import CoreRelay
        from rcn.core.service import apply_snapshot
        from rcn.logxfer.keys import KeyRing
        from rcn.logxfer.protocol import Drops
        from rcn.logxfer.seal import HopSeal
        me, peer = Address("127.0.0.1", 47950), Address("127.0.0.1", 47001)
        relay = CoreRelay(parse_config({"core": {"id": "c1", "listen": str(me)},
                                        "mgmt": {"connect": "tcp:127.0.0.1:47100"},
                                        "seal": {"keys": "c1.keys"}}).routes,
                          me, lambda data, to: None, task.Clock())
        hop = HopSeal(me, KeyRing(), Drops())
        sent = key_ring(links=[(me, peer)], groups=[7])
        path = self.mktemp()
        apply_snapshot(relay, 5, {"keys": sent.to_snapshot()}, hop, path)
        self.assertEqual(hop.ring.neighbours(me), {peer})
        self.assertEqual(hop.ring.groups, {})
        held = KeyRing.load(path)
        self.assertEqual((held.groups, held.link_send_key(me, peer)),
                         ({}, sent.link_send_key(me, peer)))


class CoreConsoleTests(TestCase):
    def test_commands(self):
        from twisted.application import service as app_service

        from rcn.core.console import core_console
        from rcn.core.relay import CoreRelay
        config = parse_config({"core": {"id": "c1", "listen": "127.0.0.1:47950"},
                               "seal": {"mode": "none"},
                               "console": {"tcp": "tcp:2303:interface=127.0.0.1"},
                               "route": [{"source_wwn": "50:0a:09:80:00:00:00:01",
                                          "target_wwn": "50:0a:09:80:00:00:00:02",
                                          "path": ["127.0.0.1:47001", "127.0.0.1:47950",
                                                   "127.0.0.1:47002"]}]})
        relay = CoreRelay(config.routes, config.listen, lambda data, to: None, task.Clock())
        udp = app_service.Service()
        udp.startService()
        t = core_console(config, relay, udp)
        self.assertIn("device c1", t.run("sh ver"))
        self.assertIn("127.0.0.1:47001 > 127.0.0.1:47950", t.run("show routes"))
        self.assertRegex(t.run("show counters"), r"forwarded\s+0")
        t.run("clear counters")
        self.assertIn("administratively down", t.run("shutdown log-transfer"))
        self.assertIn("administratively down", t.run("show interfaces"))
        self.assertIn("interface up", t.run("no shut log"))
        self.assertIn("batching", t.run("show config"))
        self.assertEqual(t.run("debug log on"), "log-transfer debugging is on")
        self.assertTrue(relay.debug)
        self.assertEqual(t.run("debug log-transfer off"), "log-transfer debugging is off")
        self.assertFalse(relay.debug)
