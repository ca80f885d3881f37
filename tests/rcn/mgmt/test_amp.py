"""The management channel over AMP: registration, snapshots and their acknowledgements,
reports, the residual query, and bad input answered without dropping the connection."""

from __future__ import annotations

import random
import struct

from twisted.application.internet import ClientService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols import amp as tamp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from rcn.mgmt.distribution import DeviceUnavailable, DistributionServer
from rcn.mgmt.service import TcpListenService
from rcn.mgmtlink import protocol as protocol_module
from rcn.mgmtlink.client import MgmtClient, client_service
from rcn.mgmtlink.commands import (DEFAULT_PORT, BadArguments, BadJSON, BadRegistration,
                                   BigString, NotRegistered, Register, Report, ResidualFailed,
                                   ServerFailed, UnknownDevice, decode_json,
                                   encode_json)


class Settings:
    """A stand-in for the settings store: a version per device, changed by :meth:`bump`."""

    def __init__(self, *devices: str, version: int = 1):
        self.versions = dict.fromkeys(devices, version)
        self.extra: dict = {}

    def bump(self, *devices: str) -> None:
        for d in devices or list(self.versions):
            self.versions[d] += 1

    def snapshot_for(self, device_id: str) -> tuple[int, dict]:
        version = self.versions[device_id]          # KeyError: not in the settings
        return version, {"device": device_id, "version": version,
                         "routes": [[1, 2, ["edge-a", "core-1", "edge-b"]]], **self.extra}


class Device:
    """A device behind a MgmtClient: records what it applied and what it was asked."""

    def __init__(self, clock, device_id: str, role: str = "edge", version: int = 0):
        self.applied: list[tuple[int, dict]] = []
        self.apply_result = None                      # an exception to raise, or a Deferred
        self.ticks = 0
        self.client = MgmtClient(clock, device_id, role, "10.0.0.1:47001", self.apply,
                                 self.figures, self.residual, version=version)

    def apply(self, version, tables):
        if isinstance(self.apply_result, Exception):
            raise self.apply_result
        self.applied.append((version, tables))
        return self.apply_result

    def figures(self) -> dict:
        self.ticks += 1
        return {"tick": self.ticks, "lag": {"7": 0.25}, "pairs": {"7": "duplex"}}

    def residual(self, group: int) -> dict:
        if group != 7:
            raise KeyError(group)
        return {"group": 7, "applied": 41, "entries": [{"sequence": 42, "io_time": 1.5}]}


class RawDevice(tamp.AMP):
    """A hand-driven AMP peer, for what a well-behaved client never sends."""


class BadRegister(tamp.Command):
    """Register with a version that is not a number."""
    commandName = b"Register"
    arguments = [(b"device_id", tamp.Unicode()), (b"role", tamp.Unicode()),
                 (b"log_address", tamp.Unicode()), (b"version", tamp.Unicode())]
    response = [(b"version", tamp.Integer())]
    errors = {BadArguments: b"BAD_ARGUMENTS"}


def connect(server, protocol, clock, peer=("10.0.0.1", 40000)):
    """One connection from ``protocol`` (a device) to ``server`` through iosim."""
    s = server.factory().buildProtocol(None)
    st = iosim.FakeTransport(s, True, peerAddress=IPv4Address("TCP", *peer))
    ct = iosim.FakeTransport(protocol, False)
    return iosim.connect(s, st, protocol, ct, clock=clock)


def call(proto, pump, command, **kw):
    """Send ``command`` and pump: its answer or Failure. (An AMP answer's failure must have
    an errback by the time it arrives, or AMP drops the connection.)"""
    results = []
    proto.callRemote(command, **kw).addBoth(results.append)
    pump.flush()
    return results[0]


def drop(pump) -> None:
    pump.clientIO.loseConnection()
    pump.flush()


class Base(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.settings = Settings("edge-a", "edge-b", "core-1", version=3)
        self.reports: list[tuple[str, dict]] = []
        self.server = DistributionServer(self.clock, self.settings.snapshot_for,
                                         lambda d, f: self.reports.append((d, f)),
                                         stale_after=3.0, history=5)

    def device(self, device_id="edge-a", role="edge", version=0):
        dev = Device(self.clock, device_id, role, version)
        pump = connect(self.server, dev.client.buildProtocol(None), self.clock)
        return dev, pump

    def raw(self, register=True, device_id="edge-a"):
        proto = RawDevice()
        pump = connect(self.server, proto, self.clock)
        if register:
            self.assertEqual(call(proto, pump, Register, device_id=device_id, role="edge",
                                  log_address="10.0.0.9:47001",
                                  version=self.settings.versions[device_id]),
                             {"version": self.settings.versions[device_id]})
        return proto, pump


    def refused(self, result, error) -> str:
        """The message of ``result``, a Failure of type ``error``."""
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(error), result)
        return str(result.value)


class RegistrationTests(Base):
    def test_register_brings_the_snapshot_and_the_ack_is_recorded(self):
        dev, pump = self.device()
        self.assertEqual(dev.applied, [(3, self.settings.snapshot_for("edge-a")[1])])
        self.assertEqual((dev.client.version, dev.client.server_version), (3, 3))
        shown = self.server.device("edge-a")
        self.assertEqual((shown["version"], shown["current_version"], shown["up_to_date"],
                          shown["old_version"], shown["connected"], shown["status"]),
                         (3, 3, True, False, True, "up"))
        self.assertEqual((shown["role"], shown["log_address"], shown["peer"]),
                         ("edge", "10.0.0.1:47001", "10.0.0.1:40000"))
        self.assertEqual(self.server.counters["snapshots_acked"], 1)

    def test_a_device_holding_the_current_version_gets_no_snapshot(self):
        dev, pump = self.device(version=3)
        self.assertEqual(dev.applied, [])
        self.assertEqual(self.server.counters["snapshots_sent"], 0)
        self.assertTrue(self.server.device("edge-a")["up_to_date"])

    def test_a_device_claiming_a_version_the_server_does_not_have_is_sent_the_current_one(self):
        dev, pump = self.device(version=9)          # e.g. the server's database was restored
        self.assertEqual([v for v, _ in dev.applied], [3])
        self.assertEqual(self.server.device("edge-a")["version"], 3)

    def test_registrations_with_a_wrong_field_are_refused_naming_it(self):
        proto, pump = self.raw(register=False)
        cases = [(dict(device_id="edge-z"), UnknownDevice, "device_id: 'edge-z' is not in"),
                 (dict(role="array"), BadRegistration, "role: must be one of edge, core"),
                 (dict(log_address="nowhere"), BadRegistration, "log_address: must be host:port"),
                 (dict(log_address="h:\u00b2"), BadRegistration, "log_address: must be"),
                 (dict(log_address="h:" + "9" * 5000), BadRegistration, "log_address: must"),
                 (dict(version=-1), BadRegistration, "version: must be 0"),
                 (dict(version=1 << 63), BadRegistration, "version: must be 0")]
        for change, error, text in cases:
            args = dict(device_id="edge-a", role="edge", log_address="10.0.0.9:47001", version=0)
            self.assertIn(text, self.refused(call(proto, pump, Register, **{**args, **change}),
                                             error))
        self.assertEqual(self.server.devices(), [])
        self.assertEqual(self.server.counters["refused_registrations"], 7)
        self.assertFalse(pump.serverIO.disconnecting)

    def test_a_server_that_cannot_build_the_snapshot_answers_and_logs(self):
        def broken(device_id):
            raise RuntimeError("settings database is locked")
        self.server.snapshot_for = broken
        proto, pump = self.raw(register=False)
        answer = call(proto, pump, Register, device_id="edge-a", role="edge",
                      log_address="10.0.0.9:47001", version=0)
        self.assertIn("could not build the snapshot of 'edge-a'; see its log",
                      self.refused(answer, ServerFailed))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(pump.serverIO.disconnecting)

    def test_a_device_removed_from_the_settings_is_forgotten_and_disconnected(self):
        dev, pump = self.device("edge-b")
        self.server.forget("edge-b")
        pump.flush()
        self.assertEqual(self.server.devices(), [])
        self.assertIsNone(dev.client.protocol)
        with self.assertRaises(DeviceUnavailable):
            self.server.device("edge-b")

    def test_a_refused_client_drops_the_connection_and_says_why(self):
        dev, pump = self.device("edge-z")
        self.assertIn("registration refused: device_id: 'edge-z' is not in",
                      dev.client.last_error)
        self.assertFalse(dev.client.registered)
        self.assertIsNone(dev.client.protocol)          # it dropped; ClientService retries

    def test_registering_again_from_a_new_connection_replaces_the_old_one(self):
        dev, old = self.device(version=3)
        again = Device(self.clock, "edge-a", version=3)
        new = connect(self.server, again.client.buildProtocol(None), self.clock,
                      peer=("10.0.0.2", 40001))
        old.flush()
        self.assertTrue(old.serverIO.disconnected)
        shown = self.server.device("edge-a")
        self.assertEqual((shown["connected"], shown["peer"]), (True, "10.0.0.2:40001"))
        self.settings.bump("edge-a")
        self.assertEqual(self.server.publish(), 1)
        new.flush()
        self.assertEqual([v for v, _ in again.applied], [4])


class PublishTests(Base):
    def test_publish_reaches_connected_devices_and_skips_up_to_date_ones(self):
        a, pa = self.device("edge-a")
        b, pb = self.device("edge-b")
        c, pc = self.device("core-1", role="core")
        drop(pc)
        self.settings.bump("edge-a", "core-1")
        self.assertEqual(self.server.publish(), 1)       # edge-b is current, core-1 is away
        pa.flush()
        pb.flush()
        self.assertEqual([v for v, _ in a.applied], [3, 4])
        self.assertEqual([v for v, _ in b.applied], [3])
        self.assertEqual([v for v, _ in c.applied], [3])
        self.assertEqual(self.server.publish(), 0)
        shown = {d["id"]: d for d in self.server.devices()}
        self.assertEqual(shown["edge-a"]["version"], 4)
        self.assertEqual((shown["core-1"]["status"], shown["core-1"]["version"]),
                         ("disconnected", 3))

    def test_a_reconnecting_device_with_the_old_version_is_brought_up_to_date(self):
        dev, pump = self.device("edge-a")
        drop(pump)
        self.clock.advance(2)
        shown = self.server.device("edge-a")
        self.assertEqual((shown["connected"], shown["disconnected_at"]), (False, 0.0))
        self.assertFalse(dev.client.registered)
        self.settings.bump()
        self.assertEqual(self.server.publish(), 0)
        pump = connect(self.server, dev.client.buildProtocol(None), self.clock)
        self.assertEqual([v for v, _ in dev.applied], [3, 4])
        shown = self.server.device("edge-a")
        self.assertEqual((shown["connected"], shown["version"], shown["up_to_date"]),
                         (True, 4, True))

    def test_a_device_shows_an_old_version_until_it_acknowledges(self):
        dev, pump = self.device("edge-a", version=3)
        slow = dev.apply_result = Deferred()
        self.settings.bump()
        self.server.publish()
        pump.flush()
        shown = self.server.device("edge-a")
        self.assertEqual((shown["version"], shown["current_version"], shown["old_version"],
                          shown["sending_version"]), (3, 4, True, 4))
        self.settings.bump()
        self.assertEqual(self.server.publish(), 1)       # queued behind the one in flight
        pump.flush()
        self.assertEqual(len(dev.applied), 1)            # not sent while one is unanswered
        slow.callback(None)
        dev.apply_result = None
        pump.flush()
        self.assertEqual([v for v, _ in dev.applied], [4, 5])
        shown = self.server.device("edge-a")
        self.assertEqual((shown["version"], shown["old_version"], shown["sending_version"]),
                         (5, False, None))

    def test_an_apply_that_raises_is_recorded_and_the_device_stays_behind(self):
        dev, pump = self.device("edge-a", version=3)
        dev.apply_result = ValueError("route 408: unknown device core-9")
        self.settings.bump()
        self.server.publish()
        pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        shown = self.server.device("edge-a")
        self.assertEqual((shown["version"], shown["up_to_date"], shown["old_version"],
                          shown["connected"]), (3, False, True, True))
        self.assertEqual(shown["last_error"], "snapshot version 4: device edge-a could not apply "
                         "snapshot version 4: ValueError: route 408: unknown device core-9")
        self.assertEqual((dev.client.version, dev.client.counters["apply_errors"]), (3, 1))
        dev.apply_result = None                          # fixed: the next publish retries
        self.assertEqual(self.server.publish(), 1)
        pump.flush()
        shown = self.server.device("edge-a")
        self.assertEqual((shown["version"], shown["last_error"]), (4, None))

    def test_a_device_that_does_not_answer_a_snapshot_is_dropped_and_recovers(self):
        self.server.snapshot_timeout = 30
        dev, pump = self.device("edge-a", version=3)
        dev.apply_result = Deferred()                    # never fires
        self.settings.bump()
        self.server.publish()
        pump.flush()
        self.clock.advance(30)
        pump.flush()
        shown = self.server.device("edge-a")
        self.assertEqual(shown["connected"], False)
        self.assertIn("no answer to snapshot version 4 within 30 s", shown["last_error"])
        dev.apply_result = None
        connect(self.server, dev.client.buildProtocol(None), self.clock)
        self.assertEqual(self.server.device("edge-a")["version"], 4)

    def test_a_large_snapshot_arrives_whole(self):
        rng = random.Random(7)
        self.settings.extra = {"access": [[rng.getrandbits(64), rng.getrandbits(64),
                                           "edge-%d" % rng.randrange(1000)]
                                          for _ in range(8000)]}
        self.assertGreater(len(encode_json(self.settings.snapshot_for("edge-a")[1])), 400_000)
        dev, pump = self.device("edge-a")
        version, tables = dev.applied[0]
        self.assertEqual(tables, self.settings.snapshot_for("edge-a")[1])
        self.assertTrue(self.server.device("edge-a")["up_to_date"])


class DecodeJsonTests(SynchronousTestCase):
    def test_json_nested_past_the_interpreter_stack_is_bad_json(self):
        """A device's Report of 100,000 nested lists is refused, not a RecursionError."""
        with self.assertRaises(BadJSON) as caught:
            decode_json(b"[" * 100_000, "figures")
        self.assertEqual(str(caught.exception), "figures: nested too deep")


class BigStringTests(SynchronousTestCase):
    def test_a_long_value_is_split_into_amp_sized_keys_and_joined_again(self):
        data = bytes(random.Random(1).getrandbits(8) for _ in range(300_000))
        box = {}
        BigString().toBox(b"tables", box, {"tables": data}, None)
        self.assertEqual(sorted(box), [b"tables"] + [b"tables.%d" % i for i in range(1, 5)])
        self.assertTrue(all(len(v) <= 65535 for v in box.values()))
        out = {}
        BigString().fromBox(b"tables", box, out, None)
        self.assertEqual(out["tables"], data)

    def test_values_over_the_limit_are_refused_both_ways(self):
        with self.assertRaises(ValueError) as caught:
            BigString(limit=100_000).toBox(b"figures", {}, {"figures": bytes(100_001)}, None)
        self.assertIn("'figures' is 100001 bytes, more than the limit of 100000",
                      str(caught.exception))
        box = {}
        BigString().toBox(b"figures", box, {"figures": bytes(200_000)}, None)
        with self.assertRaises(ValueError):
            BigString(limit=100_000).fromBox(b"figures", box, {}, None)


class ReportTests(Base):
    def test_reports_every_second_go_into_a_bounded_series(self):
        dev, pump = self.device("edge-a")
        for _ in range(10):
            self.clock.advance(1)
            pump.flush()
        self.assertEqual(len(self.reports), 11)          # at registration, then each second
        self.assertEqual(self.reports[-1], ("edge-a", {"tick": 11, "lag": {"7": 0.25},
                                                       "pairs": {"7": "duplex"}}))
        series = self.server.series("edge-a")
        self.assertEqual([t for t, _ in series], [6.0, 7.0, 8.0, 9.0, 10.0])   # history=5
        self.assertEqual([f["tick"] for _, f in series], [7, 8, 9, 10, 11])
        self.assertEqual(self.server.latest("edge-a")["tick"], 11)
        shown = self.server.device("edge-a")
        self.assertEqual((shown["reports"], shown["last_report"]), (11, 10.0))
        self.assertEqual(dev.client.counters["reports_sent"], 11)

    def test_reports_stop_when_the_connection_drops(self):
        dev, pump = self.device("edge-a")
        drop(pump)
        self.clock.advance(5)
        self.assertEqual(len(self.reports), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_report_in_flight_at_a_time(self):
        dev, pump = self.device("edge-a")
        self.clock.advance(1)                            # sent, not pumped: no answer yet
        self.clock.advance(1)
        self.assertEqual(dev.client.counters["reports_skipped"], 1)
        pump.flush()
        self.assertEqual(len(self.reports), 2)

    def test_a_silent_device_is_marked_stale(self):
        proto, pump = self.raw()
        self.clock.advance(3)
        self.assertEqual(self.server.device("edge-a")["status"], "up")
        self.clock.advance(0.5)
        shown = self.server.device("edge-a")
        self.assertEqual((shown["status"], shown["stale"], shown["connected"]),
                         ("stale", True, True))
        self.assertEqual(call(proto, pump, Report, figures=b'{"lag": {}}'), {})
        self.assertEqual(self.server.device("edge-a")["status"], "up")

    def test_malformed_json_is_counted_and_answered_and_the_connection_stays_up(self):
        proto, pump = self.raw()
        for payload, text in [(b'{"lag": ', "report from edge-a: not JSON: Expecting value"),
                              (b"[1, 2]", "must be a JSON object, got list"),
                              (b'{"lag": NaN}', "NaN is not JSON"),
                              (b"\xff{}", "not UTF-8 at byte 0")]:
            self.assertIn(text, self.refused(call(proto, pump, Report, figures=payload), BadJSON))
        self.assertEqual(call(proto, pump, Report, figures=b'{"lag": {"7": 1.0}}'), {})
        shown = self.server.device("edge-a")
        self.assertEqual((shown["connected"], shown["reports"], shown["bad_reports"]),
                         (True, 1, 4))
        self.assertEqual(self.server.counters["bad_json"], 4)
        self.assertFalse(pump.serverIO.disconnecting or pump.clientIO.disconnecting)
        self.assertEqual(self.reports, [("edge-a", {"lag": {"7": 1.0}})])

    def test_arguments_that_do_not_parse_are_answered_not_fatal(self):
        proto, pump = self.raw(register=False)
        answer = call(proto, pump, BadRegister, device_id="edge-a", role="edge",
                      log_address="10.0.0.9:47001", version="three")
        self.assertIn("Register: bad arguments: invalid literal for int()",
                      self.refused(answer, BadArguments))
        self.assertIn("Report before Register",
                      self.refused(call(proto, pump, Report, figures=b"{}"), NotRegistered))
        self.assertEqual(self.server.counters["bad_messages"], 1)
        self.assertFalse(pump.serverIO.disconnecting)

    def test_a_failing_on_report_is_logged_and_the_report_still_kept(self):
        def broken(device_id, figures):
            raise RuntimeError("collector is down")
        self.server.on_report = broken
        proto, pump = self.raw()
        self.assertEqual(call(proto, pump, Report, figures=b"{}"), {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.server.series("edge-a")), 1)


class ResidualQueryTests(Base):
    def test_the_residual_query_round_trip(self):
        dev, pump = self.device("edge-a")
        d = self.server.query_residual("edge-a", 7)
        pump.flush()
        self.assertEqual(self.successResultOf(d), dev.residual(7))
        d = self.server.query_residual("edge-a", 8)
        pump.flush()
        self.assertEqual(str(self.failureResultOf(d, ResidualFailed).value),
                         "edge edge-a has no order guarantee group 8")

    def test_queries_the_server_cannot_send_fail_at_once(self):
        core, pc = self.device("core-1", role="core")
        edge, pe = self.device("edge-b")
        drop(pe)
        self.assertIn("is a core; only edges hold residual",
                      str(self.failureResultOf(self.server.query_residual("core-1", 7),
                                               ValueError).value))
        self.assertIn("'edge-b' is not connected",
                      str(self.failureResultOf(self.server.query_residual("edge-b", 7),
                                               DeviceUnavailable).value))
        self.assertIn("'edge-x' has not registered",
                      str(self.failureResultOf(self.server.query_residual("edge-x", 7),
                                               DeviceUnavailable).value))
        self.assertIn("group must be",
                      str(self.failureResultOf(self.server.query_residual("edge-a", -1),
                                               ValueError).value))

    def test_an_edge_that_cannot_answer_or_does_not_answer(self):
        dev, pump = self.device("edge-a")
        dev.client.residual = lambda group: {"entries": {1, 2}}     # a set is not JSON
        d = self.server.query_residual("edge-a", 7)
        pump.flush()
        self.assertIn("could not give the residual entries of group 7: TypeError",
                      str(self.failureResultOf(d, ResidualFailed).value))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        dev.client.residual = dev.residual
        d = self.server.query_residual("edge-a", 7)      # sent, never pumped: no answer
        self.clock.advance(self.server.query_timeout)
        self.failureResultOf(d, TimeoutError)
        pump.flush()                                     # a late answer is ignored
        self.assertTrue(self.server.device("edge-a")["connected"])


class BoxPeer(tamp.BinaryBoxProtocol):
    """A peer that writes raw boxes (anything, well-formed or not) and keeps every box
    it receives, answers included."""

    def __init__(self):
        super().__init__(self)
        self.received: list[dict] = []

    def startReceivingBoxes(self, sender):
        pass

    def stopReceivingBoxes(self, reason):
        pass

    def ampBoxReceived(self, box):
        self.received.append(dict(box))

    def send(self, pump, box: dict) -> list[dict]:
        """Write ``box`` and pump: the boxes that came back."""
        before = len(self.received)
        self.transport.write(b"".join(struct.pack("!H", len(k)) + k + struct.pack("!H", len(v))
                                      + v for k, v in box.items()) + b"\0\0")
        pump.flush()
        return self.received[before:]


REGISTER = {b"_command": b"Register", b"_ask": b"r", b"device_id": b"edge-a",
            b"role": b"edge", b"log_address": b"10.0.0.9:47001", b"version": b"3"}


class BadBoxTests(Base):
    """Boxes no AMP peer should send: each answered (if it has _ask) or dropped, counted,
    and the connection stays up (the MgmtAMP table)."""

    def peer(self, register=True):
        peer = BoxPeer()
        pump = connect(self.server, peer, self.clock)
        if register:
            self.assertEqual(peer.send(pump, REGISTER), [{b"_answer": b"r", b"version": b"3"}])
        return peer, pump

    def assertUp(self, pump, bad_messages):
        self.assertFalse(pump.serverIO.disconnecting)
        self.assertEqual(self.server.counters["bad_messages"], bad_messages)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_answer_or_error_for_an_unknown_tag_is_counted_and_dropped(self):
        peer, pump = self.peer()
        for box in ({b"_answer": b"77", b"version": b"1"},
                    {b"_error": b"78", b"_error_code": b"X", b"_error_description": b"no"},
                    {b"_error": b"79"}):
            self.assertEqual(peer.send(pump, box), [])
        self.assertUp(pump, 3)
        self.assertEqual(self.server.device("edge-a")["bad_reports"], 3)
        self.assertEqual(peer.send(pump, {b"_command": b"Report", b"_ask": b"1",
                                          b"figures": b"{}"}), [{b"_answer": b"1"}])

    def test_a_non_ascii_or_unknown_command_is_answered_unhandled(self):
        peer, pump = self.peer()
        for i, name in enumerate((b"\xff\xfeR", b"Nope", b"", b"StartTLS"), 1):
            answer = peer.send(pump, {b"_command": name, b"_ask": b"%d" % i})
            self.assertEqual([(a[b"_error"], a[b"_error_code"]) for a in answer],
                             [(b"%d" % i, b"UNHANDLED")], name)
            self.assertEqual(peer.send(pump, {b"_command": name}), [])   # no _ask: no answer
        self.assertUp(pump, 8)

    def test_empty_boxes_and_boxes_with_only_an_ask_are_dropped(self):
        peer, pump = self.peer()
        self.assertEqual(peer.send(pump, {}), [])
        self.assertEqual(peer.send(pump, {b"junk": b"1"}), [])
        answer = peer.send(pump, {b"_ask": b"9", b"x": b"y"})
        self.assertEqual([(a[b"_error"], a[b"_error_code"]) for a in answer],
                         [(b"9", b"BAD_BOX")])
        self.assertUp(pump, 3)

    def test_a_command_without_ask_that_fails_is_dropped_not_fatal(self):
        peer, pump = self.peer(register=False)
        self.assertEqual(peer.send(pump, {b"_command": b"Report", b"figures": b"{}"}), [])
        self.assertEqual(peer.send(pump, {b"_command": b"Register", b"version": b"x"}), [])
        self.assertUp(pump, 1)               # the bad arguments; NotRegistered is a refusal

    def test_an_error_answer_without_its_code_fails_the_request_with_unknown(self):
        peer, pump = self.peer()
        d = self.server.query_residual("edge-a", 7)
        pump.flush()
        asked = peer.received[-1]
        self.assertEqual(asked[b"_command"], b"ResidualQuery")
        peer.send(pump, {b"_error": asked[b"_ask"], b"_error_description": b"oops"})
        failure = self.failureResultOf(d, tamp.RemoteAmpError)
        self.assertEqual(failure.value.errorCode, b"UNKNOWN")
        self.assertIn("oops", str(failure.value))
        self.assertUp(pump, 1)

    def test_a_responder_failing_with_an_undeclared_error_is_answered_server_error(self):
        peer, pump = self.peer()
        self.server.reported = lambda proto, data: 1 / 0
        answer = peer.send(pump, {b"_command": b"Report", b"_ask": b"5", b"figures": b"{}"})
        self.assertEqual([(a[b"_error"], a[b"_error_code"]) for a in answer],
                         [(b"5", b"SERVER_ERROR")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertUp(pump, 0)

    def test_a_box_over_max_box_closes_the_connection_cleanly_and_is_counted(self):
        self.patch(protocol_module, "MAX_BOX", 1000)
        peer, pump = self.peer()
        peer.send(pump, {b"_command": b"Report", b"_ask": b"6", b"figures": b"x" * 600,
                         b"figures.1": b"x" * 600})
        self.assertTrue(pump.serverIO.disconnecting)
        self.assertEqual(self.server.counters["bad_messages"], 1)
        self.assertFalse(self.server.device("edge-a")["connected"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_key_over_255_bytes_closes_the_connection_and_is_counted(self):
        peer, pump = self.peer()
        peer.transport.write(struct.pack("!H", 300) + b"k" * 300)
        pump.flush()
        self.assertTrue(pump.serverIO.disconnecting)
        self.assertEqual(self.server.counters["bad_messages"], 1)

    def test_500_seeded_random_sessions_never_drop_the_connection(self):
        keys = [b"_ask", b"_answer", b"_error", b"_command", b"_error_code",
                b"_error_description", b"device_id", b"role", b"log_address", b"version",
                b"figures", b"figures.1", b"\xff\xfe", b"x"]
        values = [b"1", b"2", b"r", b"Register", b"Report", b"StartTLS", b"ResidualQuery",
                  b"\xff\xfe", b"", b"edge", b"10.0.0.9:1", b"9" * 30, b"{}", b"[", b"-1",
                  b"\xc3\xa9", b"nan"]
        rng = random.Random(15)
        for _ in range(500):
            peer, pump = self.peer(register=rng.random() < 0.5)
            for _ in range(rng.randint(1, 6)):
                peer.send(pump, {rng.choice(keys): rng.choice(values)
                                 for _ in range(rng.randint(0, 5))})
            self.assertFalse(pump.serverIO.disconnecting)
            drop(pump)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertGreater(self.server.counters["bad_messages"], 500)


class DeviceBadBoxTests(SynchronousTestCase):
    def test_the_device_end_drops_bad_boxes_from_the_server_and_stays_up(self):
        clock = Clock()
        dev = Device(clock, "edge-a")
        proto = dev.client.buildProtocol(None)
        peer = BoxPeer()
        pump = iosim.connect(proto, iosim.FakeTransport(proto, False), peer,
                             iosim.FakeTransport(peer, True), clock=clock)
        peer.received.clear()
        for box in ({}, {b"_answer": b"99"}, {b"_command": b"\xff"}, {b"_error": b"77"}):
            peer.send(pump, box)
        self.assertEqual(dev.client.counters["bad_messages"], 4)
        self.assertFalse(pump.clientIO.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])


class ServiceTests(SynchronousTestCase):
    def test_the_client_service_reconnects_with_backoff_and_is_brought_up_to_date(self):
        reactor = MemoryReactorClock()
        settings = Settings("edge-a", version=1)
        server = DistributionServer(reactor, settings.snapshot_for, lambda d, f: None)
        TcpListenService(reactor, server.factory(),
                         f"tcp:{DEFAULT_PORT}:interface=127.0.0.1").startService()
        self.assertEqual(reactor.tcpServers[0][0], DEFAULT_PORT)
        dev = Device(reactor, "edge-a")
        service = client_service(dev.client, reactor, f"tcp:127.0.0.1:{DEFAULT_PORT}",
                                 initial_delay=1.0, max_delay=10.0, jitter=lambda: 0)
        self.assertIsInstance(service, ClientService)
        service.startService()
        self.addCleanup(service.stopService)
        link = iosim.ConnectionCompleter(reactor)
        link.failOnce()                                  # the server is not up yet
        self.assertEqual(reactor.tcpClients, [])
        reactor.advance(0.9)
        self.assertEqual(reactor.tcpClients, [])
        reactor.advance(0.1)                             # first retry after initial_delay
        reactor.advance(0)
        self.assertEqual(len(reactor.tcpClients), 1)
        link.failOnce()                                  # the second waits 1.5 times longer
        reactor.advance(1.4)
        self.assertEqual(reactor.tcpClients, [])
        reactor.advance(0.1)
        pump = link.succeedOnce()
        self.assertEqual([v for v, _ in dev.applied], [1])
        drop(pump)
        settings.bump()
        server.publish()
        self.assertEqual(server.device("edge-a")["connected"], False)
        reactor.advance(1.0)
        pump = link.succeedOnce()
        self.assertEqual([v for v, _ in dev.applied], [1, 2])
        self.assertEqual(dev.client.counters["registrations"], 2)
        self.assertTrue(server.device("edge-a")["up_to_date"])


class ConnectionLimitTests(SynchronousTestCase):
    def test_connections_past_the_limit_are_refused_and_counted(self):
        server = DistributionServer(Clock(), lambda device_id: (0, {}), lambda d, f: None)
        factory = server.factory()
        factory.max_connections = 2
        first, second = factory.buildProtocol(None), factory.buildProtocol(None)
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(server.counters["refused_connections"], 1)
        first.makeConnection(StringTransport())
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(None))   # a place became free
        self.assertIsNotNone(second)
