"""A daemon's console as a Twisted service: on its serial port and/or a TCP port."""

from __future__ import annotations

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.logger import Logger

from rcn.config import ConsoleConfig
from rcn.console.commands import CommandTree
from rcn.console.protocol import ConsoleFactory, ConsoleProtocol

_log = Logger()


class SerialService(service.Service):
    """A protocol on a serial device, opened at start (a missing device is logged and the
    daemon runs on). ``make_protocol()`` builds the protocol."""

    def __init__(self, make_protocol, device: str, speed: int, reactor, what: str = "console"):
        self.make_protocol, self.device, self.speed = make_protocol, device, speed
        self.reactor, self.what = reactor, what
        self.port = None

    def startService(self):
        super().startService()
        from twisted.internet.serialport import SerialPort
        try:
            self.port = SerialPort(self.make_protocol(), self.device, self.reactor,
                                   baudrate=self.speed)
        except Exception as exc:                 # serial.SerialException and OSError
            _log.error("{what}: cannot open {device}: {why}", what=self.what,
                       device=self.device, why=exc)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            self.port.loseConnection()
            self.port = None


def serve_console(tree: CommandTree, name: str, banner: str, config: ConsoleConfig,
                  reactor) -> service.MultiService:
    top = service.MultiService()
    if config.serial is not None:
        SerialService(lambda: ConsoleProtocol(tree, name, banner, closable=False),
                      config.serial, config.speed, reactor).setServiceParent(top)
    if config.tcp is not None:
        endpoint = endpoints.TCP4ServerEndpoint(reactor, config.tcp.port,
                                                interface=config.tcp.host)
        internet.StreamServerEndpointService(endpoint, ConsoleFactory(tree, name, banner)
                                             ).setServiceParent(top)
    return top
