"""Every daemon's configuration refuses a value of the wrong type with ``file: key: reason``
(a ConfigError; at the tap, a UsageError and exit 1), never a traceback."""

from __future__ import annotations

import copy
import importlib
import math
import os
import subprocess
import sys
import textwrap
import tomllib

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from rcn.config import ConfigError, Reader, client_endpoint, parse_size, server_endpoint

ROLES = ("storage", "edge", "core", "mgmt", "wanem")
#: what a careless or hostile file puts where another type belongs
WRONG = (1.0, True, "x", "", 0, -1, 1 << 70, math.nan, math.inf, [], [1.0], ["x"], [[1]],
         [{"a": 1}], {}, {"a": 1})


def documented_example(role: str) -> dict:
    """The example in the role's config module docstring (after ``::``, the indented
    block): the documentation must be a working file."""
    module = importlib.import_module(f"rcn.{role}.config")
    lines = []
    for line in module.__doc__.split("::\n", 1)[1].splitlines():
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    return tomllib.loads(textwrap.dedent("\n".join(lines)))


def key_paths(doc, prefix=()):
    """Every key and list index of ``doc``, as paths from the top."""
    children = doc.items() if isinstance(doc, dict) else \
        enumerate(doc) if isinstance(doc, list) else ()
    for key, value in children:
        yield prefix + (key,)
        yield from key_paths(value, prefix + (key,))


def dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f"{'.' if out else ''}{p}"
    return out


def replaced(doc: dict, path, value) -> dict:
    doc = copy.deepcopy(doc)
    inner = doc
    for p in path[:-1]:
        inner = inner[p]
    inner[path[-1]] = value
    return doc


class EveryKeyTests(SynchronousTestCase):
    def test_the_documented_examples_parse(self):
        for role in ROLES:
            parse = importlib.import_module(f"rcn.{role}.config").parse_config
            parse(documented_example(role), "/base")

    def test_a_wrong_type_anywhere_is_a_config_error_naming_the_key(self):
        tried = 0
        for role in ROLES:
            parse = importlib.import_module(f"rcn.{role}.config").parse_config
            example = documented_example(role)
            for path in key_paths(example):
                original = _at(example, path)
                for value in WRONG:
                    if type(value) is type(original):
                        continue      # the right type: other checks, other keys
                    tried += 1
                    try:
                        parse(replaced(example, path, value), "/base")
                    except ConfigError as exc:
                        self.assertIn(dotted(path), str(exc), (role, path, value))
                    except Exception as exc:          # noqa: BLE001 -- the finding
                        self.fail(f"{role} {dotted(path)} = {value!r}: {type(exc).__name__}: "
                                  f"{exc}")
        self.assertGreater(tried, 2000)


class KeyTableTests(SynchronousTestCase):
    """Each role's keys are written once (its ``SCHEMA``): the documentation is printed
    from them and the lab's files are written through them."""

    def test_the_docstring_examples_are_the_key_tables(self):
        for role in ROLES:
            module = importlib.import_module(f"rcn.{role}.config")
            block = module.__doc__.split("::\n\n", 1)[1]
            self.assertTrue(block.startswith(textwrap.indent(module.SCHEMA.example(), "    ")),
                            f"rcn/{role}/config.py: its docstring example is not "
                            f"SCHEMA.example(); print that and paste it")

    def test_the_readme_examples_are_the_key_tables(self):
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
            readme = f.read()
        for role, name in (("storage", "array.toml"), ("core", "core.toml")):
            example = importlib.import_module(f"rcn.{role}.config").SCHEMA.example()
            block = readme.split(f"`{name}` (every key", 1)[1].split("```toml\n", 1)[1]
            self.assertEqual(block.split("```", 1)[0], example, name)

    def test_render_writes_what_parse_reads(self):
        for role in ROLES:
            module = importlib.import_module(f"rcn.{role}.config")
            example = documented_example(role)
            self.assertEqual(tomllib.loads(module.render(example)), example, role)

    def test_render_refuses_what_parse_would(self):
        from rcn.core.config import render
        core = {"core": {"id": "c", "listen": "127.0.0.1:47002"}}
        for doc, message in (
                ({**core, "colour": {}}, "colour: unknown key"),
                ({"core": {"id": "c", "lisen": "x"}}, "core.lisen: unknown key"),
                ({**core, "metrics": {"listen": "127.0.0.1:9100"}},
                 "metrics.listen: '127.0.0.1:9100' is HOST:PORT"),
                ({**core, "batch": {"max_bytes": 1}}, "batch.max_bytes: 1 is outside")):
            self.assertTrue(str(self.assertRaises(ConfigError, render, doc)).startswith(message),
                            doc)

    def test_tcp_addresses_are_endpoint_strings(self):
        for text in ("tcp:47100:interface=127.0.0.1", "tcp:0", r"tcp6:80:interface=\:\:1",
                     ):
            self.assertEqual(server_endpoint(text), text)
        self.assertEqual(client_endpoint("tcp:127.0.0.1:47100"), "tcp:127.0.0.1:47100")
        for check, text, words in (
                (server_endpoint, "127.0.0.1:47100",
                 'is HOST:PORT; a TCP listener is a Twisted endpoint string: write '
                 '"tcp:47100:interface=127.0.0.1"'),
                (client_endpoint, "127.0.0.1:47100",
                 'is HOST:PORT; a TCP peer is a Twisted endpoint string: write '
                 '"tcp:127.0.0.1:47100"'),
                (server_endpoint, "tcp:127.0.0.1:80", "not a TCP server endpoint"),
                (server_endpoint, "tcp:65536", "port '65536' is not a number 0..65535"),
                (server_endpoint, "tcp:80:interface=localhost", "is not an IP address"),
                (server_endpoint, "unix:/tmp/x", "not a TCP server endpoint"),
                (server_endpoint, "tcp:80:colour=red", "not a TCP server endpoint"),
                (client_endpoint, "tcp:h:0", "port '0' is not a number 1..65535"),
                (client_endpoint, "ssl:h:1", "not a client endpoint")):
            self.assertIn(words, str(self.assertRaises(ValueError, check, text)), text)


def _at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


class ReaderTests(SynchronousTestCase):
    def test_tables_items_and_sections_name_the_item(self):
        top = Reader({"volume": [1.0], "path": ["10.0.0.1:1", 5], "nbd": "x", "pair": {}},
                     "")
        cases = [(lambda: top.tables("volume"),
                  "volume[0]: expected a table ([[volume]]), got float 1.0"),
                 (lambda: top.items("path", str), "path[1]: expected str, got int 5"),
                 (lambda: top.section("nbd"), "nbd: expected dict, got str 'x'"),
                 (lambda: top.tables("pair"), "pair: expected list, got dict {}"),
                 (lambda: top.tables("missing", ...), "missing: missing")]
        for call, message in cases:
            self.assertEqual(str(self.assertRaises(ConfigError, call)), message)
        self.assertEqual(top.tables("missing"), [])
        self.assertEqual(top.items("missing", str, ()), ())

    def test_integers_are_64_bit_floats_finite_bools_no_integers(self):
        r = Reader({"big": 1 << 63, "small": -(1 << 63) - 1, "nan": math.nan, "inf": -math.inf,
                    "flag": True, "real": 1.5, "whole": 2}, "t.")
        for key, kind, words in (("big", int, "9223372036854775808 does not fit 64 bits"),
                                 ("small", int, "-9223372036854775809 does not fit 64 bits"),
                                 ("nan", float, "nan is not a finite number"),
                                 ("inf", float, "-inf is not a finite number"),
                                 ("flag", int, "expected int, got bool True"),
                                 ("real", int, "expected int, got float 1.5")):
            self.assertIn(f"t.{key}: {words}", str(self.assertRaises(ConfigError, r.get, key,
                                                                     kind)))
        self.assertEqual((r.get("whole", float), r.get("whole", (int, float))), (2.0, 2))

    def test_sizes_are_0_to_2_63_bytes(self):
        self.assertEqual(parse_size("8 TiB"), 8 << 40)
        for text in (-1, "9999999999 TiB", "1" * 5000, "\u0661\u0662KiB"):
            self.assertRaises(ValueError, parse_size, text)


#: per role: a malformed file (the base is the documented example, one key changed) and
#: what the error must say after the file name
MALFORMED = {
    "storage": [("volume", [1.0], "volume[0]: expected a table ([[volume]]), got float 1.0"),
                ("volume", {"lun": 0}, "volume: expected list, got dict"),
                ("array", "x", "array: expected dict, got str 'x'"),
                ("pair", [{"lun": 0.0}], "pair[0].lun: expected int, got float 0.0"),
                ("edge", {"partners": [1]}, "edge.partners[0]: expected str, got int 1"),
                ("edge", {"timeout": math.nan}, "edge.timeout: nan is not a finite number")],
    "edge": [("pair", [1], "pair[0]: expected a table ([[pair]]), got int 1"),
             ("edge", {"id": "e", "log": "127.0.0.1:1", "data_dir": "d", "ttl": True},
              "edge.ttl: expected int, got bool True"),
             ("route", [{"source_wwn": "500a098000000001", "target_wwn": "500a098000000002",
                         "path": [1]}], "route[0].path[0]: expected str, got int 1"),
             ("log", [], "log: expected dict, got list []")],
    "core": [("batch", {"max_bytes": 1e3}, "batch.max_bytes: expected int, got float 1000.0"),
             ("route", "x", "route: expected list, got str 'x'"),
             ("core", {"id": "c", "listen": "127.0.0.1:47002", "send_buffer": -1},
              "core.send_buffer: -1 is not a size")],
    "mgmt": [("mgmt", {"id": "m", "history": 1 << 64}, "mgmt.history: 18446744073709551616 "
                                                        "does not fit 64 bits"),
             ("console", {"serial": "pty", "speed": 7}, "console.speed: 7 is not one of 1200")],
    "wanem": [("link", [[1]], "link[0]: expected a table ([[link]]), got list [1]"),
              ("link", [{"a": "127.0.0.1:1", "b": "127.0.0.1:2", "delay_ms": math.inf}],
               "link[0].delay_ms: inf is not a finite number"),
              ("wanem", {"id": ["w"]}, "wanem.id: expected str, got list ['w']")],
}


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)                 # TOML spells them nan, inf, -inf too
    return repr(value)


def malformed_file(testcase, role: str, key: str, value) -> str:
    """The documented example with top-level ``key`` replaced, written as TOML."""
    doc = dict(documented_example(role))
    doc.pop(key, None)
    lines = [f"{key} = {toml_value(value)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in doc.items()]
    path = os.path.abspath(testcase.mktemp() + ".toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class LoaderAndTapTests(SynchronousTestCase):
    def test_malformed_files_of_every_role_are_file_key_reason_at_the_tap(self):
        for role, cases in MALFORMED.items():
            options_class = importlib.import_module(f"rcn.{role}.tap").Options
            load = importlib.import_module(f"rcn.{role}.config").load_config
            for key, value, message in cases:
                path = malformed_file(self, role, key, value)
                self.assertTrue(str(self.assertRaises(ConfigError, load, path))
                                .startswith(f"{path}: {message}"), (role, key, value))
                exc = self.assertRaises(usage.UsageError, options_class().parseOptions,
                                        ["--config", path])
                self.assertTrue(str(exc).startswith(f"{path}: {message}"), str(exc))

    def test_a_file_that_is_not_utf8_is_a_config_error(self):
        path = os.path.abspath(self.mktemp() + ".toml")
        with open(path, "wb") as f:
            f.write(b"e]\xe9id0=")               # the fuzzer's input (config-* regressions)
        for role in MALFORMED:
            load = importlib.import_module(f"rcn.{role}.config").load_config
            self.assertEqual(str(self.assertRaises(ConfigError, load, path)),
                             f"{path}: not UTF-8 text: byte 0xe9 at offset 2")

    def test_twistd_prints_file_key_reason_and_exits_1(self):
        """The issue's file, through the installed twistd plugin (``make venv`` first)."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        path = malformed_file(self, "storage", "volume", [1.0])
        result = subprocess.run([twistd, "-n", "--pidfile=", "rcn-storage", "--config", path],
                                capture_output=True, text=True, timeout=120,
                                cwd=os.path.dirname(path))
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn(f"{path}: volume[0]: expected a table ([[volume]]), got float 1.0", output)
        self.assertNotIn("Traceback", output)
