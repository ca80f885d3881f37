"""Resync after a Suspend against a full initial copy, on the whole lab (issue 6).

``python -m tools.bench_resync [--capacity 4GiB] [--changed 0.01] [--block 64KiB]``

One lab (``rcn lab``: 2 arrays, 2 edges, 1 core, durable logs, pairs created at
run time). The source volume is filled with data first, so the initial copy of
``pair-create`` copies all of it: that is the baseline, timed from the create
request until the pair is Duplex. Then the pair is suspended, ``--changed`` of
the volume is written by the host (random ``--block`` writes over NBD), and a
resync is timed the same way: it copies only the tracks in the bitmaps. The
volumes are compared at the end (sha256). The target: resync time <= 5% of the
full copy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from rcn import lab as lablib
from rcn.config import parse_size

MB = 1e6


def request(url: str, method: str = "GET", body: dict | None = None, timeout: float = 600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def until_duplex(control: str, started: float, label: str) -> tuple[float, dict]:
    last = 0.0
    while True:
        pair = request(f"{control}/pairs/0")
        if pair["state"] == "duplex":
            return time.monotonic() - started, pair
        if pair["state"] not in ("initial-copying", "duplex-pending"):
            raise SystemExit(f"{label}: the pair went {pair['state']}: {pair.get('last_error')}")
        now = time.monotonic()
        if now - last > 2 and sys.stderr.isatty():
            copy = pair.get("copy") or {}
            print(f"  {label}: {copy.get('bytes_copied', 0) / MB:.0f} / "
                  f"{copy.get('bytes_total', 0) / MB:.0f} MB", file=sys.stderr, flush=True)
            last = now
        time.sleep(0.05)


def fill(path: str, capacity: int, seed: int) -> None:
    """Data in every block of the source volume (so the initial copy copies all of it)."""
    rng = random.Random(seed)
    chunk = 8 << 20
    pattern = rng.randbytes(chunk)
    with open(path, "r+b") as f:
        for offset in range(0, capacity, chunk):
            f.write(pattern[:min(chunk, capacity - offset)])
        f.flush()
        os.fsync(f.fileno())


def host_writes(url: str, capacity: int, changed: float, block: int, seed: int) -> int:
    """``changed`` of the volume in random ``block`` writes through the array's NBD export."""
    rng = random.Random(seed)
    count = max(1, int(capacity * changed) // block)
    offsets = rng.sample(range(capacity // block), count)
    args = ["qemu-io", "-f", "raw", url]
    for i, index in enumerate(offsets):
        args += ["-c", f"write -P {i % 250 + 1} {index * block} {block}"]
    subprocess.run(args, check=True, capture_output=True)
    return count * block


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", default="4GiB", help="volume size (default 4GiB)")
    parser.add_argument("--changed", type=float, default=0.01,
                        help="fraction of the volume written while suspended (default 0.01)")
    parser.add_argument("--block", default="64KiB", help="host write size (default 64KiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the lab directory (volumes, logs) instead of removing it")
    args = parser.parse_args(argv)
    capacity, block = parse_size(args.capacity), parse_size(args.block)
    directory = tempfile.mkdtemp(prefix="rcn-bench-resync-")
    topology = lablib.Topology(capacity=capacity, pair_setup="create")
    print(f"lab in {directory}: {capacity / 2**30:g} GiB volumes, durable logs, 1 core; "
          f"{os.cpu_count()} CPUs", flush=True)
    lab = lablib.up(topology, directory)
    try:
        devices = {d["name"]: d for d in lab["devices"]}
        a, b = devices["arrayA"], devices["arrayB"]
        pair = lab["pairs"][0]
        fill(pair["source_volume"], capacity, args.seed)

        started = time.monotonic()
        request(f"{a['urls']['control']}/pairs", "POST",
                {"lun": 0, "partner_wwpn": b["wwn"], "partner_lun": 0, "group": 7})
        full_s, created = until_duplex(a["urls"]["control"], started, "initial copy")
        full_bytes = created["copy"]["bytes_total"]
        print(f"  measured: initial copy {full_bytes / MB:.0f} MB in {full_s:.1f} s",
              file=sys.stderr, flush=True)

        request(f"{a['urls']['control']}/pairs/0/suspend", "POST", {})
        written = host_writes(pair["nbd_url"], capacity, args.changed, block, args.seed)
        started = time.monotonic()
        request(f"{a['urls']['control']}/pairs/0/resync", "POST", {})
        resync_s, resynced = until_duplex(a["urls"]["control"], started, "resync")
        resync_bytes = resynced["copy"]["bytes_total"]
        print(f"  measured: resync {resync_bytes / MB:.1f} MB in {resync_s:.2f} s",
              file=sys.stderr, flush=True)
        lablib.wait_applied(lab, timeout=300)
        equal = (lablib.sha256_file(pair["source_volume"])
                 == lablib.sha256_file(pair["target_volume"]))
    finally:
        lablib.down(directory, quiet=True)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    ratio = resync_s / full_s
    print(f"{'copy':28} {'bytes':>12} {'seconds':>9} {'MB/s':>8} {'vs full':>8}  target")
    print(f"{'initial copy (baseline)':28} {full_bytes:12d} {full_s:9.2f} "
          f"{full_bytes / full_s / MB:8.1f} {1.0:8.3f}")
    print(f"{'resync after ' + format(args.changed, '.0%') + ' written':28} {resync_bytes:12d} "
          f"{resync_s:9.2f} {resync_bytes / resync_s / MB:8.1f} {ratio:8.3f}  <= 0.05")
    print(f"host wrote {written / MB:.1f} MB while suspended in {block // 1024} KiB writes; "
          f"volumes {'EQUAL' if equal else 'DIFFER'} after the resync; resync took "
          f"{ratio:.1%} of the full copy (target <= 5%)")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
