"""A daemon's console as a Twisted service: on its serial port and/or a TCP port."""

from __future__ import annotations

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.logger import Logger

from rcn.config import ConsoleConfig
from rcn.console.commands import CommandTree
from rcn.console.protocol import ConsoleFactory, ConsoleProtocol

_log = Logger()


class _SerialConsole(service.Service):
    """Opens the serial device at start (a missing device is logged, the daemon runs on)."""

    def __init__(self, tree: CommandTree, name: str, banner: str, device: str, speed: int,
                 reactor):
        self.tree, self.name, self.banner = tree, name, banner
        self.device, self.speed, self.reactor = device, speed, reactor
        self.port = None

    def startService(self):
        super().startService()
        from twisted.internet.serialport import SerialPort
        try:
            self.port = SerialPort(ConsoleProtocol(self.tree, self.name, self.banner,
                                                   closable=False),
                                   self.device, self.reactor, baudrate=self.speed)
        except Exception as exc:                 # serial.SerialException and OSError
            _log.error("console: cannot open {device}: {why}", device=self.device, why=exc)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            self.port.loseConnection()
            self.port = None


def serve_console(tree: CommandTree, name: str, banner: str, config: ConsoleConfig,
                  reactor) -> service.MultiService:
    top = service.MultiService()
    if config.serial is not None:
        _SerialConsole(tree, name, banner, config.serial, config.speed,
                       reactor).setServiceParent(top)
    if config.tcp is not None:
        endpoint = endpoints.TCP4ServerEndpoint(reactor, config.tcp.port,
                                                interface=config.tcp.host)
        internet.StreamServerEndpointService(endpoint, ConsoleFactory(tree, name, banner)
                                             ).setServiceParent(top)
    return top
