"""The console as a Twisted protocol: lines in, a :class:`CommandTree`'s answers out.

The same protocol runs on a serial port (``twisted.internet.serialport.SerialPort``,
which a device opens from its ``[console] serial`` setting) and on TCP (for
console servers). Terminals end lines with CR, LF or CRLF: any of them ends a
line. A prompt with the device name follows every answer; errors start with
``% ``. ``exit`` ends a TCP session (a serial line just gets a new prompt).
Lines over :data:`MAX_LINE` bytes are refused, not buffered.

The commands never block: handlers read the daemon's state objects in the reactor
thread and return text.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from rcn.console.commands import CommandTree, ConsoleError

MAX_LINE = 1024
_log = Logger()


class LineProtocol(Protocol):
    """Lines from a terminal: CR, LF or CRLF ends one; longer than :data:`MAX_LINE` is
    refused (``too_long``), not buffered. Subclasses answer in :meth:`line`."""

    def __init__(self):
        self._buffer = b""

    def dataReceived(self, data: bytes):
        self._buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.line(line)
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.too_long()

    def line(self, raw: bytes) -> None:
        raise NotImplementedError

    def too_long(self) -> None:
        raise NotImplementedError


class ConsoleProtocol(LineProtocol):
    def __init__(self, tree: CommandTree, name: str, banner: str = "", closable: bool = True):
        super().__init__()
        self.tree = tree
        self.name = name
        self.banner = banner
        self.closable = closable
        self.lines = 0

    @property
    def prompt(self) -> bytes:
        return f"{self.name}> ".encode()

    def connectionMade(self):
        if self.banner:
            self.transport.write(self.banner.encode() + b"\r\n")
        self.transport.write(self.prompt)

    def too_long(self) -> None:
        self._answer(f"% line longer than {MAX_LINE} bytes: ignored")

    def line(self, raw: bytes) -> None:
        self.lines += 1
        text = raw.decode("utf-8", "replace").strip()
        if text.lower() in ("exit", "quit", "logout") and self.closable:
            self.transport.write(b"bye\r\n")
            self.transport.loseConnection()
            return
        try:
            out = self.tree.run(text)
        except ConsoleError as exc:
            out = f"% {exc}"
        except Exception:                    # a handler's bug must not kill the console
            _log.failure("console command {line!r} failed", line=text)
            out = "% internal error (logged)"
        self._answer(out)

    def _answer(self, text: str) -> None:
        if text:
            self.transport.write(text.replace("\n", "\r\n").encode() + b"\r\n")
        self.transport.write(self.prompt)


class ConsoleFactory(Factory):
    """TCP consoles (for console servers); each session gets the same command tree."""

    def __init__(self, tree: CommandTree, name: str, banner: str = ""):
        self.tree, self.name, self.banner = tree, name, banner

    def buildProtocol(self, addr):
        protocol = ConsoleProtocol(self.tree, self.name, self.banner)
        protocol.factory = self
        return protocol
