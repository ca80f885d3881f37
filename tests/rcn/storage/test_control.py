"""The array control API over real HTTP, and `rcn array` against it."""

from __future__ import annotations

import io
import json

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from rcn.cli import main as rcn_main
from rcn.storage.control import ControlResource


class FakeArray:
    def describe_status(self):
        return {"wwpn": "50:0a:09:80:00:00:00:01", "edge": "up"}

    def describe_volumes(self):
        return [{"lun": 0, "name": "vol0", "capacity": 1048576, "path": "/v/lun0"}]

    def describe_pairs(self):
        return [{"lun": 0, "partner_wwpn": "50:0a:09:80:00:00:00:02", "partner_lun": 1,
                 "group": 7, "state": "duplex", "mode": "sync", "queue_limit": 1024}]


class ControlApiTests(TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, Site(ControlResource(FakeArray())), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def rcn(self, *args):
        out = io.StringIO()

        def run():
            return rcn_main(list(args), out)
        return threads.deferToThread(run).addCallback(lambda status: (status, out.getvalue()))

    def test_pairs_table(self):
        def check(result):
            status, text = result
            self.assertEqual(status, 0)
            header, row = text.splitlines()
            self.assertEqual(header.split(), ["LUN", "PARTNER_WWPN", "PARTNER_LUN", "GROUP", "STATE",
                                              "MODE"])
            self.assertEqual(row.split(), ["0", "50:0a:09:80:00:00:00:02", "1", "7", "duplex", "sync"])
        return self.rcn("array", "pairs", "--url", self.url).addCallback(check)

    def test_one_pair_as_json(self):
        def check(result):
            status, text = result
            self.assertEqual((status, json.loads(text)["group"]), (0, 7))
        return self.rcn("array", "pairs", "0", "--json", "--url", self.url).addCallback(check)

    def test_missing_pair_is_an_error(self):
        def check(result):
            self.assertEqual(result, (1, ""))
        return self.rcn("array", "pairs", "5", "--url", self.url).addCallback(check)

    def test_volumes_and_status(self):
        def check_volumes(result):
            self.assertEqual(result[0], 0)
            self.assertIn("vol0", result[1])
            return self.rcn("array", "status", "--url", self.url)

        def check_status(result):
            self.assertEqual(result, (0, "edge: up\nwwpn: 50:0a:09:80:00:00:00:01\n"))
        return self.rcn("array", "volumes", "--url", self.url).addCallback(
            check_volumes).addCallback(check_status)

    def test_unreachable_array(self):
        port = self.port.getHost().port

        def check(result):
            self.assertEqual(result, (2, ""))
        d = self.port.stopListening()
        d.addCallback(lambda _: self.rcn("array", "status", "--url", f"http://127.0.0.1:{port}"))
        return d.addCallback(check)

    def test_unknown_path_and_method(self):
        from twisted.web.client import Agent, readBody
        agent = Agent(reactor)

        def check(response, code):
            self.assertEqual(response.code, code)
            return readBody(response).addCallback(lambda body: self.assertIn("error", json.loads(body)))
        d = agent.request(b"GET", f"{self.url}/nothing".encode())
        d.addCallback(check, 404)
        d.addCallback(lambda _: agent.request(b"POST", f"{self.url}/pairs".encode()))
        return d.addCallback(check, 405)
