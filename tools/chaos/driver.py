"""The lab driver: labs up and down, hosts, one fault after another, the checks after each."""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np

from rcn import lab as lablib
from rcn.bench import faults as faultlib
from rcn.bench.consistency import (STAMPED, TORN, ConsistencyError, check_final, check_prefix,
                                   read_journal, scan_file)
from rcn.bench.runner import spawn_workload
from rcn.cli.lab import describe_status
from rcn.lab import unapplied
from rcn.wanem.driver import ApplianceError, WanemDriver, open_port
from tools.chaos import keys as keylib
from tools.chaos.catalogue import (AUTO, CUT_LINKS, GAP, HOLD, KILL_GAP, KNOWN_STUCK,
                                   LAB_OF_FAULT, RECOVERY, RESYNC, ROLES, plan)
from tools.chaos.parties import (caught_up, describe, fetch_json, generations, not_duplex,
                                 parties, shown)
from tools.chaos.probes import FD_LIMIT, RSS_LIMIT, probe, resources
from tools.chaos.report import Fault, table_rows

SLICE = 2 << 20              # bytes of the volume per host (a host after a reconnect: the next)
BLOCK = 4096
DEPTH = 8
DRAIN_TIMEOUT = 60.0
POLL = 0.1
HOST_STOP_WAIT = 40.0        # a workload waits up to 30 s for its writes in flight
RESTART_TIMEOUT = 60.0       # seconds a restarted daemon may take to be ready


class ChaosError(Exception):
    """The run cannot go on (not a judged fault): a lab that does not start."""


def topology(kind: str, capacity: int) -> lablib.Topology:
    if kind == "mgmt":
        return lablib.Topology(capacity=capacity, log_mode="durable")
    links = (lablib.WanemSpec(("edgeA", "core1")), lablib.WanemSpec(("core1", "edgeB")))
    return lablib.Topology(capacity=capacity, log_mode="durable", mgmt=False, wanem=links)


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
                source = fetch_json(self.devices["edgeA"]["urls"]["status"])
                target = fetch_json(self.devices["edgeB"]["urls"]["status"])
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
        seal_before = self.seal_figures() if fault == "rotate" else None
        try:
            healed = self.inject(record)
        except keylib.RotationAbsent as exc:
            record.skipped = str(exc)
            healed = time.monotonic()
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
        if seal_before is not None and record.skipped is None:
            self.check_seal(record, seal_before)
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
        if record.fault == "rotate":
            return self.rotate(record)
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

    def rotate(self, record: Fault) -> float:
        """Every key rotated through the management server; done when each new epoch is
        the one sent with (:mod:`tools.chaos.keys`)."""
        result = keylib.rotate_all(self.lab, self.args.recovery_timeout)
        record.note = (f"rotated {result['rotated']} keys"
                       + (f", new epochs sent with after {result['sending_s']:.1f} s"
                          if result["sending_s"] is not None else
                          f"; NOT sending after {self.args.recovery_timeout:g} s: "
                          + ", ".join(result["pending"][:4]))
                       + (f"; skipped {'; '.join(result['skipped'])}" if result["skipped"]
                          else ""))
        if result["sending_s"] is None:
            record.stuck = True
            record.why.append("new key epochs not sent with: " + ", ".join(result["pending"]))
        return time.monotonic()

    def seal_figures(self) -> dict:
        try:
            return keylib.seal_figures(self.lab, fetch_json)
        except (OSError, ValueError) as exc:
            self.log(f"edge /status before a rotation: {exc}")
            return {}

    def check_seal(self, record: Fault, before: dict) -> None:
        """A rotation's cost: refusals of the seal (none allowed), retransmissions."""
        after = self.seal_figures()
        if not before or not after:
            record.answers.append("edge /status unreadable around the rotation")
            return
        record.refused, record.retransmits = keylib.seal_delta(before, after)
        record.storm = keylib.storm(record.retransmits, record.acked)
        record.answers += keylib.not_rotated(before, after)

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
        if r.skipped:
            outcome = f"SKIPPED ({r.skipped}); {outcome}"
        checks = (f"prefix: {r.required} writes required, {r.lost} lost, {r.torn} torn, "
                  f"{r.backwards} backwards"
                  + (f", {r.phantoms} phantoms" if r.phantoms else "")
                  + (f"; seal: refused {r.refused or 'nothing'}, {r.retransmits} "
                     f"retransmissions{' (A STORM)' if r.storm else ''}"
                     if r.retransmits is not None else ""))
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
