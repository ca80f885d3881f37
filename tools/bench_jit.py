"""What JIT compilation costs: first use of each kernel module in a fresh process.

For each module of datapath.kernels, in a new interpreter: import it and call
its ``warm_up()`` (every kernel once), timed

* cold: numba's cache empty (a new NUMBA_CACHE_DIR), so everything compiles;
* warm: the same cache again, so machine code is loaded from disk.

The baseline row is a fresh interpreter importing numpy and numba only.

    python -m tools.bench_jit
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from datapath.kernels.warmup import KERNEL_MODULES

_PROBE = """
import time
start = time.perf_counter()
{body}
print(time.perf_counter() - start)
"""


def _time_in_fresh_process(body: str, cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(body=body)], env=env,
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    print(f"{'module':<32} {'cold s':>8} {'warm s':>8}")
    with tempfile.TemporaryDirectory() as cache:
        base = _time_in_fresh_process("import numpy, numba", cache)
        print(f"{'import numpy, numba (baseline)':<32} {base:>8.2f} {base:>8.2f}")
        every = "\n".join(f"import datapath.kernels.{n} as m; m.warm_up()" for n in KERNEL_MODULES)
        for name in KERNEL_MODULES:
            body = f"import datapath.kernels.{name} as m\nm.warm_up()"
            with tempfile.TemporaryDirectory() as own:
                cold = _time_in_fresh_process(body, own)
                warm = _time_in_fresh_process(body, own)
            print(f"{'datapath.kernels.' + name:<32} {cold:>8.2f} {warm:>8.2f}")
        cold = _time_in_fresh_process(every, cache)
        warm = _time_in_fresh_process(every, cache)
        print(f"{'all kernels':<32} {cold:>8.2f} {warm:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
