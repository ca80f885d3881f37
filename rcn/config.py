"""What every daemon's TOML configuration reader shares.

A daemon's ``config`` module describes its keys; the pieces here read them:
:class:`Reader` gives typed access to one table with the key's path in every
error (``batch.max_bytes: ...``), :func:`load_toml` reads the file and puts the
file name in front of any :class:`ConfigError`, and the checks (``port``,
``non_negative``, ``one_of``, ``parse_size``) raise ``ValueError`` that the
reader turns into a ``ConfigError`` naming the key.

Every value of the file is read through a :class:`Reader` -- ``get`` for a value,
``section`` for a sub-table, ``tables`` for an array of tables (``[[volume]]``),
``items`` for a list of values -- never by indexing the parsed document, so a
value of the wrong type (a table where a list belongs, a list of the wrong
items, a float or a bool for an integer, a string for a table) is a
``ConfigError`` naming the key, like any other: ``file: volume[0]: expected a
table ([[volume]]), got float 1.0``. Integers must fit TOML's 64 bits and floats
must be finite. For fuzzers: a parse raises :class:`ConfigError` or returns;
anything else is a finding.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Callable, TypeVar

from datapath.frames.names import parse_wwn
from rcn.logxfer.routes import Address, Route, RouteError, RouteTable

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]{1,19})\s*([A-Za-z]*)\s*$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and key."""


#: TOML's integers (and a file offset): signed 64 bits
INT64 = (-(1 << 63), (1 << 63) - 1)


def parse_size(text) -> int:
    """``4096``, ``"64KiB"``, ``"1 GiB"`` -> bytes, 0..2^63-1."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        # [0-9], not \d: int() takes other scripts' digits; 19 digits bound its work
        match = _SIZE.match(str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"{text!r} is not a size (bytes, or a number with "
                             f"KiB/MiB/GiB/TiB)")
        size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if not 0 <= size <= INT64[1]:
        raise ValueError(f"{text!r} is not a size from 0 to 2^63-1 bytes")
    return size


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Reader:
    """Typed access to one table of the file, with key paths in errors (see the module
    docstring). ``where`` is the table's path with its dot (``"pair[1]."``)."""

    def __init__(self, table: dict, where: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{where.rstrip('.') or 'the file'}: expected dict, got "
                              f"{type(table).__name__} {_shown(table)}")
        self.table, self.where = table, where

    def _fail(self, key, reason):
        raise ConfigError(f"{self.where}{key}: {reason}")

    def get(self, key, kind, default=..., check=None):
        """The value of ``key``: of type ``kind`` (a type or a tuple of types; ``float``
        takes integers too; ``bool`` is no integer), then ``check(value)``, whose
        ``ValueError`` or ``TypeError`` names the key; ``default`` when it is missing
        (none: the key is required)."""
        if key not in self.table:
            if default is ...:
                self._fail(key, "missing")
            return default
        return self._value(self.table[key], kind, check, key)

    def _value(self, value, kind, check, key):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool) \
                and int not in kinds:
            value = float(value)
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            wanted = " or ".join(k.__name__ for k in kinds)
            self._fail(key, f"expected {wanted}, got {type(value).__name__} {_shown(value)}")
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT64[0] <= value <= INT64[1]:
            self._fail(key, f"{_shown(value)} does not fit 64 bits (TOML's integers)")
        if isinstance(value, float) and not math.isfinite(value):
            self._fail(key, f"{value} is not a finite number")
        if check is not None:
            try:
                value = check(value)
            except (ValueError, TypeError) as exc:
                self._fail(key, str(exc))
        return value

    def section(self, key, default=...) -> "Reader":
        """The sub-table ``key`` (``[key]``) as a Reader; ``default`` (a dict) when it is
        missing (none: the table is required)."""
        return Reader(self.get(key, dict, default), f"{self.where}{key}.")

    def tables(self, key, default=()) -> list["Reader"]:
        """The array of tables ``key`` (``[[key]]``), a Reader each; empty when missing
        (``default=...``: required)."""
        found = self.get(key, list, default)
        for i, item in enumerate(found):
            if not isinstance(item, dict):
                self._fail(f"{key}[{i}]", f"expected a table ([[{key}]]), got "
                                          f"{type(item).__name__} {_shown(item)}")
        return [Reader(item, f"{self.where}{key}[{i}].") for i, item in enumerate(found)]

    def items(self, key, kind, default=..., check=None) -> list:
        """The list ``key`` of values of type ``kind``, each passed through ``check``;
        errors name the item (``route[0].path[2]: ...``)."""
        found = self.get(key, list, default)
        if found is default:
            return found
        return [self._value(item, kind, check, f"{key}[{i}]") for i, item in enumerate(found)]

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.table) - known)
        if extra:
            self._fail(extra[0], f"unknown key (known: {', '.join(sorted(known))})")


def port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} outside 0..65535")
    return value


def non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def one_of(choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value
    return check


def in_range(low, high, unit: str = ""):
    """A check that ``low <= value <= high`` (the message shows the unit)."""
    def check(value):
        if not low <= value <= high:
            raise ValueError(f"{value}{unit} is outside {low}..{high}{unit}")
        return value
    return check


def load_toml(path: str, parse: Callable[..., T], **kw) -> T:
    """Read ``path`` and return ``parse(doc, base_dir=<its directory>, **kw)``; any
    ``ConfigError`` (and unreadable or invalid TOML) names the file."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:      # tomllib decodes the bytes itself
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}") from None
    try:
        return parse(doc, base_dir=os.path.dirname(os.path.abspath(path)), **kw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def ip_address(text: str) -> Address:
    """``"127.0.0.1:47001"`` -> ``Address``; the host must be an IP address (datagrams go to
    addresses as written, no name lookup)."""
    try:
        address = Address.parse(text)
    except RouteError as exc:
        raise ValueError(str(exc).removeprefix("address ")) from None
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        raise ValueError(f"{text!r}: {address.host!r} is not an IP address (the relay sends "
                         f"to addresses as written: resolve names first)") from None
    return address


def read_routes(top: Reader) -> RouteTable:
    """The ``[[route]]`` tables (table 408) of a device's file as a ``RouteTable``."""
    routes, seen = [], {}
    for i, r in enumerate(top.tables("route")):
        r.unknown({"source_wwn", "target_wwn", "path"})
        source = r.get("source_wwn", str, check=parse_wwn)
        target = r.get("target_wwn", str, check=parse_wwn)
        path = r.items("path", str, check=ip_address)
        try:
            route = Route(source, target, tuple(path))
        except RouteError as exc:
            raise ConfigError(f"route[{i}].path: {exc}") from None
        if (source, target) in seen:
            raise ConfigError(f"route[{i}]: a second route for {r.table['source_wwn']} -> "
                              f"{r.table['target_wwn']} (the first is route[{seen[source, target]}])")
        seen[source, target] = i
        routes.append(route)
    return RouteTable(routes)


def client_endpoint(text: str) -> str:
    """A Twisted client endpoint string naming a host and port ("tcp:HOST:PORT")."""
    kind, _, rest = text.partition(":")
    host, _, port = rest.partition(":")
    if kind != "tcp" or not host or not port.split(":")[0].isdigit():
        raise ValueError(f"{text!r} is not a client endpoint like tcp:HOST:PORT")
    return text


@dataclass(frozen=True)
class ConsoleConfig:
    """``[console]``: where a daemon serves its operator console. ``serial = "pty"``: a
    pseudo-terminal the daemon makes itself (QEMU's ``-serial pty``), its name logged and,
    with ``pty_link``, a symlink to it at that path."""
    serial: str | None = None         # a serial device path, or "pty"
    speed: int = 115200
    tcp: Address | None = None
    pty_link: str | None = None       # serial = "pty" only: a symlink to the pty's slave


PTY = "pty"


def read_console(top: Reader) -> ConsoleConfig | None:
    """The ``[console]`` table (None without one)."""
    if "console" not in top.table:
        return None
    r = top.section("console")
    r.unknown({"serial", "speed", "tcp", "pty_link"})
    config = ConsoleConfig(serial=r.get("serial", str, None),
                           speed=r.get("speed", int, 115200,
                                       one_of((1200, 2400, 4800, 9600, 19200, 38400, 57600,
                                               115200, 230400, 460800, 921600))),
                           tcp=r.get("tcp", str, None, ip_address),
                           pty_link=r.get("pty_link", str, None))
    if config.serial is None and config.tcp is None:
        raise ConfigError("console: give serial (a device path or \"pty\") or tcp (HOST:PORT), "
                          "or both")
    if config.serial is not None and not config.serial.strip():
        raise ConfigError("console.serial: empty (a device path, or \"pty\")")
    if config.pty_link is not None and config.serial != PTY:
        raise ConfigError(f"console.pty_link: only with serial = \"{PTY}\" (serial is "
                          f"{config.serial!r})")
    if config.pty_link is not None and not config.pty_link.strip():
        raise ConfigError("console.pty_link: empty (a path for the symlink to the pty)")
    return config


def read_mgmt(top: Reader) -> str | None:
    """``[mgmt] connect``: the management server's AMP endpoint, or None without one."""
    mgmt = top.section("mgmt", {})
    mgmt.unknown({"connect"})
    return mgmt.get("connect", str, None, client_endpoint)
