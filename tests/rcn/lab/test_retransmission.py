"""Issue 15 item 3 on real daemons: a lab written at saturation queues seconds of work at the
target edge, and the source edge must not mistake queued entries for lost ones.

`rcn demo` (real processes on loopback) writes 192 MiB in 64 KiB writes, 32 in flight, waits
until the target applied everything and leaves the lab running; the source edge's /metrics
counters then say how many entries it sent and how many it sent again. With a fixed 500 ms
timeout this lab retransmitted 10-17% of its entries (each one a duplicate at
the target); with the measured round trip and the target's progress it retransmits none.
"""

from __future__ import annotations

import json
import os
import sys

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from rcn.lab import get_text

RCN = os.path.join(os.path.dirname(sys.executable), "rcn")


def run(*args: str):
    return getProcessOutputAndValue(RCN, list(args), env=dict(os.environ))


def sender_counters(url: str) -> dict[str, float]:
    """The ``rcn_sender_*_total`` counters of one edge's /metrics, by key."""
    out = {}
    for family in text_string_to_metric_families(get_text(url)):
        if family.name.startswith("rcn_sender_"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.name[len("rcn_sender_"):-len("_total")]] = sample.value
    return out


class SaturatedLabTests(TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_saturated_lab_retransmits_under_one_percent_of_entries_with_no_loss(self):
        directory = os.path.abspath(self.mktemp())
        self.addCleanup(run, "lab", "down", "--dir", directory)
        out, err, code = yield run("demo", "--json", "--keep", "--dir", directory,
                                   "--size", "192MiB", "--block-size", "64KiB", "--depth", "32")
        self.assertEqual(code, 0, (out + err).decode())
        result = json.loads(out)
        self.assertTrue(result["equal"])
        wire = result["counters"]
        self.assertEqual((wire["edge_drops"], wire["core_drops"]), (0, 0))   # no loss
        with open(os.path.join(directory, "lab.json")) as f:
            edge = next(d for d in json.load(f)["devices"] if d["name"] == "edgeA")
        sender = sender_counters(edge["urls"]["metrics"])
        self.assertGreaterEqual(sender["entries_sent"], 3072)      # the writes (and CTRLs)
        self.assertLess(sender["retransmits"], 0.01 * sender["entries_sent"], sender)
        self.assertGreater(sender["rtt_samples"], 0)          # the RTO was measured
