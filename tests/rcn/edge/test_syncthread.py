"""SyncThread: work runs off the reactor thread, results and errors come back in order."""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from rcn.edge.syncthread import SyncThread


class SyncThreadTests(TestCase):
    def setUp(self):
        self.sync = SyncThread(reactor)
        self.addCleanup(self.sync.stop)

    @defer.inlineCallbacks
    def test_runs_in_another_thread_in_order(self):
        seen = []
        results = yield defer.gatherResults([
            self.sync.run(lambda n=n: (seen.append(n), threading.current_thread().name)[1])
            for n in range(5)])
        self.assertEqual(seen, list(range(5)))
        self.assertEqual(set(results), {"rcn-fsync"})

    @defer.inlineCallbacks
    def test_exception_becomes_a_failure_and_the_thread_goes_on(self):
        def broken():
            raise OSError(5, "EIO")
        with self.assertRaises(OSError):
            yield self.sync.run(broken)
        self.assertEqual((yield self.sync.run(lambda: 7)), 7)
