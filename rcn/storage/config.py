"""The storage array emulator's configuration file (TOML).

Example (every key shown; only ``array.wwpn`` and one volume are required)::

    [array]
    wwpn = "50:0a:09:80:00:00:00:01"     # the array's port name (its WWN)
    wwnn = "50:0a:09:80:00:00:00:00"     # node name; default: wwpn with the low bit cleared
    data_dir = "/var/lib/rcn-storage"    # volume files live here (relative: to the config file)

    [nbd]                                # host interface
    host = "127.0.0.1"
    port = 10809

    [control]                            # JSON-over-HTTP control API (rcn array ...)
    host = "127.0.0.1"
    port = 47200

    [edge]                               # the array's edge device (RIO channel); omit: no remote copy
    host = "127.0.0.1"
    port = 3225
    timeout = 30.0                       # seconds per exchange

    [[volume]]
    lun = 0
    name = "vol0"                        # NBD export name; default "lun<N>"
    capacity = "1GiB"                    # bytes, or with KiB/MiB/GiB/TiB; a multiple of 512

    [[pair]]                             # this array's volume as the source of a remote copy pair
    lun = 0
    partner_wwpn = "50:0a:09:80:00:00:00:02"
    partner_lun = 0
    group = 7                            # order guarantee ID
    state = "duplex"                     # simplex | duplex | suspend (transitions come later)
    mode = "sync"                        # sync: a host write completes after the WROK
                                         # async: after the local write; RIOs queue (bounded)
    queue_limit = 1024                   # async mode: RIOs waiting at most

Errors name the key (``volume[1].capacity: ...``) and the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field

from datapath.frames.names import parse_wwn

BLOCK_SIZE = 512
_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
PAIR_STATES = ("simplex", "duplex", "suspend")
PAIR_MODES = ("sync", "async")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class VolumeConfig:
    lun: int
    name: str
    capacity: int


@dataclass(frozen=True)
class PairConfig:
    lun: int
    partner_wwpn: int
    partner_lun: int
    group: int
    state: str = "duplex"
    mode: str = "sync"
    queue_limit: int = 1024


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class EdgeConfig(Endpoint):
    timeout: float = 30.0


@dataclass(frozen=True)
class StorageConfig:
    wwpn: int
    wwnn: int
    data_dir: str
    nbd: Endpoint
    control: Endpoint
    edge: EdgeConfig | None
    volumes: tuple[VolumeConfig, ...]
    pairs: tuple[PairConfig, ...] = field(default=())


def parse_size(text) -> int:
    """``4096``, ``"64KiB"``, ``"1 GiB"`` -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with KiB/MiB/GiB/TiB)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


class _Reader:
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


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} outside 0..65535")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _one_of(choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def _capacity(value) -> int:
    size = parse_size(value)
    if size <= 0 or size % BLOCK_SIZE:
        raise ValueError(f"{size} bytes is not a positive multiple of {BLOCK_SIZE}")
    return size


def _endpoint(doc: dict, name: str, default_port: int, cls=Endpoint, **extra):
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table")
    r = _Reader(table, f"{name}.")
    r.unknown({"host", "port", *extra})
    values = {k: r.get(k, kind, default) for k, (kind, default) in extra.items()}
    return cls(r.get("host", str, "127.0.0.1"), r.get("port", int, default_port, _port), **values)


def load_config(path: str) -> StorageConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(doc, base_dir=os.path.dirname(os.path.abspath(path)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(doc: dict, base_dir: str = ".") -> StorageConfig:
    top = _Reader(doc, "")
    top.unknown({"array", "nbd", "control", "edge", "volume", "pair"})
    array = _Reader(top.get("array", dict), "array.")
    array.unknown({"wwpn", "wwnn", "data_dir"})
    wwpn = array.get("wwpn", str, check=parse_wwn)
    wwnn = array.get("wwnn", str, None, parse_wwn)
    data_dir = os.path.join(base_dir, array.get("data_dir", str, "volumes"))

    volumes = []
    for i, table in enumerate(top.get("volume", list)):
        r = _Reader(table, f"volume[{i}].")
        r.unknown({"lun", "name", "capacity"})
        lun = r.get("lun", int, check=_non_negative)
        volumes.append(VolumeConfig(lun, r.get("name", str, f"lun{lun}"),
                                    r.get("capacity", (int, str), check=_capacity)))
    if not volumes:
        raise ConfigError("volume: at least one [[volume]] is needed")
    for key in ("lun", "name"):
        seen = [getattr(v, key) for v in volumes]
        dup = next((x for x in seen if seen.count(x) > 1), None)
        if dup is not None:
            raise ConfigError(f"volume: {key} {dup!r} appears twice")

    luns = {v.lun for v in volumes}
    pairs = []
    for i, table in enumerate(top.get("pair", list, [])):
        r = _Reader(table, f"pair[{i}].")
        r.unknown({"lun", "partner_wwpn", "partner_lun", "group", "state", "mode", "queue_limit"})
        lun = r.get("lun", int)
        if lun not in luns:
            raise ConfigError(f"pair[{i}].lun: no volume has LUN {lun}")
        pairs.append(PairConfig(
            lun, r.get("partner_wwpn", str, check=parse_wwn),
            r.get("partner_lun", int, check=_non_negative), r.get("group", int, check=_non_negative),
            r.get("state", str, "duplex", _one_of(PAIR_STATES)),
            r.get("mode", str, "sync", _one_of(PAIR_MODES)),
            r.get("queue_limit", int, 1024, _non_negative)))
    if len({p.lun for p in pairs}) != len(pairs):
        raise ConfigError("pair: a volume can be the source of one pair only")

    edge = _endpoint(doc, "edge", 3225, EdgeConfig, timeout=(float, 30.0)) if "edge" in doc else None
    if pairs and edge is None:
        raise ConfigError("edge: pairs need an [edge] to send their writes to")
    return StorageConfig(
        wwpn=wwpn, wwnn=wwnn if wwnn is not None else wwpn & ~1, data_dir=data_dir,
        nbd=_endpoint(doc, "nbd", 10809), control=_endpoint(doc, "control", 47200), edge=edge,
        volumes=tuple(volumes), pairs=tuple(pairs))
