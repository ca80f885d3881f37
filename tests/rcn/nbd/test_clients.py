"""Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against our server on 127.0.0.1:0.

The server listens in the test's reactor; the clients run as child processes
through ``getProcessOutputAndValue``. Each test checks the volume file on disk
as well as what the client saw.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.server import NbdServerFactory
from rcn.storage.volume import Volume
from tests.support import require_tool, wait_connections_closed

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


class ClientTestCase(TestCase):
    timeout = 60

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.disk = self.volume("disk.img", 16 * MiB)
        self.spare = self.volume("spare.img", 4 * MiB, lun=1)
        self.table = ExportTable([VolumeExport(self.disk, "disk", "the test disk"),
                                  VolumeExport(self.spare, "spare")], default="disk")
        self.factory = NbdServerFactory(self.table, reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"nbd://127.0.0.1:{self.port.getHost().port}"

    def volume(self, name: str, capacity: int, lun: int = 0) -> Volume:
        volume = Volume(os.path.join(self.dir, name), lun, capacity)
        self.addCleanup(volume.close)
        return volume

    def file_bytes(self, volume: Volume, offset: int, length: int) -> bytes:
        with open(volume.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    @defer.inlineCallbacks
    def client(self, tool: str, *args: str, ok: bool = True):
        path = require_tool(self, tool)
        out, err, code = yield getProcessOutputAndValue(path, args, env=dict(os.environ),
                                                        reactor=reactor)
        if ok and code != 0:
            self.fail(f"{tool} {' '.join(args)} exited {code}: {err.decode(errors='replace')}"
                      f"{out.decode(errors='replace')}")
        return out.decode(), err.decode(), code

    def tearDown(self):
        # Every connection the clients opened must be gone when they exit.
        self.assertEqual(self.factory.counters["protocol_errors"], 0)
        return wait_connections_closed(self.factory)



class QemuTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_qemu_io_write_read_pattern(self):
        out, _, _ = yield self.client("qemu-io", "-f", "raw", f"{self.url}/disk",
                                   "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k",
                                   "-c", "write -P 0xcd -f 1m 4k", "-c", "flush")
        self.assertIn("wrote 65536/65536 bytes at offset 0", out)
        self.assertIn("read 65536/65536 bytes at offset 0", out)
        self.assertNotIn("Pattern verification failed", out)
        self.assertEqual(self.file_bytes(self.disk, 0, 65536), b"\xab" * 65536)
        self.assertEqual(self.file_bytes(self.disk, MiB, 4096), b"\xcd" * 4096)
        counters = self.factory.counters
        self.assertGreaterEqual(counters["bytes_written"], 65536 + 4096)
        self.assertGreaterEqual(counters["bytes_read"], 65536)
        self.assertGreaterEqual(counters["requests_flush"], 1)
        self.assertEqual(counters["errors"], 0)

    @defer.inlineCallbacks
    def test_qemu_io_unaligned_zero_discard(self):
        self.disk.write(0, b"\x11" * (256 * 1024))
        out, _, _ = yield self.client(
            "qemu-io", "-f", "raw", f"{self.url}/disk",
            "-c", "write -P 0x22 1000 333",      # not sector aligned
            "-c", "read -P 0x22 1000 333",
            "-c", "write -z 64k 64k",            # WRITE_ZEROES
            "-c", "discard 128k 64k",            # TRIM
            "-c", "read -P 0 64k 128k",
            "-c", "read -P 0x11 192k 64k")
        self.assertNotIn("failed", out)
        data = self.file_bytes(self.disk, 0, 256 * 1024)
        self.assertEqual(data[:1000], b"\x11" * 1000)
        self.assertEqual(data[1000:1333], b"\x22" * 333)
        self.assertEqual(data[1333:65536], b"\x11" * (65536 - 1333))
        self.assertEqual(data[65536:196608], bytes(131072))
        self.assertGreaterEqual(self.factory.counters["requests_write_zeroes"]
                                + self.factory.counters["requests_trim"], 2)

    @defer.inlineCallbacks
    def test_qemu_io_out_of_range_is_an_error_not_a_crash(self):
        out, err, code = yield self.client("qemu-io", "-f", "raw", f"{self.url}/spare",
                                        "-c", "write -P 1 4m 4k", ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("write failed", out + err)
        # The server is still up and serving.
        yield self.client("qemu-io", "-f", "raw", f"{self.url}/spare", "-c", "write -P 7 0 4k")
        self.assertEqual(self.file_bytes(self.spare, 0, 4096), b"\x07" * 4096)

    @defer.inlineCallbacks
    def test_qemu_img_info(self):
        out, _, _ = yield self.client("qemu-img", "info", "--output=json", f"{self.url}/disk")
        info = json.loads(out)
        self.assertEqual(info["virtual-size"], 16 * MiB)
        self.assertEqual(info["format"], "raw")
        out, _, _ = yield self.client("qemu-img", "info", "--output=json", self.url)
        self.assertEqual(json.loads(out)["virtual-size"], 16 * MiB)  # the default export

    @defer.inlineCallbacks
    def test_several_clients_at_once(self):
        runs = [self.client("qemu-io", "-f", "raw", f"{self.url}/disk",
                         "-c", f"write -P {0x40 + i} {i}m 256k",
                         "-c", f"read -P {0x40 + i} {i}m 256k") for i in range(4)]
        runs.append(self.client("qemu-io", "-f", "raw", f"{self.url}/spare",
                             "-c", "write -P 0x99 0 1m"))
        results = yield defer.gatherResults(runs, consumeErrors=True)
        for out, _, _ in results:
            self.assertNotIn("failed", out)
        for i in range(4):
            self.assertEqual(self.file_bytes(self.disk, i * MiB, 256 * 1024),
                             bytes([0x40 + i]) * (256 * 1024))
        self.assertEqual(self.file_bytes(self.spare, 0, MiB), b"\x99" * MiB)
        self.assertGreaterEqual(self.factory.counters["connections"], 5)


class LibnbdTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_nbdinfo(self):
        out, _, _ = yield self.client("nbdinfo", "--json", f"{self.url}/disk")
        info = json.loads(out)
        export = info["exports"][0]
        self.assertEqual(export["export-size"], 16 * MiB)
        self.assertEqual(export["description"], "the test disk")
        self.assertEqual(export["block_size_minimum"], 1)
        self.assertEqual(export["block_size_preferred"], 4096)
        self.assertEqual(export["block_size_maximum"], 32 * MiB)
        for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
            self.assertTrue(export[flag], flag)
        self.assertFalse(export["is_read_only"])
        out, _, _ = yield self.client("nbdinfo", "--list", "--json", self.url)
        names = [e["export-name"] for e in json.loads(out)["exports"]]
        self.assertEqual(names, ["disk", "spare"])

    @defer.inlineCallbacks
    def test_nbdinfo_unknown_export(self):
        out, err, code = yield self.client("nbdinfo", f"{self.url}/nope", ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("export: nope", err)
        self.assertGreaterEqual(self.factory.counters["option_errors"], 1)

    @defer.inlineCallbacks
    def test_nbdcopy_in_and_out(self):
        size = 3 * MiB + 4096
        pattern = bytes((i * 7 + (i >> 12)) & 0xFF for i in range(size))
        src = os.path.join(self.dir, "src.bin")
        back = os.path.join(self.dir, "back.bin")
        with open(src, "wb") as f:
            f.write(pattern)
        yield self.client("nbdcopy", "--request-size=65536", "--requests=16", "--flush",
                       src, f"{self.url}/disk")
        self.assertEqual(self.file_bytes(self.disk, 0, size), pattern)
        yield self.client("nbdcopy", f"{self.url}/disk", back)
        with open(back, "rb") as f:
            copied = f.read()
        self.assertEqual(len(copied), 16 * MiB)
        self.assertEqual(copied[:size], pattern)
        self.assertEqual(copied[size:], bytes(16 * MiB - size))


class RunnerTests(TestCase):
    """``python -m rcn.storage.nbdserve`` as a real process."""

    timeout = 60

    @defer.inlineCallbacks
    def test_help(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rcn.storage.nbdserve", "--help"], env=_env(), path=ROOT,
            reactor=reactor)
        self.assertEqual(code, 0, err)
        for option in (b"--export", b"--port", b"--host", b"NAME=PATH:SIZE"):
            self.assertIn(option, out)

    @defer.inlineCallbacks
    def test_bad_export_spec(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rcn.storage.nbdserve", "--export", "disk=/tmp/x.img:1000"],
            env=_env(), path=ROOT, reactor=reactor)
        self.assertEqual(code, 2)
        self.assertIn(b"not a multiple of the block size", err)

    @defer.inlineCallbacks
    def test_serves_qemu_io(self):
        qemu_io = require_tool(self, "qemu-io")
        dirname = os.path.abspath(self.mktemp())
        os.makedirs(dirname)
        image = os.path.join(dirname, "run.img")
        server = _Server()
        reactor.spawnProcess(server, sys.executable,
                             [sys.executable, "-m", "rcn.storage.nbdserve", "--export",
                              f"run={image}:8M", "--port", "0"], env=_env(), path=ROOT)
        self.addCleanup(server.stop)
        port = yield server.listening
        out, err, code = yield getProcessOutputAndValue(
            qemu_io, ["-f", "raw", f"nbd://127.0.0.1:{port}/run", "-c", "write -P 0x5c 0 64k"],
            reactor=reactor)
        self.assertEqual(code, 0, err)
        self.assertEqual(os.path.getsize(image), 8 * MiB)
        with open(image, "rb") as f:
            self.assertEqual(f.read(65536), b"\x5c" * 65536)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class _Server(ProcessProtocol):
    """Waits for 'listening on HOST:PORT' and stops the process at cleanup."""

    def __init__(self):
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data):
        self.out += data
        if not self.listening.called and b"\n" in self.out:
            line = self.out.split(b"\n", 1)[0].decode()
            if line.startswith("listening on "):
                self.listening.callback(int(line.rsplit(":", 1)[1]))

    def errReceived(self, data):
        self.err = (self.err + data)[-10000:]

    def processEnded(self, reason):
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"server exited: {self.err.decode()}"))
        self.ended.callback(None)

    def stop(self):
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended
