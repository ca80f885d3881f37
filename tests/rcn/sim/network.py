"""A simulated UDP network on one ``task.Clock``: loss, duplication, delay, reordering.

Every datagram takes a random delay (``min_delay``..``max_delay``), so
datagrams overtake each other; ``loss`` and ``duplicate`` are probabilities
per datagram. All randomness comes from one seeded ``random.Random``: a run
replays exactly from its seed. Endpoints are real
:class:`rcn.logxfer.protocol.LogTransferProtocol` objects with a fake
transport, so the hop layer (sealing, opening, replay windows), parsing, CRC
checks and drop counting are the daemons' own. :meth:`SimNetwork.inject` puts
a datagram on the wire from any address (an attacker's).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rcn.logxfer.protocol import LogTransferProtocol
from rcn.logxfer.routes import Address


@dataclass
class LinkModel:
    loss: float = 0.0
    duplicate: float = 0.0
    min_delay: float = 0.0001
    max_delay: float = 0.002


class _Transport:
    def __init__(self, network: "SimNetwork", address: Address):
        self.network = network
        self.address = address

    def write(self, data: bytes, addr) -> None:
        self.network.send(self.address, data, Address(addr[0], addr[1]))


class SimNetwork:
    def __init__(self, clock, seed: int, model: LinkModel | None = None):
        self.clock = clock
        self.random = random.Random(seed)
        self.model = model or LinkModel()
        self.endpoints: dict[Address, LogTransferProtocol] = {}
        self.down: set[Address] = set()
        self.stats = {"sent": 0, "lost": 0, "duplicated": 0, "delivered": 0, "unreachable": 0}

    def attach(self, address: Address, handler, drops=None) -> LogTransferProtocol:
        """An endpoint at ``address`` (``drops``: the device's counter, as the daemons
        share it with their protocol); seal it by setting its ``hop``."""
        protocol = LogTransferProtocol(handler, drops)
        protocol.transport = _Transport(self, address)
        self.endpoints[address] = protocol
        return protocol

    def inject(self, source: Address, data: bytes, destination: Address) -> None:
        """``data`` as if ``source`` sent it (no hop layer of ours: the bytes as given)."""
        self.send(source, data, destination)

    def send(self, source: Address, data: bytes, destination: Address) -> None:
        self.stats["sent"] += 1
        model = self.model
        if self.random.random() < model.loss:
            self.stats["lost"] += 1
            return
        copies = 2 if self.random.random() < model.duplicate else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            delay = self.random.uniform(model.min_delay, model.max_delay)
            self.clock.callLater(delay, self._deliver, source, data, destination)

    def _deliver(self, source: Address, data: bytes, destination: Address) -> None:
        protocol = self.endpoints.get(destination)
        if protocol is None or destination in self.down:
            self.stats["unreachable"] += 1
            return
        self.stats["delivered"] += 1
        protocol.datagramReceived(data, (source.host, source.port))
