"""A lab with a WAN emulator link between edgeA and core1, driven over its console pty.

Real daemons (``rcn lab up``), the real ``rcn-wanem`` relaying the log-transfer
traffic, qemu-io as the host and the bench's WanemDriver over pyserial on the pty:
writes replicate through the link, a cut link stops the target but not the
source's acknowledgements, and the restored link drains every write.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from rcn.wanem.driver import WanemDriver, open_port
from rcn.lab import applied_counter, get_json
from tests.rcn.lab.test_process import RCN, run, volume
from tests.support import require_tool, until

TOPOLOGY = """
[lab]
capacity = "8MiB"
consoles = true
seal = "none"                   # the hop layer cannot seal through an emulator link yet

[[wanem]]
between = ["edgeA", "core1"]
delay_ms = 10.0
seed = 7
"""


class WanemLabTests(TestCase):
    timeout = 120

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(lambda: run(RCN, "lab", "down", "--dir", self.dir))

    def figures(self, lab: dict) -> tuple[int, int, int]:
        """(source generation, source retained, target applied) of group 7."""
        devices = {d["name"]: d for d in lab["devices"]}
        source = get_json(devices["edgeA"]["urls"]["status"])
        target = get_json(devices["edgeB"]["urls"]["status"])
        s = next((g for g in source["groups"] if g["group"] == 7), {})
        t = next((g for g in target["groups"] if g["group"] == 7), {})
        return s.get("log_generation", 0), s.get("log_retained_entries", 0), applied_counter(t)


    @defer.inlineCallbacks
    def test_replication_through_the_link_cut_and_restored_over_the_console(self):
        qemu_io = require_tool(self, "qemu-io")
        path = os.path.join(self.dir, "topology.toml")
        with open(path, "w") as f:
            f.write(TOPOLOGY)
        out, err, code = yield run(RCN, "lab", "up", "--dir", self.dir, "--topology", path,
                                   "--json")
        self.assertEqual(code, 0, (out + err).decode())
        lab = json.loads(out)
        wanem = next(d for d in lab["devices"] if d["name"] == "wanem")
        for d in lab["devices"]:             # consoles = true: a pty link per daemon
            self.assertTrue(os.path.islink(d["console"]), d["name"])
        driver = WanemDriver(open_port(wanem["console"], timeout=5.0))
        self.addCleanup(driver.close)
        self.assertEqual(driver.identify(), "RCN,rcn-wanem,wanem,0.1.0")
        self.assertEqual(driver.delay(1), 10.0)

        url = lab["nbd_url"]
        out, err, code = yield run(qemu_io, "-f", "raw", url, "-c", "write -P 0x5a 0 1M")
        self.assertEqual(code, 0, (out + err).decode())
        yield until("applied through the link", lambda: (lambda g, r, a: g > 0 and r == 0 and a == g)(
            *self.figures(lab)), 30)
        through = driver.stats(1)
        self.assertGreater(through.packets_in, 0)       # the traffic took the emulator
        self.assertEqual(through.dropped, 0)

        # cut: the host's writes are still acknowledged (by the source edge's log)
        driver.set_up(1, False)
        self.assertFalse(driver.is_up(1))
        before = self.figures(lab)
        out, err, code = yield run(qemu_io, "-f", "raw", url, "-c", "write -P 0xc3 2M 1M")
        self.assertEqual(code, 0, (out + err).decode())
        generation, retained, applied = self.figures(lab)
        self.assertGreater(generation, before[0])
        self.assertGreater(retained, 0)
        self.assertEqual(applied, before[2])            # nothing reached the target
        pair = lab["pairs"][0]
        self.assertNotEqual(volume(pair["target_volume"])[2 << 20:3 << 20], b"\xc3" * (1 << 20))
        yield until("retransmissions dropped as down", lambda: driver.stats(1).down > 0, 10)

        # restored: everything retained drains, the volumes agree
        driver.set_up(1, True)
        yield until("drained after the link came back",
                    lambda: (lambda g, r, a: r == 0 and a == g)(*self.figures(lab)), 60)
        self.assertTrue(volume(pair["source_volume"]) == volume(pair["target_volume"]),
                        "the target volume differs from the source volume")

        out, err, code = yield run(RCN, "lab", "status", "--dir", self.dir, "--json")
        self.assertEqual(code, 0, err.decode())
        row = next(r for r in json.loads(out)["devices"] if r["name"] == "wanem")
        self.assertEqual(row["links"][0]["between"], ["edgeA", "core1"])
        self.assertEqual((row["links"][0]["state"], row["links"][0]["delay_ms"]), ("UP", 10.0))
        self.assertGreater(row["links"][0]["dropped"], 0)
        # the edge's console answers on its own pty, with the route through the emulator
        edge = next(d for d in lab["devices"] if d["name"] == "edgeA")
        answer = yield threads.deferToThread(_type, edge["console"], b"show routes\r")
        self.assertIn(f"127.0.0.1:{wanem['ports']['link1_a']}", answer)


def _type(path: str, line: bytes) -> str:
    """Type ``line`` on the console at ``path``; what came back up to the next prompt."""
    port = open_port(path, timeout=5.0)
    try:
        port.reset_input_buffer()
        port.write(line)
        return port.read_until(b"edgeA> ").decode(errors="replace")
    finally:
        port.close()
