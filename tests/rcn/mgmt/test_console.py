"""rcn-mgmt's console: every command over a real MgmtServer (devices connected in memory with
iosim, the listeners on real loopback sockets), abbreviations, bad words."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.test import iosim

from rcn.console.commands import ConsoleError
from rcn.mgmtlink.client import MgmtClient
from rcn.mgmt.config import parse_config
from rcn.mgmt.console import MgmtConsole
from rcn.mgmt.service import TcpListenService
from tests.support import poll, tcp_accepts
from tests.rcn.mgmt.test_server import S1, S2, T1, ServerTestCase

S3 = "50:0a:09:80:00:00:00:21"


def rows(text: str) -> dict[str, list[str]]:
    """A table's rows by their first cell (two or more spaces separate the columns)."""
    out = {}
    for line in text.splitlines()[1:]:
        cells = [c for c in line.split("  ") if c.strip()]
        out[cells[0].strip()] = [c.strip() for c in cells]
    return out


class MgmtConsoleTests(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.config = parse_config({"mgmt": {"id": "mgmt1", "http": "tcp:47180:interface=127.0.0.1",
                                             "amp": "tcp:47100:interface=127.0.0.1"},
                                    "console": {"serial": "pty", "pty_link": "/tmp/x.console"}},
                                   base_dir="/srv")
        self.http = TcpListenService(reactor, self.site, "tcp:0:interface=127.0.0.1")
        self.amp = TcpListenService(reactor, self.server.distribution.factory(),
                                    "tcp:0:interface=127.0.0.1")
        for listener in (self.http, self.amp):
            listener.startService()
            self.addCleanup(lambda listener=listener: listener.running
                            and listener.stopService())
        self.console = MgmtConsole(self.config, self.server, self.api.counters, self.http,
                                   self.amp)
        self.cmd = self.console.tree.run
        self.pumps = {}

    def connect(self, name: str, role: str, address: str, figures=None):
        client = MgmtClient(self.clock, name, role, address, lambda v, doc: None,
                            lambda: figures or {"groups": []}, lambda g: {})
        self.pumps[name] = iosim.connectedServerAndClient(
            lambda: self.server.distribution.factory().buildProtocol(None),
            lambda: client.buildProtocol(None))[2]
        self.flush()
        self.clock.advance(0)                    # the snapshot goes out after the Register
        self.flush()

    def flush(self):
        for pump in self.pumps.values():
            pump.flush()

    def test_version_interfaces_and_config(self):
        self.clock.advance(3725)
        self.assertEqual(self.cmd("show version"),
                         f"rcn-mgmt 0.1.0, server mgmt1, settings version "
                         f"{self.server.settings.version()}, 0 reroutes since (snapshot "
                         f"version {self.server.version}), uptime 1h 2m 5s")
        self.connect("edgeA", "edge", "127.0.0.1:47001")
        interfaces = rows(self.cmd("sh int"))
        self.assertEqual(interfaces["http"][1:3], ["tcp:47180:interface=127.0.0.1", "up"])
        self.assertEqual(interfaces["amp"][1:],
                         [self.amp.listening_on, "up", "1 of 1 registered devices connected"])
        self.assertRegex(self.amp.listening_on, r"^127\.0\.0\.1:\d+$")
        config = rows(self.cmd("sh conf"))
        self.assertEqual(config["database"][1], "/srv/mgmt.sqlite")
        self.assertEqual(config["operator token file"][1], "/srv/operator.token")
        self.assertEqual(config["console"][1], "serial pty, link /tmp/x.console")
        self.assertEqual(config["stale after"][1], "5 s")
        self.assertNotIn("operator-token-0123456789", self.cmd("show config"))
        self.assertEqual(config["key rotation"][1], "every 86400 s")
        self.assertEqual(config["key overlap"][1], "60 s (links), 86400 s (groups)")
        self.assertEqual(config["key warning"][1], "after 10 s (devices not acknowledging a new "
                                                   "key; it sends only once all have)")

    def test_keys_show_epochs_and_states_never_the_keys(self):
        pair = self.pair(self.acme, S1, T1)[1]
        self.ok("POST", "/keys/rotate", {"group": pair["group"]})
        self.clock.advance(4)
        shown = self.cmd("show keys")
        group = [line.split() for line in shown.splitlines()
                 if line.startswith(f"group {pair['group']}")]
        self.assertEqual([cells[2:5] for cells in group],
                         [["edgeA,edgeB", "1", "send"], ["edgeA,edgeB", "2", "pending"]])
        # age, deadline (until the warning), the devices it waits for (none connected)
        self.assertEqual(group[1][5:], ["4", "s", "6", "s", "edgeA,edgeB"])
        self.assertEqual(group[0][-1], "-")
        self.assertIn("waiting for", shown.splitlines()[0])
        self.assertEqual(sum(line.startswith("127.0.0.1:") for line in shown.splitlines()), 2)
        for row in self.server.store.key_rows():
            self.assertNotIn(row[3], shown)
        self.assertEqual(rows(self.cmd("show counters"))["keys.rotations"][1], "1")

    def test_devices_connected_stale_old_and_never(self):
        self.connect("edgeA", "edge", "127.0.0.1:47001")
        self.connect("core1", "core", "127.0.0.1:47003")
        devices = rows(self.cmd("show devices"))
        self.assertEqual(devices["edgeA"][1:5], ["edge", "127.0.0.1:47001", "up",
                                                 str(self.server.version)])
        self.assertEqual(devices["edgeB"][3:], ["never registered", "-", "-"])
        # a settings change reaches core1 but the answer is not back yet: old
        self.pumps.pop("edgeA")                  # its answers stop arriving
        self.ok("PATCH", "/devices/core2", {"processing_limit": 7})
        self.flush()
        devices = rows(self.cmd("show devices"))
        self.assertTrue(devices["edgeA"][4].endswith(" old"), devices["edgeA"])
        self.assertEqual(devices["core1"][4], str(self.server.version))
        # no report for longer than stale_after: stale, with the age of the last report
        self.clock.advance(1.0)
        self.flush()
        self.assertEqual(rows(self.cmd("show devices"))["core1"][5], "0.0 s ago")
        self.clock.advance(6.0)                  # no pump: reports do not arrive
        self.assertEqual(rows(self.cmd("show devices"))["core1"][3:6:2],
                         ["stale", "6.0 s ago"])
        self.pumps["core1"].server.transport.loseConnection()
        self.flush()
        self.assertEqual(rows(self.cmd("show devices"))["core1"][3], "disconnected")

    def test_customers_pairs_and_routes(self):
        pair = self.pair(self.acme, S1, T1)[1]
        customers = rows(self.cmd("show customers"))
        self.assertEqual(customers["acme"][1:], ["-", "2", "1/1", "any", "no limit"])
        self.assertEqual(customers["globex"][3], "0")
        # the edges report: state from the source, lag from the target
        group = pair["group"]
        row = {"source_wwn": S1, "source_lun": 0, "target_wwn": T1, "target_lun": 0,
               "state": "duplex"}
        self.connect("edgeA", "edge", "127.0.0.1:47001",
                     {"pairs": [row], "groups": [{"group": group}]})
        self.connect("edgeB", "edge", "127.0.0.1:47002",
                     {"pairs": [], "groups": [{"group": group, "lag_s": 0.04}]})
        self.clock.advance(1.0)
        self.flush()
        pairs = rows(self.cmd("sh pai"))
        self.assertEqual(pairs[str(pair["id"])][1:],
                         ["acme", f"{S1}:0", f"{T1}:0", str(group), "duplex", "40.0 ms"])
        routes = self.cmd("show routes").splitlines()
        forward = next(line for line in routes if line.startswith(S1))
        self.assertRegex(forward, rf"^{S1}\s+{T1}\s+{pair['id']}\s+edgeA > core[12] > edgeB$")
        back = next(line for line in routes if line.startswith(T1))
        self.assertRegex(back, r"\(failback\)\s+edgeB > core[12] > edgeA$")
        # a storage on an edge no link reaches: its pair has no route, and says why
        self.ok("POST", "/devices", {"id": "edgeC", "role": "edge",
                                     "log_address": "127.0.0.1:47009"})
        self.ok("POST", "/storages", {"storage_wwn": S3, "edge_id": "edgeC",
                                      "customer_id": "globex"})
        other = self.pair(self.globex, S2, S3)[1]
        line = next(line for line in self.cmd("show routes").splitlines()
                    if line.startswith(S2))
        self.assertRegex(line, rf"^{S2}\s+{S3}\s+{other['id']}\s+infeasible: \S")

    def test_counters_and_clear(self):
        before = rows(self.cmd("show counters"))
        self.assertGreater(int(before["api.requests"][1]), 10)      # setUp's API calls
        self.assertGreater(int(before["server.recomputations"][1]), 0)
        self.assertIn("amp.registrations", before)
        self.assertEqual(self.cmd("clear counters"),
                         "counters cleared (console only; /metrics keeps counting)")
        self.assertEqual({v[1] for v in rows(self.cmd("show counters")).values()}, {"0"})
        self.connect("edgeA", "edge", "127.0.0.1:47001")
        self.call("GET", "/nothing-here")
        after = rows(self.cmd("show counters"))
        self.assertEqual((after["api.requests"][1], after["api.errors"][1],
                          after["amp.registrations"][1]), ("1", "1", "1"))
        self.assertGreater(self.server.counters["recomputations"], 1)   # /metrics: monotonic

    @defer.inlineCallbacks
    def test_shutdown_and_no_shutdown_amp(self):
        host, port = self.amp.listening_on.split(":")
        self.assertEqual(self.cmd("shutdown amp"), "amp interface administratively down")
        self.assertEqual(self.cmd("shut amp"), "amp is already down")
        self.assertEqual(rows(self.cmd("show interfaces"))["amp"][2], "administratively down")
        refused = yield poll(lambda: not tcp_accepts(host, int(port)), 5.0)
        self.assertTrue(refused, "the AMP socket still accepts after shutdown")
        self.assertEqual(self.cmd("no shutdown amp"), "amp interface up")
        self.assertEqual(self.cmd("no shut amp"), "amp is already up")
        host, port = self.amp.listening_on.split(":")
        self.assertTrue(tcp_accepts(host, int(port)))
        self.assertEqual(rows(self.cmd("show interfaces"))["amp"][2], "up")

    def test_a_port_in_use_is_shown_not_fatal(self):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = f"tcp:{holder.getsockname()[1]}:interface=127.0.0.1"
            amp = TcpListenService(reactor, self.server.distribution.factory(), taken)
            amp.startService()
            self.addCleanup(amp.stopService)
            console = MgmtConsole(self.config, self.server, self.api.counters, self.http, amp)
            row = rows(console.tree.run("show interfaces"))["amp"]
        self.assertEqual(row[1], "tcp:47100:interface=127.0.0.1")   # not listening: as configured
        self.assertTrue(row[2].startswith("down: cannot listen: "), row)
        self.assertIn("Address already in use", row[2])

    def test_abbreviations_help_and_bad_words(self):
        self.assertEqual(self.cmd("sh dev"), self.cmd("show devices"))
        self.assertEqual(self.cmd("SHO CUST"), self.cmd("show customers"))
        with self.assertRaises(ConsoleError) as caught:
            self.cmd("show bogus")
        self.assertIn('unknown word "bogus" after "show"', str(caught.exception))
        with self.assertRaises(ConsoleError) as caught:
            self.cmd("sh c")
        self.assertIn('ambiguous word "c" after "show": config, counters, customers',
                      str(caught.exception))
        with self.assertRaises(ConsoleError) as caught:
            self.cmd("shutdown http")
        self.assertIn('unknown word "http" after "shutdown"', str(caught.exception))
        question = self.cmd("show ?")
        for word in ("version", "interfaces", "devices", "customers", "pairs", "routes",
                     "counters", "config"):
            self.assertRegex(question, rf"(?m)^{word}\s+\S")
        listed = self.cmd("help")
        for command in ("clear counters", "shutdown amp", "no shutdown amp", "show routes"):
            self.assertIn(command, listed)

