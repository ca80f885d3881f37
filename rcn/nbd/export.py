"""What an NBD server serves: the ``Export`` interface, a volume adapter, the name table.

An export may answer at once (return a value) or later (return a Deferred): the
server handles both, so an export that sends its writes through the remote copy
path can hold a request until the write is safe. ``write`` receives its data as
a read-only bytes-like object (usually a ``memoryview`` over the received
bytes, so nothing is copied on the way to ``os.pwrite``); an export that keeps
the data beyond the call must copy it with ``bytes(data)`` if it needs ``bytes``.

Failures are reported by raising (or errbacking with) ``NbdError(code)`` with an
NBD error code from ``rcn.nbd.protocol``, or ``BlockVolumeError`` / ``OSError``,
whose errno ``error_code`` maps onto the NBD codes. Anything else becomes EIO
and is logged as a bug.

``VolumeExport`` serves any ``BlockVolume``: the calls it makes are declared
here, so the NBD server depends on no volume implementation (the storage
emulator's ``rcn.storage.volume.Volume`` is one; its ``VolumeError`` is a
``BlockVolumeError``).
"""

from __future__ import annotations

import errno as _errno
from typing import Iterable, Iterator, Protocol, runtime_checkable

from rcn.nbd import protocol as P


class NbdError(Exception):
    """An export's refusal, with the NBD error code the client should see."""

    def __init__(self, code: int, message: str = ""):
        name = P.ERROR_NAMES.get(code, str(code))
        super().__init__(f"{name}: {message}" if message else name)
        self.code = code
        self.message = message


class BlockVolumeError(Exception):
    """A ``BlockVolume``'s refusal or failure. ``errno`` is an errno number
    (``errno.EINVAL``, ``errno.ENOSPC``, ...): ``error_code`` maps it onto an NBD
    error code exactly as it maps an ``OSError``'s."""

    errno: int


class BlockVolume(Protocol):
    """What ``VolumeExport`` needs of a volume. Every call is synchronous and
    raises ``BlockVolumeError`` (or ``OSError``) on failure."""

    capacity: int            # bytes
    block_size: int          # a power of two
    strict_alignment: bool   # True: only whole blocks (requests must be aligned)

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data, fua: bool = False) -> None: ...
    def flush(self) -> None: ...
    def trim(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int, may_trim: bool = True) -> None: ...


@runtime_checkable
class Export(Protocol):
    """One named export. Optional attributes the server honours when present:
    ``min_block_size`` (default 1: byte-granular requests are fine; a larger
    power of two makes the server reject misaligned requests with EINVAL) and
    ``can_multi_conn`` (default False: set it when a flush on one connection
    covers writes made on every connection)."""

    name: str
    size: int
    block_size: int
    read_only: bool
    description: str

    def read(self, offset: int, length: int):  # -> bytes | Deferred[bytes]
        ...

    def write(self, offset: int, data, fua: bool):  # -> None | Deferred[None]
        ...

    def flush(self):  # -> None | Deferred[None]
        ...

    def trim(self, offset: int, length: int):  # -> None | Deferred
        ...

    def write_zeroes(self, offset: int, length: int, may_trim: bool):  # -> None | Deferred
        ...


# errno values of OSError / BlockVolumeError -> NBD error codes.
_ERRNO_TO_NBD = {
    _errno.EPERM: P.EPERM, _errno.EACCES: P.EPERM, _errno.EROFS: P.EPERM,
    _errno.EIO: P.EIO,
    _errno.ENOMEM: P.ENOMEM,
    _errno.EINVAL: P.EINVAL,
    _errno.ENOSPC: P.ENOSPC, _errno.EDQUOT: P.ENOSPC, _errno.EFBIG: P.ENOSPC,
    _errno.EOVERFLOW: P.EOVERFLOW,
    _errno.EOPNOTSUPP: P.ENOTSUP, _errno.ENOTSUP: P.ENOTSUP,
    _errno.ESHUTDOWN: P.ESHUTDOWN,
}
_NBD_CODES = frozenset(P.ERROR_NAMES)


def error_code(exc: BaseException) -> int | None:
    """The NBD error code for an export's exception; None for an unexpected one (a bug)."""
    if isinstance(exc, NbdError):
        return exc.code if exc.code in _NBD_CODES else P.EIO
    if isinstance(exc, (BlockVolumeError, OSError)):
        return _ERRNO_TO_NBD.get(exc.errno, P.EIO)
    return None


class VolumeExport:
    """Serve a ``BlockVolume`` (synchronously: every call returns at once)."""

    can_multi_conn = True  # one file, one page cache: fdatasync covers every connection

    def __init__(self, volume: BlockVolume, name: str, description: str = "",
                 read_only: bool = False):
        _check_name(name)
        self.volume = volume
        self.name = name
        self.description = description
        self.read_only = read_only
        self.size = volume.capacity
        self.block_size = volume.block_size
        self.min_block_size = volume.block_size if volume.strict_alignment else 1

    def read(self, offset: int, length: int) -> bytes:
        return self.volume.read(offset, length)

    def write(self, offset: int, data, fua: bool) -> None:
        if self.read_only:
            raise NbdError(P.EPERM, f"export {self.name!r} is read-only")
        self.volume.write(offset, data, fua)

    def flush(self) -> None:
        self.volume.flush()

    def trim(self, offset: int, length: int) -> None:
        if self.read_only:
            raise NbdError(P.EPERM, f"export {self.name!r} is read-only")
        self.volume.trim(offset, length)

    def write_zeroes(self, offset: int, length: int, may_trim: bool) -> None:
        if self.read_only:
            raise NbdError(P.EPERM, f"export {self.name!r} is read-only")
        self.volume.write_zeroes(offset, length, may_trim)

    def __repr__(self) -> str:
        return f"<VolumeExport {self.name!r} {self.volume!r}{' ro' if self.read_only else ''}>"


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"export name must be a str, got {type(name).__name__}")
    encoded = name.encode("utf-8")
    if len(encoded) > P.MAX_STRING or "\0" in name:
        raise ValueError(f"export name {name[:40]!r}... must be at most {P.MAX_STRING} bytes "
                         f"of UTF-8 without NUL")


class ExportTable:
    """Export names -> exports, in the order they were added (NBD_OPT_LIST lists them).

    The empty name is NBD's "default export": it resolves to ``default`` when
    one is set (clients such as ``qemu-io nbd://host:port`` ask for it).
    """

    def __init__(self, exports: Iterable[Export] = (), default: str | None = None):
        self._exports: dict[str, Export] = {}
        for export in exports:
            self.add(export)
        self.default = default

    def add(self, export: Export) -> None:
        _check_name(export.name)
        if export.name in self._exports:
            raise ValueError(f"an export named {export.name!r} already exists")
        self._exports[export.name] = export

    def remove(self, name: str) -> Export:
        return self._exports.pop(name)

    def get(self, name: str) -> Export | None:
        export = self._exports.get(name)
        if export is None and name == "" and self.default is not None:
            export = self._exports.get(self.default)
        return export

    def names(self) -> list[str]:
        return list(self._exports)

    def __iter__(self) -> Iterator[Export]:
        return iter(list(self._exports.values()))

    def __len__(self) -> int:
        return len(self._exports)

    def __contains__(self, name: object) -> bool:
        return name in self._exports
