"""Run the trial suite and end with a plain ``N passed, N failed`` line.

Usage: python tools/run_tests.py [--nojit SUITE]... [trial arguments...] (default: tests)

``--nojit SUITE`` runs SUITE once more with ``NUMBA_DISABLE_JIT=1`` (the
kernels as plain Python, as CI requires); the counts of all runs are summed.
"""

import os
import re
import subprocess
import sys

SUMMARY = re.compile(r"^(PASSED|FAILED) \((.*)\)\s*$")
FLAVOUR = re.compile(r"^\[(FAIL|ERROR|UNEXPECTED SUCCESS)\]\s*$")
TEST_ID = re.compile(r"^tests(\.\w+)+\s*$")


class FailureNames:
    """Collect the names trial lists under each [FAIL]/[ERROR] traceback.

    CI shows only the head and tail of a long log, so the names are repeated
    at the end where they cannot be cut out.
    """

    def __init__(self):
        self.flavour = None
        self.names: list[tuple[str, str]] = []

    def feed(self, line: str) -> None:
        match = FLAVOUR.match(line)
        if match:
            self.flavour = match.group(1)
        elif line.startswith("-" * 20):          # the closing summary rule
            self.flavour = None
        elif self.flavour and TEST_ID.match(line):
            self.names.append((self.flavour, line.strip()))


def run_trial(args: list[str], env: dict | None = None,
              failures: FailureNames | None = None) -> tuple[int, dict[str, int]]:
    """Run trial, echo its output, return (exit status, summary counts)."""
    proc = subprocess.Popen([sys.executable, "-m", "twisted.trial", *args],
                            stdout=subprocess.PIPE, text=True, env=env)
    counts: dict[str, int] = {}
    for line in proc.stdout:
        sys.stdout.write(line)
        if failures is not None:
            failures.feed(line)
        match = SUMMARY.match(line)
        if match:
            for item in match.group(2).split(","):
                key, _, value = item.strip().partition("=")
                counts[key] = int(value)
    return proc.wait(), counts


def main(argv: list[str]) -> int:
    nojit = []
    while len(argv) >= 2 and argv[0] == "--nojit":
        nojit.append(argv[1])
        argv = argv[2:]
    runs = [(argv or ["tests"], None)]
    if nojit:
        runs.append((nojit, dict(os.environ, NUMBA_DISABLE_JIT="1")))
    passed = failed = skipped = 0
    worst = 0
    failures = FailureNames()
    for args, env in runs:
        if env is not None:
            print(f"\n== again with NUMBA_DISABLE_JIT=1: {' '.join(args)}", flush=True)
        status, counts = run_trial(args, env, failures)
        run_failed = sum(counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
        if status and not run_failed:
            run_failed = 1  # trial failed before it could summarise (an import error, say)
        passed += counts.get("successes", 0)
        failed += run_failed
        skipped += counts.get("skips", 0)
        worst = worst or status
    for flavour, name in failures.names:
        print(f"[{flavour}] {name}")
    if skipped:
        print(f"{skipped} skipped")
    print(f"{passed} passed, {failed} failed")
    if passed + failed == 0:
        print("no tests ran", file=sys.stderr)
        return 1
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
