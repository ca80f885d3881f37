"""The issue's proof: a whole RCN as real processes (`rcn lab up`), host writes with qemu-io
through the source array, and the target array's volume file ends byte-equal to the source's.

Everything runs as subprocesses the reactor waits for (`rcn lab up|status|down`, qemu-io,
`rcn demo`); readiness and apply are polled with LoopingCall, never slept for. Every test
stops its lab in a cleanup, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from rcn import lab as lablib
from rcn.lab import get_json, pid_alive, processes
from rcn.logxfer.keys import KeyRing
from tests.support import require_tool, until

BIN = os.path.dirname(sys.executable)
RCN = os.path.join(BIN, "rcn")


def run(executable: str, *args: str):
    return getProcessOutputAndValue(executable, list(args), env=dict(os.environ))


def volume(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@defer.inlineCallbacks
def lab_up(testcase, directory: str, topology: str):
    """``rcn lab up --json`` of the ``topology`` text in ``directory``: the lab record."""
    path = os.path.join(directory, "topology.toml")
    with open(path, "w") as f:
        f.write(topology)
    out, err, code = yield run(RCN, "lab", "up", "--dir", directory, "--topology", path,
                               "--json")
    testcase.assertEqual(code, 0, (out + err).decode())
    return json.loads(out)


class LabProcessTests(TestCase):
    timeout = 180

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(self._down)

    def _down(self):
        return run(RCN, "lab", "down", "--dir", self.dir)

    def _up(self, topology: str):
        return lab_up(self, self.dir, topology)

    def _until_applied(self, lab: dict, limit: float = 60.0):
        """Poll the edges' /status until each group's target apply counter reaches the source
        generation and the source retains nothing; fail with the figures after ``limit``."""
        devices = {d["name"]: d for d in lab["devices"]}
        groups = sorted({p["group"] for p in lab["pairs"]})
        seen = {}

        def figures():
            source = get_json(devices["edgeA"]["urls"]["status"])
            target = get_json(devices["edgeB"]["urls"]["status"])
            for group in groups:
                s = next((g for g in source["groups"] if g["group"] == group), {})
                t = next((g for g in target["groups"] if g["group"] == group), {})
                seen[group] = (s.get("log_generation", 0), s.get("log_retained_entries", 0),
                               lablib.applied_counter(t))
            return all(gen > 0 and retained == 0 and applied == gen
                       for gen, retained, applied in seen.values())
        return until("applied", figures, limit,
                     lambda: f"(generation, retained, applied) per group {seen}")

    @defer.inlineCallbacks
    def test_qemu_io_writes_replicate_to_the_target_volume(self):
        qemu_io = require_tool(self, "qemu-io")
        lab = yield self._up('[lab]\ncapacity = "16MiB"\nlog_mode = "durable"\n')
        self.assertEqual([d["name"] for d in lab["devices"]],
                         ["mgmt", "arrayA", "arrayB", "edgeA", "edgeB", "core1"])
        self.assertTrue(all(pid_alive(d["pid"]) for d in lab["devices"]))
        url = lab["nbd_url"]
        self.assertRegex(url, r"^nbd://127\.0\.0\.1:\d+/vol0$")
        commands = ["write -P 0xab 0 1M", "write -P 0x5a 4096 65536", "write -P 0x11 8M 512",
                    "write -P 0xc3 15M 1M", "write -z 2M 128K", "write -P 0x77 1536 1024"]
        args = ["-f", "raw", url]
        for command in commands:
            args += ["-c", command]
        out, err, code = yield run(qemu_io, *args)
        self.assertEqual(code, 0, (out + err).decode())
        yield self._until_applied(lab)
        pair = lab["pairs"][0]
        source, target = volume(pair["source_volume"]), volume(pair["target_volume"])
        self.assertEqual(len(source), 16 << 20)
        self.assertEqual(source[1536:2560], b"\x77" * 1024)
        self.assertEqual(source[15 << 20:], b"\xc3" * (1 << 20))
        self.assertTrue(source == target, "the target volume differs from the source volume")

        out, err, code = yield run(RCN, "lab", "status", "--dir", self.dir, "--json")
        self.assertEqual(code, 0, err.decode())
        body = json.loads(out)
        rows = {r["name"]: r for r in body["devices"]}
        self.assertTrue(all(r["alive"] for r in rows.values()))
        self.assertEqual(rows["arrayA"]["edge_link"], "up")
        self.assertEqual({k: n for k, n in rows["core1"]["drops"].items() if n}, {})  # none
        self.assertGreater(rows["core1"]["forwarded"], 0)

        out, err, code = yield run(RCN, "lab", "down", "--dir", self.dir)
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(out.decode().count(": stopped"), 6, out.decode())
        self.assertFalse(any(pid_alive(d["pid"]) for d in lab["devices"]))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "edgeA.log")))
        out, err, code = yield run(RCN, "lab", "down", "--dir", self.dir)
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(out.decode().count("not running"), 6, out.decode())

    @defer.inlineCallbacks
    def test_two_cores_two_groups_no_batching(self):
        qemu_io = require_tool(self, "qemu-io")
        lab = yield self._up('[lab]\ncapacity = "4MiB"\ncores = 2\nbatching = false\n'
                             'log_mode = "memory"\n'
                             '[[pair]]\nlun = 0\ngroup = 7\n'
                             '[[pair]]\nlun = 1\ntarget_lun = 3\ngroup = 9\n')
        self.assertEqual(len([d for d in lab["devices"] if d["role"] == "core"]), 2)
        for pair, byte in zip(lab["pairs"], (0x21, 0x42)):
            out, err, code = yield run(qemu_io, "-f", "raw", pair["nbd_url"],
                                       "-c", f"write -P {byte} 0 256K",
                                       "-c", f"write -P {byte + 1} 3M 4096")
            self.assertEqual(code, 0, (out + err).decode())
        yield self._until_applied(lab)
        for pair in lab["pairs"]:
            self.assertTrue(volume(pair["source_volume"]) == volume(pair["target_volume"]),
                            f"LUN {pair['source_lun']} -> {pair['target_lun']} differs")

    @defer.inlineCallbacks
    def test_up_again_after_down_resumes_the_lab(self):
        """Volumes, edge logs and apply counters survive down + up; new writes replicate."""
        qemu_io = require_tool(self, "qemu-io")
        topology = '[lab]\ncapacity = "4MiB"\n'
        lab = yield self._up(topology)
        out, err, code = yield run(qemu_io, "-f", "raw", lab["nbd_url"], "-c",
                                   "write -P 0x31 0 1M")
        self.assertEqual(code, 0, (out + err).decode())
        yield self._until_applied(lab)
        yield self._down()
        lab = yield self._up(topology)
        out, err, code = yield run(qemu_io, "-f", "raw", lab["nbd_url"], "-c",
                                   "write -P 0x32 512K 1M")
        self.assertEqual(code, 0, (out + err).decode())
        yield self._until_applied(lab)
        pair = lab["pairs"][0]
        source = volume(pair["source_volume"])
        self.assertEqual(source[:512 << 10] + source[3 << 19:1 << 21],
                         b"\x31" * (512 << 10) + b"\x00" * (512 << 10))
        self.assertEqual(source[512 << 10:3 << 19], b"\x32" * (1 << 20))
        self.assertTrue(source == volume(pair["target_volume"]))

    @defer.inlineCallbacks
    def test_up_refuses_a_running_lab_and_status_without_lab(self):
        out, err, code = yield run(RCN, "lab", "status", "--dir", self.dir)
        self.assertEqual(code, 2)
        self.assertIn(b"no lab in", err)
        yield self._up('[lab]\ncapacity = "1MiB"\n')
        out, err, code = yield run(RCN, "lab", "up", "--dir", self.dir)
        self.assertEqual(code, 2)
        self.assertIn(b"already running", err)

    @defer.inlineCallbacks
    def test_bad_topology_is_a_usage_error(self):
        path = os.path.join(self.dir, "bad.toml")
        with open(path, "w") as f:
            f.write('[lab]\ncores = "two"\n')
        out, err, code = yield run(RCN, "lab", "up", "--dir", self.dir, "--topology", path)
        self.assertEqual(code, 2)
        self.assertIn(b"bad.toml: lab.cores: expected int", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "lab.json")))


class FailedStartTests(TestCase):
    timeout = 60

    def test_a_daemon_that_dies_is_reported_with_its_log_and_the_rest_stopped(self):
        """edgeB gets a file its daemon refuses: `up` names it, shows its log, stops the rest."""
        directory = os.path.abspath(self.mktemp())
        original = processes.render_device

        def broken(role, doc):          # the writer refuses unknown keys: add one after it
            text = original(role, doc)
            if doc.get("edge", {}).get("id") == "edgeB":
                text = text.replace("[edge]\n", '[edge]\ncolour = "blue"\n', 1)
            return text
        self.patch(processes, "render_device", broken)     # what up() calls
        self.addCleanup(lablib.down, directory)
        with self.assertRaises(lablib.LabError) as caught:
            lablib.up(lablib.Topology(capacity=1 << 20), directory, timeout=30)
        message = str(caught.exception)
        self.assertIn("edgeB (rcn-edge, pid", message)
        self.assertIn("exited during start-up", message)
        self.assertIn("edge.colour: unknown key", message)     # the tail of edgeB.log
        with open(os.path.join(directory, "lab.json")) as f:
            record = json.load(f)
        self.assertFalse(any(pid_alive(d["pid"]) for d in record["devices"]))


class DemoProcessTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_demo_json(self):
        directory = os.path.abspath(self.mktemp())
        self.addCleanup(lambda: run(RCN, "lab", "down", "--dir", directory))
        out, err, code = yield run(RCN, "demo", "--json", "--size", "8MiB", "--dir", directory)
        self.assertEqual(code, 0, (out + err).decode())
        result = json.loads(out)
        self.assertTrue(result["equal"])
        self.assertEqual(result["source_sha256"], result["target_sha256"])
        self.assertEqual(len(result["source_sha256"]), 64)
        self.assertEqual(result["writes"], 8 * 16)
        # 128 writes, and the PAIR_CREATE and DUPLEX the lab's pair-create sent first
        self.assertEqual(result["counters"]["entries"], 130)
        for key in ("throughput_mb_s", "iops"):
            self.assertGreater(result[key], 0)
        for key in ("host_ack_latency_ms", "edge_ack_latency_ms", "target_lag_ms"):
            self.assertGreater(result[key]["p99"], 0, key)
            self.assertLessEqual(result[key]["p50"], result[key]["p99"], key)
        for key in ("retransmits", "naks_sent", "edge_drops", "core_drops", "core_batches"):
            self.assertIn(key, result["counters"])
        # sealed by default: every entry sealed at edgeA and opened at edgeB
        seal = result["seal"]
        self.assertEqual(seal["mode"], "aes-256-gcm")
        self.assertEqual((seal["e2e_sealed"], seal["e2e_opened"]), (130, 130))
        self.assertGreaterEqual(seal["hop_sealed"], 130)
        with open(os.path.join(directory, "lab.json")) as f:
            lab = json.load(f)
        self.assertFalse(any(pid_alive(d["pid"]) for d in lab["devices"]))


class DeviceControlTests(TestCase):
    """signal_device and restart: one device killed and started again on its own ports."""

    timeout = 120

    def test_kill_and_restart_the_core(self):
        directory = os.path.abspath(self.mktemp())
        record = lablib.up(lablib.Topology(capacity=1 << 20), directory)
        self.addCleanup(lablib.down, directory)
        old = next(d for d in record["devices"] if d["name"] == "core1")
        # the server's link keys, kept in the core's key file: two links, no group
        ring = KeyRing.load(old["keys"])
        self.assertEqual((len(ring.links), ring.groups), (2, {}))
        self.assertEqual(lablib.signal_device(directory, "core1", signal.SIGKILL), old["pid"])
        with self.assertRaises(lablib.LabError):
            lablib.signal_device(directory, "nobody", signal.SIGTERM)
        record = lablib.restart(directory, "core1")
        new = next(d for d in record["devices"] if d["name"] == "core1")
        self.assertNotEqual(new["pid"], old["pid"])
        self.assertEqual(new["ports"], old["ports"])
        self.assertTrue(pid_alive(new["pid"]))
        core = next(d for d in lablib.load_lab(directory)["devices"] if d["name"] == "core1")
        self.assertEqual(core["pid"], new["pid"])
        rows = {r["name"]: r for r in lablib.status(directory)["devices"]}
        self.assertTrue(all(r["alive"] for r in rows.values()), rows)
        with open(core["log"]) as f:        # restarted with them, before the server answered
            self.assertIn("keys of 2 links and 0 groups from keys/core1.keys", f.read())
