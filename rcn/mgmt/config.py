"""The management server's configuration file (TOML). Example (every key; only
``[mgmt] id`` is required; it is ``SCHEMA.example()``, the keys' one table)::

    [mgmt]
    id = "mgmt"                               # name in logs (required)
    database = "mgmt.sqlite"                  # the settings (SQLite; relative: to this file)
    http = "tcp:47180:interface=127.0.0.1"    # REST API (/api/v1), /openapi.json, /metrics and the
                                              # web dashboard (/)
    amp = "tcp:47100:interface=127.0.0.1"     # where devices connect (DESIGN.md 3.4)
    operator_token_file = "operator.token"    # the operator's API token: read from this file, or
                                              # made and written there (mode 0600) when the database
                                              # has none
    history = 300                             # reports kept per device (one a second)
    stale_after = 5.0                         # seconds without a report: the device is stale
                                              # (routes avoid it until it reports again)

    [console]                                 # the operator's console (show ..., help); omit: none
    serial = "pty"                            # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/mgmt.console"        # ... and a symlink to it here (serial = "pty" only;
                                              # relative: to the working directory)
    speed = 115200                            # a serial port's speed
    tcp = "tcp:2304:interface=127.0.0.1"      # and/or a TCP listener (console servers)

Errors name the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rcn.config import (CONSOLE, REQUIRED, ConfigError, ConsoleConfig, Key, Schema, Table,
                        in_range, load_toml, not_empty, read_console, server_endpoint)

__all__ = ["ConfigError", "MgmtConfig", "SCHEMA", "load_config", "parse_config", "render"]


@dataclass(frozen=True)
class MgmtConfig:
    id: str
    database: str
    http: str                        # server endpoint strings
    amp: str
    operator_token_file: str
    history: int = 300
    stale_after: float = 5.0
    console: ConsoleConfig | None = None


SCHEMA = Schema(
    Table("mgmt", (
        Key("id", str, REQUIRED, not_empty, "name in logs", example="mgmt"),
        Key("database", str, "mgmt.sqlite", not_empty,
            help="the settings (SQLite; relative: to this file)"),
        Key("http", str, "tcp:47180:interface=127.0.0.1", server_endpoint, "REST API (/api/v1), "
            "/openapi.json, /metrics and the web dashboard (/)"),
        Key("amp", str, "tcp:47100:interface=127.0.0.1", server_endpoint, "where devices "
            "connect (DESIGN.md 3.4)"),
        Key("operator_token_file", str, "operator.token", not_empty, help="the operator's API "
            "token: read from this file, or made and written there (mode 0600) when the "
            "database has none"),
        Key("history", int, 300, in_range(2, 86400), "reports kept per device (one a second)"),
        Key("stale_after", float, 5.0, in_range(0.5, 3600.0), "seconds without a report: the "
            "device is stale (routes avoid it until it reports again)")), required=True),
    CONSOLE.showing("the operator's console (show ..., help); omit: none",
                    pty_link="/run/rcn/mgmt.console", tcp="tcp:2304:interface=127.0.0.1"))


def render(doc: dict) -> str:
    """The server's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def load_config(path: str) -> MgmtConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> MgmtConfig:
    top, v = SCHEMA.read(doc)
    m = v["mgmt"]
    return MgmtConfig(id=m["id"], database=os.path.join(base_dir, m["database"]), http=m["http"],
                      amp=m["amp"],
                      operator_token_file=os.path.join(base_dir, m["operator_token_file"]),
                      history=m["history"], stale_after=m["stale_after"],
                      console=read_console(top))
