"""`twistd rcn-storage` as a real process: NBD host writes replicate through a real FCIP link.

The edge is a test double in this process: a FabricPort whose virtual
storage records the RIOs it receives and answers GOOD. The array is the real
daemon; qemu-io and nbdcopy write through its NBD export, `rcn array` reads its state
and runs a pair-create whose initial copy crosses the FCIP link.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from rcn.rio.fabric import FabricConfig, VirtualStorageEntry
from rcn.rio.fcp import ScsiResult, ScsiTarget
from rcn.rio.protocol import FcipServerFactory
from tests.support import CollectOutput, free_port, require_tool

ARRAY_WWN = 0x500A098000000001
PARTNER_WWN = 0x500A098000000002
BIN = os.path.dirname(sys.executable)


class RecordingTarget(ScsiTarget):
    def __init__(self):
        self.writes = []
        self.controls = []

    def execute(self, command):
        if command.parsed["opcode_name"] == "RCN_CONTROL":
            self.controls.append((command.lun, command.parsed["service_action_name"],
                                  command.parsed["source_lun"], command.data))
        else:
            self.writes.append((command.lun, command.parsed["lba"], command.data))
        return ScsiResult()


class EmulatorTests(TestCase):
    timeout = 90

    def setUp(self):
        self.qemu_io = require_tool(self, "qemu-io")
        self.edge_target = RecordingTarget()
        self.virtual = []

        def attach(vs):
            vs.target = self.edge_target
            self.virtual.append(vs)
        config = FabricConfig(virtual_storages=[VirtualStorageEntry(wwn=PARTNER_WWN,
                                                                    partner_wwn=PARTNER_WWN)],
                              access=lambda array, virtual: True, attach=attach)
        self.edge = FcipServerFactory(reactor, config)
        self.edge_port = reactor.listenTCP(0, self.edge, interface="127.0.0.1")
        self.addCleanup(self.edge_port.stopListening)
        self.nbd_port, self.control_port = free_port(), free_port()
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "array.toml")
        with open(self.config, "w") as f:
            f.write(f"""
[array]
wwpn = "50:0a:09:80:00:00:00:01"
data_dir = "vols"
[nbd]
listen = "tcp:{self.nbd_port}:interface=127.0.0.1"
[control]
listen = "tcp:{self.control_port}:interface=127.0.0.1"
[edge]
connect = "tcp:127.0.0.1:{self.edge_port.getHost().port}"
timeout = 10
[[volume]]
lun = 0
name = "vol0"
capacity = "4MiB"
[[volume]]
lun = 1
name = "vol1"
capacity = "4MiB"
[[volume]]
lun = 2
name = "vol2"
capacity = "4MiB"
[[pair]]
lun = 0
partner_wwpn = "50:0a:09:80:00:00:00:02"
partner_lun = 5
group = 7
[[pair]]
lun = 1
role = "target"
partner_wwpn = "50:0a:09:80:00:00:00:02"
partner_lun = 3
group = 7
""")
        self.daemon = CollectOutput()
        self.process = reactor.spawnProcess(
            self.daemon, os.path.join(BIN, "twistd"),
            ["twistd", "-n", "--pidfile=", "--logfile=-", "rcn-storage", "--config", self.config],
            env=dict(os.environ), path=self.dir)
        self.addCleanup(self._stop)
        return self._until_logged_in()

    def _until_logged_in(self):
        """The array's PRLI is its last start-up step: by then NBD and control are serving."""
        def check():
            if self.virtual and self.virtual[0].array_logged_in:
                poll.stop()
            elif self.daemon.ended.called:
                raise RuntimeError(f"rcn-storage exited: {self.daemon.ended.result}")
        poll = task.LoopingCall(check)
        return poll.start(0.05)

    def _stop(self):
        if self.daemon.ended.called:
            return None
        self.process.signalProcess("TERM")
        return self.daemon.ended

    def _volume(self, name: str) -> bytes:
        with open(os.path.join(self.dir, "vols", f"{name}.img"), "rb") as f:
            return f.read()

    @defer.inlineCallbacks
    def test_host_write_replicates_and_lands_on_disk(self):
        url = f"nbd://127.0.0.1:{self.nbd_port}/vol0"
        out, err, code = yield getProcessOutputAndValue(
            self.qemu_io, ["-f", "raw", url, "-c", "write -P 0xab 4096 65536",
                           "-c", "read -P 0xab 4096 65536"], env=dict(os.environ))
        self.assertEqual(code, 0, (out + err).decode())
        self.assertNotIn(b"Pattern verification failed", out)
        self.assertEqual(self._volume("vol0")[4096:4096 + 65536], b"\xab" * 65536)
        written = b"".join(data for lun, lba, data in sorted(self.edge_target.writes))
        self.assertEqual({lun for lun, _, _ in self.edge_target.writes}, {5})
        self.assertEqual(min(lba for _, lba, _ in self.edge_target.writes), 8)
        self.assertEqual(written, b"\xab" * 65536)

    @defer.inlineCallbacks
    def test_nbdcopy_in_and_out_replicates(self):
        nbdcopy = require_tool(self, "nbdcopy")
        size = 1 << 20
        pattern = bytes((i * 13 + (i >> 9)) & 0xFF for i in range(size))
        src, back = os.path.join(self.dir, "src.bin"), os.path.join(self.dir, "back.bin")
        with open(src, "wb") as f:
            f.write(pattern)
        url = f"nbd://127.0.0.1:{self.nbd_port}/vol0"
        for args in (["--request-size=65536", "--flush", src, url], [url, back]):
            out, err, code = yield getProcessOutputAndValue(nbdcopy, args, env=dict(os.environ))
            self.assertEqual(code, 0, (out + err).decode())
        self.assertEqual(self._volume("vol0")[:size], pattern)
        with open(back, "rb") as f:
            self.assertEqual(f.read(size), pattern)
        replica = bytearray(size)
        for lun, lba, data in self.edge_target.writes:
            self.assertEqual(lun, 5)
            replica[lba * 512:lba * 512 + len(data)] = data
        self.assertEqual(bytes(replica), pattern)

    @defer.inlineCallbacks
    def test_edge_rio_write_applied_to_array_volume(self):
        result = yield self.virtual[0].send_write(1, 16, b"\x5a" * 8192)
        self.assertTrue(result.good)
        self.assertEqual(self._volume("vol1")[16 * 512:16 * 512 + 8192], b"\x5a" * 8192)

    @defer.inlineCallbacks
    def test_pair_create_copies_over_fcip_then_duplex(self):
        url = f"nbd://127.0.0.1:{self.nbd_port}/vol2"
        out, err, code = yield getProcessOutputAndValue(
            self.qemu_io, ["-f", "raw", url, "-c", "write -P 0x3c 1048576 131072"],
            env=dict(os.environ))
        self.assertEqual(code, 0, (out + err).decode())
        self.assertEqual(self.edge_target.writes, [])            # LUN 2 is in no pair yet
        out, err, code = yield getProcessOutputAndValue(
            os.path.join(BIN, "rcn"), ["array", "pair-create", "2", "--partner",
                                       "50:0a:09:80:00:00:00:02", "--partner-lun", "7", "--wait",
                                       "--interval", "0.05", "--url",
                                       f"http://127.0.0.1:{self.control_port}"],
            env=dict(os.environ))
        self.assertEqual(code, 0, (out + err).decode())
        self.assertIn(b": duplex", out)
        self.assertEqual([c[:3] for c in self.edge_target.controls],
                         [(7, "PAIR_CREATE", 2), (7, "DUPLEX", 2)])
        self.assertEqual(fcp.parse_pair_params(self.edge_target.controls[0][3])["capacity"],
                         4 << 20)
        copied = sorted((lba, data) for lun, lba, data in self.edge_target.writes if lun == 7)
        self.assertEqual(b"".join(data for _, data in copied), b"\x3c" * 131072)
        self.assertEqual(copied[0][0], 2048)

    @defer.inlineCallbacks
    def test_rcn_array_shows_the_pair(self):
        out, err, code = yield getProcessOutputAndValue(
            os.path.join(BIN, "rcn"), ["array", "pairs", "--json", "--url",
                                       f"http://127.0.0.1:{self.control_port}"], env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        pair = json.loads(out)["pairs"][0]
        self.assertEqual((pair["lun"], pair["partner_lun"], pair["state"], pair["group"]),
                         (0, 5, "duplex", 7))
        out, err, code = yield getProcessOutputAndValue(
            os.path.join(BIN, "rcn"), ["array", "status", "--json", "--url",
                                       f"http://127.0.0.1:{self.control_port}"], env=dict(os.environ))
        self.assertEqual(json.loads(out)["edge_link"], "up")
