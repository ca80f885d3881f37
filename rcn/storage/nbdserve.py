"""Standalone NBD server over sparse-file volumes, for operators and benchmarks.

    python -m rcn.storage.nbdserve --export disk0=/var/lib/rcn/disk0.img:10G [--export ...]
                                   [--host 127.0.0.1] [--port 10809]

It serves the storage emulator's ``Volume`` with ``rcn.nbd``'s server, so it lives
beside the volume: ``rcn.nbd`` imports nothing of ``rcn.storage``. This runner is
the only place in either that uses the global reactor.
"""

from __future__ import annotations

import argparse
import re
import sys

from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.server import NbdServerFactory
from rcn.nbd.session import ServerLimits
from rcn.storage.volume import Volume, VolumeError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``10G``, ``1TiB`` -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not a number with an optional K/M/G/T suffix")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_export(text: str) -> tuple[str, str, int, bool]:
    """``NAME=PATH:SIZE[:ro]`` -> (name, path, size, read_only)."""
    name, eq, rest = text.partition("=")
    if not eq or not rest:
        raise ValueError(f"export {text!r} is not NAME=PATH:SIZE")
    read_only = False
    if rest.lower().endswith(":ro"):
        read_only, rest = True, rest[:-3]
    path, colon, size = rest.rpartition(":")
    if not colon or not path:
        raise ValueError(f"export {text!r} has no :SIZE after the path")
    return name, path, parse_size(size), read_only


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rcn.storage.nbdserve",
        description="Serve sparse-file volumes over NBD (fixed newstyle handshake, simple "
                    "replies; READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, FUA). Runs until "
                    "interrupted (SIGINT/SIGTERM), then logs its counters. Logs go to "
                    "stderr.")
    parser.add_argument("--export", action="append", required=True, metavar="NAME=PATH:SIZE[:ro]",
                        help="serve the file PATH as export NAME with SIZE bytes (suffixes K, M, "
                             "G, T are binary; SIZE must be a multiple of --block-size). A "
                             "missing file is created sparse, a shorter one extended; a longer "
                             "one is refused. ':ro' makes the export read-only. Repeatable.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=10809,
                        help="TCP port (default 10809, the NBD port; 0 picks a free port). The "
                             "port in use is printed on stdout as 'listening on HOST:PORT'.")
    parser.add_argument("--default", metavar="NAME",
                        help="export served to clients asking for the empty name "
                             "(default: the first --export)")
    parser.add_argument("--block-size", type=int, default=512,
                        help="volume block size in bytes, a power of two (default 512)")
    parser.add_argument("--max-connections", type=int, default=ServerLimits.max_connections,
                        help=f"connections served at once (default "
                             f"{ServerLimits.max_connections})")
    parser.add_argument("--quiet", action="store_true",
                        help="log warnings only (default: also connections, refused options "
                             "and the counters at exit)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    volumes: list[Volume] = []
    table = ExportTable()
    try:
        for lun, spec in enumerate(args.export):
            name, path, size, read_only = parse_export(spec)
            volume = Volume(path, lun, size, block_size=args.block_size, create=True)
            volumes.append(volume)
            table.add(VolumeExport(volume, name, description=f"{path} (LUN {lun})",
                                   read_only=read_only))
        default = args.default if args.default is not None else table.names()[0]
        if default not in table:
            raise ValueError(f"--default {default!r} is not one of the exports "
                             f"{table.names()}")
        table.default = default
        limits = ServerLimits(max_connections=args.max_connections)
    except (ValueError, VolumeError) as exc:
        for volume in volumes:
            volume.close()
        parser.error(str(exc))

    from twisted.internet import reactor  # the runner owns the reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger,
                                globalLogBeginner, textFileLogObserver)

    level = LogLevel.warn if args.quiet else LogLevel.info
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=level)])],
        redirectStandardIO=False)

    factory = NbdServerFactory(table, reactor, limits)
    host = args.host.replace(":", "\\:")
    endpoint = serverFromString(reactor, f"tcp:{args.port}:interface={host}")
    status = {"code": 0}

    def listening(port):
        address = port.getHost()
        print(f"listening on {address.host}:{address.port}", flush=True)

    def failed(failure):
        print(f"cannot listen on {args.host}:{args.port}: {failure.getErrorMessage()}",
              file=sys.stderr, flush=True)
        status["code"] = 1
        reactor.stop()

    def summary():
        log.info("NBD server counters: {counters}", counters=dict(
            (k, v) for k, v in factory.counters.items() if v))

    log = Logger(namespace="rcn.nbd")
    reactor.addSystemEventTrigger("before", "shutdown", summary)
    reactor.callWhenRunning(lambda: endpoint.listen(factory).addCallbacks(listening, failed))
    reactor.run()
    for volume in volumes:
        volume.close()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
