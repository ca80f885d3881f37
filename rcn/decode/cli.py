"""``rcn-decode``: decode RCN traffic offline.

Exit status: 0 when every frame decoded cleanly, 1 when any decode error,
CRC failure or damaged capture was seen, 2 for bad usage or an unreadable file.
"""

from __future__ import annotations

import argparse
import json
import sys

from datapath.frames import fcip, logentry
from rcn.decode.decoder import Decoder
from rcn.decode.filters import RecordFilter, walk
from rcn.decode.render import to_json, to_tree
from rcn.decode.summary import Summary, render_summary

EPILOG = """\
inputs (recognised by their first bytes):
  pcap / pcapng   Ethernet (FCIP over TCP, log entries over UDP), or FC with
                  link type 224 (bare FC-2) or 225 (FC-2 with SOF/EOF)
  FCIP stream     a file of concatenated FCIP frames, as a TCP payload
  hex text        one frame, datagram or stream per paragraph; '#' comments,
                  0x prefixes, spaces, colons and commas are ignored
  -               read standard input

kinds for --type: fcp_cmnd fcp_data fcp_xfer_rdy fcp_rsp els_<command>
  bls_abts bls_ba_acc bls_ba_rjt ct_gid_pn ct_accept ct_reject fcip_special
  log_wr log_wrok log_ctrl log_ctrl_ok log_nak log_batch log_keepalive error;
  a prefix matches a family (fcp, els, log); a log entry or batch matches
  through the FC units and entries inside it.

exit status: 0 clean, 1 decode errors or CRC failures seen, 2 usage or
unreadable input.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcn-decode", description="Decode RCN traffic: FCIP -> FC -> FCP/ELS/BLS/CT -> "
        "SCSI and RCN CONTROL, and log-transfer entries -> the FC frames inside them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="capture, FCIP stream or hex text")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per frame (fields in README.md)")
    parser.add_argument("--summary", action="store_true",
                        help="print counts, per-group sequence gaps and duplicates, lag and CRC "
                             "failures instead of the frames (a JSON object with --json)")
    parser.add_argument("--type", metavar="KINDS", help="only these kinds, comma-separated")
    parser.add_argument("--group", metavar="IDS", help="only log entries of these order "
                        "guarantee groups: 7 or 1,3-5")
    parser.add_argument("--seq", metavar="RANGES", help="only log entries with these sequence "
                        "numbers: 100-200,305")
    parser.add_argument("--wwn", metavar="WWNS", help="only frames naming these WWNs "
                        "(log source/target, login port/node names): 20:00:00:25:b5:00:00:01")
    parser.add_argument("--fcip-port", type=int, action="append", metavar="PORT",
                        help=f"TCP port carrying FCIP (default {fcip.FCIP_PORT}; repeatable)")
    parser.add_argument("--log-port", type=int, action="append", metavar="PORT",
                        help=f"UDP port carrying log entries (default {logentry.LOG_PORT}; repeatable)")
    return parser


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        selection = RecordFilter.from_options(args.type, args.group, args.seq, args.wwn)
    except ValueError as exc:
        parser.error(str(exc))
    unreadable = False
    errors_seen = False
    summary = Summary()
    for path in args.inputs:
        try:
            data = _read(path)
        except OSError as exc:
            print(f"rcn-decode: {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable = True
            continue
        decoder = Decoder(args.fcip_port or [fcip.FCIP_PORT], args.log_port or [logentry.LOG_PORT])
        for record in decoder.decode_file(data):
            if len(args.inputs) > 1:
                record["file"] = path
            if any(part.get("errors") for part in walk(record)):
                errors_seen = True
            if not selection.matches(record):
                continue
            if args.summary:
                summary.add(record)
            elif args.json:
                out.write(to_json(record) + "\n")
            else:
                out.write(to_tree(record) + "\n\n")
    if args.summary:
        report = summary.report()
        out.write((json.dumps(report) if args.json else render_summary(report)) + "\n")
    out.flush()
    if unreadable:
        return 2
    return 1 if errors_seen else 0


if __name__ == "__main__":
    sys.exit(main())
