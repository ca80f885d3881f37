"""The edge's NBD front end (DESIGN.md 3.2): VirtualVolumeExport, its config keys, the service.

Unit tests drive the export against a fake SourceSide whose ``write`` and
``control`` calls are recorded and answered by the test. The real tests put two
EdgeDevices on the real reactor with real UDP sockets on 127.0.0.1, the target
edge applying to an in-memory volume, serve the NBD front end on 127.0.0.1:0
and check with ``qemu-io`` and ``nbdinfo`` that what a client writes reaches the
target volume and reads back through the RCN.
"""

from __future__ import annotations

import json
import os
import re

from prometheus_client import generate_latest
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from datapath.frames import fcp
from rcn.edge.applystate import ApplyState
from rcn.edge.config import ConfigError, NbdFront, parse_config
from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
from rcn.edge.logstore import LogStore
from rcn.edge.nbdfront import MAX_ENTRY_BYTES, ZERO_WINDOW, VirtualVolumeExport
from rcn.logxfer.protocol import LogTransferProtocol, listen
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.nbd import protocol as P
from rcn.nbd.export import Export, ExportTable, NbdError
from rcn.nbd.server import NbdServerFactory
from rcn.nbd.handshake import block_sizes
from rcn.nbd.session import ServerLimits
from rcn.rio.fcp import ScsiResult, SenseKey, check_condition
from tests.support import require_tool, seal_with, wait_connections_closed

MiB = 1 << 20
SOURCE_WWN = 0x500A098000000011
TARGET_WWN = 0x500A098000000002
GROUP = 7
PAIR = PairEntry(SOURCE_WWN, 0, TARGET_WWN, 3, GROUP, "acme")
_BUSY = ScsiResult(status=fcp.ScsiStatus.BUSY)


class _Call:
    def __init__(self, **fields):
        self.__dict__.update(fields)
        self.parsed = fcp.parse_cdb(fields["cdb"])
        self.deferred = Deferred()


class FakeEdge:
    """Records SourceSide.write/control calls; the test fires their Deferreds (or
    ``answer_at_once`` answers every write GOOD synchronously)."""

    def __init__(self):
        self.writes: list[_Call] = []
        self.controls: list[_Call] = []
        self.answer_at_once = False

    def write(self, pair, cdb, data, attribute=0, ids=(0, 0, 0)):
        call = _Call(pair=pair, cdb=cdb, data=bytes(data), attribute=attribute, ids=ids)
        self.writes.append(call)
        if self.answer_at_once:
            return succeed(ScsiResult())
        return call.deferred

    def control(self, pair, group, cdb, data_out=b"", data_in_length=0, attribute=0,
                ids=(0, 0, 0)):
        call = _Call(pair=pair, group=group, cdb=cdb, data_out=data_out,
                     data_in_length=data_in_length, attribute=attribute, ids=ids)
        self.controls.append(call)
        return call.deferred


def extents(calls) -> list[tuple[int, int]]:
    return [(c.parsed["lba"], c.parsed["transfer_length"]) for c in calls]


class ExportTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.edge = FakeEdge()
        self.export = VirtualVolumeExport(self.edge, PAIR, "vol", 256 * MiB, self.clock,
                                          read_timeout=10.0)

    def result_of(self, value):
        """The value of a fired Deferred (or a plain value)."""
        if isinstance(value, Deferred):
            return self.successResultOf(value)
        return value

    def nbd_error(self, d) -> NbdError:
        return self.failureResultOf(d, NbdError).value


class WriteTests(ExportTestCase):
    def test_is_an_export_with_512_minimum_and_4096_preferred_block_size(self):
        self.assertIsInstance(self.export, Export)
        self.assertEqual(block_sizes(self.export, ServerLimits()), (512, 4096, 32 * MiB))
        self.assertTrue(self.export.can_multi_conn)
        self.assertFalse(self.export.read_only)

    def test_write_is_split_into_1mib_write16_entries_and_completes_when_all_are_good(self):
        data = os.urandom(2 * MiB + 512 * 1024)
        d = self.export.write(4096, data, False)
        self.assertEqual(extents(self.edge.writes), [(8, 2048), (8 + 2048, 2048), (8 + 4096, 1024)])
        self.assertEqual(b"".join(c.data for c in self.edge.writes), data)
        self.assertTrue(all(c.pair is PAIR for c in self.edge.writes))
        self.assertTrue(all(len(c.data) <= MAX_ENTRY_BYTES for c in self.edge.writes))
        for call in (self.edge.writes[2], self.edge.writes[0]):
            call.deferred.callback(ScsiResult())
            self.assertNoResult(d)
        self.edge.writes[1].deferred.callback(ScsiResult())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.export.counters["writes"], 1)
        self.assertEqual(self.export.counters["write_bytes"], len(data))
        self.assertEqual(self.export.counters["entries_logged"], 3)
        self.assertEqual(self.edge.controls, [])

    def test_fua_is_passed_in_the_cdb_and_needs_nothing_more_than_good(self):
        d = self.export.write(0, b"\x01" * 4096, True)
        call, = self.edge.writes
        self.assertEqual(call.parsed["cdb_flags"] & 0x08, 0x08)
        call.deferred.callback(ScsiResult())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual((len(self.edge.writes), self.edge.controls), (1, []))

    def test_unaligned_requests_are_refused_with_einval_and_a_logged_reason(self):
        with capturedLogs() as events:
            for call in (lambda: self.export.write(100, b"x" * 512, False),
                         lambda: self.export.write(0, b"x" * 700, False),
                         lambda: self.export.read(512, 100),
                         lambda: self.export.trim(1, 512),
                         lambda: self.export.write_zeroes(0, 513, True)):
                with self.assertRaises(NbdError) as caught:
                    call()
                self.assertEqual(caught.exception.code, P.EINVAL)
                self.assertIn("not whole 512-byte blocks", str(caught.exception))
        self.assertEqual((self.edge.writes, self.edge.controls), ([], []))
        self.assertEqual(self.export.counters["unaligned"], 5)
        self.assertEqual(self.export.counters["errors"], 5)
        logged = [e for e in events if "not whole 512-byte blocks" in str(e.get("reason", ""))]
        self.assertEqual(len(logged), 5)

    def test_write_past_the_end_is_enospc(self):
        with self.assertRaises(NbdError) as caught:
            self.export.write(256 * MiB - 512, b"x" * 1024, False)
        self.assertEqual(caught.exception.code, P.ENOSPC)
        self.assertEqual(self.edge.writes, [])

    def test_busy_log_is_enospc(self):
        d = self.export.write(0, b"x" * 512, False)
        self.edge.writes[0].deferred.callback(_BUSY)
        error = self.nbd_error(d)
        self.assertEqual(error.code, P.ENOSPC)
        self.assertIn("log storage area is full", str(error))
        self.assertEqual(self.export.counters["log_full"], 1)

    def test_check_condition_and_a_failing_edge_are_eio(self):
        d1 = self.export.write(0, b"x" * 512, False)
        d2 = self.export.write(512, b"x" * 512, False)
        self.edge.writes[0].deferred.callback(check_condition(SenseKey.HARDWARE_ERROR, (0x44, 0)))
        self.edge.writes[1].deferred.errback(RuntimeError("log storage area closed"))
        e1, e2 = self.nbd_error(d1), self.nbd_error(d2)
        self.assertEqual((e1.code, e2.code), (P.EIO, P.EIO))
        self.assertIn("CHECK_CONDITION", str(e1))
        self.assertIn("log storage area closed", str(e2))
        self.assertEqual(self.export.counters["errors"], 2)

    def test_a_failed_entry_fails_the_write_once_every_entry_has_answered(self):
        d = self.export.write(0, b"x" * (2 * MiB), False)
        self.edge.writes[0].deferred.callback(check_condition(SenseKey.HARDWARE_ERROR, (0x44, 0)))
        self.assertNoResult(d)                       # the second entry is still on its way
        self.assertEqual(self.export.pending_writes, 1)
        self.edge.writes[1].deferred.callback(ScsiResult())
        self.assertEqual(self.nbd_error(d).code, P.EIO)
        self.assertEqual(self.export.pending_writes, 0)


class FlushTests(ExportTestCase):
    def test_flush_with_nothing_pending_completes_at_once(self):
        self.assertIsNone(self.result_of(self.export.flush()))
        self.assertEqual(self.export.counters["flushes"], 1)

    def test_flush_waits_for_writes_pending_when_it_arrived_and_no_others(self):
        w1 = self.export.write(0, b"a" * 512, False)
        z1 = self.export.write_zeroes(4096, 4096, False)
        flush = self.export.flush()
        w2 = self.export.write(8192, b"b" * 512, False)   # after the flush: not waited for
        self.assertNoResult(flush)
        self.edge.writes[0].deferred.callback(ScsiResult())
        self.assertNoResult(flush)
        self.edge.writes[1].deferred.callback(ScsiResult())
        self.assertIsNone(self.successResultOf(flush))
        self.assertIsNone(self.successResultOf(w1))
        self.assertIsNone(self.successResultOf(z1))
        self.assertNoResult(w2)
        self.edge.writes[2].deferred.callback(ScsiResult())
        self.assertIsNone(self.successResultOf(w2))

    def test_flush_after_a_failed_write_completes_and_the_write_reports_the_error(self):
        w = self.export.write(0, b"a" * 512, False)
        flush = self.export.flush()
        self.edge.writes[0].deferred.callback(_BUSY)
        self.assertIsNone(self.successResultOf(flush))
        self.assertEqual(self.nbd_error(w).code, P.ENOSPC)


class ZeroTests(ExportTestCase):
    def test_trim_and_write_zeroes_are_written_as_zeroes_in_1mib_entries(self):
        trim = self.export.trim(MiB, 2 * MiB + 4096)
        zeroes = self.export.write_zeroes(64 * MiB, 8192, True)
        self.assertEqual(extents(self.edge.writes),
                         [(2048, 2048), (4096, 2048), (6144, 8), (131072, 16)])
        for call in self.edge.writes:
            self.assertEqual(call.data, bytes(len(call.data)))
            self.assertEqual(call.parsed["opcode_name"], "WRITE_16")
            call.deferred.callback(ScsiResult())
        self.assertIsNone(self.successResultOf(trim))
        self.assertIsNone(self.successResultOf(zeroes))
        self.assertEqual((self.export.counters["trims"], self.export.counters["write_zeroes"]),
                         (1, 1))
        self.assertEqual(self.export.counters["zeroed_bytes"], 2 * MiB + 4096 + 8192)

    def test_zeroing_keeps_at_most_zero_window_entries_in_flight(self):
        d = self.export.trim(0, 40 * MiB)
        self.assertEqual(len(self.edge.writes), ZERO_WINDOW)
        answered = 0
        while answered < len(self.edge.writes):
            self.assertNoResult(d)
            in_flight = len(self.edge.writes) - answered
            self.assertLessEqual(in_flight, ZERO_WINDOW)
            self.edge.writes[answered].deferred.callback(ScsiResult())
            answered += 1
        self.assertEqual(len(self.edge.writes), 40)
        self.assertEqual(extents(self.edge.writes)[-1], (39 * 2048, 2048))
        self.assertIsNone(self.successResultOf(d))

    def test_zeroing_answered_at_once_covers_the_whole_volume_without_recursion(self):
        self.edge.answer_at_once = True
        self.assertIsNone(self.result_of(self.export.write_zeroes(0, 256 * MiB, False)))
        self.assertEqual(len(self.edge.writes), 256)

    def test_a_failed_zero_entry_stops_the_rest_and_fails_the_request(self):
        d = self.export.trim(0, 40 * MiB)
        self.edge.writes[0].deferred.callback(_BUSY)
        for call in self.edge.writes[1:]:
            self.assertNoResult(d)
            call.deferred.callback(ScsiResult())
        self.assertEqual(len(self.edge.writes), ZERO_WINDOW)      # nothing new after the error
        self.assertEqual(self.nbd_error(d).code, P.ENOSPC)


class ReadTests(ExportTestCase):
    def test_read_is_a_ctrl_read16_in_the_pairs_group(self):
        d = self.export.read(8192, 4096)
        call, = self.edge.controls
        self.assertIs(call.pair, PAIR)
        self.assertEqual(call.group, GROUP)
        self.assertEqual(call.parsed["opcode_name"], "READ_16")
        self.assertEqual((call.parsed["lba"], call.parsed["transfer_length"]), (16, 8))
        self.assertEqual((call.data_out, call.data_in_length), (b"", 4096))
        self.assertEqual(self.edge.writes, [])
        call.deferred.callback(ScsiResult(data_in=b"\x5a" * 4096))
        self.assertEqual(self.successResultOf(d), b"\x5a" * 4096)
        self.assertEqual(self.clock.getDelayedCalls(), [])        # the timeout is cancelled

    def test_read_larger_than_1mib_is_split_and_joined_in_order(self):
        d = self.export.read(MiB, 2 * MiB + 512)
        self.assertEqual(extents(self.edge.controls), [(2048, 2048), (4096, 2048), (6144, 1)])
        self.assertEqual([c.data_in_length for c in self.edge.controls], [MiB, MiB, 512])
        parts = [b"\x01" * MiB, b"\x02" * MiB, b"\x03" * 512]
        for index in (2, 0, 1):
            self.assertNoResult(d)
            self.edge.controls[index].deferred.callback(ScsiResult(data_in=parts[index]))
        self.assertEqual(self.successResultOf(d), b"".join(parts))
        self.assertEqual(self.export.counters["read_entries"], 3)

    def test_no_answer_within_read_timeout_is_eio_target_not_reachable(self):
        d = self.export.read(0, 4096)
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.nbd_error(d)
        self.assertEqual(error.code, P.EIO)
        self.assertIn("target not reachable through the RCN", str(error))
        self.assertEqual(self.export.counters["read_timeouts"], 1)
        # the late answer is dropped quietly
        self.edge.controls[0].deferred.callback(ScsiResult(data_in=bytes(4096)))
        self.assertEqual(self.export.counters["late_answers"], 1)

    def test_check_condition_short_data_busy_and_edge_failure_are_eio(self):
        answers = [check_condition(SenseKey.ILLEGAL_REQUEST, (0x21, 0)),
                   ScsiResult(data_in=b"short"), _BUSY]
        reads = [self.export.read(0, 512) for _ in answers]
        for call, answer in zip(self.edge.controls, answers):
            call.deferred.callback(answer)
        reasons = []
        for d in reads:
            error = self.nbd_error(d)
            self.assertEqual(error.code, P.EIO)
            reasons.append(str(error))
        self.assertIn("ASC/ASCQ 0x21/0x00", reasons[0])
        self.assertIn("returned 5 bytes", reasons[1])
        self.assertIn("log storage area is full", reasons[2])
        self.edge.control = lambda *a, **k: fail(RuntimeError("sequence numbers exhausted"))
        error = self.nbd_error(self.export.read(0, 512))
        self.assertEqual(error.code, P.EIO)
        self.assertIn("sequence numbers exhausted", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failed_piece_fails_the_read_at_once(self):
        d = self.export.read(0, 3 * MiB)
        self.edge.controls[1].deferred.callback(check_condition(SenseKey.MEDIUM_ERROR, (0x11, 0)))
        self.assertEqual(self.nbd_error(d).code, P.EIO)
        self.edge.controls[0].deferred.callback(ScsiResult(data_in=bytes(MiB)))
        self.assertEqual(self.export.counters["late_answers"], 1)


# -- configuration -----------------------------------------------------------------------

def config_doc(**nbd_volume) -> dict:
    volume = {"name": "vm", "capacity": "256MiB", "source_wwn": "50:0a:09:80:00:00:00:11",
              "source_lun": 0, "target_wwn": "50:0a:09:80:00:00:00:02", "target_lun": 3,
              "group": 9, "customer": "acme"}
    volume.update(nbd_volume)
    return {"edge": {"id": "edgeA", "log": "127.0.0.1:47001", "data_dir": "d"},
            "log": {"mode": "memory"}, "seal": {"keys": "edgeA.keys"},
            "customer": [{"id": "acme"}],
            "pair": [{"source_wwn": "50:0a:09:80:00:00:00:01", "source_lun": 0,
                      "target_wwn": "50:0a:09:80:00:00:00:02", "target_lun": 0, "group": 7}],
            "access": [{"virtual_wwn": "50:0a:09:80:00:00:00:02",
                        "storage_wwn": "50:0a:09:80:00:00:00:01"}],
            "route": [{"source_wwn": "50:0a:09:80:00:00:00:11",
                       "target_wwn": "50:0a:09:80:00:00:00:02",
                       "path": ["127.0.0.1:47001", "127.0.0.1:47002"]}],
            "nbd": {},
            "nbd_volume": [volume]}


class ConfigTests(SynchronousTestCase):
    def test_nbd_keys_and_their_defaults(self):
        config = parse_config(config_doc())
        self.assertEqual(config.nbd, NbdFront("tcp:10810:interface=127.0.0.1", 10.0))
        volume, = config.nbd_volumes
        self.assertEqual((volume.name, volume.capacity), ("vm", 256 * MiB))
        self.assertEqual(volume.pair, PairEntry(0x500A098000000011, 0, 0x500A098000000002, 3, 9,
                                                "acme"))
        doc = config_doc()
        doc["nbd"] = {"listen": "tcp:10999:interface=127.0.0.2", "read_timeout": 2.5}
        self.assertEqual(parse_config(doc).nbd, NbdFront("tcp:10999:interface=127.0.0.2", 2.5))
        self.assertEqual(len(parse_config(doc).settings.pairs), 1)     # [[pair]] only

    def test_without_nbd_there_is_no_front_end(self):
        doc = config_doc()
        del doc["nbd"], doc["nbd_volume"]
        config = parse_config(doc)
        self.assertIsNone(config.nbd)
        self.assertEqual(config.nbd_volumes, [])

    def assert_error(self, doc: dict, key: str, *words: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(doc)
        message = str(caught.exception)
        self.assertTrue(message.startswith(key), message)
        for word in words:
            self.assertIn(word, message)

    def test_an_nbd_volume_needs_a_route_that_starts_at_this_edge(self):
        doc = config_doc()
        del doc["route"]
        self.assert_error(doc, "nbd_volume[0]", "no [[route]]", "50:0a:09:80:00:00:00:11")
        doc = config_doc()
        doc["route"][0]["path"] = ["127.0.0.1:47005", "127.0.0.1:47001"]
        self.assert_error(doc, "nbd_volume[0]", "does not start at this edge")

    def test_errors_name_their_key(self):
        no_front = config_doc()
        del no_front["nbd"]
        twice = config_doc()
        twice["nbd_volume"].append(dict(twice["nbd_volume"][0], target_lun=4, source_lun=1))
        same_source = config_doc()
        same_source["nbd_volume"].append(dict(same_source["nbd_volume"][0], name="other",
                                              target_lun=4))
        cases = [
            (config_doc(capacity="1000"), "nbd_volume[0].capacity"),
            (config_doc(capacity=0), "nbd_volume[0].capacity"),
            (config_doc(name=""), "nbd_volume[0].name"),
            (config_doc(customer="nobody"), "nbd_volume[0].customer"),
            (config_doc(group=-1), "nbd_volume[0].group"),
            (config_doc(colour="red"), "nbd_volume[0].colour"),
            (dict(config_doc(), nbd={"listen": "localhost:10810"}), "nbd.listen"),
            (dict(config_doc(), nbd={"listen": "tcp:10810:interface=localhost"}), "nbd.listen"),
            (dict(config_doc(), nbd={"read_timeout": 0}), "nbd.read_timeout"),
            (dict(config_doc(), nbd={"port": 1}), "nbd.port"),
            (no_front, "nbd_volume[0]"),
            (twice, "nbd_volume[1].name"),
            (same_source, "nbd_volume[1].source_lun"),
            (config_doc(target_lun=0), "nbd_volume[0].target_lun"),      # the [[pair]]'s LUN
            (config_doc(source_wwn="50:0a:09:80:00:00:00:01"), "nbd_volume[0].source_wwn"),
        ]
        for doc, key in cases:
            self.assert_error(doc, key)


# -- the service -------------------------------------------------------------------------

class ServiceTests(TestCase):
    def make_edge(self):
        from rcn.edge.service import Edge, make_service
        doc = config_doc()
        doc["edge"]["data_dir"] = os.path.abspath(self.mktemp())
        doc["nbd"] = {"listen": "tcp:10811:interface=127.0.0.1"}
        seal_with(self, doc, links=[(Address("127.0.0.1", 47001), Address("127.0.0.1", 47002))],
                  groups=[7, 9])
        config = parse_config(doc)
        top, edge = make_service(config, reactor)
        self.addCleanup(edge.close)
        self.assertIsInstance(edge, Edge)
        return top, edge

    def test_edge_serves_its_nbd_volumes_on_nbd_listen(self):
        top, edge = self.make_edge()
        export, = edge.nbd_exports
        self.assertIsInstance(export, VirtualVolumeExport)
        self.assertIs(export.source, edge.device.source_side)
        self.assertIs(edge.nbd.exports.get("vm"), export)
        self.assertIs(edge.nbd.exports.get(""), export)          # the only volume: the default
        # the volume's pair joins the device's pair table (customer, group figures)
        self.assertIn(export.pair, edge.device.settings.pairs)
        self.assertEqual(edge.device.source_side._customer(export.pair.group), "acme")
        self.assertIn(export.pair.group, [g["group"] for g in edge.device.describe_groups()])
        servers = [s for s in top if getattr(s, "factory", None) is edge.nbd]
        self.assertEqual(len(servers), 1)
        self.assertEqual((servers[0].endpoint._port, servers[0].endpoint._interface),
                         (10811, "127.0.0.1"))
        self.assertEqual(edge.status()["nbd"]["volumes"][0]["name"], "vm")

    def test_per_volume_figures_are_in_metrics(self):
        _, edge = self.make_edge()
        export, = edge.nbd_exports
        self.assertIsNone(self.successResultOf(export.write(0, b"\x07" * 4096, False)))
        with self.assertRaises(NbdError):
            export.read(1, 512)
        text = generate_latest(edge.metrics.registry).decode()
        for line in ('rcn_nbd_volume_writes_total{volume="vm"} 1.0',
                     'rcn_nbd_volume_write_bytes_total{volume="vm"} 4096.0',
                     'rcn_nbd_volume_reads_total{volume="vm"} 0.0',
                     'rcn_nbd_volume_errors_total{volume="vm"} 1.0',
                     'rcn_nbd_volume_pending_writes{volume="vm"} 0.0'):
            self.assertIn(line, text)
        self.assertRegex(text, r'rcn_nbd_connections_total\{device="edgeA"\} 0\.0')


# -- real: two edges over UDP on 127.0.0.1, qemu-io and nbdinfo -------------------------

class MemoryTarget:
    """The target storage: one in-memory LUN; applies WRITE(16), serves READ(16)."""

    def __init__(self, lun: int, size: int):
        self.lun = lun
        self.volume = bytearray(size)
        self.writes = 0
        self.reads = 0

    def execute(self, command, lun: int):
        if lun != self.lun:
            return check_condition(SenseKey.ILLEGAL_REQUEST, (0x25, 0x00))
        name = command.parsed["opcode_name"]
        at = command.parsed["lba"] * fcp.BLOCK_SIZE
        size = command.parsed["transfer_length"] * fcp.BLOCK_SIZE
        if name == "WRITE_16" and len(command.data_out) == size:
            self.volume[at:at + size] = command.data_out
            self.writes += 1
            return ScsiResult()
        if name == "READ_16" and command.data_in_length == size:
            self.reads += 1
            return ScsiResult(data_in=bytes(self.volume[at:at + size]))
        return check_condition(SenseKey.ILLEGAL_REQUEST, (0x20, 0x00))



class RealRcnTests(TestCase):
    timeout = 120
    CAPACITY = 16 * MiB

    def setUp(self):
        self.target = MemoryTarget(PAIR.target_lun, self.CAPACITY)
        protocols, addresses = [], []
        for _ in range(2):
            proto = LogTransferProtocol(None)
            port = listen(reactor, proto, Address("127.0.0.1", 0))
            self.addCleanup(port.stopListening)
            protocols.append(proto)
            addresses.append(Address("127.0.0.1", port.getHost().port))
        a, b = addresses
        routes = RouteTable([Route(SOURCE_WWN, TARGET_WWN, (a, b))])
        self.source = self._edge("source", protocols[0], EdgeSettings(me=a, pairs=[PAIR],
                                                                      routes=routes))
        self.target_edge = self._edge("target", protocols[1], EdgeSettings(me=b, routes=routes),
                                      apply_target_for=lambda header: self.target)
        self.export = VirtualVolumeExport(self.source.source_side, PAIR, "vol", self.CAPACITY,
                                          reactor, read_timeout=30.0)
        self.factory = NbdServerFactory(ExportTable([self.export]), reactor)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"nbd://127.0.0.1:{port.getHost().port}/vol"

    def _edge(self, name, proto, settings, apply_target_for=None) -> EdgeDevice:
        store = LogStore(None, mode="memory")
        store.open()
        state = ApplyState(None)
        state.open()
        edge = EdgeDevice(reactor, settings, store, state, proto.send, apply_target_for, name)
        proto.handler = edge
        proto.drops = edge.drops
        self.addCleanup(edge.stop)
        return edge

    def tearDown(self):
        self.assertEqual(self.factory.counters["protocol_errors"], 0)
        return wait_connections_closed(self.factory)

    @defer.inlineCallbacks
    def client(self, tool: str, *args: str):
        path = require_tool(self, tool)
        out, err, code = yield getProcessOutputAndValue(path, args, env=dict(os.environ),
                                                        reactor=reactor)
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        if code != 0:
            self.fail(f"{tool} {' '.join(args)} exited {code}: {err}{out}")
        return out

    @defer.inlineCallbacks
    def test_qemu_io_pattern_reaches_the_target_volume_and_reads_back_through_the_rcn(self):
        out = yield self.client("qemu-io", "-f", "raw", self.url,
                                "-c", "write -P 0xab 0 1536k",
                                "-c", "write -P 0xcd 2m 64k",
                                "-c", "flush",
                                "-c", "read -P 0xab 0 1536k",
                                "-c", "read -P 0xcd 2m 64k",
                                "-c", "read -P 0 1536k 512k")
        self.assertIn("wrote 1572864/1572864 bytes at offset 0", out)
        self.assertIn("read 1572864/1572864 bytes at offset 0", out)
        self.assertIn("read 65536/65536 bytes at offset 2097152", out)
        self.assertNotIn("failed", out)
        # The reads ran after every earlier write of the group was applied at the target.
        volume = self.target.volume
        self.assertEqual(volume[:1536 * 1024], b"\xab" * (1536 * 1024))
        self.assertEqual(volume[1536 * 1024:2 * MiB], bytes(512 * 1024))
        self.assertEqual(volume[2 * MiB:2 * MiB + 65536], b"\xcd" * 65536)
        self.assertEqual(volume[2 * MiB + 65536:], bytes(self.CAPACITY - 2 * MiB - 65536))
        counters = self.export.counters
        self.assertGreaterEqual(counters["entries_logged"], 3)    # 1536k: two 1 MiB entries at most
        self.assertGreaterEqual(counters["read_entries"], 3)
        self.assertEqual(counters["errors"], 0)
        self.assertGreaterEqual(self.source.counters["controls"], 3)
        self.assertGreaterEqual(self.target.reads, 3)
        self.assertEqual(self.factory.counters["errors"], 0)

    @defer.inlineCallbacks
    def test_qemu_io_unaligned_write_is_read_modify_write_through_the_rcn(self):
        out = yield self.client("qemu-io", "-f", "raw", self.url,
                                "-c", "write -P 0x11 0 64k",
                                "-c", "write -P 0x22 1000 333",   # qemu reads, merges, writes
                                "-c", "read -P 0x22 1000 333",
                                "-c", "read -P 0x11 0 1000",
                                "-c", "read -P 0x11 1333 63203")
        self.assertNotIn("failed", out)
        volume = self.target.volume
        self.assertEqual(volume[:1000], b"\x11" * 1000)
        self.assertEqual(volume[1000:1333], b"\x22" * 333)
        self.assertEqual(volume[1333:65536], b"\x11" * (65536 - 1333))
        self.assertEqual(self.factory.counters["errors"], 0)     # nothing unaligned reached us

    @defer.inlineCallbacks
    def test_nbdinfo_shows_the_export_size_and_block_sizes(self):
        out = yield self.client("nbdinfo", "--json", self.url)
        export, = json.loads(out)["exports"]
        self.assertEqual(export["export-size"], self.CAPACITY)
        self.assertEqual(export["block_size_minimum"], 512)
        self.assertEqual(export["block_size_preferred"], 4096)
        self.assertTrue(re.search(r"RCN volume", export.get("description", "")))
