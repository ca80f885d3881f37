"""``rcn``: the operator's and customer's command line.

Groups: ``rcn array`` talks to a storage array emulator's control API
(``rcn-storage``, JSON over HTTP); ``rcn lab up|status|down`` runs a whole RCN
on this machine as real daemons (``rcn.lab``); ``rcn demo`` writes through such
a lab and proves the target equals the source (``rcn.demo``).

Exit status: 0 success, 1 the device answered with an error, 2 bad usage or
the device could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

DEFAULT_ARRAY_URL = "http://127.0.0.1:47200"


class CliError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _get(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise CliError(f"{url}: {exc.code} {reason}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach {url}: {reason}", 2) from None


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _array(args) -> str:
    base = args.url.rstrip("/")
    if args.what == "status":
        body = _get(f"{base}/status", args.timeout)
        return json.dumps(body, indent=1, sort_keys=True) if args.json else "\n".join(
            f"{k}: {json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}"
            for k, v in sorted(body.items()))
    if args.what == "volumes":
        body = _get(f"{base}/volumes", args.timeout)
        return json.dumps(body, indent=1) if args.json else _table(
            body["volumes"], ["lun", "name", "capacity", "path"])
    if args.lun is not None:
        body = _get(f"{base}/pairs/{args.lun}", args.timeout)
        rows = [body]
    else:
        body = _get(f"{base}/pairs", args.timeout)
        rows = body["pairs"]
    return json.dumps(body, indent=1) if args.json else _table(
        rows, ["lun", "partner_wwpn", "partner_lun", "group", "state", "mode"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcn", description="Operate RCN devices.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    array = groups.add_parser("array", help="a storage array emulator (rcn-storage)",
                              description="Query an rcn-storage array over its control API.")
    array.add_argument("what", choices=("status", "volumes", "pairs"), help="what to show")
    array.add_argument("lun", nargs="?", type=int, help="pairs: only the pair of this source LUN")
    array.add_argument("--url", default=DEFAULT_ARRAY_URL,
                       help=f"the array's control API (default {DEFAULT_ARRAY_URL})")
    array.add_argument("--json", action="store_true", help="print the JSON answer")
    array.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    array.set_defaults(run=_array)
    from rcn import demo, lab
    lab.add_parser(groups)
    demo.add_parser(groups)
    return parser


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        out.write(args.run(args) + "\n")
    except CliError as exc:
        print(f"rcn: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
