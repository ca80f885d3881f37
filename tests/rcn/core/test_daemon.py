"""`twistd -n rcn-core` as a real process between two edges played by this test.

The source and target edges are log-transfer sockets in the test process; the
core is the installed daemon (run ``make venv`` after changing rcn/). Readiness
is a hop probe: the test sends KEEPALIVEs (target WWN 0) until the core echoes one.
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from datapath.frames.logentry import EntryType, build_keepalive, parse_datagram
from rcn.logxfer.routes import Address
from tests.rcn.core.support import Endpoint, core_toml, get_metrics, metric, sealed_core, wr
from tests.support import CollectOutput, free_port

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class DaemonTests(TestCase):
    timeout = 60

    def setUp(self):
        self.source, self.target = Endpoint(self), Endpoint(self)
        self.core = Address("127.0.0.1", free_port(socket.SOCK_DGRAM))
        self.metrics_port = free_port(socket.SOCK_STREAM)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "core.toml")
        with open(config, "w") as f:
            f.write(core_toml(self.core, self.source.address, self.target.address,
                              keys=sealed_core(self, self.core, self.source, self.target),
                              metrics_port=self.metrics_port))
        self.daemon = CollectOutput()
        self.process = reactor.spawnProcess(
            self.daemon, TWISTD,
            ["twistd", "-n", "--pidfile=", "--logfile=-", "rcn-core", "--config", config],
            env=dict(os.environ), path=self.dir)
        self.addCleanup(self._stop)
        return self._until_answering()

    def _until_answering(self):
        """Probe the core's hop until it echoes; fail at once if the daemon exits."""
        probe = build_keepalive(1, 0)

        def check():
            if any(e.header.entry_type == EntryType.KEEPALIVE for e, _, _ in self.source.arrived):
                poll.stop()
            elif self.daemon.ended.called:
                raise RuntimeError(f"rcn-core exited: {self.daemon.ended.result}")
            else:
                self.source.send(probe, self.core)
        poll = task.LoopingCall(check)
        return poll.start(0.05)

    def _stop(self):
        if self.daemon.ended.called:
            return None
        self.process.signalProcess("TERM")
        return self.daemon.ended

    @defer.inlineCallbacks
    def test_wr_through_wrok_back_garbage_survived(self):
        self.source.arrived.clear()
        self.source.send(wr(1), self.core)
        entry, data, sender = yield self.target.next_entry()
        self.assertEqual((entry.header.entry_type, entry.header.sequence, entry.header.ttl),
                         (EntryType.WR, 1, 15))
        self.assertEqual(sender, self.core)
        self.assertEqual(entry.payload, parse_datagram(wr(1)).payload)

        self.target.send(wr(1, size=40, entry_type=EntryType.WROK), self.core)
        entry, _, sender = yield self.source.next_entry()
        self.assertEqual((entry.header.entry_type, entry.header.sequence, entry.header.ttl),
                         (EntryType.WROK, 1, 15))
        self.assertEqual(sender, self.core)

        for garbage in (b"", b"\xff" * 100, b"RCNL" + b"\x00" * 200, wr(2)[:-3]):
            self.source.send(garbage, self.core)
        self.source.send(wr(3), self.core)
        entry, _, _ = yield self.target.next_entry()
        self.assertEqual(entry.header.sequence, 3)              # still relaying
        self.assertFalse(self.daemon.ended.called)

        code, text = yield get_metrics(self.metrics_port)
        self.assertEqual(code, 200)
        self.assertEqual(metric(text, "rcn_core_forwarded_total"), 3.0)
        self.assertEqual(metric(text, 'rcn_core_dropped_total{reason="malformed"}'), 2.0)
        self.assertEqual(metric(text, 'rcn_core_dropped_total{reason="bad_magic"}'), 1.0)
        self.assertEqual(metric(text, 'rcn_core_dropped_total{reason="unknown_version"}'), 1.0)
        self.assertGreaterEqual(metric(text, "rcn_core_keepalives_answered_total"), 1.0)
