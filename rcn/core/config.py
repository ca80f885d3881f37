"""The core device's configuration file (TOML).

Example (every key shown; ``core.id``, ``core.listen`` and one route through
``core.listen`` are required)::

    [core]
    id = "core1"                          # name in logs
    listen = "127.0.0.1:47002"            # log-transfer UDP address (IP:port). It is also
                                          # how the paths name this core: it must appear in
                                          # at least one [[route]] path, spelt the same way
    receive_buffer = "16MiB"              # kernel receive buffer (bytes or KiB/MiB/GiB)
    send_buffer = "4MiB"                  # kernel send buffer

    [batch]                               # batch forwarding (per next hop)
    enabled = true                        # false: every entry is forwarded at once, alone
    max_delay_ms = 1.0                    # the longest an entry waits for company (0..1000)
    max_bytes = 65000                     # largest BATCH datagram (272..65507)
    max_entries = 256                     # most entries in one BATCH (1..4096)

    [metrics]                             # Prometheus text format at GET /metrics;
    listen = "127.0.0.1:47302"            # omit the table (or the key) to serve none

    [[route]]                             # table 408; one per (source WWN, target WWN)
    source_wwn = "50:0a:09:80:00:00:00:01"
    target_wwn = "50:0a:09:80:00:00:00:02"
    path = ["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"]
                                          # source edge, cores..., target edge

Every address in a path is an IP address and port: the relay sends datagrams to
them as they are written (no name lookup). The neighbours of this core in a
path must be of ``listen``'s address family (one socket sends to both).

Errors name the file and the key (``batch.max_bytes: ...``, ``route[1].path[0]: ...``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.frames.logentry import MAX_BATCH
from rcn.config import (ConfigError, ConsoleConfig, Reader, in_range, ip_address, load_toml,
                        parse_size, read_console, read_mgmt, read_routes)
from rcn.core.relay import MIN_BATCH_BYTES, BatchPolicy
from rcn.logxfer.protocol import (DEFAULT_RECEIVE_BUFFER, DEFAULT_SEND_BUFFER,
                                  MAX_UDP_PAYLOAD)
from rcn.logxfer.routes import Address, RouteTable

__all__ = ["ConfigError", "CoreConfig", "load_config", "parse_config"]

MAX_SOCKET_BUFFER = 1 << 30


@dataclass(frozen=True)
class CoreConfig:
    id: str
    listen: Address
    receive_buffer: int
    send_buffer: int
    batch: BatchPolicy
    metrics: Address | None
    routes: RouteTable
    mgmt: str | None = None          # the management server's AMP endpoint ("tcp:HOST:PORT")
    console: ConsoleConfig | None = None


def _buffer(value) -> int:
    size = parse_size(value)
    if not 4096 <= size <= MAX_SOCKET_BUFFER:
        raise ValueError(f"{size} bytes is outside 4KiB..1GiB")
    return size


def _family(address: Address) -> int:
    return ipaddress.ip_address(address.host).version


def load_config(path: str) -> CoreConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> CoreConfig:
    top = Reader(doc, "")
    top.unknown({"core", "batch", "metrics", "route", "mgmt", "console"})

    core = Reader(top.get("core", dict), "core.")
    core.unknown({"id", "listen", "receive_buffer", "send_buffer"})
    name = core.get("id", str)
    if not name.strip():
        raise ConfigError("core.id: empty")
    listen = core.get("listen", str, check=ip_address)
    receive_buffer = core.get("receive_buffer", (int, str), DEFAULT_RECEIVE_BUFFER, _buffer)
    send_buffer = core.get("send_buffer", (int, str), DEFAULT_SEND_BUFFER, _buffer)

    batch = Reader(top.get("batch", dict, {}), "batch.")
    batch.unknown({"enabled", "max_delay_ms", "max_bytes", "max_entries"})
    policy = BatchPolicy(
        enabled=batch.get("enabled", bool, True),
        max_delay=batch.get("max_delay_ms", float, 1.0, in_range(0.0, 1000.0, " ms")) / 1000.0,
        max_bytes=batch.get("max_bytes", int, 65000, in_range(MIN_BATCH_BYTES, MAX_UDP_PAYLOAD)),
        max_entries=batch.get("max_entries", int, 256, in_range(1, MAX_BATCH)))

    metrics_table = Reader(top.get("metrics", dict, {}), "metrics.")
    metrics_table.unknown({"listen"})
    metrics = metrics_table.get("listen", str, None, ip_address)

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
    return CoreConfig(id=name, listen=listen, receive_buffer=receive_buffer,
                      send_buffer=send_buffer, batch=policy, metrics=metrics, routes=table,
                      mgmt=mgmt_endpoint, console=read_console(top))
