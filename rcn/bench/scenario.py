"""``rcn-bench`` scenario files (TOML): a lab, its appliances, and timed steps.

Example (``tools/bench/`` has complete ones)::

    [scenario]
    name = "wan-20ms-loss1"               # default: the file's name
    description = "a 20 ms / 1% loss WAN between edgeA and core1"
    sample_interval = 0.5                 # seconds between samples of lag and throughput
    drain_timeout = 60.0                  # seconds a drain (check "equal", wait "drained")
                                          # may take

    [lab]                                 # the topology of ``rcn lab`` (rcn/lab/topology.py):
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
from typing import Callable

from rcn.config import ConfigError, Reader, in_range, load_toml, one_of, parse_size
from rcn.lab import Topology, parse_topology, path_names

PAIR_COMMANDS = ("suspend", "resync", "takeover", "reverse")
SIGNALS = ("STOP", "CONT", "KILL", "TERM")
WAIT_FOR = ("pair_state", "drained", "lag_below")
CHECKS = ("pair_state", "lag", "ack_p99", "prefix", "equal")
PAIR_STATES = ("simplex", "initial-copying", "duplex", "suspend", "failure-suspend")

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


@dataclass(frozen=True)
class _Context:
    """What a step kind's parser may look at besides the step's own table."""
    index: int
    at: float
    where: str
    topology: Topology
    appliances: tuple[Appliance, ...]


def _step(i: int, table, topology: Topology, appliances: tuple[Appliance, ...]) -> Step:
    where = f"step[{i}]."
    if not isinstance(table, dict):
        raise ConfigError(f"step[{i}]: expected a table ([[step]])")
    r = Reader(table, where)
    do = r.get("do", str, check=one_of(tuple(STEPS)))
    kind = STEPS[do]
    r.unknown({"at", "do", "every", "until", *kind.keys})
    at = _number(r, "at", 0.0, 86400.0, 0.0)
    every = _number(r, "every", 0.05, 86400.0)
    until = _number(r, "until", at, 86400.0)
    if (every is None) != (until is None):
        raise ConfigError(f"{where}{'until' if every is not None else 'every'}: every and until "
                          "go together (repeat every N s until T)")
    if every is not None and not kind.repeats:
        raise ConfigError(f"{where}every: a {do} step does not repeat")
    args = kind.parse(r, do, _Context(i, at, where, topology, appliances))
    return Step(index=i, at=at, do=do, args=args, every=every, until=until)


def _link_args(r: Reader, do: str, c: _Context) -> dict:
    """impair, link_down, link_up: which appliance and which of its links."""
    if not c.appliances:
        raise ConfigError(f"{c.where}do: {do} needs an appliance, and the scenario has none "
                          "(add [[wanem]] to the lab or an [[appliance]])")
    names = [a.name for a in c.appliances]
    args = {"appliance": r.get("appliance", str, names[0], one_of(tuple(names))),
            "link": r.get("link", int, 1, in_range(1, 64))}
    if args["appliance"] == "wanem" and c.appliances[0].port == "lab" and \
            args["link"] > len(c.topology.wanem):
        raise ConfigError(f"{c.where}link: the lab has {len(c.topology.wanem)} wanem links")
    return args


def _impair_args(r: Reader, do: str, c: _Context) -> dict:
    args = _link_args(r, do, c)
    for key, high in (("delay_ms", 10000.0), ("jitter_ms", 10000.0), ("loss", 1.0),
                      ("duplicate", 1.0), ("reorder", 1.0)):
        value = _number(r, key, 0.0, high)
        if value is not None:
            args[key] = value
    rate = r.get("rate", (int, str), None, parse_size)
    if rate is not None:
        args["rate"] = rate
    if len(args) == 2:
        raise ConfigError(f"{c.where}do: impair sets nothing (give delay_ms, jitter_ms, "
                          "loss, duplicate, reorder or rate)")
    return args


def _workload_args(r: Reader, do: str, c: _Context) -> dict:
    args = {"name": r.get("name", str, "w1"),
            "pair": r.get("pair", int, 0, in_range(0, len(c.topology.pairs) - 1)),
            "block": r.get("block", (int, str), 4096, parse_size)}
    if args["block"] % 512 or not 512 <= args["block"] <= 1 << 20:
        raise ConfigError(f"{c.where}block: {args['block']} is not a multiple of 512 "
                          "up to 1 MiB")
    args["depth"] = r.get("depth", int, 16, in_range(1, 1024))
    args["rate"] = _number(r, "rate", 0.0, 1e6, 0.0)
    capacity = c.topology.pairs[args["pair"]].capacity
    args["region"] = r.get("region", (int, str), min(capacity, 64 << 20), parse_size)
    if not args["block"] <= args["region"] <= capacity or args["region"] % args["block"]:
        raise ConfigError(f"{c.where}region: {args['region']} bytes is not a multiple of "
                          f"the block within the volume's {capacity} bytes")
    args["seed"] = r.get("seed", int, 1 + c.index)
    return args


def _stop_workload_args(r: Reader, do: str, c: _Context) -> dict:
    return {"name": r.get("name", str, None)}


def _pair_args(r: Reader, do: str, c: _Context) -> dict:
    return {"command": r.get("command", str, check=one_of(PAIR_COMMANDS)),
            "array": r.get("array", str, "arrayA", one_of(("arrayA", "arrayB"))),
            "lun": r.get("lun", int, c.topology.pairs[0].lun, in_range(0, 16383)),
            "fast": r.get("fast", bool, False)}


def _signal_args(r: Reader, do: str, c: _Context) -> dict:
    devices = path_names(c.topology.cores) + ["arrayA", "arrayB"]
    return {"device": r.get("device", str, check=one_of(tuple(devices))),
            "signal": r.get("signal", str, check=one_of(SIGNALS))}


def _wait_args(r: Reader, do: str, c: _Context) -> dict:
    args = {"for": r.get("for", str, check=one_of(WAIT_FOR)),
            "timeout": _number(r, "timeout", 0.1, 3600.0, 60.0)}
    _condition(r, args, args["for"], c.topology, c.where)
    return args


def _check_args(r: Reader, do: str, c: _Context) -> dict:
    args = {"check": r.get("check", str, check=one_of(CHECKS))}
    args["name"] = r.get("name", str, f"{args['check']}@{c.at:g}s")
    _condition(r, args, args["check"], c.topology, c.where)
    if args["check"] in ("lag", "ack_p99"):
        args["since"] = _number(r, "since", 0.0, 86400.0, 0.0)
    if args["check"] in ("prefix", "ack_p99"):
        args["workload"] = r.get("workload", str, None)
    return args


def _condition(r: Reader, args: dict, what: str, topology: Topology, where: str) -> None:
    if what == "pair_state":
        args["array"] = r.get("array", str, "arrayA", one_of(("arrayA", "arrayB")))
        args["lun"] = r.get("lun", int, topology.pairs[0].lun, in_range(0, 16383))
        args["state"] = r.get("state", str, "duplex", one_of(PAIR_STATES))
    elif what in ("lag", "lag_below", "ack_p99"):
        args["below_ms"] = _number(r, "below_ms", 0.0, 1e7)
        if args["below_ms"] is None:
            raise ConfigError(f"{where}below_ms: a {what} needs a bound in milliseconds")


@dataclass(frozen=True)
class StepKind:
    """A ``do`` of ``[[step]]``: its keys beyond at/do/every/until (documented in README's
    rcn-bench section), the parser that checks them into the step's args, and whether it may
    repeat (``every``/``until``)."""
    keys: frozenset[str]
    parse: Callable[[Reader, str, _Context], dict]
    repeats: bool = True


#: step kind -> its keys, parser and whether it repeats
STEPS: dict[str, StepKind] = {
    "workload": StepKind(frozenset({"name", "pair", "block", "depth", "rate", "region", "seed"}),
                         _workload_args, repeats=False),
    "stop_workload": StepKind(frozenset({"name"}), _stop_workload_args),
    "impair": StepKind(frozenset({"appliance", "link", "delay_ms", "jitter_ms", "loss",
                                  "duplicate", "reorder", "rate"}), _impair_args),
    "link_down": StepKind(frozenset({"appliance", "link"}), _link_args),
    "link_up": StepKind(frozenset({"appliance", "link"}), _link_args),
    "pair": StepKind(frozenset({"command", "array", "lun", "fast"}), _pair_args),
    "signal": StepKind(frozenset({"device", "signal"}), _signal_args),
    "wait": StepKind(frozenset({"for", "array", "lun", "state", "below_ms", "timeout"}),
                     _wait_args, repeats=False),
    "check": StepKind(frozenset({"check", "name", "array", "lun", "state", "below_ms", "since",
                                 "workload"}), _check_args, repeats=False),
}
