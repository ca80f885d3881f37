"""``rcn-bench``: bench tests of an RCN against serial-controlled appliances.

``rcn-bench run SCENARIO.toml`` starts the scenario's lab, drives its appliances and
workloads at the scenario's times, prints progress and a pass/fail table, and writes
``OUT/NAME.json`` and ``OUT/NAME.png``; exit status 0 when every check passed, 1
when one failed or the run stopped on an error, 2 for a bad scenario file.
``rcn-bench check SCENARIO.toml`` reads the file and prints the plan without running it.
"""

from __future__ import annotations

import argparse
import sys

from rcn.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcn-bench", description="Run bench scenarios: a lab of real RCN daemons, WAN "
                                      "emulator links driven over their serial consoles, "
                                      "workloads, impairments and checks.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run a scenario: progress, a pass/fail table, a JSON "
                                         "report and a PNG plot")
    run.add_argument("scenario", help="scenario file (TOML; examples in tools/bench/)")
    run.add_argument("--out", default=".", help="directory for NAME.json and NAME.png "
                                                "(default: the current directory)")
    run.add_argument("--dir", help="lab directory (default: a temporary one, removed after)")
    run.add_argument("--keep", action="store_true", help="keep the lab directory (daemon logs, "
                                                         "volumes, workload journals)")
    check = actions.add_parser("check", help="read a scenario and print its steps, without "
                                             "running it")
    check.add_argument("scenario", help="scenario file (TOML)")
    return parser


def describe(scenario) -> str:
    topo = scenario.topology
    lines = [f"scenario {scenario.name}: {scenario.description}".rstrip(": "),
             f"lab: {topo.cores} core(s), {len(topo.pairs)} pair(s), log {topo.log_mode}, "
             f"mgmt {'on' if topo.mgmt else 'off'}"]
    for n, link in enumerate(topo.wanem, 1):
        settings = ", ".join(f"{k} {v}" for k, v in link.settings) or "no impairment"
        lines.append(f"wanem LINK{n}: {link.between[0]} - {link.between[1]} ({settings})")
    for a in scenario.appliances:
        lines.append(f"appliance {a.name}: {a.kind} on "
                     + ("the lab's emulator console" if a.port == "lab" else a.port))
    for step in scenario.steps:
        when = f"{step.at:g} s" + (f", every {step.every:g} s until {step.until:g} s"
                                   if step.every else "")
        lines.append(f"  step[{step.index}] at {when}: {step.label()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rcn.bench.runner import run_scenario
    from rcn.bench.scenario import load_scenario
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"rcn-bench: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        print(describe(scenario))
        return 0
    record = run_scenario(scenario, args.dir, args.out, args.keep,
                          say=lambda text: print(text, flush=True))
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
