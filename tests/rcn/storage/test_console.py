"""The array emulator's console: show version|volumes|pairs|status over a real StorageArray."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.trial.unittest import TestCase

from rcn.storage.config import parse_config
from rcn.storage.console import array_console
from rcn.storage.service import StorageArray


class ArrayConsoleTests(TestCase):
    def test_show_commands(self):
        config = parse_config({"array": {"wwpn": "50:0a:09:80:00:00:00:01",
                                         "data_dir": os.path.abspath(self.mktemp())},
                               "volume": [{"lun": 0, "capacity": "1MiB"}],
                               "pair": [{"lun": 0, "role": "source",
                                         "partner_wwpn": "50:0a:09:80:00:00:00:02",
                                         "partner_lun": 3, "group": 7, "state": "duplex"}],
                               "edge": {"connect": "tcp:127.0.0.1:3225"},
                               "console": {"tcp": "tcp:2302:interface=127.0.0.1"}})
        self.assertEqual(config.console.tcp, "tcp:2302:interface=127.0.0.1")
        array = StorageArray(config, task.Clock())
        self.addCleanup(array.close)
        tree = array_console(array)
        self.assertIn("array 50:0a:09:80:00:00:00:01", tree.run("sh ver"))
        volumes = tree.run("show volumes").splitlines()
        self.assertEqual(volumes[0].split()[:4], ["lun", "name", "capacity", "block"])
        self.assertEqual(volumes[1].split()[:3], ["0", "lun0", "1048576"])
        pairs = tree.run("show pairs").splitlines()[1].split()
        self.assertEqual(pairs[:4], ["0", "source", "duplex", "50:0a:09:80:00:00:00:02"])
        self.assertIn("edge_link", tree.run("show status"))
