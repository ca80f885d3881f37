"""The edge's log storage area (DESIGN.md 3.3, 4, 5; the patent's 413 and Fig. 15).

A source edge answers an array's RIO WR with GOOD only when the write's log
entry is durable here (invariant 5.2), and keeps the entry until the target
edge's WROK says it was applied; then it is deleted. ``LogStore`` is a plain
object (no sockets, no global reactor): entries come in as opaque bytes with
their order guarantee group and sequence number. Building one touches no file:
``open()`` takes the directory and replays it.

Modes
-----
``durable``
    Entries go to append-only segment files in ``directory``; ``append``'s
    Deferred fires once the record is written and ``fdatasync``ed. Group
    commit, checkpoints and segment rollover and reclaim are the
    ``SegmentWriter``'s (``rcn.edge.logwriter``, which explains them).
``memory``
    The patent's mode: no files, no writer, ``append`` fires at once. Quotas
    still apply.

Segment files and record format
-------------------------------
Segments are ``NNNNNNNNNNNNNNNN.seg`` (16-digit decimal counter, from 1) in
``directory``; a ``LOCK`` file there is ``flock``ed so that two stores cannot
share a directory. Each segment is a sequence of ENTRY and CHECKPOINT records,
laid out by the field tables of ``datapath.frames.logstore`` (whose docstring
draws them) and encoded and scanned by ``rcn.edge.logrecords``.

Sequences, generation and delete counters
-----------------------------------------
``next_sequence(group)`` allocates the group's generation counter + 1 (the
first is 1); ``append`` takes exactly such a sequence, once. A group's
*delete counter* D is the highest sequence such that every sequence <= D has
been deleted: WROKs may come out of order, and D moves over deleted sequences
only -- a sequence that is allocated and not yet appended, waiting for quota,
or retained holds it back. ``release(group, sequence)`` gives back the most
recently allocated sequence when its write is not going to be appended; an
append refused with ``LogStoreFull`` does that itself when it can (see there).

The generation written into checkpoints is the highest sequence whose ENTRY
record has been handed to the file (or D, if higher), not the highest one
allocated: after a crash, sequences that were allocated but never reached the
file are allocated again. That is safe because an entry must not be sent
before its ``append`` Deferred fires (the edge sends after GOOD), so no one
outside ever saw those numbers, and it leaves the target no hole to wait for.

Replay (``open``)
-----------------
Segments are read in order; ENTRY records rebuild retained entries, CHECKPOINT
records raise generation and D (max). Entries with sequence <= D are dropped.
Then D moves up over every sequence the segments do not hold (deleted, its
segment reclaimed -- or allocated and never written; the store cannot tell
them apart, and neither was acknowledged as pending), up to the lowest retained
entry. Generation = max(checkpoint generation, highest entry, D).

A torn record at the end of the *last* segment -- fewer than 16 bytes, a
payload running past the end of the file, a bad CRC on the final record, or a
bad header or CRC followed by nothing but zero bytes (pages the crash did not
write) -- is what a crash in mid-write leaves: it is truncated away with a warning. A bad record anywhere else raises
``LogStoreError`` naming the file and offset. (If a crash persisted pages of
the last, unacknowledged write out of order, a bad record may be followed by
good ones in the last segment; that is reported too, since it cannot be told
from corruption of acknowledged data -- the message says how to truncate.)
After ``open`` appends go to a new segment, never after a truncated tail.
(Reading and truncating: ``rcn.edge.logfiles``.)

Key epochs of retained entries
------------------------------
``epochs`` counts the retained entries (and those waiting for quota) per (group, group
key epoch) -- read from each entry's first header (``seal`` and ``key_epoch``; a clear
entry, or bytes that are no log entry, count under none): +1 at ``append``, -1 at
``delete`` (and for a waiting append that fails), rebuilt by ``open`` from what the
segments hold, so it is the log's own truth after a crash. When a count falls to zero,
``on_unused(group, epoch)`` is called: the edge's end-to-end seal then releases a
group epoch it held only for this log (``rcn.logxfer.seal.GroupSeal``).

Bounds (invariant 5.5)
----------------------
* Retained entries (memory and disk) per group: ``group_quota_bytes``. An
  append over the quota waits (FIFO per group) until deletes free room: that
  is the back-pressure the array feels as slower GOODs. An entry larger than
  the quota by itself is admitted when its group retains nothing else.
* Appends waiting for quota, all groups together: ``max_waiters``; one more
  raises ``LogStoreFull`` at once (the edge answers BUSY).
* The pending buffer and a commit's write hold only admitted entries, so they
  are bounded by the quotas of the configured groups.
* One entry: at most ``MAX_ENTRY_BYTES`` (ValueError beyond).
* Sequences allocated and not yet appended are the caller's to bound (the
  edge appends in the same reactor turn as it allocates).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed

from datapath.frames.logentry import HEADER_SIZE, LOG_HEADER, MAGIC, Seal
from rcn.edge.groupcommit import default_run_sync, fail, fire
from rcn.edge.logfiles import LogStoreError
from rcn.edge.logrecords import MAX_ENTRY_BYTES
from rcn.edge.logwriter import SegmentWriter

MAX_GROUP = (1 << 32) - 1
MAX_SEQUENCE = (1 << 64) - 1
MODES = ("durable", "memory")

COUNTER_NAMES = (
    "appended", "appended_bytes", "commits", "commit_entries", "commit_bytes", "commit_ns_total",
    "commit_ns_max", "batch_max", "fsyncs", "jobs", "checkpoints", "deleted", "delete_unknown",
    "released", "segments_created", "segments_reclaimed", "quota_waits", "full_refusals",
    "replayed_entries", "replayed_segments", "torn_tails", "errors",
)
_SEAL_AT = LOG_HEADER.offsets["seal"]
_EPOCH_AT = LOG_HEADER.offsets["key_epoch"]
_MAGIC = MAGIC.to_bytes(4, "big")


def key_epoch_of(entry: bytes) -> int:
    """The group key epoch a stored entry is sealed under (its first header's); 0 when
    it is clear or not a log entry."""
    if len(entry) < HEADER_SIZE or entry[:4] != _MAGIC or entry[_SEAL_AT] != Seal.AES_256_GCM:
        return 0
    return int.from_bytes(entry[_EPOCH_AT:_EPOCH_AT + 4], "big")


GAUGE_NAMES = ("retained_entries", "retained_bytes", "segments", "pending_records",
               "quota_waiting", "groups")


class LogStoreFull(LogStoreError):
    """Quota full and ``max_waiters`` appends already waiting: answer BUSY.

    ``released`` tells whether the refused sequence was given back (it was the
    group's most recently allocated one); if not, the caller must ``release``
    it later or append it again.
    """

    def __init__(self, message: str, released: bool = False):
        super().__init__(message)
        self.released = released


@dataclass
class Replayed:
    """What ``open()`` found."""

    entries: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # ascending
    generation: dict[int, int] = field(default_factory=dict)
    deleted: dict[int, int] = field(default_factory=dict)


class _Group:
    """One order guarantee group's log state."""

    __slots__ = ("gen", "deleted", "written", "retained", "where", "bytes", "outstanding",
                 "waiting", "waiting_seqs")

    def __init__(self):
        self.gen = 0                 # generation counter: highest sequence allocated
        self.deleted = 0             # delete counter D
        self.written = 0             # highest sequence handed to the file (persisted generation)
        self.retained: dict[int, bytes] = {}
        self.where: dict[int, int] = {}     # sequence -> segment its record went to
        self.bytes = 0
        self.outstanding: set[int] = set()  # allocated, not appended yet
        self.waiting: deque = deque()       # (sequence, entry, Deferred) waiting for quota
        self.waiting_seqs: set[int] = set()

    def advance(self) -> bool:
        """Move D over every following sequence that is no longer held anywhere;
        True if it moved."""
        deleted = self.deleted
        while deleted < self.gen:
            nxt = deleted + 1
            if nxt in self.retained or nxt in self.waiting_seqs or nxt in self.outstanding:
                break
            deleted = nxt
        if deleted == self.deleted:
            return False
        self.deleted = deleted
        return True


class LogStore:
    """The log storage area of one edge. See the module docstring."""

    def __init__(self, directory: str | None, *, mode: str = "durable", run_sync=None,
                 segment_bytes: int = 64 << 20, group_quota_bytes: int = 256 << 20,
                 max_waiters: int = 4096, clock=None, checkpoint_every: int = 256,
                 checkpoint_interval: float = 1.0):
        if mode not in MODES:
            raise ValueError(f"log store mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "durable" and not directory:
            raise ValueError("a durable log store needs a directory (or use mode='memory')")
        for name, value in (("segment_bytes", segment_bytes),
                            ("group_quota_bytes", group_quota_bytes),
                            ("max_waiters", max_waiters), ("checkpoint_every", checkpoint_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.directory = os.fspath(directory) if directory else None
        self.mode = mode
        self.group_quota_bytes = group_quota_bytes
        self.max_waiters = max_waiters
        self._run_sync = run_sync or default_run_sync
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._groups: dict[int, _Group] = {}
        self._retained_entries = 0
        self._retained_bytes = 0
        self._waiting_total = 0
        #: (group, key epoch) -> entries retained or waiting for quota (see the module doc)
        self.epochs: dict[tuple[int, int], int] = {}
        self.on_unused = None         # (group, epoch) -> None: a count fell to zero
        self._writer: SegmentWriter | None = None
        if mode == "durable":
            self._writer = SegmentWriter(
                self.directory, self._groups, self._counters, run_sync=self._run_sync,
                segment_bytes=segment_bytes, checkpoint_every=checkpoint_every,
                checkpoint_interval=checkpoint_interval, clock=clock,
                on_failed=self._fail_waiting, on_closed=self._finish_close)
        self._opened = mode == "memory"
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred] = []

    def __repr__(self) -> str:
        return f"<LogStore {self.mode} {self.directory or ''}>"

    # -- opening and replay -------------------------------------------------------

    def open(self) -> Replayed:
        """Create the directory if missing, take its lock, replay the segments."""
        if self._writer is None:
            self._opened = True
            return Replayed()
        if self._opened or self._closing:
            raise LogStoreError(f"log store {self.directory} is already open (or closed); "
                                f"make a new LogStore to open it again")
        scan = self._writer.open()
        replayed = self._rebuild(scan)
        self._opened = True
        return replayed

    def _rebuild(self, scan) -> Replayed:
        """The groups from what the segments hold (``rcn.edge.logfiles.SegmentScan``)."""
        writer = self._writer
        result = Replayed()
        for group in sorted(set(scan.found) | set(scan.generation) | set(scan.deleted)):
            grp = self._groups[group] = _Group()
            records = scan.found.get(group, {})
            grp.deleted = scan.deleted.get(group, 0)
            grp.gen = grp.written = max(scan.generation.get(group, 0), max(records, default=0),
                                        grp.deleted)
            for sequence in sorted(records):
                if sequence > grp.deleted:
                    entry, number = records[sequence]
                    grp.retained[sequence] = entry
                    grp.bytes += len(entry)
                    self._count(group, entry, 1)
                    writer.place(grp, sequence, number)
            if grp.advance():
                writer.moved(group)
            self._retained_entries += len(grp.retained)
            self._retained_bytes += grp.bytes
            self._counters["replayed_entries"] += len(grp.retained)
            if grp.retained:
                result.entries[group] = [(s, grp.retained[s]) for s in sorted(grp.retained)]
            result.generation[group] = grp.gen
            result.deleted[group] = grp.deleted
        writer.replayed()
        return result

    # -- sequences ----------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closing:
            raise LogStoreError(f"{what} on a closed log store {self.directory or '(memory)'}")
        if not self._opened:
            raise LogStoreError(f"{what} before open(): call LogStore.open() first, it replays "
                                f"the segments and restores the generation counters")
        if self._writer is not None and self._writer.failed is not None:
            raise LogStoreError(f"{what}: {self._writer.failed}")

    @staticmethod
    def _check_group(group) -> None:
        if not isinstance(group, int) or not 0 <= group <= MAX_GROUP:
            raise ValueError(f"group must be an integer from 0 to {MAX_GROUP}, got {group!r}")

    def _group(self, group: int) -> _Group:
        grp = self._groups.get(group)
        if grp is None:
            self._check_group(group)
            grp = self._groups[group] = _Group()
        return grp

    def next_sequence(self, group: int) -> int:
        """Allocate the group's next sequence number (generation counter + 1)."""
        self._check_open("next_sequence")
        grp = self._group(group)
        if grp.gen >= MAX_SEQUENCE:
            raise LogStoreError(f"group {group}: sequence numbers exhausted")
        grp.gen += 1
        grp.outstanding.add(grp.gen)
        return grp.gen

    def release(self, group: int, sequence: int) -> None:
        """Give back the most recently allocated ``sequence`` of ``group``, which will
        not be appended (the write was refused); anything else is a ValueError."""
        grp = self._groups.get(group)
        if grp is None or sequence != grp.gen or sequence not in grp.outstanding:
            raise ValueError(f"group {group} sequence {sequence}: only the most recently "
                             f"allocated sequence, not yet appended, can be released")
        grp.outstanding.discard(sequence)
        grp.gen -= 1
        self._counters["released"] += 1

    # -- append -------------------------------------------------------------------

    def append(self, group: int, sequence: int, entry: bytes) -> Deferred:
        """Store ``entry``; the Deferred fires (None) once it is durable (or at once in
        memory mode), later if the group's quota is full. Raises ``LogStoreFull``,
        ``ValueError`` for a sequence not allocated or already appended."""
        self._check_open("append")
        self._check_group(group)
        grp = self._groups.get(group)
        if grp is None or sequence not in grp.outstanding:
            raise ValueError(self._bad_sequence(group, grp, sequence))
        if not isinstance(entry, bytes):
            entry = bytes(entry)
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"group {group} sequence {sequence}: entry of {len(entry)} bytes "
                             f"is over the limit of {MAX_ENTRY_BYTES}")
        if grp.waiting or not self._fits(grp, len(entry)):
            if self._waiting_total >= self.max_waiters:
                self._counters["full_refusals"] += 1
                released = sequence == grp.gen
                if released:
                    self.release(group, sequence)
                raise LogStoreFull(
                    f"group {group} sequence {sequence}: the group's quota of "
                    f"{self.group_quota_bytes} bytes is full ({grp.bytes} retained) and "
                    f"{self._waiting_total} appends already wait for room (max_waiters "
                    f"{self.max_waiters}); answer BUSY and let the array retry"
                    + ("" if released else "; the sequence is still allocated: release it"),
                    released)
            grp.outstanding.discard(sequence)
            self._count(group, entry, 1)
            d = Deferred()
            grp.waiting.append((sequence, entry, d))
            grp.waiting_seqs.add(sequence)
            self._waiting_total += 1
            self._counters["quota_waits"] += 1
            return d
        grp.outstanding.discard(sequence)
        self._count(group, entry, 1)
        d = self._admit(group, grp, sequence, entry, None)
        if self._writer is not None:
            self._writer.kick()
        return d

    @staticmethod
    def _bad_sequence(group: int, grp: _Group | None, sequence) -> str:
        where = f"group {group} sequence {sequence!r}"
        if not isinstance(sequence, int) or sequence < 1:
            return f"{where}: a sequence is a positive integer from next_sequence()"
        if grp is None or sequence > grp.gen:
            return f"{where}: not allocated (generation {grp.gen if grp else 0}); use next_sequence()"
        if sequence <= grp.deleted:
            return f"{where}: at or below the delete counter {grp.deleted}, already deleted"
        if sequence in grp.retained or sequence in grp.waiting_seqs:
            return f"{where}: already appended"
        return f"{where}: already appended and deleted (or left over from before a restart)"

    def _fits(self, grp: _Group, size: int) -> bool:
        return not grp.retained or grp.bytes + size <= self.group_quota_bytes

    def _admit(self, group: int, grp: _Group, sequence: int, entry: bytes,
               d: Deferred | None) -> Deferred:
        """Count the entry as retained; queue its record (durable) or fire (memory)."""
        grp.retained[sequence] = entry
        grp.bytes += len(entry)
        self._retained_entries += 1
        self._retained_bytes += len(entry)
        self._counters["appended"] += 1
        self._counters["appended_bytes"] += len(entry)
        if self._writer is None:
            if d is None:
                return succeed(None)
            fire(d)
            return d
        if d is None:
            d = Deferred()
        self._writer.queue(group, sequence, entry, d)
        return d

    # -- reading and deleting -----------------------------------------------------

    def get(self, group: int, sequence: int) -> bytes | None:
        """A retained entry (for retransmission), or None."""
        grp = self._groups.get(group)
        return None if grp is None else grp.retained.get(sequence)

    def retained(self, group: int) -> list[int]:
        """Sequences the group still holds, ascending."""
        grp = self._groups.get(group)
        return sorted(grp.retained) if grp else []

    def delete(self, group: int, sequence: int) -> bool:
        """The target applied ``sequence`` (WROK): drop it. False if not retained."""
        grp = self._groups.get(group)
        entry = None if grp is None else grp.retained.pop(sequence, None)
        if entry is None:
            self._counters["delete_unknown"] += 1
            return False
        grp.bytes -= len(entry)
        self._retained_entries -= 1
        self._retained_bytes -= len(entry)
        self._counters["deleted"] += 1
        self._count(group, entry, -1)
        writer = self._writer
        if writer is not None:
            writer.forget(grp, sequence)
        if grp.advance() and writer is not None:
            writer.moved(group)
        self._release_waiters(group, grp)
        if writer is not None and not self._closing:
            writer.deleted()
        return True

    def _count(self, group: int, entry: bytes, step: int) -> None:
        """Keep ``epochs`` (see the module doc); ``on_unused`` when a count reaches 0."""
        epoch = key_epoch_of(entry)
        if not epoch:
            return
        name = (group, epoch)
        count = self.epochs.get(name, 0) + step
        if count > 0:
            self.epochs[name] = count
            return
        self.epochs.pop(name, None)
        if self.on_unused is not None:
            self.on_unused(group, epoch)

    def _release_waiters(self, group: int, grp: _Group) -> None:
        admitted = False
        while grp.waiting and not self._closing:
            sequence, entry, d = grp.waiting[0]
            if not self._fits(grp, len(entry)):
                break
            grp.waiting.popleft()
            grp.waiting_seqs.discard(sequence)
            self._waiting_total -= 1
            self._admit(group, grp, sequence, entry, d)
            admitted = True
        if admitted and self._writer is not None:
            self._writer.kick()


    def _fail_waiting(self, error: Exception) -> None:
        """Every append waiting for quota fails (a commit failed, or the store closes)."""
        for group, grp in self._groups.items():
            waiting, grp.waiting = grp.waiting, deque()
            grp.waiting_seqs.clear()
            for _, entry, d in waiting:
                self._count(group, entry, -1)
                fail(d, error)
        self._waiting_total = 0

    # -- closing ------------------------------------------------------------------

    def close(self) -> Deferred:
        """Let the running commit finish, commit what is pending with a final
        checkpoint, close the files. Appends waiting for quota fail."""
        d = Deferred()
        if self._closed:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if self._closing:
            return d
        self._closing = True
        self._fail_waiting(LogStoreError(f"log store {self.directory or '(memory)'} closed "
                                         f"before the group's quota had room for this entry"))
        if self._writer is None or not self._opened:
            self._finish_close()
        else:
            self._writer.close()
        return d

    def _finish_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.release()
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            fire(d)

    # -- figures ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Counters (monotonic) and gauges (current values), all ints."""
        out = dict(self._counters)
        writer = self._writer
        out.update(retained_entries=self._retained_entries, retained_bytes=self._retained_bytes,
                   segments=0 if writer is None else len(writer.segments),
                   pending_records=0 if writer is None else len(writer.pending),
                   quota_waiting=self._waiting_total, groups=len(self._groups))
        return out

    def group_stats(self, group: int) -> dict[str, int]:
        """The group's generation and delete counters, retained entries and bytes."""
        grp = self._groups.get(group) or _Group()
        return {"generation": grp.gen, "deleted": grp.deleted,
                "retained_entries": len(grp.retained), "retained_bytes": grp.bytes,
                "waiting": len(grp.waiting), "outstanding": len(grp.outstanding)}

    def groups(self) -> list[int]:
        return sorted(self._groups)
