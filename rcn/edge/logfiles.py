"""The log store's files: the directory lock, replay's reading, a commit's disk work.

Nothing here keeps state: ``rcn.edge.logstore`` decides what to do and these
functions do it. ``lock_directory`` and ``read_segments`` run in ``open()`` (the
reactor thread, before the edge serves anything); ``run_job`` is a commit's
thread side and gets everything as arguments.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass

from twisted.logger import Logger

from datapath.frames.logstore import KIND_ENTRY
from rcn.edge.groupcommit import O_CLOEXEC, fdatasync, fsync_path
from rcn.edge.logrecords import LOCK_NAME, SEGMENT_NAME, BadRecord, scan_records, segment_name

_fdatasync = fdatasync      # a module global, so tests can count calls
_log = Logger(namespace="rcn.edge.logstore")


class LogStoreError(Exception):
    """The log store cannot do what was asked: unusable directory, corrupt segment,
    a failed write or fsync (the store is then out of service), use after close."""


def lock_directory(directory: str) -> int:
    """Create ``directory`` if missing and ``flock`` its LOCK file: the lock's fd."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise LogStoreError(f"cannot create the log directory {directory}: "
                            f"{exc.strerror or exc}; check the path and its permissions") from exc
    if not os.path.isdir(directory):
        raise LogStoreError(f"log directory {directory} exists and is not a directory")
    lock_path = os.path.join(directory, LOCK_NAME)
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LogStoreError(f"cannot open {lock_path}: {exc.strerror or exc}; the log "
                            f"directory must be writable") from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)
        raise LogStoreError(f"log directory {directory} is in use by another log store "
                            f"({lock_path} is locked: {exc.strerror or exc})") from exc
    return lock_fd


def segment_numbers(directory: str) -> list[int]:
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise LogStoreError(f"cannot list the log directory {directory}: "
                            f"{exc.strerror or exc}") from exc
    return sorted(int(m.group(1)) for m in map(SEGMENT_NAME.match, names) if m)


@dataclass
class SegmentScan:
    """What the segments hold, before the store judges it."""

    found: dict       # group -> {sequence: (entry, segment number)}
    generation: dict  # group -> highest checkpointed generation
    deleted: dict     # group -> highest checkpointed delete counter
    torn_tails: int = 0


def read_segments(directory: str, numbers: list[int]) -> SegmentScan:
    """Read every segment in order; truncate a torn tail of the last one."""
    scan = SegmentScan({}, {}, {})
    for index, number in enumerate(numbers):
        path = os.path.join(directory, segment_name(number))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise LogStoreError(f"cannot read log segment {path}: "
                                f"{exc.strerror or exc}") from exc
        try:
            _read_records(scan, data, number)
        except BadRecord as bad:
            _torn_tail(path, data, bad, index == len(numbers) - 1)
            scan.torn_tails += 1
    return scan


def _read_records(scan: SegmentScan, data: bytes, number: int) -> None:
    for _, kind, value in scan_records(data):
        if kind == KIND_ENTRY:
            group, sequence, entry = value
            scan.found.setdefault(group, {})[sequence] = (entry, number)
        else:
            for group, generation, deleted in value:
                scan.generation[group] = max(scan.generation.get(group, 0), generation)
                scan.deleted[group] = max(scan.deleted.get(group, 0), deleted)


def _torn_tail(path: str, data: bytes, bad: BadRecord, last: bool) -> None:
    """Truncate a crash's torn tail away, or raise: anything else is corruption."""
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
        fsync_path(path)
    except OSError as exc:
        raise LogStoreError(f"cannot truncate the torn tail of {path} at offset "
                            f"{bad.offset}: {exc.strerror or exc}") from exc


@dataclass
class JobResult:
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


def run_job(directory: str, fd: int | None, new_path: str | None, pieces: list, sync: bool,
            unlink_paths: list[str], close_after: bool) -> JobResult:
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
            fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
        if pieces:
            _write_all(fd, b"".join(pieces))
        if sync:
            _fdatasync(fd)
            fsyncs += 1
        if new_path is not None:
            fsync_path(directory, directory=True)
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
    errors = _unlink(unlink_paths)
    return JobResult(fd, time.monotonic_ns() - started, fsyncs, errors)


def _unlink(paths: list[str]) -> list[tuple[str, str]]:
    errors = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append((path, exc.strerror or str(exc)))
    return errors
