"""The edge's console commands over a real Edge (memory log, no sockets)."""

from __future__ import annotations

import os

from twisted.application import service
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from rcn.console.commands import ConsoleError
from rcn.edge.config import parse_config
from rcn.edge.console import EdgeConsole
from rcn.edge.service import Edge
from rcn.logxfer.routes import Address
from rcn.rio.fcp import build_write16_cdb

A, B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
from tests.support import seal_with


class EdgeConsoleTests(TestCase):
    def setUp(self):
        doc = {
            "edge": {"id": "edgeA", "log": "127.0.0.1:47961",
                     "data_dir": os.path.abspath(self.mktemp())},
            "log": {"mode": "memory"},
            "console": {"tcp": "tcp:2301:interface=127.0.0.1"},
            "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B, "target_lun": 0,
                      "group": 7}],
            "route": [{"source_wwn": A, "target_wwn": B,
                       "path": ["127.0.0.1:47961", "127.0.0.1:47962"]}]}
        seal_with(self, doc, links=[(Address("127.0.0.1", 47961), Address("127.0.0.1", 47962))],
                  groups=[7])
        self.edge = Edge(parse_config(doc), reactor)
        self.addCleanup(self.edge.close)
        self.edge.device.sender.transmit = lambda data, address: None
        self.udp = service.Service()
        self.udp.startService()
        self.console = EdgeConsole(self.edge, self.udp)

    def type(self, line: str) -> str:
        return self.console.tree.run(line)

    def write(self):
        pair = self.edge.device.settings.pairs[0]
        self.edge.device.source_side.write(pair, build_write16_cdb(0, 8), bytes(4096))

    def test_show_commands(self):
        self.write()
        self.assertIn("rcn-edge", self.type("sh ver"))
        self.assertIn("device edgeA", self.type("show version"))
        self.assertIn("log-transfer  127.0.0.1:47961  up", self.type("show interfaces"))
        groups = self.type("show groups").splitlines()
        self.assertEqual(groups[0].split()[:4], ["group", "generation", "deleted", "retained"])
        self.assertEqual(groups[1].split()[:4], ["7", "1", "0", "1"])
        self.assertIn("duplex", self.type("show pairs"))
        self.assertIn("127.0.0.1:47961 > 127.0.0.1:47962", self.type("show routes"))
        self.assertIn("mode memory", self.type("show log-store"))
        self.assertIn("group policy", self.type("show config"))
        self.assertIn("edge.writes", self.type("show counters"))

    def test_clear_counters_is_the_consoles_own(self):
        self.write()
        self.assertRegex(self.type("show counters"), r"edge\.writes\s+1")
        self.type("clear counters")
        self.assertRegex(self.type("show counters"), r"edge\.writes\s+0")
        self.assertEqual(self.edge.device.counters["writes"], 1)       # /metrics unchanged
        self.write()
        self.assertRegex(self.type("show counters"), r"edge\.writes\s+1")

    def test_debug_and_shutdown(self):
        self.assertIn("on", self.type("debug log-transfer on"))
        self.assertTrue(self.edge.device.debug)
        self.type("deb log off")
        self.assertFalse(self.edge.device.debug)
        self.assertIn("administratively down", self.type("shutdown log-transfer"))
        self.assertFalse(self.udp.running)
        self.assertIn("administratively down", self.type("show interfaces"))
        self.assertIn("already down", self.type("shut log"))
        self.assertIn("interface up", self.type("no shutdown log-transfer"))
        self.assertTrue(self.udp.running)
        with self.assertRaises(ConsoleError) as caught:
            self.type("show grops")
        self.assertIn('unknown word "grops"', str(caught.exception))

    def test_console_config(self):
        self.assertEqual(self.edge.config.console.tcp, "tcp:2301:interface=127.0.0.1")
        with self.assertRaises(Exception):
            parse_config({"edge": {"id": "e", "log": "127.0.0.1:1", "data_dir": "x"},
                          "console": {"speed": 12345, "serial": "/dev/null"}})
