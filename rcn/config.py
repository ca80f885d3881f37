"""What every daemon's TOML configuration reader shares.

A daemon's ``config`` module describes its keys; the pieces here read them:
:class:`Reader` gives typed access to one table with the key's path in every
error (``batch.max_bytes: ...``), :func:`load_toml` reads the file and puts the
file name in front of any :class:`ConfigError`, and the checks (``port``,
``non_negative``, ``one_of``, ``parse_size``) raise ``ValueError`` that the
reader turns into a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Callable, TypeVar

from datapath.frames.names import parse_wwn
from rcn.logxfer.routes import Address, Route, RouteError, RouteTable

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and key."""


def parse_size(text) -> int:
    """``4096``, ``"64KiB"``, ``"1 GiB"`` -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with KiB/MiB/GiB/TiB)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


class Reader:
    """Typed access to one table of the file, with key paths in errors."""

    def __init__(self, table: dict, where: str):
        self.table, self.where = table, where

    def _fail(self, key, reason):
        raise ConfigError(f"{self.where}{key}: {reason}")

    def get(self, key, kind, default=..., check=None):
        if key not in self.table:
            if default is ...:
                self._fail(key, "missing")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            wanted = " or ".join(k.__name__ for k in kinds)
            self._fail(key, f"expected {wanted}, got {type(value).__name__} {value!r}")
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                self._fail(key, str(exc))
        return value

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
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
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
    for i, table in enumerate(top.get("route", list, [])):
        if not isinstance(table, dict):
            raise ConfigError(f"route[{i}]: expected a table ([[route]])")
        r = Reader(table, f"route[{i}].")
        r.unknown({"source_wwn", "target_wwn", "path"})
        source = r.get("source_wwn", str, check=parse_wwn)
        target = r.get("target_wwn", str, check=parse_wwn)
        path = []
        for j, item in enumerate(r.get("path", list)):
            if not isinstance(item, str):
                raise ConfigError(f"route[{i}].path[{j}]: expected str, got "
                                  f"{type(item).__name__} {item!r}")
            try:
                path.append(ip_address(item))
            except ValueError as exc:
                raise ConfigError(f"route[{i}].path[{j}]: {exc}") from None
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
    table = top.get("console", dict, None)
    if table is None:
        return None
    r = Reader(table, "console.")
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
    mgmt = Reader(top.get("mgmt", dict, {}), "mgmt.")
    mgmt.unknown({"connect"})
    return mgmt.get("connect", str, None, client_endpoint)
