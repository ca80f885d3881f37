"""Thrash a lab under a journalled workload and judge every fault (issue 15).

    python -m tools.chaos [--seed 1] [--rounds 3] [--roles ROLE,...] [--faults kill,stop,cut]
                          [--rate 200] [--recovery-timeout 60] [--dir DIR] [--keep]
                          [--json report.json]

In the manner of teuthology's thrashers: a lab (:mod:`rcn.lab`, real daemons on loopback)
runs a host (:mod:`rcn.bench.workload`: stamped blocks over NBD to the source volume, a
journal of every acknowledged write); then, role after role, at random moments drawn
from ``--seed``, one fault:

* ``kill``  -- SIGKILL the role's daemon, then start it again with the same file and
  ports (:func:`rcn.lab.restart`);
* ``stop``  -- SIGSTOP it for a random 0.5-5 s, then SIGCONT;
* ``cut``   -- take the role's WAN links down through ``rcn-wanem``'s SCPI console
  (:class:`rcn.wanem.driver.WanemDriver`) for a random 0.5-5 s, then up again.

Roles: ``source-array`` (arrayA), ``target-array`` (arrayB), ``source-edge`` (edgeA),
``target-edge`` (edgeB), ``core`` (core1), ``mgmt`` (the management server). ``--rounds
N`` is the number of faults per role; a role's faults go round the kinds that apply to
it (shuffled by the seed), and the roles take turns. ``kill`` and ``stop`` run in the
default lab (``mgmt = true``, pairs made with pair-create); ``cut`` in a lab with two
WAN emulator links, edgeA-core1 (LINK1) and core1-edgeB (LINK2), which ``rcn lab`` can
only build with static tables (no management server). A cut of the source edge is LINK1,
of the target edge LINK2, of the core both. Arrays and the management server are not
cut: their links (FCIP to the edge, AMP) do not pass through the emulator in a lab.

After each fault chaos waits for the documented recovery (``RECOVERY`` below: automatic,
or ``rcn array resync`` on the source array once the pair shows Suspend or failure
Suspend, docs/pairs.md) until every party shows the pair Duplex -- both arrays (rows and
FCIP link up), both edges' ``/status`` and, with a management server, its ``/pairs`` and
every device up to date -- and the target edge has applied everything the source edge
had logged when that first held. The time from the fault's end (restarted, SIGCONT,
link up) to then is the recovery time. Then, on the live target volume:

* invariant 1 (DESIGN.md): :func:`rcn.bench.consistency.check_prefix` of every host's
  region -- each write acknowledged before the newest write visible on the target is
  there (else *lost*), no block is *torn*;
* *backwards*: no block shows an older write of its host than it showed at the previous
  check (k never decreases);
* invariant 5, bounded resources: each daemon's resident memory and open descriptors
  under ``RSS_LIMIT`` and ``FD_LIMIT``;
* invariant 6, bad input answered: each daemon answers ``/metrics`` (200) and a request
  for a path it does not have with a 4xx (the WAN emulator: ``*IDN?``, and an unknown
  command answered with an error in ``SYST:ERR?``).

A fault after which no documented recovery brings Duplex back within
``--recovery-timeout`` seconds is *stuck*: chaos records what each party shows (arrays,
edges' ``/status``, the management server), stops that lab and carries on in a fresh
one. A host whose connection died with the source array starts again on a new region of
the volume (its own run id and journal), as a host reconnects. At the end of each lab the
hosts stop, the target drains, the volumes are compared (sha256) and every host's region
checked with :func:`rcn.bench.consistency.check_final`.

The table has a row per role: faults, writes acknowledged during them, lost, torn,
backwards, recovery time p50/max, manual steps (commands issued), stuck, and the
resource/answer checks that failed. ``--json`` writes every fault's record too. Exit
status 0 when nothing was lost, torn, went backwards, got stuck or broke a bound; 1
otherwise; 2 for bad options. The lab directories are removed at the end unless the run
failed and ``--keep`` was given (``--dir``: kept always).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

import numpy as np

from rcn import lab as lablib
from rcn.bench import faults as faultlib
from rcn.bench.consistency import (STAMPED, TORN, ConsistencyError, check_final, check_prefix,
                                   read_journal, scan_file)
from rcn.bench.runner import spawn_workload
from rcn.cli.lab import describe_status
from rcn.lab import group_status, unapplied
from rcn.wanem.driver import ApplianceError, WanemDriver, open_port

ROLES = {"source-array": "arrayA", "target-array": "arrayB", "source-edge": "edgeA",
         "target-edge": "edgeB", "core": "core1", "mgmt": "mgmt"}
FAULTS = ("kill", "stop", "cut")
CUT_LINKS = {"source-edge": (1,), "target-edge": (2,), "core": (1, 2)}
LAB_OF_FAULT = {"kill": "mgmt", "stop": "mgmt", "cut": "wanem"}

# -- the documented way back, per (role, fault) -------------------------------------------
# "auto": the RCN recovers by itself (restart, reconnect, retransmit, replay);
# "resync": `rcn array resync LUN` on the source array once its pair shows Suspend or
# failure Suspend (docs/pairs.md, Resync). Chaos tries the ladder AUTO, then RESYNC for
# every fault; a fault that needed a step its entry does not name counts as "unexpected"
# (a failure of the run), one that nothing brought back as "stuck".
AUTO, RESYNC = "auto", "resync"
RECOVERY: dict[tuple[str, str], str] = {
    ("source-array", "kill"): AUTO,      # rows, bitmaps and write intent on disk: it
                                         # resyncs what was in flight by itself
    ("source-array", "stop"): AUTO,
    ("target-array", "kill"): AUTO,      # the target edge applies again once it is back
    ("target-array", "stop"): AUTO,
    ("source-edge", "kill"): AUTO,       # the array's RIOs fail: failure Suspend, and it
                                         # resyncs by itself at link-up (auto_resync)
    ("source-edge", "stop"): AUTO,
    ("source-edge", "cut"): AUTO,        # retransmission, within failure_timeout
    ("target-edge", "kill"): AUTO,       # the source edge retransmits what it retains
    ("target-edge", "stop"): AUTO,
    ("target-edge", "cut"): AUTO,
    ("core", "kill"): AUTO,
    ("core", "stop"): AUTO,
    ("core", "cut"): AUTO,
    ("mgmt", "kill"): AUTO,              # the devices keep their settings meanwhile
    ("mgmt", "stop"): AUTO,
}
# Faults known to strand the pair today (issue 15); each entry names why. Remove an entry
# once its fix lands: tests/tools/test_chaos.py then requires that fault to recover.
KNOWN_STUCK: dict[tuple[str, str], str] = {}

RSS_LIMIT = 512 << 20        # bytes of resident memory per daemon (they start near 170 MiB)
FD_LIMIT = 256               # open descriptors per daemon (they start near 15)
GAP = (0.5, 2.5)             # seconds of workload before each fault
HOLD = (0.5, 5.0)            # seconds a process stays stopped / a link cut (past the
                             # management server's 5 s staleness sometimes)
KILL_GAP = (0.0, 1.0)        # seconds between a kill and the restart
SLICE = 2 << 20              # bytes of the volume per host (a host after a reconnect: the next)
BLOCK = 4096
DEPTH = 8
DRAIN_TIMEOUT = 60.0
HTTP_TIMEOUT = 1.0
POLL = 0.1
HOST_STOP_WAIT = 40.0        # a workload waits up to 30 s for its writes in flight
RESTART_TIMEOUT = 60.0       # seconds a restarted daemon may take to be ready


class ChaosError(Exception):
    """The run cannot go on (not a judged fault): a lab that does not start."""


# -- the plan ------------------------------------------------------------------------------

def applicable(role: str, fault: str) -> bool:
    return (role, fault) in RECOVERY


def plan(roles: list[str], faults: list[str], rounds: int, seed: int
         ) -> list[tuple[str, str]]:
    """(role, fault) in run order: round after round, every role in turn; each role goes
    round its applicable fault kinds in an order drawn from ``seed``."""
    rng = random.Random(seed)
    kinds = {}
    for role in roles:
        mine = [f for f in faults if applicable(role, f)]
        rng.shuffle(mine)
        kinds[role] = mine
    out = []
    for r in range(rounds):
        for role in roles:
            if kinds[role]:
                out.append((role, kinds[role][r % len(kinds[role])]))
    return out


def topology(kind: str, capacity: int) -> lablib.Topology:
    if kind == "mgmt":
        return lablib.Topology(capacity=capacity, log_mode="durable")
    links = (lablib.WanemSpec(("edgeA", "core1")), lablib.WanemSpec(("core1", "edgeB")))
    return lablib.Topology(capacity=capacity, log_mode="durable", mgmt=False, wanem=links)


# -- what the parties show ---------------------------------------------------------------------

def _get(url: str) -> dict:
    return lablib.get_json(url, HTTP_TIMEOUT)


def _answer(what, call):
    try:
        return call()
    except (urllib.error.URLError, OSError, ValueError, lablib.LabError) as exc:
        return {"error": f"{what}: {getattr(exc, 'reason', exc)}"}


def parties(lab: dict) -> dict:
    """The pair as each party shows it: arrays (FCIP link, pair rows), edges (pair rows,
    group counters), the management server (pairs, devices up to date)."""
    devices = {d["name"]: d for d in lab["devices"]}
    view: dict = {}
    for name in ("arrayA", "arrayB"):
        control = devices[name]["urls"]["control"]

        def array(control=control):
            status = _get(control + "/status")
            pairs = _get(control + "/pairs").get("pairs", [])
            return {"edge_link": status.get("edge_link"),
                    "pairs": [{k: p.get(k) for k in ("lun", "role", "state", "group",
                                                     "dirty_tracks", "last_error")}
                              for p in pairs]}
        view[name] = _answer(f"{name} control", array)
    for name in ("edgeA", "edgeB"):
        def edge(name=name):
            body = _get(devices[name]["urls"]["status"])
            return {"pairs": [{k: p.get(k) for k in ("side", "source_lun", "target_lun",
                                                     "group", "state", "bitmap_727_tracks")}
                              for p in body.get("pairs", [])],
                    "groups": [{k: g.get(k) for k in ("group", "log_generation", "durable",
                                                      "log_retained_entries",
                                                      "log_outstanding") if k in g}
                               for g in body.get("groups", [])],
                    "_status": body}
        view[name] = _answer(f"{name} /status", edge)
    if "mgmt" in devices:
        def mgmt():
            pairs = lablib.api(lab, "GET", "/pairs", timeout=HTTP_TIMEOUT)["pairs"]
            listed = lablib.api(lab, "GET", "/devices", timeout=HTTP_TIMEOUT)["devices"]
            return {"pairs": [{k: p.get(k) for k in ("id", "source_lun", "target_lun",
                                                     "group", "state")} for p in pairs],
                    "up_to_date": {d["id"]: d.get("up_to_date") for d in listed}}
        view["mgmt"] = _answer("mgmt API", mgmt)
    return view


def shown(view: dict) -> dict:
    """``view`` without the edges' whole /status bodies (for reports)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "_status"} for k, v in view.items()}


def describe(view: dict) -> list[str]:
    """One line per party of what ``view`` shows (for a stuck fault)."""
    lines = []
    for name, party in view.items():
        if "error" in party:
            lines.append(f"{name}: {party['error']}")
        elif name.startswith("array"):
            rows = ", ".join(f"LUN {r['lun']} {r['role']} {r['state']}"
                             + (f" ({r['last_error']})" if r.get("last_error") else "")
                             for r in party["pairs"])
            lines.append(f"{name}: edge link {party['edge_link']}; pairs: {rows or 'none'}")
        elif name.startswith("edge"):
            rows = ", ".join(f"{r['side']} LUN {r['source_lun']}->{r['target_lun']} {r['state']}"
                             + (f" (727: {r['bitmap_727_tracks']} tracks)"
                                if r.get("bitmap_727_tracks") else "") for r in party["pairs"])
            groups = ", ".join(f"group {g['group']} gen {g.get('log_generation')} retained "
                               f"{g.get('log_retained_entries')}"
                               + (f" applied {g['durable']}" if "durable" in g else "")
                               for g in party["groups"])
            lines.append(f"{name} /status: pairs: {rows or 'none'}; {groups or 'no groups'}")
        elif name == "mgmt":
            rows = ", ".join(f"pair {r['id']} {r['state']}" for r in party["pairs"])
            behind = [d for d, ok in party["up_to_date"].items() if not ok]
            lines.append(f"mgmt: {rows or 'no pairs'}; devices "
                         + (f"not up to date: {', '.join(behind)}" if behind else "up to date"))
    return lines


def not_duplex(lab: dict, view: dict) -> list[str]:
    """Why the lab's pairs are not Duplex everywhere (empty: they are)."""
    why = []
    for name, party in view.items():
        if "error" in party:
            why.append(party["error"])
    for p in lab["pairs"]:
        src, dst = p["source_lun"], p["target_lun"]
        for name, lun, role in (("arrayA", src, "source"), ("arrayB", dst, "target")):
            party = view.get(name, {})
            if "error" in party:
                continue
            if party["edge_link"] != "up":
                why.append(f"{name}: edge link {party['edge_link']}")
            row = next((r for r in party["pairs"] if r["lun"] == lun and r["role"] == role),
                       None)
            if row is None:
                why.append(f"{name}: no {role} pair row for LUN {lun}")
            elif row["state"] != "duplex":
                why.append(f"{name} LUN {lun}: {row['state']}"
                           + (f" ({row['last_error']})" if row.get("last_error") else ""))
        for name in ("edgeA", "edgeB"):
            party = view.get(name, {})
            if "error" in party:
                continue
            rows = [r for r in party["pairs"]
                    if (r["source_lun"], r["target_lun"]) == (src, dst)]
            if not rows and name == "edgeA":
                why.append(f"{name}: no pair row for LUN {src}->{dst}")
            why += [f"{name} {r['side']} LUN {src}->{dst}: {r['state']}" for r in rows
                    if r["state"] != "duplex"]
        party = view.get("mgmt")
        if party and "error" not in party:
            rows = [r for r in party["pairs"]
                    if (r["source_lun"], r["target_lun"]) == (src, dst)]
            why += [f"mgmt pair {r['id']}: {r['state']}" for r in rows if r["state"] != "duplex"]
    party = view.get("mgmt")
    if party and "error" not in party:
        behind = sorted(d for d, ok in party["up_to_date"].items() if not ok)
        if behind:
            why.append("mgmt: not up to date: " + ", ".join(behind))
    return why


def caught_up(lab: dict, view: dict, marks: dict) -> list[str]:
    """Groups whose target edge has not applied up to ``marks[group]`` (the source edge's
    generation when Duplex was first seen everywhere)."""
    target = view["edgeB"].get("_status", {})
    behind = []
    for group, mark in marks.items():
        applied = lablib.applied_counter(group_status(target, group))
        if applied < mark:
            behind.append(f"group {group}: target applied {applied} of {mark}")
    return behind


def generations(lab: dict, view: dict) -> dict:
    source = view["edgeA"].get("_status", {})
    return {g: group_status(source, g).get("log_generation", 0)
            for g in sorted({p["group"] for p in lab["pairs"]})}


# -- invariants 5 and 6 ----------------------------------------------------------------------

def resources(pid: int) -> tuple[int, int] | None:
    """(resident bytes, open descriptors) of a process (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


def _base(device: dict) -> str | None:
    urls = device["urls"]
    if "control" in urls:
        return urls["control"]
    if "metrics" in urls:
        return urls["metrics"].rsplit("/", 1)[0]
    return None


def probe(device: dict) -> str | None:
    """Invariant 6 for one daemon: what it failed to answer (None: it answered)."""
    if device["role"] == "wanem":
        try:
            driver = WanemDriver(open_port(device["urls"]["scpi"], timeout=2.0))
        except Exception as exc:                  # serial.SerialException: no connection
            return f"SCPI: cannot connect: {exc}"
        try:
            if not driver.identify():
                return "SCPI: *IDN? answered nothing"
            try:
                driver.command("CHAOS:NOSUCH 1")
            except ApplianceError as exc:
                if "no answer" in str(exc):
                    return f"SCPI: an unknown command: {exc}"
                return None
            return "SCPI: an unknown command was accepted"
        except ApplianceError as exc:
            return f"SCPI: {exc}"
        finally:
            driver.close()
    base = _base(device)
    if base is None:
        return None
    try:
        text = lablib.get_text(base + "/metrics", HTTP_TIMEOUT)
        if "# TYPE" not in text:
            return f"{base}/metrics: not Prometheus text"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{base}/metrics: {getattr(exc, 'reason', exc)}"
    try:
        with urllib.request.urlopen(base + "/chaos-no-such-path", timeout=HTTP_TIMEOUT):
            return f"{base}/chaos-no-such-path: answered 2xx"
    except urllib.error.HTTPError as exc:
        if not 400 <= exc.code < 500:
            return f"{base}/chaos-no-such-path: HTTP {exc.code}, not 4xx"
    except (urllib.error.URLError, OSError) as exc:
        return f"{base}/chaos-no-such-path: {getattr(exc, 'reason', exc)}"
    return None


# -- hosts -----------------------------------------------------------------------------------

@dataclass
class Host:
    """One workload process on one region of the pair's source volume."""
    name: str
    process: object
    journal: str
    log: str
    region: tuple[int, int]
    run_id: int
    seen: np.ndarray | None = None      # per block: the newest write index the target showed

    def started(self) -> bool:
        """Whether the host's journal exists: one that (re)started moments ago may not have
        made it yet, and has acknowledged nothing to check."""
        return os.path.exists(self.journal)

    def acked(self) -> int:
        try:
            return int(read_journal(self.journal).ok.sum())
        except (OSError, ConsistencyError):
            return 0


# -- one fault's record ----------------------------------------------------------------------

@dataclass
class Fault:
    lab: int
    role: str
    fault: str
    device: str
    at_s: float
    hold_s: float = 0.0
    acked: int = 0
    recovery_s: float | None = None
    manual: list = field(default_factory=list)       # commands issued, with their answers
    unexpected: bool = False
    stuck: bool = False
    known: str | None = None
    state: dict | None = None                        # what the parties showed when stuck
    why: list = field(default_factory=list)
    required: int = 0                                # writes the prefix checks required
    lost: int = 0
    torn: int = 0
    phantoms: int = 0
    backwards: int = 0
    prefix: list = field(default_factory=list)
    bounds: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.torn or self.phantoms or self.backwards or self.stuck
                    or self.unexpected or self.bounds or self.answers)


# -- the run -----------------------------------------------------------------------------------

class Chaos:
    def __init__(self, args, say=print):
        self.args, self.say = args, say
        self.rng = random.Random(args.seed)
        self.base = args.dir
        self.t0 = time.monotonic()
        self.records: list[Fault] = []
        self.labs: list[dict] = []
        self.lab: dict | None = None
        self.kind = ""
        self.hosts: list[Host] = []
        self.driver = None
        self.peak: dict[str, dict] = {}
        self._acked_before = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        self.say(f"[{self.now():7.1f} s] {text}")

    # -- labs ------------------------------------------------------------------------------
    def start_lab(self, kind: str, reason: str) -> None:
        n = len(self.labs) + 1
        directory = os.path.join(self.base, f"lab{n}")
        budget = 1 + sum(1 for role, fault in self.todo
                         if (role, fault) == ("source-array", "kill"))
        capacity = max(16 << 20, budget * SLICE)
        self.log(f"lab {n} ({kind}, {reason}): starting in {directory}")
        try:
            self.lab = lablib.up(topology(kind, capacity), directory, timeout=120.0)
        except lablib.LabError as exc:
            raise ChaosError(f"lab {n} did not start: {exc}") from None
        self.kind = kind
        self.devices = {d["name"]: d for d in self.lab["devices"]}
        self.labs.append({"lab": n, "kind": kind, "dir": directory, "reason": reason,
                          "capacity": capacity, "result": None})
        self.hosts = []
        self._acked_before = 0
        self.slices = capacity // SLICE
        if kind == "wanem":
            self.driver = WanemDriver(open_port(self.devices["wanem"]["urls"]["scpi"]))
        self.start_host()
        self.idle(1.0)

    def start_host(self) -> None:
        k = len(self.hosts)
        if k >= self.slices:
            raise ChaosError(f"no free region of the volume for host {k + 1}")
        name = f"host{k + 1}"
        run_id = self.rng.getrandbits(62) + 1
        region = (k * SLICE, SLICE)
        process, files = spawn_workload(self.lab["dir"], name, self.lab["nbd_url"],
                                        block=BLOCK, depth=DEPTH, rate=self.args.rate,
                                        region=region, seed=self.rng.getrandbits(31),
                                        run_id=run_id)
        self.hosts.append(Host(name, process, files["journal"], files["log"], region, run_id))

    def stop_hosts(self) -> None:
        running = [h for h in self.hosts if h.process.poll() is None]
        for h in running:
            h.process.send_signal(signal.SIGTERM)
        for h in running:
            try:
                h.process.wait(HOST_STOP_WAIT)
            except Exception:
                h.process.kill()
                h.process.wait()

    def end_lab(self, judge: bool) -> None:
        """Stop the hosts; when ``judge``, drain and compare; stop the lab."""
        entry = self.labs[-1]
        self.stop_hosts()
        if judge:
            entry["result"] = self.final()
        else:
            entry["result"] = {"judged": False, "why": "a stuck fault ended it"}
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        lablib.down(self.lab["dir"], quiet=True)
        self.lab = None

    def final(self) -> dict:
        began = time.monotonic()
        groups = sorted({p["group"] for p in self.lab["pairs"]})
        why = ["not asked"]
        while time.monotonic() - began < DRAIN_TIMEOUT:
            try:
                source = _get(self.devices["edgeA"]["urls"]["status"])
                target = _get(self.devices["edgeB"]["urls"]["status"])
                why = unapplied(source, target, groups)
            except (OSError, ValueError) as exc:
                why = [f"edge /status: {exc}"]
            if not why:
                break
            time.sleep(POLL)
        drained = not why
        result = {"judged": True, "drained": drained, "drain_s": round(time.monotonic() - began, 3),
                  "drain_why": why, "equal": None, "lost": 0, "torn": 0, "checks": []}
        if drained:
            result["equal"] = all(faultlib.volumes_equal(p) for p in self.lab["pairs"])
        target = self.lab["pairs"][0]["target_volume"]
        for h in self.hosts:
            if not h.started():
                continue
            check = check_final(h.journal, target, *h.region)
            result["lost"] += check.figures["missing"]
            result["torn"] += check.figures["torn"]
            result["checks"].append(f"{h.name}: {check.summary}"
                                    + ("" if check.ok else "; " + "; ".join(check.violations[:3])))
        result["passed"] = bool(drained and result["equal"] and not result["lost"]
                                and not result["torn"])
        self.log(f"lab {self.labs[-1]['lab']} end: "
                 + (f"drained in {result['drain_s']:.1f} s, volumes "
                    f"{'equal' if result['equal'] else 'DIFFER'}" if drained
                    else f"NOT drained in {DRAIN_TIMEOUT:g} s: {'; '.join(why)}")
                 + f"; final check {result['lost']} lost, {result['torn']} torn")
        return result

    def idle(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    # -- one fault -------------------------------------------------------------------------
    def run(self) -> dict:
        order = plan(self.args.roles, self.args.faults, self.args.rounds, self.args.seed)
        started = time.time()
        try:
            for kind in ("mgmt", "wanem"):
                self.todo = [(r, f) for r, f in order if LAB_OF_FAULT[f] == kind]
                if not self.todo:
                    continue
                self.start_lab(kind, "start")
                for i, (role, fault) in enumerate(self.todo):
                    if self.lab is None:
                        self.todo = self.todo[i:]
                        self.start_lab(kind, "after a stuck fault")
                    record = self.one(role, fault)
                    self.records.append(record)
                    if record.stuck:
                        self.end_lab(judge=False)
                if self.lab is not None:
                    self.end_lab(judge=True)
        finally:
            if self.lab is not None:
                self.stop_hosts()
                lablib.down(self.lab["dir"], quiet=True)
        return self.report(started)

    def one(self, role: str, fault: str) -> Fault:
        device = ROLES[role]
        self.idle(self.rng.uniform(*GAP))
        record = Fault(lab=len(self.labs), role=role, fault=fault, device=device,
                       at_s=round(self.now(), 3), known=KNOWN_STUCK.get((role, fault)))
        began = time.monotonic()
        try:
            healed = self.inject(record)
        except (lablib.LabError, ApplianceError, OSError) as exc:
            record.note = f"the fault could not be undone: {exc}"
            healed = time.monotonic()
        if any(h.process.poll() is not None for h in self.hosts[-1:]):
            self.start_host()               # the host lost its connection: it reconnects
            record.note = (record.note + "; " if record.note else "") + \
                f"the host reconnected as {self.hosts[-1].name}"
        self.recover(record, healed)
        if not record.stuck or not any(r.get("state") in ("duplex-pending", "initial-copying")
                                       for r in record.state.get("arrayA", {}).get("pairs", [])):
            self.check_prefix(record)
        self.check_bounds(record)
        acked = sum(h.acked() for h in self.hosts)
        record.acked, self._acked_before = acked - self._acked_before, acked
        self.progress(record, time.monotonic() - began)
        return record

    def inject(self, record: Fault) -> float:
        """Do the fault and undo it; when it was undone (monotonic)."""
        name, directory = record.device, self.lab["dir"]
        if record.fault == "kill":
            faultlib.kill(directory, name)
            self.idle(self.rng.uniform(*KILL_GAP))
            healed = time.monotonic()
            self.lab = lablib.restart(directory, name, timeout=RESTART_TIMEOUT)
            self.devices = {d["name"]: d for d in self.lab["devices"]}
            return healed
        hold = record.hold_s = round(self.rng.uniform(*HOLD), 3)
        if record.fault == "stop":
            lablib.signal_device(directory, name, signal.SIGSTOP)
            try:
                self.idle(hold)
            finally:
                lablib.signal_device(directory, name, signal.SIGCONT)
            return time.monotonic()
        links = CUT_LINKS[record.role]
        try:
            for link in links:
                self.driver.set_up(link, False)
            self.idle(hold)
        finally:
            for link in links:
                self.driver.set_up(link, True)
        return time.monotonic()

    def recover(self, record: Fault, healed: float) -> None:
        """The ladder: wait (auto); then resync at the source if its pair is suspended."""
        timeout = self.args.recovery_timeout
        steps = [AUTO, RESYNC]
        view = None
        for step in steps:
            if step == RESYNC:
                issued = self.resync(record, view)
                if not issued:
                    break
            view, why = self.wait_recovered(timeout)
            if not why:
                record.recovery_s = round(time.monotonic() - healed, 3)
                if step == RESYNC and RECOVERY[(record.role, record.fault)] == AUTO:
                    record.unexpected = True
                return
        record.stuck = True
        record.why = why
        view = parties(self.lab)
        record.state = shown(view)
        record.state["shown"] = describe(view)
        record.state["lab_status"] = describe_status(lablib.status(self.lab["dir"]))

    def wait_recovered(self, timeout: float) -> tuple[dict, list[str]]:
        deadline = time.monotonic() + timeout
        marks = None
        while True:
            view = parties(self.lab)
            why = not_duplex(self.lab, view)
            if not why:
                if marks is None:
                    marks = generations(self.lab, view)
                why = caught_up(self.lab, view, marks)
                if not why:
                    return view, []
            else:
                marks = None
            if time.monotonic() > deadline:
                return view, why
            time.sleep(POLL)

    def resync(self, record: Fault, view: dict | None) -> bool:
        """``rcn array resync`` for each source pair in Suspend or failure Suspend; whether
        one was issued and accepted."""
        from rcn.httpjson import RequestError, request_json
        control = self.devices["arrayA"]["urls"]["control"]
        issued = False
        rows = (view or {}).get("arrayA", {}).get("pairs", [])
        for p in self.lab["pairs"]:
            row = next((r for r in rows if r["lun"] == p["source_lun"]), None)
            if row is None or row["state"] not in ("suspend", "failure-suspend"):
                continue
            command = f"rcn array --url {control} resync {p['source_lun']}"
            try:
                request_json(f"{control}/pairs/{p['source_lun']}/resync", 30, "POST", {})
                record.manual.append({"command": command, "answer": "accepted"})
                issued = True
            except RequestError as exc:
                record.manual.append({"command": command, "answer": f"refused: {exc}"})
        return issued

    # -- checks ----------------------------------------------------------------------------
    def check_prefix(self, record: Fault) -> None:
        target = self.lab["pairs"][0]["target_volume"]
        for h in self.hosts:
            if not h.started():
                continue
            result = check_prefix(h.journal, target, *h.region, live=True)
            record.required += result.figures["required"]
            record.lost += result.figures["missing"]
            record.torn += result.figures["torn"]
            record.phantoms += result.figures["phantoms"]
            if not result.ok:
                record.prefix.append(f"{h.name}: {result.summary}; "
                                     + "; ".join(result.violations[:3]))
            decoded, _ = scan_file(target, h.run_id, BLOCK, *h.region)
            index = decoded.index.astype(np.int64)
            if h.seen is not None:
                known = decoded.state != TORN
                back = known & (h.seen > 0) & (index < h.seen)
                if back.any():
                    record.backwards += int(back.sum())
                    k = int(np.flatnonzero(back)[0])
                    record.prefix.append(
                        f"{h.name}: block at offset {h.region[0] + k * BLOCK} showed write "
                        f"{int(h.seen[k])}, now "
                        + (f"write {int(index[k])}" if decoded.state[k] == STAMPED
                           else "no write of this host") + " (went backwards)")
                index = np.where(known, index, h.seen)
            h.seen = np.maximum(index, h.seen) if h.seen is not None else index

    def check_bounds(self, record: Fault) -> None:
        for device in self.lab["devices"]:
            figures = resources(device["pid"])
            if figures is None:
                record.bounds.append(f"{device['name']}: not running")
                continue
            rss, fds = figures
            peak = self.peak.setdefault(device["name"], {"rss_first": rss, "fds_first": fds,
                                                         "rss_max": 0, "fds_max": 0})
            peak["rss_max"], peak["fds_max"] = max(peak["rss_max"], rss), max(peak["fds_max"], fds)
            if rss > RSS_LIMIT:
                record.bounds.append(f"{device['name']}: {rss >> 20} MiB resident, over "
                                     f"{RSS_LIMIT >> 20} MiB")
            if fds > FD_LIMIT:
                record.bounds.append(f"{device['name']}: {fds} open descriptors, over {FD_LIMIT}")
            why = probe(device)
            if why is not None:
                record.answers.append(f"{device['name']}: {why}")

    # -- output ----------------------------------------------------------------------------
    def progress(self, r: Fault, took: float) -> None:
        what = f"{r.role} {r.fault}" + (f" {r.hold_s:.1f} s" if r.hold_s else "")
        if r.stuck:
            outcome = (f"STUCK{' (known: ' + r.known + ')' if r.known else ''}: "
                       + "; ".join(r.why[:4]))
        else:
            outcome = (f"recovered in {r.recovery_s:.1f} s"
                       + (f" after {len(r.manual)} manual step(s)" if r.manual else " (auto)")
                       + (" UNEXPECTED" if r.unexpected else ""))
        checks = (f"prefix: {r.required} writes required, {r.lost} lost, {r.torn} torn, "
                  f"{r.backwards} backwards"
                  + (f", {r.phantoms} phantoms" if r.phantoms else ""))
        extra = "; ".join(r.bounds + r.answers + r.prefix[:2])
        self.log(f"lab {r.lab} {what}: {outcome}; {r.acked} acked; {checks}"
                 + (f"; {extra}" if extra else "") + (f"; {r.note}" if r.note else ""))
        for m in r.manual:
            self.log(f"    {m['command']}: {m['answer']}")
        for line in (r.state or {}).get("shown", []):
            self.log(f"    {line}")

    def report(self, started: float) -> dict:
        rows = table_rows(self.records, self.args.roles)
        passed = (all(not r.failed for r in self.records)
                  and all(lab["result"] is None or not lab["result"].get("judged")
                          or lab["result"]["passed"] for lab in self.labs))
        return {"version": 1, "seed": self.args.seed, "rounds": self.args.rounds,
                "roles": self.args.roles, "faults": self.args.faults, "rate": self.args.rate,
                "recovery_timeout": self.args.recovery_timeout, "started": started,
                "duration_s": round(self.now(), 3),
                "limits": {"rss_bytes": RSS_LIMIT, "fds": FD_LIMIT},
                "recovery": {f"{r}/{f}": step for (r, f), step in RECOVERY.items()},
                "known_stuck": {f"{r}/{f}": why for (r, f), why in KNOWN_STUCK.items()},
                "table": rows, "labs": self.labs, "resources": self.peak,
                "records": [asdict(r) for r in self.records], "passed": passed}


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def table_rows(records: list[Fault], roles: list[str]) -> list[dict]:
    rows = []
    for role in roles + ["all"]:
        mine = [r for r in records if role in ("all", r.role)]
        if not mine and role != "all":
            continue
        kinds = {}
        for r in mine:
            kinds[r.fault] = kinds.get(r.fault, 0) + 1
        times = [r.recovery_s for r in mine if r.recovery_s is not None]
        rows.append({"role": role, "faults": len(mine),
                     "kinds": ", ".join(f"{k} {n}" for k, n in kinds.items()),
                     "acked": sum(r.acked for r in mine),
                     "required": sum(r.required for r in mine),
                     "lost": sum(r.lost for r in mine), "torn": sum(r.torn for r in mine),
                     "backwards": sum(r.backwards for r in mine),
                     "recovery_p50_s": _p50(times),
                     "recovery_max_s": max(times) if times else None,
                     "manual": sum(len(r.manual) for r in mine),
                     "unexpected": sum(r.unexpected for r in mine),
                     "stuck": sum(r.stuck for r in mine),
                     "stuck_known": sum(r.stuck and r.known is not None for r in mine),
                     "bounds": sum(len(r.bounds) for r in mine),
                     "answers": sum(len(r.answers) for r in mine)})
    return rows


def render(report: dict) -> str:
    def s(v):
        return "-" if v is None else f"{v:.1f}"
    columns = ["role", "faults", "acked", "lost", "torn", "back", "rec p50 s", "rec max s",
               "manual", "stuck", "bounds", "answers"]
    rows = [{"role": r["role"], "faults": f"{r['faults']} ({r['kinds']})", "acked": r["acked"],
             "lost": r["lost"], "torn": r["torn"], "back": r["backwards"],
             "rec p50 s": s(r["recovery_p50_s"]), "rec max s": s(r["recovery_max_s"]),
             "manual": f"{r['manual']}"
                       + (f" ({r['unexpected']} unexpected)" if r["unexpected"] else ""),
             "stuck": f"{r['stuck']}"
                      + (f" ({r['stuck_known']} known)" if r["stuck_known"] else ""),
             "bounds": r["bounds"], "answers": r["answers"]} for r in report["table"]]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    out = [line.rstrip() for line in lines]
    for lab in report["labs"]:
        result = lab["result"] or {}
        if result.get("judged"):
            equal = {True: "equal", False: "DIFFER", None: "not compared"}[result["equal"]]
            out.append(f"lab {lab['lab']} ({lab['kind']}): drained "
                       f"{'yes' if result['drained'] else 'NO'}, volumes {equal}, final check "
                       f"{result['lost']} lost, {result['torn']} torn")
        else:
            out.append(f"lab {lab['lab']} ({lab['kind']}): not judged ({result.get('why')})")
    for rec in report["records"]:
        if rec["stuck"]:
            out.append(f"stuck: lab {rec['lab']} {rec['role']} {rec['fault']}"
                       + (f" (known: {rec['known']})" if rec["known"] else "") + ": "
                       + "; ".join(rec["why"]))
            out += [f"    {line}" for line in rec["state"]["shown"]]
    out.append(f"{sum(r['faults'] for r in report['table'] if r['role'] == 'all')} faults in "
               f"{report['duration_s']:.0f} s, seed {report['seed']}: "
               + ("PASS" if report["passed"] else "FAIL"))
    return "\n".join(out)


# -- the command line ----------------------------------------------------------------------------

def _list(choices):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        return list(dict.fromkeys(items))
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.chaos",
                                description="Kill, stop and cut every role of a lab under a "
                                            "journalled workload; judge each fault (see the "
                                            "module docstring).")
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="faults per role (default 3)")
    p.add_argument("--roles", type=_list(tuple(ROLES)), default=list(ROLES),
                   help="comma-separated roles (default all: " + ",".join(ROLES) + ")")
    p.add_argument("--faults", type=_list(FAULTS), default=list(FAULTS),
                   help="comma-separated fault kinds (default kill,stop,cut)")
    p.add_argument("--rate", type=float, default=200.0,
                   help="host writes per second (default 200)")
    p.add_argument("--recovery-timeout", type=float, default=60.0,
                   help="seconds each documented recovery step may take before the fault "
                        "counts as stuck (default 60)")
    p.add_argument("--dir", help="where the labs go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true",
                   help="keep the lab directories when the run failed")
    p.add_argument("--json", metavar="FILE", help="write the report (every fault) as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least 1")
    if not (args.rate > 0):
        parser.error(f"--rate {args.rate}: writes per second, more than 0")
    if not (args.recovery_timeout > 0):
        parser.error(f"--recovery-timeout {args.recovery_timeout}: seconds, more than 0")
    if not plan(args.roles, args.faults, 1, args.seed):
        parser.error(f"no fault of {','.join(args.faults)} applies to {','.join(args.roles)} "
                     "(arrays and mgmt are not cut)")
    temporary = args.dir is None
    args.dir = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="rcn-chaos-"))
    os.makedirs(args.dir, exist_ok=True)

    def say(text: str) -> None:
        print(text, flush=True)
    chaos = Chaos(args, say)
    try:
        report = chaos.run()
    except ChaosError as exc:
        print(f"chaos: {exc} (labs in {args.dir})", file=sys.stderr)
        return 1
    print(render(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if temporary:
        if report["passed"] or not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
        else:
            print(f"labs kept in {args.dir}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
