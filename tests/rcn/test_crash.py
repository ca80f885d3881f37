"""Crash tests: kill devices of a real lab mid-workload; no acknowledged write is lost.

A lab (``rcn.lab``: two arrays, two edges, one core, durable logs) runs as real
daemons on loopback. The test writes random blocks to the source array's
volume through NBD (our client, several writes in flight), kills a device with
SIGKILL at a chosen point, starts it again with the same configuration, and at
the end waits until the target edge has applied every entry; the target
volume file must then equal the source volume file byte for byte.

The source edge is killed once while the host is idle and the core is stopped
(SIGSTOP), so its log storage area holds entries the target has not applied:
the restarted edge must replay them; and once with the array's RIOs in flight,
which puts the source array alone in failure Suspend: when the edge is back the
array resynchronises by itself (``auto_resync``), copying only its bitmap.
The target array, killed mid-workload, comes back with its pair rows and
bitmaps (``pairs.json``, ``lun<N>.bitmap``) and takes the replayed writes.
"""

from __future__ import annotations

import os
import random
import signal

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from rcn import lab as lablib
from rcn.bench import faults
from rcn.nbd.client import connect_url
from tests.support import until

MiB = 1 << 20
CAPACITY = 16 * MiB


def _wait(predicate, timeout: float, what: str):
    """``until`` for a predicate that may raise while a daemon restarts (counts as false)."""
    def tolerant():
        try:
            return predicate()
        except Exception:
            return False
    return until(what, tolerant, timeout)


class CrashTests(TestCase):
    timeout = 240

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        topology = lablib.Topology(capacity=CAPACITY, log_mode="durable")
        self.lab = lablib.up(topology, self.dir)
        self.addCleanup(lablib.down, self.dir, quiet=True)
        self.devices = {d["name"]: d for d in self.lab["devices"]}
        self.rng = random.Random(7)
        self.acked = 0

    def status(self, name: str) -> dict:
        return faults.device_status(self.devices[name])

    @defer.inlineCallbacks
    def write(self, count: int, depth: int = 8, events: dict | None = None):
        """``count`` random writes (4..64 KiB), ``depth`` in flight; ``events[n]()`` runs
        (and is waited for) once ``n`` writes of this call were acknowledged."""
        events = dict(events or {})
        client = yield connect_url(reactor, self.lab["nbd_url"])
        blocks = CAPACITY // 4096
        pending: set = set()
        start = self.acked
        for _ in range(count):
            while len(pending) >= depth:
                yield defer.DeferredList(list(pending), fireOnOneCallback=True,
                                         fireOnOneErrback=True)
            for at in sorted(events):
                if self.acked - start >= at:
                    yield events.pop(at)()
            size = self.rng.choice((1, 2, 4, 16)) * 4096
            offset = self.rng.randrange(blocks - size // 4096) * 4096
            d = client.write(offset, self.rng.randbytes(size))
            pending.add(d)
            d.addCallback(self._acked, d, pending)
        yield defer.gatherResults(list(pending))
        yield client.flush()
        yield client.disconnect()

    def _acked(self, _, d, pending):
        pending.discard(d)
        self.acked += 1

    def kill(self, name: str):
        return threads.deferToThread(faults.kill, self.dir, name)

    @defer.inlineCallbacks
    def restart(self, name: str):
        self.lab = yield threads.deferToThread(lablib.restart, self.dir, name)
        self.devices = {d["name"]: d for d in self.lab["devices"]}

    def pair(self, array: str) -> dict:
        return lablib.get_json(self.devices[array]["urls"]["control"] + "/pairs/0")

    @defer.inlineCallbacks
    def assert_target_equals_source(self, replication_failures: bool = False):
        yield threads.deferToThread(lablib.wait_applied, self.lab, 120)
        pair = self.lab["pairs"][0]
        self.assertEqual(os.path.getsize(pair["source_volume"]), CAPACITY)
        self.assertTrue(faults.volumes_equal(pair), "target volume differs from the source")
        if not replication_failures:
            self.assertEqual(self.status("arrayA")["replication"]["failed"], 0)

    @defer.inlineCallbacks
    def test_core_killed_and_restarted_mid_workload(self):
        # the source edge keeps acknowledging and retaining while the core is gone
        yield self.write(300, events={100: lambda: self.kill("core1"),
                                      200: lambda: self.restart("core1")})
        yield self.assert_target_equals_source()
        self.assertGreater(self.status("edgeA")["sender"]["retransmits"], 0)

    @defer.inlineCallbacks
    def test_target_edge_killed_and_restarted_mid_workload(self):
        @defer.inlineCallbacks
        def crash():
            yield self.kill("edgeB")
            yield self.restart("edgeB")
        yield self.write(300, events={100: crash})
        yield self.assert_target_equals_source()
        # what was in flight to the dead edge came again
        self.assertGreater(self.status("edgeA")["sender"]["retransmits"], 0)

    @defer.inlineCallbacks
    def test_source_edge_killed_with_retained_entries_replays_them(self):
        yield self.write(50)
        lablib.signal_device(self.dir, "core1", signal.SIGSTOP)
        yield self.write(100)                 # acknowledged: durable at edgeA, not applied
        retained = self.status("edgeA")["groups"][0]["log_retained_entries"]
        self.assertGreater(retained, 0)
        yield self.kill("edgeA")
        yield self.restart("edgeA")
        lablib.signal_device(self.dir, "core1", signal.SIGCONT)
        yield _wait(lambda: self.status("arrayA")["edge_link"] == "up", 30,
                    "arrayA to reconnect to the restarted edgeA")
        self.assertGreaterEqual(self.status("edgeA")["counters"]["replayed"], retained)
        yield self.write(50)
        yield self.assert_target_equals_source()

    @defer.inlineCallbacks
    def test_source_edge_killed_with_writes_in_flight_array_resyncs_by_itself(self):
        yield self.write(300, events={100: lambda: self.kill("edgeA"),
                                      150: lambda: self.restart("edgeA")})
        yield _wait(lambda: self.pair("arrayA")["state"] == "duplex", 60,
                    "arrayA's pair to resync by itself to duplex")
        pair = self.pair("arrayA")
        self.assertEqual(pair["copy"]["kind"], "resync")
        self.assertLess(pair["copy"]["bytes_total"], CAPACITY)       # the bitmap, not all
        yield self.write(50)
        yield self.assert_target_equals_source(replication_failures=True)
        self.assertEqual((self.pair("arrayB")["state"], self.pair("arrayA")["link_lost"]),
                         ("duplex", False))

    @defer.inlineCallbacks
    def test_target_array_killed_resumes_with_its_pairs(self):
        @defer.inlineCallbacks
        def crash():
            yield self.kill("arrayB")
            yield self.restart("arrayB")
        yield self.write(300, events={100: crash})
        yield self.assert_target_equals_source()
        self.assertEqual(self.pair("arrayB")["state"], "duplex")
        group = self.status("edgeB")["groups"][0]
        self.assertEqual((group["refused"], group["unusable"]), (0, None))
