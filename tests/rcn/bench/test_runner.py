"""``rcn-bench run`` end to end: real labs, the WAN emulator driven over its console pty.

The CI scenario (tools/bench/ci-wan-20ms-loss1.toml: 20 ms / 1% loss between edgeA
and core1) must pass; a second scenario drives every kind of step (impairment, cut and
restore, pair suspend and resync, waits) with one check that must fail, and the run
reports it: exit status 1, the FAIL row, the events in the JSON, the SCPI trace.
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.rcn.lab.test_process import BIN, run

BENCH = os.path.join(BIN, "rcn-bench")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "bench")

EVERY_STEP = """
[scenario]
name = "every-step"
sample_interval = 0.25

[lab]
capacity = "16MiB"
log_mode = "memory"
seal = "none"               # the hop layer cannot seal through an emulator link yet

[[wanem]]
between = ["edgeA", "core1"]
seed = 5

[[appliance]]
name = "wan"
port = "lab"
trace = "TRACE"

[[step]]
do = "workload"
rate = 200
depth = 8
region = "4MiB"

[[step]]
at = 0.5
do = "impair"
delay_ms = 5
jitter_ms = 1
loss = 0.02
reorder = 0.01

[[step]]
at = 1.0
do = "link_down"

[[step]]
at = 1.5
do = "link_up"

[[step]]
at = 1.5
do = "check"
check = "prefix"

[[step]]
at = 2.0
do = "pair"
command = "suspend"

[[step]]
at = 2.0
do = "wait"
for = "pair_state"
state = "suspend"
timeout = 10

[[step]]
at = 2.5
do = "pair"
command = "resync"

[[step]]
at = 2.5
do = "wait"
for = "pair_state"
state = "duplex"
timeout = 30

[[step]]
at = 3.0
do = "check"
name = "a bound no RCN meets"
check = "lag"
below_ms = 0.001

[[step]]
at = 3.0
do = "check"
check = "ack_p99"
below_ms = 1000

[[step]]
at = 3.0
do = "check"
check = "equal"
"""


class BenchRunTests(TestCase):
    timeout = 240

    def setUp(self):
        self.out = os.path.abspath(self.mktemp())
        os.makedirs(self.out)

    @defer.inlineCallbacks
    def test_the_ci_scenario_passes(self):
        scenario = os.path.join(EXAMPLES, "ci-wan-20ms-loss1.toml")
        out, err, code = yield run(BENCH, "run", scenario, "--out", self.out)
        text = (out + err).decode()
        self.assertEqual(code, 0, text)
        with open(os.path.join(self.out, "ci-wan-20ms-loss1.json")) as f:
            record = json.load(f)
        self.assertTrue(record["passed"])
        self.assertEqual([c["name"] for c in record["checks"]],
                         ["prefix@4s", "lag@8s", "pair_state@8s", "equal@8s"])
        self.assertTrue(all(c["passed"] for c in record["checks"]))
        self.assertIn("4 checks: 4 passed, 0 failed", text)
        # the link's 20 ms is in the lag: every sample under load is at least that
        lags = [s["lag_ms"]["7"] for s in record["samples"] if 1.0 < s["t"] < 3.5]
        self.assertTrue(lags and min(lags) >= 20.0, lags)
        with open(os.path.join(self.out, "ci-wan-20ms-loss1.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertFalse(os.path.exists(record["lab_dir"]))        # temporary lab removed

    @defer.inlineCallbacks
    def test_every_step_and_a_failing_check(self):
        trace = os.path.join(self.out, "wan.trace")
        path = os.path.join(self.out, "every-step.toml")
        with open(path, "w") as f:
            f.write(EVERY_STEP.replace("TRACE", trace))
        lab_dir = os.path.join(self.out, "lab")
        out, err, code = yield run(BENCH, "run", path, "--out", self.out, "--dir", lab_dir,
                                   "--keep")
        text = (out + err).decode()
        self.assertEqual(code, 1, text)
        with open(os.path.join(self.out, "every-step.json")) as f:
            record = json.load(f)
        self.assertFalse(record["passed"])
        results = {c["name"]: c["passed"] for c in record["checks"]}
        self.assertEqual(results, {"prefix@1.5s": True, "a bound no RCN meets": False,
                                   "ack_p99@3s": True, "equal@3s": True}, text)
        # due at 3 s; the waits before it may push it later on a slow machine
        at = float(re.search(r"a bound no RCN meets\s+(\d+\.\d)\s+FAIL", text).group(1))
        self.assertGreaterEqual(at, 3.0, text)
        self.assertIn("4 checks: 3 passed, 1 failed — FAIL", text)
        kinds = [(e["kind"], e["state"]) for e in record["events"]]
        for wanted in [("impair", None), ("link", "down"), ("link", "up"), ("pair", None),
                       ("wait", None), ("workload", None)]:
            self.assertIn(wanted, kinds)
        impair = next(e for e in record["events"] if e["kind"] == "impair")
        self.assertEqual(impair["label"], "wan LINK1: 5 ms, 1 ms jitter, 2 % loss, 1 % reorder")
        with open(trace) as f:                      # pyserial's spy:// hex trace
            sent = transmitted(f.read())
        for command in (b"LINK1:DELAY 5\n", b"LINK1:STATE DOWN\n", b"LINK1:STATE UP\n",
                        b"SYST:ERR?\n"):
            self.assertIn(command, sent)
        self.assertTrue(os.path.exists(os.path.join(lab_dir, "w1.journal")))   # --keep
        self.assertTrue(os.path.exists(os.path.join(lab_dir, "wanem.log")))


def transmitted(trace: str) -> bytes:
    """The bytes a spy:// hex trace shows sent (TX lines: offset, 16 hex bytes, ASCII)."""
    out = bytearray()
    for line in trace.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] == "TX" and not parts[2].startswith("<"):
            out += bytes.fromhex(parts[2][6:6 + 49].replace(" ", ""))
    return bytes(out)
