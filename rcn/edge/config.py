"""The edge device's configuration file (TOML).

Until the management server distributes them, the edge's tables (404, 405,
408, 411) come from this file. Example (every key; ``edge.id``, ``edge.log``
and ``edge.data_dir`` are required)::

    [edge]
    id = "edgeA"                          # name in logs and metrics
    log = "127.0.0.1:47001"               # log-transfer UDP address; paths name the edge by it
    fcip = "127.0.0.1:3225"               # RIO channel: arrays connect here (FCIP)
    data_dir = "edgeA"                    # log storage area and apply counters
                                          # (relative: to this file)
    ttl = 16                              # hops an entry may take
    receive_buffer = "16MiB"              # kernel UDP buffers
    send_buffer = "4MiB"

    [log]                                 # log storage area
    mode = "durable"                      # durable: GOOD after fsync (group commit)
                                          # memory: GOOD at once, lost with the process
    segment_size = "64MiB"
    group_quota = "256MiB"                # retained bytes per group; beyond: back-pressure
    max_datagram = 65000                  # largest datagram; larger entries are split

    [sender]
    window = "64MiB"                      # unacknowledged bytes per path
    rto_ms = 500                          # retransmission timeout before any round trip is
                                          # measured, and its floor: above it the RTO follows
                                          # the measured round trip (RFC 6298), at most
    rto_max_ms = 5000                     # this, also the cap of a timeout's doubling

    [receiver]                            # target side
    window = 16384                        # reorder buffer entries per group (a power of two)
    apply_window = 256                    # writes sent to the array and not yet durable
    nak_delay_ms = 20                     # a gap this old is NAKed, then every nak_interval_ms
    nak_interval_ms = 200
    retry_ms = 500                        # a failed apply is retried after this

    [fabric]                              # the RIO channel's fabric services
    first_burst = true                    # PRLI accept disables XFER_RDY for writes
    exchange_timeout = 30.0

    [metrics]
    listen = "127.0.0.1:47301"            # Prometheus /metrics and /status (JSON); omit: none

    [pairs]                               # the pair lifecycle (docs/pairs.md)
    group_policy = "B"                    # order guarantee IDs of pairs made by PAIR_CREATE:
                                          # A-1 per (source array, target array), A-2 per
                                          # (source edge, target edge), B only [[pair]]s below
    failure_timeout = 60.0                # seconds an entry may stay unacknowledged before
                                          # its group goes to failure Suspend
    failover_timeout = 30.0               # seconds a failover SUSPEND waits for the SOK

    [mgmt]                                # the management server (rcn-mgmt); omit: tables
    connect = "tcp:127.0.0.1:47100"       # come from this file only. With it, the server's
                                          # snapshots replace the tables below (kept in
                                          # DATA_DIR/mgmt.json across restarts)

    [console]                             # the operator's console (show ..., help); omit: none
    serial = "/dev/ttyS1"                 # a serial port (or a pty) ...
    speed = 115200                        # ... at this speed
    tcp = "127.0.0.1:2301"                # and/or a TCP port (console servers)

    [[virtual_storage]]                   # table 404
    wwn = "50:0a:09:80:00:00:00:02"       # the WWN the attached array sees
    partner_wwn = "50:0a:09:80:00:00:00:02"   # the real storage behind it (default: wwn)
    partner_edge = "edgeB"

    [[access]]                            # table 405: storage_wwn may use virtual_wwn
    virtual_wwn = "50:0a:09:80:00:00:00:02"
    storage_wwn = "50:0a:09:80:00:00:00:01"

    [[pair]]                              # table 411: pairs whose source is attached here
    source_wwn = "50:0a:09:80:00:00:00:01"
    source_lun = 0
    target_wwn = "50:0a:09:80:00:00:00:02"
    target_lun = 0
    group = 7                             # order guarantee ID
    customer = "acme"

    [[customer]]
    id = "acme"
    bandwidth = "100MiB"                  # bytes per second on the log-transfer channel; 0: no limit

    [[route]]                             # table 408
    source_wwn = "50:0a:09:80:00:00:00:01"
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"]

    [nbd]                                 # NBD front end (DESIGN.md 3.2); omit: none
    listen = "127.0.0.1:10810"            # fixed newstyle NBD server for the [[nbd_volume]]s
    read_timeout = 10.0                   # seconds a READ may wait for the target's answer

    [[nbd_volume]]                        # a virtual volume replicated through the RCN
    name = "vm-disk"                      # NBD export name (the only volume is also the default)
    capacity = "256MiB"                   # size (whole 512-byte blocks)
    source_wwn = "50:0a:09:80:00:00:00:11"    # names this volume as the source storage: an
    source_lun = 0                        #   attached array may not use it ([[access]])
    target_wwn = "50:0a:09:80:00:00:00:02"    # the target storage and LUN holding the volume
    target_lun = 1
    group = 7                             # order guarantee ID (may be shared with [[pair]]s)
    customer = "acme"                     # a [[customer]] id, or omit

    [[route]]                             # each nbd_volume's (source_wwn, target_wwn) needs a
    source_wwn = "50:0a:09:80:00:00:00:11"    # route starting at this edge
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47003"]

    [[nbd_target]]                        # target side: apply this target storage's LUN to an
    target_wwn = "50:0a:09:80:00:00:00:03"    # NBD server (qemu-nbd, nbdkit) instead of an
    target_lun = 0                        #   array attached over FCIP
    url = "nbd://127.0.0.1:10809/backup"

Errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from datapath.frames.logentry import HEADER_SIZE
from datapath.frames.names import parse_wwn
from rcn.config import (ConfigError, ConsoleConfig, Reader, in_range, ip_address, load_toml,
                        non_negative, one_of, parse_size, read_console, read_mgmt, read_routes)
from rcn.edge.device import EdgeSettings, PairEntry
from rcn.edge.receiver import ReceiverConfig
from rcn.logxfer.protocol import DEFAULT_RECEIVE_BUFFER, DEFAULT_SEND_BUFFER, MAX_UDP_PAYLOAD
from rcn.logxfer.routes import Address
from rcn.nbd.client import parse_nbd_url
from rcn.rio.fabric import VirtualStorageEntry

__all__ = ["ConfigError", "EdgeConfig", "NbdFront", "NbdVolume", "load_config", "parse_config"]

DEFAULT_NBD_LISTEN = "127.0.0.1:10810"
_BLOCK = 512


@dataclass(frozen=True)
class NbdFront:
    """``[nbd]``: where the edge serves its NBD volumes."""
    listen: Address
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
    fcip: Address | None
    data_dir: str
    settings: EdgeSettings
    log_mode: str = "durable"
    segment_size: int = 64 << 20
    group_quota: int = 256 << 20
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    send_buffer: int = DEFAULT_SEND_BUFFER
    first_burst: bool = True
    exchange_timeout: float = 30.0
    metrics: Address | None = None
    virtual_storages: list[VirtualStorageEntry] = field(default_factory=list)
    access: set[tuple[int, int]] = field(default_factory=set)   # (storage, virtual)
    nbd: NbdFront | None = None
    nbd_volumes: list[NbdVolume] = field(default_factory=list)
    nbd_targets: dict[tuple[int, int], str] = field(default_factory=dict)   # (wwn, lun) -> URL
    mgmt: str | None = None          # the management server's AMP endpoint ("tcp:HOST:PORT")
    console: ConsoleConfig | None = None


def load_config(path: str) -> EdgeConfig:
    return load_toml(path, parse_config)


def _power_of_two(value: int) -> int:
    if value < 2 or value & (value - 1) or value > 1 << 20:
        raise ValueError(f"{value} is not a power of two in 2..1048576")
    return value


def _ms(reader: Reader, key: str, default: float, low: float = 0.1, high: float = 600_000.0):
    return reader.get(key, float, default, in_range(low, high, " ms")) / 1000.0


def parse_config(doc: dict, base_dir: str = ".") -> EdgeConfig:
    top = Reader(doc, "")
    top.unknown({"edge", "log", "sender", "receiver", "fabric", "metrics", "virtual_storage",
                 "access", "pair", "customer", "route", "nbd", "nbd_volume", "nbd_target",
                 "pairs", "mgmt", "console"})
    edge = Reader(top.get("edge", dict), "edge.")
    edge.unknown({"id", "log", "fcip", "data_dir", "ttl", "receive_buffer", "send_buffer"})
    name = edge.get("id", str)
    if not name.strip():
        raise ConfigError("edge.id: empty")
    log_address = edge.get("log", str, check=ip_address)
    fcip = edge.get("fcip", str, None, ip_address)
    data_dir = os.path.join(base_dir, edge.get("data_dir", str))
    ttl = edge.get("ttl", int, 16, in_range(1, 255))
    buffers = {key: edge.get(key, (int, str), default, parse_size)
               for key, default in (("receive_buffer", DEFAULT_RECEIVE_BUFFER),
                                    ("send_buffer", DEFAULT_SEND_BUFFER))}

    log = Reader(top.get("log", dict, {}), "log.")
    log.unknown({"mode", "segment_size", "group_quota", "max_datagram"})
    mode = log.get("mode", str, "durable", one_of(("durable", "memory")))
    segment_size = log.get("segment_size", (int, str), 64 << 20, parse_size)
    group_quota = log.get("group_quota", (int, str), 256 << 20, parse_size)
    max_datagram = log.get("max_datagram", int, 65000, in_range(HEADER_SIZE + 512, MAX_UDP_PAYLOAD))

    lifecycle = Reader(top.get("pairs", dict, {}), "pairs.")
    lifecycle.unknown({"group_policy", "failure_timeout", "failover_timeout"})
    group_policy = lifecycle.get("group_policy", str, "B", one_of(("A-1", "A-2", "B")))
    failure_timeout = float(lifecycle.get("failure_timeout", (int, float), 60.0,
                                          in_range(0.1, 86400.0)))
    failover_timeout = float(lifecycle.get("failover_timeout", (int, float), 30.0,
                                           in_range(0.1, 86400.0)))

    sender = Reader(top.get("sender", dict, {}), "sender.")
    sender.unknown({"window", "rto_ms", "rto_max_ms"})
    window = sender.get("window", (int, str), 64 << 20, parse_size)
    rto = _ms(sender, "rto_ms", 500.0, 1.0)
    rto_max = _ms(sender, "rto_max_ms", 5000.0, 1.0)
    if rto_max < rto:
        raise ConfigError("sender.rto_max_ms: smaller than rto_ms")

    receiver = Reader(top.get("receiver", dict, {}), "receiver.")
    receiver.unknown({"window", "apply_window", "nak_delay_ms", "nak_interval_ms", "retry_ms"})
    receiver_config = ReceiverConfig(
        window=receiver.get("window", int, 1 << 14, _power_of_two),
        apply_window=receiver.get("apply_window", int, 256, in_range(1, 4096)),
        nak_delay=_ms(receiver, "nak_delay_ms", 20.0),
        nak_interval=_ms(receiver, "nak_interval_ms", 200.0),
        retry_delay=_ms(receiver, "retry_ms", 500.0))

    fabric = Reader(top.get("fabric", dict, {}), "fabric.")
    fabric.unknown({"first_burst", "exchange_timeout"})
    first_burst = fabric.get("first_burst", bool, True)
    exchange_timeout = fabric.get("exchange_timeout", float, 30.0, in_range(0.1, 3600.0, " s"))

    metrics = Reader(top.get("metrics", dict, {}), "metrics.")
    metrics.unknown({"listen"})
    metrics_address = metrics.get("listen", str, None, ip_address)

    mgmt_endpoint = read_mgmt(top)
    console = read_console(top)
    tables = read_tables(top)
    virtual_storages, access, customers, pairs = (
        tables.virtual_storages, tables.access, tables.customers, tables.pairs)
    routes = tables.routes
    nbd, nbd_volumes = _read_nbd(top, log_address, routes, pairs, access, customers)
    nbd_targets = {}
    for i, r in enumerate(top.tables("nbd_target")):
        r.unknown({"target_wwn", "target_lun", "url"})
        key = (r.get("target_wwn", str, check=parse_wwn),
               r.get("target_lun", int, check=non_negative))
        if key in nbd_targets:
            raise ConfigError(f"nbd_target[{i}]: a second NBD server for the same target LUN")
        nbd_targets[key] = r.get("url", str, check=_nbd_url)
    settings = EdgeSettings(me=log_address, pairs=pairs, routes=routes, bandwidth=customers,
                            receiver=receiver_config, window_bytes=window, rto=rto,
                            rto_max=rto_max, max_datagram_body=max_datagram - HEADER_SIZE,
                            ttl=ttl, group_policy=group_policy, failure_timeout=failure_timeout,
                            failover_timeout=failover_timeout)
    return EdgeConfig(id=name, log=log_address, fcip=fcip, data_dir=data_dir, settings=settings,
                      log_mode=mode, segment_size=segment_size, group_quota=group_quota,
                      receive_buffer=buffers["receive_buffer"], send_buffer=buffers["send_buffer"],
                      first_burst=first_burst, exchange_timeout=exchange_timeout,
                      metrics=metrics_address, virtual_storages=virtual_storages, access=access,
                      nbd=nbd, nbd_volumes=nbd_volumes, nbd_targets=nbd_targets,
                      mgmt=mgmt_endpoint, console=console)


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
    virtual_storages = []
    for i, r in enumerate(top.tables("virtual_storage")):
        r.unknown({"wwn", "partner_wwn", "partner_edge"})
        wwn = r.get("wwn", str, check=parse_wwn)
        virtual_storages.append(VirtualStorageEntry(
            wwn=wwn, partner_wwn=r.get("partner_wwn", str, wwn, parse_wwn),
            partner_edge_id=r.get("partner_edge", str, "")))
    access = set()
    for i, r in enumerate(top.tables("access")):
        r.unknown({"virtual_wwn", "storage_wwn"})
        access.add((r.get("storage_wwn", str, check=parse_wwn),
                    r.get("virtual_wwn", str, check=parse_wwn)))
    customers = {}
    for i, r in enumerate(top.tables("customer")):
        r.unknown({"id", "bandwidth"})
        customers[r.get("id", str)] = float(r.get("bandwidth", (int, str), 0, parse_size))
    pairs = []
    for i, r in enumerate(top.tables("pair")):
        r.unknown({"source_wwn", "source_lun", "target_wwn", "target_lun", "group", "customer"})
        customer = r.get("customer", str, "")
        if customer and customer not in customers:
            raise ConfigError(f"pair[{i}].customer: {customer!r} is not a [[customer]] id")
        pairs.append(PairEntry(r.get("source_wwn", str, check=parse_wwn),
                               r.get("source_lun", int, check=non_negative),
                               r.get("target_wwn", str, check=parse_wwn),
                               r.get("target_lun", int, check=non_negative),
                               r.get("group", int, check=in_range(0, 0xFFFFFFFF)), customer))
    return Tables(virtual_storages, access, customers, pairs, read_routes(top))


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


def _read_nbd(top: Reader, me: Address, routes, pairs: list[PairEntry],
              access: set[tuple[int, int]], customers: dict):
    """``[nbd]`` and the ``[[nbd_volume]]`` tables, checked against routes, pairs, access."""
    volumes_raw = top.tables("nbd_volume")
    if "nbd" not in top.table:
        if volumes_raw:
            raise ConfigError("nbd_volume[0]: an [nbd] table (listen) is needed to serve "
                              "NBD volumes")
        return None, []
    nbd = Reader(top.get("nbd", dict), "nbd.")
    nbd.unknown({"listen", "read_timeout"})
    front = NbdFront(listen=nbd.get("listen", str, ip_address(DEFAULT_NBD_LISTEN), ip_address),
                     read_timeout=nbd.get("read_timeout", float, 10.0,
                                          in_range(0.1, 3600.0, " s")))
    attached = {storage for storage, _ in access}
    targets = {(p.target_wwn, p.target_lun): f"pair[{i}]" for i, p in enumerate(pairs)}
    names, sources = {}, {}
    volumes = []
    for i, r in enumerate(volumes_raw):
        where = f"nbd_volume[{i}]"
        table = r.table
        r.unknown({"name", "capacity", "source_wwn", "source_lun", "target_wwn", "target_lun",
                   "group", "customer"})
        name = r.get("name", str, check=_export_name)
        if name in names:
            raise ConfigError(f"{where}.name: {name!r} is already {names[name]}'s name")
        names[name] = where
        capacity = r.get("capacity", (int, str), check=_capacity)
        customer = r.get("customer", str, "")
        if customer and customer not in customers:
            raise ConfigError(f"{where}.customer: {customer!r} is not a [[customer]] id")
        pair = PairEntry(r.get("source_wwn", str, check=parse_wwn),
                         r.get("source_lun", int, check=non_negative),
                         r.get("target_wwn", str, check=parse_wwn),
                         r.get("target_lun", int, check=non_negative),
                         r.get("group", int, check=in_range(0, 0xFFFFFFFF)), customer)
        source = f"{table['source_wwn']} LUN {pair.source_lun}"
        target = f"{table['target_wwn']} LUN {pair.target_lun}"
        if pair.source_wwn in attached:
            raise ConfigError(f"{where}.source_wwn: {table['source_wwn']} is an attached "
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
        if routes.route(pair.source_wwn, pair.target_wwn) is None:
            raise ConfigError(f"{where}: no [[route]] for source_wwn {table['source_wwn']} -> "
                              f"target_wwn {table['target_wwn']}; add one whose path starts "
                              f"at this edge ({me})")
        if routes.next_hop(pair.source_wwn, pair.target_wwn, me) is None:
            raise ConfigError(f"{where}: the [[route]] for {table['source_wwn']} -> "
                              f"{table['target_wwn']} does not start at this edge ({me}): its "
                              f"path must begin with edge.log")
        volumes.append(NbdVolume(name, capacity, pair))
    return front, volumes

