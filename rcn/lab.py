"""``rcn lab``: a whole RCN on one machine, as real daemons on loopback ports.

``rcn lab up`` writes one TOML file per device into a directory, starts every
daemon (``twistd -n rcn-storage|rcn-edge|rcn-core``) as a detached process, records
the lab in ``DIR/lab.json`` and waits until the data path is ready; ``rcn lab
status`` shows the figures that matter; ``rcn lab down`` stops the processes it
recorded. The data path it builds::

    host --NBD--> arrayA --FCIP--> edgeA --UDP--> core1 .. coreN --UDP--> edgeB --FCIP--> arrayB
    (source array, pairs role "source")                     (target array, pairs role "target")

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

Processes: each daemon runs as ``twistd -n --pidfile DIR/NAME.pid --logfile -
rcn-ROLE --config DIR/NAME.toml`` in a new session (``start_new_session``), its
working directory DIR, with standard output and error appended to ``DIR/NAME.log``.
(``-n`` rather than twistd's own daemonising: the pid is known at once, and a
daemon that dies early -- a port taken, a bad file -- leaves its reason in the same
log.) They outlive ``rcn lab up``; ``rcn lab down`` signals only the pids that
``lab.json`` records, and only while ``/proc/PID/cmdline`` still names that
device's configuration file (a recycled pid is left alone).

``rcn lab up`` in the directory of a stopped lab writes new files (new ports) and
starts it again over the same volumes, edge log storage and apply counters: a
restart, which resumes where the lab was.

Ports are chosen by binding ``127.0.0.1:0`` (TCP for NBD, control, FCIP and HTTP;
UDP for the log-transfer sockets), reading the number and closing the socket, all
sockets held until every port is chosen so no two devices get the same one.

``lab.json`` (``version`` 1): ``dir``, ``started`` (Unix time), ``topology`` (the
parsed values), ``devices`` (each: ``name``, ``role`` (storage, edge, core),
``plugin``, ``config``, ``log``, ``pidfile``, ``pid``, ``ports``, ``urls``;
arrays also ``wwn``, ``data_dir``, ``volumes`` with ``lun``, ``name``, ``path``,
``capacity`` and ``nbd_url``; edges ``wwn`` of their array), ``pairs`` (source
and target array, LUN, group, volume paths, the source's ``nbd_url``) and
``nbd_url`` (the first pair's source volume).

WAN emulator links (``[[wanem]]``): one ``rcn-wanem`` daemon (device ``wanem``,
role wanem) relays every link; its SCPI console is on a pty linked as
``DIR/wanem.tty`` (what ``rcn-bench`` drives over pyserial) and on TCP
(``urls.scpi``, a ``socket://`` URL). A link's two neighbours address each other
through it: the upstream one sends to the link's A port, the downstream one
answers to its B port. That needs route tables per device (each sees its
neighbours' addresses through the emulator), so a lab with wanem links uses
static tables: ``mgmt`` defaults to false there, and ``mgmt = true`` is refused
(the management server gives every device the same addresses).

Library use (``rcn demo`` and the crash tests do this): :func:`up`, :func:`status`,
:func:`down`, and for one device :func:`signal_device` (SIGKILL, SIGSTOP...) and
:func:`restart` (same file and ports, new pid in ``lab.json``); they raise
:class:`LabError` with a message and the exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

from datapath.frames.names import format_wwn, parse_wwn
from rcn.config import ConfigError, Reader, in_range, load_toml, one_of, parse_size

__all__ = ["LabError", "Topology", "PairSpec", "parse_topology", "load_topology", "plan",
           "device_configs", "up", "status", "down", "restart", "signal_device", "load_lab",
           "render_toml", "applied_counter", "pid_alive", "api", "settings_requests",
           "WanemSpec", "path_names"]

DEFAULT_SOURCE_WWN = 0x500A098000000001
DEFAULT_TARGET_WWN = 0x500A098000000002
DEFAULT_CAPACITY = 256 << 20
LAB_FILE = "lab.json"
PLUGINS = {"storage": "rcn-storage", "edge": "rcn-edge", "core": "rcn-core",
           "mgmt": "rcn-mgmt", "wanem": "rcn-wanem"}
LAB_CUSTOMER = "lab"
HOST = "127.0.0.1"


class LabError(Exception):
    """What went wrong, for the operator; ``status`` is the exit status (1 or 2)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


# -- topology -----------------------------------------------------------------------------

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
               "consoles"})
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
                    mgmt=mgmt, wanem=wanem, consoles=r.get("consoles", bool, False))


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


# -- TOML out ---------------------------------------------------------------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)      # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(doc: dict) -> str:
    """``{table: {key: scalar}, array: [{key: scalar}]}`` as TOML (what the lab writes)."""
    out = []
    for name, body in doc.items():
        items = body if isinstance(body, list) else [body]
        for item in items:
            out.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
            out.append("")
    return "\n".join(out)


# -- plan: names, ports, configuration documents ------------------------------------------------

def free_ports(tcp: int, udp: int) -> tuple[list[int], list[int]]:
    """``tcp`` TCP and ``udp`` UDP ports on 127.0.0.1 that were free a moment ago, all different."""
    held = []
    try:
        for kind, count in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
            for _ in range(count):
                s = socket.socket(socket.AF_INET, kind)
                held.append(s)
                s.bind((HOST, 0))
        numbers = [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()
    return numbers[:tcp], numbers[tcp:]


def plan(topology: Topology, directory: str, ports: tuple[list[int], list[int]] | None = None
         ) -> dict:
    """The lab record (what ``lab.json`` holds, without pids) for ``topology`` in ``directory``.

    ``ports`` (tcp, udp): given by tests; by default :func:`free_ports`.
    """
    directory = os.path.abspath(directory)
    cores = [f"core{i + 1}" for i in range(topology.cores)]
    if ports is None:
        ports = free_ports(2 * 2 + 2 * 2 + len(cores) + 2 + (1 if topology.wanem else 0),
                           2 + len(cores) + 2 * len(topology.wanem))
    tcp, udp = list(ports[0]), list(ports[1])
    devices = []

    def files(name: str) -> dict:
        return {"config": os.path.join(directory, f"{name}.toml"),
                "log": os.path.join(directory, f"{name}.log"),
                "pidfile": os.path.join(directory, f"{name}.pid"), "pid": None}

    arrays = {"arrayA": (topology.source_wwn, [(p.lun, p.capacity) for p in topology.pairs]),
              "arrayB": (topology.target_wwn, [(p.target_lun, p.capacity) for p in topology.pairs])}
    for name, (wwn, luns) in arrays.items():
        nbd, control = tcp.pop(0), tcp.pop(0)
        data_dir = os.path.join(directory, name)
        volumes = [{"lun": lun, "name": f"vol{lun}", "capacity": cap,
                    "path": os.path.join(data_dir, f"vol{lun}.img"),
                    "nbd_url": f"nbd://{HOST}:{nbd}/vol{lun}"} for lun, cap in luns]
        devices.append({"name": name, "role": "storage", "plugin": PLUGINS["storage"],
                        **files(name), "wwn": format_wwn(wwn), "data_dir": data_dir,
                        "ports": {"nbd": nbd, "control": control},
                        "urls": {"control": f"http://{HOST}:{control}",
                                 "nbd": f"nbd://{HOST}:{nbd}"},
                        "volumes": volumes, "edge": "edgeA" if name == "arrayA" else "edgeB"})
    for name, array in (("edgeA", "arrayA"), ("edgeB", "arrayB")):
        log, fcip, metrics = udp.pop(0), tcp.pop(0), tcp.pop(0)
        devices.append({"name": name, "role": "edge", "plugin": PLUGINS["edge"], **files(name),
                        "array": array, "wwn": format_wwn(arrays[array][0]),
                        "data_dir": os.path.join(directory, name),
                        "ports": {"log": log, "fcip": fcip, "metrics": metrics},
                        "urls": {"status": f"http://{HOST}:{metrics}/status",
                                 "metrics": f"http://{HOST}:{metrics}/metrics"}})
    for name in cores:
        listen, metrics = udp.pop(0), tcp.pop(0)
        devices.append({"name": name, "role": "core", "plugin": PLUGINS["core"], **files(name),
                        "ports": {"log": listen, "metrics": metrics},
                        "urls": {"metrics": f"http://{HOST}:{metrics}/metrics"}})
    if topology.mgmt:
        http, amp = tcp.pop(0), tcp.pop(0)
        devices.insert(0, {"name": "mgmt", "role": "mgmt", "plugin": PLUGINS["mgmt"],
                           **files("mgmt"), "data_dir": os.path.join(directory, "mgmt"),
                           "token_file": os.path.join(directory, "mgmt", "operator.token"),
                           "ports": {"http": http, "amp": amp},
                           "urls": {"api": f"http://{HOST}:{http}/api/v1",
                                    "dashboard": f"http://{HOST}:{http}/",
                                    "metrics": f"http://{HOST}:{http}/metrics"}})
    if topology.wanem:
        scpi = tcp.pop(0)
        links = [{"number": n, "between": list(w.between), "a_port": udp.pop(0),
                  "b_port": udp.pop(0)} for n, w in enumerate(topology.wanem, 1)]
        devices.insert(0, {"name": "wanem", "role": "wanem", "plugin": PLUGINS["wanem"],
                           **files("wanem"), "console": os.path.join(directory, "wanem.tty"),
                           "ports": {"scpi": scpi, **{f"link{k['number']}_{side}": k[f"{side}_port"]
                                                      for k in links for side in "ab"}},
                           "urls": {"scpi": f"socket://{HOST}:{scpi}"}, "links": links})
    if topology.consoles:
        for d in devices:
            d.setdefault("console", os.path.join(directory, f"{d['name']}.tty"))
    by_name = {d["name"]: d for d in devices}
    volume_a = {v["lun"]: v for v in by_name["arrayA"]["volumes"]}
    volume_b = {v["lun"]: v for v in by_name["arrayB"]["volumes"]}
    pairs = [{"source_array": "arrayA", "source_lun": p.lun, "target_array": "arrayB",
              "target_lun": p.target_lun, "group": p.group,
              "source_volume": volume_a[p.lun]["path"],
              "target_volume": volume_b[p.target_lun]["path"],
              "nbd_url": volume_a[p.lun]["nbd_url"], "capacity": p.capacity}
             for p in topology.pairs]
    topo = asdict(topology)
    topo["source_wwn"], topo["target_wwn"] = (format_wwn(topology.source_wwn),
                                              format_wwn(topology.target_wwn))
    return {"version": 1, "dir": directory, "started": None, "topology": topo,
            "devices": devices, "pairs": pairs, "nbd_url": pairs[0]["nbd_url"]}


def _path(lab: dict, viewer: str | None = None) -> list[str]:
    """The log-transfer path edgeA .. edgeB as ``viewer`` addresses it: a neighbour behind a
    WAN emulator link is the link's A port (seen from upstream) or B port (from downstream)."""
    by_name = {d["name"]: d for d in lab["devices"]}
    through = {}
    for link in by_name.get("wanem", {}).get("links", []):
        up, down = link["between"]
        through[(up, down)] = link["a_port"]
        through[(down, up)] = link["b_port"]
    chain = path_names(lab["topology"]["cores"])
    return [f"{HOST}:{through.get((viewer, name), by_name[name]['ports']['log'])}"
            for name in chain]


def virtual_wwn(wwn: str) -> str:
    """The WWN an edge shows for the array ``wwn`` in the virtual WWN variant."""
    return format_wwn(parse_wwn(wwn) ^ (0x80 << 16))


def device_configs(lab: dict) -> dict[str, dict]:
    """Each device's configuration document (name -> TOML tables), from the lab record."""
    topo = lab["topology"]
    by_name = {d["name"]: d for d in lab["devices"]}
    source, target = topo["source_wwn"], topo["target_wwn"]
    # what each array sees its partner as (the virtual storage's WWN, table 404)
    seen = {wwn: virtual_wwn(wwn) if topo.get("virtual_wwns") else wwn for wwn in (source, target)}
    managed = bool(topo.get("mgmt"))
    # managed: pairs are made with pair-create once the server has set the edges up;
    # after that (a restart) the arrays start with them in Duplex, as the edges do
    created = (topo.get("pair_setup", "config") == "create"
               or (managed and not lab.get("pairs_created")))
    def routes(viewer: str) -> list[dict]:
        path = _path(lab, viewer)
        return [{"source_wwn": source, "target_wwn": target, "path": path},
                {"source_wwn": target, "target_wwn": source, "path": path[::-1]}]   # failback
    out = {}
    for name, partner, role in (("arrayA", target, "source"), ("arrayB", source, "target")):
        d = by_name[name]
        edge = by_name[d["edge"]]
        pairs = [] if created else [p for p in lab["pairs"] if p[f"{role}_array"] == name]
        out[name] = {
            "array": {"wwpn": d["wwn"], "data_dir": os.path.basename(d["data_dir"])},
            "nbd": {"listen": f"tcp:{d['ports']['nbd']}:interface={HOST}"},
            "control": {"listen": f"tcp:{d['ports']['control']}:interface={HOST}"},
            "edge": {"connect": f"tcp:{HOST}:{edge['ports']['fcip']}", "timeout": 30.0,
                     "partners": [seen[partner]]},
            "volume": [{"lun": v["lun"], "name": v["name"], "capacity": v["capacity"]}
                       for v in d["volumes"]],
            "pair": [{"lun": p[f"{role}_lun"], "role": role, "partner_wwpn": seen[partner],
                      "partner_lun": p["target_lun" if role == "source" else "source_lun"],
                      "group": p["group"], "state": "duplex",
                      **({"mode": topo["pair_mode"]} if role == "source" else {})}
                     for p in pairs]}
    for name, peer, wwn, partner in (("edgeA", "edgeB", source, target),
                                     ("edgeB", "edgeA", target, source)):
        d = by_name[name]
        doc = {"edge": {"id": name, "log": f"{HOST}:{d['ports']['log']}",
                        "fcip": f"tcp:{d['ports']['fcip']}:interface={HOST}",
                        "data_dir": os.path.basename(d["data_dir"])},
               "log": {"mode": topo["log_mode"]},
               "pairs": {"failure_timeout": topo.get("failure_timeout", 60.0)},
               "metrics": {"listen": f"tcp:{d['ports']['metrics']}:interface={HOST}"}}
        if managed:            # tables 404, 405, 408, 411 come from the server
            doc["mgmt"] = {"connect": f"tcp:{HOST}:{by_name['mgmt']['ports']['amp']}"}
            out[name] = doc
            continue
        # the attached array sees its partner through this virtual storage (table 404)
        doc["virtual_storage"] = [{"wwn": seen[partner], "partner_wwn": partner,
                                   "partner_edge": peer}]
        doc["access"] = [{"virtual_wwn": seen[partner], "storage_wwn": wwn}]
        if name == "edgeA" and not created:
            doc["pair"] = [{"source_wwn": source, "source_lun": p["source_lun"],
                            "target_wwn": target, "target_lun": p["target_lun"],
                            "group": p["group"]} for p in lab["pairs"]]
        doc["route"] = routes(name)
        out[name] = doc
    for d in lab["devices"]:
        if d["role"] == "core":
            out[d["name"]] = {"core": {"id": d["name"], "listen": f"{HOST}:{d['ports']['log']}"},
                              "batch": {"enabled": bool(topo["batching"])},
                              "metrics": {"listen": f"tcp:{d['ports']['metrics']}:interface={HOST}"}}
            if managed:
                out[d["name"]]["mgmt"] = {"connect": f"tcp:{HOST}:{by_name['mgmt']['ports']['amp']}"}
            else:
                out[d["name"]]["route"] = routes(d["name"])
        elif d["role"] == "mgmt":
            out["mgmt"] = {"mgmt": {"id": "mgmt", "database": "mgmt/mgmt.sqlite",
                                    "http": f"tcp:{d['ports']['http']}:interface={HOST}",
                                    "amp": f"tcp:{d['ports']['amp']}:interface={HOST}",
                                    "operator_token_file": "mgmt/operator.token"}}
        elif d["role"] == "wanem":
            out["wanem"] = _wanem_config(lab, d)
    for d in lab["devices"]:
        if d.get("console") and d["role"] != "wanem":
            out[d["name"]]["console"] = {"serial": "pty", "pty_link": d["console"]}
    return out


def _wanem_config(lab: dict, device: dict) -> dict:
    """rcn-wanem's file: a [[link]] per lab link, SCPI on a pty and on TCP."""
    by_name = {d["name"]: d for d in lab["devices"]}
    links = []
    for link, spec in zip(device["links"], lab["topology"]["wanem"]):
        up, down = (by_name[n]["ports"]["log"] for n in link["between"])
        links.append({"a": f"{HOST}:{link['a_port']}", "b": f"{HOST}:{down}",
                      "b_from": f"{HOST}:{link['b_port']}", "a_to": f"{HOST}:{up}",
                      **({"seed": spec["seed"]} if spec.get("seed") is not None else {}),
                      **dict(spec["settings"])})
    return {"wanem": {"id": "wanem"},
            "console": {"serial": "pty", "pty_link": device["console"],
                        "tcp": f"tcp:{device['ports']['scpi']}:interface={HOST}"},
            "link": links}


def settings_requests(lab: dict) -> list[tuple[str, str, dict]]:
    """What ``rcn lab up`` tells the management server, as (method, path, body): the
    devices and links of the lab's path, a customer, its storages and ordered pairs."""
    topo = lab["topology"]
    by_name = {d["name"]: d for d in lab["devices"]}
    chain = ["edgeA"] + [d["name"] for d in lab["devices"] if d["role"] == "core"] + ["edgeB"]
    out = []
    for name in chain:
        role = by_name[name]["role"]
        out.append(("POST", "/devices", {"id": name, "role": role,
                                         "log_address": f"{HOST}:{by_name[name]['ports']['log']}"}))
    for a, b in zip(chain, chain[1:]):
        out.append(("POST", "/links", {"a": a, "b": b}))
    out.append(("POST", "/customers", {"id": LAB_CUSTOMER, "name": "the lab's customer"}))
    for array, edge in (("arrayA", "edgeA"), ("arrayB", "edgeB")):
        wwn = by_name[array]["wwn"]
        body = {"storage_wwn": wwn, "edge_id": edge, "customer_id": LAB_CUSTOMER}
        if topo.get("virtual_wwns"):
            body["virtual_wwn"] = virtual_wwn(wwn)
        out.append(("POST", "/storages", body))
    for p in lab["pairs"]:
        out.append(("POST", "/pairs", {"customer_id": LAB_CUSTOMER,
                                       "source_wwn": topo["source_wwn"],
                                       "source_lun": p["source_lun"],
                                       "target_wwn": topo["target_wwn"],
                                       "target_lun": p["target_lun"],
                                       "policy": "B", "group": p["group"]}))
    return out


# -- processes ------------------------------------------------------------------------------------

def _twistd() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = here if os.access(here, os.X_OK) else shutil.which("twistd")
    if not found:
        raise LabError("twistd not found next to this Python nor on PATH: install the project "
                       "(make venv) and run .venv/bin/rcn", 2)
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def _is_child(pid: int) -> bool:
    """``pid`` is (or was, reaped just now) a child of this process: ours for certain."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (a child that ended is reaped here: then False)."""
    if not pid:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                # A zombie leader: reap it if it is our child. Until its other threads
                # have exited too, waitpid cannot, and the pid still exists (a new twistd
                # would refuse to start over its pidfile): count it as running until then.
                try:
                    return os.waitpid(pid, os.WNOHANG)[0] == 0
                except ChildProcessError:
                    return False     # not ours to reap: it has ended
                except OSError:
                    return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_ours(device: dict, dying: bool = False) -> bool:
    """The pid still runs this device's daemon (not a recycled pid); ``dying``: or it is
    exiting (an empty command line)."""
    try:
        with open(f"/proc/{device['pid']}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        # no /proc: trust the record; a process tearing down may refuse the read
        return dying or not os.path.isdir("/proc")
    return device["config"].encode() in args or (dying and args == [b""])


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc.strerror or exc})"
    return "\n".join(text.splitlines()[-lines:])


def _start(device: dict, directory: str) -> int:
    with open(device["log"], "ab") as log:
        proc = subprocess.Popen(
            [_twistd(), "-n", "--pidfile", device["pidfile"], "--logfile", "-",
             device["plugin"], "--config", device["config"]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    proc.returncode = 0        # we never wait() on it: keep Popen's destructor quiet
    return proc.pid


def lab_file(directory: str) -> str:
    return os.path.join(os.path.abspath(directory), LAB_FILE)


def load_lab(directory: str) -> dict | None:
    try:
        with open(lab_file(directory)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"{lab_file(directory)}: unreadable lab record: {exc}", 2) from None


def _save(lab: dict) -> None:
    path = lab_file(lab["dir"])
    with open(path + ".tmp", "w") as f:
        json.dump(lab, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def get_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def _not_ready(device: dict) -> str | None:
    """Why ``device`` is not ready yet (None: ready)."""
    try:
        if device["role"] == "storage":
            body = get_json(device["urls"]["control"] + "/status")
            return None if body.get("edge_link") == "up" else f"edge_link {body.get('edge_link')}"
        if device["role"] == "mgmt":
            get_text(device["urls"]["dashboard"])
            return None if os.path.exists(device["token_file"]) else "no operator token yet"
        if device["role"] == "wanem":
            with socket.create_connection((HOST, device["ports"]["scpi"]), timeout=2.0):
                pass
            return None if os.path.islink(device["console"]) else "no console pty yet"
        if device["role"] == "edge":
            body = get_json(device["urls"]["status"])
            wwns = [link.get("array_wwn") for link in body.get("links", [])]
            return None if device["wwn"] in wwns else f"no link from array {device['wwn']} yet"
        get_text(device["urls"]["metrics"])
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"not answering: {getattr(exc, 'reason', exc)}"


def up(topology: Topology, directory: str, timeout: float = 60.0, progress=None) -> dict:
    """Write the files, start the daemons, wait until ready; the lab record.

    On failure (a daemon exits, or not ready in ``timeout`` seconds) what was
    started is stopped again (logs kept) and :class:`LabError` says why, with the
    tail of the failing daemon's log.
    """
    directory = os.path.abspath(directory)
    old = load_lab(directory)
    if old is not None:
        running = [d for d in old["devices"] if pid_alive(d.get("pid")) and _is_ours(d)]
        if running:
            raise LabError(f"a lab is already running in {directory} ("
                           + ", ".join(f"{d['name']} pid {d['pid']}" for d in running)
                           + f"): run `rcn lab down --dir {directory}` first", 2)
    os.makedirs(directory, exist_ok=True)
    lab = plan(topology, directory)
    if old is not None:             # a restart: what the last run set up stays set up
        for key in ("configured", "pairs_created", "customer_token"):
            if key in old:
                lab[key] = old[key]
    if topology.mgmt:
        os.makedirs(os.path.join(directory, "mgmt"), exist_ok=True)
    for name, doc in device_configs(lab).items():
        device = next(d for d in lab["devices"] if d["name"] == name)
        with open(device["config"], "w") as f:
            f.write(f"# written by rcn lab up for {name}\n" + render_toml(doc))
    lab["started"] = time.time()
    # edges and cores first: the arrays connect to their edges (and retry with backoff);
    # under a management server, it first, and the arrays once it has set the edges up
    rank = {"mgmt": 0, "wanem": 0, "core": 1, "edge": 2, "storage": 3}
    order = sorted(lab["devices"], key=lambda d: rank[d["role"]])
    deadline = time.monotonic() + timeout
    try:
        for device in order:
            if topology.mgmt and device["role"] == "storage" and "arrays" not in lab:
                _configure(lab, deadline, progress)
                lab["arrays"] = True
            device["pid"] = _start(device, directory)
            _save(lab)
            if device["role"] == "mgmt":
                _wait_ready(lab, max(1.0, deadline - time.monotonic()), progress, ["mgmt"])
        lab.pop("arrays", None)
        _wait_ready(lab, max(1.0, deadline - time.monotonic()), progress)
        if topology.mgmt and topology.pair_setup == "config" and not lab.get("pairs_created"):
            _create_pairs(lab, deadline, progress)
            lab["pairs_created"] = True
            _save(lab)
    except BaseException:
        down(directory, quiet=True)
        raise
    return lab


def operator_token(lab: dict) -> str:
    with open(_device(lab, "mgmt")["token_file"]) as f:
        return f.read().strip()


def api(lab: dict, method: str, path: str, body: dict | None = None, token: str | None = None,
        timeout: float = 10.0) -> dict:
    """One request to the lab's management server (the operator's token by default)."""
    from rcn.cli import CliError, request_json
    try:
        return request_json(_device(lab, "mgmt")["urls"]["api"] + path, timeout, method, body,
                            token or operator_token(lab))
    except CliError as exc:
        raise LabError(f"management server: {exc}") from None


def _configure(lab: dict, deadline: float, progress) -> None:
    """Settings through the API (once per lab), then wait until every edge and core runs
    them: the arrays log in to virtual storages the snapshots create."""
    if not lab.get("configured"):
        for method, path, body in settings_requests(lab):
            answer = api(lab, method, path, body)
            if path == "/customers":
                lab["customer_token"] = answer["token"]
        lab["configured"] = True
        _save(lab)
        if progress:
            progress("management server configured")
    else:                         # a restart: the devices listen on new ports
        for method, path, body in settings_requests(lab):
            if path == "/devices":
                api(lab, "PATCH", f"/devices/{body['id']}", {"log_address": body["log_address"]})
    names = {d["name"] for d in lab["devices"] if d["role"] in ("edge", "core")}
    while True:
        devices = {d["id"]: d for d in api(lab, "GET", "/devices")["devices"]}
        behind = sorted(n for n in names if not devices.get(n, {}).get("up_to_date"))
        if not behind:
            return
        for name in names:
            device = _device(lab, name)
            if not pid_alive(device["pid"]):
                raise LabError(f"{name} ({device['plugin']}, pid {device['pid']}) exited during "
                               f"start-up; the end of {device['log']}:\n{tail(device['log'])}")
        if time.monotonic() > deadline:
            raise LabError("the management server's settings did not reach "
                           + ", ".join(behind) + " in time")
        time.sleep(0.05)


def _create_pairs(lab: dict, deadline: float, progress) -> None:
    """pair-create on the source array for every pair, then wait until each is Duplex."""
    array = _device(lab, "arrayA")
    topo = lab["topology"]
    partner = virtual_wwn(topo["target_wwn"]) if topo.get("virtual_wwns") else topo["target_wwn"]
    control = array["urls"]["control"]
    from rcn.cli import CliError, request_json
    for p in lab["pairs"]:
        try:
            request_json(control + "/pairs", 30, "POST",
                         {"lun": p["source_lun"], "partner_wwpn": partner,
                          "partner_lun": p["target_lun"], "group": p["group"],
                          "mode": topo["pair_mode"]})
        except CliError as exc:
            raise LabError(f"pair-create of arrayA LUN {p['source_lun']}: {exc}") from None
    for p in lab["pairs"]:
        while get_json(f"{control}/pairs/{p['source_lun']}").get("state") != "duplex":
            if time.monotonic() > deadline:
                raise LabError(f"pair arrayA LUN {p['source_lun']} not Duplex in time")
            time.sleep(0.05)
        if progress:
            progress(f"pair arrayA LUN {p['source_lun']} -> arrayB LUN {p['target_lun']} duplex")


def _wait_ready(lab: dict, timeout: float, progress, names: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    waiting = {d["name"]: "starting" for d in lab["devices"]
               if names is None or d["name"] in names}
    by_name = {d["name"]: d for d in lab["devices"]}
    while waiting:
        for name in list(waiting):
            device = by_name[name]
            if not pid_alive(device["pid"]):
                raise LabError(f"{name} ({device['plugin']}, pid {device['pid']}) exited during "
                               f"start-up; the end of {device['log']}:\n{tail(device['log'])}")
            why = _not_ready(device)
            if why is None:
                del waiting[name]
                if progress:
                    progress(f"{name} ready")
            else:
                waiting[name] = why
        if not waiting:
            return
        if time.monotonic() > deadline:
            name, why = next(iter(waiting.items()))
            device = by_name[name]
            raise LabError(f"lab not ready after {timeout:g} s: "
                           + "; ".join(f"{n}: {w}" for n, w in waiting.items())
                           + f"\nthe end of {device['log']}:\n{tail(device['log'])}")
        time.sleep(0.05)


def _device(lab: dict, name: str) -> dict:
    for device in lab["devices"]:
        if device["name"] == name:
            return device
    raise LabError(f"no device {name!r} in {lab_file(lab['dir'])} (devices: "
                   + ", ".join(d["name"] for d in lab["devices"]) + ")", 2)


def _need_lab(directory: str) -> dict:
    lab = load_lab(directory)
    if lab is None:
        raise LabError(f"no lab in {os.path.abspath(directory)} (no {LAB_FILE}): "
                       f"start one with `rcn lab up --dir {directory}`", 2)
    return lab


def signal_device(directory: str, name: str, signum: int) -> int:
    """Send ``signum`` to one device's recorded pid (tests: SIGKILL, SIGSTOP, SIGCONT);
    the pid. LabError when it does not run (or the pid now runs something else)."""
    device = _device(_need_lab(directory), name)
    pid = device.get("pid")
    if not pid_alive(pid) or not _is_ours(device):
        raise LabError(f"{name} (pid {pid}) is not running", 1)
    os.kill(pid, signum)
    return pid


def restart(directory: str, name: str, timeout: float = 60.0, wait: float = 10.0) -> dict:
    """Start one device again with its file and ports (stopping it first if it runs), wait
    until it is ready, record its new pid; the lab record."""
    lab = _need_lab(directory)
    device = _device(lab, name)
    pid = device.get("pid")
    # Stop it if it runs, and wait while it is dying too (just SIGKILLed: its command line
    # is already gone): a new twistd refuses to start while the pid in its pidfile exists.
    if pid_alive(pid) and (_is_child(pid) or _is_ours(device, dying=True)):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + wait
            time.sleep(0.02)
    device["pid"] = _start(device, lab["dir"])
    _save(lab)
    single = dict(lab, devices=[device])
    _wait_ready(single, timeout, None)
    return lab


def down(directory: str, wait: float = 10.0, quiet: bool = False) -> list[dict]:
    """Stop the lab's daemons (SIGTERM, then SIGKILL after ``wait`` s); what happened to each."""
    lab = load_lab(directory)
    if lab is None:
        return []
    report = []
    signalled = []
    for device in lab["devices"]:
        pid = device.get("pid")
        row = {"name": device["name"], "pid": pid}
        if not pid_alive(pid):
            row["result"] = "not running"
        elif not _is_ours(device):
            row["result"] = f"pid {pid} now runs something else: left alone"
        else:
            try:
                os.kill(pid, signal.SIGTERM)
                signalled.append((device, row))
                row["result"] = "stopped"
            except ProcessLookupError:
                row["result"] = "not running"
        report.append(row)
    deadline = time.monotonic() + wait
    while any(pid_alive(d["pid"]) for d, _ in signalled) and time.monotonic() < deadline:
        time.sleep(0.05)
    for device, row in signalled:
        if pid_alive(device["pid"]):
            try:
                os.kill(device["pid"], signal.SIGKILL)
                row["result"] = f"killed (SIGKILL after {wait:g} s)"
            except ProcessLookupError:
                pass
    end = time.monotonic() + 5
    while any(pid_alive(d["pid"]) for d, _ in signalled) and time.monotonic() < end:
        time.sleep(0.02)
    return report


# -- status -----------------------------------------------------------------------------------

def applied_counter(group: dict) -> int:
    """The target edge's apply counter for a group from its ``/status`` entry.

    ``durable`` (the counter as persisted; WROKs leave only after it) rather than
    ``applied``: in ``/status`` the receiver's ``applied`` is overwritten by the
    statistics field of the same name, which counts entries applied since the
    daemon started, so after a restart it is not the counter.
    """
    return group.get("durable", group.get("applied", 0))


def _core_figures(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {"forwarded": 0, "batches_sent": 0, "drops": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rcn_core_forwarded_total":
                out["forwarded"] = int(sample.value)
            elif sample.name == "rcn_core_batches_sent_total":
                out["batches_sent"] = int(sample.value)
            elif sample.name == "rcn_core_received_total":
                out["received"] = int(sample.value)
            elif sample.name == "rcn_core_dropped_total":
                out["drops"][sample.labels.get("reason", "")] = int(sample.value)
    return out


def _mgmt_figures(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {"version": None, "up_to_date": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rcn_mgmt_settings_version":
                out["version"] = int(sample.value)
            elif sample.name == "rcn_mgmt_device_up_to_date":
                out["up_to_date"][sample.labels.get("device", "")] = bool(sample.value)
    return out


def _wanem_figures(device: dict) -> dict:
    """Each link's state, delay, loss and counters, asked over the SCPI TCP port."""
    from rcn.bench.drivers import ApplianceError, WanemDriver, open_port
    try:
        driver = WanemDriver(open_port(device["urls"]["scpi"], timeout=2.0))
    except Exception as exc:                  # serial.SerialException: cannot connect
        raise OSError(str(exc)) from None
    try:
        links = []
        for link in device["links"]:
            n = link["number"]
            state, delay, loss = driver.query(f"LINK{n}:STATE?;DEL?;LOSS?").split(";")
            stats = driver.stats(n)
            links.append({"link": n, "between": link["between"], "state": state,
                          "delay_ms": float(delay), "loss_percent": float(loss),
                          "in": stats.packets_in, "out": stats.packets_out,
                          "dropped": stats.dropped})
        return {"links": links}
    except (ApplianceError, ValueError) as exc:
        raise OSError(f"SCPI: {exc}") from None
    finally:
        driver.close()


def device_figures(device: dict) -> dict:
    """A device's key figures from its HTTP interface (``error`` when it does not answer)."""
    try:
        if device["role"] == "storage":
            base = device["urls"]["control"]
            body = get_json(base + "/status")
            pairs = get_json(base + "/pairs").get("pairs", [])
            return {"edge_link": body.get("edge_link"), "replication": body.get("replication"),
                    "rio_target": body.get("rio_target"),
                    "pairs": [{k: p.get(k) for k in ("lun", "role", "partner_lun", "group",
                                                     "state", "mode", "dirty_tracks",
                                                     "copy_progress")}
                              for p in pairs]}
        if device["role"] == "edge":
            body = get_json(device["urls"]["status"])
            return {"links": body.get("links"),
                    "pairs": [{k: p.get(k) for k in ("source_lun", "target_lun", "group", "side",
                                                     "state", "bitmap_727_tracks")}
                              for p in body.get("pairs", [])],
                    "groups": [{k: g.get(k) for k in ("group", "log_generation", "log_deleted",
                                                      "log_retained_entries", "log_outstanding",
                                                      "applied", "durable") if k in g}
                               for g in body.get("groups", [])],
                    "ack_latency_p50_s": body.get("ack_latency_p50_s"),
                    "ack_latency_p99_s": body.get("ack_latency_p99_s"),
                    "lag_p50_s": body.get("lag_p50_s"), "lag_p99_s": body.get("lag_p99_s"),
                    "sender": body.get("sender"), "drops": body.get("drops")}
        if device["role"] == "mgmt":
            return _mgmt_figures(get_text(device["urls"]["metrics"]))
        if device["role"] == "wanem":
            return _wanem_figures(device)
        return _core_figures(get_text(device["urls"]["metrics"]))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"{getattr(exc, 'reason', exc)}"}


def status(directory: str) -> dict:
    lab = _need_lab(directory)
    rows = []
    for device in lab["devices"]:
        alive = pid_alive(device.get("pid")) and _is_ours(device)
        row = {"name": device["name"], "role": device["role"], "pid": device.get("pid"),
               "alive": alive}
        if alive:
            row.update(device_figures(device))
        rows.append(row)
    return {"dir": lab["dir"], "nbd_url": lab["nbd_url"], "devices": rows}


def _ms(seconds) -> str:
    if seconds is None or seconds != seconds:      # None, or NaN: no samples yet
        return "-"
    return f"{seconds * 1000:.2f}ms"


def _why_stopped(pair: dict) -> str:
    """A pair in failure Suspend: its cause, and whether it comes back by itself."""
    if pair.get("state") != "failure-suspend" or not pair.get("last_error"):
        return ""
    way_back = ("resyncs by itself when the edge answers" if pair.get("link_lost")
                else "`rcn array resync` brings it back")
    return f" [{pair['last_error']}; {way_back}]"


def summary(row: dict) -> str:
    """One line of key figures for ``rcn lab status``."""
    if not row["alive"]:
        return "not running"
    if "error" in row:
        return f"not answering: {row['error']}"
    if row["role"] == "storage":
        pairs = ", ".join(f"LUN {p['lun']} {p['role']} group {p['group']} {p['state']}"
                          + (f" ({p['dirty_tracks']} dirty tracks)" if p.get("dirty_tracks")
                             else "")
                          + (f" copy {p['copy_progress']:.0%}"
                             if p.get("copy_progress") is not None and p["copy_progress"] < 1
                             else "")
                          + _why_stopped(p)
                          for p in row["pairs"])
        return f"link {row['edge_link']}; pairs: {pairs or 'none'}"
    if row["role"] == "edge":
        groups = "; ".join(
            f"group {g['group']} gen {g.get('log_generation', 0)} applied "
            f"{applied_counter(g) if 'durable' in g or 'applied' in g else '-'} "
            f"retained {g.get('log_retained_entries', 0)}" for g in row["groups"])
        pairs = ", ".join(f"{p['side']} LUN {p['source_lun']}->{p['target_lun']} {p['state']}"
                          + (f" (727: {p['bitmap_727_tracks']} tracks)"
                             if p.get("bitmap_727_tracks") else "")
                          + _why_stopped(p)
                          for p in row.get("pairs", []))
        return (f"{groups or 'no groups'}; pairs: {pairs or 'none'}; ack p99 "
                f"{_ms(row['ack_latency_p99_s'])} lag p99 {_ms(row['lag_p99_s'])}")
    if row["role"] == "wanem":
        return "; ".join(f"LINK{k['link']} {'>'.join(k['between'])} {k['state']} "
                         f"{k['delay_ms']:g} ms {k['loss_percent']:g}% loss: in {k['in']} "
                         f"out {k['out']} dropped {k['dropped']}" for k in row["links"])
    if row["role"] == "mgmt":
        current = [d for d, ok in sorted(row["up_to_date"].items()) if ok]
        return (f"settings version {row['version']}; {len(current)} of "
                f"{len(row['up_to_date'])} devices up to date")
    drops = sum(row["drops"].values())
    return f"forwarded {row['forwarded']}, batches {row['batches_sent']}, drops {drops}" + (
        f" ({', '.join(f'{k} {v}' for k, v in sorted(row['drops'].items()))})" if drops else "")


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def describe_up(lab: dict) -> str:
    rows = []
    for d in lab["devices"]:
        ports = " ".join(f"{k}={v}" for k, v in d["ports"].items())
        rows.append({"device": d["name"], "role": d["role"], "pid": d["pid"], "ports": ports,
                     "wwn": d.get("wwn", "")})
    lines = [table(rows, ["device", "role", "pid", "wwn", "ports"]), ""]
    for p in lab["pairs"]:
        lines.append(f"pair group {p['group']}: arrayA LUN {p['source_lun']} -> arrayB LUN "
                     f"{p['target_lun']}  host NBD: {p['nbd_url']}")
    lines.append(f"lab record: {lab_file(lab['dir'])}; stop with: rcn lab down --dir {lab['dir']}")
    return "\n".join(lines)


def describe_status(body: dict) -> str:
    rows = [{"device": r["name"], "role": r["role"], "pid": r["pid"],
             "alive": "yes" if r["alive"] else "no", "figures": summary(r)}
            for r in body["devices"]]
    return table(rows, ["device", "role", "pid", "alive", "figures"])


def describe_down(report: list[dict], directory: str) -> str:
    if not report:
        return f"no lab in {os.path.abspath(directory)}: nothing to stop"
    return "\n".join(f"{r['name']}: pid {r['pid']}: {r['result']}" for r in report)


# -- the command line ---------------------------------------------------------------------------

def add_parser(groups) -> None:
    lab = groups.add_parser("lab", help="a whole RCN on this machine (real daemons on loopback)",
                            description="Start, inspect and stop a lab: arrays, edges and cores "
                                        "as twistd processes on loopback ports.")
    actions = lab.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("up", help="write the configurations, start the daemons, wait until "
                                      "ready")
    p.add_argument("--topology", help="topology TOML file (default: 2 arrays, 2 edges, 1 core, "
                                      "one pair)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the lab to be ready (default 60)")
    for name, sub in (("up", p),
                      ("status", actions.add_parser("status", help="processes and key figures")),
                      ("down", actions.add_parser("down", help="stop the lab's processes"))):
        sub.add_argument("--dir", default="rcn-lab", help="lab directory (default ./rcn-lab)")
        if name != "down":
            sub.add_argument("--json", action="store_true", help="print JSON")
    lab.set_defaults(run=run)


def run(args) -> str:
    try:
        if args.action == "up":
            try:
                topology = load_topology(args.topology)
            except ConfigError as exc:
                raise LabError(f"topology: {exc}", 2) from None
            lab = up(topology, args.dir, args.timeout)
            return json.dumps(lab, indent=1) if args.json else describe_up(lab)
        if args.action == "status":
            body = status(args.dir)
            return json.dumps(body, indent=1) if args.json else describe_status(body)
        return describe_down(down(args.dir), args.dir)
    except LabError as exc:
        from rcn.cli import CliError
        raise CliError(str(exc), exc.status) from None
