"""One thread for the edge's fsyncs, handed work through a C ``SimpleQueue``.

DESIGN.md 5, invariant 2 (a WR is acknowledged only once its entry is durable: group
commit) and 3 (the apply counter is persisted before it is relied on).

The log storage area and the apply counters run each group commit (a write and
an fsync) off the reactor thread. Twisted's ``deferToThread`` does that through
its thread pool, whose queue wakes the worker with a ``threading.Condition``:
profiled under load, that hand-off took a seventh of an edge's reactor time.
A single long-lived thread reading a ``queue.SimpleQueue`` (implemented in C,
no Condition) and answering with ``reactor.callFromThread`` does the same work
for a fraction of the cost. Commits are serial anyway (each store keeps at
most one in flight), so one thread serves both stores of an edge.
"""

from __future__ import annotations

import queue
import threading

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_STOP = object()


class SyncThread:
    """``run(fn)`` -> Deferred firing with ``fn()``'s result in the reactor thread."""

    def __init__(self, reactor, name: str = "rcn-fsync"):
        self.reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def run(self, fn) -> Deferred:
        d = Deferred()
        self._queue.put((fn, d))
        return d

    __call__ = run

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, d = item
            try:
                result = fn()
            except BaseException:
                self.reactor.callFromThread(d.errback, Failure())
            else:
                self.reactor.callFromThread(d.callback, result)

    def stop(self) -> None:
        """Let queued work finish, then end the thread (does not wait for it)."""
        self._queue.put(_STOP)
