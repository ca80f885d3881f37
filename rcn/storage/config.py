"""The storage array emulator's configuration file (TOML).

Example (every key shown; only ``array.wwpn`` and one volume are required; it is
``SCHEMA.example()``, the keys' one table)::

    [array]
    wwpn = "50:0a:09:80:00:00:00:01"          # the array's port name (its WWN) (required)
    wwnn = "50:0a:09:80:00:00:00:00"          # node name; default: wwpn with the low bit cleared
    data_dir = "volumes"                      # volume files <name>.img live here (relative: to this
                                              # file)
    track_size = "64KiB"                      # differential bitmap track: a power of two, 512 bytes
                                              # to 1GiB

    [nbd]                                     # host interface (NBD)
    listen = "tcp:10809:interface=127.0.0.1"

    [control]                                 # JSON over HTTP (rcn array ...) and /metrics
    listen = "tcp:47200:interface=127.0.0.1"

    [edge]                                    # the array's edge (RIO channel, FCIP); needed by
                                              # pairs; omit: no remote copy
    connect = "tcp:127.0.0.1:3225"            # the edge's FCIP listener
    timeout = 30.0                            # seconds per exchange
    auto_resync = true                        # a source pair in failure Suspend because its RIOs
                                              # got no answer resyncs by itself (link-up, or 5..60 s
                                              # later)
    partners = ["50:0a:09:80:00:00:00:02"]    # partner arrays to log in to at link-up besides the
                                              # pairs' (a target needs the source's virtual storage
                                              # before PAIR_CREATE comes)

    [console]                                 # the operator's console; omit: none
    serial = "pty"                            # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/array.console"       # ... and a symlink to it here (serial = "pty" only;
                                              # relative: to the working directory)
    speed = 115200                            # a serial port's speed
    tcp = "tcp:2302:interface=127.0.0.1"      # and/or a TCP listener (console servers)

    [[volume]]                                # one or more
    lun = 0
    name = "vol0"                             # NBD export name; default "lun<N>"
    capacity = "1GiB"                         # bytes, or with KiB/MiB/GiB/TiB; a multiple of 512

    [[pair]]                                  # a pair that exists at start (pair-create makes
                                              # others)
    lun = 0
    role = "source"                           # source: host writes replicate to the partner;
                                              # target: the partner's writes arrive here
    partner_wwpn = "50:0a:09:80:00:00:00:02"
    partner_lun = 0
    group = 7                                 # order guarantee ID
    state = "duplex"                          # at start: simplex | duplex | suspend |
                                              # failure-suspend
    mode = "sync"                             # sync: a host write completes after the WROK; async:
                                              # after the local write, RIOs queue (bounded)
    queue_limit = 1024                        # async mode: RIOs waiting at most
    track_size = "64KiB"                      # this pair's bitmap track; default array.track_size

Pairs can also be made at run time (``rcn array pair-create``); those are not
written back to this file.

Errors name the key (``volume[1].capacity: ...``) and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from datapath.frames.names import parse_wwn
from rcn.config import (CONSOLE, REQUIRED, ConfigError, ConsoleConfig, Key, Schema, Table,
                        client_endpoint, in_range, load_toml, non_negative, one_of, parse_size,
                        read_console, server_endpoint, size_text)

__all__ = ["ConfigError", "parse_size", "load_config", "parse_config", "render", "SCHEMA",
           "StorageConfig", "VolumeConfig", "PairConfig", "EdgeConfig"]

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
class EdgeConfig:
    connect: str                      # a client endpoint string (tcp:HOST:PORT)
    timeout: float = 30.0
    partners: tuple[int, ...] = ()
    auto_resync: bool = True


@dataclass(frozen=True)
class StorageConfig:
    wwpn: int
    wwnn: int
    data_dir: str
    nbd: str                          # server endpoint strings
    control: str
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


_TRACK = size_text(DEFAULT_TRACK_SIZE)
_PARTNER = "50:0a:09:80:00:00:00:02"

SCHEMA = Schema(
    Table("array", (
        Key("wwpn", str, REQUIRED, parse_wwn, "the array's port name (its WWN)",
            example="50:0a:09:80:00:00:00:01"),
        Key("wwnn", str, None, parse_wwn, "node name; default: wwpn with the low bit cleared",
            example="50:0a:09:80:00:00:00:00"),
        Key("data_dir", str, "volumes", help="volume files <name>.img live here (relative: "
            "to this file)"),
        Key("track_size", (int, str), _TRACK, _track_size, "differential bitmap track: a "
            "power of two, 512 bytes to 1GiB")), required=True),
    Table("nbd", (
        Key("listen", str, "tcp:10809:interface=127.0.0.1", server_endpoint),),
        "host interface (NBD)"),
    Table("control", (
        Key("listen", str, "tcp:47200:interface=127.0.0.1", server_endpoint),),
        "JSON over HTTP (rcn array ...) and /metrics"),
    Table("edge", (
        Key("connect", str, "tcp:127.0.0.1:3225", client_endpoint, "the edge's FCIP listener"),
        Key("timeout", float, 30.0, in_range(0.1, 3600.0, " s"), "seconds per exchange"),
        Key("auto_resync", bool, True, help="a source pair in failure Suspend because its RIOs "
            "got no answer resyncs by itself (link-up, or 5..60 s later)"),
        Key("partners", str, (), parse_wwn, "partner arrays to log in to at link-up besides "
            "the pairs' (a target needs the source's virtual storage before PAIR_CREATE "
            "comes)", example=[_PARTNER], many=True)),
        "the array's edge (RIO channel, FCIP); needed by pairs; omit: no remote copy"),
    CONSOLE.showing(pty_link="/run/rcn/array.console", tcp="tcp:2302:interface=127.0.0.1"),
    Table("volume", (
        Key("lun", int, REQUIRED, non_negative, example=0),
        Key("name", str, None, help="NBD export name; default \"lun<N>\"", example="vol0"),
        Key("capacity", (int, str), REQUIRED, _capacity, "bytes, or with KiB/MiB/GiB/TiB; a "
            "multiple of 512", example="1GiB")), "one or more", array=True, required=True),
    Table("pair", (
        Key("lun", int, REQUIRED, example=0),
        Key("role", str, "source", one_of(PAIR_ROLES), "source: host writes replicate to the "
            "partner; target: the partner's writes arrive here"),
        Key("partner_wwpn", str, REQUIRED, parse_wwn, example=_PARTNER),
        Key("partner_lun", int, REQUIRED, non_negative, example=0),
        Key("group", int, REQUIRED, non_negative, "order guarantee ID", example=7),
        Key("state", str, "duplex", one_of(PAIR_STATES), "at start: simplex | duplex | "
            "suspend | failure-suspend"),
        Key("mode", str, "sync", one_of(PAIR_MODES), "sync: a host write completes after the "
            "WROK; async: after the local write, RIOs queue (bounded)"),
        Key("queue_limit", int, 1024, non_negative, "async mode: RIOs waiting at most"),
        Key("track_size", (int, str), None, _track_size, "this pair's bitmap track; default "
            "array.track_size", example=_TRACK)),
        "a pair that exists at start (pair-create makes others)", array=True))


def render(doc: dict) -> str:
    """An array's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def load_config(path: str) -> StorageConfig:
    return load_toml(path, parse_config)


def _unique(volumes: list[VolumeConfig]) -> None:
    if not volumes:
        raise ConfigError("volume: at least one [[volume]] is needed")
    for key in ("lun", "name"):
        seen = [getattr(v, key) for v in volumes]
        dup = next((x for x in seen if seen.count(x) > 1), None)
        if dup is not None:
            raise ConfigError(f"volume: {key} {dup!r} appears twice")


def parse_config(doc: dict, base_dir: str = ".") -> StorageConfig:
    top, v = SCHEMA.read(doc)
    array = v["array"]
    volumes = [VolumeConfig(r["lun"], r["name"] if r["name"] is not None else f"lun{r['lun']}",
                            r["capacity"]) for r in v["volume"]]
    _unique(volumes)
    luns = {volume.lun for volume in volumes}
    pairs = []
    for i, r in enumerate(v["pair"]):
        if r["lun"] not in luns:
            raise ConfigError(f"pair[{i}].lun: no volume has LUN {r['lun']}")
        if r["track_size"] is None:
            r["track_size"] = array["track_size"]
        pairs.append(PairConfig(**r))
    if len({p.lun for p in pairs}) != len(pairs):
        raise ConfigError("pair: a volume can be in one pair only")
    e = v["edge"]
    edge = (EdgeConfig(e["connect"], e["timeout"], tuple(e["partners"]), e["auto_resync"])
            if "edge" in top.table else None)
    if pairs and edge is None:
        raise ConfigError("edge: pairs need an [edge] to send their writes to")
    wwpn, wwnn = array["wwpn"], array["wwnn"]
    return StorageConfig(
        wwpn=wwpn, wwnn=wwnn if wwnn is not None else wwpn & ~1,
        data_dir=os.path.join(base_dir, array["data_dir"]), nbd=v["nbd"]["listen"],
        control=v["control"]["listen"], edge=edge, volumes=tuple(volumes), pairs=tuple(pairs),
        track_size=array["track_size"], console=read_console(top))
