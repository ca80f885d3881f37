"""The core device's configuration file (TOML).

Example (every key shown; ``core.id``, ``core.listen`` and one route through
``core.listen`` are required; it is ``SCHEMA.example()``, the keys' one table)::

    [core]
    id = "core1"                              # name in logs (required)
    listen = "127.0.0.1:47002"                # log-transfer UDP address, IP:PORT (not an endpoint
                                              # string: it is this core's name in the paths, so at
                                              # least one [[route]] path must contain it, spelt the
                                              # same way) (required)
    receive_buffer = "16MiB"                  # kernel receive buffer (SO_RCVBUFFORCE as root, else
                                              # SO_RCVBUF, capped by net.core.rmem_max)
    send_buffer = "4MiB"                      # kernel send buffer

    [batch]                                   # batch forwarding, per next hop
    enabled = true                            # false: every entry leaves at once, alone
    max_delay_ms = 1.0                        # longest an entry waits for company, 0..1000
    max_bytes = 65000                         # largest BATCH datagram, 272..65467
    max_entries = 256                         # most entries in one BATCH, 1..4096

    [metrics]
    listen = "tcp:47302:interface=127.0.0.1"  # Prometheus text format at GET /metrics; omit: none

    [mgmt]                                    # the management server (rcn-mgmt); omit: routes come
                                              # from this file only
    connect = "tcp:127.0.0.1:47100"           # the management server's AMP endpoint

    [seal]                                    # log-transfer keys and sealing
    mode = "aes-256-gcm"                      # log transfer sealed (DESIGN.md 9): a hop tag on
                                              # every datagram and the customers' data sealed end to
                                              # end; "none" turns both off, for debugging only
                                              # (logged at start; sealed neighbours refuse this
                                              # device's datagrams)
    keys = "keys/core1.keys"                  # key file (0600; `link`/`group` lines, see the
                                              # README): read at start; with [mgmt] the keys the
                                              # server sends are kept here for a restart (relative:
                                              # to the working directory)

    [console]                                 # the operator's console; omit: none
    serial = "pty"                            # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/core1.console"       # ... and a symlink to it here (serial = "pty" only;
                                              # relative: to the working directory)
    speed = 115200                            # a serial port's speed
    tcp = "tcp:2303:interface=127.0.0.1"      # and/or a TCP listener (console servers)

    [[route]]                                 # table 408; one per (source WWN, target WWN)
    source_wwn = "50:0a:09:80:00:00:00:01"
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"]
                                              # source edge, cores..., target edge: log-transfer
                                              # addresses (UDP HOST:PORT, IP addresses)

Every address in a path is an IP address and port: the relay sends datagrams to
them as they are written (no name lookup). The neighbours of this core in a
path must be of ``listen``'s address family (one socket sends to both).

Errors name the file and the key (``batch.max_bytes: ...``, ``route[1].path[0]: ...``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.frames.logentry import MAX_BATCH
from rcn.config import (CONSOLE, MGMT, REQUIRED, ROUTE, SEAL, ConfigError, ConsoleConfig, Key,
                        Schema, SealConfig, Table, in_range, ip_address, load_toml, not_empty,
                        parse_size, read_console, read_mgmt, read_routes, read_seal,
                        server_endpoint, size_text)
from rcn.core.relay import MIN_BATCH_BYTES, BatchPolicy
from rcn.logxfer.protocol import (DEFAULT_RECEIVE_BUFFER, DEFAULT_SEND_BUFFER,
                                  MAX_ENTRY_DATAGRAM)
from rcn.logxfer.routes import Address, RouteTable

__all__ = ["ConfigError", "CoreConfig", "SCHEMA", "load_config", "parse_config", "render"]

MAX_SOCKET_BUFFER = 1 << 30


@dataclass(frozen=True)
class CoreConfig:
    id: str
    listen: Address
    receive_buffer: int
    send_buffer: int
    batch: BatchPolicy
    metrics: str | None              # a server endpoint string
    routes: RouteTable
    mgmt: str | None = None          # the management server's AMP endpoint ("tcp:HOST:PORT")
    console: ConsoleConfig | None = None
    seal: SealConfig = SealConfig()


def _buffer(value) -> int:
    size = parse_size(value)
    if not 4096 <= size <= MAX_SOCKET_BUFFER:
        raise ValueError(f"{size} bytes is outside 4KiB..1GiB")
    return size


def _family(address: Address) -> int:
    return ipaddress.ip_address(address.host).version


SCHEMA = Schema(
    Table("core", (
        Key("id", str, REQUIRED, not_empty, "name in logs", example="core1"),
        Key("listen", str, REQUIRED, ip_address, "log-transfer UDP address, IP:PORT (not an "
            "endpoint string: it is this core's name in the paths, so at least one [[route]] "
            "path must contain it, spelt the same way)", example="127.0.0.1:47002"),
        Key("receive_buffer", (int, str), size_text(DEFAULT_RECEIVE_BUFFER), _buffer,
            "kernel receive buffer (SO_RCVBUFFORCE as root, else SO_RCVBUF, capped by "
            "net.core.rmem_max)"),
        Key("send_buffer", (int, str), size_text(DEFAULT_SEND_BUFFER), _buffer,
            "kernel send buffer")), required=True),
    Table("batch", (
        Key("enabled", bool, True, help="false: every entry leaves at once, alone"),
        Key("max_delay_ms", float, 1.0, in_range(0.0, 1000.0, " ms"), "longest an entry waits "
            "for company, 0..1000"),
        Key("max_bytes", int, 65000, in_range(MIN_BATCH_BYTES, MAX_ENTRY_DATAGRAM), "largest BATCH "
            f"datagram, {MIN_BATCH_BYTES}..{MAX_ENTRY_DATAGRAM}"),
        Key("max_entries", int, 256, in_range(1, MAX_BATCH), f"most entries in one BATCH, "
            f"1..{MAX_BATCH}")), "batch forwarding, per next hop"),
    Table("metrics", (
        Key("listen", str, None, server_endpoint, "Prometheus text format at GET /metrics; "
            "omit: none", example="tcp:47302:interface=127.0.0.1"),)),
    MGMT.showing("the management server (rcn-mgmt); omit: routes come from this file only"),
    SEAL.showing(keys="keys/core1.keys"),
    CONSOLE.showing(pty_link="/run/rcn/core1.console", tcp="tcp:2303:interface=127.0.0.1"),
    ROUTE)


def render(doc: dict) -> str:
    """A core's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def load_config(path: str) -> CoreConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> CoreConfig:
    top, v = SCHEMA.read(doc)
    core, batch = v["core"], v["batch"]
    listen = core["listen"]
    policy = BatchPolicy(enabled=batch["enabled"], max_delay=batch["max_delay_ms"] / 1000.0,
                         max_bytes=batch["max_bytes"], max_entries=batch["max_entries"])
    mgmt_endpoint = read_mgmt(top)
    table = read_routes(top)
    for i, route in enumerate(table):
        path = route.path
        if listen in path:
            at = path.index(listen)
            for j in (at - 1, at + 1):
                if 0 <= j < len(path) and _family(path[j]) != _family(listen):
                    raise ConfigError(f"route[{i}].path[{j}]: {path[j]} is not of core.listen's "
                                      f"address family (IPv{_family(listen)})")
    if mgmt_endpoint is None and not any(table.on_path(r.source_wwn, r.target_wwn, listen)
                                         for r in table):
        raise ConfigError(f"core.listen: {listen} is on no [[route]] path -- a core relays only "
                          f"along paths that name it (spelt as in core.listen)")
    return CoreConfig(id=core["id"], listen=listen, receive_buffer=core["receive_buffer"],
                      send_buffer=core["send_buffer"], batch=policy, metrics=v["metrics"]["listen"],
                      routes=table, mgmt=mgmt_endpoint, console=read_console(top),
                      seal=read_seal(top, mgmt_endpoint is not None))
