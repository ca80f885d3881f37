"""``rcn-wanem``'s configuration file (TOML). Example (``[[link]]`` at least once)::

    [wanem]
    id = "wanem1"

    [console]                             # SCPI over a serial port and/or TCP
    serial = "/dev/ttyS2"                 # or "pty": a pty of its own, with pty_link =
                                          # "PATH" for a symlink to it
    speed = 115200
    tcp = "127.0.0.1:5025"                # the usual SCPI-over-TCP port

    [[link]]                              # LINK1
    a = "127.0.0.1:47011"                 # the A side sends here ...
    b = "127.0.0.1:47002"                 # ... and it goes on to B
    b_from = "127.0.0.1:47012"            # B sees it come from here and answers to it
    a_to = "127.0.0.1:47001"              # B's answers go to A here (default: A's last sender)
    seed = 1
    delay_ms = 20.0
    jitter_ms = 2.0
    loss = 0.01                           # fractions
    duplicate = 0.0
    reorder = 0.0
    rate = "100MiB"                       # bytes/s (0: no limit)
    queue = "1MiB"                        # the rate limiter's queue, bytes

Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcn.config import (ConfigError, ConsoleConfig, Reader, ip_address, load_toml, parse_size,
                        read_console)
from rcn.wanem.link import LinkSpec, check_setting


@dataclass(frozen=True)
class WanemConfig:
    id: str
    links: tuple[LinkSpec, ...]
    console: ConsoleConfig | None = None


def load_config(path: str) -> WanemConfig:
    return load_toml(path, parse_config)


def parse_config(doc: dict, base_dir: str = ".") -> WanemConfig:
    top = Reader(doc, "")
    top.unknown({"wanem", "console", "link"})
    name = Reader(top.get("wanem", dict), "wanem.").get("id", str)
    links = []
    for i, r in enumerate(top.tables("link")):
        r.unknown({"a", "b", "b_from", "a_to", "seed", *SETTING_KEYS})
        a = r.get("a", str, check=ip_address)
        b = r.get("b", str, check=ip_address)
        b_from = r.get("b_from", str, None, ip_address)
        a_to = r.get("a_to", str, None, ip_address)
        settings = read_link_settings(r, f"link[{i}].")
        links.append(LinkSpec(a_port=a.port, b_address=(b.host, b.port), interface=a.host,
                              b_port=b_from.port if b_from else 0,
                              a_address=(a_to.host, a_to.port) if a_to else None,
                              seed=r.get("seed", int, None), settings=settings))
    if not links:
        raise ConfigError("link: at least one [[link]] is needed")
    return WanemConfig(id=name, links=tuple(links), console=read_console(top))


#: a [[link]] table's impairment keys: key -> (setting, scale to the setting's unit)
SETTING_KEYS = {"delay_ms": ("delay", 1e-3), "jitter_ms": ("jitter", 1e-3), "loss": ("loss", 1.0),
                "duplicate": ("duplicate", 1.0), "reorder": ("reorder", 1.0),
                "rate": ("rate", None), "queue": ("queue_limit", None)}


def read_link_settings(r: Reader, where: str) -> dict:
    """The impairment keys of one link table (:data:`SETTING_KEYS`) as link settings;
    ConfigError naming ``where`` + the key for a value out of range."""
    settings = {}
    for key, (name, scale) in SETTING_KEYS.items():
        if scale is None:                      # sizes: "100MiB" or a number of bytes
            value = r.get(key, (int, str), None, parse_size)
        else:
            value = r.get(key, (int, float), None)
            value = None if value is None else value * scale
        if value is not None:
            settings[name] = _checked(f"{where}{key}", name, value)
    return settings


def _checked(where: str, name: str, value):
    try:
        return check_setting(name, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
