"""The bench workload: the state machine with a scripted client and a Clock, then the real
process (``python -m rcn.bench.workload``) against a real ``python -m rcn.storage.nbdserve``
server."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from rcn.bench.consistency import (STAMPED, check_final, check_prefix, decode_blocks,
                                   read_journal)
from rcn.bench.workload import DRAIN_TIMEOUT, JournalWriter, Workload
from rcn.nbd.client import NbdError
from tests.support import free_port, until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
RUN = 42
BLOCK = 512


class ScriptedClient:
    """Records each write; the test fires its Deferred."""

    def __init__(self):
        self.writes: list[tuple[int, bytes, Deferred]] = []

    def write(self, offset: int, data: bytes) -> Deferred:
        d = Deferred()
        self.writes.append((offset, data, d))
        return d

    def pending(self) -> list[tuple[int, bytes, Deferred]]:
        return [w for w in self.writes if not w[2].called]


class WorkloadTests(TestCase):
    def make(self, depth=4, rate=0.0, blocks=64, seed=1):
        self.clock = task.Clock()
        self.clock.advance(100.0)
        self.client = ScriptedClient()
        self.journal_path = self.mktemp()
        self.journal = JournalWriter(self.journal_path, RUN, BLOCK)
        self.addCleanup(self.journal.close)
        self.workload = Workload(self.client, self.journal, block=BLOCK, depth=depth, rate=rate,
                                 region_offset=8 * BLOCK, region_length=blocks * BLOCK,
                                 seed=seed, run_id=RUN, clock=self.clock,
                                 now=self.clock.seconds)
        return self.workload

    def test_depth_bounds_writes_in_flight(self):
        self.make(depth=4).start()
        self.assertEqual(len(self.client.writes), 4)
        self.client.writes[0][2].callback(None)
        self.assertEqual(len(self.client.writes), 5)
        self.assertEqual(len(self.client.pending()), 4)
        self.assertEqual(self.workload.figures()["in_flight"], 4)

    def test_writes_are_stamped_blocks_in_the_region(self):
        self.make(depth=3).start()
        for index, (offset, data, _) in enumerate(self.client.writes, start=1):
            self.assertEqual(len(data), BLOCK)
            self.assertTrue(8 * BLOCK <= offset < 72 * BLOCK and offset % BLOCK == 0)
            decoded = decode_blocks(data, BLOCK, RUN, offset)
            self.assertEqual(decoded.state[0], STAMPED)
            self.assertEqual((int(decoded.index[0]), decoded.issued_at[0]), (index, 100.0))

    def test_never_a_block_with_a_write_in_flight(self):
        self.make(depth=6, blocks=8, seed=3).start()
        for _ in range(500):
            busy = [offset for offset, _, _ in self.client.pending()]
            self.assertEqual(len(busy), len(set(busy)), busy)
            self.client.pending()[0][2].callback(None)
        self.assertEqual(self.workload.acked, 500)

    def test_depth_beyond_the_region_is_capped(self):
        self.make(depth=16, blocks=4).start()
        self.assertEqual(len(self.client.writes), 4)
        self.assertEqual(sorted(o for o, _, _ in self.client.writes),
                         [8 * BLOCK, 9 * BLOCK, 10 * BLOCK, 11 * BLOCK])

    def test_rate_paces_writes(self):
        self.make(depth=100, rate=10.0).start()
        self.assertEqual(len(self.client.writes), 1)        # write 1 is due at once
        for _ in range(9):
            self.clock.advance(0.1)
        self.assertEqual(len(self.client.writes), 10)
        self.clock.advance(0.05)
        self.assertEqual(len(self.client.writes), 10)

    def test_late_reactor_catches_up_in_a_burst(self):
        self.make(depth=100, rate=10.0).start()
        self.clock.advance(0.5)                             # one late wake-up
        self.assertEqual(len(self.client.writes), 6)
        issued = [decode_blocks(d, BLOCK, RUN, o).issued_at[0] for o, d, _ in
                  self.client.writes[1:]]
        self.assertEqual(issued, [100.5] * 5)

    def test_long_stall_owes_at_most_a_second(self):
        self.make(depth=2, rate=10.0).start()
        self.clock.advance(0.1)                             # depth 2 is full
        self.clock.advance(5.0)                             # the server stalls for 5 s
        for _, _, d in self.client.pending():
            d.callback(None)
        self.assertEqual(len(self.client.writes), 4)        # depth-bound again
        while len(self.client.writes) < 40 and self.client.pending():
            self.client.pending()[0][2].callback(None)
        # one second (10 writes) owed at 105.1, then the schedule: no 50-write burst
        self.assertEqual(len(self.client.writes), 2 + 10)

    def test_error_reply_counted_failed_and_run_goes_on(self):
        self.make(depth=2).start()
        self.client.writes[0][2].errback(NbdError("NBD WRITE: the server answered EIO", 5))
        self.client.writes[1][2].callback(None)
        self.assertEqual((self.workload.failed, self.workload.acked), (1, 1))
        self.assertIsNone(self.workload.error)
        self.assertIn("write 1 at offset", self.workload.last_error)
        self.assertIn("EIO", self.workload.last_error)
        self.assertEqual(len(self.client.pending()), 2)     # still issuing
        journal = read_journal(self.journal_path)
        self.assertEqual(journal.index.tolist(), [1, 2])
        self.assertEqual(journal.ok.tolist(), [False, True])

    def test_lost_connection_ends_the_run(self):
        finished = self.make(depth=3).start()
        for _, _, d in self.client.writes[:3]:
            d.errback(NbdError("NBD: connection lost with the request outstanding"))
        self.assertEqual(len(self.client.writes), 3)        # nothing more issued
        self.assertIsNone(self.successResultOf(finished))
        self.assertIn("connection lost", self.workload.error)
        self.assertEqual(self.workload.failed, 3)
        self.assertEqual(read_journal(self.journal_path).ok.tolist(), [False] * 3)

    def test_stop_waits_for_writes_in_flight(self):
        finished = self.make(depth=3).start()
        self.workload.stop()
        self.assertNoResult(finished)
        for _, _, d in self.client.writes:
            d.callback(None)
        self.assertIsNone(self.successResultOf(finished))
        self.assertEqual(len(self.client.writes), 3)
        self.assertEqual((self.workload.acked, self.workload.figures()["in_flight"]), (3, 0))
        journal = read_journal(self.journal_path)
        self.assertEqual(sorted(journal.index.tolist()), [1, 2, 3])
        self.assertEqual(journal.completed_at.tolist(), [100.0] * 3)

    def test_drain_timeout_counts_the_stragglers_failed(self):
        finished = self.make(depth=3).start()
        self.client.writes[0][2].callback(None)
        self.workload.stop()
        self.clock.advance(DRAIN_TIMEOUT - 0.1)
        self.assertNoResult(finished)
        self.clock.advance(0.1)
        self.successResultOf(finished)
        self.assertEqual((self.workload.acked, self.workload.failed), (1, 3))
        self.assertIn("3 writes still in flight", self.workload.last_error)
        self.client.writes[1][2].callback(None)             # too late: ignored
        journal = read_journal(self.journal_path)
        self.assertEqual(journal.ok.tolist(), [True, False, False, False])
        self.assertEqual(self.workload.acked, 1)


# -- the real process ----------------------------------------------------------------------
# The reactor runs the children and polls their status files: no test sleeps or blocks.

def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _status(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Child(protocol.ProcessProtocol):
    """A child the reactor runs: its output as text, ``ended`` fires with its exit status."""

    def __init__(self):
        self.out, self.err = [], []
        self.ended = Deferred()
        self.returncode = None
        self.pid = None

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        self.returncode = reason.value.exitCode
        self.ended.callback(self.returncode)

    @property
    def stdout(self) -> str:
        return b"".join(self.out).decode(errors="replace")

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode(errors="replace")


def spawn(*args: str) -> Child:
    """``python ARGS`` in the checkout, under the reactor."""
    child = Child()
    child.pid = reactor.spawnProcess(child, sys.executable, [sys.executable, *args], env=_env(),
                                     path=ROOT).pid        # the transport forgets it at the end
    return child


class WorkloadProcessTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def serve(self, size: str = "1MiB"):
        """Start ``python -m rcn.storage.nbdserve`` on a fresh file; its URL."""
        self.volume = os.path.join(self.dir, "volume.img")
        self.server = spawn("-m", "rcn.storage.nbdserve", "--export", f"vol={self.volume}:{size}",
                            "--port", "0", "--quiet")
        self.addCleanup(self._stop, self.server)
        yield until("the NBD server listening",
                    lambda: "\n" in self.server.stdout or self.server.ended.called, 30)
        line = self.server.stdout.split("\n", 1)[0]
        if not line.startswith("listening on "):
            self.fail(f"the NBD server did not start: {line}{self.server.stderr}")
        return f"nbd://{line.split()[-1]}/vol"

    def _stop(self, child: Child):
        if child.ended.called:
            return None
        child.transport.signalProcess("TERM")
        kill = reactor.callLater(10, child.transport.signalProcess, "KILL")
        return child.ended.addBoth(lambda _: kill.cancel() if kill.active() else None)

    def start(self, url: str, *extra: str) -> Child:
        self.journal, self.status = (os.path.join(self.dir, n) for n in ("journal", "status"))
        child = spawn("-m", "rcn.bench.workload", "--url", url, "--journal", self.journal,
                      "--status", self.status, *extra)
        self.addCleanup(self._stop, child)
        return child

    def acked(self) -> int:
        return (_status(self.status) or {}).get("acked", 0)

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    @defer.inlineCallbacks
    def test_paced_run_until_sigterm(self):
        url = yield self.serve()
        proc = self.start(url, "--rate", "500", "--depth", "8", "--block", "4096",
                          "--region", "64KiB:512KiB", "--run-id", "77", "--seed", "5")
        yield until("400 writes acked", lambda: self.acked() >= 400, 30)
        proc.transport.signalProcess("TERM")
        yield proc.ended
        self.assertEqual(proc.returncode, 0, proc.stderr)

        status = _status(self.status)
        journal = read_journal(self.journal)
        self.assertTrue(status["done"])
        self.assertIsNone(status["error"])
        self.assertEqual((status["run_id"], status["block"], status["pid"]), (77, 4096, proc.pid))
        self.assertEqual((journal.run_id, journal.block), (77, 4096))
        self.assertEqual(status["in_flight"], 0)
        self.assertEqual(status["issued"], len(journal.index))
        self.assertEqual(status["acked"], int(journal.ok.sum()))
        self.assertEqual(status["failed"], 0)
        self.assertEqual(status["bytes_acked"], 4096 * status["acked"])
        self.assertEqual(sorted(journal.index.tolist()), list(range(1, status["issued"] + 1)))
        # paced: never ahead of 500/s, and not far behind on an idle server
        self.assertLessEqual(status["issued"], 500 * status["elapsed_s"] + 1)
        self.assertGreaterEqual(status["issued"], 0.5 * 500 * status["elapsed_s"])
        self.assertGreater(status["issued"], 300)

        final = check_final(journal, self.volume, 64 << 10, 512 << 10)
        self.assertTrue(final.ok, final.violations)
        self.assertGreater(final.figures["written"], 50)
        prefix = check_prefix(journal, self.volume, 64 << 10, 512 << 10, live=False)
        self.assertTrue(prefix.ok, prefix.violations)
        self.assertGreater(prefix.figures["required"], 300)
        untouched = check_final(journal, self.volume, 0, 64 << 10)
        self.assertEqual(untouched.figures["stamped"], 0)

    @defer.inlineCallbacks
    def test_wrong_url_exits_1_with_the_error_in_status(self):
        port = free_port()
        proc = self.start(f"nbd://127.0.0.1:{port}/vol")
        yield proc.ended
        err = proc.stderr
        self.assertEqual(proc.returncode, 1, err)
        status = _status(self.status)
        self.assertTrue(status["done"])
        self.assertIn(f"cannot connect to nbd://127.0.0.1:{port}/vol", status["error"])
        self.assertEqual(status["issued"], 0)
        self.assertIn("cannot connect", err)

    @defer.inlineCallbacks
    def test_region_beyond_the_export_exits_1(self):
        url = yield self.serve("1MiB")
        proc = self.start(url, "--region", "512KiB:1MiB")
        yield proc.ended
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("--region 524288:1048576: the export", _status(self.status)["error"])
        self.assertIn("has 1048576 bytes, too few to hold it", _status(self.status)["error"])

    @defer.inlineCallbacks
    def test_server_gone_mid_run_exits_1(self):
        url = yield self.serve()
        proc = self.start(url, "--depth", "4", "--rate", "200", "--region", "0:256KiB")
        yield until("acks", lambda: self.acked() > 20, 30)
        self.server.transport.signalProcess("KILL")
        yield proc.ended
        self.assertEqual(proc.returncode, 1, proc.stderr)
        status = _status(self.status)
        self.assertTrue(status["done"])
        self.assertRegex(status["error"], "connection|lost")
        journal = read_journal(self.journal)
        self.assertEqual(status["acked"] + status["failed"], len(journal.index))
        self.assertEqual(status["issued"], len(journal.index))

    @defer.inlineCallbacks
    def test_help_exits_0(self):
        proc = spawn("-m", "rcn.bench.workload", "--help")
        yield proc.ended
        self.assertEqual(proc.returncode, 0, proc.stderr)
        for option in ("--url", "--journal", "--status", "--block", "--depth", "--rate",
                       "--region", "--seed", "--run-id", "--seconds"):
            self.assertIn(option, proc.stdout)

    @defer.inlineCallbacks
    def test_bad_option_exits_2_naming_it(self):
        proc = spawn("-m", "rcn.bench.workload", "--url", "nbd://127.0.0.1:1/v", "--journal",
                     "j", "--status", "s", "--block", "1000")
        yield proc.ended
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--block 1000: a multiple of 512", proc.stderr)
