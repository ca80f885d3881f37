"""Datapath kernel throughput: numba kernel vs reference model vs numpy.

Prints one table, a row per kernel operation: items/s for the numba kernel,
the plain-Python reference model and the best numpy-vectorised alternative
(where one exists), the kernel's speed-up over each, and the issue's target.
JIT compilation is excluded (one untimed warm-up call per variant); see
tools/bench_jit.py for what compiling costs.

    python -m tools.bench_kernels [--scale 1.0] [--only reorder,bitmap,...]
"""

from __future__ import annotations

import argparse
import importlib
import sys

MODULES = ("reorder", "bitmap", "batching", "delineate")


def _rate(items: int, seconds: float | None) -> float | None:
    return None if not seconds else items / seconds


def _si(value: float | None) -> str:
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.1f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure datapath kernels against their "
                                     "reference models and numpy alternatives.")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="input size factor (default 1.0; smaller is quicker, noisier)")
    parser.add_argument("--only", help="comma-separated kernels: " + ",".join(MODULES))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else MODULES
    unknown = set(names) - set(MODULES)
    if unknown:
        parser.error(f"unknown kernels: {', '.join(sorted(unknown))}")

    header = (f"{'kernel':<10} {'operation':<46} {'unit':<10} {'kernel/s':>9} {'ref/s':>9} "
              f"{'numpy/s':>9} {'vs ref':>8} {'vs numpy':>9} {'target/s':>9}  verdict")
    print(header)
    print("-" * len(header))
    misses = 0
    for name in names:
        module = importlib.import_module(f"tools.kernel_bench.{name}")
        for row in module.rows(args.scale):
            kernel = _rate(row.items, row.kernel_s)
            ref = _rate(row.items, row.reference_s)
            numpy_rate = _rate(row.items, row.numpy_s)
            if row.target_per_s is None:
                verdict = ""
            elif kernel >= row.target_per_s:
                verdict = "meets"
            else:
                verdict, misses = "MISSES", misses + 1
            print(f"{row.kernel:<10} {row.operation:<46} {row.unit:<10} {_si(kernel):>9} "
                  f"{_si(ref):>9} {_si(numpy_rate):>9} {_ratio(kernel, ref):>8} "
                  f"{_ratio(kernel, numpy_rate):>9} {_si(row.target_per_s):>9}  {verdict}",
                  flush=True)
    print(f"\n{misses} target(s) missed" if misses else "\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
