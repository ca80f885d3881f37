"""The edge's TOML configuration: the documented example, defaults, errors naming keys."""

from __future__ import annotations

import os
import re
import tomllib

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rcn.edge import config as edge_config
from rcn.edge.config import ConfigError, load_config, parse_config
from rcn.edge.tap import Options
from rcn.logxfer.routes import Address

A, B = 0x500A098000000001, 0x500A098000000002

MINIMAL = {"edge": {"id": "edgeA", "log": "127.0.0.1:47001", "data_dir": "d"},
           "seal": {"keys": "edgeA.keys"}}


def documented_example() -> dict:
    """The example in the module docstring: the documentation must be a working file."""
    text = edge_config.__doc__.split("::", 1)[1].split("Errors name", 1)[0]
    return tomllib.loads(re.sub(r"(?m)^    ", "", text))


class EdgeConfigTests(SynchronousTestCase):
    def test_documented_example_parses(self):
        config = parse_config(documented_example(), "/base")
        self.assertEqual(config.id, "edgeA")
        self.assertEqual(config.log, Address("127.0.0.1", 47001))
        self.assertEqual(config.fcip, "tcp:3225:interface=127.0.0.1")
        self.assertEqual(config.data_dir, "/base/edgeA")
        self.assertEqual(config.log_mode, "durable")
        self.assertEqual((config.settings.rto, config.settings.rto_max), (0.5, 5.0))
        self.assertEqual(config.settings.receiver.window, 16384)
        pair, = config.settings.pairs
        self.assertEqual((pair.source_wwn, pair.target_wwn, pair.group, pair.customer),
                         (A, B, 7, "acme"))
        self.assertEqual(config.settings.bandwidth, {"acme": float(100 << 20)})
        self.assertEqual(config.access, {(A, B)})
        self.assertEqual(config.virtual_storages[0].partner_edge_id, "edgeB")
        self.assertEqual(config.settings.routes.next_hop(A, B, config.log),
                         Address("127.0.0.1", 47002))

    def test_minimal_file_has_working_defaults(self):
        config = parse_config(MINIMAL)
        self.assertIsNone(config.fcip)
        self.assertIsNone(config.metrics)
        self.assertEqual(config.settings.pairs, [])
        self.assertEqual(config.settings.max_datagram_body, 65000 - 88)

    def assert_error(self, doc: dict, key: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            parse_config(doc)
        self.assertTrue(str(caught.exception).startswith(key), str(caught.exception))
        return str(caught.exception)

    def test_errors_name_their_key(self):
        cases = [
            ({"edge": {"log": "127.0.0.1:1", "data_dir": "d"}}, "edge.id"),
            ({**MINIMAL, "log": {"mode": "tape"}}, "log.mode"),
            ({**MINIMAL, "receiver": {"window": 1000}}, "receiver.window"),
            ({**MINIMAL, "sender": {"rto_ms": 500, "rto_max_ms": 100}}, "sender.rto_max_ms"),
            ({**MINIMAL, "edge": {**MINIMAL["edge"], "log": "edge-a:47001"}}, "edge.log"),
            ({**MINIMAL, "pair": [{"source_wwn": "500a098000000001", "source_lun": 0, "target_wwn": "500a098000000002",
                                   "target_lun": 0, "group": 1, "customer": "nobody"}]},
             "pair[0].customer"),
            ({**MINIMAL, "route": [{"source_wwn": "500a098000000001", "target_wwn": "500a098000000002",
                                    "path": ["127.0.0.1:1"]}]}, "route[0].path"),
            ({**MINIMAL, "colour": "blue"}, "colour"),
        ]
        for doc, key in cases:
            self.assert_error(doc, key)

    def test_load_config_names_the_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[edge]\nid = 3\n")
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("edge.id", str(caught.exception))

    def test_tap_requires_config_and_reports_errors(self):
        self.assertRaises(usage.UsageError, Options().parseOptions, [])
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[edge]\nid = 'x'\nlog = '127.0.0.1:1'\n")
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--config", path])
        self.assertIn("edge.data_dir", str(caught.exception))
