"""``python -m tools.chaos``: the options, the run, the table, the exit status."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from tools.chaos.catalogue import FAULTS, ROLES, plan
from tools.chaos.driver import Chaos, ChaosError
from tools.chaos.report import render


def _list(choices):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        return list(dict.fromkeys(items))
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.chaos",
                                description="Kill, stop and cut every role of a lab, and "
                                            "rotate its keys, under a journalled workload; "
                                            "judge each fault (see the module docstring).")
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="faults per role (default 3)")
    p.add_argument("--roles", type=_list(tuple(ROLES)), default=list(ROLES),
                   help="comma-separated roles (default all: " + ",".join(ROLES) + ")")
    p.add_argument("--faults", type=_list(FAULTS), default=list(FAULTS),
                   help="comma-separated fault kinds (default kill,stop,cut,rotate)")
    p.add_argument("--rate", type=float, default=200.0,
                   help="host writes per second (default 200)")
    p.add_argument("--recovery-timeout", type=float, default=60.0,
                   help="seconds each documented recovery step may take before the fault "
                        "counts as stuck (default 60)")
    p.add_argument("--dir", help="where the labs go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true",
                   help="keep the lab directories when the run failed")
    p.add_argument("--json", metavar="FILE", help="write the report (every fault) as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least 1")
    if not (args.rate > 0):
        parser.error(f"--rate {args.rate}: writes per second, more than 0")
    if not (args.recovery_timeout > 0):
        parser.error(f"--recovery-timeout {args.recovery_timeout}: seconds, more than 0")
    if not plan(args.roles, args.faults, 1, args.seed):
        parser.error(f"no fault of {','.join(args.faults)} applies to {','.join(args.roles)} "
                     "(arrays and mgmt are not cut)")
    temporary = args.dir is None
    args.dir = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="rcn-chaos-"))
    os.makedirs(args.dir, exist_ok=True)

    def say(text: str) -> None:
        print(text, flush=True)
    chaos = Chaos(args, say)
    try:
        report = chaos.run()
    except ChaosError as exc:
        print(f"chaos: {exc} (labs in {args.dir})", file=sys.stderr)
        return 1
    print(render(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if temporary:
        if report["passed"] or not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
        else:
            print(f"labs kept in {args.dir}")
    return 0 if report["passed"] else 1
