"""The pair lifecycle on real daemons (issue 6's process test): create a pair while qemu-io
writes, cut the core and write more (failure Suspend), restore and resync, fail over to the
target, and fail back the other way round -- checking the volumes at each step.

Commands go through ``rcn array`` (the CLI over the arrays' control API); the core is cut
with SIGSTOP and restored with SIGCONT; conditions are polled, never slept for.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from rcn import lab as lablib
from rcn.lab import get_json
from tests.rcn.lab.test_process import RCN, run, volume
from tests.support import require_tool, until

MiB = 1 << 20


class PairLifecycleProcessTests(TestCase):
    timeout = 240

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(lambda: run(RCN, "lab", "down", "--dir", self.dir))

    def until(self, what: str, predicate, limit: float = 60.0):
        return until(what, predicate, limit)

    @defer.inlineCallbacks
    def array(self, name: str, *args: str) -> dict:
        out, err, code = yield run(RCN, "array", "--url", self.urls[name], "--json", *args)
        self.assertEqual(code, 0, (out + err).decode())
        return json.loads(out) if out.strip() else {}

    def pair(self, name: str) -> dict:
        return get_json(self.urls[name] + "/pairs/0")

    def edge_pair(self, name: str) -> dict:
        (row,) = get_json(self.devices[name]["urls"]["status"])["pairs"]
        return row

    @defer.inlineCallbacks
    def write(self, url: str, *commands: str):
        args = ["-f", "raw", url]
        for command in commands:
            args += ["-c", command]
        out, err, code = yield run(self.qemu_io, *args)
        self.assertEqual(code, 0, (out + err).decode())

    @defer.inlineCallbacks
    def up(self, topology: str) -> dict:
        """``rcn lab up`` with ``topology``; keeps the devices, array URLs and volume paths."""
        self.qemu_io = require_tool(self, "qemu-io")
        path = os.path.join(self.dir, "topology.toml")
        with open(path, "w") as f:
            f.write(topology)
        out, err, code = yield run(RCN, "lab", "up", "--dir", self.dir, "--topology", path,
                                   "--json")
        self.assertEqual(code, 0, (out + err).decode())
        lab = json.loads(out)
        self.devices = {d["name"]: d for d in lab["devices"]}
        self.urls = {n: self.devices[n]["urls"]["control"] for n in ("arrayA", "arrayB")}
        pair = lab["pairs"][0]
        self.source, self.target = pair["source_volume"], pair["target_volume"]
        return lab

    def equal(self) -> bool:
        return volume(self.source) == volume(self.target)

    @defer.inlineCallbacks
    def test_create_failure_suspend_resync_failover_failback(self):
        lab = yield self.up('[lab]\ncapacity = "32MiB"\npair_setup = "create"\n'
                            'failure_timeout = 2\n')
        pair = lab["pairs"][0]
        url_a = pair["nbd_url"]
        url_b = self.devices["arrayB"]["volumes"][0]["nbd_url"]
        b_wwn = self.devices["arrayB"]["wwn"]
        with self.assertRaises(urllib.error.HTTPError) as caught:      # no pair yet
            self.pair("arrayA")
        self.assertEqual(caught.exception.code, 404)

        # 1. data before the pair, pair-create, host writes during the initial copy
        yield self.write(url_a, "write -P 0x11 0 4M", "write -P 0x12 20M 1M")
        yield self.array("arrayA", "pair-create", "0", "--partner", b_wwn, "--partner-lun", "0",
                         "--group", "7")
        yield self.write(url_a, "write -P 0x13 1M 64K", "write -P 0x14 30M 4K")
        yield self.until("duplex", lambda: self.pair("arrayA")["state"] == "duplex")
        self.assertEqual(self.pair("arrayA")["copy"]["bytes_total"], 5 * MiB)  # allocated only
        yield self.until("equal after the initial copy", self.equal)
        self.assertEqual((self.pair("arrayB")["state"], self.edge_pair("edgeA")["state"],
                          self.edge_pair("edgeB")["state"]), ("duplex",) * 3)

        # 2. the core is cut: writes are acknowledged by edgeA, which gives up after 2 s
        core = self.devices["core1"]["pid"]
        os.kill(core, signal.SIGSTOP)
        try:
            yield self.write(url_a, "write -P 0x21 8M 512K", "write -P 0x22 12M 64K")
            yield self.until("failure Suspend at the source",
                             lambda: self.pair("arrayA")["state"] == "failure-suspend")
            self.assertEqual(self.edge_pair("edgeA")["bitmap_727_tracks"], 9)
            yield self.write(url_a, "write -P 0x23 16M 64K")    # into the array's bitmap
            self.assertFalse(self.equal())
        finally:
            os.kill(core, signal.SIGCONT)
        yield self.until("failure Suspend at the target",
                         lambda: self.pair("arrayB")["state"] == "failure-suspend")

        # 3. resync copies the 727 tracks and the array's own, not the volume
        yield self.array("arrayA", "resync", "0", "--wait")
        self.assertEqual(self.pair("arrayA")["state"], "duplex")
        self.assertEqual(self.pair("arrayA")["copy"]["bytes_total"], 10 * 64 * 1024)
        yield self.until("equal after resync", self.equal)

        # 4. failover with writes just made: the target equals the source, then takes writes
        yield self.write(url_a, "write -P 0x31 2M 2M")
        answer = yield self.array("arrayB", "suspend", "0")
        self.assertEqual(answer["state"], "failure-suspend")
        self.assertEqual(answer["residual"]["known_missing"], 0)
        self.assertTrue(self.equal(), "the target differs from the source after failover")
        yield self.write(url_b, "write -P 0x41 24M 128K")
        yield self.until("failure Suspend at the source after failover",
                         lambda: self.pair("arrayA")["state"] == "failure-suspend")

        # 5. failback: reverse on both arrays, resync from the old target: bitmaps only
        yield self.array("arrayB", "reverse", "0")
        yield self.array("arrayA", "reverse", "0")
        yield self.array("arrayB", "resync", "0", "--wait")
        self.assertEqual((self.pair("arrayB")["role"], self.pair("arrayB")["state"]),
                         ("source", "duplex"))
        self.assertEqual(self.pair("arrayB")["copy"]["bytes_total"], 2 * 64 * 1024)
        yield self.until("equal after failback", self.equal)
        self.assertEqual(volume(self.source)[24 * MiB:24 * MiB + 4], b"\x41" * 4)

    @defer.inlineCallbacks
    def test_virtual_wwns_are_translated_both_ways(self):
        """【0093】-【0098】: each array sees its partner under a WWN the edge made up."""
        lab = yield self.up('[lab]\ncapacity = "8MiB"\npair_setup = "create"\n'
                            'virtual_wwns = true\n')
        pair = lab["pairs"][0]
        a_wwn, b_wwn = self.devices["arrayA"]["wwn"], self.devices["arrayB"]["wwn"]
        virtual_b = lablib.virtual_wwn(b_wwn)
        # arrayA addresses arrayB by the virtual WWN edgeA shows it
        yield self.write(pair["nbd_url"], "write -P 0x51 0 1M")
        yield self.array("arrayA", "pair-create", "0", "--partner", virtual_b,
                         "--partner-lun", "0", "--group", "7")
        yield self.until("duplex", lambda: self.pair("arrayA")["state"] == "duplex")
        yield self.write(pair["nbd_url"], "write -P 0x52 4M 64K")
        yield self.until("equal", self.equal)
        # arrayB sees arrayA under edgeB's virtual WWN; the edges' rows hold the real ones
        self.assertEqual(self.pair("arrayB")["partner_wwpn"], lablib.virtual_wwn(a_wwn))
        self.assertEqual(self.pair("arrayA")["partner_wwpn"], virtual_b)
        for edge in ("edgeA", "edgeB"):
            row = self.edge_pair(edge)
            self.assertEqual((row["source_wwn"], row["target_wwn"]), (a_wwn, b_wwn))
        # and back: a failover from arrayB reaches the source edge through the translation
        answer = yield self.array("arrayB", "suspend", "0")
        self.assertEqual(answer["state"], "failure-suspend")
        yield self.until("failure Suspend at the source",
                         lambda: self.pair("arrayA")["state"] == "failure-suspend")
