"""The edge's log storage area (DESIGN.md 3.3, 4, 5; the patent's 413 and Fig. 15).

A source edge answers an array's RIO WR with GOOD only when the write's log
entry is durable here (invariant 5.2), and keeps the entry until the target
edge's WROK says it was applied; then it is deleted. ``LogStore`` is a plain
object (no sockets, no global reactor): entries come in as opaque bytes with
their order guarantee group and sequence number.

Modes
-----
``durable``
    Entries go to append-only segment files in ``directory``; ``append``'s
    Deferred fires once the record is written and ``fdatasync``ed.
``memory``
    The patent's mode: no files, ``append`` fires at once. Quotas still apply.

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
soon as the running one ends, so under load one fsync covers many entries. The
reactor thread never waits for the disk. Records reach the file in the order
``append`` admitted them: within a group that is the order of the ``append``
calls (a group's appends queue behind one that waits for quota); an append that
waited for quota lands after other groups' later appends.

A failed write or fsync takes the store out of service: the Deferreds of that
commit, of every pending record and of every append waiting for quota fail
with ``LogStoreError``, and later appends raise it. After a failed fsync Linux
may drop the dirty pages and report success next time, so retrying would
acknowledge writes that are not on disk; reopen the store instead (replay
finds what really is).

Segment files and record format
-------------------------------
Segments are ``NNNNNNNNNNNNNNNN.seg`` (16-digit decimal counter, from 1) in
``directory``; a ``LOCK`` file there is ``flock``ed so that two stores cannot
share a directory. Each segment is a sequence of records::

    offset  size  field
    0       4     magic  b"RCLS"
    4       1     kind   1 ENTRY, 2 CHECKPOINT
    5       3     reserved, zero
    8       4     length of the payload (u32, at most 2**30)
    12      4     CRC32C of the payload (u32)
    16      ...   payload

All integers are big-endian. Payloads:

* ENTRY: ``group u32 | sequence u64 | entry bytes``.
* CHECKPOINT: ``n u32`` then ``n`` times ``group u32 | generation u64 |
  deleted u64``.

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

import fcntl
import os
import re
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import crc32c as _crc32c
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

MAGIC = b"RCLS"
KIND_ENTRY = 1
KIND_CHECKPOINT = 2
KIND_NAMES = {KIND_ENTRY: "ENTRY", KIND_CHECKPOINT: "CHECKPOINT"}
HEADER = struct.Struct(">4sB3xII")
ENTRY_PREFIX = struct.Struct(">IQ")
CHECKPOINT_COUNT = struct.Struct(">I")
CHECKPOINT_ITEM = struct.Struct(">IQQ")
MAX_PAYLOAD = 1 << 30
MAX_ENTRY_BYTES = MAX_PAYLOAD - ENTRY_PREFIX.size
MAX_GROUP = (1 << 32) - 1
MAX_SEQUENCE = (1 << 64) - 1
SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
LOCK_NAME = "LOCK"
MODES = ("durable", "memory")

_fdatasync = getattr(os, "fdatasync", os.fsync)   # a module global, so tests can count calls
_crc = _crc32c.crc32c
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_log = Logger(namespace="rcn.edge.logstore")

COUNTER_NAMES = (
    "appended", "appended_bytes", "commits", "commit_entries", "commit_bytes", "commit_ns_total",
    "commit_ns_max", "batch_max", "fsyncs", "jobs", "checkpoints", "deleted", "delete_unknown",
    "released", "segments_created", "segments_reclaimed", "quota_waits", "full_refusals",
    "replayed_entries", "replayed_segments", "torn_tails", "errors",
)
GAUGE_NAMES = ("retained_entries", "retained_bytes", "segments", "pending_records",
               "quota_waiting", "groups")


class LogStoreError(Exception):
    """The log store cannot do what was asked: unusable directory, corrupt segment,
    a failed write or fsync (the store is then out of service), use after close."""


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


def encode_entry(group: int, sequence: int, entry: bytes) -> list[bytes]:
    """An ENTRY record as pieces (header, prefix, entry): the entry is not copied."""
    prefix = ENTRY_PREFIX.pack(group, sequence)
    crc = _crc(entry, _crc(prefix))
    return [HEADER.pack(MAGIC, KIND_ENTRY, len(prefix) + len(entry), crc), prefix, entry]


def encode_checkpoint(items: list[tuple[int, int, int]]) -> bytes:
    """A CHECKPOINT record of (group, generation, deleted) items."""
    payload = CHECKPOINT_COUNT.pack(len(items)) + b"".join(
        CHECKPOINT_ITEM.pack(*item) for item in items)
    return HEADER.pack(MAGIC, KIND_CHECKPOINT, len(payload), _crc(payload)) + payload


class _BadRecord(Exception):
    def __init__(self, offset: int, reason: str, torn: bool):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.torn = torn      # could be a crash's torn tail, if it is in the last segment


def scan_records(data: bytes):
    """Yield ``(offset, kind, value)`` for each record of a segment's bytes.

    ``value`` is ``(group, sequence, entry)`` for ENTRY and a list of
    ``(group, generation, deleted)`` for CHECKPOINT. Raises ``_BadRecord`` at
    the first record that does not check out.
    """
    view = memoryview(data)
    end = len(data)
    offset = 0
    hsize = HEADER.size
    while offset < end:
        if end - offset < hsize:
            raise _BadRecord(offset, f"only {end - offset} bytes left, a header is {hsize}", True)
        magic, kind, length, crc = HEADER.unpack_from(data, offset)
        if magic != MAGIC or kind not in KIND_NAMES or length > MAX_PAYLOAD:
            zeroes = not any(view[offset:])
            what = (f"bad magic {bytes(magic)!r}" if magic != MAGIC else
                    f"unknown kind {kind}" if kind not in KIND_NAMES else
                    f"payload length {length} over the limit {MAX_PAYLOAD}")
            raise _BadRecord(offset, what + (" (zero bytes to the end)" if zeroes else ""), zeroes)
        start = offset + hsize
        stop = start + length
        if stop > end:
            raise _BadRecord(offset, f"{KIND_NAMES[kind]} record of {length} bytes runs "
                             f"{stop - end} bytes past the end of the file", True)
        payload = view[start:stop]
        if _crc(payload) != crc:
            # Torn if nothing but zero bytes (pages a crash did not write) follow it.
            raise _BadRecord(offset, f"CRC32C mismatch in a {KIND_NAMES[kind]} record of "
                             f"{length} bytes", stop == end or not any(view[stop:]))
        if kind == KIND_ENTRY:
            if length < ENTRY_PREFIX.size:
                raise _BadRecord(offset, f"ENTRY payload of {length} bytes is shorter than "
                                 f"its {ENTRY_PREFIX.size}-byte group/sequence prefix", False)
            group, sequence = ENTRY_PREFIX.unpack_from(payload)
            yield offset, kind, (group, sequence, bytes(payload[ENTRY_PREFIX.size:]))
        else:
            count = CHECKPOINT_COUNT.unpack_from(payload)[0] if length >= 4 else -1
            if count < 0 or length != CHECKPOINT_COUNT.size + count * CHECKPOINT_ITEM.size:
                raise _BadRecord(offset, f"CHECKPOINT payload of {length} bytes does not hold "
                                 f"the {count} items it announces", False)
            yield offset, kind, [CHECKPOINT_ITEM.unpack_from(payload, 4 + i * CHECKPOINT_ITEM.size)
                                 for i in range(count)]
        offset = stop


def segment_name(number: int) -> str:
    return f"{number:016d}.seg"


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


@dataclass
class _JobResult:
    fd: int | None
    elapsed_ns: int
    fsyncs: int
    unlink_errors: list


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    done = 0
    while done < len(data):
        wrote = os.write(fd, view[done:])
        if wrote <= 0:
            raise OSError(5, "write returned 0 bytes")
        done += wrote


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run_job(directory: str, fd: int | None, new_path: str | None, pieces: list, sync: bool,
             unlink_paths: list[str], close_after: bool) -> _JobResult:
    """The thread side of a commit. Touches no store state: everything comes in as
    arguments and goes out in the result. On an error it closes its descriptors."""
    started = time.monotonic_ns()
    fsyncs = 0
    try:
        if new_path is not None:
            if fd is not None:
                _fdatasync(fd)     # only the newest segment may have an unsynced tail
                fsyncs += 1
                old, fd = fd, None
                os.close(old)
            fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        if pieces:
            _write_all(fd, b"".join(pieces))
        if sync:
            _fdatasync(fd)
            fsyncs += 1
        if new_path is not None:
            _fsync_directory(directory)
        if close_after and fd is not None:
            old, fd = fd, None
            os.close(old)
    except BaseException:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        raise
    errors = []
    for path in unlink_paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append((path, exc.strerror or str(exc)))
    return _JobResult(fd, time.monotonic_ns() - started, fsyncs, errors)


def _default_run_sync(fn):
    from twisted.internet.threads import deferToThread
    return deferToThread(fn)


def _fire(d: Deferred | None) -> None:
    if d is not None and not d.called:      # a cancelled Deferred has fired already
        d.callback(None)


def _fail(d: Deferred | None, exc: Exception) -> None:
    if d is not None and not d.called:
        d.errback(exc)


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
        self.segment_bytes = segment_bytes
        self.group_quota_bytes = group_quota_bytes
        self.max_waiters = max_waiters
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._run_sync = run_sync or _default_run_sync
        self._clock = clock
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._groups: dict[int, _Group] = {}
        self._retained_entries = 0
        self._retained_bytes = 0
        self._waiting_total = 0
        # files
        self._opened = mode == "memory"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._current: int | None = None        # segment number of _fd
        self._seg_size = 0
        self._next_segment = 1
        self._segments: dict[int, int] = {}     # segment number -> live ENTRY records
        self._reclaim: set[int] = set()         # not current, no live entries
        # commits
        self._pending: list = []                # (group, sequence, pieces, Deferred)
        self._running: _Job | None = None
        self._starting = False
        self._restart = False
        self._dirty: set[int] = set()           # groups whose D moved since their last checkpoint
        self._deletes_since = 0
        self._checkpoint_due = False
        self._timer = None
        self._failed: LogStoreError | None = None
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred] = []

    def __repr__(self) -> str:
        return f"<LogStore {self.mode} {self.directory or ''}>"

    # -- opening and replay -------------------------------------------------------

    def open(self) -> Replayed:
        """Create the directory if missing, take its lock, replay the segments."""
        if self.mode == "memory":
            self._opened = True
            return Replayed()
        if self._opened or self._closing:
            raise LogStoreError(f"log store {self.directory} is already open (or closed); "
                                f"make a new LogStore to open it again")
        directory = self.directory
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise LogStoreError(f"cannot create the log directory {directory}: "
                                f"{exc.strerror or exc}; check the path and its permissions") from exc
        if not os.path.isdir(directory):
            raise LogStoreError(f"log directory {directory} exists and is not a directory")
        lock_path = os.path.join(directory, LOCK_NAME)
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LogStoreError(f"cannot open {lock_path}: {exc.strerror or exc}; the log "
                                f"directory must be writable") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise LogStoreError(f"log directory {directory} is in use by another log store "
                                f"({lock_path} is locked: {exc.strerror or exc})") from exc
        try:
            replayed = self._replay()
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._opened = True
        return replayed

    def _segment_files(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise LogStoreError(f"cannot list the log directory {self.directory}: "
                                f"{exc.strerror or exc}") from exc
        return sorted(int(m.group(1)) for m in map(SEGMENT_NAME.match, names) if m)

    def _replay(self) -> Replayed:
        numbers = self._segment_files()
        found: dict[int, dict[int, tuple[bytes, int]]] = {}
        ckpt_gen: dict[int, int] = {}
        ckpt_del: dict[int, int] = {}
        for index, number in enumerate(numbers):
            path = os.path.join(self.directory, segment_name(number))
            last = index == len(numbers) - 1
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise LogStoreError(f"cannot read log segment {path}: "
                                    f"{exc.strerror or exc}") from exc
            try:
                for _, kind, value in scan_records(data):
                    if kind == KIND_ENTRY:
                        group, sequence, entry = value
                        found.setdefault(group, {})[sequence] = (entry, number)
                    else:
                        for group, generation, deleted in value:
                            ckpt_gen[group] = max(ckpt_gen.get(group, 0), generation)
                            ckpt_del[group] = max(ckpt_del.get(group, 0), deleted)
            except _BadRecord as bad:
                if not (last and bad.torn):
                    where = "the last segment" if last else "a segment that is not the last"
                    raise LogStoreError(
                        f"log segment {path}: {bad.reason} at offset {bad.offset} "
                        f"({len(data) - bad.offset} bytes from there to the end of the file, "
                        f"in {where}): not a crash's torn tail; the entries from there on are "
                        f"unreadable. Keep a copy for inspection; to drop them and start, "
                        f"truncate the file to {bad.offset} bytes (truncate -s {bad.offset} "
                        f"{path})") from None
                dropped = len(data) - bad.offset
                _log.warn("log segment {path}: torn record at the end ({reason}) at offset "
                          "{offset}: truncating {dropped} bytes (a crash in mid-write; those "
                          "records were never acknowledged)", path=path, reason=bad.reason,
                          offset=bad.offset, dropped=dropped)
                try:
                    os.truncate(path, bad.offset)
                    fd = os.open(path, os.O_WRONLY | _O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    raise LogStoreError(f"cannot truncate the torn tail of {path} at offset "
                                        f"{bad.offset}: {exc.strerror or exc}") from exc
                self._counters["torn_tails"] += 1
        self._counters["replayed_segments"] = len(numbers)
        self._segments = dict.fromkeys(numbers, 0)
        self._next_segment = (numbers[-1] + 1) if numbers else 1
        result = Replayed()
        for group in sorted(set(found) | set(ckpt_gen) | set(ckpt_del)):
            grp = self._groups[group] = _Group()
            records = found.get(group, {})
            grp.deleted = ckpt_del.get(group, 0)
            grp.gen = grp.written = max(ckpt_gen.get(group, 0), max(records, default=0),
                                        grp.deleted)
            for sequence in sorted(records):
                if sequence > grp.deleted:
                    entry, number = records[sequence]
                    grp.retained[sequence] = entry
                    grp.where[sequence] = number
                    grp.bytes += len(entry)
                    self._segments[number] += 1
            self._advance(group, grp)
            self._retained_entries += len(grp.retained)
            self._retained_bytes += grp.bytes
            self._counters["replayed_entries"] += len(grp.retained)
            if grp.retained:
                result.entries[group] = [(s, grp.retained[s]) for s in sorted(grp.retained)]
            result.generation[group] = grp.gen
            result.deleted[group] = grp.deleted
        self._reclaim = {n for n, live in self._segments.items() if live == 0}
        return result

    # -- sequences ----------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closing:
            raise LogStoreError(f"{what} on a closed log store {self.directory or '(memory)'}")
        if not self._opened:
            raise LogStoreError(f"{what} before open(): call LogStore.open() first, it replays "
                                f"the segments and restores the generation counters")
        if self._failed is not None:
            raise LogStoreError(f"{what}: {self._failed}")

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
            d = Deferred()
            grp.waiting.append((sequence, entry, d))
            grp.waiting_seqs.add(sequence)
            self._waiting_total += 1
            self._counters["quota_waits"] += 1
            return d
        grp.outstanding.discard(sequence)
        d = self._admit(group, grp, sequence, entry, None)
        self._maybe_start()
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
        if self.mode == "memory":
            if d is None:
                return succeed(None)
            _fire(d)
            return d
        if d is None:
            d = Deferred()
        self._pending.append((group, sequence, encode_entry(group, sequence, entry), d))
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
        number = grp.where.pop(sequence, None)
        if number is not None and number in self._segments:
            self._segments[number] -= 1
            if self._segments[number] == 0 and number != self._current:
                self._reclaim.add(number)
        self._advance(group, grp)
        self._release_waiters(group, grp)
        if self.mode == "durable" and not self._closing:
            self._deletes_since += 1
            if (self._dirty and self._timer is None and self._clock is not None
                    and self.checkpoint_interval):
                self._timer = self._clock.callLater(self.checkpoint_interval,
                                                    self._checkpoint_timer)
            self._maybe_start()
        return True

    def _advance(self, group: int, grp: _Group) -> None:
        """Move D over every following sequence that is no longer held anywhere."""
        deleted = grp.deleted
        while deleted < grp.gen:
            nxt = deleted + 1
            if nxt in grp.retained or nxt in grp.waiting_seqs or nxt in grp.outstanding:
                break
            deleted = nxt
        if deleted != grp.deleted:
            grp.deleted = deleted
            self._dirty.add(group)

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
        if admitted:
            self._maybe_start()

    # -- commits ------------------------------------------------------------------

    def _checkpoint_timer(self) -> None:
        self._timer = None
        if self._dirty:
            self._checkpoint_due = True
            self._maybe_start()

    def _maybe_start(self) -> None:
        """Start a commit if none is running and there is something to do.

        A loop, not recursion, when ``run_sync`` completes synchronously (the
        commit's completion asks for the next commit while this one is starting).
        """
        if self._starting:
            self._restart = True
            return
        self._starting = True
        try:
            self._restart = True
            while self._restart:
                self._restart = False
                self._start_if_needed()
        finally:
            self._starting = False

    def _start_if_needed(self) -> None:
        if self.mode == "memory" or self._running is not None or self._closed:
            return
        if self._failed is not None:
            if self._closing:
                self._finish_close()
            return
        checkpoint = bool(self._dirty) and (
            self._checkpoint_due or self._deletes_since >= self.checkpoint_every or self._closing)
        write = bool(self._pending) or checkpoint
        unlink = self._current is not None and bool(self._reclaim)
        if self._closing:
            if write or self._fd is not None:
                self._start_job(write, final=True)
            else:
                self._finish_close()
        elif write or unlink:
            self._start_job(write, final=False)

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

    def _start_job(self, write: bool, final: bool) -> None:
        job = _Job(final=final)
        pieces: list = []
        records, self._pending = self._pending, []
        if write and (self._fd is None or self._seg_size >= self.segment_bytes):
            number = job.new_segment = self._next_segment
            self._next_segment += 1
            old = self._current
            self._current = number
            self._segments[number] = 0
            self._seg_size = 0
            if old is not None and self._segments.get(old) == 0:
                self._reclaim.add(old)
            # Every group's state before this batch: if the batch is torn, nothing
            # in this checkpoint claims its sequences.
            pieces.append(encode_checkpoint(self._checkpoint_items(self._groups)))
            self._checkpointed()
        for group, sequence, record, d in records:
            pieces.extend(record)
            grp = self._groups[group]
            if sequence > grp.written:
                grp.written = sequence
            if sequence in grp.retained:          # not deleted while pending
                grp.where[sequence] = self._current
                self._segments[self._current] += 1
            job.deferreds.append(d)
        job.entries = len(records)
        if job.new_segment is None and self._dirty and (records or self._checkpoint_due or final
                                                        or self._deletes_since
                                                        >= self.checkpoint_every):
            pieces.append(encode_checkpoint(self._checkpoint_items(self._dirty)))
            self._checkpointed()
        job.nbytes = sum(len(p) for p in pieces)
        self._seg_size += job.nbytes
        job.sync = bool(records) or job.new_segment is not None or final
        if self._current is not None:
            job.unlink = sorted(self._reclaim)
            for number in job.unlink:
                self._segments.pop(number, None)
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
        self._running = job
        self._counters["jobs"] += 1
        d = self._run_sync(lambda: _run_job(directory, fd, new_path, pieces, sync,
                                            unlink_paths, final))
        d.addCallbacks(self._job_done, self._job_failed, callbackArgs=(job,),
                       errbackArgs=(job,))

    def _job_done(self, result: _JobResult, job: _Job) -> None:
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
            _fire(d)
        self._running = None
        if job.final:
            self._finish_close()
        else:
            self._maybe_start()

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
        self._failed = error
        self._running = None
        for d in job.deferreds:
            _fail(d, error)
        self._fail_queued(error)
        if self._closing:
            self._finish_close()

    def _fail_queued(self, error: Exception) -> None:
        pending, self._pending = self._pending, []
        for _, _, _, d in pending:
            _fail(d, error)
        for grp in self._groups.values():
            waiting, grp.waiting = grp.waiting, deque()
            grp.waiting_seqs.clear()
            for _, _, d in waiting:
                _fail(d, error)
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
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for grp in self._groups.values():
            waiting, grp.waiting = grp.waiting, deque()
            grp.waiting_seqs.clear()
            for _, _, w in waiting:
                _fail(w, LogStoreError(f"log store {self.directory or '(memory)'} closed "
                                       f"before the group's quota had room for this entry"))
        self._waiting_total = 0
        if self.mode == "memory" or not self._opened:
            self._finish_close()
        else:
            self._maybe_start()
        return d

    def _finish_close(self) -> None:
        if self._closed:
            return
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
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            _fire(d)

    # -- figures ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Counters (monotonic) and gauges (current values), all ints."""
        out = dict(self._counters)
        out.update(retained_entries=self._retained_entries, retained_bytes=self._retained_bytes,
                   segments=len(self._segments), pending_records=len(self._pending),
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
