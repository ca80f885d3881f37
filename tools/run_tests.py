"""Run the trial suite and end with a plain ``N passed, N failed`` line.

Usage: python tools/run_tests.py [trial arguments...] (default: tests)
"""

import re
import subprocess
import sys

SUMMARY = re.compile(r"^(PASSED|FAILED) \((.*)\)\s*$")


def main(argv: list[str]) -> int:
    args = argv or ["tests"]
    proc = subprocess.Popen([sys.executable, "-m", "twisted.trial", *args],
                            stdout=subprocess.PIPE, text=True)
    counts: dict[str, int] = {}
    for line in proc.stdout:
        sys.stdout.write(line)
        match = SUMMARY.match(line)
        if match:
            for item in match.group(2).split(","):
                key, _, value = item.strip().partition("=")
                counts[key] = int(value)
    status = proc.wait()
    passed = counts.get("successes", 0)
    failed = sum(counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
    if status and not failed:
        failed = 1  # trial failed before it could summarise (an import error, say)
    if counts.get("skips"):
        print(f"{counts['skips']} skipped")
    print(f"{passed} passed, {failed} failed")
    if passed + failed == 0:
        print("no tests ran", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
