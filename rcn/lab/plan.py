"""The lab's plan: names, ports and every device's configuration document.

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

Sealing (DESIGN.md 9; the topology's ``seal``, sealed by default): every edge and core
has a ``[seal]`` table. A static lab's keys are made here (:func:`key_rings`): one link
key per link of the path (its two neighbours' addresses, as each of them sees the
other) and one group key per order guarantee group, each device's own in
``DIR/keys/NAME.keys`` (0600, in a 0700 directory): a core its links only, an edge its
links and its pairs' groups. A restart makes new link keys (new ports) and keeps the
group keys (an edge's log holds entries sealed under them). Under a management server
the keys come in its snapshots: an edge keeps them in ``DATA_DIR/keys``, a core in
``DIR/keys/NAME.keys``. ``seal = "none"`` writes ``mode = "none"`` everywhere: for
measuring the seal's cost only (each daemon logs it).
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict

from datapath.frames.names import format_wwn, parse_wwn
from rcn.config import SEALED, UNSEALED
from rcn.core import config as core_config
from rcn.edge import config as edge_config
from rcn.logxfer.keys import KeyRing, new_key
from rcn.logxfer.routes import Address
from rcn.lab.topology import Topology, path_names
from rcn.mgmt import config as mgmt_config
from rcn.storage import config as storage_config
from rcn.wanem import config as wanem_config

PLUGINS = {"storage": "rcn-storage", "edge": "rcn-edge", "core": "rcn-core",
           "mgmt": "rcn-mgmt", "wanem": "rcn-wanem"}
LAB_CUSTOMER = "lab"
HOST = "127.0.0.1"
KEYS_DIR = "keys"               # the lab's key files, relative to its directory
RENDERERS = {"storage": storage_config.render, "edge": edge_config.render,
             "core": core_config.render, "mgmt": mgmt_config.render,
             "wanem": wanem_config.render}


def render_device(role: str, doc: dict) -> str:
    """A device's configuration document as its file, written by its role's own key
    table (so what the lab writes is what the daemon reads, key for key)."""
    return RENDERERS[role](doc)


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
                        **_key_file(topology, directory, name), "array": array,
                        "wwn": format_wwn(arrays[array][0]),
                        "data_dir": os.path.join(directory, name),
                        "ports": {"log": log, "fcip": fcip, "metrics": metrics},
                        "urls": {"status": f"http://{HOST}:{metrics}/status",
                                 "metrics": f"http://{HOST}:{metrics}/metrics"}})
    for name in cores:
        listen, metrics = udp.pop(0), tcp.pop(0)
        devices.append({"name": name, "role": "core", "plugin": PLUGINS["core"], **files(name),
                        **_key_file(topology, directory, name),
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
    pairs = _pairs(topology, {d["name"]: d for d in devices})
    topo = asdict(topology)
    topo["source_wwn"], topo["target_wwn"] = (format_wwn(topology.source_wwn),
                                              format_wwn(topology.target_wwn))
    return {"version": 1, "dir": directory, "started": None, "topology": topo,
            "devices": devices, "pairs": pairs, "nbd_url": pairs[0]["nbd_url"]}



def _key_file(topology: Topology, directory: str, name: str) -> dict:
    """An edge's or core's key file: the lab writes it (static), or the device keeps its
    management server's keys there (a core; an edge keeps them in its data directory)."""
    if not topology.sealed:
        return {}
    if topology.mgmt and name.startswith("edge"):
        return {"keys": os.path.join(directory, name, "keys")}
    return {"keys": os.path.join(directory, KEYS_DIR, f"{name}.keys")}


def _pairs(topology: Topology, by_name: dict) -> list[dict]:
    """The lab record's pairs: arrays, LUNs, group and both volumes."""
    volume_a = {v["lun"]: v for v in by_name["arrayA"]["volumes"]}
    volume_b = {v["lun"]: v for v in by_name["arrayB"]["volumes"]}
    return [{"source_array": "arrayA", "source_lun": p.lun, "target_array": "arrayB",
             "target_lun": p.target_lun, "group": p.group,
             "source_volume": volume_a[p.lun]["path"],
             "target_volume": volume_b[p.target_lun]["path"],
             "nbd_url": volume_a[p.lun]["nbd_url"], "capacity": p.capacity}
            for p in topology.pairs]

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
        if d["role"] in ("edge", "core"):
            out[d["name"]]["seal"] = _seal_table(lab, d)
        if d.get("console") and d["role"] != "wanem":
            out[d["name"]]["console"] = {"serial": "pty", "pty_link": d["console"]}
    return out


def _seal_table(lab: dict, device: dict) -> dict:
    """An edge's or core's ``[seal]``: its key file (relative to the lab directory), or
    ``mode = "none"`` for a lab with ``seal = "none"``."""
    if lab["topology"].get("seal", SEALED) == UNSEALED:
        return {"mode": UNSEALED}
    if device["role"] == "edge" and lab["topology"].get("mgmt"):
        return {}                              # the default: DATA_DIR/keys
    return {"keys": os.path.relpath(device["keys"], lab["dir"])}


def key_rings(lab: dict, groups: KeyRing | None = None) -> dict[str, KeyRing]:
    """A static lab's keys, by device (edges and cores): a new link key for every link of
    the path, named by the two addresses as each end sees the other (through a WAN
    emulator link, its ports); a group key for every group of the lab's pairs, at both
    edges only -- ``groups``' keys where it has them (a restart: the edges' logs hold
    entries sealed under them), else new ones."""
    chain = path_names(lab["topology"]["cores"])
    by_name = {d["name"]: d for d in lab["devices"]}
    rings = {name: KeyRing() for name in chain}
    for i, (up, down) in enumerate(zip(chain, chain[1:])):
        key = new_key(1)
        for me, peer_at in ((up, i + 1), (down, i)):
            here = Address.parse(f"{HOST}:{by_name[me]['ports']['log']}")
            rings[me].add_link(here, Address.parse(_path(lab, me)[peer_at]), key)
    for group in sorted({p["group"] for p in lab["pairs"]}):
        kept = (groups.groups.get(group) if groups is not None else None) or {1: new_key(1)}
        for edge in ("edgeA", "edgeB"):
            for key in kept.values():
                rings[edge].add_group(group, key)
    return rings


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

