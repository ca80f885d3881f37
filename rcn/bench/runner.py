"""``rcn-bench run``: a scenario against a real lab, its appliances driven over their ports.

The runner starts the scenario's lab (``rcn.lab.up``: real daemons on loopback, a
WAN emulator where the topology puts one), opens every appliance with its driver
over its port (the lab's emulator over its console pty), then runs the steps at
their times while it samples the RCN every ``sample_interval`` seconds:

* **lag** per order guarantee group: how old the oldest write the target has not
  applied is. When the target edge's apply counter has caught up with the source
  edge's log generation, it is the target's last apply lag (I/O time to applied);
  otherwise the time since the source's generation first passed the target's apply
  counter (at least that last apply lag) -- so a cut link shows lag growing.
* **throughput**: host writes acknowledged (the workloads' journals) and bytes
  applied at the target (the target edge's per-group ``applied_bytes``), MB/s.
* **source ack latency** p50/p99 of the writes the workloads completed in the interval
  (their journals: issue and completion times of every write).

Workloads are separate processes (``python -m rcn.bench.workload``): hosts writing
stamped blocks over NBD to the source array, so the target can be checked against
what they were acknowledged (:mod:`rcn.bench.consistency`). The run ends with a
pass/fail table per check; the run record (:mod:`rcn.bench.report`) is written as
JSON and plotted as PNG. A check that fails does not stop the run; an error (the lab
does not start, an appliance refuses a command, a workload dies) does, and is
reported with the record so far.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from rcn import lab as lablib
from rcn.bench import report
from rcn.bench.consistency import (JOURNAL_DTYPE, JOURNAL_HEADER, check_final, check_prefix,
                                   read_journal)
from rcn.bench.scenario import Scenario, Step
from rcn.lab import group_status, sha256_file, unapplied
from rcn.wanem.driver import DRIVERS, ApplianceError, open_port

PROGRESS_EVERY = 5.0          # seconds between progress lines of figures
WORKLOAD_STOP_WAIT = 40.0     # a workload waits up to 30 s for its writes in flight


class BenchError(Exception):
    """The run could not go on (not a failed check)."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


@dataclass
class Workload:
    """One workload process and what the runner has read of its journal."""
    name: str
    process: subprocess.Popen
    journal: str
    status: str
    log: str
    region: tuple[int, int]
    pair: dict
    read_at: int = JOURNAL_HEADER.size
    latencies: list = field(default_factory=list)      # numpy arrays: completed_at, latency
    block: int = 0

    def read_new(self) -> np.ndarray:
        """Journal records completed since the last call."""
        try:
            with open(self.journal, "rb") as f:
                f.seek(self.read_at)
                data = f.read()
        except FileNotFoundError:
            return np.zeros(0, JOURNAL_DTYPE)
        whole = len(data) - len(data) % JOURNAL_DTYPE.itemsize
        self.read_at += whole
        records = np.frombuffer(data[:whole], JOURNAL_DTYPE)
        ok = records[records["ok"] == 1]
        self.latencies.append(np.stack([ok["completed_at"], ok["completed_at"] - ok["issued_at"]]))
        return records

    def latency_between(self, start: float, end: float) -> np.ndarray:
        if not self.latencies:
            return np.zeros(0)
        both = np.concatenate(self.latencies, axis=1)
        chosen = (both[0] > start) & (both[0] <= end)
        return both[1][chosen]



def spawn_workload(directory: str, name: str, url: str, *, block: int, depth: int,
                   rate: float, region: tuple[int, int], seed: int,
                   run_id: int | None = None) -> tuple[subprocess.Popen, dict]:
    """Start a host (``python -m rcn.bench.workload``) writing to ``url``; the process and
    its files ``DIRECTORY/NAME.journal``, ``.status`` and ``.log`` (output appended).
    ``run_id``: default a random one."""
    files = {k: os.path.join(directory, f"{name}.{k}") for k in ("journal", "status", "log")}
    if run_id is None:
        run_id = int.from_bytes(os.urandom(6), "little")
    with open(files["log"], "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rcn.bench.workload", "--url", url,
             "--journal", files["journal"], "--status", files["status"],
             "--block", str(block), "--depth", str(depth), "--rate", f"{rate:g}",
             "--region", f"{region[0]}:{region[1]}", "--seed", str(seed),
             "--run-id", str(run_id)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return process, files


class Runner:
    """One run of ``scenario`` in ``directory`` (made if missing); ``say`` prints progress."""

    def __init__(self, scenario: Scenario, directory: str, say=print):
        self.scenario, self.directory, self.say = scenario, os.path.abspath(directory), say
        self.lab: dict | None = None
        self.drivers: dict = {}
        self.workloads: dict[str, Workload] = {}
        self.t0 = 0.0
        self.samples: list[dict] = []
        self.events: list[dict] = []
        self.checks: list[dict] = []
        self._generations: dict[int, list[tuple[float, int]]] = {}
        self._last = {"t": None, "applied_bytes": None}
        self._next_sample = 0.0
        self._next_progress = 0.0
        self.error: str | None = None

    # -- the run ------------------------------------------------------------------------
    def run(self) -> dict:
        start_wall = time.time()
        try:
            self._start_lab()
            self._open_appliances()
            self.t0 = time.monotonic()
            self._next_sample = self.t0
            self._next_progress = self.t0 + PROGRESS_EVERY
            for due, step in self._timeline():
                self._idle_until(self.t0 + due)
                self._do(step, due)
            self._idle_until(time.monotonic())
        except (BenchError, ApplianceError, lablib.LabError) as exc:
            self.error = str(exc)
            self.say(f"error: {exc}")
            self._event("note", f"error: {exc}")
        finally:
            self._stop_workloads()
            for driver in self.drivers.values():
                driver.close()
        passed = self.error is None and all(c["passed"] for c in self.checks)
        if self.error is not None:
            self.checks.append({"name": "run", "t": self._now(), "passed": False,
                                "detail": self.error})
        return {"version": 1,
                "scenario": {"name": self.scenario.name, "file": self.scenario.file,
                             "description": self.scenario.description},
                "started": start_wall, "duration_s": round(self._now(), 3),
                "groups": sorted({p.group for p in self.scenario.topology.pairs}),
                "samples": self.samples, "events": self.events, "checks": self.checks,
                "passed": passed, "lab_dir": self.directory}

    def _timeline(self) -> list[tuple[float, Step]]:
        return sorted(((t, s) for s in self.scenario.steps for t in s.times()),
                      key=lambda item: (item[0], item[1].index))

    def _now(self) -> float:
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def _event(self, kind: str, label: str, link: str | None = None,
               state: str | None = None) -> None:
        self.events.append({"t": round(self._now(), 3), "kind": kind, "label": label,
                            "link": link, "state": state})

    def _idle_until(self, deadline: float) -> None:
        """Sample (and print progress) until ``deadline`` (monotonic)."""
        while True:
            now = time.monotonic()
            if now >= self._next_sample:
                self._sample(now)
                self._next_sample += self.scenario.sample_interval
                if self._next_sample < now:           # late (a slow check): skip ahead
                    self._next_sample = now + self.scenario.sample_interval
            if now >= self._next_progress and self.samples:
                self._progress(self.samples[-1])
                self._next_progress = now + PROGRESS_EVERY
            if now >= deadline:
                return
            time.sleep(max(0.0, min(deadline, self._next_sample) - time.monotonic()))

    # -- set-up --------------------------------------------------------------------------
    def _start_lab(self) -> None:
        self.say(f"scenario {self.scenario.name}: starting the lab in {self.directory}")
        self.lab = lablib.up(self.scenario.topology, self.directory, timeout=90.0,
                             progress=lambda text: self.say(f"  {text}"))
        self._devices = {d["name"]: d for d in self.lab["devices"]}

    def _open_appliances(self) -> None:
        for appliance in self.scenario.appliances:
            url = appliance.port
            if url == "lab":
                url = self._devices["wanem"]["console"]
            if appliance.trace:
                if "://" in url:
                    raise BenchError(f"appliance {appliance.name}: trace works with a device "
                                     f"path, and the port is {url}")
                url = f"spy://{url}?file={os.path.abspath(appliance.trace)}"
            try:
                port = open_port(url, appliance.speed)
            except Exception as exc:          # serial.SerialException, OSError
                raise BenchError(f"appliance {appliance.name}: cannot open {url}: {exc}") from None
            driver = DRIVERS[appliance.kind](port)
            self.drivers[appliance.name] = driver
            self.say(f"appliance {appliance.name} on {url}: {driver.identify()}")

    # -- steps ---------------------------------------------------------------------------
    def _do(self, step: Step, due: float) -> None:
        a = step.args
        self.say(f"[{self._now():6.1f} s] {step.label()}")
        if step.do == "workload":
            self._start_workload(a)
        elif step.do == "stop_workload":
            self._stop_workloads(a.get("name"))
        elif step.do == "impair":
            driver, n = self.drivers[a["appliance"]], a["link"]
            settings = []
            for key, call, scale, unit in (("delay_ms", driver.set_delay, 1, "ms"),
                                           ("jitter_ms", driver.set_jitter, 1, "ms jitter"),
                                           ("loss", driver.set_loss, 100, "% loss"),
                                           ("duplicate", driver.set_duplicate, 100, "% dup"),
                                           ("reorder", driver.set_reorder, 100, "% reorder"),
                                           ("rate", driver.set_rate, 8, "bit/s")):
                if key in a:
                    call(n, a[key] * scale)
                    settings.append(f"{a[key] * scale:g} {unit}")
            self._event("impair", f"{a['appliance']} LINK{n}: " + ", ".join(settings),
                        link=f"{a['appliance']}:{n}")
        elif step.do in ("link_down", "link_up"):
            up = step.do == "link_up"
            self.drivers[a["appliance"]].set_up(a["link"], up)
            self._event("link", f"LINK{a['link']} {'up' if up else 'down'}",
                        link=f"{a['appliance']}:{a['link']}", state="up" if up else "down")
        elif step.do == "pair":
            self._pair_command(a)
        elif step.do == "signal":
            lablib.signal_device(self.directory, a["device"], getattr(signal, f"SIG{a['signal']}"))
            self._event("note", f"SIG{a['signal']} {a['device']}")
        elif step.do == "wait":
            self._wait(a)
        elif step.do == "check":
            self._check(a)

    def _start_workload(self, a: dict) -> None:
        name = a["name"]
        if name in self.workloads and self.workloads[name].process.poll() is None:
            raise BenchError(f"workload {name} is running already")
        pair = self.lab["pairs"][a["pair"]]
        process, files = spawn_workload(self.directory, name, pair["nbd_url"],
                                        block=a["block"], depth=a["depth"], rate=a["rate"],
                                        region=(0, a["region"]), seed=a["seed"])
        self.workloads[name] = Workload(name, process, files["journal"], files["status"],
                                        files["log"], (0, a["region"]), pair, block=a["block"])
        self._event("workload", f"{name} start ({a['rate']:g}/s)" if a["rate"]
                    else f"{name} start (depth {a['depth']})")

    def _stop_workloads(self, name: str | None = None) -> None:
        chosen = [w for w in self.workloads.values()
                  if (name is None or w.name == name) and w.process.poll() is None]
        for w in chosen:
            w.process.send_signal(signal.SIGTERM)
        for w in chosen:
            try:
                w.process.wait(WORKLOAD_STOP_WAIT)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
            w.read_new()
            if self.t0:
                self._event("workload", f"{w.name} stop")
            if w.process.returncode != 0:
                raise BenchError(f"workload {w.name} exited with status {w.process.returncode}: "
                                 + lablib.tail(w.log, 5))

    def _array_control(self, array: str) -> str:
        return self._devices[array]["urls"]["control"]

    def _pair_command(self, a: dict) -> None:
        from rcn.httpjson import RequestError, request_json
        body = {"fast": a["fast"]} if a["command"] == "suspend" else {}
        url = f"{self._array_control(a['array'])}/pairs/{a['lun']}/{a['command']}"
        try:
            request_json(url, 30, "POST", body)
        except RequestError as exc:
            raise BenchError(f"pair {a['command']} on {a['array']} LUN {a['lun']}: {exc}") from None
        self._event("pair", f"{a['command']} {a['array']} LUN {a['lun']}")

    def _pair_state(self, a: dict) -> str:
        try:
            body = lablib.get_json(f"{self._array_control(a['array'])}/pairs/{a['lun']}")
        except (OSError, ValueError) as exc:
            return f"(no answer: {getattr(exc, 'reason', exc)})"
        return body.get("state", "(none)")

    def _wait(self, a: dict) -> None:
        what, deadline = a["for"], time.monotonic() + a["timeout"]
        began = time.monotonic()
        while True:
            if what == "pair_state":
                state = self._pair_state(a)
                done, why = state == a["state"], f"{a['array']} LUN {a['lun']} is {state}"
            elif what == "drained":
                done, why = self._drained()
            else:
                lag = self._latest_lag()
                done = lag is not None and lag < a["below_ms"]
                why = f"lag {lag} ms"
            if done:
                self._event("wait", f"{what} after {time.monotonic() - began:.1f} s")
                return
            if time.monotonic() > deadline:
                raise BenchError(f"wait for {what}: not reached in {a['timeout']:g} s ({why})")
            self._idle_until(time.monotonic() + 0.1)

    def _drained(self) -> tuple[bool, str]:
        try:
            source = lablib.get_json(self._devices["edgeA"]["urls"]["status"])
            target = lablib.get_json(self._devices["edgeB"]["urls"]["status"])
        except (OSError, ValueError) as exc:
            return False, f"edge /status not answering: {getattr(exc, 'reason', exc)}"
        behind = unapplied(source, target, sorted({p["group"] for p in self.lab["pairs"]}))
        return not behind, "; ".join(behind) or "drained"

    def _latest_lag(self) -> float | None:
        if not self.samples:
            return None
        values = [v for v in self.samples[-1]["lag_ms"].values() if v is not None]
        return max(values) if values else None

    # -- checks --------------------------------------------------------------------------
    def _check(self, a: dict) -> None:
        kind = a["check"]
        passed, detail = getattr(self, f"_check_{kind}")(a)
        row = {"name": a["name"], "t": round(self._now(), 3), "passed": bool(passed),
               "detail": detail}
        self.checks.append(row)
        self._event("check", f"{a['name']} {'PASS' if passed else 'FAIL'}")
        self.say(f"[{self._now():6.1f} s] check {a['name']}: {'PASS' if passed else 'FAIL'}: "
                 f"{detail}")

    def _check_pair_state(self, a: dict) -> tuple[bool, str]:
        state = self._pair_state(a)
        return state == a["state"], f"{a['array']} LUN {a['lun']} is {state} (want {a['state']})"

    def _check_lag(self, a: dict) -> tuple[bool, str]:
        worst, when = None, None
        for sample in self.samples:
            if sample["t"] < a["since"]:
                continue
            for value in sample["lag_ms"].values():
                if value is not None and (worst is None or value > worst):
                    worst, when = value, sample["t"]
        if worst is None:
            return False, f"no lag samples since {a['since']:g} s"
        return worst < a["below_ms"], (f"max lag {worst:.1f} ms at {when:.1f} s since "
                                       f"{a['since']:g} s (bound {a['below_ms']:g} ms)")

    def _chosen(self, name: str | None) -> list[Workload]:
        chosen = [w for w in self.workloads.values() if name is None or w.name == name]
        if not chosen:
            raise BenchError(f"check: no workload {name or ''} has run".replace("  ", " "))
        return chosen

    def _check_ack_p99(self, a: dict) -> tuple[bool, str]:
        for w in self._chosen(a["workload"]):
            w.read_new()
        start = self.t0 + a["since"]
        latencies = np.concatenate([w.latency_between(start, time.monotonic())
                                    for w in self._chosen(a["workload"])])
        if not len(latencies):
            return False, f"no acknowledged writes since {a['since']:g} s"
        p99 = float(np.percentile(latencies, 99, method="inverted_cdf")) * 1000
        return p99 < a["below_ms"], (f"ack p99 {p99:.2f} ms over {len(latencies)} writes since "
                                     f"{a['since']:g} s (bound {a['below_ms']:g} ms)")

    def _check_prefix(self, a: dict) -> tuple[bool, str]:
        """Freeze the target array, give the workloads' journals a moment to hold every
        completion before now, check each region, thaw."""
        details, passed = [], True
        lablib.signal_device(self.directory, "arrayB", signal.SIGSTOP)
        try:
            time.sleep(0.2)
            for w in self._chosen(a["workload"]):
                # the target is frozen: the full rule (one cut time over the whole region);
                # the journal path: read after the scan, so it holds every completion
                result = check_prefix(w.journal, w.pair["target_volume"], *w.region,
                                      live=False)
                passed = passed and result.ok
                details.append(f"{w.name}: {result.summary}"
                               + ("" if result.ok else "; " + "; ".join(result.violations[:3])))
        finally:
            lablib.signal_device(self.directory, "arrayB", signal.SIGCONT)
        return passed, " | ".join(details)

    def _check_equal(self, a: dict) -> tuple[bool, str]:
        """Stop the workloads, wait for the target to drain, compare every pair's volumes
        and each workload's blocks with the last write it was acknowledged."""
        self._stop_workloads()
        began = time.monotonic()
        while True:
            done, why = self._drained()
            if done:
                break
            if time.monotonic() - began > self.scenario.drain_timeout:
                return False, f"not drained in {self.scenario.drain_timeout:g} s: {why}"
            self._idle_until(time.monotonic() + 0.1)
        details = [f"drained in {time.monotonic() - began:.1f} s"]
        passed = True
        for p in self.lab["pairs"]:
            same = sha256_file(p["source_volume"]) == sha256_file(p["target_volume"])
            passed = passed and same
            details.append(f"LUN {p['source_lun']}->{p['target_lun']} "
                           + ("equal" if same else "DIFFER"))
        for w in self.workloads.values():
            result = check_final(read_journal(w.journal), w.pair["target_volume"], *w.region)
            passed = passed and result.ok
            details.append(f"{w.name}: {result.summary}"
                           + ("" if result.ok else "; " + "; ".join(result.violations[:3])))
        return passed, "; ".join(details)

    # -- sampling ------------------------------------------------------------------------
    def _sample(self, now: float) -> None:
        t = now - self.t0
        sample = {"t": round(t, 3), "lag_ms": {}, "ack_p50_ms": None, "ack_p99_ms": None,
                  "write_mb_s": None, "applied_mb_s": None}
        try:
            source = lablib.get_json(self._devices["edgeA"]["urls"]["status"], timeout=1.0)
            target = lablib.get_json(self._devices["edgeB"]["urls"]["status"], timeout=1.0)
        except (OSError, ValueError):
            source = target = None
        applied_bytes = None
        for group in sorted({p["group"] for p in self.lab["pairs"]}):
            if source is None:
                sample["lag_ms"][str(group)] = None
                continue
            s, g = group_status(source, group), group_status(target, group)
            generation, applied = s.get("log_generation", 0), lablib.applied_counter(g)
            history = self._generations.setdefault(group, [])
            if not history or history[-1][1] != generation:
                history.append((t, generation))
            last = g.get("lag_s") or 0.0
            if applied >= generation:
                lag = last
            else:   # the first sample whose generation passed the apply counter
                since = next(ts for ts, gen in history if gen > applied)
                lag = max(last, t - since)
            sample["lag_ms"][str(group)] = round(lag * 1000.0, 3)
            applied_bytes = (applied_bytes or 0) + g.get("applied_bytes", 0)
        last_t = self._last["t"]
        latencies = []
        for w in self.workloads.values():
            w.read_new()
            if last_t is not None:
                latencies.append(w.latency_between(self.t0 + last_t, now))
        if last_t is not None and t > last_t:
            dt = t - last_t
            written = sum(len(x) * w.block for x, w in zip(latencies, self.workloads.values()))
            sample["write_mb_s"] = round(written / dt / 1e6, 3)
            if applied_bytes is not None and self._last["applied_bytes"] is not None \
                    and applied_bytes >= self._last["applied_bytes"]:
                sample["applied_mb_s"] = round((applied_bytes - self._last["applied_bytes"])
                                               / dt / 1e6, 3)
        both = np.concatenate(latencies) if latencies else np.zeros(0)
        if len(both):
            sample["ack_p50_ms"] = _ms(float(np.percentile(both, 50, method="inverted_cdf")))
            sample["ack_p99_ms"] = _ms(float(np.percentile(both, 99, method="inverted_cdf")))
        self._last.update(t=t, applied_bytes=applied_bytes)
        self.samples.append(sample)

    def _progress(self, sample: dict) -> None:
        def show(v, unit):
            return "-" if v is None else f"{v:.1f} {unit}"
        lags = ", ".join(f"group {g} {show(v, 'ms')}" for g, v in sample["lag_ms"].items())
        self.say(f"[{sample['t']:6.1f} s] lag: {lags}; writes {show(sample['write_mb_s'], 'MB/s')},"
                 f" applied {show(sample['applied_mb_s'], 'MB/s')}; ack p50/p99 "
                 f"{show(sample['ack_p50_ms'], 'ms')} / {show(sample['ack_p99_ms'], 'ms')}")


def run_scenario(scenario: Scenario, directory: str | None = None, out: str = ".",
                 keep: bool = False, say=print) -> dict:
    """Run ``scenario`` (a temporary lab directory unless ``directory``), write
    ``OUT/NAME.json`` and ``OUT/NAME.png``, print the table; the record."""
    temporary = directory is None
    directory = directory or tempfile.mkdtemp(prefix=f"rcn-bench-{scenario.name}-")
    runner = Runner(scenario, directory, say)
    try:
        record = runner.run()
    finally:
        if runner.lab is not None or os.path.exists(lablib.lab_file(directory)):
            lablib.down(directory, quiet=True)
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, scenario.name)
    record["report"], record["plot"] = base + ".json", base + ".png"
    report.validate(record)
    report.write_json(record, base + ".json")
    report.plot(record, base + ".png", title=scenario.name)
    say(report.results_table(record))
    say(f"report {base}.json, plot {base}.png" + (f"; lab kept in {directory}" if keep else ""))
    if temporary and not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return record
