"""rcn-mgmt's service tree opens its database and token file in startService.

twistd applies ``--umask`` and ``--uid`` between make_service and startService
(tests/rcn/test_twistd.py runs the real daemon); here the tree runs in this process.
"""

from __future__ import annotations

import json
import os
import stat

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from rcn.config import ConfigError
from rcn.mgmt.config import parse_config
from rcn.mgmt.service import make_service
from rcn.tap import StartError
from tests.support import free_port


class OpenAtStartTests(TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir, 0o700)
        self.http = free_port()
        self.config = parse_config({"mgmt": {
            "id": "mgmt", "database": os.path.join(self.dir, "mgmt.sqlite"),
            "operator_token_file": os.path.join(self.dir, "operator.token"),
            "http": f"tcp:{self.http}:interface=127.0.0.1",
            "amp": f"tcp:{free_port()}:interface=127.0.0.1"}})

    def start(self, top):
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        old = os.umask(0o077)                # what twistd --umask 077 sets before startService
        try:
            top.startService()
        finally:
            os.umask(old)

    def test_make_service_touches_no_file_start_opens_them_and_serves(self):
        top, daemon = make_service(self.config, reactor)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertIsNone(daemon.server)
        self.start(top)
        self.addCleanup(daemon.server.store.close)
        modes = {n: stat.S_IMODE(os.stat(os.path.join(self.dir, n)).st_mode)
                 for n in os.listdir(self.dir)}
        self.assertEqual(modes, {"mgmt.sqlite": 0o600, "operator.token": 0o600})
        self.assertIsNotNone(daemon.amp.port)            # its factory came with the server
        with open(os.path.join(self.dir, "operator.token")) as f:
            token = f.read().strip()
        d = Agent(reactor).request(b"GET", f"http://127.0.0.1:{self.http}/api/v1/whoami".encode(),
                                   _headers(token))
        d.addCallback(readBody)
        return d.addCallback(lambda body: self.assertTrue(json.loads(body)["operator"]))

    def refused_token_file(self, content: bytes) -> str:
        """What the start says about an operator token file holding ``content``."""
        path = os.path.join(self.dir, "operator.token")
        with open(path, "wb") as f:
            f.write(content)
        top, _ = make_service(self.config, reactor)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        with self.assertRaises(StartError) as caught:
            top.startService()
        message = str(caught.exception)
        self.assertIn(f"operator token file {path}: ", message)
        return message

    def test_a_token_file_that_is_not_utf8_stops_the_start_naming_it(self):
        self.assertIn("codec can't decode", self.refused_token_file(b"\xff\xfe" * 20))

    def test_a_token_file_too_short_stops_the_start_naming_it(self):
        self.assertIn("at least 16 characters", self.refused_token_file(b"short\n"))

    def test_empty_database_or_token_file_keys_are_refused(self):
        for key in ("database", "operator_token_file"):
            with self.assertRaises(ConfigError) as caught:
                parse_config({"mgmt": {"id": "mgmt", key: " "}})
            self.assertEqual(str(caught.exception), f"mgmt.{key}: empty")

    def test_start_that_cannot_open_the_database_raises_start_error_naming_it(self):
        database = os.path.join(self.dir, "missing", "mgmt.sqlite")
        config = parse_config({"mgmt": {"id": "mgmt", "database": database,
                                        "http": f"tcp:{self.http}:interface=127.0.0.1"}})
        top, _ = make_service(config, reactor)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        with self.assertRaises(StartError) as caught:
            top.startService()
        self.assertIn(f"rcn-mgmt mgmt: cannot open its files: settings database {database}: "
                      f"unable to open database file", str(caught.exception))


def _headers(token: str):
    from twisted.web.http_headers import Headers
    return Headers({b"authorization": [f"Bearer {token}".encode()]})
