"""A daemon's console as a Twisted service: on its serial port and/or a TCP port.

``serial = "pty"`` (QEMU's ``-serial pty``): the daemon makes a pseudo-terminal itself,
serves the console on the master side and logs the slave's name (``console on
/dev/pts/N``); with ``pty_link`` a symlink at that path points to it. An operator opens
the slave (or the link) as a serial port: ``screen``, ``picocom``, pyserial's
``serial_for_url(PATH)``. The daemon keeps the slave open itself, so the master never
reads EIO while no one is attached, and a client may come and go.
"""

from __future__ import annotations

import os
import tty

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.error import ConnectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger
from twisted.python.failure import Failure

from rcn.config import PTY, ConsoleConfig
from rcn.console.commands import CommandTree
from rcn.console.protocol import ConsoleFactory, ConsoleProtocol

_log = Logger()


class PtyConsole:
    """A protocol on the master side of a new pty (see the module docstring)."""

    def __init__(self, protocol, reactor, link: str | None = None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)                 # bytes as they are: no echo, no line editing
        self.name = os.ttyname(self.slave)
        self.link = None
        try:
            if link is not None:
                _replace_link(self.name, link)
                self.link = link
            # epoll keeps one selectable per fd: the writer gets a descriptor of its own
            self._write_fd = os.dup(self.master)
        except OSError:
            self._close_fds()
            raise
        self.transport = StandardIO(protocol, stdin=self.master, stdout=self._write_fd,
                                    reactor=reactor)

    def close(self) -> None:
        """Stop at once (pending output is dropped: no one may be reading), close the pty
        and remove the link if it still points here."""
        if not self.transport.disconnected:
            self.transport.connectionLost(Failure(ConnectionDone("console stopped")))
        self._close_fds()
        if self.link is not None:
            try:
                if os.readlink(self.link) == self.name:
                    os.unlink(self.link)
            except OSError:
                pass                           # gone or replaced: not ours to remove
            self.link = None

    def _close_fds(self) -> None:
        for fd in (getattr(self, "_write_fd", None), self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._write_fd = self.master = self.slave = None


def _replace_link(target: str, link: str) -> None:
    """``link`` -> ``target``, replacing an old symlink there (a daemon that died leaves
    one); anything else at ``link`` is refused, not deleted."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise OSError(f"{link} exists and is not a symlink: not replacing it")
    temporary = f"{link}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)                # atomic: a client never finds no link


class SerialService(service.Service):
    """A protocol on a serial device, opened at start (a missing device is logged and the
    daemon runs on). ``make_protocol()`` builds the protocol. ``device == "pty"``: a
    pseudo-terminal of its own (:class:`PtyConsole`), linked from ``pty_link`` if given;
    ``pty_name`` is then the slave's name."""

    def __init__(self, make_protocol, device: str, speed: int, reactor, what: str = "console",
                 pty_link: str | None = None):
        if pty_link is not None and device != PTY:
            raise ValueError(f"pty_link is only for device {PTY!r}, not {device!r}")
        self.make_protocol, self.device, self.speed = make_protocol, device, speed
        self.reactor, self.what, self.pty_link = reactor, what, pty_link
        self.port = None
        self.pty: PtyConsole | None = None

    @property
    def pty_name(self) -> str | None:
        return self.pty.name if self.pty is not None else None

    def startService(self):
        super().startService()
        if self.device == PTY:
            self._start_pty()
            return
        from twisted.internet.serialport import SerialPort
        try:
            self.port = SerialPort(self.make_protocol(), self.device, self.reactor,
                                   baudrate=self.speed)
        except Exception as exc:                 # serial.SerialException and OSError
            _log.error("{what}: cannot open {device}: {why}", what=self.what,
                       device=self.device, why=exc)

    def _start_pty(self):
        try:
            self.pty = PtyConsole(self.make_protocol(), self.reactor, self.pty_link)
        except OSError as exc:
            _log.error("{what}: cannot make a pty{linked}: {why}", what=self.what,
                       linked=f" linked from {self.pty_link}" if self.pty_link else "",
                       why=exc.strerror or exc)
            return
        _log.info("{what} on {name}{linked}", what=self.what, name=self.pty.name,
                  linked=f" (link {self.pty_link})" if self.pty_link else "")

    def stopService(self):
        super().stopService()
        if self.port is not None:
            self.port.loseConnection()
            self.port = None
        if self.pty is not None:
            self.pty.close()
            self.pty = None


def serve_console(tree: CommandTree, name: str, banner: str, config: ConsoleConfig,
                  reactor) -> service.MultiService:
    top = service.MultiService()
    if config.serial is not None:
        SerialService(lambda: ConsoleProtocol(tree, name, banner, closable=False),
                      config.serial, config.speed, reactor,
                      pty_link=config.pty_link).setServiceParent(top)
    if config.tcp is not None:
        endpoint = endpoints.serverFromString(reactor, config.tcp)     # an endpoint string
        internet.StreamServerEndpointService(endpoint, ConsoleFactory(tree, name, banner)
                                             ).setServiceParent(top)
    return top
