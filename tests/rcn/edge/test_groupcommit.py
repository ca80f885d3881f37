"""GroupCommit: one commit at a time, the next at once, no recursion, no retry after a failure."""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import TestCase

from rcn.edge.groupcommit import GroupCommit
from tests.rcn.edge.test_logstore import FakeRunSync


class Owner:
    """Pending items; a commit takes them all."""

    def __init__(self, run_sync):
        self.pending: list[int] = []
        self.commits: list[list[int]] = []
        self.failures: list[list[int]] = []
        self.on_done = None
        self.keep_failed = False         # a failed batch goes back to pending (ApplyState)
        self.scheduler = GroupCommit(run_sync, self.prepare, self.done, self.failed)

    def add(self, item: int) -> None:
        self.pending.append(item)
        self.scheduler.kick()

    def prepare(self):
        if not self.pending:
            return None
        batch, self.pending = self.pending, []
        return (lambda: len(batch)), batch

    def done(self, result, batch) -> None:
        assert result == len(batch)
        self.commits.append(batch)
        if self.on_done is not None:
            self.on_done(batch)

    def failed(self, failure, batch) -> None:
        self.failures.append(batch)
        if self.keep_failed:
            self.pending.extend(batch)


class GroupCommitTests(TestCase):
    def test_items_arriving_during_a_commit_share_the_next(self):
        run_sync = FakeRunSync()
        owner = Owner(run_sync)
        owner.add(1)
        self.assertTrue(owner.scheduler.running)
        owner.add(2)
        owner.add(3)
        self.assertEqual(len(run_sync.calls), 1)         # one at a time
        run_sync.run_next()
        self.assertEqual(owner.commits, [[1]])
        self.assertEqual(len(run_sync.calls), 1)         # the next started at once
        run_sync.run_next()
        self.assertEqual(owner.commits, [[1], [2, 3]])
        self.assertFalse(owner.scheduler.running)

    def test_work_queued_by_completions_joins_the_next_commit(self):
        run_sync = FakeRunSync()
        owner = Owner(run_sync)
        owner.on_done = lambda batch: owner.add(batch[-1] + 1) if batch[-1] < 3 else None
        owner.add(1)
        run_sync.run_all()
        self.assertEqual(owner.commits, [[1], [2], [3]])

    def test_synchronous_run_sync_loops_instead_of_recursing(self):
        owner = Owner(lambda fn: succeed(fn()))
        owner.on_done = lambda batch: owner.add(batch[-1] + 1) if batch[-1] < 5000 else None
        owner.add(1)
        self.assertEqual(len(owner.commits), 5000)
        self.assertFalse(owner.scheduler.running)

    def test_a_failure_starts_nothing_until_the_next_kick(self):
        calls = []

        def run_sync(fn):                       # the first commit fails, later ones work
            calls.append(fn)
            return fail(OSError(5, "EIO")) if len(calls) == 1 else succeed(fn())

        owner = Owner(run_sync)
        owner.keep_failed = True
        owner.add(1)
        self.assertEqual(owner.failures, [[1]])
        self.assertFalse(owner.scheduler.running)
        self.assertEqual((owner.commits, owner.pending), ([], [1]))   # kept, not retried
        owner.scheduler.kick()
        self.assertEqual((owner.commits, owner.pending), ([[1]], []))
