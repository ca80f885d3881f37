"""The core's TOML configuration: a good file, defaults, and errors that name their key."""

from __future__ import annotations

import copy
import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rcn.config import ConfigError as SharedConfigError
from rcn.core.config import ConfigError, load_config, parse_config
from rcn.core.relay import BatchPolicy
from rcn.core.tap import Options
from rcn.logxfer.routes import Address

FULL = """
[core]
id = "core1"
listen = "127.0.0.1:47002"
receive_buffer = "16MiB"
send_buffer = 1048576

[batch]
enabled = true
max_delay_ms = 2.5
max_bytes = 32000
max_entries = 64

[metrics]
listen = "tcp:47302:interface=127.0.0.1"

[seal]
keys = "keys/core1.keys"

[[route]]
source_wwn = "50:0a:09:80:00:00:00:01"
target_wwn = "50:0a:09:80:00:00:00:02"
path = ["127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"]

[[route]]
source_wwn = "500a098000000003"
target_wwn = "50:0a:09:80:00:00:00:02"
path = ["127.0.0.2:47001", "127.0.0.1:47003"]
"""

MINIMAL = {"core": {"id": "c", "listen": "10.0.0.2:47001"}, "seal": {"keys": "core.keys"},
           "route": [{"source_wwn": "50:0a:09:80:00:00:00:01",
                      "target_wwn": "50:0a:09:80:00:00:00:02",
                      "path": ["10.0.0.1:47001", "10.0.0.2:47001", "10.0.0.3:47001"]}]}


def write(testcase, text: str) -> str:
    directory = testcase.mktemp()
    os.makedirs(directory)
    path = os.path.join(directory, "core.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


class ConfigTests(SynchronousTestCase):
    def test_full_file(self):
        config = load_config(write(self, FULL))
        self.assertEqual((config.id, config.listen), ("core1", Address("127.0.0.1", 47002)))
        self.assertEqual((config.receive_buffer, config.send_buffer), (16 << 20, 1 << 20))
        self.assertEqual(config.batch, BatchPolicy(enabled=True, max_delay=0.0025,
                                                   max_bytes=32000, max_entries=64))
        self.assertEqual(config.metrics, "tcp:47302:interface=127.0.0.1")
        self.assertEqual((config.seal.mode, config.seal.keys, config.seal.sealed),
                         ("aes-256-gcm", "keys/core1.keys", True))
        self.assertEqual(len(config.routes), 2)
        self.assertEqual(config.routes.next_hop(0x500A098000000001, 0x500A098000000002,
                                                config.listen), Address("127.0.0.1", 47003))
        self.assertEqual(config.routes.next_hop(0x500A098000000001, 0x500A098000000002,
                                                config.listen, backward=True),
                         Address("127.0.0.1", 47001))

    def test_defaults(self):
        config = parse_config(copy.deepcopy(MINIMAL))
        self.assertEqual(config.batch, BatchPolicy())
        self.assertEqual((config.batch.enabled, config.batch.max_delay, config.batch.max_bytes,
                          config.batch.max_entries), (True, 0.001, 65000, 256))
        self.assertEqual((config.receive_buffer, config.send_buffer, config.metrics),
                         (16 << 20, 4 << 20, None))

    def test_batching_off(self):
        doc = copy.deepcopy(MINIMAL)
        doc["batch"] = {"enabled": False}
        self.assertFalse(parse_config(doc).batch.enabled)

    def test_ipv6(self):
        doc = copy.deepcopy(MINIMAL)
        doc["core"]["listen"] = "[::1]:47002"
        doc["route"][0]["path"] = ["[::1]:47001", "[::1]:47002"]
        self.assertEqual(parse_config(doc).listen, Address("::1", 47002))

    def test_unsealed_only_when_asked_and_then_without_keys(self):
        doc = copy.deepcopy(MINIMAL)
        doc["seal"] = {"mode": "none"}
        self.assertFalse(parse_config(doc).seal.sealed)

    def test_one_error_type(self):
        self.assertIs(ConfigError, SharedConfigError)

    def assertConfigError(self, change, fragment: str):
        doc = copy.deepcopy(MINIMAL)
        change(doc)
        exc = self.assertRaises(ConfigError, parse_config, doc)
        self.assertIn(fragment, str(exc))
        return exc

    def test_errors_name_their_key(self):
        def put(table, key, value):
            def change(doc):
                doc.setdefault(table, {})[key] = value
            return change

        def drop(table, key):
            def change(doc):
                del doc[table][key]
            return change
        cases = [
            (drop("core", "id"), "core.id: missing"),
            (put("core", "id", " "), "core.id: empty"),
            (drop("core", "listen"), "core.listen: missing"),
            (put("core", "listen", "10.0.0.2"), "core.listen: "),
            (put("core", "listen", "core1.example:47001"), "core.listen: "),
            (put("core", "listen", 47001), "core.listen: expected str"),
            (put("core", "listen", "10.0.0.9:47001"), "core.listen: 10.0.0.9:47001 is on no"),
            (put("core", "receive_buffer", "16MB"), "core.receive_buffer: "),
            (put("core", "receive_buffer", 10), "core.receive_buffer: 10 bytes"),
            (put("core", "send_buffer", "2GiB"), "core.send_buffer: "),
            (put("core", "colour", "red"), "core.colour: unknown key"),
            (put("batch", "enabled", "yes"), "batch.enabled: expected bool"),
            (put("batch", "max_delay_ms", -1), "batch.max_delay_ms: -1.0 ms is outside"),
            (put("batch", "max_delay_ms", 1001), "batch.max_delay_ms: "),
            (put("batch", "max_bytes", 65468), "batch.max_bytes: 65468 is outside 272..65467"),
            (put("batch", "max_bytes", 100), "batch.max_bytes: "),
            (put("batch", "max_bytes", 1.5), "batch.max_bytes: expected int"),
            (put("batch", "max_entries", 0), "batch.max_entries: 0 is outside 1..4096"),
            (put("batch", "max_entries", 5000), "batch.max_entries: "),
            (put("batch", "max_wait", 1), "batch.max_wait: unknown key"),
            (put("metrics", "listen", "localhost:9100"), "metrics.listen: "),
            (put("metrics", "listen", "127.0.0.1:9100"),
             "metrics.listen: '127.0.0.1:9100' is HOST:PORT; a TCP listener is a Twisted "
             "endpoint string: write \"tcp:9100:interface=127.0.0.1\""),
            (put("metrics", "port", 9100), "metrics.port: unknown key"),
            (drop("seal", "keys"), "seal.keys: sealed log transfer needs keys"),
            (put("seal", "keys", " "), "seal.keys: empty"),
            (put("seal", "mode", "rot13"), "seal.mode: "),
        ]
        for change, fragment in cases:
            self.assertConfigError(change, fragment)

    def test_route_errors_name_the_route(self):
        def route(**kw):
            def change(doc):
                doc["route"][0].update(kw)
            return change
        cases = [
            (route(source_wwn="50:0a"), "route[0].source_wwn: not a WWN"),
            (route(target_wwn=7), "route[0].target_wwn: expected str"),
            (route(path="10.0.0.1:1"), "route[0].path: expected list"),
            (route(path=["10.0.0.1:1", "10.0.0.2:47001", 5]), "route[0].path[2]: expected str"),
            (route(path=["10.0.0.1", "10.0.0.2:47001"]), "route[0].path[0]: "),
            (route(path=["edge.example:1", "10.0.0.2:47001"]),
             "route[0].path[0]: 'edge.example:1': 'edge.example' is not an IP address"),
            (route(path=["10.0.0.2:47001"]), "route[0].path: "),
            (route(path=["10.0.0.2:47001", "10.0.0.3:1", "10.0.0.2:47001"]),
             "route[0].path: "),
            (route(path=["[::1]:1", "10.0.0.2:47001"]), "route[0].path[0]: [::1]:1 is not of "),
            (route(hops=3), "route[0].hops: unknown key"),
        ]
        for change, fragment in cases:
            self.assertConfigError(change, fragment)

    def test_duplicate_route_names_both(self):
        def change(doc):
            doc["route"].append(copy.deepcopy(doc["route"][0]))
        exc = self.assertConfigError(change, "route[1]: a second route")
        self.assertIn("route[0]", str(exc))

    def test_no_route_at_all(self):
        def change(doc):
            del doc["route"]
        self.assertConfigError(change, "core.listen: 10.0.0.2:47001 is on no [[route]] path")

    def test_route_entry_must_be_a_table(self):
        def change(doc):
            doc["route"] = ["x"]
        self.assertConfigError(change, "route[0]: expected a table")

    def test_unknown_top_level_table(self):
        def change(doc):
            doc["edge"] = {}
        self.assertConfigError(change, "edge: unknown key")

    def test_missing_core_table(self):
        def change(doc):
            del doc["core"]
        self.assertConfigError(change, "core: missing")

    def test_file_errors_name_the_file(self):
        path = write(self, FULL.replace("max_bytes = 32000", "max_bytes = 70000"))
        exc = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(exc).startswith(f"{path}: batch.max_bytes: "), str(exc))
        bad = write(self, "[core\n")
        self.assertIn(f"{bad}: not valid TOML", str(self.assertRaises(ConfigError, load_config, bad)))
        missing = os.path.join(self.mktemp(), "none.toml")
        self.assertIn(missing, str(self.assertRaises(ConfigError, load_config, missing)))


class TapTests(SynchronousTestCase):
    def test_config_is_parsed(self):
        options = Options()
        options.parseOptions(["--config", write(self, FULL)])
        self.assertEqual(options["parsed"].id, "core1")

    def test_config_is_required(self):
        self.assertIn("--config", str(self.assertRaises(usage.UsageError, Options().parseOptions, [])))

    def test_bad_config_is_a_usage_error_naming_the_key(self):
        path = write(self, FULL.replace('id = "core1"', "id = 1"))
        exc = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        self.assertIn("core.id: expected str", str(exc))
