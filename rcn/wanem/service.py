"""``rcn-wanem``: the WAN emulator appliance as a daemon -- its links, and SCPI on its console."""

from __future__ import annotations

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from rcn.console.protocol import MAX_LINE, LineProtocol
from rcn.console.service import SerialService
from rcn.wanem.config import WanemConfig
from rcn.wanem.link import WanEmulator
from rcn.wanem.scpi import ScpiConsole, ScpiError

_log = Logger()


class ScpiProtocol(LineProtocol):
    """SCPI over a line: a command per line (CR, LF or CRLF), answers to queries only."""

    def __init__(self, console: ScpiConsole):
        super().__init__()
        self.console = console

    def line(self, raw: bytes) -> None:
        answer = self.console.handle(raw.decode("ascii", "replace"))
        if answer is not None:
            self.transport.write(answer.encode() + b"\n")

    def too_long(self) -> None:
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
            SerialService(lambda: ScpiProtocol(console), config.console.serial,
                          config.console.speed, reactor, "SCPI console",
                          pty_link=config.console.pty_link).setServiceParent(top)
        if config.console.tcp is not None:
            endpoint = endpoints.serverFromString(reactor, config.console.tcp)
            internet.StreamServerEndpointService(endpoint, ScpiFactory(console)
                                                 ).setServiceParent(top)
    _log.info("rcn-wanem {id}: {n} links", id=config.id, n=len(config.links))
    return top, emulator
