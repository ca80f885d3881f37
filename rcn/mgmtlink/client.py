"""The device's side of the management channel (DESIGN.md 3.4; commands in
:mod:`rcn.mgmtlink.commands`).

:class:`MgmtClient` is the protocol factory an edge or core connects to the
management server with; :func:`client_service` wraps it in a ``ClientService``
that reconnects with backoff. On every connection the client registers with the
settings version it holds, so a server that has moved on sends the snapshot at
once; it applies each snapshot through ``apply(version, tables)`` and
acknowledges it (or answers the error ``apply`` raised), sends ``figures()``
every ``report_interval`` seconds while registered (one report in flight at a
time: a slow server skips ticks rather than queueing them), and answers residual
queries with ``residual(group)``.

``apply`` may return a Deferred (the snapshot is acknowledged when it fires).
A ``LookupError`` from ``residual`` means the edge has no such group.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rcn.mgmtlink.commands import (ROLES, ApplyFailed, BadJSON, Register, Report,
                                   ResidualFailed, ResidualQuery, Snapshot, decode_json,
                                   encode_json)
from rcn.mgmtlink.protocol import MgmtAMP

__all__ = ["MgmtClient", "DeviceProtocol", "client_service"]

_FACTOR = 1.5                  # reconnection backoff growth per attempt


class MgmtClient(Factory):
    """A device's management client. ``version``: the settings version the device holds
    when it starts (0: none); it follows the snapshots applied."""

    _log = Logger()

    def __init__(self, clock, device_id: str, role: str, log_address: str,
                 apply: Callable[[int, dict], None], figures: Callable[[], dict],
                 residual: Callable[[int], dict], *, version: int = 0,
                 report_interval: float = 1.0):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if report_interval <= 0:
            raise ValueError(f"report_interval must be positive, got {report_interval}")
        self.clock = clock
        self.device_id = device_id
        self.role = role
        self.log_address = log_address
        self.apply = apply
        self.figures = figures
        self.residual = residual
        self.version = version
        self.report_interval = report_interval
        self.protocol: DeviceProtocol | None = None
        self.registered = False
        self.server_version: int | None = None
        self.last_error: str | None = None
        self.counters = dict.fromkeys(
            ("connections", "registrations", "snapshots_applied", "apply_errors",
             "reports_sent", "report_errors", "reports_skipped", "residual_queries",
             "bad_messages"), 0)
        self._reporting: LoopingCall | None = None
        self._report_pending = False

    def buildProtocol(self, addr):
        proto = DeviceProtocol(self)
        proto.factory = self
        return proto

    # -- connection ----------------------------------------------------------------------
    def connected(self, proto: "DeviceProtocol") -> None:
        if self.protocol is not None and self.protocol is not proto:
            self.protocol.transport.loseConnection()     # one connection at a time
        self.protocol = proto
        self.registered = False
        self.counters["connections"] += 1
        d = maybeDeferred(proto.callRemote, Register, device_id=self.device_id, role=self.role,
                          log_address=self.log_address, version=self.version)
        d.addCallbacks(self._registered, self._refused, callbackArgs=(proto,),
                       errbackArgs=(proto,))

    def _registered(self, answer: dict, proto) -> None:
        if proto is not self.protocol:
            return
        self.registered = True
        self.server_version = answer["version"]
        self.counters["registrations"] += 1
        self._log.info("{device} registered with the management server at {peer}: holding "
                       "version {held}, server has {current}", device=self.device_id,
                       peer=proto.peer(), held=self.version, current=self.server_version)
        self._report_pending = False
        self._reporting = LoopingCall(self.report)
        self._reporting.clock = self.clock
        self._reporting.start(self.report_interval, now=True)

    def _refused(self, failure, proto) -> None:
        if proto is not self.protocol:
            return
        self.last_error = f"registration refused: {failure.getErrorMessage()}"
        self._log.error("{device}: {error}; dropping the connection (it will be retried)",
                        device=self.device_id, error=self.last_error)
        proto.transport.loseConnection()

    def lost(self, proto: "DeviceProtocol", reason) -> None:
        if proto is not self.protocol:
            return
        self.protocol = None
        self.registered = False
        if self._reporting is not None and self._reporting.running:
            self._reporting.stop()
        self._reporting = None
        self._log.info("{device}: management connection lost: {reason}",
                       device=self.device_id, reason=reason.getErrorMessage())

    # -- reports -------------------------------------------------------------------------
    def report(self) -> None:
        """Send ``figures()`` now, unless the previous report is still unanswered."""
        proto = self.protocol
        if proto is None or not self.registered:
            return
        if self._report_pending:
            self.counters["reports_skipped"] += 1
            return
        try:
            payload = encode_json(self.figures())
        except Exception:
            self.counters["report_errors"] += 1
            self._log.failure("{device}: figures for the management server", device=self.device_id)
            return
        self._report_pending = True
        d = maybeDeferred(proto.callRemote, Report, figures=payload)
        d.addCallbacks(self._reported, self._report_failed, callbackArgs=(proto,),
                       errbackArgs=(proto,))

    def _reported(self, answer, proto) -> None:
        if proto is self.protocol:
            self._report_pending = False
            self.counters["reports_sent"] += 1

    def _report_failed(self, failure, proto) -> None:
        if proto is not self.protocol:
            return
        self._report_pending = False
        self.counters["report_errors"] += 1
        self.last_error = f"report refused: {failure.getErrorMessage()}"
        self._log.warn("{device}: {error}", device=self.device_id, error=self.last_error)

    # -- from the server -----------------------------------------------------------------
    def snapshot(self, version: int, tables: bytes):
        try:
            doc = decode_json(tables, f"snapshot version {version} for {self.device_id}")
        except BadJSON as e:
            self.counters["bad_messages"] += 1
            self.last_error = str(e)
            raise

        def applied(_):
            self.version = version
            self.last_error = None
            self.counters["snapshots_applied"] += 1
            self._log.info("{device} applied settings version {version}",
                           device=self.device_id, version=version)
            return {"version": version}

        def failed(failure):
            self.counters["apply_errors"] += 1
            self.last_error = (f"device {self.device_id} could not apply snapshot version "
                               f"{version}: {failure.type.__name__}: {failure.getErrorMessage()}")
            self._log.failure("{error}", failure, error=self.last_error)
            raise ApplyFailed(self.last_error)

        return maybeDeferred(self.apply, version, doc).addCallbacks(applied, failed)

    def residual_query(self, group: int) -> dict:
        self.counters["residual_queries"] += 1
        try:
            return {"residual": encode_json(self.residual(group))}
        except LookupError:
            raise ResidualFailed(f"edge {self.device_id} has no order guarantee group "
                                 f"{group}") from None
        except Exception as e:
            self._log.failure("{device}: residual entries of group {group}",
                              device=self.device_id, group=group)
            raise ResidualFailed(f"edge {self.device_id} could not give the residual "
                                 f"entries of group {group}: {type(e).__name__}: {e}") from None


class DeviceProtocol(MgmtAMP):
    """The device's end of one management connection: AMP in, :class:`MgmtClient` calls out."""

    def __init__(self, client: MgmtClient):
        super().__init__()
        self.client = client

    def connectionMade(self):
        super().connectionMade()
        self.client.connected(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.client.lost(self, reason)

    @Snapshot.responder
    def snapshot(self, version, tables):
        return self.client.snapshot(version, tables)

    @ResidualQuery.responder
    def residual_query(self, group):
        return self.client.residual_query(group)

    def bad_message(self, what: str) -> None:
        super().bad_message(what)
        self.client.counters["bad_messages"] += 1


def client_service(client: MgmtClient, reactor, endpoint, *, initial_delay: float = 1.0,
                   max_delay: float = 30.0, jitter: Callable[[], float] | None = None
                   ) -> ClientService:
    """A ``ClientService`` keeping ``client`` connected to the management server at
    ``endpoint`` (an endpoint string such as ``tcp:mgmt.example:47100``, or an
    ``IStreamClientEndpoint``), retrying with exponential backoff from ``initial_delay``
    to ``max_delay`` seconds, growing 1.5 times per attempt (plus ``jitter()``, random in
    [0, 1) by default). A dropped connection is retried the same way."""
    if isinstance(endpoint, str):
        endpoint = clientFromString(reactor, endpoint)
    kw = {} if jitter is None else {"jitter": jitter}
    # ClientService numbers the first retry 1, so backoffPolicy would wait
    # initialDelay * factor: divide it out to wait initial_delay.
    policy = backoffPolicy(initialDelay=initial_delay / _FACTOR, maxDelay=max_delay,
                           factor=_FACTOR, **kw)
    return ClientService(endpoint, client, retryPolicy=policy, clock=reactor)
