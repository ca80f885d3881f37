"""An ArrayPort and a FabricPort over an in-memory link (iosim, task.Clock): logins, access
control, write exchanges, data-in, ordering, aborts, timeouts, bad input and limits."""

from __future__ import annotations

import numpy as np
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import ct, els, fcip, fcp
from datapath.frames.fc import FcType, RCtl, Sof, Eof
from datapath.frames.fc4 import frame_kind
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.rio.errors import (ExchangeAborted, ExchangeLimitReached, ExchangeTimeout, LinkDown,
                            LoginRejected, NameNotFound, NotLoggedIn)
from rcn.rio.fabric import FabricConfig, VirtualStorageEntry, access_table
from rcn.rio.fcp import (DATA_OFFSET_ERROR, INVALID_FIELD_IN_CDB, SenseKey, ScsiResult,
                         check_condition, parse_sense)
from tests.rcn.rio.support import (ARRAY_ID, ARRAY_WWN, FORBIDDEN_WWN, PARTNER_WWN, STRANGER_WWN,
                                   VIRTUAL_IDS, Link, RecordingTarget, array_config, edge_config)

ORDERED = fcp.TaskAttribute.ORDERED
SIMPLE = fcp.TaskAttribute.SIMPLE
VIRTUAL_ID = VIRTUAL_IDS[PARTNER_WWN]


def pattern(size: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


class RioTestCase(SynchronousTestCase):
    """A link with a session to the partner; ``self.target`` serves the virtual storage."""

    edge_kw: dict = {}
    array_kw: dict = {}
    manual = False

    def setUp(self):
        self.target = RecordingTarget(manual=self.manual)
        self.link = Link(edge_config(**self.edge_kw), array_config(**self.array_kw))
        self.link.virtual().target = self.target

    def session(self, link=None):
        link = link or self.link
        d = link.array.session(PARTNER_WWN)
        link.flush()
        return self.successResultOf(d)

    def pump(self, d):
        self.link.flush()
        return d

    def kinds(self, sender: str) -> list[str]:
        return [frame_kind(f) for f in self.link.sent(sender)]


class LoginTest(RioTestCase):
    def test_fabric_login_on_link_up(self):
        self.assertEqual(self.link.array.port_id, ARRAY_ID)
        self.assertEqual(self.link.edge.array_wwn, ARRAY_WWN)
        acc = self.link.sent("edge")[0]
        self.assertEqual(acc.header["d_id"], ARRAY_ID)             # the assigned ID
        self.assertEqual(acc.header["s_id"], 0xFFFFFE)
        login = els.parse_els(acc.payload)
        self.assertTrue(login["common_features"] & els.FEATURE_F_PORT)
        flogi = self.link.sent("array")[0]
        self.assertEqual((flogi.header["s_id"], flogi.header["d_id"]), (0, 0xFFFFFE))

    def test_session_login_sequence(self):
        session = self.session()
        self.assertEqual(self.kinds("array"),
                         ["els_flogi", "els_plogi", "ct_gid_pn", "els_plogi", "els_prli"])
        self.assertEqual([f.header["d_id"] for f in self.link.sent("array")],
                         [0xFFFFFE, 0xFFFFFC, 0xFFFFFC, VIRTUAL_ID, VIRTUAL_ID])
        self.assertEqual(self.kinds("edge"), ["els_ls_acc", "els_ls_acc", "ct_accept",
                                              "els_ls_acc", "els_ls_acc"])
        gid = ct.parse_ct(self.link.sent("edge")[2].payload, request=False)
        self.assertEqual(gid["port_id"], VIRTUAL_ID)
        plogi_acc = els.parse_els(self.link.sent("edge")[3].payload)
        self.assertEqual(plogi_acc["port_name"], PARTNER_WWN)
        prli_acc = els.parse_els(self.link.sent("edge")[4].payload)
        self.assertEqual(prli_acc["response_code"], els.PRLI_REQUEST_EXECUTED)
        self.assertEqual(prli_acc["service_params"],
                         els.FCP_TARGET_FUNCTION | els.FCP_INITIATOR_FUNCTION
                         | els.FCP_WRITE_XFER_RDY_DISABLED)
        self.assertEqual(session.remote_id, VIRTUAL_ID)
        self.assertTrue(session.write_xfer_rdy_disabled)
        self.assertTrue(self.link.virtual().array_logged_in)
        login = self.link.edge.login(VIRTUAL_ID, ARRAY_ID)
        self.assertTrue(login.initiator)
        self.assertFalse(login.target)         # this array serves no RIOs
        # requests: first sequence, sequence initiative; replies: responder, last sequence
        for f in self.link.sent("array"):
            self.assertEqual(f.header["f_ctl"], 0x290000)
        for f in self.link.sent("edge"):
            self.assertEqual(f.header["f_ctl"] & ~3, 0x980000)
        self.assertEqual(len({f.header["ox_id"] for f in self.link.sent("array")}), 5)

    def test_concurrent_sessions_share_one_login(self):
        first = self.link.array.session(PARTNER_WWN)
        second = self.link.array.session(PARTNER_WWN)
        self.link.flush()
        session = self.successResultOf(first)
        self.assertIs(self.successResultOf(second), session)
        self.assertEqual(self.kinds("array").count("els_prli"), 1)
        self.assertIs(self.successResultOf(self.link.array.session(PARTNER_WWN)), session)

    def test_edge_without_first_burst(self):
        link = Link(edge_config(first_burst=False))
        self.assertFalse(self.session(link).write_xfer_rdy_disabled)

    def test_array_without_first_burst(self):
        link = Link(array=array_config(first_burst=False))
        self.assertFalse(self.session(link).write_xfer_rdy_disabled)

    def test_name_not_found(self):
        d = self.link.array.session(0x1122334455667788)
        self.link.flush()
        failure = self.failureResultOf(d, NameNotFound)
        self.assertEqual(failure.value.wwn, 0x1122334455667788)
        self.assertIn("11:22:33:44:55:66:77:88", str(failure.value))
        self.assertEqual(self.link.edge.counters["names_not_found"], 1)

    def test_els_before_flogi_rejected(self):
        link = Link(array=array_config(auto_login=False))
        link.array_protocol.send_frame(
            dict(r_ctl=RCtl.ELS_REQUEST, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.ELS,
                 f_ctl=0x290000, ox_id=0x77),
            els.build_login(els.ElsCommand.PLOGI, ARRAY_WWN, ARRAY_WWN))
        link.flush()
        rjt = els.parse_els(link.sent("edge")[0].payload)
        self.assertEqual((rjt["command_name"], rjt["explanation"]),
                         ("LS_RJT", els.EXPLAIN_NOT_LOGGED_IN))
        self.assertEqual(link.edge.counters["not_logged_in"], 1)

    def test_link_numbers_assign_port_ids(self):
        factory = self.link.server_factory
        other = factory.buildProtocol(None)
        self.assertEqual(other.endpoint.array_id, ARRAY_ID + 1)
        self.assertEqual(sorted(factory.ports), [0, 1])


class AccessControlTest(RioTestCase):
    def test_flogi_from_unknown_array_rejected(self):
        link = Link(array=array_config(port_wwn=STRANGER_WWN))     # FLOGI at link up
        self.assertEqual(link.edge.counters["access_denied"], 1)
        self.assertEqual(link.edge.counters["ls_rjt_sent"], 1)
        self.assertFalse(link.edge.fabric_logged_in)
        self.assertIsNone(link.array.port_id)
        d = link.array.session(PARTNER_WWN)        # a new attempt, rejected again
        link.flush()
        failure = self.failureResultOf(d, LoginRejected)
        self.assertEqual((failure.value.reason, failure.value.explanation),
                         (els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_INVALID_PORT_NAME))
        self.assertIn("FLOGI to ff.ff.fe rejected", str(failure.value))
        self.assertEqual(link.edge.counters["access_denied"], 2)

    def test_forbidden_virtual_storage_is_not_revealed(self):
        d = self.link.array.session(FORBIDDEN_WWN)
        self.link.flush()
        self.failureResultOf(d, NameNotFound)
        self.assertEqual(self.link.edge.counters["access_denied"], 1)

    def test_plogi_to_forbidden_virtual_storage_rejected(self):
        self.session()
        d = self.link.array.request(ARRAY_ID, VIRTUAL_IDS[FORBIDDEN_WWN], RCtl.ELS_REQUEST,
                                    FcType.ELS, els.build_login(els.ElsCommand.PLOGI, ARRAY_WWN,
                                                                ARRAY_WWN), "PLOGI")
        self.link.flush()
        rjt = els.parse_els(self.successResultOf(d).payload)
        self.assertEqual((rjt["command_name"], rjt["reason"], rjt["explanation"]),
                         ("LS_RJT", els.LsRjtReason.UNABLE_TO_PERFORM,
                          els.EXPLAIN_INVALID_PORT_NAME))
        self.assertEqual(self.link.edge.counters["access_denied"], 1)
        self.assertIsNone(self.link.edge.login(VIRTUAL_IDS[FORBIDDEN_WWN], ARRAY_ID))


    def test_access_withdrawn_logs_the_array_out(self):
        session = self.session()
        self.link.edge.config.access = access_table([])
        self.assertEqual(self.link.server_factory.recheck_access(), 1)
        self.link.flush()
        self.assertEqual(self.link.edge.counters["access_revoked"], 1)
        self.assertEqual(self.kinds("edge")[-1], "els_logo")
        self.assertEqual(self.kinds("array")[-1], "els_ls_acc")
        self.assertFalse(session.active)
        self.assertNotIn(PARTNER_WWN, self.link.array.sessions)
        self.failureResultOf(session.write(0, 0, bytes(512)), NotLoggedIn)
        self.assertEqual(self.link.edge.recheck_access(), 0)


class WriteTest(RioTestCase):
    def test_write_without_xfer_rdy(self):
        session = self.session()
        data = pattern(4096)
        d = self.pump(session.write(3, 0x1000, data))
        self.assertEqual(self.successResultOf(d), ScsiResult())
        command = self.target.commands[0]
        self.assertEqual((command.lun, command.parsed["lba"], command.parsed["opcode_name"]),
                         (3, 0x1000, "WRITE_16"))
        self.assertEqual(command.data, data)
        self.assertEqual((command.initiator_wwn, command.target_wwn), (ARRAY_WWN, PARTNER_WWN))
        self.assertEqual((command.initiator_port_id, command.target_port_id),
                         (ARRAY_ID, VIRTUAL_ID))
        frames = self.link.sent("array")[5:]
        self.assertEqual([frame_kind(f) for f in frames], ["fcp_cmnd", "fcp_data", "fcp_data"])
        cmnd, first, last = frames
        self.assertEqual(cmnd.header["f_ctl"], 0x280000)        # keeps the initiative
        self.assertEqual([first.header["f_ctl"], last.header["f_ctl"]], [0x000008, 0x090008])
        self.assertEqual([first.header["parameter"], last.header["parameter"]], [0, 2048])
        self.assertEqual([first.header["seq_cnt"], last.header["seq_cnt"]], [0, 1])
        self.assertEqual([(first.sof, first.eof), (last.sof, last.eof)],
                         [(Sof.I3, Eof.N), (Sof.N3, Eof.T)])
        self.assertNotEqual(cmnd.header["seq_id"], first.header["seq_id"])
        rsp = self.link.sent("edge")[-1]
        self.assertEqual((frame_kind(rsp), rsp.header["f_ctl"]), ("fcp_rsp", 0x980000))
        self.assertEqual(rsp.header["ox_id"], cmnd.header["ox_id"])
        self.assertNotIn("fcp_xfer_rdy", self.kinds("edge"))
        self.assertEqual(len(self.link.edge.table), 0)
        self.assertEqual(len(self.link.array.table), 0)

    def test_write_with_xfer_rdy(self):
        link = self.link = Link(edge_config(first_burst=False))
        link.virtual().target = self.target
        session = self.session()
        data = pattern(3072)
        d = self.pump(session.write(0, 7, data, fua=True))
        self.assertTrue(self.successResultOf(d).good)
        self.assertEqual(self.target.commands[0].data, data)
        self.assertEqual(self.target.commands[0].parsed["cdb_flags"], 0x08)
        array, edge = link.sent("array")[5:], link.sent("edge")[5:]
        self.assertEqual([frame_kind(f) for f in array], ["fcp_cmnd", "fcp_data", "fcp_data"])
        self.assertEqual([frame_kind(f) for f in edge], ["fcp_xfer_rdy", "fcp_rsp"])
        self.assertEqual(array[0].header["f_ctl"], 0x290000)
        xfer = edge[0]
        self.assertEqual(xfer.header["f_ctl"], 0x890000)
        self.assertEqual(fcp.parse_xfer_rdy(xfer.payload),
                         dict(relative_offset=0, burst_length=3072, reserved=0))
        rx_id = xfer.header["rx_id"]
        self.assertNotEqual(rx_id, 0xFFFF)
        self.assertEqual({f.header["rx_id"] for f in array[1:]}, {rx_id})
        self.assertEqual(len(array[2].payload), 1024)
        self.assertEqual(link.edge.counters["xfer_rdy_sent"], 1)

    def test_array_that_waits_for_xfer_rdy(self):
        """The edge offers first burst; an array that does not use it still gets XFER_RDY."""
        link = self.link = Link(array=array_config(first_burst=False))
        link.virtual().target = self.target
        d = self.pump(self.session().write(0, 0, pattern(512)))
        self.assertTrue(self.successResultOf(d).good)
        self.assertIn("fcp_xfer_rdy", [frame_kind(f) for f in link.sent("edge")])

    def test_64k_write_is_32_data_frames(self):
        session = self.session()
        data = pattern(64 << 10, seed=5)
        d = self.pump(session.write(1, 2048, data))
        self.assertTrue(self.successResultOf(d).good)
        self.assertEqual(self.target.commands[0].data, data)
        self.assertEqual(self.target.commands[0].parsed["transfer_length"], 128)
        frames = [f for f in self.link.sent("array") if frame_kind(f) == "fcp_data"]
        self.assertEqual(len(frames), 32)
        self.assertEqual([f.header["parameter"] for f in frames], list(range(0, 64 << 10, 2048)))
        self.assertEqual([f.header["seq_cnt"] for f in frames], list(range(32)))
        self.assertEqual({len(f.payload) for f in frames}, {2048})
        self.assertEqual({f.header["seq_id"] for f in frames}, {frames[0].header["seq_id"]})
        self.assertEqual([f.sof for f in frames], [Sof.I3] + [Sof.N3] * 31)
        self.assertEqual([f.eof for f in frames], [Eof.N] * 31 + [Eof.T])

    def test_write_data_takes_the_fast_path(self):
        session = self.session()
        edge = self.link.edge
        general = []
        original = edge.frame_received
        edge.frame_received = lambda frame: (general.append(frame_kind(frame)), original(frame))
        d = self.pump(session.write(1, 0, pattern(16 << 10, seed=2)))
        self.assertTrue(self.successResultOf(d).good)
        self.assertEqual(general, ["fcp_cmnd"])       # the 8 data frames went the fast way
        self.assertEqual(self.target.commands[0].data, pattern(16 << 10, seed=2))

    def test_bursts_of_max_burst(self):
        link = self.link = Link(edge_config(first_burst=False, max_burst=8192))
        link.virtual().target = self.target
        data = pattern(40960, seed=2)
        d = self.pump(self.session().write(0, 0, data))
        self.assertTrue(self.successResultOf(d).good)
        self.assertEqual(self.target.commands[0].data, data)
        xfers = [fcp.parse_xfer_rdy(f.payload) for f in link.sent("edge", RCtl.FCP_XFER_RDY)]
        self.assertEqual([(x["relative_offset"], x["burst_length"]) for x in xfers],
                         [(n, 8192) for n in range(0, 40960, 8192)])
        data_frames = link.sent("array", RCtl.FCP_DATA)
        self.assertEqual(len({f.header["seq_id"] for f in data_frames}), 5)   # one per burst

    def test_check_condition_and_residual_reach_the_initiator(self):
        sense = check_condition(SenseKey.MEDIUM_ERROR, (0x0C, 0x00)).sense
        self.target.result = ScsiResult(fcp.ScsiStatus.CHECK_CONDITION, sense, residual=512)
        d = self.pump(self.session().write(0, 0, pattern(1024)))
        result = self.successResultOf(d)
        self.assertEqual(result.status, fcp.ScsiStatus.CHECK_CONDITION)
        self.assertEqual(result.sense, sense)
        self.assertEqual(parse_sense(result.sense), (SenseKey.MEDIUM_ERROR, 0x0C, 0x00))
        self.assertEqual(result.residual, 512)

    def test_write_argument_errors(self):
        session = self.session()
        self.failureResultOf(session.write(0, 0, b"short"), ValueError)
        self.failureResultOf(session.write(0, 0, b""), ValueError)
        self.failureResultOf(session.execute(0, b"\x00", data_out=bytes(512),
                                             data_in_length=512), ValueError)

    def test_target_exception_becomes_check_condition(self):
        def broken(command):
            raise RuntimeError("data plane bug")
        self.target.result = broken
        d = self.pump(self.session().write(0, 0, pattern(512)))
        result = self.successResultOf(d)
        self.assertEqual(parse_sense(result.sense)[0], SenseKey.HARDWARE_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.link.edge.counters["target_errors"], 1)


class InFlightTest(RioTestCase):
    manual = True

    def test_exchanges_complete_in_the_order_the_target_answers(self):
        session = self.session()
        results = []
        for n in range(5):
            d = session.write(0, n * 8, pattern(4096, seed=n))
            d.addCallback(lambda result, n=n: results.append(n))
        self.link.flush()
        self.assertEqual([c.parsed["lba"] for c in self.target.commands], [0, 8, 16, 24, 32])
        self.assertEqual(len({c.ox_id for c in self.target.commands}), 5)
        self.assertEqual(self.link.array.table.originated_count, 5)
        self.assertEqual(self.link.edge.table.responded_count, 5)
        for n in (3, 1, 4, 0, 2):
            self.target.pending[n][1].callback(ScsiResult())
            self.link.flush()
        self.assertEqual(results, [3, 1, 4, 0, 2])
        self.assertEqual(len(self.link.edge.table), 0)

    def test_ordered_task_waits_for_older_and_blocks_newer(self):
        session = self.session()
        for n, attribute in enumerate((SIMPLE, ORDERED, SIMPLE, SIMPLE)):
            session.write(0, n, pattern(512), attribute=attribute)
        self.link.flush()
        executed = lambda: [c.parsed["lba"] for c in self.target.commands]   # noqa: E731
        self.assertEqual(executed(), [0])
        self.target.pending[0][1].callback(ScsiResult())
        self.link.flush()
        self.assertEqual(executed(), [0, 1])
        self.target.pending[1][1].callback(ScsiResult())
        self.link.flush()
        self.assertEqual(executed(), [0, 1, 2, 3])          # the SIMPLE ones run together

    def test_target_that_orders_by_dispatch_pipelines_ordered_tasks(self):
        self.target.orders_by_dispatch = True
        session = self.session()
        for n, attribute in enumerate((ORDERED, ORDERED, SIMPLE, ORDERED)):
            session.write(0, n, pattern(512), attribute=attribute)
        self.link.flush()
        # all started at once, in arrival order, none completed yet
        self.assertEqual([c.parsed["lba"] for c in self.target.commands], [0, 1, 2, 3])
        self.assertEqual(len(self.target.pending), 4)

    def test_ordered_on_another_lun_is_independent(self):
        session = self.session()
        session.write(0, 0, pattern(512), attribute=ORDERED)
        session.write(1, 0, pattern(512), attribute=ORDERED)
        session.write(0, 1, pattern(512), attribute=ORDERED)
        self.link.flush()
        self.assertEqual([(c.lun, c.parsed["lba"]) for c in self.target.commands],
                         [(0, 0), (1, 0)])

    def test_head_of_queue_runs_at_once(self):
        session = self.session()
        session.write(0, 0, pattern(512), attribute=ORDERED)
        session.write(0, 1, pattern(512), attribute=ORDERED)
        session.write(0, 2, pattern(512), attribute=fcp.TaskAttribute.HEAD_OF_QUEUE)
        self.link.flush()
        self.assertEqual([c.parsed["lba"] for c in self.target.commands], [0, 2])


class EdgeToArrayTest(SynchronousTestCase):
    """RIO WR from the edge (a target edge applying writes) to the array's own target."""

    def setUp(self):
        self.array_target = RecordingTarget(manual=True)
        self.link = Link(array=array_config(target=self.array_target))
        d = self.link.array.session(PARTNER_WWN)
        self.link.flush()
        self.session = self.successResultOf(d)
        self.vs = self.link.virtual()

    def test_rio_wr_to_the_array(self):
        data = pattern(6144, seed=9)
        d = self.vs.send_write(2, 0x40, data)
        self.link.flush()
        command = self.array_target.commands[0]
        self.assertEqual(command.data, data)
        self.assertEqual(command.attribute, ORDERED)
        self.assertEqual((command.initiator_wwn, command.target_wwn), (PARTNER_WWN, ARRAY_WWN))
        self.assertEqual((command.initiator_port_id, command.target_port_id),
                         (VIRTUAL_ID, ARRAY_ID))
        self.array_target.pending[0][1].callback(ScsiResult())
        self.link.flush()
        self.assertTrue(self.successResultOf(d).good)
        edge = [frame_kind(f) for f in self.link.sent("edge")[5:]]
        array = [frame_kind(f) for f in self.link.sent("array")[5:]]
        # both sides disabled write XFER_RDY at PRLI: the data follows the command at once
        self.assertEqual(edge, ["fcp_cmnd"] + ["fcp_data"] * 3)
        self.assertEqual(array, ["fcp_rsp"])
        cmnd = self.link.sent("edge")[5]
        self.assertEqual((cmnd.header["s_id"], cmnd.header["d_id"], cmnd.header["f_ctl"]),
                         (VIRTUAL_ID, ARRAY_ID, 0x280000))

    def test_rio_wr_waits_for_xfer_rdy_when_the_array_wants_it(self):
        target = RecordingTarget()
        link = Link(array=array_config(target=target, first_burst=False))
        d = link.array.session(PARTNER_WWN)
        link.flush()
        self.successResultOf(d)
        done = link.virtual().send_write(2, 0x40, pattern(4096, seed=3))
        link.flush()
        self.assertTrue(self.successResultOf(done).good)
        array = [frame_kind(f) for f in link.sent("array")[5:]]
        self.assertEqual(array, ["fcp_xfer_rdy", "fcp_rsp"])

    def test_ordered_writes_applied_one_at_a_time(self):
        for n in range(3):
            self.vs.send_write(0, n, pattern(512, seed=n))
        self.link.flush()
        for n in range(3):
            self.assertEqual([c.parsed["lba"] for c in self.array_target.commands],
                             list(range(n + 1)))
            self.array_target.pending[n][1].callback(ScsiResult())
            self.link.flush()

    def test_array_without_target_function(self):
        link = Link()
        d = link.array.session(PARTNER_WWN)
        link.flush()
        self.successResultOf(d)
        failure = self.failureResultOf(link.virtual().send_write(0, 0, bytes(512)), NotLoggedIn)
        self.assertIn("no PLOGI + PRLI with an FCP target", str(failure.value))

    def test_control_command_to_the_array(self):
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, 7, source_lun=4)
        d = self.vs.send_command(4, cdb)
        self.link.flush()
        command = self.array_target.commands[0]
        self.assertEqual(command.parsed["service_action_name"], "SUSPEND")
        self.array_target.pending[0][1].callback(ScsiResult())
        self.link.flush()
        self.assertTrue(self.successResultOf(d).good)


class ControlTest(RioTestCase):
    def bitmap(self) -> DifferentialBitmap:
        bitmap = DifferentialBitmap(64 << 30)
        rng = np.random.default_rng(3)
        lba = rng.integers(0, (64 << 30) // 512 - 128, 1000, dtype=np.uint64)
        bitmap.mark_extents(lba, np.full(1000, 128, dtype=np.uint64), 512)
        return bitmap

    def test_resync_returns_dpok_bitmap_as_data_in(self):
        bitmap = self.bitmap()
        serial = bitmap.serialize()
        self.assertGreater(len(serial), 2 * 2048)              # several data-in frames

        def answer(command):
            if command.parsed["opcode_name"] != "RCN_CONTROL":
                return check_condition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
            self.assertEqual(command.parsed["service_action_name"], "RESYNC")
            self.assertEqual(command.data_in_length, 16384)
            return ScsiResult(data_in=serial)
        self.target.result = answer
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 9, source_lun=1,
                                    allocation_length=16384)
        d = self.pump(self.session().execute(2, cdb, data_in_length=16384))
        result = self.successResultOf(d)
        self.assertTrue(result.good)
        self.assertEqual(DifferentialBitmap.deserialize(result.data_in), bitmap)
        self.assertEqual(result.residual, 16384 - len(serial))
        data = self.link.sent("edge", RCtl.FCP_DATA)
        self.assertEqual(len(data), -(-len(serial) // 2048))
        self.assertEqual({f.header["f_ctl"] & ~3 for f in data[:-1]}, {0x800008})
        self.assertEqual(data[-1].header["f_ctl"] & ~3, 0x880008)   # End_Sequence, no initiative
        cmnd = [f for f in self.link.sent("array") if frame_kind(f) == "fcp_cmnd"][0]
        self.assertEqual(fcp.parse_fcp_cmnd(cmnd.payload)["rddata"], 1)

    def test_data_in_beyond_allocation_is_cut(self):
        self.target.result = ScsiResult(data_in=pattern(5000))
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 9, 1, allocation_length=4096)
        d = self.pump(self.session().execute(2, cdb, data_in_length=4096))
        result = self.successResultOf(d)
        self.assertEqual(result.data_in, pattern(5000)[:4096])
        self.assertEqual(result.residual, -904)


class AbortTest(RioTestCase):
    manual = True

    def test_initiator_timeout_sends_abts(self):
        self.link = Link(edge_config(exchange_timeout=60))
        self.link.virtual().target = self.target
        session = self.session()
        d = self.pump(session.write(0, 0, pattern(1024)))
        self.link.clock.advance(31)
        self.link.flush()
        failure = self.failureResultOf(d, ExchangeTimeout)
        self.assertIn("WRITE_16 with 01.02.00 got no answer in 30 s", str(failure.value))
        self.assertEqual(self.kinds("array")[-1], "bls_abts")
        self.assertEqual(self.kinds("edge")[-1], "bls_ba_acc")
        self.assertEqual(len(self.link.array.table), 0)     # BA_ACC freed the OX_ID
        self.assertEqual(len(self.link.edge.table), 0)      # the target dropped the command
        self.target.pending[0][1].callback(ScsiResult())    # a late answer goes nowhere
        self.link.flush()
        self.assertEqual(self.link.edge.counters["results_discarded"], 1)
        self.assertNotIn("fcp_rsp", self.kinds("edge"))

    def test_timeouts_on_both_sides(self):
        """Same timeout both sides: the target drops first, the ABTS gets BA_RJT, which also
        frees the initiator's OX_ID."""
        d = self.pump(self.session().write(0, 0, pattern(1024)))
        self.link.clock.advance(31)
        self.link.flush()
        self.failureResultOf(d, ExchangeTimeout)
        self.assertEqual(self.kinds("edge")[-1], "bls_ba_rjt")
        self.assertEqual(len(self.link.array.table), 0)
        self.assertEqual(len(self.link.edge.table), 0)
        self.assertEqual(self.link.edge.counters["timeouts"], 1)

    def test_array_cancels_a_write(self):
        d = self.pump(self.session().write(0, 0, pattern(1024)))
        d.cancel()
        self.link.flush()
        self.failureResultOf(d, CancelledError)
        abts = self.link.sent("array")[-1]
        self.assertEqual((frame_kind(abts), abts.header["f_ctl"]), ("bls_abts", 0x090000))
        self.assertEqual(self.kinds("edge")[-1], "bls_ba_acc")
        self.assertEqual(self.link.edge.counters["aborted"], 1)
        self.assertEqual(self.link.edge.fcp_target.buffered, 0)
        self.assertEqual(len(self.link.array.table), 0)

    def test_edge_aborts_its_rio_wr(self):
        array_target = RecordingTarget(manual=True)
        link = Link(array=array_config(target=array_target))
        d = link.array.session(PARTNER_WWN)
        link.flush()
        self.successResultOf(d)
        d = link.virtual().send_write(0, 0, pattern(512))
        link.flush()
        d.cancel()
        link.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(frame_kind(link.sent("edge")[-1]), "bls_abts")
        self.assertEqual(frame_kind(link.sent("array")[-1]), "bls_ba_acc")
        self.assertEqual(link.array.counters["abts_received"], 1)
        self.assertEqual(len(link.array.table), 0)

    def test_responder_aborts(self):
        """ABTS from the target side: the initiator's Deferred fails with ExchangeAborted."""
        d = self.pump(self.session().write(0, 0, pattern(512)))
        exchange = self.link.edge.table.exchanges()[0]
        exchange.abort(ExchangeAborted(exchange.what, exchange.remote_id, "test"))
        self.link.flush()
        failure = self.failureResultOf(d, ExchangeAborted)
        self.assertIn("ABTS from the peer", str(failure.value))
        abts = self.link.sent("edge")[-1]
        self.assertEqual((frame_kind(abts), abts.header["f_ctl"]), ("bls_abts", 0x890000))
        self.assertEqual(self.kinds("array")[-1], "bls_ba_acc")
        self.assertEqual(len(self.link.edge.table), 0)

    def test_abts_for_unknown_exchange(self):
        self.session()
        self.link.array_protocol.send_frame(dict(r_ctl=RCtl.BLS_ABTS, d_id=VIRTUAL_ID,
                                                 s_id=ARRAY_ID, type=FcType.BLS,
                                                 f_ctl=0x090000, ox_id=0x4321))
        self.link.flush()
        self.assertEqual(self.kinds("edge")[-1], "bls_ba_rjt")
        self.assertEqual(self.link.edge.counters["ba_rjt_sent"], 1)

    def test_logo_aborts_open_exchanges(self):
        session = self.session()
        d = self.pump(session.write(0, 0, pattern(512)))
        logout = self.pump(session.logout())
        self.successResultOf(logout)
        self.failureResultOf(d, ExchangeAborted)
        self.assertIsNone(self.link.edge.login(VIRTUAL_ID, ARRAY_ID))
        self.assertEqual(len(self.link.edge.table), 0)
        self.assertFalse(session.active)
        self.failureResultOf(session.write(0, 0, bytes(512)), NotLoggedIn)

    def test_link_down_fails_open_exchanges(self):
        d = self.pump(self.session().write(0, 0, pattern(512)))
        self.link.array_protocol.transport.loseConnection()
        self.link.flush()
        self.failureResultOf(d, LinkDown)
        self.assertEqual(len(self.link.array.table), 0)
        self.assertEqual(len(self.link.edge.table), 0)
        self.assertEqual(self.link.server_factory.ports, {})
        self.assertEqual(self.link.clock.getDelayedCalls(), [])
        self.failureResultOf(self.link.array.session(PARTNER_WWN), LinkDown)


class BadInputTest(RioTestCase):
    def test_garbage_closes_the_link(self):
        session = self.session()
        self.link.array_protocol.transport.write(b"\x01\x02" + bytes(100))
        self.link.flush()
        edge = self.link.edge_protocol
        self.assertEqual(edge.counters["stream_errors"], 1)
        self.assertTrue(edge.transport.disconnected)
        self.assertTrue(self.link.array_protocol.transport.disconnected)
        self.failureResultOf(session.write(0, 0, bytes(512)), NotLoggedIn)

    def test_bad_crc_frame_dropped_link_stays(self):
        session = self.session()
        bad = bytearray(fcip.build_fcip_frame(dict(r_ctl=RCtl.FCP_CMND, d_id=VIRTUAL_ID,
                                                   s_id=ARRAY_ID, type=FcType.FCP,
                                                   f_ctl=0x290000, ox_id=0x999),
                                              fcp.build_fcp_cmnd(0, fcp.build_write16(0, 1), 512,
                                                                 write=True)))
        bad[-6] ^= 0x40                                         # a CRC bit
        self.link.array_protocol.transport.write(bytes(bad))
        self.link.flush()
        self.assertEqual(self.link.edge_protocol.counters["crc_errors"], 1)
        self.assertEqual(self.target.commands, [])
        d = self.pump(session.write(0, 0, pattern(512)))
        self.assertTrue(self.successResultOf(d).good)

    def test_command_from_port_not_logged_in(self):
        """FCP_CMND without PLOGI/PRLI: LOGO back, counted, nothing executed."""
        header = dict(r_ctl=RCtl.FCP_CMND, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.FCP,
                      f_ctl=0x290000, ox_id=0x700)
        payload = fcp.build_fcp_cmnd(0, fcp.build_write16(0, 1), 512, write=True)
        self.link.array_protocol.send_frame(header, payload)
        self.link.array_protocol.send_frame(dict(header, ox_id=0x701), payload)
        self.link.flush()
        self.assertEqual(self.target.commands, [])
        self.assertEqual(self.link.edge.counters["rejected_not_logged_in"], 2)
        logos = [f for f in self.link.sent("edge") if frame_kind(f) == "els_logo"]
        self.assertEqual(len(logos), 1)                       # one LOGO outstanding at a time
        logo = els.parse_els(logos[0].payload)
        self.assertEqual((logo["port_id"], logo["port_name"]), (VIRTUAL_ID, PARTNER_WWN))
        self.assertEqual(self.kinds("array")[-1], "els_ls_acc")
        self.assertEqual(len(self.link.edge.table), 0)

    def test_out_of_order_data_gets_check_condition(self):
        self.session()
        base = dict(d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.FCP, ox_id=0x800)
        send = self.link.array_protocol.send_frame
        send(dict(base, r_ctl=RCtl.FCP_CMND, f_ctl=0x280000),
             fcp.build_fcp_cmnd(0, fcp.build_write16(0, 8), 4096, write=True))
        send(dict(base, r_ctl=RCtl.FCP_DATA, f_ctl=0x000008, seq_id=1, parameter=2048),
             bytes(2048))
        self.link.flush()
        rsp = fcp.parse_fcp_rsp(self.link.sent("edge", RCtl.FCP_RSP)[-1].payload)
        self.assertEqual(rsp["status_name"], "CHECK_CONDITION")
        self.assertEqual(parse_sense(bytes.fromhex(rsp["sense"])),
                         (SenseKey.ABORTED_COMMAND, *DATA_OFFSET_ERROR))
        self.assertEqual(self.link.edge.counters["data_errors"], 1)
        self.assertEqual(self.link.edge.fcp_target.buffered, 0)
        self.assertEqual(self.target.commands, [])
        self.assertEqual(len(self.link.edge.table), 0)

    def test_undecodable_command(self):
        self.session()
        cdb = bytes([fcp.Opcode.RCN_CONTROL, 99]) + bytes(14)      # unknown service action
        self.link.array_protocol.send_frame(
            dict(r_ctl=RCtl.FCP_CMND, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.FCP,
                 f_ctl=0x290000, ox_id=0x801), fcp.build_fcp_cmnd(0, cdb, 0))
        self.link.flush()
        rsp = fcp.parse_fcp_rsp(self.link.sent("edge", RCtl.FCP_RSP)[-1].payload)
        self.assertEqual(parse_sense(bytes.fromhex(rsp["sense"])),
                         (SenseKey.ILLEGAL_REQUEST, *INVALID_FIELD_IN_CDB))
        self.assertEqual(self.link.edge.counters["bad_commands"], 1)

    def test_unknown_els_and_stray_frames(self):
        self.session()
        send = self.link.array_protocol.send_frame
        send(dict(r_ctl=RCtl.ELS_REQUEST, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.ELS,
                  f_ctl=0x290000, ox_id=0x900), bytes([0x7E, 0, 0, 0]))
        send(dict(r_ctl=RCtl.FCP_DATA, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=FcType.FCP,
                  f_ctl=0x090008, ox_id=0x901), bytes(64))
        self.link.flush()
        rjt = els.parse_els(self.link.sent("edge")[-1].payload)
        self.assertEqual((rjt["command_name"], rjt["reason"]),
                         ("LS_RJT", els.LsRjtReason.INVALID_COMMAND))
        self.assertEqual(self.link.edge.counters["unmatched_frames"], 1)
        self.assertEqual(self.link.edge.counters["bad_requests"], 1)


class LimitTest(RioTestCase):
    manual = True

    def test_initiator_exchange_limit(self):
        link = self.link = Link(array=array_config(max_exchanges=4))
        link.virtual().target = self.target
        session = self.session()
        pending = [session.write(0, n, pattern(512)) for n in range(4)]
        failure = self.failureResultOf(session.write(0, 9, pattern(512)), ExchangeLimitReached)
        self.assertIn("4 exchanges already open", str(failure.value))
        link.flush()
        self.assertEqual(len(self.target.commands), 4)
        self.target.pending[0][1].callback(ScsiResult())
        link.flush()
        self.assertTrue(self.successResultOf(pending[0]).good)
        session.write(0, 9, pattern(512))                  # room again
        link.flush()
        self.assertEqual(len(self.target.commands), 5)
        self.assertEqual(link.array.counters["limit_refused"], 1)

    def test_target_exchange_limit_answers_task_set_full(self):
        link = self.link = Link(edge_config(max_exchanges=2))
        link.virtual().target = self.target
        session = self.session()
        writes = [session.write(0, n, pattern(512)) for n in range(3)]
        link.flush()
        self.assertEqual(self.successResultOf(writes[2]).status, fcp.ScsiStatus.TASK_SET_FULL)
        self.assertEqual(len(self.target.commands), 2)
        self.assertEqual(link.edge.counters["task_set_full"], 1)

    def test_buffered_write_data_limit_answers_busy(self):
        link = self.link = Link(edge_config(max_buffered=8192))
        link.virtual().target = self.target
        session = self.session()
        writes = [session.write(0, n * 8, pattern(4096)) for n in range(3)]
        link.flush()
        self.assertEqual(self.successResultOf(writes[2]).status, fcp.ScsiStatus.BUSY)
        self.assertEqual(link.edge.counters["busy"], 1)
        self.assertEqual(link.edge.fcp_target.buffered, 8192)
        self.target.pending[0][1].callback(ScsiResult())
        link.flush()
        self.assertEqual(link.edge.fcp_target.buffered, 4096)
        self.assertTrue(self.successResultOf(writes[0]).good)
        again = session.write(0, 64, pattern(4096))
        link.flush()
        self.assertEqual(len(self.target.commands), 3)
        self.assertNoResult(again)

    def test_transfer_limit(self):
        link = self.link = Link(edge_config(max_transfer=8192))
        link.virtual().target = self.target
        d = self.session().write(0, 0, pattern(16384))
        link.flush()
        result = self.successResultOf(d)
        self.assertEqual(parse_sense(result.sense), (SenseKey.ILLEGAL_REQUEST,
                                                     *INVALID_FIELD_IN_CDB))
        self.assertEqual(self.target.commands, [])
        self.assertEqual(link.edge.counters["unmatched_frames"], 8)    # its data, dropped

    def test_login_limit(self):
        other = 0x500A098000000003
        config = edge_config(
            virtual_storages=[VirtualStorageEntry(wwn=PARTNER_WWN, partner_wwn=PARTNER_WWN),
                              VirtualStorageEntry(wwn=other, partner_wwn=other)],
            access=access_table([(PARTNER_WWN, ARRAY_WWN), (other, ARRAY_WWN)]))
        link = Link(config, array_config(max_logins=1))
        first, second = link.array.session(PARTNER_WWN), link.array.session(other)
        link.flush()
        self.successResultOf(first)
        self.assertIn("max_logins", str(self.failureResultOf(second, NotLoggedIn).value))

    def test_link_limit(self):
        factory = Link(edge_config(max_links=1)).server_factory
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.refused, 1)

    def test_config_checks(self):
        self.assertRaises(ValueError, edge_config, virtual_id_base=0x010100)
        self.assertRaises(ValueError, edge_config, array_id_base=0xFFFFF0)
        self.assertRaises(ValueError, FabricConfig, access=lambda a, v: True, virtual_storages=[
            VirtualStorageEntry(wwn=1, partner_wwn=2), VirtualStorageEntry(wwn=1, partner_wwn=3)])


class ShutdownTest(RioTestCase):
    def test_shutdown_logs_out_and_closes(self):
        self.session()
        d = self.link.array.shutdown()
        self.link.flush()
        self.successResultOf(d)
        logos = [f.header["d_id"] for f in self.link.sent("array") if frame_kind(f) == "els_logo"]
        self.assertEqual(logos, [VIRTUAL_ID, 0xFFFFFE])
        self.assertFalse(self.link.edge.fabric_logged_in)
        self.assertTrue(self.link.array_protocol.transport.disconnected)

    def test_virtual_wwn_variant_hook(self):
        config = edge_config(virtual_storages=[VirtualStorageEntry(
            wwn=PARTNER_WWN, partner_wwn=0x500A0980000000BB, partner_edge_id="edge-b")])
        link = Link(config)
        vs = link.virtual()
        self.assertTrue(vs.is_virtual_wwn)
        self.assertEqual(vs.partner_wwn, 0x500A0980000000BB)
        self.assertFalse(self.link.virtual().is_virtual_wwn)


class ReconfigureTest(RioTestCase):
    """Tables 404 and 405 change while the link is up (the management server's snapshot)."""

    NEW_WWN = 0x500A0980000000CC

    def entries(self, *wwns):
        return [VirtualStorageEntry(wwn=w, partner_wwn=w, partner_edge_id="edge-b") for w in wwns]

    def test_added_virtual_storage_is_found_and_removed_one_logs_the_array_out(self):
        self.session()
        factory = self.link.server_factory
        factory.reconfigure(self.entries(PARTNER_WWN, self.NEW_WWN),
                            access_table([(PARTNER_WWN, ARRAY_WWN), (self.NEW_WWN, ARRAY_WWN)]))
        edge = self.link.edge
        self.assertIsNone(edge.virtual_storage(FORBIDDEN_WWN))
        new = edge.virtual_storage(self.NEW_WWN)
        self.assertEqual(new.port_id, VIRTUAL_IDS[FORBIDDEN_WWN])     # the freed ID
        self.assertEqual(edge.virtual_storage(PARTNER_WWN).port_id, VIRTUAL_ID)   # kept
        d = self.link.array.session(self.NEW_WWN)
        self.link.flush()
        self.assertTrue(self.successResultOf(d).active)
        # the partner's row goes: the array is logged out of it with a LOGO
        factory.reconfigure(self.entries(self.NEW_WWN), access_table([(self.NEW_WWN, ARRAY_WWN)]))
        self.link.flush()
        logos = [f for f in self.link.sent("edge") if frame_kind(f) == "els_logo"]
        self.assertEqual([f.header["s_id"] for f in logos], [VIRTUAL_ID])
        self.assertIsNone(edge.virtual_storage(PARTNER_WWN))
        self.assertEqual(factory.config.virtual_storages, self.entries(self.NEW_WWN))

    def test_access_withdrawn_by_a_new_table(self):
        self.session()
        self.link.server_factory.reconfigure(self.entries(PARTNER_WWN), access_table([]))
        self.link.flush()
        self.assertEqual(self.link.edge.counters["access_revoked"], 1)
        self.assertFalse(self.link.virtual().array_logged_in)
