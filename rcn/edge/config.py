"""The edge device's configuration file (TOML).

Until the management server distributes them, the edge's tables (404, 405,
408, 411) come from this file. Example (every key; ``edge.id``, ``edge.log``
and ``edge.data_dir`` are required; it is ``SCHEMA.example()``, the keys' one table)::

    [edge]
    id = "edgeA"                              # name in logs and metrics (required)
    log = "127.0.0.1:47001"                   # log-transfer UDP address, HOST:PORT: paths name the
                                              # edge by it (a node identity on the wire; Twisted has
                                              # no UDP endpoint string) (required)
    fcip = "tcp:3225:interface=127.0.0.1"     # RIO channel: arrays connect here (FCIP)
    data_dir = "edgeA"                        # log storage area and apply counters (relative: to
                                              # this file) (required)
    ttl = 16                                  # hops an entry may take
    receive_buffer = "16MiB"                  # kernel UDP buffers
    send_buffer = "4MiB"

    [log]                                     # log storage area
    mode = "durable"                          # durable: GOOD after fsync (group commit); memory:
                                              # GOOD at once, lost with the process
    segment_size = "64MiB"
    group_quota = "256MiB"                    # retained bytes per group; beyond: back-pressure
    max_datagram = 65000                      # largest datagram; larger entries are split

    [sender]
    window = "64MiB"                          # unacknowledged bytes per path
    rto_ms = 500.0                            # retransmission timeout before any round trip is
                                              # measured, and its floor: above it the RTO follows
                                              # the measured round trip (RFC 6298), at most
                                              # rto_max_ms
    rto_max_ms = 5000.0                       # also the cap of a timeout's doubling

    [receiver]                                # target side
    window = 16384                            # reorder buffer entries per group (a power of two)
    apply_window = 256                        # writes sent to the array and not yet durable
    nak_delay_ms = 20.0                       # a gap this old is NAKed, then every nak_interval_ms
    nak_interval_ms = 200.0
    retry_ms = 500.0                          # a failed apply is retried after this

    [fabric]                                  # the RIO channel's fabric services
    first_burst = true                        # PRLI accept disables XFER_RDY for writes
    exchange_timeout = 30.0

    [metrics]
    listen = "tcp:47301:interface=127.0.0.1"  # Prometheus /metrics and /status (JSON); omit: none

    [pairs]                                   # the pair lifecycle (docs/pairs.md)
    group_policy = "B"                        # order guarantee IDs of pairs made by PAIR_CREATE:
                                              # A-1 per (source array, target array), A-2 per
                                              # (source edge, target edge), B only [[pair]]s
    failure_timeout = 60.0                    # seconds an entry may stay unacknowledged before its
                                              # group goes to failure Suspend
    failover_timeout = 30.0                   # seconds a failover SUSPEND waits for the SOK

    [mgmt]                                    # the management server (rcn-mgmt); omit: tables come
                                              # from this file only. With it, the server's snapshots
                                              # replace the tables below (kept in DATA_DIR/mgmt.json
                                              # across restarts)
    connect = "tcp:127.0.0.1:47100"           # the management server's AMP endpoint

    [seal]                                    # log-transfer keys and sealing
    mode = "aes-256-gcm"                      # log transfer sealed (DESIGN.md 9): a hop tag on
                                              # every datagram and the customers' data sealed end to
                                              # end; "none" turns both off, for debugging only
                                              # (logged at start; sealed neighbours refuse this
                                              # device's datagrams)
    keys = "keys/edgeA.keys"                  # key file (0600; `link`/`group` lines, see the
                                              # README): read at start; with [mgmt] the keys the
                                              # server sends are kept here for a restart (relative:
                                              # to the working directory)

    [console]                                 # the operator's console; omit: none
    serial = "/dev/ttyS1"                     # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    speed = 115200                            # a serial port's speed
    tcp = "tcp:2301:interface=127.0.0.1"      # and/or a TCP listener (console servers)

    [[virtual_storage]]                       # table 404
    wwn = "50:0a:09:80:00:00:00:02"           # the WWN the attached array sees
    partner_wwn = "50:0a:09:80:00:00:00:02"   # the real storage behind it (default: wwn)
    partner_edge = "edgeB"

    [[access]]                                # table 405: storage_wwn may use virtual_wwn
    virtual_wwn = "50:0a:09:80:00:00:00:02"
    storage_wwn = "50:0a:09:80:00:00:00:01"

    [[pair]]                                  # table 411: pairs whose source is attached here
    source_wwn = "50:0a:09:80:00:00:00:01"
    source_lun = 0
    target_wwn = "50:0a:09:80:00:00:00:02"
    target_lun = 0
    group = 7                                 # order guarantee ID
    customer = "acme"                         # a [[customer]] id, or omit

    [[customer]]
    id = "acme"
    bandwidth = "100MiB"                      # bytes per second on the log-transfer channel; 0: no
                                              # limit

    [[route]]                                 # table 408; one per (source WWN, target WWN)
    source_wwn = "50:0a:09:80:00:00:00:01"
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"]
                                              # source edge, cores..., target edge: log-transfer
                                              # addresses (UDP HOST:PORT, IP addresses)

    [[route]]
    source_wwn = "50:0a:09:80:00:00:00:11"
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47003"]

    [nbd]                                     # NBD front end (DESIGN.md 3.2); omit: none
    listen = "tcp:10810:interface=127.0.0.1"  # fixed newstyle NBD server for the [[nbd_volume]]s
    read_timeout = 10.0                       # seconds a READ may wait for the target's answer

    [[nbd_volume]]                            # a virtual volume replicated through the RCN
    name = "vm-disk"                          # NBD export name (the only volume is also the
                                              # default)
    capacity = "256MiB"                       # size (whole 512-byte blocks)
    source_wwn = "50:0a:09:80:00:00:00:11"    # names this volume as the source storage: an attached
                                              # array may not use it ([[access]])
    source_lun = 0
    target_wwn = "50:0a:09:80:00:00:00:02"
    target_lun = 1                            # the target storage and LUN holding the volume
    group = 7                                 # order guarantee ID
    customer = "acme"                         # a [[customer]] id, or omit

    [[nbd_target]]                            # target side: apply this target storage's LUN to an
                                              # NBD server (qemu-nbd, nbdkit) instead of an array
                                              # attached over FCIP
    target_wwn = "50:0a:09:80:00:00:00:03"
    target_lun = 0
    url = "nbd://127.0.0.1:10809/backup"

Errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from datapath.frames.logentry import HEADER_SIZE
from datapath.frames.names import parse_wwn
from rcn.config import (CONSOLE, MGMT, REQUIRED, ROUTE, SEAL, ConfigError, ConsoleConfig, Key,
                        Reader, Schema, SealConfig, Table, in_range, ip_address, load_toml,
                        non_negative, not_empty, one_of, parse_size, read_console, read_mgmt,
                        read_routes, read_seal, server_endpoint, size_text)
from rcn.edge.device import EdgeSettings, PairEntry
from rcn.edge.receiver import ReceiverConfig
from rcn.logxfer.protocol import (DEFAULT_RECEIVE_BUFFER, DEFAULT_SEND_BUFFER,
                                  MAX_ENTRY_DATAGRAM)
from rcn.logxfer.routes import Address
from rcn.groups import POLICIES
from rcn.nbd.client import parse_nbd_url
from rcn.rio.fabric import VirtualStorageEntry

__all__ = ["ConfigError", "EdgeConfig", "NbdFront", "NbdVolume", "SCHEMA", "load_config",
           "parse_config", "render"]

_BLOCK = 512


@dataclass(frozen=True)
class NbdFront:
    """``[nbd]``: where the edge serves its NBD volumes."""
    listen: str                       # a server endpoint string
    read_timeout: float = 10.0


@dataclass(frozen=True)
class NbdVolume:
    """An ``[[nbd_volume]]``: an NBD export whose pair's source is the volume itself."""
    name: str
    capacity: int
    pair: PairEntry


@dataclass
class EdgeConfig:
    id: str
    log: Address
    fcip: str | None                 # a server endpoint string
    data_dir: str
    settings: EdgeSettings
    log_mode: str = "durable"
    segment_size: int = 64 << 20
    group_quota: int = 256 << 20
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    send_buffer: int = DEFAULT_SEND_BUFFER
    first_burst: bool = True
    exchange_timeout: float = 30.0
    metrics: str | None = None       # a server endpoint string
    virtual_storages: list[VirtualStorageEntry] = field(default_factory=list)
    access: set[tuple[int, int]] = field(default_factory=set)   # (storage, virtual)
    nbd: NbdFront | None = None
    nbd_volumes: list[NbdVolume] = field(default_factory=list)
    nbd_targets: dict[tuple[int, int], str] = field(default_factory=dict)   # (wwn, lun) -> URL
    mgmt: str | None = None          # the management server's AMP endpoint ("tcp:HOST:PORT")
    console: ConsoleConfig | None = None
    seal: SealConfig = SealConfig()


def load_config(path: str) -> EdgeConfig:
    return load_toml(path, parse_config)


def _power_of_two(value: int) -> int:
    if value < 2 or value & (value - 1) or value > 1 << 20:
        raise ValueError(f"{value} is not a power of two in 2..1048576")
    return value


def _ms(low: float = 0.1, high: float = 600_000.0):
    """A check of milliseconds in ``low..high`` that gives seconds."""
    check = in_range(low, high, " ms")
    return lambda value: check(value) / 1000.0


def _nbd_url(text: str) -> str:
    parse_nbd_url(text)              # ValueError names the problem
    return text


def _capacity(value) -> int:
    size = parse_size(value)
    if size <= 0 or size % _BLOCK:
        raise ValueError(f"{size} bytes is not a positive multiple of {_BLOCK} (whole blocks)")
    return size


def _export_name(value: str) -> str:
    if not value or "\0" in value or len(value.encode("utf-8")) > 4096:
        raise ValueError(f"{value[:40]!r}: an NBD export name is 1..4096 bytes of UTF-8 "
                         f"without NUL")
    return value


WWN_A, WWN_B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
_SIZE = (int, str)
_PAIR_KEYS = (
    Key("source_wwn", str, REQUIRED, parse_wwn, example=WWN_A),
    Key("source_lun", int, REQUIRED, non_negative, example=0),
    Key("target_wwn", str, REQUIRED, parse_wwn, example=WWN_B),
    Key("target_lun", int, REQUIRED, non_negative, example=0),
    Key("group", int, REQUIRED, in_range(0, 0xFFFFFFFF), "order guarantee ID", example=7),
    Key("customer", str, "", help="a [[customer]] id, or omit", example="acme"))

SCHEMA = Schema(
    Table("edge", (
        Key("id", str, REQUIRED, not_empty, "name in logs and metrics", example="edgeA"),
        Key("log", str, REQUIRED, ip_address, "log-transfer UDP address, HOST:PORT: paths name "
            "the edge by it (a node identity on the wire; Twisted has no UDP endpoint string)",
            example="127.0.0.1:47001"),
        Key("fcip", str, None, server_endpoint, "RIO channel: arrays connect here (FCIP)",
            example="tcp:3225:interface=127.0.0.1"),
        Key("data_dir", str, REQUIRED, help="log storage area and apply counters (relative: "
            "to this file)", example="edgeA"),
        Key("ttl", int, 16, in_range(1, 255), "hops an entry may take"),
        Key("receive_buffer", _SIZE, size_text(DEFAULT_RECEIVE_BUFFER), parse_size,
            "kernel UDP buffers"),
        Key("send_buffer", _SIZE, size_text(DEFAULT_SEND_BUFFER), parse_size)), required=True),
    Table("log", (
        Key("mode", str, "durable", one_of(("durable", "memory")), "durable: GOOD after fsync "
            "(group commit); memory: GOOD at once, lost with the process"),
        Key("segment_size", _SIZE, "64MiB", parse_size),
        Key("group_quota", _SIZE, "256MiB", parse_size, "retained bytes per group; beyond: "
            "back-pressure"),
        Key("max_datagram", int, 65000, in_range(HEADER_SIZE + 512, MAX_ENTRY_DATAGRAM),
            "largest datagram; larger entries are split")), "log storage area"),
    Table("sender", (
        Key("window", _SIZE, "64MiB", parse_size, "unacknowledged bytes per path"),
        Key("rto_ms", float, 500.0, _ms(1.0), "retransmission timeout before any round trip "
            "is measured, and its floor: above it the RTO follows the measured round trip "
            "(RFC 6298), at most rto_max_ms"),
        Key("rto_max_ms", float, 5000.0, _ms(1.0), "also the cap of a timeout's doubling"))),
    Table("receiver", (
        Key("window", int, 1 << 14, _power_of_two, "reorder buffer entries per group (a "
            "power of two)"),
        Key("apply_window", int, 256, in_range(1, 4096), "writes sent to the array and not "
            "yet durable"),
        Key("nak_delay_ms", float, 20.0, _ms(), "a gap this old is NAKed, then every "
            "nak_interval_ms"),
        Key("nak_interval_ms", float, 200.0, _ms()),
        Key("retry_ms", float, 500.0, _ms(), "a failed apply is retried after this")),
        "target side"),
    Table("fabric", (
        Key("first_burst", bool, True, help="PRLI accept disables XFER_RDY for writes"),
        Key("exchange_timeout", float, 30.0, in_range(0.1, 3600.0, " s"))),
        "the RIO channel's fabric services"),
    Table("metrics", (
        Key("listen", str, None, server_endpoint, "Prometheus /metrics and /status (JSON); "
            "omit: none", example="tcp:47301:interface=127.0.0.1"),)),
    Table("pairs", (
        Key("group_policy", str, "B", one_of(POLICIES), "order guarantee IDs of "
            "pairs made by PAIR_CREATE: A-1 per (source array, target array), A-2 per (source "
            "edge, target edge), B only [[pair]]s"),
        Key("failure_timeout", float, 60.0, in_range(0.1, 86400.0), "seconds an entry may "
            "stay unacknowledged before its group goes to failure Suspend"),
        Key("failover_timeout", float, 30.0, in_range(0.1, 86400.0), "seconds a failover "
            "SUSPEND waits for the SOK")), "the pair lifecycle (docs/pairs.md)"),
    MGMT.showing("the management server (rcn-mgmt); omit: tables come from this file only. "
                 "With it, the server's snapshots replace the tables below (kept in "
                 "DATA_DIR/mgmt.json across restarts)"),
    SEAL.showing(keys="keys/edgeA.keys"),
    CONSOLE.showing(serial="/dev/ttyS1", pty_link=None, tcp="tcp:2301:interface=127.0.0.1"),
    Table("virtual_storage", (
        Key("wwn", str, REQUIRED, parse_wwn, "the WWN the attached array sees", example=WWN_B),
        Key("partner_wwn", str, None, parse_wwn, "the real storage behind it (default: wwn)",
            example=WWN_B),
        Key("partner_edge", str, "", example="edgeB")), "table 404", array=True),
    Table("access", (
        Key("virtual_wwn", str, REQUIRED, parse_wwn, example=WWN_B),
        Key("storage_wwn", str, REQUIRED, parse_wwn, example=WWN_A)),
        "table 405: storage_wwn may use virtual_wwn", array=True),
    Table("pair", _PAIR_KEYS, "table 411: pairs whose source is attached here", array=True),
    Table("customer", (
        Key("id", str, REQUIRED, example="acme"),
        Key("bandwidth", _SIZE, 0, parse_size, "bytes per second on the log-transfer channel; "
            "0: no limit", example="100MiB")), array=True),
    replace(ROUTE, more=({"source_wwn": "50:0a:09:80:00:00:00:11", "target_wwn": WWN_B,
                          "path": ["127.0.0.1:47001", "127.0.0.1:47003"]},)),
    Table("nbd", (
        Key("listen", str, "tcp:10810:interface=127.0.0.1", server_endpoint,
            "fixed newstyle NBD server for the [[nbd_volume]]s"),
        Key("read_timeout", float, 10.0, in_range(0.1, 3600.0, " s"), "seconds a READ may "
            "wait for the target's answer")), "NBD front end (DESIGN.md 3.2); omit: none"),
    Table("nbd_volume", (
        Key("name", str, REQUIRED, _export_name, "NBD export name (the only volume is also "
            "the default)", example="vm-disk"),
        Key("capacity", _SIZE, REQUIRED, _capacity, "size (whole 512-byte blocks)",
            example="256MiB"),
        Key("source_wwn", str, REQUIRED, parse_wwn, "names this volume as the source storage: "
            "an attached array may not use it ([[access]])", example="50:0a:09:80:00:00:00:11"),
        *_PAIR_KEYS[1:3],
        Key("target_lun", int, REQUIRED, non_negative, "the target storage and LUN holding "
            "the volume", example=1),
        *_PAIR_KEYS[4:]), "a virtual volume replicated through the RCN", array=True),
    Table("nbd_target", (
        Key("target_wwn", str, REQUIRED, parse_wwn, example="50:0a:09:80:00:00:00:03"),
        Key("target_lun", int, REQUIRED, non_negative, example=0),
        Key("url", str, REQUIRED, _nbd_url, example="nbd://127.0.0.1:10809/backup")),
        "target side: apply this target storage's LUN to an NBD server (qemu-nbd, nbdkit) "
        "instead of an array attached over FCIP", array=True))


def render(doc: dict) -> str:
    """An edge's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def parse_config(doc: dict, base_dir: str = ".") -> EdgeConfig:
    top, v = SCHEMA.read(doc)
    edge, log, sender = v["edge"], v["log"], v["sender"]
    if sender["rto_max_ms"] < sender["rto_ms"]:
        raise ConfigError("sender.rto_max_ms: smaller than rto_ms")
    tables = read_tables(top)
    nbd, nbd_volumes = _read_nbd(top, v, edge["log"], tables)
    nbd_targets = {}
    for i, r in enumerate(v["nbd_target"]):
        key = (r["target_wwn"], r["target_lun"])
        if key in nbd_targets:
            raise ConfigError(f"nbd_target[{i}]: a second NBD server for the same target LUN")
        nbd_targets[key] = r["url"]
    r, lifecycle = v["receiver"], v["pairs"]
    receiver = ReceiverConfig(window=r["window"], apply_window=r["apply_window"],
                              nak_delay=r["nak_delay_ms"], nak_interval=r["nak_interval_ms"],
                              retry_delay=r["retry_ms"])
    settings = EdgeSettings(
        me=edge["log"], pairs=tables.pairs, routes=tables.routes, bandwidth=tables.customers,
        receiver=receiver, window_bytes=sender["window"], rto=sender["rto_ms"],
        rto_max=sender["rto_max_ms"], max_datagram_body=log["max_datagram"] - HEADER_SIZE,
        ttl=edge["ttl"], group_policy=lifecycle["group_policy"],
        failure_timeout=lifecycle["failure_timeout"],
        failover_timeout=lifecycle["failover_timeout"])
    data_dir = os.path.join(base_dir, edge["data_dir"])
    mgmt = read_mgmt(top)
    return EdgeConfig(
        id=edge["id"], log=edge["log"], fcip=edge["fcip"], data_dir=data_dir, settings=settings,
        log_mode=log["mode"], segment_size=log["segment_size"],
        group_quota=log["group_quota"], receive_buffer=edge["receive_buffer"],
        send_buffer=edge["send_buffer"], first_burst=v["fabric"]["first_burst"],
        exchange_timeout=v["fabric"]["exchange_timeout"], metrics=v["metrics"]["listen"],
        virtual_storages=tables.virtual_storages, access=tables.access, nbd=nbd,
        nbd_volumes=nbd_volumes, nbd_targets=nbd_targets, mgmt=mgmt,
        console=read_console(top),
        seal=read_seal(top, mgmt is not None, os.path.join(data_dir, "keys")))


@dataclass(frozen=True)
class Tables:
    """The tables a management server distributes (404, 405, 411, 408, customers' limits);
    the same keys in the file and in a snapshot (``rcn.mgmt.settings``)."""
    virtual_storages: list
    access: set
    customers: dict
    pairs: list
    routes: object


def read_tables(top: Reader) -> Tables:
    """``[[virtual_storage]]``, ``[[access]]``, ``[[customer]]``, ``[[pair]]``, ``[[route]]``."""
    table = SCHEMA.tables
    virtual_storages = [
        VirtualStorageEntry(wwn=r["wwn"], partner_wwn=r["partner_wwn"] or r["wwn"],
                            partner_edge_id=r["partner_edge"])
        for r in table["virtual_storage"].read(top)]
    access = {(r["storage_wwn"], r["virtual_wwn"]) for r in table["access"].read(top)}
    customers = {r["id"]: float(r["bandwidth"]) for r in table["customer"].read(top)}
    pairs = [_pair(r, f"pair[{i}]", customers) for i, r in enumerate(table["pair"].read(top))]
    return Tables(virtual_storages, access, customers, pairs, read_routes(top))


def _pair(r: dict, where: str, customers: dict) -> PairEntry:
    if r["customer"] and r["customer"] not in customers:
        raise ConfigError(f"{where}.customer: {r['customer']!r} is not a [[customer]] id")
    return PairEntry(r["source_wwn"], r["source_lun"], r["target_wwn"], r["target_lun"],
                     r["group"], r["customer"])


def _read_nbd(top: Reader, v: dict, me: Address, tables: Tables):
    """``[nbd]`` and the ``[[nbd_volume]]`` tables, checked against routes, pairs, access."""
    if "nbd" not in top.table:
        if v["nbd_volume"]:
            raise ConfigError("nbd_volume[0]: an [nbd] table (listen) is needed to serve "
                              "NBD volumes")
        return None, []
    front = NbdFront(listen=v["nbd"]["listen"], read_timeout=v["nbd"]["read_timeout"])
    attached = {storage for storage, _ in tables.access}
    targets = {(p.target_wwn, p.target_lun): f"pair[{i}]" for i, p in enumerate(tables.pairs)}
    names, sources = {}, {}
    volumes = []
    for i, r in enumerate(v["nbd_volume"]):
        where, raw = f"nbd_volume[{i}]", top.table["nbd_volume"][i]
        if r["name"] in names:
            raise ConfigError(f"{where}.name: {r['name']!r} is already {names[r['name']]}'s name")
        names[r["name"]] = where
        pair = _pair(r, where, tables.customers)
        source = f"{raw['source_wwn']} LUN {pair.source_lun}"
        target = f"{raw['target_wwn']} LUN {pair.target_lun}"
        if pair.source_wwn in attached:
            raise ConfigError(f"{where}.source_wwn: {raw['source_wwn']} is an attached "
                              f"array's WWN ([[access]] storage_wwn); an NBD volume needs a "
                              f"WWN of its own")
        if (pair.source_wwn, pair.source_lun) in sources:
            raise ConfigError(f"{where}.source_lun: {source} is already "
                              f"{sources[pair.source_wwn, pair.source_lun]}'s source")
        sources[pair.source_wwn, pair.source_lun] = where
        if (pair.target_wwn, pair.target_lun) in targets:
            raise ConfigError(f"{where}.target_lun: {target} is already the target of "
                              f"{targets[pair.target_wwn, pair.target_lun]}; a target LUN has "
                              f"one source")
        targets[pair.target_wwn, pair.target_lun] = where
        _check_route(tables.routes, pair, where, raw, me)
        volumes.append(NbdVolume(r["name"], r["capacity"], pair))
    return front, volumes


def _check_route(routes, pair: PairEntry, where: str, raw: dict, me: Address) -> None:
    if routes.route(pair.source_wwn, pair.target_wwn) is None:
        raise ConfigError(f"{where}: no [[route]] for source_wwn {raw['source_wwn']} -> "
                          f"target_wwn {raw['target_wwn']}; add one whose path starts "
                          f"at this edge ({me})")
    if routes.next_hop(pair.source_wwn, pair.target_wwn, me) is None:
        raise ConfigError(f"{where}: the [[route]] for {raw['source_wwn']} -> "
                          f"{raw['target_wwn']} does not start at this edge ({me}): its "
                          f"path must begin with edge.log")
