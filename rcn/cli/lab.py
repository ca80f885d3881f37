"""``rcn lab up|status|down``: the command over the library :mod:`rcn.lab`, and its text."""

from __future__ import annotations

import json
import os

from rcn import lab as lablib
from rcn.cli.kit import CliError, table
from rcn.config import ConfigError


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
            f"{lablib.applied_counter(g) if 'durable' in g or 'applied' in g else '-'} "
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
    if lab["topology"].get("seal") == "none":
        lines.append('log transfer NOT sealed (seal = "none"): anyone on the network can '
                     "forge, alter and replay entries; for measuring the seal's cost only")
    elif lab["topology"].get("mgmt"):
        lines.append("log transfer sealed (AES-256-GCM): keys from the management server")
    else:
        lines.append(f"log transfer sealed (AES-256-GCM): key files in "
                     f"{os.path.join(lab['dir'], 'keys')}")
    lines.append(f"lab record: {lablib.lab_file(lab['dir'])}; stop with: rcn lab down --dir "
                 f"{lab['dir']}")
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
                topology = lablib.load_topology(args.topology)
            except ConfigError as exc:
                raise lablib.LabError(f"topology: {exc}", 2) from None
            lab = lablib.up(topology, args.dir, args.timeout)
            return json.dumps(lab, indent=1) if args.json else describe_up(lab)
        if args.action == "status":
            body = lablib.status(args.dir)
            return json.dumps(body, indent=1) if args.json else describe_status(body)
        return describe_down(lablib.down(args.dir), args.dir)
    except lablib.LabError as exc:
        raise CliError(str(exc), exc.status) from None
