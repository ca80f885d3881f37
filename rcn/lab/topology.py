"""The lab's topology: what ``rcn lab up --topology FILE`` reads.

Topology file (TOML; every key optional -- without a file, or with an empty one,
the lab is two arrays, two edges, one core and one pair A LUN 0 -> B LUN 0 in
group 7 with 256 MiB volumes)::

    [lab]
    cores = 1                             # core devices in the path, 0..16
    capacity = "256MiB"                   # default volume capacity (a multiple of 512)
    log_mode = "durable"                  # the edges' log storage area: durable | memory
    batching = true                       # the cores' batch forwarding
    pair_mode = "sync"                    # the source array's pairs: sync | async
    source_wwn = "50:0a:09:80:00:00:00:01"   # arrayA's port name
    target_wwn = "50:0a:09:80:00:00:00:02"   # arrayB's port name
    pair_setup = "config"                 # config: the pairs start in Duplex from the files;
                                          # create: the volumes only -- make the pairs with
                                          # ``rcn array pair-create`` (initial copy, docs/pairs.md)
    virtual_wwns = false                  # true: each edge shows the partner array under a
                                          # virtual WWN of its own and translates (【0093】)
    failure_timeout = 60.0                # the edges' [pairs] failure_timeout (seconds)
    mgmt = true                           # true: an rcn-mgmt server gives the edges and cores
                                          # their tables (set up through its API), and the
                                          # pairs are made with pair-create; false: static
                                          # tables in every device's file (the default when
                                          # the lab has [[wanem]] links: see below)
    consoles = false                      # true: every daemon serves its console on a pty
                                          # of its own, linked as DIR/NAME.tty (open it
                                          # with any terminal program, e.g. pyserial's
                                          # miniterm)
    seal = "aes-256-gcm"                  # log transfer sealed (DESIGN.md 9): static labs
                                          # get key files from ``rcn lab up`` (DIR/keys),
                                          # managed ones keys from rcn-mgmt's snapshots;
                                          # "none": every edge and core unsealed -- for
                                          # measuring the seal's cost only (logged)

    [[wanem]]                             # a WAN emulator link between two neighbours on
    between = ["edgeA", "core1"]          # the path (edgeA, core1 .. coreN, edgeB), in
                                          # path order; LINK1, LINK2 ... in file order
    delay_ms = 20.0                       # initial impairments, the keys of rcn-wanem's
    loss = 0.01                           # [[link]] (rcn/wanem/config.py): delay_ms,
    seed = 1                              # jitter_ms, loss, duplicate, reorder, rate,
                                          # queue, seed

    [[pair]]                              # one per replicated volume (default: the one above)
    lun = 0                               # LUN on arrayA; its volume is "vol<lun>"
    target_lun = 0                        # LUN on arrayB (default: lun); volume "vol<target_lun>"
    group = 7                             # order guarantee ID
    capacity = "256MiB"                   # default: lab.capacity (both volumes get it)

Errors name the file and the key (``pair[1].lun: LUN 0 is in two pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datapath.frames.names import parse_wwn
from rcn.config import (SEALED, UNSEALED, ConfigError, Reader, in_range, load_toml, one_of,
                        parse_size)

DEFAULT_SOURCE_WWN = 0x500A098000000001
DEFAULT_TARGET_WWN = 0x500A098000000002
DEFAULT_CAPACITY = 256 << 20


@dataclass(frozen=True)
class PairSpec:
    lun: int
    target_lun: int
    group: int
    capacity: int


@dataclass(frozen=True)
class WanemSpec:
    """A WAN emulator link between two neighbours on the path (upstream first)."""
    between: tuple[str, str]
    settings: tuple[tuple[str, object], ...] = ()     # rcn-wanem [[link]] keys and values
    seed: int | None = None


@dataclass(frozen=True)
class Topology:
    cores: int = 1
    capacity: int = DEFAULT_CAPACITY
    log_mode: str = "durable"
    batching: bool = True
    pair_mode: str = "sync"
    source_wwn: int = DEFAULT_SOURCE_WWN
    target_wwn: int = DEFAULT_TARGET_WWN
    pairs: tuple[PairSpec, ...] = field(default=())
    pair_setup: str = "config"
    virtual_wwns: bool = False
    failure_timeout: float = 60.0
    mgmt: bool = True
    wanem: tuple[WanemSpec, ...] = ()
    consoles: bool = False
    seal: str = SEALED

    @property
    def sealed(self) -> bool:
        return self.seal == SEALED

    def __post_init__(self):
        if not self.pairs:
            object.__setattr__(self, "pairs", (PairSpec(0, 0, 7, self.capacity),))


def _capacity(value) -> int:
    size = parse_size(value)
    if size <= 0 or size % 512:
        raise ValueError(f"{size} bytes is not a positive multiple of 512")
    return size


def parse_topology(doc: dict, base_dir: str = ".") -> Topology:
    """A topology from a parsed TOML document (``base_dir`` unused: nothing is a path)."""
    top = Reader(doc, "")
    top.unknown({"lab", "pair", "wanem"})
    lab = top.get("lab", dict, {})
    r = Reader(lab, "lab.")
    r.unknown({"cores", "capacity", "log_mode", "batching", "pair_mode", "source_wwn",
               "target_wwn", "pair_setup", "virtual_wwns", "failure_timeout", "mgmt",
               "consoles", "seal"})
    capacity = r.get("capacity", (int, str), DEFAULT_CAPACITY, _capacity)
    source_wwn = r.get("source_wwn", str, DEFAULT_SOURCE_WWN, parse_wwn)
    target_wwn = r.get("target_wwn", str, DEFAULT_TARGET_WWN, parse_wwn)
    if source_wwn == target_wwn:
        raise ConfigError("lab.target_wwn: the same as lab.source_wwn")
    pairs = []
    tables = top.get("pair", list, [])
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"pair[{i}]: expected a table ([[pair]])")
        p = Reader(table, f"pair[{i}].")
        p.unknown({"lun", "target_lun", "group", "capacity"})
        lun = p.get("lun", int, check=in_range(0, 16383))
        target_lun = p.get("target_lun", int, lun, in_range(0, 16383))
        group = p.get("group", int, 7, in_range(0, 0xFFFFFFFF))
        spec = PairSpec(lun, target_lun, group, p.get("capacity", (int, str), capacity, _capacity))
        for j, other in enumerate(pairs):
            if other.lun == lun:
                raise ConfigError(f"pair[{i}].lun: LUN {lun} is in two pairs (pair[{j}] too)")
            if other.target_lun == target_lun:
                raise ConfigError(f"pair[{i}].target_lun: LUN {target_lun} is in two pairs "
                                  f"(pair[{j}] too)")
        pairs.append(spec)
    cores = r.get("cores", int, 1, in_range(0, 16))
    wanem = _wanem_links(top.get("wanem", list, []), cores)
    mgmt = r.get("mgmt", bool, not wanem)
    if mgmt and wanem:
        raise ConfigError("lab.mgmt: a lab with [[wanem]] links needs static route tables "
                          "(each device sees its neighbours through the emulator); leave mgmt "
                          "out or set it to false")
    return Topology(cores=cores, capacity=capacity,
                    log_mode=r.get("log_mode", str, "durable", one_of(("durable", "memory"))),
                    batching=r.get("batching", bool, True),
                    pair_mode=r.get("pair_mode", str, "sync", one_of(("sync", "async"))),
                    source_wwn=source_wwn, target_wwn=target_wwn, pairs=tuple(pairs),
                    pair_setup=r.get("pair_setup", str, "config", one_of(("config", "create"))),
                    virtual_wwns=r.get("virtual_wwns", bool, False),
                    failure_timeout=float(r.get("failure_timeout", (int, float), 60.0,
                                                in_range(0.1, 86400.0))),
                    mgmt=mgmt, wanem=wanem, consoles=r.get("consoles", bool, False),
                    seal=r.get("seal", str, SEALED, one_of((SEALED, UNSEALED))))


def path_names(cores: int) -> list[str]:
    """The devices of the lab's path in order: edgeA, core1 .. coreN, edgeB."""
    return ["edgeA"] + [f"core{i + 1}" for i in range(cores)] + ["edgeB"]


def _wanem_links(tables: list, cores: int) -> tuple[WanemSpec, ...]:
    from rcn.wanem.config import SETTING_KEYS, read_link_settings
    chain = path_names(cores)
    links: list[WanemSpec] = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"wanem[{i}]: expected a table ([[wanem]])")
        r = Reader(table, f"wanem[{i}].")
        r.unknown({"between", "seed", *SETTING_KEYS})
        between = r.get("between", list)
        if len(between) != 2 or not all(isinstance(n, str) for n in between):
            raise ConfigError(f"wanem[{i}].between: expected two device names, like "
                              f'["edgeA", "{chain[1]}"]')
        a, b = between
        for name in (a, b):
            if name not in chain:
                raise ConfigError(f"wanem[{i}].between: no device {name!r} on the path "
                                  f"({', '.join(chain)})")
        if chain.index(b) != chain.index(a) + 1:
            raise ConfigError(f"wanem[{i}].between: {a} and {b} are not neighbours on the path "
                              f"in that order ({' > '.join(chain)})")
        for j, other in enumerate(links):
            if other.between == (a, b):
                raise ConfigError(f"wanem[{i}].between: {a} - {b} has a link already "
                                  f"(wanem[{j}])")
        read_link_settings(r, f"wanem[{i}].")            # checks the values
        settings = tuple((k, table[k]) for k in SETTING_KEYS if k in table)
        links.append(WanemSpec((a, b), settings, r.get("seed", int, None)))
    return tuple(links)


def load_topology(path: str | None) -> Topology:
    """The topology in ``path`` (None: the built-in default); ConfigError names the file."""
    if path is None:
        return Topology()
    return load_toml(path, parse_topology)

