"""The target edge's persisted apply counters (DESIGN.md 4 table 413, invariant 5.3).

For each order guarantee group the target edge keeps an *apply counter*: the
highest sequence it has applied to the target array. Before it relies on a
value -- before it sends the WROK that lets the source delete the entry, and
when it decides after a restart which entries are duplicates -- the value must
be durable, or a restart could apply a write twice out of order.

``ApplyState`` keeps the table in memory and persists it with group commit
(``rcn.edge.groupcommit``, the log store's scheduler): at most one write is in
flight, in one ``run_sync`` call (a thread by default), so the reactor never
waits for the disk. ``record`` calls that arrive while a write runs go into the
next one, which starts as soon as it ends: one fsync covers every counter that
moved in the meantime. The table is small (one item per group), so writing all
of it is cheaper than any journal. Building one touches no file: ``open()``
reads the table and opens the file.

Two slots, one fsync: the file holds two copies of the table, at offsets 0 and
``SLOT_BYTES``; a write goes to the slot its generation number picks (odd,
even) with ``pwrite`` and one ``fdatasync`` -- no rename, no directory fsync,
half the latency of a copy-and-rename. A crash in the middle of a write can
only tear the slot being written; the other holds the previous table, and
loading picks the valid slot with the higher generation. Falling back to the
previous table is safe: no WROK was sent on the strength of a write that had
not finished, so the entries after it are still retained by the source and
are applied again (harmlessly: see ``rcn.edge.receiver``).

The slot format is the field tables ``SLOT`` and ``ITEM`` of
``datapath.frames.applystate`` (whose docstring draws it): a 24-byte header
(magic b"RCAS", version 2, count, CRC32C of the generation and the items,
generation), then one 12-byte item (group, apply counter) per group, ascending.

A file none of whose slots checks out raises ``ApplyStateError`` naming the
path (a slot of zeros is an unwritten slot). A missing file is an empty table
(a new edge); creating it fsyncs the directory once.

A failed write fails the Deferreds that waited for it with ``ApplyStateError``;
the other slot still holds the previous table, and the next ``record`` (or
``close``) tries again. With ``path=None`` the table lives in memory only and
every value is "durable" at once.

Bounds: the table holds one item per group; Deferreds waiting for durability
are the caller's records of one write's duration (the receiver's apply window
bounds them).
"""

from __future__ import annotations

import os
import time

import crc32c as _crc32c
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure as _Failure
from twisted.logger import Logger

from datapath.frames.applystate import ITEM, MAGIC, MAX_GROUPS, SLOT, SLOT_BYTES, VERSION
from rcn.edge.groupcommit import O_CLOEXEC, GroupCommit, fail, fire, fdatasync, fsync_path

MAX_GROUP = (1 << 32) - 1
MAX_SEQUENCE = (1 << 64) - 1
_pack_slot = SLOT.packer.pack
_pack_item = ITEM.packer.pack

_fsync = fdatasync      # a module global, so tests can count calls
_log = Logger(namespace="rcn.edge.applystate")

COUNTER_NAMES = ("records", "records_ignored", "writes", "write_bytes", "write_ns_total",
                 "write_ns_max", "fsyncs", "errors")


class ApplyStateError(Exception):
    """The apply-counter file is unreadable or corrupt, or cannot be written."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


def encode_table(table: dict[int, int], generation: int = 1) -> bytes:
    body = b"".join(_pack_item(group, table[group]) for group in sorted(table))
    crc = _crc32c.crc32c(body, _crc32c.crc32c(generation.to_bytes(8, "big")))
    return _pack_slot(MAGIC, VERSION, 0, len(table), crc, generation) + body


def decode_table(data: bytes, path: str) -> tuple[dict[int, int], int]:
    """Parse one slot's bytes (trailing bytes ignored): (table, generation);
    ``ApplyStateError`` says what is wrong and where."""
    where = f"apply counter file {path}"
    if len(data) < SLOT.size:
        raise ApplyStateError(f"{where}: {len(data)} bytes, shorter than the {SLOT.size}-byte "
                              f"header (a partial copy? restore it or remove it to start "
                              f"from zero, which re-applies retained entries)", path)
    magic, version, _, count, crc, generation = SLOT.packer.unpack_from(data)
    if magic != MAGIC:
        raise ApplyStateError(f"{where}: bad magic {magic!r} at offset 0, expected {MAGIC!r}: "
                              f"not an apply counter file", path)
    if version != VERSION:
        raise ApplyStateError(f"{where}: version {version} at offset 4, this edge reads "
                              f"version {VERSION}", path)
    expected = SLOT.size + count * ITEM.size
    if len(data) < expected:
        raise ApplyStateError(f"{where}: {len(data)} bytes, the header at offset 8 announces "
                              f"{count} items ({expected} bytes)", path)
    body = memoryview(data)[SLOT.size:expected]
    if _crc32c.crc32c(body, _crc32c.crc32c(generation.to_bytes(8, "big"))) != crc:
        raise ApplyStateError(f"{where}: CRC32C mismatch over the {count} items from offset "
                              f"{SLOT.size}: the file is corrupt", path)
    unpack = ITEM.packer.unpack_from
    return {group: value for group, value in
            (unpack(body, i * ITEM.size) for i in range(count))}, generation


def read_slots(data: bytes, path: str) -> tuple[dict[int, int], int]:
    """The newest valid slot of a file's bytes; an error if the file has none."""
    best, first_error = None, None
    for offset in (0, SLOT_BYTES):
        slot = data[offset:offset + SLOT_BYTES]
        if not slot.strip(b"\x00"):
            continue            # never written
        try:
            table, generation = decode_table(slot, path)
        except ApplyStateError as exc:
            first_error = first_error or exc
            continue
        if best is None or generation > best[1]:
            best = (table, generation)
    if best is None:
        if first_error is not None:
            raise first_error
        return {}, 0
    return best


def _write_table(fd: int, offset: int, data: bytes) -> tuple[int, int]:
    """The thread side of a write: the slot, then one fdatasync."""
    started = time.monotonic_ns()
    view = memoryview(data)
    done = 0
    while done < len(data):
        wrote = os.pwrite(fd, view[done:], offset + done)
        if wrote <= 0:
            raise OSError(5, "pwrite to the apply counter file returned 0 bytes")
        done += wrote
    _fsync(fd)
    return time.monotonic_ns() - started, 1


class ApplyState:
    """Apply counters of the groups a target edge applies. See the module docstring."""

    def __init__(self, path: str | None, *, run_sync=None):
        self.path = os.fspath(path) if path is not None else None
        self._commit = GroupCommit(run_sync, self._prepare, self._written, self._write_failed)
        self._applied: dict[int, int] = {}
        self._durable: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, Deferred]]] = {}
        self._waiting = 0
        self._loaded = path is None
        self._dirty = False
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred] = []
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._fd: int | None = None
        self._generation = 0

    def __repr__(self) -> str:
        return f"<ApplyState {self.path or '(memory)'} {len(self._applied)} groups>"

    def open(self) -> dict[int, int]:
        """Read the table (empty when the file does not exist yet) and open the file."""
        if self.path is None:
            self._loaded = True
            return dict(self._applied)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ApplyStateError(f"apply counter file {self.path}: directory {directory} "
                                  f"does not exist; create it first", self.path)
        try:
            with open(self.path, "rb") as f:
                data = f.read(2 * SLOT_BYTES)
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise ApplyStateError(f"cannot read apply counter file {self.path}: "
                                  f"{exc.strerror or exc}", self.path) from exc
        table, self._generation = ({}, 0) if data is None else read_slots(data, self.path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
            if data is None:            # a new file: its directory entry must be durable too
                fsync_path(directory, directory=True)
        except OSError as exc:
            raise ApplyStateError(f"cannot open apply counter file {self.path}: "
                                  f"{exc.strerror or exc}", self.path) from exc
        self._applied = dict(table)
        self._durable = dict(table)
        self._loaded = True
        return dict(table)

    def applied(self, group: int) -> int:
        """The group's apply counter in memory (0 if none)."""
        return self._applied.get(group, 0)

    def durable(self, group: int) -> int:
        """The highest value of the group's counter known to be on disk."""
        return self._durable.get(group, 0)

    def record(self, group: int, sequence: int) -> Deferred:
        """Set the group's counter to ``sequence`` (a lower value is ignored); the
        Deferred fires (None) when a value >= ``sequence`` is durable."""
        if self._closing:
            raise ApplyStateError(f"record on a closed apply state {self.path or '(memory)'}",
                                  self.path)
        if not self._loaded:
            raise ApplyStateError(f"record before open() on {self.path}: load the table "
                                  f"first, or the first write would drop the other groups",
                                  self.path)
        if not isinstance(group, int) or not 0 <= group <= MAX_GROUP:
            raise ValueError(f"group must be an integer from 0 to {MAX_GROUP}, got {group!r}")
        if not isinstance(sequence, int) or not 0 <= sequence <= MAX_SEQUENCE:
            raise ValueError(f"group {group}: sequence must be an integer from 0 to "
                             f"{MAX_SEQUENCE}, got {sequence!r}")
        self._counters["records"] += 1
        if sequence > self._applied.get(group, 0):
            self._applied[group] = sequence
            if self.path is None:
                self._durable[group] = sequence
            else:
                self._dirty = True
        else:
            self._counters["records_ignored"] += 1
        if self._durable.get(group, 0) >= sequence:
            return succeed(None)
        d = Deferred()
        self._waiters.setdefault(group, []).append((sequence, d))
        self._waiting += 1
        self._commit.kick()
        return d

    def _prepare(self):
        """The scheduler's next write: the whole table into the slot not holding the
        last durable one; or None (and a pending close finishes)."""
        if self._dirty and self.path is not None:
            self._dirty = False
            snapshot = dict(self._applied)
            if len(snapshot) > MAX_GROUPS:
                self._write_failed(_Failure(ApplyStateError(
                    f"{len(snapshot)} groups do not fit a {SLOT_BYTES}-byte slot", self.path)))
                return None
            # the slot of the last durable write is never the one written next
            generation = self._generation + 1
            data = encode_table(snapshot, generation)
            fd, offset = self._fd, (generation % 2) * SLOT_BYTES
            self._counters["writes"] += 1
            self._counters["write_bytes"] += len(data)
            return (lambda: _write_table(fd, offset, data)), (snapshot, generation)
        if self._closing:
            self._finish_close()
        return None

    def _written(self, result: tuple[int, int], job: tuple[dict[int, int], int]) -> None:
        elapsed, fsyncs = result
        snapshot, generation = job
        self._generation = generation
        self._counters["fsyncs"] += fsyncs
        self._counters["write_ns_total"] += elapsed
        self._counters["write_ns_max"] = max(self._counters["write_ns_max"], elapsed)
        for group, value in snapshot.items():
            if value > self._durable.get(group, 0):
                self._durable[group] = value
        for group in list(self._waiters):
            durable = self._durable.get(group, 0)
            waiters = self._waiters[group]
            ready = [d for seq, d in waiters if seq <= durable]
            if ready:
                rest = [(seq, d) for seq, d in waiters if seq > durable]
                if rest:
                    self._waiters[group] = rest
                else:
                    del self._waiters[group]
                self._waiting -= len(ready)
                for d in ready:
                    fire(d)

    def _write_failed(self, failure, job=None) -> None:
        self._counters["errors"] += 1
        error = ApplyStateError(f"writing apply counter file {self.path} failed "
                                f"({failure.getErrorMessage()}); the previous file is intact, "
                                f"the next record tries again", self.path)
        _log.failure("apply counter file {path}: write failed", failure, path=self.path)
        waiters, self._waiters = self._waiters, {}
        self._waiting = 0
        self._dirty = True
        for items in waiters.values():
            for _, d in items:
                fail(d, error)
        if self._closing:
            self._finish_close()

    def counters(self) -> dict[str, int]:
        out = dict(self._counters)
        out.update(groups=len(self._applied), waiting=self._waiting,
                   writing=int(self._commit.running))
        return out

    def close(self) -> Deferred:
        """Let the running write finish and write what is still dirty."""
        d = Deferred()
        if self._closed:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            self._commit.kick()
        return d

    def _finish_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)
