"""A volume of the emulated storage array: a fixed-capacity sparse file.

``Volume`` is synchronous on purpose: it is a local file, and ``os.pread`` /
``os.pwrite`` of one request take microseconds, so the reactor thread calls it
directly. Every call checks its range first and raises ``VolumeError`` (a
``ValueError`` carrying an errno-like ``kind``) with the volume, offset and length
in the message; failures of the file itself (a full disk, an I/O error) come out as
``VolumeError`` with the operating system's errno.

Range rules, which follow the NBD protocol's error advice:

* a read or trim that reaches past the capacity: ``EINVAL``;
* a write or write-zeroes that reaches past the capacity: ``ENOSPC``;
* negative offsets or lengths, non-integers: ``EINVAL``;
* with ``strict_alignment=True`` (a volume that only takes whole blocks, as an
  FCP target does), an offset or length that is not a multiple of
  ``block_size``: ``EINVAL``. By default a volume is byte-addressable.

Discarding (``trim`` and ``write_zeroes(..., may_trim=True)``) punches a hole with
``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`` through ctypes
(``os.posix_fallocate`` only allocates). ``write_zeroes(..., may_trim=False)``
uses ``FALLOC_FL_ZERO_RANGE``, which keeps the range allocated. Where the file
system or platform refuses either mode (``EOPNOTSUPP``), the volume writes zeroes
in 1 MiB chunks instead, so memory stays bounded. Either way the range reads back
as zeroes afterwards: a trimmed range of a volume is defined, not left stale.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import stat

from rcn.nbd.export import BlockVolumeError

# fallocate(2) modes, linux/falloc.h.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

ZERO_CHUNK = 1 << 20
_ZEROES = bytes(ZERO_CHUNK)
MAX_BLOCK_SIZE = 1 << 16


class VolumeError(ValueError, BlockVolumeError):
    """A volume operation was refused or failed.

    ``errno`` is the errno number (``errno.EINVAL``, ``errno.ENOSPC``, ...) and
    ``kind`` its name; the NBD server maps it onto an NBD error code (it is the
    ``BlockVolumeError`` of ``rcn.nbd.export``, whose ``BlockVolume`` a
    ``Volume`` implements).
    """

    def __init__(self, errno: int, message: str):
        super().__init__(f"{_errno.errorcode.get(errno, errno)}: {message}")
        self.errno = errno
        self.message = message

    @property
    def kind(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))


def _load_fallocate():
    """``fallocate(fd, mode, offset, length)`` from libc, or None off Linux."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_FALLOCATE = _load_fallocate()
_UNSUPPORTED = {_errno.EOPNOTSUPP, _errno.ENOSYS, _errno.EINVAL}


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """True when done; False when the platform or file system lacks ``mode``."""
    if _FALLOCATE is None:
        return False
    if _FALLOCATE(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err))


class Volume:
    """A LUN's data: ``capacity_bytes`` of a sparse file at ``path``.

    ``create=True`` creates the file when it is missing and extends a shorter
    one (sparsely); ``create=False`` demands an existing file of exactly that
    size. A file longer than the capacity is refused in both cases rather than
    silently cut.

    ``open_now=False`` checks the arguments only: the file is opened (and created)
    by :meth:`open`, and until then every request answers ``EBADF`` as on a
    closed volume. A daemon opens its volumes in ``startService``, after twistd
    has applied ``--umask`` and ``--uid``. A new file gets mode 0o644 less the
    umask.
    """

    def __init__(self, path: str | os.PathLike, lun: int, capacity_bytes: int,
                 block_size: int = 512, create: bool = True, *,
                 strict_alignment: bool = False, open_now: bool = True):
        self.path = os.fspath(path)
        if not isinstance(lun, int) or lun < 0:
            raise VolumeError(_errno.EINVAL, f"LUN must be a non-negative integer, got {lun!r}")
        if (not isinstance(block_size, int) or block_size < 1 or block_size > MAX_BLOCK_SIZE
                or block_size & (block_size - 1)):
            raise VolumeError(_errno.EINVAL, f"block size must be a power of two from 1 to "
                              f"{MAX_BLOCK_SIZE}, got {block_size!r}")
        if not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise VolumeError(_errno.EINVAL, f"capacity must be a positive integer, "
                              f"got {capacity_bytes!r}")
        if capacity_bytes % block_size:
            raise VolumeError(_errno.EINVAL, f"capacity {capacity_bytes} is not a multiple of "
                              f"the block size {block_size}; round it to whole blocks")
        self.lun = lun
        self.capacity = capacity_bytes
        self.block_size = block_size
        self.strict_alignment = strict_alignment
        self._punch = True  # cleared when the file system refuses hole punching
        self._zero_range = True
        self.create = create
        self._fd: int | None = None
        if open_now:
            self.open()

    def open(self) -> None:
        """Open the file (see the class doc for ``create``); a second call is refused."""
        if self._fd is not None:
            raise VolumeError(_errno.EBUSY, f"volume {self.path} (LUN {self.lun}) is open already")
        create, capacity_bytes = self.create, self.capacity
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            hint = " (create=False: the file must exist)" if exc.errno == _errno.ENOENT else ""
            raise VolumeError(exc.errno or _errno.EIO,
                              f"cannot open volume file {self.path}: {exc.strerror}{hint}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise VolumeError(_errno.EINVAL, f"{self.path} is not a regular file")
            if st.st_size > capacity_bytes:
                raise VolumeError(_errno.EINVAL, f"{self.path} holds {st.st_size} bytes, more "
                                  f"than the capacity {capacity_bytes}; refusing to truncate it")
            if st.st_size < capacity_bytes:
                if not create:
                    raise VolumeError(_errno.EINVAL,
                                      f"{self.path} holds {st.st_size} bytes, expected "
                                      f"{capacity_bytes} (open with create=True to extend)")
                os.ftruncate(fd, capacity_bytes)
        except OSError as exc:
            os.close(fd)
            raise VolumeError(exc.errno or _errno.EIO,
                              f"cannot size volume file {self.path}: {exc.strerror}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    # -- properties ---------------------------------------------------------

    @property
    def block_count(self) -> int:
        return self.capacity // self.block_size

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise VolumeError(_errno.EBADF, f"volume {self.path} (LUN {self.lun}) is closed")
        return self._fd

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return (f"<Volume LUN {self.lun} {self.path} {self.capacity} bytes, "
                f"block {self.block_size}, {state}>")

    # -- checks -------------------------------------------------------------

    def check_range(self, op: str, offset: int, length: int, write: bool = False) -> int:
        """Raise ``VolumeError`` unless ``[offset, offset+length)`` is a valid
        range for ``op``; return the file descriptor."""
        fd = self._fd
        if fd is None:
            raise VolumeError(_errno.EBADF, f"{op} on closed volume {self.path} (LUN {self.lun})")
        if not isinstance(offset, int) or not isinstance(length, int):
            raise VolumeError(_errno.EINVAL, f"{op}: offset and length must be integers, "
                              f"got {offset!r}, {length!r}")
        if offset < 0 or length < 0:
            raise VolumeError(_errno.EINVAL, f"{op} at offset {offset} length {length} on "
                              f"LUN {self.lun}: negative offset or length")
        if offset + length > self.capacity:
            raise VolumeError(_errno.ENOSPC if write else _errno.EINVAL,
                              f"{op} at offset {offset} length {length} on LUN {self.lun} "
                              f"ends past the capacity {self.capacity}")
        if self.strict_alignment and (offset % self.block_size or length % self.block_size):
            raise VolumeError(_errno.EINVAL,
                              f"{op} at offset {offset} length {length} on LUN {self.lun} is not "
                              f"aligned to the block size {self.block_size}")
        return fd

    def _os_error(self, op: str, offset: int, length: int, exc: OSError) -> VolumeError:
        err = VolumeError(exc.errno or _errno.EIO, f"{op} at offset {offset} length {length} "
                          f"on {self.path} (LUN {self.lun}) failed: {exc.strerror}")
        err.__cause__ = exc
        return err

    # -- I/O ----------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        fd = self.check_range("read", offset, length)
        try:
            data = os.pread(fd, length, offset)
            if len(data) == length:
                return data
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(fd, length - got, offset + got)
                if not more:
                    raise VolumeError(_errno.EIO, f"read at offset {offset + got} on {self.path} "
                                      f"hit end of file: the file was shortened behind our back")
                parts.append(more)
                got += len(more)
            return b"".join(parts)
        except OSError as exc:
            raise self._os_error("read", offset, length, exc) from exc

    def write(self, offset: int, data, fua: bool = False) -> None:
        """Write a bytes-like ``data``; with ``fua`` it is on stable storage on return."""
        length = len(data) if not isinstance(data, memoryview) else data.nbytes
        fd = self.check_range("write", offset, length, write=True)
        try:
            done = os.pwrite(fd, data, offset)
            if done < length:
                view = memoryview(data).cast("B")
                while done < length:
                    done += os.pwrite(fd, view[done:], offset + done)
            if fua:
                os.fdatasync(fd)
        except OSError as exc:
            raise self._os_error("write", offset, length, exc) from exc

    def flush(self) -> None:
        fd = self.fileno()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise self._os_error("flush", 0, 0, exc) from exc

    def trim(self, offset: int, length: int) -> None:
        """Discard a range: it reads back as zeroes and frees its space where it can."""
        fd = self.check_range("trim", offset, length)
        if length:
            self._discard(fd, "trim", offset, length, may_trim=True)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = True) -> None:
        """Zero a range; ``may_trim=False`` (NBD's NO_HOLE) keeps it allocated."""
        fd = self.check_range("write_zeroes", offset, length, write=True)
        if length:
            self._discard(fd, "write_zeroes", offset, length, may_trim)

    def _discard(self, fd: int, op: str, offset: int, length: int, may_trim: bool) -> None:
        try:
            if may_trim and self._punch:
                if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
                    return
                self._punch = False
            if not may_trim and self._zero_range:
                if _fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length):
                    return
                self._zero_range = False
            end = offset + length
            pos = offset
            while pos < end:
                pos += os.pwrite(fd, memoryview(_ZEROES)[:min(ZERO_CHUNK, end - pos)], pos)
        except OSError as exc:
            raise self._os_error(op, offset, length, exc) from exc

    # -- lifecycle ----------------------------------------------------------

    def allocated_bytes(self) -> int:
        """Bytes the file system has allocated for the file (sparse files hold less)."""
        return os.fstat(self.fileno()).st_blocks * 512

    def allocated_extents(self) -> list[tuple[int, int]]:
        """``[(offset, length)]`` of the file's data, sorted (SEEK_DATA / SEEK_HOLE).

        What an initial copy must send: holes read as zeroes. A file system or
        platform that cannot tell gets one extent, the whole volume.
        """
        fd = self.fileno()
        whole = [(0, self.capacity)]
        seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
        if seek_data is None or seek_hole is None:
            return whole
        out: list[tuple[int, int]] = []
        pos = 0
        try:
            while pos < self.capacity:
                try:
                    start = os.lseek(fd, pos, seek_data)
                except OSError as exc:
                    if exc.errno == _errno.ENXIO:          # no data after pos
                        break
                    raise
                if start >= self.capacity:
                    break
                end = min(os.lseek(fd, start, seek_hole), self.capacity)
                if end <= start:                           # a file system that lies: be safe
                    return whole
                out.append((start, end - start))
                pos = end
        except OSError as exc:
            if exc.errno in (_errno.EINVAL, _errno.EOPNOTSUPP, _errno.ENOTSUP, _errno.ENOSYS):
                return whole
            raise self._os_error("allocated_extents", pos, 0, exc) from exc
        return out

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
