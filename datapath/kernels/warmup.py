"""Compile every kernel once so numba's on-disk cache is filled.

``make`` runs this after installing, for the installed copy (daemons, CLIs)
and for the checkout (tests); later processes load machine code from the
cache instead of compiling. Prints the time each module took.

    python -m datapath.kernels.warmup
"""

from __future__ import annotations

import importlib
import sys
import time

KERNEL_MODULES = ("reorder", "bitmap", "batching", "coalesce", "delineate")


def main() -> int:
    total = time.perf_counter()
    for name in KERNEL_MODULES:
        start = time.perf_counter()
        module = importlib.import_module(f"datapath.kernels.{name}")
        module.warm_up()
        print(f"  {module.__name__}: {time.perf_counter() - start:.2f} s "
              f"({module.__file__.rsplit('/', 3)[0]})", file=sys.stderr)
    print(f"kernels ready in {time.perf_counter() - total:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
