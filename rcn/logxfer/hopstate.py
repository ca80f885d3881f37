"""The hop layer's state file: the sender's counter reservation and the receivers' replay
high-water marks, kept across restarts (DESIGN.md 9; used by ``rcn.logxfer.seal.HopSeal``).

One small file per device (:func:`state_path`: an edge's ``DATA_DIR/keys.hop``, which
the daemon's user can always write; a core, which has no data directory, keeps it beside
its key file, ``KEYS.hop``). Not secret, but written 0600 like the keys, and refused when
group or others may write it: a lowered reservation would make the device reuse GCM
nonces::

    # RCN hop-layer state (DESIGN.md 9): written by the device, do not edit
    reserved <counter>
    seen <sender address> <key epoch> <highest counter opened>

``reserved``: no hop counter above it has been used; a device never seals with a counter
beyond it before it wrote a higher one (:meth:`HopStateFile.save`: a new file, fsync'ed,
renamed over the old one, and the directory fsync'ed). ``seen``: per sender and link key
epoch, the highest counter that opened; at start it is the window's floor.

Read as hostile input: at most :data:`MAX_STATE_BYTES` and :data:`MAX_WINDOWS` lines; an
error (:class:`HopStateError`) names the file and the line, never a value from it.
A file that does not parse stops the device's start instead of being ignored: without the
reservation, the counters would restart from the clock, and a clock behind the old counters
means GCM nonce reuse under the link key -- the one failure this file exists to prevent.
The operator's way back is in the message: remove the file (the counters restart from the
clock, which is safe unless this host's clock is behind where they were; new link keys make
it safe in any case).
"""

from __future__ import annotations

import os
import stat

from rcn.logxfer.keys import KeyFileError
from rcn.logxfer.routes import Address

#: the largest state file read (a line is under 100 bytes)
MAX_STATE_BYTES = 1 << 21
#: the most ``seen`` lines (a device's senders times the epochs it holds of each)
MAX_WINDOWS = 16384
#: counters beyond this are refused in the file (the wall clock's nanoseconds reach it in
#: 2262); the 64-bit counter then has 2**63 left
MAX_RESERVED = 1 << 63
_HEADER = "# RCN hop-layer state (DESIGN.md 9): written by the device, do not edit"
_WAY_BACK = ("fix it, or remove it: the hop counters then restart from the clock, which "
             "reuses GCM nonces if this host's clock is behind where they were (new link "
             "keys make that safe)")


class HopStateError(KeyFileError):
    """A hop state file that cannot be used; the message names the file and the line."""


Marks = dict[tuple[Address, int], int]


def dump(reserved: int, marks: Marks) -> str:
    lines = [_HEADER, f"reserved {reserved}"]
    lines += [f"seen {sender} {epoch} {top}"
              for (sender, epoch), top in sorted(marks.items(), key=lambda kv: (
                  str(kv[0][0]), kv[0][1]))]
    return "\n".join(lines) + "\n"


def parse(text: str, where: str) -> tuple[int, Marks]:
    """``(reserved, marks)`` of a state file's text; :class:`HopStateError` naming
    ``where`` and the line. A file without a ``reserved`` line reserves 0."""
    reserved: int | None = None
    marks: Marks = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        at = f"{where} line {number}"
        if words[0] == "reserved" and len(words) == 2:
            if reserved is not None:
                raise HopStateError(f"{at}: a second 'reserved' line; {_WAY_BACK}")
            reserved = _number(words[1], "the reservation", MAX_RESERVED, at)
        elif words[0] == "seen" and len(words) == 4:
            try:
                sender = Address.parse(words[1])
            except (ValueError, TypeError):
                raise HopStateError(f"{at}: not an address (host:port); {_WAY_BACK}") from None
            name = (sender, _number(words[2], "the key epoch", (1 << 32) - 1, at, low=1))
            if name in marks:
                raise HopStateError(f"{at}: a second 'seen' line for one sender and epoch; "
                                    f"{_WAY_BACK}")
            if len(marks) >= MAX_WINDOWS:
                raise HopStateError(f"{at}: more than {MAX_WINDOWS} 'seen' lines; {_WAY_BACK}")
            marks[name] = _number(words[3], "the counter", (1 << 64) - 1, at)
        else:
            raise HopStateError(f"{at}: expected 'reserved COUNTER' or 'seen ADDRESS EPOCH "
                                f"COUNTER' ({len(words)} words); {_WAY_BACK}")
    return (0 if reserved is None else reserved), marks


def _number(word: str, what: str, high: int, at: str, low: int = 0) -> int:
    if not (word.isascii() and word.isdigit()) or len(word) > 20:
        raise HopStateError(f"{at}: {what} is not a number; {_WAY_BACK}")
    value = int(word)
    if not low <= value <= high:
        raise HopStateError(f"{at}: {what} is outside {low}..{high}; {_WAY_BACK}")
    return value


class HopStateFile:
    """One device's hop state file at ``path``: :meth:`load` and :meth:`save`. Blocking
    file I/O, a few hundred bytes: at start, at stop, on the save interval and once per
    block of counters (``rcn.logxfer.seal.COUNTER_BLOCK``), never per datagram."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> tuple[int, Marks]:
        """What the file holds; ``(0, {})`` when there is none yet."""
        try:
            # O_NONBLOCK: a FIFO put there must not hang the start (refused below)
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return 0, {}
        except OSError as exc:
            raise HopStateError(f"hop state file {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise HopStateError(f"hop state file {self.path}: not a regular file")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise HopStateError(f"hop state file {self.path} is mode "
                                    f"{stat.S_IMODE(info.st_mode):04o}: other users may write "
                                    f"it; chmod 600 {self.path}")
            raw = f.read(MAX_STATE_BYTES + 1)
        if len(raw) > MAX_STATE_BYTES:
            raise HopStateError(f"hop state file {self.path}: larger than {MAX_STATE_BYTES} "
                                f"bytes; {_WAY_BACK}")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise HopStateError(f"hop state file {self.path}: not ASCII text; "
                                f"{_WAY_BACK}") from None
        return parse(text, f"hop state file {self.path}")

    def save(self, reserved: int, marks: Marks) -> None:
        """Replace the file atomically and durably: 0600 from its first byte, the data
        fsync'ed before the rename, the directory fsync'ed after it. OSError as it comes."""
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            data = memoryview(dump(reserved, marks).encode("ascii"))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)),
                            os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


EDGE_STATE = "keys.hop"


def state_path(keys: str | None = None, data_dir: str | None = None) -> str | None:
    """Where a device keeps its hop state: in its data directory (an edge), else beside
    its key file (a core); None with neither (unsealed)."""
    if data_dir is not None:
        return os.path.join(data_dir, EDGE_STATE)
    return None if keys is None else f"{keys}.hop"
