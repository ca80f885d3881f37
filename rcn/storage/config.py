"""The storage array emulator's configuration file (TOML).

Example (every key shown; only ``array.wwpn`` and one volume are required)::

    [array]
    wwpn = "50:0a:09:80:00:00:00:01"     # the array's port name (its WWN)
    wwnn = "50:0a:09:80:00:00:00:00"     # node name; default: wwpn with the low bit cleared
    data_dir = "/var/lib/rcn-storage"    # volume files live here (relative: to the config file)
    track_size = "64KiB"                 # differential bitmap track (a power of two >= 512 bytes)

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
    auto_resync = true                   # a source pair in failure Suspend because its RIOs
                                         # got no answer (the link dropped, the edge crashed)
                                         # resyncs by itself when the link is back
    partners = ["50:0a:09:80:00:00:00:02"]   # partner arrays to log in to at link-up besides
                                         # the pairs' (a target needs the source's virtual
                                         # storage before PAIR_CREATE comes)

    [[volume]]
    lun = 0
    name = "vol0"                        # NBD export name; default "lun<N>"
    capacity = "1GiB"                    # bytes, or with KiB/MiB/GiB/TiB; a multiple of 512

    [[pair]]                             # this array's volume in a remote copy pair
    lun = 0
    role = "source"                      # source: host writes replicate to the partner;
                                         # target: the partner's writes arrive here (the array
                                         # logs in to the partner's virtual storage at start)
    partner_wwpn = "50:0a:09:80:00:00:00:02"
    partner_lun = 0
    group = 7                            # order guarantee ID
    state = "duplex"                     # at start: simplex | duplex | suspend | failure-suspend
    mode = "sync"                        # sync: a host write completes after the WROK
                                         # async: after the local write; RIOs queue (bounded)
    queue_limit = 1024                   # async mode: RIOs waiting at most
    track_size = "64KiB"                 # this pair's bitmap track; default array.track_size

Pairs can also be made at run time (``rcn array pair-create``); those are not
written back to this file.

Errors name the key (``volume[1].capacity: ...``) and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from datapath.frames.names import parse_wwn
from rcn.config import ConfigError, ConsoleConfig, load_toml, parse_size, read_console
from rcn.config import Reader as _Reader
from rcn.config import in_range as _in_range
from rcn.config import non_negative as _non_negative
from rcn.config import one_of as _one_of
from rcn.config import port as _port

__all__ = ["ConfigError", "parse_size", "load_config", "parse_config", "StorageConfig",
           "VolumeConfig", "PairConfig", "Endpoint", "EdgeConfig"]

BLOCK_SIZE = 512
PAIR_STATES = ("simplex", "duplex", "suspend", "failure-suspend")
DEFAULT_TRACK_SIZE = 65536
PAIR_MODES = ("sync", "async")
PAIR_ROLES = ("source", "target")


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
    role: str = "source"
    track_size: int = DEFAULT_TRACK_SIZE


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class EdgeConfig(Endpoint):
    timeout: float = 30.0
    partners: tuple[int, ...] = ()
    auto_resync: bool = True


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
    track_size: int = DEFAULT_TRACK_SIZE
    console: ConsoleConfig | None = None     # [console]: serial and/or tcp, as the edge's


def _capacity(value) -> int:
    size = parse_size(value)
    if size <= 0 or size % BLOCK_SIZE:
        raise ValueError(f"{size} bytes is not a positive multiple of {BLOCK_SIZE}")
    return size


def _track_size(value) -> int:
    size = parse_size(value)
    if size < BLOCK_SIZE or size > 1 << 30 or size & (size - 1):
        raise ValueError(f"{size} bytes is not a power of two from {BLOCK_SIZE} to 1GiB")
    return size


def _endpoint(top: _Reader, name: str, default_port: int, cls=Endpoint, **extra):
    """``[name]``: host, port and the ``extra`` keys, each read by ``extra[key](reader)``."""
    r = top.section(name, {})
    r.unknown({"host", "port", *extra})
    values = {k: read(r) for k, read in extra.items()}
    return cls(r.get("host", str, "127.0.0.1"), r.get("port", int, default_port, _port), **values)


def load_config(path: str) -> StorageConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> StorageConfig:
    top = _Reader(doc, "")
    top.unknown({"array", "nbd", "control", "edge", "volume", "pair", "console"})
    array = top.section("array")
    array.unknown({"wwpn", "wwnn", "data_dir", "track_size"})
    wwpn = array.get("wwpn", str, check=parse_wwn)
    wwnn = array.get("wwnn", str, None, parse_wwn)
    data_dir = os.path.join(base_dir, array.get("data_dir", str, "volumes"))
    track_size = array.get("track_size", (int, str), DEFAULT_TRACK_SIZE, _track_size)

    volumes = []
    for r in top.tables("volume", ...):
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
    for i, r in enumerate(top.tables("pair")):
        r.unknown({"lun", "partner_wwpn", "partner_lun", "group", "state", "mode", "queue_limit",
                   "role", "track_size"})
        lun = r.get("lun", int)
        if lun not in luns:
            raise ConfigError(f"pair[{i}].lun: no volume has LUN {lun}")
        pairs.append(PairConfig(
            lun, r.get("partner_wwpn", str, check=parse_wwn),
            r.get("partner_lun", int, check=_non_negative), r.get("group", int, check=_non_negative),
            r.get("state", str, "duplex", _one_of(PAIR_STATES)),
            r.get("mode", str, "sync", _one_of(PAIR_MODES)),
            r.get("queue_limit", int, 1024, _non_negative),
            r.get("role", str, "source", _one_of(PAIR_ROLES)),
            r.get("track_size", (int, str), track_size, _track_size)))
    if len({p.lun for p in pairs}) != len(pairs):
        raise ConfigError("pair: a volume can be in one pair only")

    edge = (_endpoint(top, "edge", 3225, EdgeConfig,
                      timeout=lambda r: r.get("timeout", float, 30.0,
                                              _in_range(0.1, 3600.0, " s")),
                      partners=lambda r: tuple(r.items("partners", str, (), parse_wwn)),
                      auto_resync=lambda r: r.get("auto_resync", bool, True))
            if "edge" in doc else None)
    if pairs and edge is None:
        raise ConfigError("edge: pairs need an [edge] to send their writes to")
    return StorageConfig(
        wwpn=wwpn, wwnn=wwnn if wwnn is not None else wwpn & ~1, data_dir=data_dir,
        nbd=_endpoint(top, "nbd", 10809), control=_endpoint(top, "control", 47200), edge=edge,
        volumes=tuple(volumes), pairs=tuple(pairs), track_size=track_size,
        console=read_console(top))
