"""The management channel's commands (DESIGN.md 3.4): AMP over TCP, devices <-> rcn-mgmt.

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

``version`` in Register is the settings version the device holds (0: none); ``role``
is one of :data:`ROLES`. ``tables``, ``figures`` and ``residual`` are JSON objects
(strict RFC 8259: no NaN or Infinity) carried as :class:`BigString`, which splits a
value over several AMP keys, since one AMP value holds at most 65535 bytes.

Every command declares the errors below; bad input is answered with them, not
fatal (DESIGN.md 5.6): :class:`rcn.mgmtlink.protocol.MgmtAMP` is the protocol base
both ends use. The device's side is :mod:`rcn.mgmtlink.client`, the server's
:mod:`rcn.mgmt.distribution`.
"""

from __future__ import annotations

import json

from twisted.protocols import amp

__all__ = ["DEFAULT_PORT", "ROLES", "MAX_DOCUMENT", "BigString", "Register", "Snapshot",
           "Report", "ResidualQuery", "MgmtError", "BadArguments", "BadJSON",
           "BadRegistration", "UnknownDevice", "NotRegistered", "ApplyFailed",
           "ResidualFailed", "ServerFailed", "encode_json", "decode_json"]

DEFAULT_PORT = 47100
ROLES = ("edge", "core")       # what a device registers as
#: the largest JSON document one command carries (a snapshot of a large network is a
#: few MB); beyond it the sender refuses and the receiver answers BadArguments
MAX_DOCUMENT = 64 << 20
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
    except RecursionError:
        raise BadJSON(f"{what}: nested too deep") from None
    if not isinstance(obj, dict):
        raise BadJSON(f"{what}: must be a JSON object, got {type(obj).__name__}")
    return obj
