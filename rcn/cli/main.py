"""``rcn``'s entry point: the parser of every group, and the exit status."""

from __future__ import annotations

import argparse
import sys

from rcn.cli import array, demo, key, lab, mgmt
from rcn.cli.kit import CliError
from rcn.httpjson import RequestError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcn", description="Operate RCN devices.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    array.add_parser(groups)
    lab.add_parser(groups)
    demo.add_parser(groups)
    mgmt.add_parsers(groups)
    key.add_parser(groups)
    return parser


def main(argv: list[str] | None = None, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    args.out, args.err = out, err
    try:
        out.write(args.run(args) + "\n")
    except (CliError, RequestError) as exc:
        print(f"rcn: {exc}", file=err)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
