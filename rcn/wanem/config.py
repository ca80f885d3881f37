"""``rcn-wanem``'s configuration file (TOML). Example (``[[link]]`` at least once; it is
``SCHEMA.example()``, the keys' one table)::

    [wanem]
    id = "wanem1"                             # required

    [console]                                 # SCPI over a serial port and/or TCP (5025: the usual
                                              # SCPI port)
    serial = "pty"                            # a serial port ("/dev/ttyS1"), or "pty": a
                                              # pseudo-terminal of its own (its name is logged) ...
    pty_link = "/run/rcn/wanem.console"       # ... and a symlink to it here (serial = "pty" only;
                                              # relative: to the working directory)
    speed = 115200                            # a serial port's speed
    tcp = "tcp:5025:interface=127.0.0.1"      # and/or a TCP listener (console servers)

    [[link]]                                  # LINK1, LINK2, ... in order
    a = "127.0.0.1:47011"                     # the A side sends here (UDP HOST:PORT) ...
    b = "127.0.0.1:47002"                     # ... and it goes on to B
    b_from = "127.0.0.1:47012"                # B sees it come from here and answers to it
    a_to = "127.0.0.1:47001"                  # B's answers go to A here (default: A's last sender)
    seed = 1
    delay_ms = 20.0
    jitter_ms = 2.0
    loss = 0.01                               # fractions
    duplicate = 0.0
    reorder = 0.0
    rate = "100MiB"                           # bytes/s (0: no limit)
    queue = "1MiB"                            # the rate limiter's queue, bytes

A link's addresses are UDP ``HOST:PORT`` (the log-transfer channel's addresses, which
Twisted has no endpoint string for); the SCPI console's ``tcp`` is an endpoint string.
Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcn.config import (CONSOLE, REQUIRED, ConfigError, ConsoleConfig, Key, Reader, Schema,
                        Table, ip_address, load_toml, parse_size, read_console)
from rcn.wanem.link import LinkSpec, check_setting


@dataclass(frozen=True)
class WanemConfig:
    id: str
    links: tuple[LinkSpec, ...]
    console: ConsoleConfig | None = None


#: a [[link]] table's impairment keys: key -> (setting, scale to the setting's unit)
SETTING_KEYS = {"delay_ms": ("delay", 1e-3), "jitter_ms": ("jitter", 1e-3), "loss": ("loss", 1.0),
                "duplicate": ("duplicate", 1.0), "reorder": ("reorder", 1.0),
                "rate": ("rate", None), "queue": ("queue_limit", None)}
_SETTING_HELP = {"loss": "fractions", "rate": "bytes/s (0: no limit)",
                 "queue": "the rate limiter's queue, bytes"}
_SETTING_EXAMPLE = {"delay_ms": 20.0, "jitter_ms": 2.0, "loss": 0.01, "duplicate": 0.0,
                    "reorder": 0.0, "rate": "100MiB", "queue": "1MiB"}


def _setting(name: str, scale: float | None):
    """A key's check: sizes (``"100MiB"``) or numbers scaled to the setting's unit, then
    the link's own range check."""
    def check(value):
        return check_setting(name, parse_size(value) if scale is None else value * scale)
    return check


_SETTINGS = tuple(Key(key, (int, str) if scale is None else (int, float), None,
                      _setting(name, scale), _SETTING_HELP.get(key, ""),
                      example=_SETTING_EXAMPLE[key])
                  for key, (name, scale) in SETTING_KEYS.items())

SCHEMA = Schema(
    Table("wanem", (Key("id", str, REQUIRED, example="wanem1"),), required=True),
    CONSOLE.showing("SCPI over a serial port and/or TCP (5025: the usual SCPI port)",
                    pty_link="/run/rcn/wanem.console", tcp="tcp:5025:interface=127.0.0.1"),
    Table("link", (
        Key("a", str, REQUIRED, ip_address, "the A side sends here (UDP HOST:PORT) ...",
            example="127.0.0.1:47011"),
        Key("b", str, REQUIRED, ip_address, "... and it goes on to B", example="127.0.0.1:47002"),
        Key("b_from", str, None, ip_address, "B sees it come from here and answers to it",
            example="127.0.0.1:47012"),
        Key("a_to", str, None, ip_address, "B's answers go to A here (default: A's last "
            "sender)", example="127.0.0.1:47001"),
        Key("seed", int, None, example=1),
        *_SETTINGS), "LINK1, LINK2, ... in order", array=True, required=True))


def render(doc: dict) -> str:
    """The emulator's file from ``{table: {key: value}}`` (what ``rcn lab`` writes)."""
    return SCHEMA.render(doc)


def load_config(path: str) -> WanemConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> WanemConfig:
    top, v = SCHEMA.read(doc)
    links = []
    for r in v["link"]:
        a, b, b_from, a_to = r["a"], r["b"], r["b_from"], r["a_to"]
        settings = {SETTING_KEYS[key][0]: r[key] for key in SETTING_KEYS if r[key] is not None}
        links.append(LinkSpec(a_port=a.port, b_address=(b.host, b.port), interface=a.host,
                              b_port=b_from.port if b_from else 0,
                              a_address=(a_to.host, a_to.port) if a_to else None,
                              seed=r["seed"], settings=settings))
    if not links:
        raise ConfigError("link: at least one [[link]] is needed")
    return WanemConfig(id=v["wanem"]["id"], links=tuple(links), console=read_console(top))


def read_link_settings(r: Reader, where: str) -> dict:
    """The impairment keys of one link table (:data:`SETTING_KEYS`) as link settings;
    ConfigError naming the key for a value out of range (``r`` knows its path: ``where``
    is the lab's old argument, unused)."""
    values = {key.name: key.read(r) for key in _SETTINGS}
    return {SETTING_KEYS[key][0]: value for key, value in values.items() if value is not None}
