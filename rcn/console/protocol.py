"""The console as a Twisted protocol: lines in, a :class:`CommandTree`'s answers out.

The same protocol runs on a serial port (``twisted.internet.serialport.SerialPort``,
which a device opens from its ``[console] serial`` setting) and on TCP (for
console servers). Terminals end lines with CR, LF or CRLF: any of them ends a
line. A prompt with the device name follows every answer; errors start with
``% ``. ``exit`` ends a TCP session (a serial line just gets a new prompt); lines typed
after it, even in the same read, are not run.
Lines over :data:`MAX_LINE` bytes are refused, not buffered, and answers no one reads do
not pile up: while the transport holds more than its buffer size (64 KiB) unsent, the
console takes no more lines and the transport stops reading (flow control).

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
    refused (``too_long``), not buffered. Subclasses answer in :meth:`line`.

    The protocol is its transport's producer: when the transport holds more unsent output
    than its buffer size, it calls :meth:`pauseProducing`; the protocol then takes no
    more lines and the transport reads no more input until the output has drained."""

    def __init__(self):
        self._buffer = b""
        self.paused = False
        self.closing = False      # set by :meth:`stop_reading`: input after it is ignored

    def connectionMade(self):
        self.transport.registerProducer(self, True)

    def pauseProducing(self):
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.paused = False
        self.transport.resumeProducing()
        self._take_lines()

    def stopProducing(self):
        pass

    def dataReceived(self, data: bytes):
        if self.closing:
            return
        self._buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._take_lines()

    def stop_reading(self) -> None:
        """The session ends: the lines still buffered (typed after ``exit`` in the same
        read) and any input that follows are not run."""
        self.closing = True
        self._buffer = b""

    def _take_lines(self):
        # paused, the lines of the last read wait here: one read's worth at most
        while not self.paused and not self.closing and b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if len(line) > MAX_LINE:       # whole in one read: refused all the same
                self.too_long()
            else:
                self.line(line)
        if b"\n" not in self._buffer and len(self._buffer) > MAX_LINE:
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
        super().connectionMade()
        if self.banner:
            self.transport.write(self.banner.encode() + b"\r\n")
        self.transport.write(self.prompt)

    def too_long(self) -> None:
        self._answer(f"% line longer than {MAX_LINE} bytes: ignored")

    def line(self, raw: bytes) -> None:
        self.lines += 1
        text = raw.decode("utf-8", "replace").strip()
        if text.lower() in ("exit", "quit", "logout") and self.closable:
            self.stop_reading()
            self.transport.unregisterProducer()    # a registered producer keeps it open
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
