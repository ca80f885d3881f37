"""Applying to an NBD server: one request at a time, reconnects, real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from rcn.edge.nbdapply import NbdApplyTarget
from rcn.logxfer.rioarea import parse_command_area, command_area
from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.server import NbdServerFactory
from rcn.rio.fcp import ScsiStatus, build_write16_cdb
from rcn.storage.volume import Volume
from tests.support import require_tool

MiB = 1 << 20


def write(lba: int, data: bytes):
    return parse_command_area(command_area(1, 2, 3, 0, build_write16_cdb(lba, len(data) // 512),
                                           data))


def read(lba: int, blocks: int):
    return parse_command_area(command_area(1, 2, 3, 0, fcp.build_read16(lba, blocks),
                                           data_in_length=blocks * 512))


class FakeClient:
    def __init__(self):
        self.calls: list[tuple[str, int, Deferred]] = []
        self.closed = Deferred()

    def write(self, offset, data, fua=False):
        d = Deferred()
        self.calls.append(("write", offset, d))
        return d

    def read(self, offset, length):
        d = Deferred()
        self.calls.append(("read", offset, d))
        return d


class OrderTests(TestCase):
    def setUp(self):
        self.clients: list[FakeClient] = []

        def connect(reactor_, url, timeout):
            self.clients.append(FakeClient())
            return succeed(self.clients[-1])
        self.target = NbdApplyTarget(reactor, "nbd://127.0.0.1:1/x", connect=connect)

    def test_one_request_at_a_time_in_order(self):
        results = [self.target.execute(write(lba, bytes(512)), 0) for lba in (1, 2, 3)]
        calls = self.clients[0].calls
        self.assertEqual([c[1] for c in calls], [512])
        calls[0][2].callback(None)
        self.assertEqual([c[1] for c in calls], [512, 1024])
        calls[1][2].callback(None)
        calls[2][2].callback(None)
        self.assertTrue(all(r.result.good for r in results))

    def test_lost_connection_is_made_again(self):
        first = self.target.execute(write(1, bytes(512)), 0)
        self.clients[0].calls[0][2].callback(None)
        self.clients[0].closed.callback(None)
        self.target.execute(write(2, bytes(512)), 0)
        self.assertEqual(len(self.clients), 2)
        self.assertEqual(self.target.counters["connects"], 2)
        self.assertTrue(first.result.good)

    def test_failure_reaches_the_caller_and_the_next_request_still_runs(self):
        first = self.target.execute(write(1, bytes(512)), 0)
        second = self.target.execute(write(2, bytes(512)), 0)
        self.clients[0].calls[0][2].errback(OSError("EIO"))
        self.failureResultOf(first, OSError)
        self.assertEqual(len(self.clients[0].calls), 2)
        self.clients[0].calls[1][2].callback(None)
        self.assertTrue(self.successResultOf(second).good)
        self.assertEqual(self.target.counters["errors"], 1)

    def test_other_commands_are_refused(self):
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, 7, 0, 0)
        command = parse_command_area(command_area(1, 2, 3, 0, cdb))
        result = self.successResultOf(self.target.execute(command, 0))
        self.assertEqual(result.status, ScsiStatus.CHECK_CONDITION)
        self.assertEqual(self.clients, [])


class RealServerTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def check_server(self, url: str, path: str):
        target = NbdApplyTarget(reactor, url)
        self.addCleanup(target.close)
        pattern = bytes(range(256)) * 32                   # 8 KiB
        results = yield defer.gatherResults([target.execute(write(8, pattern), 0),
                                             target.execute(write(100, pattern[:512]), 0)])
        self.assertTrue(all(r.good for r in results))
        answer = yield target.execute(read(8, 16), 0)
        self.assertEqual(answer.data_in, pattern)
        with open(path, "rb") as f:
            f.seek(8 * 512)
            self.assertEqual(f.read(len(pattern)), pattern)

    def test_our_nbd_server(self):
        path = os.path.abspath(self.mktemp())
        volume = Volume(path, 0, 4 * MiB)
        self.addCleanup(volume.close)
        factory = NbdServerFactory(ExportTable([VolumeExport(volume, "disk")]), reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return self.check_server(f"nbd://127.0.0.1:{port.getHost().port}/disk", path)

    def test_qemu_nbd(self):
        qemu_nbd = require_tool(self, "qemu-nbd")
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.truncate(4 * MiB)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pid_file = path + ".pid"
        # --fork returns once the socket listens: no race with the first connection
        subprocess.run([qemu_nbd, "-f", "raw", "-x", "disk", "-b", "127.0.0.1", "-p", str(port),
                        "--persistent", "--fork", f"--pid-file={pid_file}", path], check=True,
                       timeout=30)
        with open(pid_file) as f:
            pid = int(f.read())
        self.addCleanup(os.kill, pid, signal.SIGTERM)
        return self.check_server(f"nbd://127.0.0.1:{port}/disk", path)
