"""The server's side of the management channel (DESIGN.md 3.4): devices registered, snapshots
sent and acknowledged, reports collected, residual entries asked for.

:class:`DistributionServer` is the server's registry of devices and what it sends
them; :class:`MgmtServerFactory` (``server.factory()``) makes one
:class:`ServerProtocol` per connection (``rcn.mgmt.service`` listens with it). The
commands and the protocol base are the channel's (:mod:`rcn.mgmtlink`); the
device's side is :mod:`rcn.mgmtlink.client`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from rcn.mgmtlink.commands import (ROLES, BadJSON, BadRegistration, MgmtError, NotRegistered,
                                   Register, Report, ResidualQuery, ServerFailed, Snapshot,
                                   UnknownDevice, decode_json, encode_json)
from rcn.mgmtlink.protocol import MgmtAMP

__all__ = ["DeviceUnavailable", "DeviceRecord", "DistributionServer", "ServerProtocol",
           "MgmtServerFactory", "MAX_CONNECTIONS"]


class DeviceUnavailable(LookupError):
    """Local only: the device asked for is unknown or not connected."""

    def __str__(self):
        return self.args[0] if self.args else ""


def _valid_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    # isascii: "²".isdigit() is true and int() refuses it; 5 digits bound int()'s work
    return bool(sep and host and port.isascii() and port.isdigit() and len(port) <= 5
                and 0 < int(port) < 65536)


@dataclass(eq=False)
class DeviceRecord:
    """What the server knows of one device."""
    id: str
    role: str
    log_address: str
    peer: str = ""
    connected: bool = False
    acked: int = 0                     # the version the device holds (said or acknowledged)
    current: int = 0                   # the version the server last had for it
    registered_at: float = 0.0
    disconnected_at: float | None = None
    last_report: float | None = None
    reports: int = 0
    bad_reports: int = 0
    last_error: str | None = None
    series: deque = field(default_factory=deque, repr=False)   # (time, figures), bounded
    proto: "ServerProtocol | None" = field(default=None, repr=False)
    in_flight: int | None = None       # the snapshot version sent, not yet answered
    again: bool = False                # a publish came while one was in flight


class DistributionServer:
    """The server's side of the management channel: a registry of devices, snapshot
    distribution and report collection. No sockets, no global reactor.

    * ``snapshot_for(device_id) -> (version, tables)``: the device's current snapshot;
      a ``LookupError`` means the settings do not name the device (its Register is
      refused with :class:`UnknownDevice`).
    * ``on_report(device_id, figures)``: called with every report that parses.
    * ``stale_after``: seconds without a report after which a connected device shows
      as stale; ``history``: reports kept per device; ``snapshot_timeout``: seconds a
      device has to answer a snapshot before the server drops its connection (it
      reconnects and is brought up to date); ``query_timeout``: for residual queries.
    * ``on_acked(device_id, version)``: a device acknowledged its current snapshot, or
      registered holding it (the keys' rotation waits for these).
    """

    _log = Logger()

    def __init__(self, clock, snapshot_for: Callable[[str], tuple[int, dict]],
                 on_report: Callable[[str, dict], None], *, stale_after: float = 5.0,
                 history: int = 300, snapshot_timeout: float = 60.0,
                 query_timeout: float = 10.0,
                 on_acked: Callable[[str, int], None] | None = None):
        if history < 1:
            raise ValueError(f"history must be at least 1 report, got {history}")
        self.clock = clock
        self.snapshot_for = snapshot_for
        self.on_report = on_report
        self.stale_after = stale_after
        self.history = history
        self.snapshot_timeout = snapshot_timeout
        self.query_timeout = query_timeout
        self.on_acked = on_acked
        self.records: dict[str, DeviceRecord] = {}
        self.version = 0               # the highest settings version snapshot_for gave
        self.counters = dict.fromkeys(
            ("registrations", "refused_registrations", "snapshots_sent", "snapshots_acked",
             "snapshot_errors", "reports", "bad_json", "bad_messages", "residual_queries",
             "refused_connections"), 0)

    def factory(self) -> "MgmtServerFactory":
        return MgmtServerFactory(self)

    # -- what the operator sees --------------------------------------------------------
    def devices(self) -> list[dict]:
        """Every device that has registered, by ID."""
        return [self.device(i) for i in sorted(self.records)]

    def device(self, device_id: str) -> dict:
        r = self._record(device_id)
        now = self.clock.seconds()
        heard = r.last_report if r.last_report is not None else r.registered_at
        stale = r.connected and now - heard > self.stale_after
        return {"id": r.id, "role": r.role, "log_address": r.log_address, "peer": r.peer,
                "connected": r.connected,
                "status": "disconnected" if not r.connected else "stale" if stale else "up",
                "stale": stale, "version": r.acked, "current_version": r.current,
                "up_to_date": r.acked == r.current, "old_version": r.acked < r.current,
                "sending_version": r.in_flight, "registered_at": r.registered_at,
                "disconnected_at": r.disconnected_at, "last_report": r.last_report,
                "reports": r.reports, "bad_reports": r.bad_reports, "last_error": r.last_error}

    def series(self, device_id: str) -> list[tuple[float, dict]]:
        """The last ``history`` reports of the device: (server time, figures), oldest first."""
        return list(self._record(device_id).series)

    def latest(self, device_id: str) -> dict | None:
        s = self._record(device_id).series
        return s[-1][1] if s else None

    def _record(self, device_id: str) -> DeviceRecord:
        try:
            return self.records[device_id]
        except KeyError:
            raise DeviceUnavailable(f"no device {device_id!r} has registered with the "
                                    f"management server") from None

    # -- distribution ------------------------------------------------------------------
    def publish(self) -> int:
        """After a settings change: send each connected device whose version differs from
        its current snapshot that snapshot. Returns how many were sent (or queued behind
        one in flight)."""
        sent = 0
        for record in list(self.records.values()):
            if record.connected and self._send(record):
                sent += 1
        return sent

    def forget(self, device_id: str) -> None:
        """The device left the settings: drop its record and its connection."""
        record = self.records.pop(device_id, None)
        if record is not None and record.proto is not None:
            record.proto.device_id = None
            record.proto.transport.loseConnection()

    def _snapshot(self, record: DeviceRecord) -> tuple[int, dict] | None:
        try:
            version, tables = self.snapshot_for(record.id)
        except Exception as e:
            self._log.failure("snapshot for device {device} failed", device=record.id)
            record.last_error = f"building the snapshot failed: {type(e).__name__}: {e}"
            return None
        record.current = version
        self.version = max(self.version, version)
        return version, tables

    def _send(self, record: DeviceRecord, snapshot: tuple[int, dict] | None = None) -> bool:
        if not record.connected:
            return False
        if record.in_flight is not None:
            record.again = True        # one in flight at a time; the newest goes next
            return True
        snapshot = snapshot or self._snapshot(record)
        if snapshot is None:
            return False
        version, tables = snapshot
        if record.acked == version:
            return False
        try:
            payload = encode_json(tables)
        except (TypeError, ValueError) as e:
            record.last_error = f"snapshot version {version} is not JSON: {e}"
            self._log.error("device {device}: {error}", device=record.id, error=record.last_error)
            return False
        proto = record.proto
        record.in_flight = version
        self.counters["snapshots_sent"] += 1
        d = maybeDeferred(proto.callRemote, Snapshot, version=version, tables=payload)
        d.addTimeout(self.snapshot_timeout, self.clock)
        d.addCallbacks(self._acked, self._not_acked, callbackArgs=(record, proto, version),
                       errbackArgs=(record, proto, version))
        d.addErrback(lambda f: self._log.failure("snapshot answer from {device}", f,
                                                 device=record.id))
        return True

    def _acked(self, answer: dict, record: DeviceRecord, proto, version: int) -> None:
        if record.proto is not proto:
            return                     # an old connection's answer
        record.in_flight = None
        applied = answer["version"]
        record.acked = applied
        if applied == version:
            record.last_error = None
            self.counters["snapshots_acked"] += 1
            self._tell_acked(record.id, version)
        else:
            record.last_error = (f"snapshot version {version} was acknowledged as "
                                 f"version {applied}")
            self.counters["snapshot_errors"] += 1
        self._next(record)

    def _not_acked(self, failure, record: DeviceRecord, proto, version: int) -> None:
        if record.proto is not proto or failure.check(ConnectionDone, ConnectionLost):
            return                     # the connection went: lost() has seen to the record
        record.in_flight = None
        self.counters["snapshot_errors"] += 1
        if failure.check(TimeoutError, CancelledError):
            record.last_error = (f"no answer to snapshot version {version} within "
                                 f"{self.snapshot_timeout:g} s; connection dropped")
            self._log.warn("device {device}: {error}", device=record.id, error=record.last_error)
            proto.transport.loseConnection()
            return
        if failure.check(MgmtError):
            record.last_error = f"snapshot version {version}: {failure.value}"
        else:
            record.last_error = (f"snapshot version {version}: "
                                 f"{failure.type.__name__}: {failure.value}")
        self._log.warn("device {device}: {error}", device=record.id, error=record.last_error)
        self._next(record)

    def _next(self, record: DeviceRecord) -> None:
        if record.again:
            record.again = False
            self._send(record)

    # -- residual entries (【0087】) ------------------------------------------------------
    def query_residual(self, device_id: str, group: int) -> Deferred:
        """``Deferred[dict]``: the edge's residual entries of order guarantee group
        ``group``; fails with DeviceUnavailable, ValueError, ResidualFailed, BadJSON or
        TimeoutError."""
        if not isinstance(group, int) or not 0 <= group < 1 << 32:
            return fail(ValueError(f"residual query: group must be an order guarantee ID "
                                   f"0..2^32-1, got {group!r}"))
        record = self.records.get(device_id)
        if record is None or not record.connected:
            why = "has not registered" if record is None else "is not connected"
            return fail(DeviceUnavailable(f"residual query: device {device_id!r} {why}"))
        if record.role != "edge":
            return fail(ValueError(f"residual query: device {device_id!r} is a {record.role}; "
                                   f"only edges hold residual log entries"))
        self.counters["residual_queries"] += 1
        d = maybeDeferred(record.proto.callRemote, ResidualQuery, group=group)
        d.addTimeout(self.query_timeout, self.clock)

        def decoded(answer):
            try:
                return decode_json(answer["residual"],
                                   f"residual entries of group {group} from {device_id}")
            except BadJSON:
                self.counters["bad_json"] += 1
                raise
        # AMP logs and drops the connection if an answer's failure is unhandled when it
        # arrives: the caller gets its own Deferred, AMP's always ends handled.
        result = Deferred()
        d.addCallback(decoded).chainDeferred(result)
        return result

    # -- from the protocol -------------------------------------------------------------
    def registered(self, proto: "ServerProtocol", device_id: str, role: str,
                   log_address: str, version: int) -> int:
        if proto.device_id is not None and proto.device_id != device_id:
            raise BadRegistration(f"device_id: this connection registered as "
                                  f"{proto.device_id!r}, not {device_id!r}")
        if not device_id or len(device_id) > 200:
            raise BadRegistration(f"device_id: must be 1..200 characters, got {device_id!r}")
        if role not in ROLES:
            raise BadRegistration(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
        if not _valid_address(log_address):
            raise BadRegistration(f"log_address: must be host:port, got {log_address!r}")
        if not 0 <= version < 1 << 63:
            raise BadRegistration(f"version: must be 0 (none) to 2^63-1, got "
                                  f"{str(version)[:30]}")
        try:
            snapshot = self.snapshot_for(device_id)
        except LookupError:
            raise UnknownDevice(f"device_id: {device_id!r} is not in the management "
                                f"server's settings; add the device first") from None
        except Exception:
            self._log.failure("snapshot for device {device} failed", device=device_id)
            raise ServerFailed(f"the server could not build the snapshot of {device_id!r}; "
                               f"see its log") from None
        record = self.records.get(device_id)
        if record is None:
            record = self.records[device_id] = DeviceRecord(
                device_id, role, log_address, series=deque(maxlen=self.history))
        elif record.proto is not None and record.proto is not proto:
            # The device reconnected before its old connection was seen to drop.
            self._log.info("device {device} registered again from {peer}; dropping its "
                           "connection from {old}", device=device_id, peer=proto.peer(),
                           old=record.peer)
            record.proto.device_id = None
            record.proto.transport.loseConnection()
        record.role, record.log_address, record.peer = role, log_address, proto.peer()
        record.proto, record.connected, record.disconnected_at = proto, True, None
        record.acked, record.registered_at = version, self.clock.seconds()
        record.in_flight, record.again = None, False
        record.current = snapshot[0]
        self.version = max(self.version, snapshot[0])
        proto.device_id = device_id
        self.counters["registrations"] += 1
        self._log.info("device {device} ({role}) registered from {peer} holding version "
                       "{version} (current {current})", device=device_id, role=role,
                       peer=record.peer, version=version, current=snapshot[0])
        if version != snapshot[0]:
            # After the Register answer has gone out.
            self.clock.callLater(0, self._send_if_still, record, proto, snapshot)
        else:
            self.clock.callLater(0, self._tell_acked, device_id, version)
        return snapshot[0]

    def _tell_acked(self, device_id: str, version: int) -> None:
        if self.on_acked is not None:
            try:
                self.on_acked(device_id, version)
            except Exception:
                self._log.failure("after device {device} acknowledged version {version}",
                                  device=device_id, version=version)

    def _send_if_still(self, record: DeviceRecord, proto, snapshot) -> None:
        if record.proto is proto:
            self._send(record, snapshot)

    def reported(self, proto: "ServerProtocol", data: bytes) -> None:
        record = self.records.get(proto.device_id) if proto.device_id else None
        if record is None:
            raise NotRegistered("Report before Register: register the device first")
        try:
            figures = decode_json(data, f"report from {record.id}")
        except BadJSON as e:
            record.bad_reports += 1
            self.counters["bad_json"] += 1
            self._log.warn("{error}", error=str(e))
            raise
        now = self.clock.seconds()
        record.series.append((now, figures))
        record.last_report = now
        record.reports += 1
        self.counters["reports"] += 1
        try:
            self.on_report(record.id, figures)
        except Exception:
            # The server's own failure: the device's report was fine.
            self._log.failure("on_report for device {device} failed", device=record.id)

    def bad_message(self, proto: "ServerProtocol") -> None:
        self.counters["bad_messages"] += 1
        record = self.records.get(proto.device_id) if proto.device_id else None
        if record is not None:
            record.bad_reports += 1

    def lost(self, proto: "ServerProtocol", reason) -> None:
        record = self.records.get(proto.device_id) if proto.device_id else None
        if record is None or record.proto is not proto:
            return
        record.connected, record.proto = False, None
        record.in_flight, record.again = None, False
        record.disconnected_at = self.clock.seconds()
        self._log.info("device {device} disconnected: {reason}", device=record.id,
                       reason=reason.getErrorMessage())


class ServerProtocol(MgmtAMP):
    """One device's connection: AMP in, :class:`DistributionServer` calls out."""

    def __init__(self, server: DistributionServer):
        super().__init__()
        self.server = server
        self.device_id: str | None = None

    @Register.responder
    def register(self, device_id, role, log_address, version):
        try:
            return {"version": self.server.registered(self, device_id, role, log_address,
                                                      version)}
        except MgmtError as e:
            self.server.counters["refused_registrations"] += 1
            self._log.warn("registration from {peer} refused: {error}",
                           peer=self.peer(), error=str(e))
            raise

    @Report.responder
    def report(self, figures):
        self.server.reported(self, figures)
        return {}

    def bad_message(self, what: str) -> None:
        super().bad_message(what)
        self.server.bad_message(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.server.lost(self, reason)
        self.factory.active -= 1


MAX_CONNECTIONS = 1024      # AMP connections at once (each may hold a box of up to MAX_BOX)


class MgmtServerFactory(Factory):
    """At most ``max_connections`` at once: one more is closed at once, counted
    (``refused_connections``) and logged."""

    def __init__(self, server: DistributionServer, max_connections: int = MAX_CONNECTIONS):
        self.server = server
        self.max_connections = max_connections
        self.active = 0

    def buildProtocol(self, addr):
        if self.active >= self.max_connections:
            self.server.counters["refused_connections"] += 1
            self.server._log.warn("AMP connection from {peer} refused: {n} connections "
                                  "already", peer=addr, n=self.active)
            return None
        self.active += 1
        proto = ServerProtocol(self.server)
        proto.factory = self
        return proto
