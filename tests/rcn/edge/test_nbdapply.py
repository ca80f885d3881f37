"""Applying to an NBD server: one request at a time, reconnects, real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from rcn.edge.nbdapply import NbdApplyTarget
from rcn.logxfer.rioarea import parse_command_area, command_area
from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.server import NbdServerFactory
from rcn.rio.fcp import ScsiStatus, build_write16_cdb
from rcn.storage.volume import Volume
from rcn.logxfer.seal import GroupSeal, HopSeal
from tests.support import require_tool, seal_with

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


class EdgeAppliesToNbdTargetTests(TestCase):
    """``[[nbd_target]]`` in a real edge's configuration: entries for that LUN go to the
    NBD server, through real UDP from a source edge in this process."""

    timeout = 60

    @defer.inlineCallbacks
    def test_writes_through_the_rcn_land_in_the_nbd_servers_file(self):
        from rcn.edge.applystate import ApplyState
        from rcn.edge.config import parse_config
        from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
        from rcn.edge.logstore import LogStore
        from rcn.edge.service import Edge
        from rcn.logxfer.protocol import LogTransferProtocol, listen
        from rcn.logxfer.routes import Address, Route, RouteTable

        path = os.path.abspath(self.mktemp())
        volume = Volume(path, 0, 4 * MiB)
        self.addCleanup(volume.close)
        server = reactor.listenTCP(0, NbdServerFactory(ExportTable([VolumeExport(volume, "b")]),
                                                       reactor), interface="127.0.0.1")
        self.addCleanup(server.stopListening)
        ports = []
        for _ in range(2):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        a, b = (f"127.0.0.1:{p}" for p in ports)
        source_wwn, target_wwn = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:03"
        doc = {
            "edge": {"id": "edgeB", "log": b, "data_dir": os.path.abspath(self.mktemp())},
            "route": [{"source_wwn": source_wwn, "target_wwn": target_wwn, "path": [a, b]}],
            "nbd_target": [{"target_wwn": target_wwn, "target_lun": 0,
                            "url": f"nbd://127.0.0.1:{server.getHost().port}/b"}]}
        ring = seal_with(self, doc, links=[(Address.parse(a), Address.parse(b))], groups=[9])
        config = parse_config(doc)
        edge_b = Edge(config, reactor)
        edge_b.start()
        self.addCleanup(edge_b.close)
        port_b = listen(reactor, edge_b.udp, config.log)
        self.addCleanup(port_b.stopListening)

        pair = PairEntry(0x500A098000000001, 0, 0x500A098000000003, 0, 9)
        routes = RouteTable([Route(pair.source_wwn, pair.target_wwn,
                                   (Address.parse(a), Address.parse(b)))])
        store, state = LogStore(None, mode="memory"), ApplyState(None)
        store.open()
        state.open()
        proto = LogTransferProtocol(None)
        proto.hop = HopSeal(Address.parse(a), ring, proto.drops)      # sealed, as a daemon is
        source = EdgeDevice(reactor, EdgeSettings(me=Address.parse(a), pairs=[pair],
                                                  routes=routes), store, state, proto.send,
                            seal=GroupSeal(ring))
        proto.handler = source
        self.addCleanup(source.stop)
        port_a = listen(reactor, proto, Address.parse(a))
        self.addCleanup(port_a.stopListening)

        pattern = bytes(range(256)) * 16                     # 4 KiB
        for n in range(4):
            result = yield source.source_side.write(pair, build_write16_cdb(n * 8, 8), pattern)
            self.assertTrue(result.good)
        def check():
            if not store.retained(9):
                loop.stop()
        loop = task.LoopingCall(check)
        yield loop.start(0.01)           # every entry answered by edgeB's WROK
        with open(path, "rb") as f:
            self.assertEqual(f.read(4 * 4096), pattern * 4)
        self.assertEqual(edge_b.nbd_targets[(pair.target_wwn, 0)].counters["writes"], 4)
