"""``rcn array``: a storage array emulator's control API (``rcn-storage``, JSON over HTTP).

It shows the array and runs the pair lifecycle (pair-create, suspend, resync,
takeover, reverse, pair-delete).
"""

from __future__ import annotations

import argparse
import json
import time

from rcn.cli.kit import CliError, table
from rcn.httpjson import request_json
from rcn.progress import Progress, mode_for

DEFAULT_ARRAY_URL = "http://127.0.0.1:47200"
COPYING = ("initial-copying", "duplex-pending")


def _get(url: str, timeout: float) -> dict:
    return request_json(url, timeout)


def _mib(n) -> str:
    return "-" if n is None else f"{n / (1 << 20):.1f} MiB"


def _progress_text(pair: dict) -> str:
    copy = pair.get("copy")
    if not copy:
        return "-"
    return (f"{copy['kind']} {copy['outcome']} {_mib(copy['bytes_copied'])} / "
            f"{_mib(copy['bytes_total'])}")


def _summary(pair: dict) -> str:
    """One pair, as the commands print it."""
    arrow = "->" if pair["role"] == "source" else "<-"
    lines = [f"pair LUN {pair['lun']} ({pair['role']}) {arrow} {pair['partner_wwpn']} LUN "
             f"{pair['partner_lun']}: {pair['state']}",
             f"  group {pair['group']}, mode {pair['mode']}, bitmap {pair['bitmap']}: "
             f"{pair['dirty_tracks']} dirty tracks ({_mib(pair['dirty_bytes'])})"]
    if pair.get("copy"):
        lines.append(f"  copy: {_progress_text(pair)}, {pair['copies_completed']} completed")
    if pair.get("residual"):
        r = pair["residual"]
        lines.append(f"  residual at the target edge: applied {r['applied']}, received up to "
                     f"{r['received_max']}, discarded {r['discarded']}, known missing "
                     f"{r['known_missing']}")
    if pair.get("last_error"):
        lines.append(f"  last error: {pair['last_error']}")
    return "\n".join(lines)


PAIR_COLUMNS = ["lun", "role", "state", "partner_wwpn", "partner_lun", "group", "mode",
                "dirty_tracks", "copy"]


def _pair_rows(pairs: list[dict]) -> list[dict]:
    return [dict(p, copy=_progress_text(p)) for p in pairs]


def wait_for_duplex(base: str, lun: int, timeout: float, err, interval: float = 0.5,
                    sleep=time.sleep) -> dict:
    """Poll the pair until duplex (returns it) or it leaves the copy (CliError with the reason).

    Shows the copy's progress on ``err``: a bar on a terminal, plain lines otherwise.
    """
    progress = None
    run = None
    while True:
        pair = _get(f"{base}/pairs/{lun}", timeout)
        copy = pair.get("copy")
        if copy and (progress is None or copy["started"] != run):
            run = copy["started"]
            progress = Progress(copy["bytes_total"], err, mode_for(err), label="copying")
        state = pair["state"]
        if state == "duplex":
            if progress is not None:
                progress.update(copy["bytes_copied"], final=True)
            return pair
        if state not in COPYING:
            if progress is not None:
                progress.update(copy["bytes_copied"], final=True)
            why = f": {pair['last_error']}" if pair.get("last_error") else ""
            raise CliError(f"pair LUN {lun} is {state}, not duplex{why}", 1)
        if progress is not None:
            progress.update(copy["bytes_copied"])
        sleep(interval)


def _array(args) -> str:
    base = args.url.rstrip("/")
    timeout = args.timeout
    cmd = args.what

    def show(body, text):
        return json.dumps(body, indent=1, sort_keys=True) if args.json else text
    if cmd == "status":
        body = _get(f"{base}/status", timeout)
        return show(body, "\n".join(
            f"{k}: {json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}"
            for k, v in sorted(body.items())))
    if cmd == "volumes":
        body = _get(f"{base}/volumes", timeout)
        return show(body, table(body["volumes"], ["lun", "name", "capacity", "path"]))
    if cmd == "pairs":
        if args.lun is not None:
            body = _get(f"{base}/pairs/{args.lun}", timeout)
            rows = [body]
        else:
            body = _get(f"{base}/pairs", timeout)
            rows = body["pairs"]
        return show(body, table(rows, ["lun", "partner_wwpn", "partner_lun", "group", "state",
                                        "mode"]))
    if cmd == "pair-status":
        return _pair_status(args, base)
    if cmd == "pair-create":
        body = {"lun": args.lun, "partner_wwpn": args.partner, "partner_lun": args.partner_lun,
                "mode": args.mode, "group": args.group}
        pair = request_json(f"{base}/pairs", timeout, "POST", body)
    elif cmd == "suspend":
        pair = request_json(f"{base}/pairs/{args.lun}/suspend", timeout, "POST", {"fast": args.fast})
    elif cmd == "pair-delete":
        query = "?local=1" if args.local else ""
        pair = request_json(f"{base}/pairs/{args.lun}{query}", timeout, "DELETE")
    else:                                      # resync, takeover, reverse
        pair = request_json(f"{base}/pairs/{args.lun}/{cmd}", timeout, "POST", {})
    if getattr(args, "wait", False):
        pair = wait_for_duplex(base, args.lun, timeout, args.err, args.interval)
    if cmd == "pair-delete":
        return show(pair, f"pair LUN {args.lun} deleted"
                          + (" (this array's row only)" if args.local else ""))
    return show(pair, _summary(pair))


def _pair_status(args, base: str) -> str:
    def once() -> str:
        if args.lun is not None:
            pair = _get(f"{base}/pairs/{args.lun}", args.timeout)
            return json.dumps(pair, indent=1, sort_keys=True) if args.json else _summary(pair)
        body = _get(f"{base}/pairs", args.timeout)
        return (json.dumps(body, indent=1, sort_keys=True) if args.json
                else table(_pair_rows(body["pairs"]), PAIR_COLUMNS))
    if not args.watch:
        return once()
    try:
        while True:
            args.out.write(f"-- {time.strftime('%H:%M:%S')}\n{once()}\n")
            args.out.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return ""


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """--url, --json, --timeout; ``suppress``: no defaults (the commands' copy, so an option
    given before the command is not reset by the command's defaults)."""
    def default(value):
        return argparse.SUPPRESS if suppress else value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=default(DEFAULT_ARRAY_URL),
                        help=f"the array's control API (default {DEFAULT_ARRAY_URL})")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print the JSON answer")
    common.add_argument("--timeout", type=float, default=default(10.0),
                        help="seconds per request (default 10)")
    return common


def add_parser(groups) -> None:
    common = _common_options(suppress=True)
    array = groups.add_parser(
        "array", help="a storage array emulator (rcn-storage): show it, run its pairs",
        description="Query an rcn-storage array and run its remote copy pairs over its control "
                    "API. A pair command answers when the partner has answered (pair-create: "
                    "once the partner took the pair and the initial copy started).",
        parents=[_common_options(suppress=False)])
    array.set_defaults(run=_array)
    commands = array.add_subparsers(dest="what", required=True, metavar="COMMAND")

    def command(name, help_text, lun="required"):
        p = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        if lun == "required":
            p.add_argument("lun", type=int, help="this array's volume (LUN) in the pair")
        elif lun == "optional":
            p.add_argument("lun", nargs="?", type=int, help="only the pair of this LUN")
        return p

    command("status", "the array: names, edge link, counters", lun=None)
    command("volumes", "the volumes: LUN, export name, capacity, file", lun=None)
    command("pairs", "the pair table (one pair with LUN)", lun="optional")
    p = command("pair-status", "pairs with state, role, dirty tracks and copy progress; one "
                               "pair in detail with LUN", lun="optional")
    p.add_argument("--watch", action="store_true", help="show it again every --interval "
                                                        "seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds (default 2)")
    p = command("pair-create", "make this volume the source of a pair with the partner's "
                               "volume; the initial copy then copies its allocated extents")
    p.add_argument("--partner", required=True, metavar="WWN",
                   help="the partner array's WWPN (50:0a:09:80:00:00:00:02)")
    p.add_argument("--partner-lun", required=True, type=int, metavar="N",
                   help="the partner's volume (the target LUN)")
    p.add_argument("--mode", choices=("sync", "async"), default="sync",
                   help="sync: a host write completes after the partner's WROK; async: after "
                        "the local write (default sync)")
    p.add_argument("--group", type=int, default=0,
                   help="order guarantee ID (default 0: the edge chooses by its policy)")
    p = command("suspend", "stop copying: at the source, host writes are then recorded in the "
                           "bitmap; at the target, failover (the edge flushes what the source "
                           "edge holds, then the target volume takes host writes)")
    p.add_argument("--fast", action="store_true",
                   help="failover without waiting for the flush; prints the target edge's "
                        "residual report (target only)")
    p = command("resync", "copy what changed while suspended (the bitmaps of both sides) and "
                          "return to duplex (source only)")
    command("takeover", "at the target, when the source side cannot be reached: stop at the "
                        "last applied write, take host writes; prints the residual report")
    command("reverse", "turn a suspended pair round on this array only (source becomes target "
                       "and back), keeping its bitmap; run it on both arrays, then resync from "
                       "the new source")
    p = command("pair-delete", "dissolve the pair (the partner drops its row too)")
    p.add_argument("--local", action="store_true",
                   help="drop this array's row only, without telling the partner (for a "
                        "partner that cannot be reached)")
    for name in ("pair-create", "resync"):
        p = commands.choices[name]
        p.add_argument("--wait", action="store_true",
                       help="then wait until the pair is duplex, showing the copy's progress on "
                            "stderr (a bar on a terminal, plain lines otherwise); exit 1 if it "
                            "stops")
        p.add_argument("--interval", type=float, default=0.5,
                       help="seconds between polls with --wait (default 0.5)")
