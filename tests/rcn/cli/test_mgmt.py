"""`rcn customer|device|link|storage|pair|route|status|lag` against a real management API."""

from __future__ import annotations

import io
import json

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from rcn.cli.main import main as rcn_main
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import MgmtServer
from rcn.mgmt.service import site
from rcn.mgmt.store import SQLiteStore

TOKEN = "operator-token-0123456789"


class CliCase(TestCase):
    """``rcn`` commands (in a thread) against ``self.server``'s API on a loopback port."""

    def serve(self, server: MgmtServer) -> None:
        self.server = server
        server.settings.set_token(OPERATOR, None, TOKEN)
        http, _, _ = site(server)
        self.port = reactor.listenTCP(0, http, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def rcn(self, *args, token=TOKEN):
        out, err = io.StringIO(), io.StringIO()

        def run():
            return rcn_main([*args, "--mgmt", self.url, f"--token={token}"], out, err)
        return threads.deferToThread(run).addCallback(
            lambda status: (status, out.getvalue(), err.getvalue()))

    @defer.inlineCallbacks
    def ok(self, *args, token=TOKEN) -> str:
        status, out, err = yield self.rcn(*args, token=token)
        self.assertEqual(status, 0, f"rcn {' '.join(args)}: {err}")
        return out


class MgmtCliTests(CliCase):
    def setUp(self):
        self.serve(MgmtServer(task.Clock(), SQLiteStore(":memory:")))

    @defer.inlineCallbacks
    def test_an_operator_and_a_customer_set_up_a_pair(self):
        for name, role, port in (("edgeA", "edge", 1), ("edgeB", "edge", 2), ("core1", "core", 3)):
            yield self.ok("device", "add", name, "--role", role, "--log",
                          f"127.0.0.1:4700{port}", "--limit", "1000")
        for a, b in (("edgeA", "core1"), ("core1", "edgeB")):
            yield self.ok("link", "add", a, b, "--capacity", "1e9", "--latency-ms", "2")
        out = yield self.ok("customer", "add", "acme", "--max-pairs", "1")
        token = out.strip().rsplit(" ", 1)[1]
        for wwn, edge in (("50:0a:09:80:00:00:00:01", "edgeA"),
                          ("50:0a:09:80:00:00:00:02", "edgeB")):
            yield self.ok("storage", "add", wwn, "--edge", edge, token=token)
        out = yield self.ok("pair", "add", "--source", "50:0a:09:80:00:00:00:01:0",
                            "--target", "50:0a:09:80:00:00:00:02:0", token=token)
        self.assertRegex(out, r"^pair \d+ added \(group \d+\)")
        out = yield self.ok("route", "list")
        self.assertIn("edgeA > core1 > edgeB", out)
        out = yield self.ok("status", token=token)
        self.assertIn("50:0a:09:80:00:00:00:01", out)
        out = yield self.ok("pair", "list", "--json", token=token)
        self.assertEqual(len(json.loads(out)["pairs"]), 1)
        out = yield self.ok("lag", "--watch", "--count", "2", "--interval", "0", token=token)
        out = yield self.ok("device", "list")
        self.assertIn("core1", out)
        # refusals: the contract limit, and a customer reaching operator settings
        status, _, err = yield self.rcn("pair", "add", "--source", "50:0a:09:80:00:00:00:01:1",
                                        "--target", "50:0a:09:80:00:00:00:02:1", token=token)
        self.assertEqual(status, 1)
        self.assertIn("max_pairs is 1", err)
        status, _, err = yield self.rcn("customer", "list", token=token)
        self.assertEqual(status, 1)
        self.assertIn("HTTP 403", err)
        status, _, err = yield self.rcn("pair", "add", "--source", "nonsense",
                                        "--target", "x:0", token=token)
        self.assertEqual(status, 2)
