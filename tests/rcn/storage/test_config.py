"""The storage emulator's TOML configuration and pair table."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from rcn import pairstate
from rcn.storage.config import ConfigError, load_config, parse_config, parse_size
from rcn.storage.pairs import PairState, PairTable

FULL = """
[array]
wwpn = "50:0a:09:80:00:00:00:01"
data_dir = "vols"

[nbd]
listen = "tcp:10900:interface=127.0.0.1"

[control]
listen = "tcp:0:interface=127.0.0.1"

[edge]
connect = "tcp:127.0.0.1:3225"
timeout = 5

[[volume]]
lun = 0
capacity = "64MiB"

[[volume]]
lun = 3
name = "db"
capacity = 1048576

[[pair]]
lun = 3
partner_wwpn = "500a098000000002"
partner_lun = 1
group = 7
mode = "async"
queue_limit = 16
"""


class ConfigTests(TestCase):
    def write(self, text: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "array.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_full_file(self):
        path = self.write(FULL)
        config = load_config(path)
        self.assertEqual(config.wwpn, 0x500A098000000001)
        self.assertEqual(config.wwnn, 0x500A098000000000)
        self.assertEqual(config.data_dir, os.path.join(os.path.dirname(os.path.abspath(path)), "vols"))
        self.assertEqual(config.nbd, "tcp:10900:interface=127.0.0.1")
        self.assertEqual(config.edge.timeout, 5.0)
        self.assertEqual([(v.lun, v.name, v.capacity) for v in config.volumes],
                         [(0, "lun0", 64 << 20), (3, "db", 1 << 20)])
        pair = config.pairs[0]
        self.assertEqual((pair.lun, pair.partner_wwpn, pair.partner_lun, pair.group, pair.state,
                          pair.mode, pair.queue_limit),
                         (3, 0x500A098000000002, 1, 7, "duplex", "async", 16))

    def test_defaults(self):
        config = parse_config({"array": {"wwpn": "50:0a:09:80:00:00:00:01"},
                               "volume": [{"lun": 1, "capacity": "1MiB"}]})
        self.assertEqual((config.nbd, config.control, config.edge),
                         ("tcp:10809:interface=127.0.0.1", "tcp:47200:interface=127.0.0.1", None))
        self.assertEqual(config.pairs, ())

    def assertConfigError(self, doc: dict, fragment: str):
        exc = self.assertRaises(ConfigError, parse_config, doc)
        self.assertIn(fragment, str(exc))

    def test_errors_name_the_key(self):
        base = {"array": {"wwpn": "50:0a:09:80:00:00:00:01"},
                "volume": [{"lun": 0, "capacity": "1MiB"}]}
        self.assertConfigError({"volume": base["volume"]}, "array: missing")
        self.assertConfigError(dict(base, array={"wwpn": "nope"}), "array.wwpn: not a WWN")
        self.assertConfigError(dict(base, volume=[{"lun": 0, "capacity": "1000"}]),
                               "volume[0].capacity: 1000 bytes is not a positive multiple of 512")
        self.assertConfigError(dict(base, volume=[{"lun": 0, "capacity": "1MiB"},
                                                  {"lun": 0, "capacity": "1MiB"}]),
                               "volume: lun 0 appears twice")
        self.assertConfigError(dict(base, nbd={"listen": "tcp:70000"}),
                               "nbd.listen: port '70000' is not a number 0..65535")
        self.assertConfigError(dict(base, nbd={"listen": "127.0.0.1:10809"}),
                               'nbd.listen: \'127.0.0.1:10809\' is HOST:PORT; a TCP listener is a '
                               'Twisted endpoint string: write "tcp:10809:interface=127.0.0.1"')
        self.assertConfigError(dict(base, edge={"connect": "127.0.0.1:3225"}),
                               'edge.connect: \'127.0.0.1:3225\' is HOST:PORT; a TCP peer is a '
                               'Twisted endpoint string: write "tcp:127.0.0.1:3225"')
        self.assertConfigError(dict(base, edge={"host": "127.0.0.1"}), "edge.host: unknown key")
        self.assertConfigError(dict(base, nbd={"prot": 1}), "nbd.prot: unknown key")
        self.assertConfigError(dict(base, pair=[{"lun": 5, "partner_wwpn": "500a098000000002",
                                                 "partner_lun": 0, "group": 1}]),
                               "pair[0].lun: no volume has LUN 5")
        self.assertConfigError(dict(base, pair=[{"lun": 0, "partner_wwpn": "500a098000000002",
                                                 "partner_lun": 0, "group": 1}]),
                               "edge: pairs need an [edge]")
        self.assertConfigError(dict(base, volume=[{"lun": "0", "capacity": "1MiB"}]),
                               "volume[0].lun: expected int, got str")

    def test_file_errors_name_the_file(self):
        path = self.write("[array\n")
        self.assertIn(f"{path}: not valid TOML", str(self.assertRaises(ConfigError, load_config, path)))
        missing = os.path.join(self.mktemp(), "none.toml")
        self.assertIn(missing, str(self.assertRaises(ConfigError, load_config, missing)))

    def test_sizes(self):
        self.assertEqual([parse_size(x) for x in (512, "4KiB", "1 GiB", "2TiB", "7")],
                         [512, 4096, 1 << 30, 2 << 40, 7])
        self.assertRaises(ValueError, parse_size, "1GB")


class PairTableTests(TestCase):
    def test_from_config(self):
        config = parse_config({"array": {"wwpn": "50:0a:09:80:00:00:00:01", "track_size": "128KiB"},
                               "edge": {},
                               "volume": [{"lun": 0, "capacity": "1MiB"},
                                          {"lun": 1, "capacity": "1MiB"},
                                          {"lun": 2, "capacity": "2MiB"}],
                               "pair": [{"lun": 1, "partner_wwpn": "500a098000000002",
                                         "partner_lun": 4, "group": 9, "state": "suspend"},
                                        {"lun": 2, "partner_wwpn": "500a098000000003",
                                         "partner_lun": 0, "group": 9, "role": "target",
                                         "state": "failure-suspend", "track_size": 4096}]})
        table = PairTable.from_config(config.pairs, {v.lun: v.capacity for v in config.volumes},
                                      config.track_size)
        self.assertIsNone(table.for_lun(0))
        pair = table.for_lun(1)
        self.assertEqual((pair.state, pair.replicating, pair.track_size, pair.capacity),
                         (PairState.SUSPEND, False, 128 << 10, 1 << 20))
        target = table.for_lun(2)
        self.assertEqual((target.role, target.state, target.track_size, target.bitmap.track_count),
                         ("target", PairState.FAILURE_SUSPEND, 4096, 512))
        self.assertEqual(table.partners(), {0x500A098000000002, 0x500A098000000003})
        self.assertEqual(pair.as_dict()["partner_wwpn"], "50:0a:09:80:00:00:00:02")
        self.assertRaises(ValueError, table.add, pair)

    def test_pair_state_is_the_shared_one(self):
        self.assertIs(PairState, pairstate.PairState)


class NewKeyTests(TestCase):
    BASE = {"array": {"wwpn": "50:0a:09:80:00:00:00:01"},
            "volume": [{"lun": 0, "capacity": "1MiB"}]}

    def test_edge_partners_and_track_size(self):
        config = parse_config(dict(self.BASE, edge={"partners": ["50:0a:09:80:00:00:00:02",
                                                                 "500a098000000003"]}))
        self.assertEqual(config.edge.partners, (0x500A098000000002, 0x500A098000000003))
        self.assertEqual(config.track_size, 65536)

    def test_errors_name_the_key(self):
        for doc, fragment in (
                (dict(self.BASE, edge={"partners": ["nope"]}), "edge.partners[0]: not a WWN"),
                (dict(self.BASE, edge={"partners": "50:0a:09:80:00:00:00:02"}),
                 "edge.partners: expected list"),
                (dict(self.BASE, array={"wwpn": "50:0a:09:80:00:00:00:01", "track_size": 1000}),
                 "array.track_size: 1000 bytes is not a power of two"),
                (dict(self.BASE, edge={}, pair=[{"lun": 0, "partner_wwpn": "500a098000000002",
                                                 "partner_lun": 0, "group": 1,
                                                 "state": "initial-copying"}]),
                 "pair[0].state: 'initial-copying' is not one of"),
                (dict(self.BASE, edge={}, pair=[{"lun": 0, "partner_wwpn": "500a098000000002",
                                                 "partner_lun": 0, "group": 1,
                                                 "track_size": "256"}]),
                 "pair[0].track_size: 256 bytes")):
            exc = self.assertRaises(ConfigError, parse_config, doc)
            self.assertIn(fragment, str(exc))
