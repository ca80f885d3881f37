"""The durable side of the log store: group commits into segment files.

``SegmentWriter`` is what ``rcn.edge.logstore.LogStore`` adds in ``durable``
mode: it owns the directory lock, the current segment, the records waiting for
a commit and the checkpoints. The store keeps the groups (retained entries,
sequences, quotas) and tells the writer what happened; the writer reads the
groups' counters to write checkpoints. Records are laid out by
``rcn.edge.logrecords`` (the tables of ``datapath.frames.logstore``); the disk
work runs in ``rcn.edge.logfiles.run_job``.

Group commit
------------
``append`` puts the record into a pending buffer and, when no commit is
running, starts one *at once* (not on the next reactor turn: an idle edge then
pays one thread hop and one fsync per write, the lowest latency it can get,
and a busy one batches anyway, because everything appended while a commit runs
waits for the next). A commit is a single ``run_sync`` call (a thread by
default) that takes all pending records, writes them with one ``os.write`` and
makes them durable with one ``fdatasync``; when it returns, the Deferreds of
all its records fire. At most one commit runs at a time, and the next starts as
soon as the running one ends (``rcn.edge.groupcommit``), so under load one
fsync covers many entries. The reactor thread never waits for the disk. Records
reach the file in the order ``append`` admitted them: within a group that is
the order of the ``append`` calls (a group's appends queue behind one that
waits for quota); an append that waited for quota lands after other groups'
later appends.

A failed write or fsync takes the store out of service: the Deferreds of that
commit, of every pending record and of every append waiting for quota fail
with ``LogStoreError``, and later appends raise it. After a failed fsync Linux
may drop the dirty pages and report success next time, so retrying would
acknowledge writes that are not on disk; reopen the store instead (replay
finds what really is).

Checkpoints
-----------
Delete progress is persisted by CHECKPOINT records, without an fsync of their
own: re-sending an entry the target already applied after a crash is harmless
(it re-acknowledges). A CHECKPOINT with the groups whose D moved is added

* to every commit that writes entries anyway (free: same write, same fsync);
* on its own (written, not fsynced) once ``checkpoint_every`` deletes have
  accumulated, or ``checkpoint_interval`` seconds after the first unpersisted
  delete when a clock is given (an idle edge);
* to the final commit of ``close()`` (fsynced, so a clean restart re-sends
  nothing).

Segments, rollover, reclaim
---------------------------
When the current segment holds ``segment_bytes`` or more, the next commit
opens a new segment (after ``fdatasync``ing the old one, so only the newest
segment can have an unsynced tail) that begins with a CHECKPOINT of every
group's (generation, D); the new file and its directory entry are synced in
that commit. A segment that is not the current one and whose ENTRY records are
all deleted is unlinked (by the next commit, after its fsync, never before the
checkpoint at the head of a newer segment is durable), so generation counters
survive the loss of every old segment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from twisted.logger import Logger

from rcn.edge.groupcommit import GroupCommit, fail, fire
from rcn.edge.logfiles import (JobResult, LogStoreError, lock_directory, read_segments, run_job,
                               segment_numbers, SegmentScan)
from rcn.edge.logrecords import encode_checkpoint, encode_entry, segment_name

_log = Logger(namespace="rcn.edge.logstore")


@dataclass
class _Job:
    """One ``run_sync`` call: write, maybe fsync, maybe roll over, maybe unlink."""

    deferreds: list = field(default_factory=list)
    entries: int = 0
    nbytes: int = 0
    new_segment: int | None = None
    unlink: list = field(default_factory=list)
    sync: bool = False
    final: bool = False


class SegmentWriter:
    """The segment files of one durable log store. See the module docstring.

    ``groups`` is the store's dict of group states (read for checkpoints, their
    ``written`` and ``where`` kept up to date here); ``counters`` the store's
    counters. ``on_failed(error)`` runs after a failed commit has failed its own
    records; ``on_closed()`` when the final commit (or a failure while closing)
    leaves nothing to do.
    """

    def __init__(self, directory: str, groups: dict, counters: dict, *, run_sync,
                 segment_bytes: int, checkpoint_every: int, checkpoint_interval: float, clock,
                 on_failed, on_closed):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._groups = groups
        self._counters = counters
        self._clock = clock
        self._on_failed = on_failed
        self._on_closed = on_closed
        self._commit = GroupCommit(run_sync, self._prepare, self._job_done, self._job_failed)
        # files
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._current: int | None = None        # segment number of _fd
        self._seg_size = 0
        self._next_segment = 1
        self.segments: dict[int, int] = {}      # segment number -> live ENTRY records
        self._reclaim: set[int] = set()         # not current, no live entries
        # commits
        self.pending: list = []                 # (group, sequence, pieces, Deferred)
        self._dirty: set[int] = set()           # groups whose D moved since their last checkpoint
        self._deletes_since = 0
        self._checkpoint_due = False
        self._timer = None
        self.failed: LogStoreError | None = None
        self._closing = False
        self._closed = False

    # -- opening ------------------------------------------------------------------

    def open(self) -> SegmentScan:
        """Take the directory's lock and read the segments; the store rebuilds its
        groups from the scan (``place``, ``moved``) and then calls ``replayed``."""
        lock_fd = lock_directory(self.directory)
        try:
            numbers = segment_numbers(self.directory)
            scan = read_segments(self.directory, numbers)
        except BaseException:
            os.close(lock_fd)
            raise
        self._counters["torn_tails"] += scan.torn_tails
        self._counters["replayed_segments"] = len(numbers)
        self.segments = dict.fromkeys(numbers, 0)
        self._next_segment = (numbers[-1] + 1) if numbers else 1
        self._lock_fd = lock_fd
        return scan

    def place(self, grp, sequence: int, number: int) -> None:
        """A replayed retained entry lives in segment ``number``."""
        grp.where[sequence] = number
        self.segments[number] += 1

    def replayed(self) -> None:
        self._reclaim = {n for n, live in self.segments.items() if live == 0}

    # -- what the store tells ---------------------------------------------------------

    def queue(self, group: int, sequence: int, entry: bytes, d) -> None:
        """An admitted entry: its record waits for the next commit."""
        self.pending.append((group, sequence, encode_entry(group, sequence, entry), d))

    def forget(self, grp, sequence: int) -> None:
        """``sequence`` was deleted: its segment holds one live record less."""
        number = grp.where.pop(sequence, None)
        if number is not None and number in self.segments:
            self.segments[number] -= 1
            if self.segments[number] == 0 and number != self._current:
                self._reclaim.add(number)

    def moved(self, group: int) -> None:
        """The group's delete counter moved: the next checkpoint carries it."""
        self._dirty.add(group)

    def deleted(self) -> None:
        """A delete happened (not while closing): count it towards a checkpoint."""
        self._deletes_since += 1
        if (self._dirty and self._timer is None and self._clock is not None
                and self.checkpoint_interval):
            self._timer = self._clock.callLater(self.checkpoint_interval, self._checkpoint_timer)
        self.kick()

    def kick(self) -> None:
        self._commit.kick()

    def _checkpoint_timer(self) -> None:
        self._timer = None
        if self._dirty:
            self._checkpoint_due = True
            self.kick()

    # -- commits ------------------------------------------------------------------

    def _prepare(self):
        if self._closed:
            return None
        if self.failed is not None:
            if self._closing:
                self._on_closed()
            return None
        checkpoint = bool(self._dirty) and (
            self._checkpoint_due or self._deletes_since >= self.checkpoint_every or self._closing)
        write = bool(self.pending) or checkpoint
        unlink = self._current is not None and bool(self._reclaim)
        if self._closing:
            if write or self._fd is not None:
                return self._plan(write, checkpoint, final=True)
            self._on_closed()
        elif write or unlink:
            return self._plan(write, checkpoint, final=False)
        return None

    def _checkpoint_items(self, groups) -> list[tuple[int, int, int]]:
        items = []
        for group in sorted(groups):
            grp = self._groups[group]
            items.append((group, max(grp.written, grp.deleted), grp.deleted))
        return items

    def _checkpointed(self) -> None:
        self._dirty.clear()
        self._deletes_since = 0
        self._checkpoint_due = False
        self._counters["checkpoints"] += 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _roll_over(self, job: _Job, pieces: list) -> None:
        """The batch goes to a new segment that begins with every group's checkpoint."""
        number = job.new_segment = self._next_segment
        self._next_segment += 1
        old = self._current
        self._current = number
        self.segments[number] = 0
        self._seg_size = 0
        if old is not None and self.segments.get(old) == 0:
            self._reclaim.add(old)
        # Every group's state before this batch: if the batch is torn, nothing
        # in this checkpoint claims its sequences.
        pieces.append(encode_checkpoint(self._checkpoint_items(self._groups)))
        self._checkpointed()

    def _take_records(self, job: _Job, pieces: list) -> int:
        records, self.pending = self.pending, []
        for group, sequence, record, d in records:
            pieces.extend(record)
            grp = self._groups[group]
            if sequence > grp.written:
                grp.written = sequence
            if sequence in grp.retained:          # not deleted while pending
                grp.where[sequence] = self._current
                self.segments[self._current] += 1
            job.deferreds.append(d)
        job.entries = len(records)
        return len(records)

    def _plan(self, write: bool, checkpoint: bool, final: bool):
        """Take what is pending into one job: ``(work, job)`` for the scheduler. The
        checkpoint goes in when due (``checkpoint``) or, if any group is dirty, rides on
        records that are written anyway."""
        job = _Job(final=final)
        pieces: list = []
        if write and (self._fd is None or self._seg_size >= self.segment_bytes):
            self._roll_over(job, pieces)
        records = self._take_records(job, pieces)
        if job.new_segment is None and (checkpoint or (records and self._dirty)):
            pieces.append(encode_checkpoint(self._checkpoint_items(self._dirty)))
            self._checkpointed()
        job.nbytes = sum(len(p) for p in pieces)
        self._seg_size += job.nbytes
        job.sync = bool(records) or job.new_segment is not None or final
        if self._current is not None:
            job.unlink = sorted(self._reclaim)
            for number in job.unlink:
                self.segments.pop(number, None)
            self._reclaim.clear()
        directory = self.directory
        fd = self._fd
        new_path = (None if job.new_segment is None
                    else os.path.join(directory, segment_name(job.new_segment)))
        unlink_paths = [os.path.join(directory, segment_name(n)) for n in job.unlink]
        sync = job.sync
        if job.new_segment is not None:
            self._counters["segments_created"] += 1
        self._fd = None              # the job owns it until it returns
        self._counters["jobs"] += 1
        return (lambda: run_job(directory, fd, new_path, pieces, sync, unlink_paths, final)), job

    def _job_done(self, result: JobResult, job: _Job) -> None:
        self._fd = result.fd
        counters = self._counters
        counters["fsyncs"] += result.fsyncs
        counters["segments_reclaimed"] += len(job.unlink) - len(result.unlink_errors)
        for path, why in result.unlink_errors:
            counters["errors"] += 1
            _log.warn("log store: cannot remove the reclaimed segment {path}: {why}",
                      path=path, why=why)
        if job.entries:
            counters["commits"] += 1
            counters["commit_entries"] += job.entries
            counters["commit_bytes"] += job.nbytes
            counters["commit_ns_total"] += result.elapsed_ns
            counters["commit_ns_max"] = max(counters["commit_ns_max"], result.elapsed_ns)
            counters["batch_max"] = max(counters["batch_max"], job.entries)
        for d in job.deferreds:      # still "running": appends from callbacks join the next
            fire(d)
        if job.final:
            self._on_closed()

    def _job_failed(self, failure, job: _Job) -> None:
        self._fd = None
        self._counters["errors"] += 1
        if job.new_segment is not None:
            what = f"creating and writing segment {segment_name(job.new_segment)}"
        else:
            what = f"writing segment {segment_name(self._current or 0)}"
        error = LogStoreError(
            f"log store {self.directory}: {what} failed ({failure.getErrorMessage()}); the "
            f"store is out of service and acknowledges nothing more: fix the disk and "
            f"restart the edge (replay recovers every acknowledged entry)")
        _log.failure("log store {directory}: commit failed", failure, directory=self.directory)
        self.failed = error
        for d in job.deferreds:
            fail(d, error)
        pending, self.pending = self.pending, []
        for _, _, _, d in pending:
            fail(d, error)
        self._on_failed(error)
        if self._closing:
            self._on_closed()

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending with a final checkpoint, then close the files."""
        self._closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.kick()

    def release(self) -> None:
        """The store is closed: let go of the descriptors still held."""
        self._closed = True
        if self._fd is not None:       # only after a failure: the final job closes it
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
