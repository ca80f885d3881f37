"""The management server's configuration file (TOML). Example (every key; only
``[mgmt] id`` is required; it is ``SCHEMA.example()``, the keys' one table)::

    [mgmt]
    id = "mgmt"                               # name in logs (required)
    database = "mgmt.sqlite"                  # the settings (SQLite; relative: to this file)
    http = "tcp:47180:interface=127.0.0.1"    # REST API (/api/v1), /openapi.json, /metrics and the
                                              # web dashboard (/)
    amp = "tcp:47100:interface=127.0.0.1"     # where devices connect (DESIGN.md 3.4); loopback
                                              # only: the channel carries the log-transfer keys in
                                              # clear until it runs under mutual TLS (issue 18)
    operator_token_file = "operator.token"    # the operator's API token: read from this file, or
                                              # made and written there (mode 0600) when the database
                                              # has none
    history = 300                             # reports kept per device (one a second)
    stale_after = 5.0                         # seconds without a report: the device is stale
                                              # (routes avoid it until it reports again)

    [keys]                                    # log-transfer keys (DESIGN.md 9; rcn.mgmt.keys)
    rotate_every = 86400.0                    # seconds between rotations of each link's and group's
                                              # key; 0: only on demand (rcn key rotate)
    overlap = 60.0                            # seconds a link's old key is still accepted after the
                                              # new one sends
    group_overlap = 86400.0                   # the same for a group's old key (entries kept at a
                                              # source edge stay sealed under the epoch they were
                                              # logged with)
    warn_after = 10.0                         # seconds after a rotation before the server warns
                                              # (naming them) about devices that have not
                                              # acknowledged the new key: it sends only once all
                                              # have (the old name activate_after is read as this,
                                              # with a warning)

    [console]                                 # the operator's console (show ..., help); omit: none
    serial = "pty"                            # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/mgmt.console"        # ... and a symlink to it here (serial = "pty" only;
                                              # relative: to the working directory)
    speed = 115200                            # a serial port's speed
    tcp = "tcp:2304:interface=127.0.0.1"      # and/or a TCP listener (console servers)

Errors name the file and the key.

``[keys] activate_after`` (before issue 17's review: a new key sent after it even when a
device had not acknowledged it) is still read, as ``warn_after``, with a logged
deprecation warning; giving both is an error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from twisted.logger import Logger

from rcn.config import (CONSOLE, REQUIRED, ConfigError, ConsoleConfig, Key, Schema, Table,
                        in_range, load_toml, not_empty, read_console, server_endpoint)
from rcn.mgmt.keys import KeyPolicy

__all__ = ["ConfigError", "MgmtConfig", "SCHEMA", "load_config", "parse_config", "render",
           "loopback_endpoint"]
_DAY = 86400.0
_log = Logger()


def loopback_endpoint(text: str) -> str:
    """The AMP listener: a server endpoint on a loopback interface only. The management
    channel carries log-transfer keys in clear until it runs under mutual TLS (issue 18)."""
    text = server_endpoint(text)
    fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", text)]
    host = next((f.partition("=")[2] for f in fields if f.startswith("interface=")), None)
    try:
        loopback = host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{text!r} listens on {host or 'every interface'}: the management "
                         f"channel carries log-transfer keys in clear until it runs under "
                         f"mutual TLS (issue 18), so rcn-mgmt listens for devices on a "
                         f"loopback address only (e.g. tcp:47100:interface=127.0.0.1)")
    return text


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
    keys: KeyPolicy = field(default_factory=KeyPolicy)


SCHEMA = Schema(
    Table("mgmt", (
        Key("id", str, REQUIRED, not_empty, "name in logs", example="mgmt"),
        Key("database", str, "mgmt.sqlite", not_empty,
            help="the settings (SQLite; relative: to this file)"),
        Key("http", str, "tcp:47180:interface=127.0.0.1", server_endpoint, "REST API (/api/v1), "
            "/openapi.json, /metrics and the web dashboard (/)"),
        Key("amp", str, "tcp:47100:interface=127.0.0.1", loopback_endpoint, "where devices "
            "connect (DESIGN.md 3.4); loopback only: the channel carries the log-transfer "
            "keys in clear until it runs under mutual TLS (issue 18)"),
        Key("operator_token_file", str, "operator.token", not_empty, help="the operator's API "
            "token: read from this file, or made and written there (mode 0600) when the "
            "database has none"),
        Key("history", int, 300, in_range(2, 86400), "reports kept per device (one a second)"),
        Key("stale_after", float, 5.0, in_range(0.5, 3600.0), "seconds without a report: the "
            "device is stale (routes avoid it until it reports again)")), required=True),
    Table("keys", (
        Key("rotate_every", float, _DAY, in_range(0.0, 365 * _DAY), "seconds between "
            "rotations of each link's and group's key; 0: only on demand (rcn key rotate)"),
        Key("overlap", float, 60.0, in_range(1.0, 30 * _DAY), "seconds a link's old key is "
            "still accepted after the new one sends"),
        Key("group_overlap", float, _DAY, in_range(1.0, 365 * _DAY), "the same for a "
            "group's old key (entries kept at a source edge stay sealed under the epoch "
            "they were logged with)"),
        Key("warn_after", float, 10.0, in_range(0.1, 3600.0), "seconds after a rotation "
            "before the server warns (naming them) about devices that have not acknowledged "
            "the new key: it sends only once all have (the old name activate_after is read "
            "as this, with a warning)")),
        "log-transfer keys (DESIGN.md 9; rcn.mgmt.keys)"),
    CONSOLE.showing("the operator's console (show ..., help); omit: none",
                    pty_link="/run/rcn/mgmt.console", tcp="tcp:2304:interface=127.0.0.1"))


def render(doc: dict) -> str:
    """The server's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def load_config(path: str) -> MgmtConfig:
    return load_toml(path, parse_config)


def _renamed(doc: dict) -> dict:
    """``doc`` with ``[keys] activate_after`` read as ``warn_after`` (a warning)."""
    keys = doc.get("keys")
    if not isinstance(keys, dict) or "activate_after" not in keys:
        return doc
    if "warn_after" in keys:
        raise ConfigError("keys.activate_after: the old name of keys.warn_after; give only "
                          "warn_after")
    _log.warn("[keys] activate_after is deprecated and read as warn_after: a new key no "
              "longer sends after it, only once every device that needs it has acknowledged "
              "it; after warn_after seconds the server warns, naming the devices still "
              "missing")
    return {**doc, "keys": {("warn_after" if k == "activate_after" else k): value
                            for k, value in keys.items()}}


def parse_config(doc: dict, base_dir: str = ".") -> MgmtConfig:
    top, v = SCHEMA.read(_renamed(doc))
    m = v["mgmt"]
    return MgmtConfig(id=m["id"], database=os.path.join(base_dir, m["database"]), http=m["http"],
                      amp=m["amp"],
                      operator_token_file=os.path.join(base_dir, m["operator_token_file"]),
                      history=m["history"], stale_after=m["stale_after"],
                      console=read_console(top), keys=KeyPolicy(**v["keys"]))
