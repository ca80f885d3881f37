"""``rcn key list|rotate``: the management server's log-transfer keys (operator).

``rcn key list`` shows each link (its two log-transfer addresses) and each order
guarantee group with its epochs: ``send`` (sealing with it), ``pending`` (accepted,
not yet sealing: devices are being given it; it sends once every device that needs it
has acknowledged it) or ``retiring`` (accepted during the overlap, and until every device
has acknowledged the snapshot in which its successor sends), their ages, deadlines
(pending: until the server warns; retiring: until the overlap ends), the devices each
epoch waits for (``WAITING_FOR``), and when the next scheduled rotation is. ``rcn key rotate
--link A B | --group N | --all`` starts a rotation (``POST /api/v1/keys/rotate``).
Neither ever shows key material: the API has none to give.
"""

from __future__ import annotations

import json

from rcn.cli.kit import CliError, table
from rcn.cli.mgmt import api, common

COLUMNS = ["link_or_group", "holders", "epoch", "state", "age", "deadline", "waiting_for",
           "next_rotation"]


def _seconds(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


def _rows(body: dict) -> list[dict]:
    rows = []
    named = [(f"{r['a']} - {r['b']}", r) for r in body.get("links", [])]
    named += [(f"group {r['group']}", r) for r in body.get("groups", [])]
    for name, r in named:
        holders = ",".join(r.get("holders") or []) or ("-" if r.get("in_use") else "(unused)")
        for e in r.get("epochs", []):
            rows.append({"link_or_group": name, "holders": holders, "epoch": e["epoch"],
                         "state": e["state"], "age": _seconds(e.get("age_s")),
                         "deadline": _seconds(e.get("deadline_in_s")),
                         "waiting_for": ",".join(e.get("waiting_for") or []) or "-",
                         "next_rotation": _seconds(r.get("next_rotation_in_s"))})
    return rows


def run_key(args) -> str:
    chosen = bool(args.link) + (args.group is not None) + bool(args.all)
    if args.action == "rotate" and chosen != 1:
        raise CliError("rcn key rotate: give --link A B, --group N or --all", 2)
    if args.action == "list" and chosen:
        raise CliError("rcn key list takes no --link, --group or --all", 2)
    if args.action == "list":
        body = api(args, "/keys")
        return json.dumps(body, indent=1, sort_keys=True) if args.json else \
            table(_rows(body), COLUMNS)
    if args.link:
        request = {"link": list(args.link)}
    elif args.group is not None:
        request = {"group": args.group}
    else:
        request = {"all": True}
    body = api(args, "/keys/rotate", "POST", request)
    if args.json:
        return json.dumps(body, indent=1, sort_keys=True)
    lines = [f"{r['kind']} {r['name']}: epoch {r['epoch']} distributed (accept-only until "
             f"every device has it)" for r in body.get("rotated", [])]
    lines += [f"{r['kind']} {r['name']}: not rotated: {r['reason']}"
              for r in body.get("skipped", [])]
    return "\n".join(lines) or "nothing to rotate"


def add_parser(groups) -> None:
    p = groups.add_parser("key", help="log-transfer keys: list, rotate (operator)")
    p.add_argument("action", choices=("list", "rotate"))
    which = p.add_mutually_exclusive_group()
    which.add_argument("--link", nargs=2, metavar=("A", "B"),
                       help="rotate the key of the link between log-transfer addresses "
                            "A and B (HOST:PORT)")
    which.add_argument("--group", type=int, help="rotate the key of order guarantee group N")
    which.add_argument("--all", action="store_true", help="rotate every link's and group's key")
    common(p)
    p.set_defaults(run=run_key)

