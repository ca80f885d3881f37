"""``rcn customer|device|link|storage|pair|route|status|lag``: the management server's API
(``rcn key``: :mod:`rcn.cli.key`).

Every command talks to ``rcn-mgmt``'s REST API (``--mgmt URL``, default
``$RCN_MGMT_URL`` or ``http://127.0.0.1:47180``) with a token (``--token``, default
``$RCN_TOKEN``): the operator's token for settings of the network, a customer's
for its own storages and pairs. Output is a table, or the API's JSON with
``--json``. Errors print the server's message (it names the field) and exit 1;
an unreachable server exits 2.
"""

from __future__ import annotations

import json
import os
import time

from rcn.cli.kit import CliError, table
from rcn.groups import POLICIES
from rcn.httpjson import request_json

DEFAULT_MGMT_URL = "http://127.0.0.1:47180"
PAIR_COLUMNS = ["id", "customer", "source", "target", "group", "policy", "state", "lag_ms",
                "residual_entries", "throughput_mbs"]


def api(args, path: str, method: str = "GET", body: dict | None = None) -> dict:
    return request_json(args.mgmt.rstrip("/") + "/api/v1" + path, args.timeout, method, body,
                        args.token)


def shown(args, body, rows, columns) -> str:
    return json.dumps(body, indent=1, sort_keys=True) if args.json else table(rows, columns)


def _wwn_lun(text: str) -> tuple[str, int]:
    wwn, sep, lun = text.rpartition(":")
    if not sep or not lun.isdigit() or not wwn:
        raise CliError(f"{text!r}: expected WWN:LUN, e.g. 50:0a:09:80:00:00:00:01:0", 2)
    return wwn, int(lun)


def _lag_ms(lag) -> str:
    return "-" if lag is None else f"{lag * 1000:.1f}ms"


def _pair_rows(pairs: list[dict]) -> list[dict]:
    rows = []
    for p in pairs:
        lag, rate = p.get("lag_s"), p.get("throughput_bps")
        rows.append(dict(p, customer=p.get("customer_id"),
                         source=f"{p['source_wwn']}:{p['source_lun']}",
                         target=f"{p['target_wwn']}:{p['target_lun']}",
                         state=p.get("state") or "-",
                         lag_ms="-" if lag is None else f"{lag * 1000:.1f}",
                         throughput_mbs="-" if rate is None else f"{rate / 1e6:.2f}",
                         residual_entries="-" if p.get("residual_entries") is None
                         else p["residual_entries"]))
    return rows


# -- the commands ---------------------------------------------------------------------------

def run_customer(args) -> str:
    if args.action == "add":
        body = {"id": args.id, "name": args.name or args.id}
        if args.allowed_edges:
            body["allowed_edges"] = args.allowed_edges.split(",")
        for key in ("max_storages", "max_pairs"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        answer = api(args, "/customers", "POST", body)
        return json.dumps(answer, indent=1) if args.json else (
            f"customer {answer['id']} added; its token (shown once): {answer['token']}")
    if args.action == "token":
        answer = api(args, f"/customers/{args.id}/token", "POST", {})
        return json.dumps(answer) if args.json else f"new token for {args.id}: {answer['token']}"
    if args.action == "delete":
        api(args, f"/customers/{args.id}", "DELETE")
        return f"customer {args.id} deleted"
    body = api(args, "/customers" + (f"/{args.id}" if args.id else ""))
    rows = body.get("customers", [body])
    return shown(args, body, rows, ["id", "name", "allowed_edges", "max_storages", "max_pairs"])


def run_device(args) -> str:
    if args.action == "add":
        body = {"id": args.id, "role": args.role, "log_address": args.log,
                "processing_limit": args.limit, "failure_domain": args.domain}
        api(args, "/devices", "POST", body)
        return f"device {args.id} added"
    if args.action == "delete":
        api(args, f"/devices/{args.id}", "DELETE")
        return f"device {args.id} deleted (routes recomputed)"
    body = api(args, "/devices")
    rows = [d for d in body["devices"] if not args.id or d["id"] == args.id]
    return shown(args, body, rows, ["id", "role", "log_address", "processing_limit",
                                   "failure_domain", "connected", "version", "up_to_date"])


def run_link(args) -> str:
    if args.action == "add":
        api(args, "/links", "POST", {"a": args.a, "b": args.b, "capacity": args.capacity,
                                      "latency_ms": args.latency_ms})
        return f"link {args.a} - {args.b} added"
    if args.action == "delete":
        api(args, f"/links/{args.a}/{args.b}", "DELETE")
        return f"link {args.a} - {args.b} deleted"
    body = api(args, "/links")
    return shown(args, body, body["links"], ["a", "b", "capacity", "latency_ms"])


def run_storage(args) -> str:
    if args.action == "add":
        body = {"storage_wwn": args.wwn, "edge_id": args.edge}
        if args.customer:
            body["customer_id"] = args.customer
        if args.virtual_wwn:
            body["virtual_wwn"] = args.virtual_wwn
        api(args, "/storages", "POST", body)
        return f"storage {args.wwn} connected to {args.edge}"
    if args.action == "delete":
        api(args, f"/storages/{args.wwn}", "DELETE")
        return f"storage {args.wwn} disconnected"
    body = api(args, "/storages")
    return shown(args, body, body["storages"], ["storage_wwn", "edge_id", "customer_id",
                                               "virtual_wwn"])


def run_pair(args) -> str:
    if args.action == "add":
        source_wwn, source_lun = _wwn_lun(args.source)
        target_wwn, target_lun = _wwn_lun(args.target)
        body = {"source_wwn": source_wwn, "source_lun": source_lun, "target_wwn": target_wwn,
                "target_lun": target_lun, "policy": args.policy, "group": args.group,
                "load_bytes": args.load_bytes, "load_entries": args.load_entries}
        if args.customer:
            body["customer_id"] = args.customer
        answer = api(args, "/pairs", "POST", body)
        return json.dumps(answer, indent=1) if args.json else (
            f"pair {answer['id']} added (group {answer['group']})")
    if args.action == "delete":
        api(args, f"/pairs/{args.id}", "DELETE")
        return f"pair {args.id} deleted"
    body = api(args, "/pairs" + (f"/{args.id}" if args.id is not None else ""))
    pairs = body.get("pairs", [body])
    return shown(args, body, _pair_rows(pairs), PAIR_COLUMNS)


def run_route(args) -> str:
    if args.action == "recompute":
        body = api(args, "/routes/recompute", "POST", {})
    else:
        body = api(args, "/routes")
    rows = [dict(r, path=" > ".join(r["path"])) for r in body["routes"]]
    rows += [{"source_wwn": r["source_wwn"], "target_wwn": r["target_wwn"],
              "path": f"NO PATH: {r['reason']}"} for r in body.get("infeasible", [])]
    return shown(args, body, rows, ["source_wwn", "target_wwn", "path"])


def run_status(args) -> str:
    body = api(args, "/status")
    return shown(args, body, _pair_rows(body["pairs"]), PAIR_COLUMNS)


def run_lag(args, out=None, clock=time) -> str:
    """Lag per pair; with ``--watch``, a line every ``--interval`` seconds until Ctrl-C."""
    def line() -> str:
        body = api(args, "/status")
        parts = [f"{p['id']}:{_lag_ms(p.get('lag_s'))}" for p in body["pairs"]]
        return time.strftime("%H:%M:%S ") + (" ".join(parts) or "no pairs")
    if not args.watch:
        return line()
    try:
        for _ in range(args.count or 1 << 62):
            print(line(), file=out, flush=True)
            clock.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return ""


def common(parser) -> None:
    """The options every management command takes: the server, the token, the output."""
    parser.add_argument("--mgmt", default=os.environ.get("RCN_MGMT_URL", DEFAULT_MGMT_URL),
                        help="the management server (default $RCN_MGMT_URL or "
                             f"{DEFAULT_MGMT_URL})")
    parser.add_argument("--token", default=os.environ.get("RCN_TOKEN"),
                        help="API token (default $RCN_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def add_parsers(groups) -> None:
    """Add the management commands to the ``rcn`` parser's groups."""
    p = groups.add_parser("customer", help="customers and contracts (operator)")
    p.add_argument("action", choices=("list", "show", "add", "delete", "token"))
    p.add_argument("id", nargs="?")
    p.add_argument("--name")
    p.add_argument("--allowed-edges", help="comma-separated edge IDs (default: any)")
    p.add_argument("--max-storages", type=int)
    p.add_argument("--max-pairs", type=int)
    common(p)
    p.set_defaults(run=run_customer)

    p = groups.add_parser("device", help="edges and cores (operator; list shows health)")
    p.add_argument("action", choices=("list", "show", "add", "delete"))
    p.add_argument("id", nargs="?")
    p.add_argument("--role", choices=("edge", "core"))
    p.add_argument("--log", help="log-transfer address HOST:PORT")
    p.add_argument("--limit", type=float, default=0.0, help="core: entries/s it can relay")
    p.add_argument("--domain", default="", help="failure domain")
    common(p)
    p.set_defaults(run=run_device)

    p = groups.add_parser("link", help="links between devices (operator)")
    p.add_argument("action", choices=("list", "add", "delete"))
    p.add_argument("a", nargs="?")
    p.add_argument("b", nargs="?")
    p.add_argument("--capacity", type=float, default=0.0, help="bytes/s (0: no limit)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    common(p)
    p.set_defaults(run=run_link)

    p = groups.add_parser("storage", help="storages attached to edges (table 503)")
    p.add_argument("action", choices=("list", "add", "delete"))
    p.add_argument("wwn", nargs="?")
    p.add_argument("--edge")
    p.add_argument("--customer", help="operator: the customer it belongs to")
    p.add_argument("--virtual-wwn", help="show partners to it under this WWN (【0093】)")
    common(p)
    p.set_defaults(run=run_storage)

    p = groups.add_parser("pair", help="pairs whose write order the RCN guarantees")
    p.add_argument("action", choices=("list", "show", "add", "delete"))
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--source", help="WWN:LUN")
    p.add_argument("--target", help="WWN:LUN")
    p.add_argument("--policy", choices=POLICIES, default="A-1")
    p.add_argument("--group", type=int, default=0, help="order guarantee ID (policy B)")
    p.add_argument("--customer", help="operator: the customer it belongs to")
    p.add_argument("--load-bytes", type=float, default=0.0, help="expected bytes/s")
    p.add_argument("--load-entries", type=float, default=0.0, help="expected writes/s")
    common(p)
    p.set_defaults(run=run_pair)

    p = groups.add_parser("route", help="computed routes (table 408)")
    p.add_argument("action", choices=("list", "recompute"))
    common(p)
    p.set_defaults(run=run_route)

    p = groups.add_parser("status", help="pairs: state, lag, residual entries, throughput")
    common(p)
    p.set_defaults(run=run_status)

    p = groups.add_parser("lag", help="lag per pair (now minus the I/O time applied)")
    p.add_argument("--watch", action="store_true", help="a line every --interval seconds")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--count", type=int, help="with --watch: stop after this many lines")
    common(p)
    p.set_defaults(run=run_lag)
