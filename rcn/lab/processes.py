"""The lab's processes: start the daemons, wait until ready, signal, restart, stop.

Processes: each daemon runs as ``twistd -n --pidfile DIR/NAME.pid --logfile -
rcn-ROLE --config DIR/NAME.toml`` in a new session (``start_new_session``), its
working directory DIR, with standard output and error appended to ``DIR/NAME.log``.
(``-n`` rather than twistd's own daemonising: the pid is known at once, and a
daemon that dies early -- a port taken, a bad file -- leaves its reason in the same
log.) They outlive ``rcn lab up``; ``rcn lab down`` signals only the pids that
``lab.json`` records, and only while ``/proc/PID/cmdline`` still names that
device's configuration file (a recycled pid is left alone).

``rcn lab up`` in the directory of a stopped lab writes new files (new ports) and
starts it again over the same volumes, edge log storage and apply counters: a
restart, which resumes where the lab was.

Failures raise :class:`LabError` with a message and the exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from rcn.httpjson import RequestError, request_json
from rcn.lab.plan import (HOST, KEYS_DIR, device_configs, key_rings, plan, render_device,
                          settings_requests, virtual_wwn)
from rcn.logxfer.keys import KeyFileError, KeyRing
from rcn.lab.topology import Topology

LAB_FILE = "lab.json"


class LabError(Exception):
    """What went wrong, for the operator; ``status`` is the exit status (1 or 2)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def _twistd() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = here if os.access(here, os.X_OK) else shutil.which("twistd")
    if not found:
        raise LabError("twistd not found next to this Python nor on PATH: install the project "
                       "(make venv) and run .venv/bin/rcn", 2)
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def _is_child(pid: int) -> bool:
    """``pid`` is (or was, reaped just now) a child of this process: ours for certain."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (a child that ended is reaped here: then False)."""
    if not pid:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                # A zombie leader: reap it if it is our child. Until its other threads
                # have exited too, waitpid cannot, and the pid still exists (a new twistd
                # would refuse to start over its pidfile): count it as running until then.
                try:
                    return os.waitpid(pid, os.WNOHANG)[0] == 0
                except ChildProcessError:
                    return False     # not ours to reap: it has ended
                except OSError:
                    return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_ours(device: dict, dying: bool = False) -> bool:
    """The pid still runs this device's daemon (not a recycled pid); ``dying``: or it is
    exiting (an empty command line)."""
    try:
        with open(f"/proc/{device['pid']}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        # no /proc: trust the record; a process tearing down may refuse the read
        return dying or not os.path.isdir("/proc")
    return device["config"].encode() in args or (dying and args == [b""])


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc.strerror or exc})"
    return "\n".join(text.splitlines()[-lines:])


def _start(device: dict, directory: str) -> int:
    with open(device["log"], "ab") as log:
        proc = subprocess.Popen(
            [_twistd(), "-n", "--pidfile", device["pidfile"], "--logfile", "-",
             device["plugin"], "--config", device["config"]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    proc.returncode = 0        # we never wait() on it: keep Popen's destructor quiet
    return proc.pid


def lab_file(directory: str) -> str:
    return os.path.join(os.path.abspath(directory), LAB_FILE)


def load_lab(directory: str) -> dict | None:
    try:
        with open(lab_file(directory)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"{lab_file(directory)}: unreadable lab record: {exc}", 2) from None


def _save(lab: dict) -> None:
    path = lab_file(lab["dir"])
    # owner only: the record holds the lab customer's API token
    with os.fdopen(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                   "w") as f:
        json.dump(lab, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def get_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def get_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def _not_ready(device: dict) -> str | None:
    """Why ``device`` is not ready yet (None: ready)."""
    try:
        if device["role"] == "storage":
            body = get_json(device["urls"]["control"] + "/status")
            return None if body.get("edge_link") == "up" else f"edge_link {body.get('edge_link')}"
        if device["role"] == "mgmt":
            get_text(device["urls"]["dashboard"])
            return None if os.path.exists(device["token_file"]) else "no operator token yet"
        if device["role"] == "wanem":
            with socket.create_connection((HOST, device["ports"]["scpi"]), timeout=2.0):
                pass
            return None if os.path.islink(device["console"]) else "no console pty yet"
        if device["role"] == "edge":
            body = get_json(device["urls"]["status"])
            wwns = [link.get("array_wwn") for link in body.get("links", [])]
            return None if device["wwn"] in wwns else f"no link from array {device['wwn']} yet"
        get_text(device["urls"]["metrics"])
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"not answering: {getattr(exc, 'reason', exc)}"


def up(topology: Topology, directory: str, timeout: float = 60.0, progress=None) -> dict:
    """Write the files, start the daemons, wait until ready; the lab record.

    On failure (a daemon exits, or not ready in ``timeout`` seconds) what was
    started is stopped again (logs kept) and :class:`LabError` says why, with the
    tail of the failing daemon's log.
    """
    directory = os.path.abspath(directory)
    old = load_lab(directory)
    if old is not None:
        running = [d for d in old["devices"] if pid_alive(d.get("pid")) and is_ours(d)]
        if running:
            raise LabError(f"a lab is already running in {directory} ("
                           + ", ".join(f"{d['name']} pid {d['pid']}" for d in running)
                           + f"): run `rcn lab down --dir {directory}` first", 2)
    os.makedirs(directory, exist_ok=True)
    lab = plan(topology, directory)
    if old is not None:             # a restart: what the last run set up stays set up
        for key in ("configured", "pairs_created", "customer_token"):
            if key in old:
                lab[key] = old[key]
    if topology.mgmt:
        os.makedirs(os.path.join(directory, "mgmt"), exist_ok=True)
    if topology.sealed:
        write_keys(lab)
    for name, doc in device_configs(lab).items():
        device = next(d for d in lab["devices"] if d["name"] == name)
        with open(device["config"], "w") as f:
            f.write(f"# written by rcn lab up for {name}\n" + render_device(device["role"], doc))
    lab["started"] = time.time()
    # edges and cores first: the arrays connect to their edges (and retry with backoff);
    # under a management server, it first, and the arrays once it has set the edges up
    rank = {"mgmt": 0, "wanem": 0, "core": 1, "edge": 2, "storage": 3}
    order = sorted(lab["devices"], key=lambda d: rank[d["role"]])
    deadline = time.monotonic() + timeout
    try:
        for device in order:
            if topology.mgmt and device["role"] == "storage" and "arrays" not in lab:
                _configure(lab, deadline, progress)
                lab["arrays"] = True
            device["pid"] = _start(device, directory)
            _save(lab)
            if device["role"] == "mgmt":
                _wait_ready(lab, max(1.0, deadline - time.monotonic()), progress, ["mgmt"])
        lab.pop("arrays", None)
        _wait_ready(lab, max(1.0, deadline - time.monotonic()), progress)
        if topology.mgmt and topology.pair_setup == "config" and not lab.get("pairs_created"):
            _create_pairs(lab, deadline, progress)
            lab["pairs_created"] = True
            _save(lab)
    except BaseException:
        down(directory, quiet=True)
        raise
    return lab


def write_keys(lab: dict) -> None:
    """The key files' directory DIR/keys (0700); for a static lab every edge's and core's
    key file (:func:`rcn.lab.plan.key_rings`), keeping the group keys of the last run's
    edges (their logs hold entries sealed under them) and each edge's held epochs (retired
    ones its log still retains entries under)."""
    keys = os.path.join(lab["dir"], KEYS_DIR)
    os.makedirs(keys, mode=0o700, exist_ok=True)
    os.chmod(keys, 0o700)
    if lab["topology"].get("mgmt"):
        return
    groups, last = KeyRing(), {}
    for edge in ("edgeA", "edgeB"):
        path = _device(lab, edge)["keys"]
        if os.path.exists(path):
            try:
                last[edge] = KeyRing.load(path)
            except KeyFileError as exc:
                raise LabError(f"the last run's keys: {exc}", 2) from None
            for group, kept in last[edge].groups.items():
                groups.groups.setdefault(group, kept)
    for name, ring in key_rings(lab, groups).items():
        for group, held in (last[name].held.items() if name in last else ()):
            for epoch, key in held.items():
                if epoch not in ring.groups.get(group, {}):
                    ring.add_held(group, key)
        ring.save(_device(lab, name)["keys"])


def operator_token(lab: dict) -> str:
    with open(_device(lab, "mgmt")["token_file"]) as f:
        return f.read().strip()


def api(lab: dict, method: str, path: str, body: dict | None = None, token: str | None = None,
        timeout: float = 10.0) -> dict:
    """One request to the lab's management server (the operator's token by default)."""
    try:
        return request_json(_device(lab, "mgmt")["urls"]["api"] + path, timeout, method, body,
                            token or operator_token(lab))
    except RequestError as exc:
        raise LabError(f"management server: {exc}") from None


def _configure(lab: dict, deadline: float, progress) -> None:
    """Settings through the API (once per lab), then wait until every edge and core runs
    them: the arrays log in to virtual storages the snapshots create."""
    if not lab.get("configured"):
        for method, path, body in settings_requests(lab):
            answer = api(lab, method, path, body)
            if path == "/customers":
                lab["customer_token"] = answer["token"]
        lab["configured"] = True
        _save(lab)
        if progress:
            progress("management server configured")
    else:                         # a restart: the devices listen on new ports
        for method, path, body in settings_requests(lab):
            if path == "/devices":
                api(lab, "PATCH", f"/devices/{body['id']}", {"log_address": body["log_address"]})
    names = {d["name"] for d in lab["devices"] if d["role"] in ("edge", "core")}
    while True:
        devices = {d["id"]: d for d in api(lab, "GET", "/devices")["devices"]}
        behind = sorted(n for n in names if not devices.get(n, {}).get("up_to_date"))
        if not behind:
            return
        for name in names:
            device = _device(lab, name)
            if not pid_alive(device["pid"]):
                raise LabError(f"{name} ({device['plugin']}, pid {device['pid']}) exited during "
                               f"start-up; the end of {device['log']}:\n{tail(device['log'])}")
        if time.monotonic() > deadline:
            raise LabError("the management server's settings did not reach "
                           + ", ".join(behind) + " in time")
        time.sleep(0.05)


def _create_pairs(lab: dict, deadline: float, progress) -> None:
    """pair-create on the source array for every pair, then wait until each is Duplex."""
    array = _device(lab, "arrayA")
    topo = lab["topology"]
    partner = virtual_wwn(topo["target_wwn"]) if topo.get("virtual_wwns") else topo["target_wwn"]
    control = array["urls"]["control"]
    for p in lab["pairs"]:
        try:
            request_json(control + "/pairs", 30, "POST",
                         {"lun": p["source_lun"], "partner_wwpn": partner,
                          "partner_lun": p["target_lun"], "group": p["group"],
                          "mode": topo["pair_mode"]})
        except RequestError as exc:
            raise LabError(f"pair-create of arrayA LUN {p['source_lun']}: {exc}") from None
    for p in lab["pairs"]:
        while get_json(f"{control}/pairs/{p['source_lun']}").get("state") != "duplex":
            if time.monotonic() > deadline:
                raise LabError(f"pair arrayA LUN {p['source_lun']} not Duplex in time")
            time.sleep(0.05)
        if progress:
            progress(f"pair arrayA LUN {p['source_lun']} -> arrayB LUN {p['target_lun']} duplex")


def _wait_ready(lab: dict, timeout: float, progress, names: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    waiting = {d["name"]: "starting" for d in lab["devices"]
               if names is None or d["name"] in names}
    by_name = {d["name"]: d for d in lab["devices"]}
    while waiting:
        for name in list(waiting):
            device = by_name[name]
            if not pid_alive(device["pid"]):
                raise LabError(f"{name} ({device['plugin']}, pid {device['pid']}) exited during "
                               f"start-up; the end of {device['log']}:\n{tail(device['log'])}")
            why = _not_ready(device)
            if why is None:
                del waiting[name]
                if progress:
                    progress(f"{name} ready")
            else:
                waiting[name] = why
        if not waiting:
            return
        if time.monotonic() > deadline:
            name, why = next(iter(waiting.items()))
            device = by_name[name]
            raise LabError(f"lab not ready after {timeout:g} s: "
                           + "; ".join(f"{n}: {w}" for n, w in waiting.items())
                           + f"\nthe end of {device['log']}:\n{tail(device['log'])}")
        time.sleep(0.05)


def _device(lab: dict, name: str) -> dict:
    for device in lab["devices"]:
        if device["name"] == name:
            return device
    raise LabError(f"no device {name!r} in {lab_file(lab['dir'])} (devices: "
                   + ", ".join(d["name"] for d in lab["devices"]) + ")", 2)


def need_lab(directory: str) -> dict:
    lab = load_lab(directory)
    if lab is None:
        raise LabError(f"no lab in {os.path.abspath(directory)} (no {LAB_FILE}): "
                       f"start one with `rcn lab up --dir {directory}`", 2)
    return lab


def signal_device(directory: str, name: str, signum: int) -> int:
    """Send ``signum`` to one device's recorded pid (tests: SIGKILL, SIGSTOP, SIGCONT);
    the pid. LabError when it does not run (or the pid now runs something else)."""
    device = _device(need_lab(directory), name)
    pid = device.get("pid")
    if not pid_alive(pid) or not is_ours(device):
        raise LabError(f"{name} (pid {pid}) is not running", 1)
    os.kill(pid, signum)
    return pid


def restart(directory: str, name: str, timeout: float = 60.0, wait: float = 10.0) -> dict:
    """Start one device again with its file and ports (stopping it first if it runs), wait
    until it is ready, record its new pid; the lab record."""
    lab = need_lab(directory)
    device = _device(lab, name)
    pid = device.get("pid")
    # Stop it if it runs, and wait while it is dying too (just SIGKILLed: its command line
    # is already gone): a new twistd refuses to start while the pid in its pidfile exists.
    if pid_alive(pid) and (_is_child(pid) or is_ours(device, dying=True)):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + wait
            time.sleep(0.02)
    device["pid"] = _start(device, lab["dir"])
    _save(lab)
    single = dict(lab, devices=[device])
    _wait_ready(single, timeout, None)
    return lab


def down(directory: str, wait: float = 10.0, quiet: bool = False) -> list[dict]:
    """Stop the lab's daemons (SIGTERM, then SIGKILL after ``wait`` s); what happened to each."""
    lab = load_lab(directory)
    if lab is None:
        return []
    report = []
    signalled = []
    for device in lab["devices"]:
        pid = device.get("pid")
        row = {"name": device["name"], "pid": pid}
        if not pid_alive(pid):
            row["result"] = "not running"
        elif not is_ours(device):
            row["result"] = f"pid {pid} now runs something else: left alone"
        else:
            try:
                os.kill(pid, signal.SIGTERM)
                signalled.append((device, row))
                row["result"] = "stopped"
            except ProcessLookupError:
                row["result"] = "not running"
        report.append(row)
    deadline = time.monotonic() + wait
    while any(pid_alive(d["pid"]) for d, _ in signalled) and time.monotonic() < deadline:
        time.sleep(0.05)
    for device, row in signalled:
        if pid_alive(device["pid"]):
            try:
                os.kill(device["pid"], signal.SIGKILL)
                row["result"] = f"killed (SIGKILL after {wait:g} s)"
            except ProcessLookupError:
                pass
    end = time.monotonic() + 5
    while any(pid_alive(d["pid"]) for d, _ in signalled) and time.monotonic() < end:
        time.sleep(0.02)
    return report

