"""``rcn-wanem``: the WAN emulator appliance as a daemon -- its links, and SCPI on its console."""

from __future__ import annotations

from twisted.application import service
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from rcn.wanem.config import WanemConfig
from rcn.wanem.link import WanEmulator
from rcn.wanem.scpi import MAX_LINE, ScpiConsole, ScpiError

_log = Logger()


class ScpiProtocol(Protocol):
    """SCPI over a line: a command per line (CR, LF or CRLF), answers to queries only."""

    def __init__(self, console: ScpiConsole):
        self.console = console
        self._buffer = b""

    def dataReceived(self, data: bytes):
        self._buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            answer = self.console.handle(line.decode("ascii", "replace"))
            if answer is not None:
                self.transport.write(answer.encode() + b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.console.push_error(ScpiError(-223, "Too much data",
                                              f"a line over {MAX_LINE} bytes"))


class ScpiFactory(Factory):
    def __init__(self, console: ScpiConsole):
        self.console = console

    def buildProtocol(self, addr):
        return ScpiProtocol(self.console)


class _Links(service.Service):
    def __init__(self, emulator: WanEmulator, reactor):
        self.emulator, self.reactor, self.ports = emulator, reactor, []

    def startService(self):
        super().startService()
        self.ports = self.emulator.listen(self.reactor)

    def stopService(self):
        super().stopService()
        for port in self.ports:
            port.stopListening()
        self.ports = []


def make_service(config: WanemConfig, reactor) -> tuple[service.MultiService, WanEmulator]:
    from twisted.application import internet
    from twisted.internet import endpoints
    emulator = WanEmulator(reactor, list(config.links))
    console = ScpiConsole(emulator, idn=f"RCN,rcn-wanem,{config.id},0.1.0")
    top = service.MultiService()
    _Links(emulator, reactor).setServiceParent(top)
    if config.console is not None:
        if config.console.serial is not None:
            top.addService(_SerialScpi(console, config.console.serial, config.console.speed,
                                       reactor))
        if config.console.tcp is not None:
            endpoint = endpoints.TCP4ServerEndpoint(reactor, config.console.tcp.port,
                                                    interface=config.console.tcp.host)
            internet.StreamServerEndpointService(endpoint, ScpiFactory(console)
                                                 ).setServiceParent(top)
    _log.info("rcn-wanem {id}: {n} links", id=config.id, n=len(config.links))
    return top, emulator


class _SerialScpi(service.Service):
    def __init__(self, console, device, speed, reactor):
        self.console, self.device, self.speed, self.reactor = console, device, speed, reactor
        self.port = None

    def startService(self):
        super().startService()
        from twisted.internet.serialport import SerialPort
        try:
            self.port = SerialPort(ScpiProtocol(self.console), self.device, self.reactor,
                                   baudrate=self.speed)
        except Exception as exc:
            _log.error("SCPI console: cannot open {device}: {why}", device=self.device, why=exc)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            self.port.loseConnection()
