"""Group commit: at most one disk commit in flight, the next as soon as it ends.

The log store (``rcn.edge.logstore``) and the apply counters
(``rcn.edge.applystate``) both make their writes durable this way: a commit is
one ``run_sync`` call (a thread by default, so the reactor never waits for the
disk) that takes everything pending when it starts; what arrives while it runs
waits for the next, which starts when it ends. An idle owner pays one thread
hop and one fsync per write; a busy one gets one fsync for many.

``GroupCommit`` is only the scheduling; the owner says what a commit is:

``prepare()``
    Take everything pending into one job and return ``(work, job)``: ``work()``
    runs in ``run_sync`` (it must touch no owner state), ``job`` comes back to
    ``done``/``failed``. Return None when there is nothing to do (the owner may
    finish a close there).
``done(result, job)``
    ``work``'s result. It runs while the commit still counts as running, so
    whatever the callbacks it fires queue joins the next commit; then the next
    commit is prepared.
``failed(failure, job)``
    ``work`` raised. The commit no longer counts as running; nothing else
    starts until the owner calls ``kick`` again.
"""

from __future__ import annotations

import os

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
fdatasync = getattr(os, "fdatasync", os.fsync)     # where the platform has no fdatasync


def fsync_path(path: str, directory: bool = False) -> None:
    """Open ``path``, fsync it, close it: a file's data, or with ``directory`` the
    entries of a directory (a new or renamed file is durable only after that)."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else os.O_WRONLY
    fd = os.open(path, flags | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fire(d) -> None:
    """Fire a completion's Deferred (None), unless it fired already (a cancelled one has)."""
    if d is not None and not d.called:
        d.callback(None)


def fail(d, exc: Exception) -> None:
    """Fail a completion's Deferred with ``exc``, unless it fired already."""
    if d is not None and not d.called:
        d.errback(exc)


def default_run_sync(fn):
    """``deferToThread``, imported late: library modules never import the reactor."""
    from twisted.internet.threads import deferToThread
    return deferToThread(fn)


class GroupCommit:
    """One owner's commit scheduler. See the module docstring."""

    __slots__ = ("_run_sync", "_prepare", "_done", "_failed", "running", "_starting", "_again")

    def __init__(self, run_sync, prepare, done, failed):
        self._run_sync = run_sync or default_run_sync
        self._prepare = prepare
        self._done = done
        self._failed = failed
        self.running = False
        self._starting = False
        self._again = False

    def kick(self) -> None:
        """Start a commit if none is running and ``prepare`` has one.

        A loop, not recursion, when ``run_sync`` completes synchronously (the
        commit's completion asks for the next commit while this one is starting).
        """
        if self._starting:
            self._again = True
            return
        self._starting = True
        try:
            self._again = True
            while self._again:
                self._again = False
                if not self.running:
                    self._start()
        finally:
            self._starting = False

    def _start(self) -> None:
        planned = self._prepare()
        if planned is None:
            return
        work, job = planned
        self.running = True
        d = self._run_sync(work)
        d.addCallbacks(self._ok, self._error, callbackArgs=(job,), errbackArgs=(job,))

    def _ok(self, result, job) -> None:
        self._done(result, job)
        self.running = False
        self.kick()

    def _error(self, failure, job) -> None:
        self.running = False
        self._failed(failure, job)
