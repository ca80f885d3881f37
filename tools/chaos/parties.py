"""What the parties show: the pair as the arrays, edges and management server report it,
and why it is not Duplex (caught up) everywhere yet."""

from __future__ import annotations

import urllib.error

from rcn import lab as lablib
from rcn.lab import group_status

HTTP_TIMEOUT = 1.0


def fetch_json(url: str) -> dict:
    return lablib.get_json(url, HTTP_TIMEOUT)


def _answer(what, call):
    try:
        return call()
    except (urllib.error.URLError, OSError, ValueError, lablib.LabError) as exc:
        return {"error": f"{what}: {getattr(exc, 'reason', exc)}"}


def parties(lab: dict) -> dict:
    """The pair as each party shows it: arrays (FCIP link, pair rows), edges (pair rows,
    group counters), the management server (pairs, devices up to date)."""
    devices = {d["name"]: d for d in lab["devices"]}
    view: dict = {}
    for name in ("arrayA", "arrayB"):
        control = devices[name]["urls"]["control"]

        def array(control=control):
            status = fetch_json(control + "/status")
            pairs = fetch_json(control + "/pairs").get("pairs", [])
            return {"edge_link": status.get("edge_link"),
                    "pairs": [{k: p.get(k) for k in ("lun", "role", "state", "group",
                                                     "dirty_tracks", "last_error")}
                              for p in pairs]}
        view[name] = _answer(f"{name} control", array)
    for name in ("edgeA", "edgeB"):
        def edge(name=name):
            body = fetch_json(devices[name]["urls"]["status"])
            return {"pairs": [{k: p.get(k) for k in ("side", "source_lun", "target_lun",
                                                     "group", "state", "bitmap_727_tracks")}
                              for p in body.get("pairs", [])],
                    "groups": [{k: g.get(k) for k in ("group", "log_generation", "durable",
                                                      "log_retained_entries",
                                                      "log_outstanding") if k in g}
                               for g in body.get("groups", [])],
                    "_status": body}
        view[name] = _answer(f"{name} /status", edge)
    if "mgmt" in devices:
        def mgmt():
            pairs = lablib.api(lab, "GET", "/pairs", timeout=HTTP_TIMEOUT)["pairs"]
            listed = lablib.api(lab, "GET", "/devices", timeout=HTTP_TIMEOUT)["devices"]
            return {"pairs": [{k: p.get(k) for k in ("id", "source_lun", "target_lun",
                                                     "group", "state")} for p in pairs],
                    "up_to_date": {d["id"]: d.get("up_to_date") for d in listed}}
        view["mgmt"] = _answer("mgmt API", mgmt)
    return view


def shown(view: dict) -> dict:
    """``view`` without the edges' whole /status bodies (for reports)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "_status"} for k, v in view.items()}


def describe(view: dict) -> list[str]:
    """One line per party of what ``view`` shows (for a stuck fault)."""
    lines = []
    for name, party in view.items():
        if "error" in party:
            lines.append(f"{name}: {party['error']}")
        elif name.startswith("array"):
            rows = ", ".join(f"LUN {r['lun']} {r['role']} {r['state']}"
                             + (f" ({r['last_error']})" if r.get("last_error") else "")
                             for r in party["pairs"])
            lines.append(f"{name}: edge link {party['edge_link']}; pairs: {rows or 'none'}")
        elif name.startswith("edge"):
            rows = ", ".join(f"{r['side']} LUN {r['source_lun']}->{r['target_lun']} {r['state']}"
                             + (f" (727: {r['bitmap_727_tracks']} tracks)"
                                if r.get("bitmap_727_tracks") else "") for r in party["pairs"])
            groups = ", ".join(f"group {g['group']} gen {g.get('log_generation')} retained "
                               f"{g.get('log_retained_entries')}"
                               + (f" applied {g['durable']}" if "durable" in g else "")
                               for g in party["groups"])
            lines.append(f"{name} /status: pairs: {rows or 'none'}; {groups or 'no groups'}")
        elif name == "mgmt":
            rows = ", ".join(f"pair {r['id']} {r['state']}" for r in party["pairs"])
            behind = [d for d, ok in party["up_to_date"].items() if not ok]
            lines.append(f"mgmt: {rows or 'no pairs'}; devices "
                         + (f"not up to date: {', '.join(behind)}" if behind else "up to date"))
    return lines


def not_duplex(lab: dict, view: dict) -> list[str]:
    """Why the lab's pairs are not Duplex everywhere (empty: they are)."""
    why = []
    for name, party in view.items():
        if "error" in party:
            why.append(party["error"])
    for p in lab["pairs"]:
        src, dst = p["source_lun"], p["target_lun"]
        for name, lun, role in (("arrayA", src, "source"), ("arrayB", dst, "target")):
            party = view.get(name, {})
            if "error" in party:
                continue
            if party["edge_link"] != "up":
                why.append(f"{name}: edge link {party['edge_link']}")
            row = next((r for r in party["pairs"] if r["lun"] == lun and r["role"] == role),
                       None)
            if row is None:
                why.append(f"{name}: no {role} pair row for LUN {lun}")
            elif row["state"] != "duplex":
                why.append(f"{name} LUN {lun}: {row['state']}"
                           + (f" ({row['last_error']})" if row.get("last_error") else ""))
        for name in ("edgeA", "edgeB"):
            party = view.get(name, {})
            if "error" in party:
                continue
            rows = [r for r in party["pairs"]
                    if (r["source_lun"], r["target_lun"]) == (src, dst)]
            if not rows and name == "edgeA":
                why.append(f"{name}: no pair row for LUN {src}->{dst}")
            why += [f"{name} {r['side']} LUN {src}->{dst}: {r['state']}" for r in rows
                    if r["state"] != "duplex"]
        party = view.get("mgmt")
        if party and "error" not in party:
            rows = [r for r in party["pairs"]
                    if (r["source_lun"], r["target_lun"]) == (src, dst)]
            why += [f"mgmt pair {r['id']}: {r['state']}" for r in rows if r["state"] != "duplex"]
    party = view.get("mgmt")
    if party and "error" not in party:
        behind = sorted(d for d, ok in party["up_to_date"].items() if not ok)
        if behind:
            why.append("mgmt: not up to date: " + ", ".join(behind))
    return why


def caught_up(lab: dict, view: dict, marks: dict) -> list[str]:
    """Groups whose target edge has not applied up to ``marks[group]`` (the source edge's
    generation when Duplex was first seen everywhere)."""
    target = view["edgeB"].get("_status", {})
    behind = []
    for group, mark in marks.items():
        applied = lablib.applied_counter(group_status(target, group))
        if applied < mark:
            behind.append(f"group {group}: target applied {applied} of {mark}")
    return behind


def generations(lab: dict, view: dict) -> dict:
    source = view["edgeA"].get("_status", {})
    return {g: group_status(source, g).get("log_generation", 0)
            for g in sorted({p["group"] for p in lab["pairs"]})}
