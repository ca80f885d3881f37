"""The management server's configuration file (TOML). Example (every key; only
``[mgmt] id`` is required)::

    [mgmt]
    id = "mgmt"                           # name in logs
    database = "mgmt.sqlite"              # the settings (SQLite; relative: to this file)
    http = "127.0.0.1:47180"              # REST API (/api/v1), /openapi.json, /metrics and
                                          # the web dashboard (/)
    amp = "127.0.0.1:47100"               # where devices connect (DESIGN.md 3.4)
    operator_token_file = "operator.token"   # the operator's API token: read from this
                                          # file, or made and written there (mode 0600)
                                          # when the database has none
    history = 300                         # reports kept per device (one a second)
    stale_after = 5.0                     # seconds without a report: the device is stale
                                          # (routes avoid it until it reports again)

    [console]                             # the operator's console (show ..., help); omit: none
    serial = "pty"                        # a serial port ("/dev/ttyS1"), or "pty": a
                                          # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/mgmt.console"    # ... and a symlink to it here (serial = "pty"
                                          # only; relative: to the working directory)
    speed = 115200                        # a serial port's speed
    tcp = "127.0.0.1:2304"                # and/or a TCP port (console servers)

Errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rcn.config import (ConfigError, ConsoleConfig, Reader, in_range, ip_address, load_toml,
                        read_console)
from rcn.logxfer.routes import Address

__all__ = ["ConfigError", "MgmtConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class MgmtConfig:
    id: str
    database: str
    http: Address
    amp: Address
    operator_token_file: str
    history: int = 300
    stale_after: float = 5.0
    console: ConsoleConfig | None = None


def load_config(path: str) -> MgmtConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> MgmtConfig:
    top = Reader(doc, "")
    top.unknown({"mgmt", "console"})
    m = Reader(top.get("mgmt", dict), "mgmt.")
    m.unknown({"id", "database", "http", "amp", "operator_token_file", "history", "stale_after"})
    name = m.get("id", str)
    if not name.strip():
        raise ConfigError("mgmt.id: empty")
    return MgmtConfig(
        id=name,
        database=os.path.join(base_dir, m.get("database", str, "mgmt.sqlite")),
        http=m.get("http", str, "127.0.0.1:47180", ip_address),
        amp=m.get("amp", str, "127.0.0.1:47100", ip_address),
        operator_token_file=os.path.join(base_dir, m.get("operator_token_file", str,
                                                         "operator.token")),
        history=m.get("history", int, 300, in_range(2, 86400)),
        stale_after=float(m.get("stale_after", (int, float), 5.0, in_range(0.5, 3600.0))),
        console=read_console(top))
