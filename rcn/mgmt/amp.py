"""The management channel (DESIGN.md 3.4): AMP commands, and the server's side of it.

Devices connect out to the management server (default port :data:`DEFAULT_PORT`)
and speak AMP (:mod:`twisted.protocols.amp`):

==============================  ===============  =====================================
command                         direction        answer
==============================  ===============  =====================================
``Register(device_id, role,     device -> server ``version``: the settings version the
log_address, version)``                          server holds for this device
``Snapshot(version, tables)``   server -> device ``version`` applied, or an error
``Report(figures)``             device -> server nothing (errors only), every second
``ResidualQuery(group)``        server -> edge   ``residual``: that group's residual
                                                 entries (【0087】)
==============================  ===============  =====================================

``version`` in Register is the settings version the device holds (0: none).
``tables``, ``figures`` and ``residual`` are JSON objects (strict RFC 8259: no
NaN or Infinity) carried as :class:`BigString`, which splits a value over
several AMP keys, since one AMP value holds at most 65535 bytes.

Bad input is answered, not fatal (DESIGN.md 5.6): every command declares the
errors below, JSON that does not parse is counted and answered with
:class:`BadJSON`, and arguments that do not parse (a missing key, a number that
is not one) are answered with :class:`BadArguments` instead of AMP's default,
which drops the connection. Boxes that are not AMP (an answer nobody asked for,
an empty box, a command name that is not ASCII) are counted and dropped, the
connection kept: :class:`MgmtAMP` has the table. The server's count is
``bad_messages`` (``rcn_mgmt_amp_bad_messages_total`` in ``/metrics``).

:class:`DistributionServer` is the server's registry of devices and what it
sends them; :class:`MgmtServerFactory` (``server.factory()``) makes one
:class:`ServerProtocol` per connection (``rcn.mgmt.service`` listens with it). The
device's side is :mod:`rcn.mgmt.client`.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from rcn.mgmt.model import ROLES

__all__ = ["DEFAULT_PORT", "MAX_DOCUMENT", "MAX_BOX", "BigString", "Register",
           "Snapshot", "Report", "ResidualQuery", "MgmtError", "BadArguments", "BadJSON",
           "BadRegistration", "UnknownDevice", "NotRegistered", "ApplyFailed",
           "ResidualFailed", "ServerFailed", "DeviceUnavailable", "encode_json",
           "decode_json", "MgmtAMP", "DeviceRecord", "DistributionServer", "ServerProtocol",
           "MgmtServerFactory"]

DEFAULT_PORT = 47100
#: the largest JSON document one command carries (a snapshot of a large network is a
#: few MB); beyond it the sender refuses and the receiver answers BadArguments
MAX_DOCUMENT = 64 << 20
#: the most bytes of keys and values one box may hold: a document in 65535-byte chunks
#: and the other arguments; a larger box closes the connection (MgmtAMP)
MAX_BOX = MAX_DOCUMENT + (1 << 20)
_CHUNK = amp.MAX_VALUE_LENGTH


# -- arguments -------------------------------------------------------------------------

class BigString(amp.Argument):
    """Bytes of any length up to ``limit``, split into 65535-byte chunks under the keys
    ``name``, ``name.1``, ``name.2``... (a value that fits one chunk looks exactly like
    ``amp.String``). Argument names must be plain Python identifiers."""

    def __init__(self, optional: bool = False, limit: int = MAX_DOCUMENT):
        super().__init__(optional)
        self.limit = limit

    def toBox(self, name, strings, objects, proto):
        value = objects.pop(name.decode("ascii"), None)
        if value is None:
            if self.optional:
                return
            raise ValueError(f"AMP argument {name.decode()!r} is missing")
        if not isinstance(value, bytes):
            raise TypeError(f"AMP argument {name.decode()!r} must be bytes, "
                            f"got {type(value).__name__}")
        if len(value) > self.limit:
            raise ValueError(f"AMP argument {name.decode()!r} is {len(value)} bytes, "
                             f"more than the limit of {self.limit}")
        strings[name] = value[:_CHUNK]
        for i, start in enumerate(range(_CHUNK, len(value), _CHUNK), 1):
            strings[b"%s.%d" % (name, i)] = value[start:start + _CHUNK]

    def fromBox(self, name, strings, objects, proto):
        key = name.decode("ascii")
        if name not in strings:
            if self.optional:
                objects[key] = None
                return
            raise KeyError(f"AMP argument {key!r} is missing")
        parts, size, i = [], 0, 0
        while True:
            part = strings.pop(name if i == 0 else b"%s.%d" % (name, i), None)
            if part is None:
                break
            size += len(part)
            if size > self.limit:
                raise ValueError(f"AMP argument {key!r} is more than the limit of "
                                 f"{self.limit} bytes")
            parts.append(part)
            i += 1
        objects[key] = b"".join(parts)


# -- errors ----------------------------------------------------------------------------

class MgmtError(Exception):
    """An error the management channel answers with; its message travels to the caller."""


class BadArguments(MgmtError, ValueError):
    """A command whose arguments did not parse (missing, not a number, too long)."""


class BadJSON(MgmtError, ValueError):
    """A JSON argument that does not parse or is not a JSON object."""


class BadRegistration(MgmtError, ValueError):
    """Register with a field that is wrong (named in the message)."""


class UnknownDevice(MgmtError, LookupError):
    """Register from a device the settings do not name."""

    def __str__(self):            # LookupError would quote the message
        return self.args[0] if self.args else ""


class NotRegistered(MgmtError):
    """A command that needs a registered connection came before Register."""


class ApplyFailed(MgmtError):
    """The device could not apply a snapshot."""


class ResidualFailed(MgmtError):
    """The edge could not answer a residual query."""


class ServerFailed(MgmtError):
    """The server failed on its side (a bug: the server logs the traceback)."""


class DeviceUnavailable(LookupError):
    """Local only: the device asked for is unknown or not connected."""

    def __str__(self):
        return self.args[0] if self.args else ""


_ERRORS = {BadArguments: b"BAD_ARGUMENTS", BadJSON: b"BAD_JSON", ServerFailed: b"SERVER_ERROR",
           NotRegistered: b"NOT_REGISTERED"}


# -- commands --------------------------------------------------------------------------

class Register(amp.Command):
    arguments = [(b"device_id", amp.Unicode()), (b"role", amp.Unicode()),
                 (b"log_address", amp.Unicode()), (b"version", amp.Integer())]
    response = [(b"version", amp.Integer())]
    errors = {**_ERRORS, BadRegistration: b"BAD_REGISTRATION", UnknownDevice: b"UNKNOWN_DEVICE"}


class Snapshot(amp.Command):
    arguments = [(b"version", amp.Integer()), (b"tables", BigString())]
    response = [(b"version", amp.Integer())]
    errors = {**_ERRORS, ApplyFailed: b"APPLY_FAILED"}


class Report(amp.Command):
    arguments = [(b"figures", BigString())]
    response = []
    errors = dict(_ERRORS)


class ResidualQuery(amp.Command):
    arguments = [(b"group", amp.Integer())]
    response = [(b"residual", BigString())]
    errors = {**_ERRORS, ResidualFailed: b"RESIDUAL_FAILED"}


# -- JSON ------------------------------------------------------------------------------

def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def encode_json(obj: dict) -> bytes:
    """Strict JSON (no NaN/Infinity), UTF-8."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def decode_json(data: bytes, what: str) -> dict:
    """A JSON object from ``data``, or :class:`BadJSON` naming ``what`` and the place."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise BadJSON(f"{what}: not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise BadJSON(f"{what}: not JSON: {e.msg} at line {e.lineno} column {e.colno} "
                      f"(char {e.pos})") from None
    except ValueError as e:
        raise BadJSON(f"{what}: {e}") from None
    if not isinstance(obj, dict):
        raise BadJSON(f"{what}: must be a JSON object, got {type(obj).__name__}")
    return obj


# -- the protocol base -----------------------------------------------------------------

def _show(value: bytes, limit: int = 40) -> str:
    """``value`` for a log line: printable, and cut at ``limit`` bytes."""
    text = repr(value[:limit])
    return text + f"... ({len(value)} bytes)" if len(value) > limit else text


class MgmtAMP(amp.AMP):
    """AMP that answers or drops every bad box instead of dropping the connection with
    a traceback, which is Twisted's default (``BoxDispatcher.ampBoxReceived`` raises
    ``KeyError``/``NoEmptyBoxes`` out of ``dataReceived``; ``SimpleStringLocator`` raises
    ``UnicodeDecodeError`` for a non-ASCII ``_command``; a failed command without
    ``_ask`` goes to ``unhandledError``, which closes the connection).

    AMP answers a box only when it carries ``_ask``, and never answers an answer; a box
    is self-delimiting, so after any bad box the stream is still in step. Hence, each
    bad box is counted and logged once by :meth:`bad_message` (its reason in the line)
    and the connection stays up:

    ==========================================  ==========================================
    box                                         outcome
    ==========================================  ==========================================
    ``_command`` + ``_ask``, arguments that     answered ``BAD_ARGUMENTS``
    do not parse
    ``_command`` unknown, not ASCII, or         answered ``UNHANDLED`` (Twisted's answer
    ``StartTLS`` (TLS is the endpoint's job)    to an unknown command) if it has ``_ask``
    ``_command`` without ``_ask`` that fails    dropped (nothing to answer)
    ``_answer``/``_error`` with a tag no        dropped (a late or forged answer)
    request of ours waits for
    ``_error`` without ``_error_code`` or       the waiting request fails with
    ``_error_description``                      ``UNKNOWN`` and what was there
    none of ``_command``/``_answer``/           dropped; answered ``BAD_BOX`` if it has
    ``_error`` (an empty box, say)              ``_ask``
    ==========================================  ==========================================

    A responder that fails with an error its command does not declare is a bug of
    ours: logged with its traceback and answered ``SERVER_ERROR`` (:class:`ServerFailed`),
    connection kept. Two things close the connection, each counted and logged: a box
    over :data:`MAX_BOX` bytes (it cannot be held to find its end) and a key over 255
    bytes (AMP's framing is broken).

    For fuzzers: ``dataReceived`` raises nothing for any bytes; the clean outcomes are an
    error answer, a counted drop (``bad_message``) and the clean close above; a
    ``Logger.failure`` is a finding.
    """

    _log = Logger()
    _box_bytes = 0

    # -- framing: bound the box ---------------------------------------------------------
    def proto_init(self, string):
        self._box_bytes = 0
        return super().proto_init(string)

    def proto_key(self, string):
        self._box_bytes += len(string)
        return super().proto_key(string)

    def proto_value(self, string):
        self._box_bytes += len(string)
        if self._box_bytes > MAX_BOX:
            self.bad_message(f"a box of more than {MAX_BOX} bytes (key "
                             f"{_show(self._currentKey)}); closing the connection")
            self._currentBox = None
            return "done"              # StatefulStringProtocol closes the connection
        return super().proto_value(string)

    def proto_done(self, string):
        return "done"                  # what was already read after the close

    def lengthLimitExceeded(self, length):
        self.bad_message(f"an AMP key of {length} bytes (at most 255); closing the "
                         f"connection")
        super().lengthLimitExceeded(length)

    # -- dispatch -----------------------------------------------------------------------
    def ampBoxReceived(self, box):
        if amp.ANSWER in box or amp.ERROR in box:
            self._answer_received(box)
        elif amp.COMMAND not in box:
            keys = ", ".join(_show(k, 20) for k in sorted(box)[:8]) or "no keys"
            self.bad_message(f"a box with no _command, _answer or _error ({keys}); dropped")
            if amp.ASK in box:
                self._send_error(box[amp.ASK], b"BAD_BOX",
                                 "a box with _ask needs a _command")
        elif amp.ASK not in box:
            # Nothing to answer: a failure is dropped here, not in unhandledError.
            self.dispatchCommand(box).addErrback(self._unanswered, box[amp.COMMAND])
        else:
            super().ampBoxReceived(box)

    def _answer_received(self, box):
        key = amp.ANSWER if amp.ANSWER in box else amp.ERROR
        tag = box[key]
        if tag not in (self._outstandingRequests or {}):
            self.bad_message(f"{key.decode()} {_show(tag)}: no request of ours has this "
                             f"tag (late or forged); dropped")
            return
        if key == amp.ERROR and not (amp.ERROR_CODE in box and amp.ERROR_DESCRIPTION in box):
            self.bad_message(f"_error {_show(tag)} without _error_code or "
                             f"_error_description; the request fails with UNKNOWN")
            box = amp.AmpBox(box)
            box[amp.ERROR_CODE] = amp.UNKNOWN_ERROR_CODE
            box[amp.ERROR_DESCRIPTION] = (b"malformed error answer: "
                                          + box.get(amp.ERROR_DESCRIPTION, b"")[:1000])
        super().ampBoxReceived(box)

    def _unanswered(self, failure, name: bytes) -> None:
        if failure.check(amp.RemoteAmpError):
            # Counted where it was found (bad arguments, unknown command) or answered
            # by the responder's own refusal; there is no _ask to carry it back.
            self._log.info("management channel from {peer}: {command} without _ask "
                           "failed: {error}", peer=self.peer(), command=_show(name),
                           error=failure.getErrorMessage())
        else:
            self._log.failure("command {command} from {peer}", failure,
                              command=_show(name), peer=self.peer())

    def _send_error(self, tag: bytes, code: bytes, description: str) -> None:
        answer = amp.AmpBox({amp.ERROR: tag, amp.ERROR_CODE: code,
                             amp.ERROR_DESCRIPTION: description.encode()})
        try:
            self.sendBox(answer)
        except (amp.ProtocolSwitched, ConnectionLost):
            pass

    def locateResponder(self, name):
        # Declared commands only: no StartTLS (TLS is the endpoint's), no amp_* methods.
        responder = (None if name == amp.StartTLS.commandName
                     else amp.CommandLocator.locateResponder(self, name))
        if responder is None:
            self.bad_message(f"unknown command {_show(name)}")
            return None                # AMP answers an _ask with UNHANDLED
        command = name.decode("ascii")

        def guarded(box):
            # The responder itself runs inside maybeDeferred: whatever raises here is
            # the parsing of the box's arguments.
            try:
                d = responder(box)
            except Exception as e:
                what = f"{command}: bad arguments: {e}"
                self.bad_message(what)
                return fail(amp.RemoteAmpError(b"BAD_ARGUMENTS", what, False))
            return d.addErrback(self._undeclared, command)
        return guarded

    def _undeclared(self, failure, command: str):
        if failure.check(amp.RemoteAmpError):
            return failure             # a declared error, already in AMP's form
        self._log.failure("{command} from {peer} failed", failure, command=command,
                          peer=self.peer())
        raise amp.RemoteAmpError(b"SERVER_ERROR", f"{command}: an internal error at the "
                                 f"receiver; see its log", False)

    def bad_message(self, what: str) -> None:
        self._log.warn("management channel from {peer}: {what}", peer=self.peer(), what=what)

    def peer(self) -> str:
        if self.transport is None:
            return "?"
        addr = self.transport.getPeer()
        host, port = getattr(addr, "host", None), getattr(addr, "port", None)
        return f"{host}:{port}" if host is not None else str(addr)


def _valid_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    # isascii: "²".isdigit() is true and int() refuses it; 5 digits bound int()'s work
    return bool(sep and host and port.isascii() and port.isdigit() and len(port) <= 5
                and 0 < int(port) < 65536)


# -- the server ------------------------------------------------------------------------

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
    """

    _log = Logger()

    def __init__(self, clock, snapshot_for: Callable[[str], tuple[int, dict]],
                 on_report: Callable[[str, dict], None], *, stale_after: float = 5.0,
                 history: int = 300, snapshot_timeout: float = 60.0,
                 query_timeout: float = 10.0):
        if history < 1:
            raise ValueError(f"history must be at least 1 report, got {history}")
        self.clock = clock
        self.snapshot_for = snapshot_for
        self.on_report = on_report
        self.stale_after = stale_after
        self.history = history
        self.snapshot_timeout = snapshot_timeout
        self.query_timeout = query_timeout
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
        return snapshot[0]

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

