"""``rcn-bench`` scenario files (TOML): a lab, its appliances, and timed steps.

Example (``tools/bench/`` has complete ones)::

    [scenario]
    name = "wan-20ms-loss1"               # default: the file's name
    description = "a 20 ms / 1% loss WAN between edgeA and core1"
    sample_interval = 0.5                 # seconds between samples of lag and throughput
    drain_timeout = 60.0                  # seconds a drain (check "equal", wait "drained")
                                          # may take

    [lab]                                 # the topology of ``rcn lab`` (rcn/lab.py):
    cores = 1                             # [lab], [[pair]] and [[wanem]] as there
    [[wanem]]
    between = ["edgeA", "core1"]
    delay_ms = 20.0
    loss = 0.01

    [[appliance]]                         # default: "wanem", the lab's WAN emulator
    name = "wanem"
    kind = "wanem"                        # a driver of rcn/wanem/driver.py
    port = "lab"                          # "lab": the lab's emulator console (a pty);
                                          # else a pyserial URL: /dev/ttyUSB0, socket://H:P,
                                          # rfc2217://H:P
    speed = 115200
    trace = "wanem-trace.txt"             # a hex trace of the exchange (pyserial's spy://)

    [[step]]
    at = 0.0                              # seconds after the start (the lab up, pairs Duplex)
    do = "workload"                       # what: see STEPS
    rate = 500                            # ... and its keys
    every = 2.0                           # optional: again every 2 s ...
    until = 20.0                          # ... while at <= 20 s

Steps run in time order (file order at equal times; a repeated step once per
repetition): each waits until its time, and a ``wait`` step holds the ones after
it until its condition holds (they then run as soon as their time has come). Errors name the file and the key (``step[3].loss: ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rcn.config import ConfigError, Reader, in_range, load_toml, one_of, parse_size
from rcn.lab import Topology, parse_topology, path_names

PAIR_COMMANDS = ("suspend", "resync", "takeover", "reverse")
SIGNALS = ("STOP", "CONT", "KILL", "TERM")
WAIT_FOR = ("pair_state", "drained", "lag_below")
CHECKS = ("pair_state", "lag", "ack_p99", "prefix", "equal")
PAIR_STATES = ("simplex", "initial-copying", "duplex", "suspend", "failure-suspend")

#: step kind -> its keys beyond at/do/every/until (documented in README's rcn-bench section)
STEPS: dict[str, frozenset[str]] = {
    "workload": frozenset({"name", "pair", "block", "depth", "rate", "region", "seed"}),
    "stop_workload": frozenset({"name"}),
    "impair": frozenset({"appliance", "link", "delay_ms", "jitter_ms", "loss", "duplicate",
                         "reorder", "rate"}),
    "link_down": frozenset({"appliance", "link"}),
    "link_up": frozenset({"appliance", "link"}),
    "pair": frozenset({"command", "array", "lun", "fast"}),
    "signal": frozenset({"device", "signal"}),
    "wait": frozenset({"for", "array", "lun", "state", "below_ms", "timeout"}),
    "check": frozenset({"check", "name", "array", "lun", "state", "below_ms", "since",
                        "workload"}),
}


@dataclass(frozen=True)
class Appliance:
    name: str
    kind: str
    port: str                         # "lab" or a pyserial URL
    speed: int = 115200
    trace: str | None = None


@dataclass(frozen=True)
class Step:
    index: int                        # position in the file (step[index])
    at: float
    do: str
    args: dict = field(default_factory=dict)
    every: float | None = None
    until: float | None = None

    def times(self) -> list[float]:
        """When this step runs: ``at``, then every ``every`` s up to ``until``."""
        if self.every is None:
            return [self.at]
        count = int((self.until - self.at) / self.every + 1e-9) + 1
        return [self.at + i * self.every for i in range(count)]

    def label(self) -> str:
        if self.do == "check":
            return f"check {self.args['name']}"
        shown = {k: v for k, v in self.args.items() if k != "appliance" and v is not None}
        return self.do + (" " + " ".join(f"{k}={v}" for k, v in shown.items()) if shown else "")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    file: str
    topology: Topology
    appliances: tuple[Appliance, ...]
    steps: tuple[Step, ...]
    sample_interval: float = 0.5
    drain_timeout: float = 60.0

    def appliance(self, name: str | None) -> Appliance:
        if name is None:
            return self.appliances[0]
        return next(a for a in self.appliances if a.name == name)

    def end(self) -> float:
        """When the last step is due."""
        return max((t for s in self.steps for t in s.times()), default=0.0)


def load_scenario(path: str) -> Scenario:
    return load_toml(path, lambda doc, base_dir: parse_scenario(doc, path))


def parse_scenario(doc: dict, path: str = "scenario.toml") -> Scenario:
    top = Reader(doc, "")
    top.unknown({"scenario", "lab", "pair", "wanem", "appliance", "step"})
    head = Reader(top.get("scenario", dict, {}), "scenario.")
    head.unknown({"name", "description", "sample_interval", "drain_timeout"})
    default_name = os.path.splitext(os.path.basename(path))[0]
    topology = parse_topology({k: doc[k] for k in ("lab", "pair", "wanem") if k in doc})
    appliances = _appliances(top.get("appliance", list, []), topology)
    steps = tuple(_step(i, table, topology, appliances)
                  for i, table in enumerate(top.get("step", list, [])))
    if not steps:
        raise ConfigError("step: a scenario needs at least one [[step]]")
    return Scenario(name=head.get("name", str, default_name),
                    description=head.get("description", str, ""), file=os.path.abspath(path),
                    topology=topology, appliances=appliances, steps=steps,
                    sample_interval=float(head.get("sample_interval", (int, float), 0.5,
                                                   in_range(0.05, 60.0))),
                    drain_timeout=float(head.get("drain_timeout", (int, float), 60.0,
                                                 in_range(1.0, 3600.0))))


def _appliances(tables: list, topology: Topology) -> tuple[Appliance, ...]:
    from rcn.wanem.driver import DRIVERS
    out: list[Appliance] = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"appliance[{i}]: expected a table ([[appliance]])")
        r = Reader(table, f"appliance[{i}].")
        r.unknown({"name", "kind", "port", "speed", "trace"})
        name = r.get("name", str)
        if any(a.name == name for a in out):
            raise ConfigError(f"appliance[{i}].name: {name!r} is used twice")
        port = r.get("port", str, "lab")
        if port == "lab" and not topology.wanem:
            raise ConfigError(f"appliance[{i}].port: \"lab\" is the lab's WAN emulator, and "
                              "this lab has no [[wanem]] link")
        out.append(Appliance(name=name, kind=r.get("kind", str, "wanem", one_of(tuple(DRIVERS))),
                             port=port, speed=r.get("speed", int, 115200, in_range(50, 4000000)),
                             trace=r.get("trace", str, None)))
    if not out and topology.wanem:
        out.append(Appliance("wanem", "wanem", "lab"))
    return tuple(out)


def _number(r: Reader, key: str, low: float, high: float, default=None):
    value = r.get(key, (int, float), default, in_range(low, high))
    return None if value is None else float(value)


def _step(i: int, table, topology: Topology, appliances: tuple[Appliance, ...]) -> Step:
    where = f"step[{i}]."
    if not isinstance(table, dict):
        raise ConfigError(f"step[{i}]: expected a table ([[step]])")
    r = Reader(table, where)
    do = r.get("do", str, check=one_of(tuple(STEPS)))
    r.unknown({"at", "do", "every", "until", *STEPS[do]})
    at = _number(r, "at", 0.0, 86400.0, 0.0)
    every = _number(r, "every", 0.05, 86400.0)
    until = _number(r, "until", at, 86400.0)
    if (every is None) != (until is None):
        raise ConfigError(f"{where}{'until' if every is not None else 'every'}: every and until "
                          "go together (repeat every N s until T)")
    if every is not None and do in ("wait", "check", "workload"):
        raise ConfigError(f"{where}every: a {do} step does not repeat")
    args: dict = {}
    if do in ("impair", "link_down", "link_up"):
        if not appliances:
            raise ConfigError(f"{where}do: {do} needs an appliance, and the scenario has none "
                              "(add [[wanem]] to the lab or an [[appliance]])")
        names = [a.name for a in appliances]
        args["appliance"] = r.get("appliance", str, names[0], one_of(tuple(names)))
        args["link"] = r.get("link", int, 1, in_range(1, 64))
        if args["appliance"] == "wanem" and appliances[0].port == "lab" and \
                args["link"] > len(topology.wanem):
            raise ConfigError(f"{where}link: the lab has {len(topology.wanem)} wanem links")
        if do == "impair":
            for key, high in (("delay_ms", 10000.0), ("jitter_ms", 10000.0), ("loss", 1.0),
                              ("duplicate", 1.0), ("reorder", 1.0)):
                value = _number(r, key, 0.0, high)
                if value is not None:
                    args[key] = value
            rate = r.get("rate", (int, str), None, parse_size)
            if rate is not None:
                args["rate"] = rate
            if len(args) == 2:
                raise ConfigError(f"{where}do: impair sets nothing (give delay_ms, jitter_ms, "
                                  "loss, duplicate, reorder or rate)")
    elif do == "workload" or do == "stop_workload":
        args["name"] = r.get("name", str, "w1" if do == "workload" else None)
        if do == "workload":
            args["pair"] = r.get("pair", int, 0, in_range(0, len(topology.pairs) - 1))
            args["block"] = r.get("block", (int, str), 4096, parse_size)
            if args["block"] % 512 or not 512 <= args["block"] <= 1 << 20:
                raise ConfigError(f"{where}block: {args['block']} is not a multiple of 512 "
                                  "up to 1 MiB")
            args["depth"] = r.get("depth", int, 16, in_range(1, 1024))
            args["rate"] = _number(r, "rate", 0.0, 1e6, 0.0)
            capacity = topology.pairs[args["pair"]].capacity
            args["region"] = r.get("region", (int, str), min(capacity, 64 << 20), parse_size)
            if not args["block"] <= args["region"] <= capacity or args["region"] % args["block"]:
                raise ConfigError(f"{where}region: {args['region']} bytes is not a multiple of "
                                  f"the block within the volume's {capacity} bytes")
            args["seed"] = r.get("seed", int, 1 + i)
    elif do == "pair":
        args["command"] = r.get("command", str, check=one_of(PAIR_COMMANDS))
        args["array"] = r.get("array", str, "arrayA", one_of(("arrayA", "arrayB")))
        args["lun"] = r.get("lun", int, topology.pairs[0].lun, in_range(0, 16383))
        args["fast"] = r.get("fast", bool, False)
    elif do == "signal":
        devices = path_names(topology.cores) + ["arrayA", "arrayB"]
        args["device"] = r.get("device", str, check=one_of(tuple(devices)))
        args["signal"] = r.get("signal", str, check=one_of(SIGNALS))
    elif do == "wait":
        args["for"] = r.get("for", str, check=one_of(WAIT_FOR))
        args["timeout"] = _number(r, "timeout", 0.1, 3600.0, 60.0)
        _condition(r, args, args["for"], topology, where)
    elif do == "check":
        args["check"] = r.get("check", str, check=one_of(CHECKS))
        args["name"] = r.get("name", str, f"{args['check']}@{at:g}s")
        _condition(r, args, args["check"], topology, where)
        if args["check"] in ("lag", "ack_p99"):
            args["since"] = _number(r, "since", 0.0, 86400.0, 0.0)
        if args["check"] in ("prefix", "ack_p99"):
            args["workload"] = r.get("workload", str, None)
    return Step(index=i, at=at, do=do, args=args, every=every, until=until)


def _condition(r: Reader, args: dict, what: str, topology: Topology, where: str) -> None:
    if what == "pair_state":
        args["array"] = r.get("array", str, "arrayA", one_of(("arrayA", "arrayB")))
        args["lun"] = r.get("lun", int, topology.pairs[0].lun, in_range(0, 16383))
        args["state"] = r.get("state", str, "duplex", one_of(PAIR_STATES))
    elif what in ("lag", "lag_below", "ack_p99"):
        args["below_ms"] = _number(r, "below_ms", 0.0, 1e7)
        if args["below_ms"] is None:
            raise ConfigError(f"{where}below_ms: a {what} needs a bound in milliseconds")
