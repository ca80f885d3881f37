"""What every daemon's TOML configuration reader shares.

A daemon's ``config`` module describes its keys; the pieces here read them:
:class:`Reader` gives typed access to one table with the key's path in every
error (``batch.max_bytes: ...``), :func:`load_toml` reads the file and puts the
file name in front of any :class:`ConfigError`, and the checks (``in_range``,
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

Each role writes its keys once, as :class:`Key` rows in :class:`Table` s of one
:class:`Schema` (name, type, default, check, one-line help). The schema reads a file
(``Schema.read``: unknown keys and wrong types are errors naming the key, defaults
filled), writes one (``Schema.render``: what ``rcn lab`` writes) and prints the
documented example (``Schema.example``; a test holds the docstrings and the README to it).

Addresses: a TCP listener is a Twisted server endpoint string (``tcp:PORT:interface=HOST``,
:func:`server_endpoint`), a TCP peer a client endpoint string (``tcp:HOST:PORT``,
:func:`client_endpoint`); services hand them to ``serverFromString``/``clientFromString``.
Log-transfer (UDP) addresses stay ``HOST:PORT`` (:func:`ip_address`): they name a node on
the wire and in routing paths, and Twisted has no UDP endpoint string.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from twisted.internet import endpoints

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


def size_text(size: int) -> str:
    """Bytes as the file writes them: ``16 << 20`` -> ``"16MiB"``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


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
        return self.checked(self.table[key], kind, check, key)

    def checked(self, value, kind, check, key):
        """``value`` (from the file, or a default in the file's form) as ``key``'s: typed and
        checked as :meth:`get` does."""
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
        return [self.checked(item, kind, check, f"{key}[{i}]") for i, item in enumerate(found)]

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.table) - known)
        if extra:
            self._fail(extra[0], f"unknown key (known: {', '.join(sorted(known))})")


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


# -- addresses: Twisted endpoint strings for TCP ------------------------------------------------

def _escaped(host: str) -> str:
    return host.replace("\\", "\\\\").replace(":", "\\:")


def _endpoint_parts(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``"tcp:47100:interface=127.0.0.1"`` -> ``("tcp", ["47100"], {"interface": ...})``,
    with Twisted's escapes (``\:`` is a colon inside a field)."""
    fields = [f.replace("\\:", ":").replace("\\\\", "\\")
              for f in re.split(r"(?<!\\):", text)]
    args, kw = [], {}
    for f in fields[1:]:
        name, sep, value = f.partition("=")
        if sep:
            kw[name] = value
        else:
            args.append(f)
    return fields[0], args, kw


def _old_form(text: str) -> Address | None:
    """``HOST:PORT`` or ``[V6]:PORT`` (the syntax before endpoint strings), or None."""
    if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]:[0-9]+|[^:\[\]]+:[0-9]+", text):
        return None
    try:
        return Address.parse(text)
    except RouteError:
        return None


def _tcp_port(text: str, low: int) -> int:
    if not text.isdigit() or not low <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number {low}..65535")
    return int(text)


def server_endpoint(text: str) -> str:
    """A TCP listener: a Twisted server endpoint string, ``tcp:PORT:interface=HOST`` (HOST an
    IP address; without ``interface``: every interface; ``\:`` in an IPv6 address)."""
    old = _old_form(text)
    if old is not None:
        raise ValueError(f"{text!r} is HOST:PORT; a TCP listener is a Twisted endpoint "
                         f"string: write \"tcp:{old.port}:interface={_escaped(old.host)}\"")
    kind, args, kw = _endpoint_parts(text)
    if kind not in ("tcp", "tcp6") or len(args) != 1 or set(kw) - {"interface", "backlog"}:
        raise ValueError(f"{text!r} is not a TCP server endpoint like "
                         f"tcp:PORT:interface=HOST")
    _tcp_port(args[0], 0)
    if "interface" in kw:
        try:
            ipaddress.ip_address(kw["interface"])
        except ValueError:
            raise ValueError(f"{text!r}: interface {kw['interface']!r} is not an IP "
                             f"address") from None
    try:
        endpoints.serverFromString(None, text)      # Twisted reads it as we do
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return text


def client_endpoint(text: str) -> str:
    """A TCP peer: a Twisted client endpoint string, ``tcp:HOST:PORT``."""
    old = _old_form(text)
    if old is not None:
        raise ValueError(f"{text!r} is HOST:PORT; a TCP peer is a Twisted endpoint string: "
                         f"write \"tcp:{_escaped(old.host)}:{old.port}\"")
    kind, args, kw = _endpoint_parts(text)
    if kind != "tcp" or len(args) != 2 or not args[0] or set(kw) - {"timeout"}:
        raise ValueError(f"{text!r} is not a client endpoint like tcp:HOST:PORT")
    _tcp_port(args[1], 1)
    try:
        endpoints.clientFromString(None, text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return text


# -- key tables ---------------------------------------------------------------------------------

REQUIRED = ...
_HELP_COLUMN = 42          # where the example's comments start
_HELP_WIDTH = 52           # their width (docstrings indent the example by 4)


@dataclass(frozen=True)
class Key:
    """One key of a table. ``default`` is in the file's form (``"64MiB"``) and goes through
    ``check`` like a written value; ``REQUIRED``: the key must be given; ``None``: absent
    (``None`` in the values). ``many``: a list of ``kind``, ``check`` on each item.
    ``example``: the documented example's value (default: the default)."""
    name: str
    kind: type | tuple
    default: object = None
    check: Callable | None = None
    help: str = ""
    example: object = None
    many: bool = False

    def read(self, r: Reader):
        given = self.name in r.table
        if not given and self.default is None:
            return [] if self.many else None
        if self.many:
            return r.items(self.name, self.kind, self.default, self.check) if given else \
                [r.checked(v, self.kind, self.check, self.name) for v in self.default]
        if not given and self.default is not REQUIRED:
            return r.checked(self.default, self.kind, self.check, self.name)
        return r.get(self.name, self.kind, check=self.check)

    @property
    def shown(self):
        return self.example if self.example is not None else \
            None if self.default is REQUIRED else self.default


@dataclass(frozen=True)
class Table:
    """``[name]`` (``array``: ``[[name]]``) and its keys, in the documented order."""
    name: str
    keys: tuple[Key, ...]
    help: str = ""
    array: bool = False
    required: bool = False
    more: tuple[dict, ...] = ()       # [[name]]: further rows of the documented example

    def read(self, top: Reader):
        """The values (key -> value) of ``[name]``, defaults when it is absent; a list of
        them for ``[[name]]``."""
        if self.array:
            return [self.values(r) for r in top.tables(self.name, ... if self.required else ())]
        return self.values(top.section(self.name, ... if self.required else {}))

    def showing(self, help: str | None = None, **examples) -> "Table":
        """This table with other values in the documented example (and other help): a
        shared table in one role's file."""
        return replace(self, help=self.help if help is None else help,
                       keys=tuple(replace(k, example=examples.get(k.name, k.example))
                                  for k in self.keys))

    def values(self, r: Reader) -> dict:
        r.unknown({k.name for k in self.keys})
        return {k.name: k.read(r) for k in self.keys}

    def example(self) -> list[str]:
        lines = _commented(f"[[{self.name}]]" if self.array else f"[{self.name}]", self.help)
        for k in self.keys:
            required = k.default is REQUIRED and not self.array
            help = f"{k.help} (required)" if required and k.help else \
                "required" if required else k.help
            if k.shown is not None:
                lines += _commented(f"{k.name} = {toml_value(k.shown)}", help)
        for row in self.more:
            lines += ["", *self.render(row, f"{self.name}[].")]
        return lines

    def render(self, item: dict, where: str) -> list[str]:
        """One ``[name]`` (or one ``[[name]]`` row) as lines; ``None`` values left out."""
        Reader(item, where).unknown({k.name for k in self.keys})
        return [f"[[{self.name}]]" if self.array else f"[{self.name}]",
                *(f"{k.name} = {toml_value(item[k.name])}" for k in self.keys
                  if item.get(k.name) is not None)]


def _commented(text: str, help: str) -> list[str]:
    if not help:
        return [text]
    wrapped = textwrap.wrap(help, _HELP_WIDTH, break_on_hyphens=False)
    more = [f"{'':<{_HELP_COLUMN - 1}} # {line}" for line in wrapped]
    if len(text) >= _HELP_COLUMN - 1:            # a long value: the help goes below it
        return [text] + more
    return [f"{text:<{_HELP_COLUMN - 1}} # {wrapped[0]}"] + more[1:]


def toml_value(value) -> str:
    """A scalar or a list of them in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)    # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"no TOML form for {_shown(value)}")


class Schema:
    """A role's file: its tables, in the documented order."""

    def __init__(self, *tables: Table):
        self.tables = {t.name: t for t in tables}

    def read(self, doc: dict) -> tuple[Reader, dict]:
        """The file's top Reader and each table's values (:meth:`Table.read`)."""
        top = Reader(doc, "")
        top.unknown(set(self.tables))
        return top, {name: t.read(top) for name, t in self.tables.items()}

    def example(self) -> str:
        """The documented example: every table, every key with its default or example."""
        return "\n\n".join("\n".join(t.example()) for t in self.tables.values()) + "\n"

    def render(self, doc: dict) -> str:
        """``{table: {key: value}, array: [{key: value}, ...]}`` as a file, in the schema's
        order (``None``: key left out). Unknown tables and keys, and any value this schema
        would not read back, are a ``ConfigError`` naming the key."""
        Reader(doc, "").unknown(set(self.tables))
        out = []
        for name, table in self.tables.items():
            if name in doc:
                items = doc[name] if table.array else [doc[name]]
                for i, item in enumerate(items):
                    where = f"{name}[{i}]." if table.array else f"{name}."
                    out += table.render(item, where) + [""]
        text = "\n".join(out)
        self.read(tomllib.loads(text))
        return text


# -- tables every device shares -----------------------------------------------------------------

ROUTE = Table("route", (
    Key("source_wwn", str, REQUIRED, parse_wwn, example="50:0a:09:80:00:00:00:01"),
    Key("target_wwn", str, REQUIRED, parse_wwn, example="50:0a:09:80:00:00:00:02"),
    Key("path", str, REQUIRED, ip_address, "source edge, cores..., target edge: log-transfer "
        "addresses (UDP HOST:PORT, IP addresses)", many=True,
        example=["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"])),
    "table 408; one per (source WWN, target WWN)", array=True)


def read_routes(top: Reader) -> RouteTable:
    """The ``[[route]]`` tables (table 408) of a device's file as a ``RouteTable``."""
    routes, seen = [], {}
    for i, r in enumerate(ROUTE.read(top)):
        source, target = r["source_wwn"], r["target_wwn"]
        try:
            route = Route(source, target, tuple(r["path"]))
        except RouteError as exc:
            raise ConfigError(f"route[{i}].path: {exc}") from None
        if (source, target) in seen:
            raw = top.table["route"][i]
            raise ConfigError(f"route[{i}]: a second route for {raw['source_wwn']} -> "
                              f"{raw['target_wwn']} (the first is route[{seen[source, target]}])")
        seen[source, target] = i
        routes.append(route)
    return RouteTable(routes)


@dataclass(frozen=True)
class ConsoleConfig:
    """``[console]``: where a daemon serves its operator console. ``serial = "pty"``: a
    pseudo-terminal the daemon makes itself (QEMU's ``-serial pty``), its name logged and,
    with ``pty_link``, a symlink to it at that path."""
    serial: str | None = None         # a serial device path, or "pty"
    speed: int = 115200
    tcp: str | None = None            # a server endpoint string (tcp:PORT:interface=HOST)
    pty_link: str | None = None       # serial = "pty" only: a symlink to the pty's slave


PTY = "pty"
SPEEDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

CONSOLE = Table("console", (
    Key("serial", str, None, help="a serial port (\"/dev/ttyS1\"), or \"pty\": a "
        "pseudo-terminal of its own (its name is logged) ...", example=PTY),
    Key("pty_link", str, None, help="... and a symlink to it here (serial = \"pty\" only; "
        "relative: to the working directory)", example="/run/rcn/console"),
    Key("speed", int, 115200, one_of(SPEEDS), "a serial port's speed"),
    Key("tcp", str, None, server_endpoint, "and/or a TCP listener (console servers)",
        example="tcp:2301:interface=127.0.0.1")),
    "the operator's console; omit: none")


def read_console(top: Reader) -> ConsoleConfig | None:
    """The ``[console]`` table (None without one)."""
    if "console" not in top.table:
        return None
    config = ConsoleConfig(**CONSOLE.read(top))
    if config.serial is None and config.tcp is None:
        raise ConfigError("console: give serial (a device path or \"pty\") or tcp "
                          "(tcp:PORT:interface=HOST), or both")
    if config.serial is not None and not config.serial.strip():
        raise ConfigError("console.serial: empty (a device path, or \"pty\")")
    if config.pty_link is not None and config.serial != PTY:
        raise ConfigError(f"console.pty_link: only with serial = \"{PTY}\" (serial is "
                          f"{config.serial!r})")
    if config.pty_link is not None and not config.pty_link.strip():
        raise ConfigError("console.pty_link: empty (a path for the symlink to the pty)")
    return config


MGMT = Table("mgmt", (
    Key("connect", str, None, client_endpoint, "the management server's AMP endpoint",
        example="tcp:127.0.0.1:47100"),),
    "the management server (rcn-mgmt); omit: none")


def read_mgmt(top: Reader) -> str | None:
    """``[mgmt] connect``: the management server's AMP endpoint, or None without one."""
    return MGMT.read(top)["connect"]


SEALED, UNSEALED = "aes-256-gcm", "none"

SEAL = Table("seal", (
    Key("mode", str, SEALED, one_of((SEALED, UNSEALED)), "log transfer sealed (DESIGN.md 9): "
        "a hop tag on every datagram and the customers' data sealed end to end; \"none\" "
        "turns both off, for debugging only (logged at start; sealed neighbours refuse this "
        "device's datagrams)"),
    Key("keys", str, None, help="key file (0600; `link`/`group` lines, see the README): read "
        "at start; with [mgmt] the keys the server sends are kept here for a restart "
        "(relative: to the working directory)", example="keys/device.keys")),
    "log-transfer keys and sealing")


@dataclass(frozen=True)
class SealConfig:
    mode: str = SEALED
    keys: str | None = None        # the key file

    @property
    def sealed(self) -> bool:
        return self.mode == SEALED


def read_seal(top: Reader, managed: bool, default_keys: str | None = None) -> SealConfig:
    """The ``[seal]`` table. Sealed (the default) needs keys: a key file, or a management
    server (``managed``) to send them; ``default_keys``: where a managed device keeps them
    when the file names no key file (an edge: DATA_DIR/keys). A sealed device without
    such a default (a core) must name its key file even when managed: the server's keys
    and the hop layer's state file (``<keys>.hop``: its counter reservation, without
    which a restart behind the clock would reuse GCM nonces) are kept there."""
    v = SEAL.read(top)
    keys = v["keys"] if v["keys"] is not None else (default_keys if managed else None)
    if v["mode"] == SEALED and keys is None and not managed:
        raise ConfigError("seal.keys: sealed log transfer needs keys: name a key file "
                          "(`rcn lab` writes them), or a management server ([mgmt] connect) "
                          "to send them; seal.mode = \"none\" is for debugging only")
    if v["mode"] == SEALED and keys is None:
        raise ConfigError("seal.keys: a sealed device under a management server needs a "
                          "path for its key file (it need not exist yet): the server's keys "
                          "are kept there for a restart, and the hop counters' state beside "
                          "it (KEYS.hop); the directory must be writable by the daemon's user")
    if keys is not None and not keys.strip():
        raise ConfigError("seal.keys: empty (a path to the key file)")
    return SealConfig(v["mode"], keys)
