"""Test endpoints for the core's socket tests: edges as UDP sockets in the test process."""

from __future__ import annotations


import os

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody

from datapath.frames.logentry import EntryType, build_entry
from tests.support import key_ring
from rcn.logxfer.protocol import LogTransferProtocol, listen
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import HopSeal

SRC = 0x500A098000000001
DST = 0x500A098000000002


def wr(sequence: int, size: int = 4096, ttl: int = 16, entry_type=EntryType.WR) -> bytes:
    return build_entry(entry_type, bytes((sequence + i) & 0xFF for i in range(size)),
                       group_id=7, sequence=sequence, ttl=ttl, source_wwn=SRC, target_wwn=DST)


class Endpoint:
    """An edge stand-in: a real log-transfer socket on 127.0.0.1 that keeps what arrives.

    ``next_entry()`` is a Deferred for the next entry that arrives (or one already
    waiting); only entries that pass the protocol's checks arrive.
    """

    def __init__(self, testcase):
        self.arrived = []
        self._waiting: list[defer.Deferred] = []
        self.protocol = LogTransferProtocol(self)
        self.port = listen(reactor, self.protocol, Address("127.0.0.1", 0))
        testcase.addCleanup(self.port.stopListening)
        self.address = Address("127.0.0.1", self.port.getHost().port)
        self._taken = 0

    def entry_received(self, entry, data, sender):
        self.arrived.append((entry, data, sender))
        if self._waiting:
            self._taken += 1
            self._waiting.pop(0).callback((entry, data, sender))

    def next_entry(self) -> defer.Deferred:
        if self._taken < len(self.arrived):
            self._taken += 1
            return defer.succeed(self.arrived[self._taken - 1])
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def send(self, data: bytes, to: Address) -> None:
        self.protocol.send(data, to)

    def seal(self, ring) -> None:
        """Seal what it sends and open what arrives with ``ring``'s link keys."""
        self.protocol.hop = HopSeal(self.address, ring, self.protocol.drops)


def sealed_core(testcase, core: Address, *endpoints: Endpoint) -> str:
    """A key file for ``core`` and each endpoint's link to it (the endpoints seal with it)."""
    ring = key_ring(links=[(core, e.address) for e in endpoints])
    path = os.path.abspath(testcase.mktemp())
    ring.save(path)
    for endpoint in endpoints:
        endpoint.seal(ring)
    return path


def core_toml(listen: Address, source: Address, target: Address, *, keys: str,
              batch: bool = True, max_delay_ms: float = 1.0,
              metrics_port: int | None = None) -> str:
    metrics = f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n' if metrics_port else ""
    return f"""
[core]
id = "core-test"
listen = "{listen}"
receive_buffer = "4MiB"
[batch]
enabled = {"true" if batch else "false"}
max_delay_ms = {max_delay_ms}
{metrics}
[seal]
keys = "{keys}"
[[route]]
source_wwn = "50:0a:09:80:00:00:00:01"
target_wwn = "50:0a:09:80:00:00:00:02"
path = ["{source}", "{listen}", "{target}"]
"""


@defer.inlineCallbacks
def get_metrics(port: int):
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    body = yield readBody(response)
    return response.code, body.decode()


def metric(text: str, name: str) -> float | None:
    """The value of the sample line ``name value`` (labels included in ``name``)."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return None
