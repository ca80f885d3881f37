"""Applying to an NBD server instead of an FCIP array (DESIGN.md 3.2, last sentence).

A target edge may apply a target volume's entries to an NBD export -- qemu-nbd,
nbdkit or our own ``python -m rcn.storage.nbdserve`` -- named by an ``nbd://HOST:PORT/NAME``
URL. :class:`NbdApplyTarget` is an ``apply_target_for`` target: WRITE(16) becomes
NBD_CMD_WRITE (FUA kept), READ(16) NBD_CMD_READ; anything else is refused with
CHECK CONDITION, INVALID COMMAND OPERATION CODE.

Why one request at a time: an NBD server has no ORDERED task attribute and may
complete requests in any order (qemu-nbd runs them in parallel), so two
writes in flight could land in the wrong order and expose a state that is no
prefix of the group's writes. Requests therefore go one after another; the
receiver's pipelining still overlaps the network with the apply.

The connection is made on first use and again after it is lost; a request
made while there is none fails (the receiver retries it later).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import Logger

from datapath.frames import fcp
from rcn.logxfer.rioarea import RioCommand
from rcn.nbd.client import connect_url
from rcn.rio.fcp import ScsiResult, SenseKey, check_condition

_log = Logger()
_WRITE16 = int(fcp.Opcode.WRITE_16)
_READ16 = int(fcp.Opcode.READ_16)
_INVALID_OPCODE = (0x20, 0x00)
_BLOCK = fcp.BLOCK_SIZE


class NbdApplyTarget:
    """Applies one target volume's entries to the NBD export at ``url``."""

    def __init__(self, reactor, url: str, connect=connect_url, timeout: float = 10.0):
        self.reactor = reactor
        self.url = url
        self._connect = connect
        self.timeout = timeout
        self.client = None
        self._one_at_a_time = DeferredLock()
        self.counters = {"writes": 0, "reads": 0, "bytes": 0, "errors": 0, "connects": 0}

    def execute(self, command: RioCommand, lun: int) -> Deferred:
        opcode = command.cdb[0] if command.cdb else -1
        if opcode not in (_WRITE16, _READ16):
            return succeed(check_condition(SenseKey.ILLEGAL_REQUEST, _INVALID_OPCODE))
        return self._one_at_a_time.run(self._run, command)

    def _run(self, command: RioCommand) -> Deferred:
        return self._client().addCallback(self._request, command).addErrback(self._failed)

    def _client(self) -> Deferred:
        # only ever called under the lock: no second connection attempt can race this one
        if self.client is not None:
            return succeed(self.client)
        self.counters["connects"] += 1

        def connected(client):
            self.client = client
            client.closed.addBoth(self._lost, client)
            return client
        return self._connect(self.reactor, self.url, self.timeout).addCallback(connected)

    def _lost(self, _, client) -> None:
        if self.client is client:
            self.client = None

    def _request(self, client, command: RioCommand) -> Deferred:
        offset = command.parsed["lba"] * _BLOCK
        if command.cdb[0] == _WRITE16:
            fua = bool(command.parsed.get("cdb_flags", 0) & 0x08)
            self.counters["writes"] += 1
            self.counters["bytes"] += len(command.data_out)
            return client.write(offset, command.data_out, fua).addCallback(
                lambda _: ScsiResult())
        length = command.parsed["transfer_length"] * _BLOCK
        self.counters["reads"] += 1
        return client.read(offset, length).addCallback(lambda data: ScsiResult(data_in=data))

    def _failed(self, failure):
        self.counters["errors"] += 1
        _log.warn("apply to {url} failed: {why}", url=self.url, why=failure.getErrorMessage())
        return failure

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None

