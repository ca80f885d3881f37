"""Decoder throughput: frames per second of ``rcn-decode`` on a generated capture.

Generates a deterministic capture (tools/sample_traffic.py: FCIP write
exchanges and log entries over Ethernet) of about ``--frames`` packets, then
times, on the same file in the same run:

* reading the pcap container alone (dpkt): the floor any decoder pays;
* tshark ``-T fields`` (when installed): an independent reference decoder;
* ``rcn-decode`` in tree, ``--json`` and ``--summary`` modes.

Each row is the best of ``--repeat`` runs. Target: --json >= 10,000 frames/s.
``--sealed``: the capture's log entries are sealed (hop envelope and end to end,
``sample_traffic --sealed``), and ``--json --keys`` (every hop tag checked, every body
opened) is timed beside ``--json`` without keys.

    python -m tools.bench_decode [--frames 100000] [--repeat 1] [--sealed]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from datapath.frames import capture
from tools.sample_traffic import generate, sample_keys

TARGET_JSON_FPS = 10_000


def _best(repeat: int, func) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _decode_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rcn.decode.cli", *args]


def _run_quiet(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure rcn-decode throughput (frames/s) "
                                     "against a container-read floor and tshark.")
    parser.add_argument("--frames", type=int, default=100_000,
                        help="packets in the generated capture (default 100000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, best kept (default 1)")
    parser.add_argument("--sealed", action="store_true",
                        help="seal the log entries and time --keys too")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="rcn-bench-")
    path = os.path.join(workdir, "traffic.pcap")
    keys = sample_keys() if args.sealed else None
    keyfile = os.path.join(workdir, "keys")
    if keys is not None:
        keys.save(keyfile)
    started = time.perf_counter()
    with open(path, "wb") as f:
        packets = generate(f, writes=1 << 30, packet_limit=args.frames, keys=keys)
    print(f"generated {packets} packets ({os.path.getsize(path) / 1e6:.1f} MB) in "
          f"{time.perf_counter() - started:.1f} s: {path}", file=sys.stderr)

    summary = subprocess.run(_decode_cmd("--summary", "--json", path), capture_output=True, check=True)
    frames = json.loads(summary.stdout)["frames"]
    with open(path, "rb") as f:
        data = f.read()

    rows = [("pcap container read (dpkt), baseline", packets,
             _best(args.repeat, lambda: sum(1 for _ in capture.read_capture(data))))]
    tshark = shutil.which("tshark")
    if tshark:
        rows.append(("tshark -T fields (reference)", packets, _best(args.repeat, lambda: _run_quiet(
            [tshark, "-n", "-r", path, "-d", "tcp.port==3225,fcip", "-T", "fields",
             "-e", "fc.d_id", "-e", "fc.ox_id", "-e", "scsi_sbc.rdwr16.lba"]))))
    modes = [("rcn-decode (tree)", []), ("rcn-decode --json", ["--json"]),
             ("rcn-decode --summary", ["--summary"])]
    if keys is not None:
        modes.append(("rcn-decode --json --keys", ["--json", "--keys", keyfile]))
    for label, extra in modes:
        rows.append((label, frames, _best(args.repeat, lambda e=extra: _run_quiet(
            _decode_cmd(*e, path)))))

    print(f"{'mode':<40} {'frames':>8} {'seconds':>8} {'frames/s':>10}")
    for label, count, seconds in rows:
        print(f"{label:<40} {count:>8} {seconds:>8.2f} {count / seconds:>10.0f}")
    json_fps = next(count / s for label, count, s in rows if label == "rcn-decode --json")
    verdict = "meets" if json_fps >= TARGET_JSON_FPS else "MISSES"
    print(f"--json {json_fps:.0f} frames/s {verdict} the target of {TARGET_JSON_FPS}")
    shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
