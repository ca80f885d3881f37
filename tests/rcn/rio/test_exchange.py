"""ExchangeTable: ID allocation, limits, timeouts, ABTS / BA_ACC / BA_RJT."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import els
from datapath.frames.fc import FcFrame, FcType, RCtl
from rcn.rio.errors import ExchangeAborted, ExchangeLimitReached, ExchangeTimeout, LinkDown
from rcn.rio.exchange import (ABORTING, CLOSED, EOF_N, EOF_T, OPEN, SOF_I3, SOF_N3, ExchangeTable)

LOCAL, REMOTE = 0x010200, 0x010100


class FakeLink:
    """Records send_fc calls as header dicts."""

    def __init__(self):
        self.sent = []

    def send_fc(self, r_ctl, d_id, s_id, fc_type, f_ctl, seq_id, seq_cnt, ox_id, rx_id,
                parameter, payload, sof, eof):
        self.sent.append(dict(r_ctl=r_ctl, d_id=d_id, s_id=s_id, type=fc_type, f_ctl=f_ctl,
                              seq_id=seq_id, seq_cnt=seq_cnt, ox_id=ox_id, rx_id=rx_id,
                              parameter=parameter, payload=bytes(payload), sof=sof, eof=eof))


class Handler:
    def __init__(self):
        self.frames = []
        self.ended = []

    def frame_received(self, exchange, frame):
        self.frames.append(frame)

    def exchange_ended(self, exchange, error):
        self.ended.append(error)


def frame(r_ctl, s_id, d_id, ox_id, rx_id=0xFFFF, f_ctl=0x090000, fc_type=FcType.BLS,
          payload=b""):
    return FcFrame(dict(r_ctl=r_ctl, d_id=d_id, cs_ctl=0, s_id=s_id, type=fc_type, f_ctl=f_ctl,
                        seq_id=0, df_ctl=0, seq_cnt=0, ox_id=ox_id, rx_id=rx_id, parameter=0),
                   payload, True)


class ExchangeTableTest(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.table = ExchangeTable(self.clock, max_exchanges=8, timeout=30, abort_timeout=10,
                                   tick=1)
        self.link = FakeLink()
        self.table.link = self.link

    def originate(self, handler=None):
        return self.table.originate(LOCAL, REMOTE, handler or Handler(), "WRITE_16")

    # -- IDs ----------------------------------------------------------------------------
    def test_ox_ids_round_robin_skip_ffff_and_open_ones(self):
        self.assertEqual([self.originate().ox_id for _ in range(3)], [0, 1, 2])
        self.table._next_ox = 0xFFFE
        self.assertEqual(self.originate().ox_id, 0xFFFE)
        self.assertEqual(self.originate().ox_id, 3)      # 0xFFFF skipped, 0..2 still open
        self.table.originated(1).close()
        self.table._next_ox = 0
        self.assertEqual(self.originate().ox_id, 1)      # the one freed, not 0 (open)

    def test_rx_ids_never_reuse_open_ones(self):
        first = self.table.respond(LOCAL, REMOTE, 0x10, Handler(), "WRITE_16")
        second = self.table.respond(LOCAL, REMOTE + 1, 0x10, Handler(), "WRITE_16")
        self.assertEqual((first.rx_id, second.rx_id), (0, 1))
        self.table._next_rx = 0
        self.assertEqual(self.table.allocate_rx_id(), 2)
        self.assertIs(self.table.responded(REMOTE, 0x10), first)
        self.assertIs(self.table.responded(REMOTE + 1, 0x10), second)

    def test_lookup_by_exchange_context(self):
        mine = self.originate()
        theirs = self.table.respond(LOCAL, REMOTE, mine.ox_id, Handler(), "WRITE_16")
        from_responder = dict(s_id=REMOTE, ox_id=mine.ox_id, f_ctl=0x800000)
        from_originator = dict(s_id=REMOTE, ox_id=mine.ox_id, f_ctl=0)
        self.assertIs(self.table.lookup(from_responder), mine)
        self.assertIs(self.table.lookup(from_originator), theirs)
        self.assertIsNone(self.table.lookup(dict(from_responder, s_id=0x999999)))

    # -- limits ------------------------------------------------------------------------
    def test_limit_fails_fast(self):
        for _ in range(8):
            self.originate()
        with self.assertRaises(ExchangeLimitReached) as caught:
            self.originate()
        self.assertIn("8 exchanges already open", str(caught.exception))
        self.assertEqual(self.table.counters["limit_refused"], 1)
        self.assertEqual(self.link.sent, [])
        for n in range(8):
            self.table.respond(LOCAL, REMOTE, n, Handler(), "WRITE_16")
        self.assertRaises(ExchangeLimitReached, self.table.respond, LOCAL, REMOTE, 99, Handler(),
                          "WRITE_16")

    def test_bad_settings(self):
        self.assertRaises(ValueError, ExchangeTable, self.clock, max_exchanges=0)
        self.assertRaises(ValueError, ExchangeTable, self.clock, max_exchanges=0xFFFF)
        self.assertRaises(ValueError, ExchangeTable, self.clock, timeout=0)

    # -- sequences ---------------------------------------------------------------------
    def test_send_data_frames(self):
        exchange = self.table.respond(LOCAL, REMOTE, 7, Handler(), "RCN_CONTROL")
        sent = exchange.send_data(RCtl.FCP_DATA, FcType.FCP, bytes(range(256)) * 20, 100, 5000,
                                  last_f_ctl=0, max_frame=2048)
        self.assertEqual(sent, 3)
        frames = self.link.sent
        self.assertEqual([f["parameter"] for f in frames], [100, 2148, 4196])
        self.assertEqual([len(f["payload"]) for f in frames], [2048, 2048, 804])
        self.assertEqual([f["seq_cnt"] for f in frames], [0, 1, 2])
        self.assertEqual({f["seq_id"] for f in frames}, {0})
        self.assertEqual([f["sof"] for f in frames], [SOF_I3, SOF_N3, SOF_N3])
        self.assertEqual([f["eof"] for f in frames], [EOF_N, EOF_N, EOF_T])
        # responder: exchange context; relative offset; End_Sequence on the last frame only
        self.assertEqual([f["f_ctl"] for f in frames], [0x800008, 0x800008, 0x880008])
        self.assertEqual(frames[0]["payload"], (bytes(range(256)) * 20)[100:2148])
        exchange.send(RCtl.FCP_RSP, FcType.FCP, bytes(24), 0x100000)
        self.assertEqual(self.link.sent[-1]["f_ctl"], 0x980000)
        self.assertEqual(self.link.sent[-1]["seq_id"], 1)

    # -- timeouts ----------------------------------------------------------------------
    def test_originated_timeout_sends_abts(self):
        handler = Handler()
        exchange = self.originate(handler)
        self.clock.advance(29.5)
        self.assertEqual(handler.ended, [])
        self.clock.advance(1.0)          # the sweep runs every tick: timeout .. timeout + tick
        self.assertEqual(len(handler.ended), 1)
        self.assertIsInstance(handler.ended[0], ExchangeTimeout)
        self.assertIn("WRITE_16 with 01.01.00 got no answer in 30 s", str(handler.ended[0]))
        abts = self.link.sent[-1]
        self.assertEqual((abts["r_ctl"], abts["type"], abts["f_ctl"], abts["ox_id"]),
                         (RCtl.BLS_ABTS, FcType.BLS, 0x090000, exchange.ox_id))
        self.assertEqual(exchange.state, ABORTING)
        self.assertIs(self.table.originated(exchange.ox_id), exchange)    # OX_ID still held
        self.table.handle_bls(frame(RCtl.BLS_BA_ACC, REMOTE, LOCAL, exchange.ox_id, 5,
                                    f_ctl=0x980000, payload=els.build_ba_acc(exchange.ox_id, 5)))
        self.assertEqual(exchange.state, CLOSED)
        self.assertEqual(self.table.originated_count, 0)
        self.assertEqual(self.table.counters["timeouts"], 1)
        self.clock.advance(1)            # the sweep stops itself when nothing is open
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unanswered_abts_frees_the_id(self):
        exchange = self.originate()
        self.clock.advance(30)
        self.assertEqual(exchange.state, ABORTING)
        self.clock.advance(10)
        self.assertEqual(exchange.state, CLOSED)
        self.assertEqual(self.table.counters["abts_unanswered"], 1)
        self.assertEqual(len(self.table), 0)

    def test_responded_timeout_drops_without_abts(self):
        handler = Handler()
        exchange = self.table.respond(LOCAL, REMOTE, 3, handler, "WRITE_16")
        self.clock.advance(31)
        self.assertIsInstance(handler.ended[0], ExchangeTimeout)
        self.assertEqual(exchange.state, CLOSED)
        self.assertEqual(self.link.sent, [])

    def test_completed_exchanges_do_not_time_out(self):
        handler = Handler()
        self.originate(handler).close()
        self.clock.advance(100)
        self.assertEqual(handler.ended, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # -- ABTS received -------------------------------------------------------------------
    def test_abts_for_open_exchange_gets_ba_acc(self):
        handler = Handler()
        exchange = self.table.respond(LOCAL, REMOTE, 0x42, handler, "WRITE_16")
        self.table.handle_bls(frame(RCtl.BLS_ABTS, REMOTE, LOCAL, 0x42, exchange.rx_id))
        reply = self.link.sent[-1]
        self.assertEqual((reply["r_ctl"], reply["f_ctl"], reply["ox_id"], reply["rx_id"]),
                         (RCtl.BLS_BA_ACC, 0x980000, 0x42, exchange.rx_id))
        parsed = els.parse_bls(RCtl.BLS_BA_ACC, reply["payload"])
        self.assertEqual((parsed["ox_id"], parsed["rx_id"]), (0x42, exchange.rx_id))
        self.assertIsInstance(handler.ended[0], ExchangeAborted)
        self.assertEqual(exchange.state, CLOSED)

    def test_abts_from_responder_for_our_exchange(self):
        handler = Handler()
        exchange = self.originate(handler)
        exchange.rx_id = 9
        self.table.handle_bls(frame(RCtl.BLS_ABTS, REMOTE, LOCAL, exchange.ox_id, 9,
                                    f_ctl=0x890000))
        reply = self.link.sent[-1]
        self.assertEqual((reply["r_ctl"], reply["f_ctl"], reply["d_id"]),
                         (RCtl.BLS_BA_ACC, 0x180000, REMOTE))
        self.assertIsInstance(handler.ended[0], ExchangeAborted)

    def test_abts_for_unknown_exchange_gets_ba_rjt(self):
        self.table.handle_bls(frame(RCtl.BLS_ABTS, REMOTE, LOCAL, 0x1234))
        reply = self.link.sent[-1]
        self.assertEqual(reply["r_ctl"], RCtl.BLS_BA_RJT)
        self.assertEqual(els.parse_bls(RCtl.BLS_BA_RJT, reply["payload"])["reason"], 0x03)
        self.assertEqual(self.table.counters["ba_rjt_sent"], 1)

    def test_stray_ba_acc_counted(self):
        self.table.handle_bls(frame(RCtl.BLS_BA_ACC, REMOTE, LOCAL, 0x55, f_ctl=0x980000))
        self.assertEqual(self.table.counters["unexpected_bls"], 1)
        self.assertEqual(self.link.sent, [])

    # -- ending many ---------------------------------------------------------------------
    def test_end_all_filters_by_port_pair(self):
        a, b = Handler(), Handler()
        self.table.originate(LOCAL, REMOTE, a, "x")
        self.table.originate(LOCAL + 1, REMOTE, b, "y")
        self.assertEqual(self.table.end_all(LinkDown("test"), local_id=LOCAL + 1), 1)
        self.assertEqual((len(a.ended), len(b.ended)), (0, 1))
        self.assertEqual(self.table.end_all(LinkDown("test")), 1)
        self.assertEqual(self.table.exchanges(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abort_while_link_down_closes_at_once(self):
        from rcn.rio.exchange import NO_LINK
        handler = Handler()
        exchange = self.originate(handler)
        self.table.link = NO_LINK
        exchange.abort(ExchangeAborted("WRITE_16", REMOTE, "test"))
        self.assertEqual(exchange.state, CLOSED)
        self.assertEqual(len(handler.ended), 1)
        self.assertNotEqual(exchange.state, OPEN)
