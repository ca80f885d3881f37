"""``rcn-decode``: decode RCN traffic offline.

Exit status: 0 when every frame decoded cleanly, 1 when any decode error,
CRC failure, abort/invalid EOF or damaged capture was seen, 2 for bad usage or
an unreadable file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

from datapath.frames import fcip, logentry
from rcn.decode.decoder import Decoder
from rcn.decode.filters import RecordFilter, walk
from rcn.decode.render import to_json, to_tree
from rcn.decode.sealed import Keys
from rcn.decode.summary import Summary, render_summary
from rcn.logxfer.keys import KeyFileError, KeyRing

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

sealed log transfer: a hop envelope ("RCNH") shows its header and "sealed (hop
  tag not checked)", a body sealed end to end shows "sealed end to end: N
  bytes, group key epoch E". --keys FILE (a device key file, mode 0600) checks
  hop tags with the link keys of the UDP addresses and opens sealed bodies with
  the group keys; a tag that does not verify is a decode error.

exit status: 0 clean; 1 decode errors, CRC failures, aborted or invalid
EOFs or damaged captures seen; 2 usage or unreadable input.
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
    parser.add_argument("--keys", metavar="FILE",
                        help="key file (link and group keys, mode 0600): check hop tags and "
                             "open bodies sealed end to end")
    return parser


PROGRESS_MIN_BYTES = 64 << 20
PROGRESS_EVERY_S = 2.0


def _open(path: str):
    """A seekable binary file; standard input is read into memory first."""
    if path == "-":
        return io.BytesIO(sys.stdin.buffer.read())
    return open(path, "rb")


class Progress:
    """``rcn-decode: FILE: 45% of 2.7 GB, 123456 frames`` on stderr, now and then."""

    def __init__(self, path: str, f, stream=None, clock=time.monotonic):
        self.path, self.f, self.clock = path, f, clock
        self.stream = stream or sys.stderr
        try:
            self.size = os.fstat(f.fileno()).st_size
        except (OSError, io.UnsupportedOperation):    # standard input, read into memory
            self.size = 0
        self.enabled = self.size >= PROGRESS_MIN_BYTES and self.stream.isatty()
        self.next_at = clock() + PROGRESS_EVERY_S

    def update(self, frames: int) -> None:
        if not self.enabled or self.clock() < self.next_at:
            return
        self.next_at = self.clock() + PROGRESS_EVERY_S
        done = self.f.tell() / self.size * 100
        self.stream.write(f"rcn-decode: {self.path}: {done:.0f}% of {self.size / 1e9:.1f} GB, "
                          f"{frames} frames\n")


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        selection = RecordFilter.from_options(args.type, args.group, args.seq, args.wwn)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        ring = KeyRing.load(args.keys) if args.keys else None
    except KeyFileError as exc:
        print(f"rcn-decode: {exc}", file=sys.stderr)
        return 2
    unreadable = False
    errors_seen = False
    summary = Summary()
    for path in args.inputs:
        try:
            f = _open(path)
        except OSError as exc:
            print(f"rcn-decode: {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable = True
            continue
        with f:
            errors_seen |= _decode_one(path, f, args, ring, selection, summary, out,
                                       len(args.inputs) > 1)
    if args.summary:
        report = summary.report()
        out.write((json.dumps(report) if args.json else render_summary(report)) + "\n")
    out.flush()
    if unreadable:
        return 2
    return 1 if errors_seen else 0


def _decode_one(path: str, f, args, ring, selection, summary, out, name_file: bool) -> bool:
    """Decode one input; True when it had errors. ``ring``: the keys of ``--keys``, or None
    (each input gets its own replay windows)."""
    errors_seen = False
    decoder = Decoder(args.fcip_port or [fcip.FCIP_PORT], args.log_port or [logentry.LOG_PORT],
                      None if ring is None else Keys(ring))
    progress = Progress(path, f)
    for record in decoder.decode_file(f):
        progress.update(decoder.frames)
        if name_file:
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
    return errors_seen


if __name__ == "__main__":
    sys.exit(main())
