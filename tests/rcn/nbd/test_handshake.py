"""NBD handshake and option haggling over a StringTransport."""

from __future__ import annotations

import os

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from rcn.nbd import protocol as P
from rcn.nbd.export import ExportTable, VolumeExport
from rcn.nbd.session import NbdSession, ServerLimits
from rcn.storage.volume import Volume
from tests.rcn.nbd.helpers import Client, MemoryExport

MiB = 1 << 20


class HandshakeTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.patch(NbdSession, "_log", Logger(observer=self.events.append))
        self.mem = MemoryExport()
        self.other = MemoryExport(name="other", size=4 * MiB, block_size=4096,
                                  description="")
        self.table = ExportTable([self.mem, self.other])

    def client(self, **limits) -> Client:
        return Client(self.table, ServerLimits(**limits) if limits else None)

    def logged(self) -> str:
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) for e in self.events)

    def test_greeting(self):
        c = self.client()
        self.assertEqual(c.greeting, b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03")
        self.assertEqual(c.counters["connections"], 1)
        self.assertEqual(c.counters["connections_active"], 1)
        c.lose()
        self.assertEqual(c.counters["connections_active"], 0)

    def test_unknown_client_flags_disconnect(self):
        c = self.client()
        c.send(P.CLIENT_FLAGS.pack(0x5))
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["protocol_errors"], 1)
        self.assertIn("client flags 0x00000005 carry unknown bits", self.logged())

    def test_wrong_option_magic_disconnects(self):
        c = self.client()
        c.flags()
        c.send(b"IHAVEOPX" + b"\0\0\0\x07\0\0\0\0")
        self.assertTrue(c.closed)
        self.assertEqual(c.take(), b"")
        self.assertEqual(c.counters["protocol_errors"], 1)
        self.assertIn("option magic", self.logged())

    def test_export_name(self):
        c = self.client()
        c.flags(P.FLAG_C_FIXED_NEWSTYLE)  # no NO_ZEROES: 124 bytes of padding follow
        c.send(P.option_request(P.OPT_EXPORT_NAME, b"other"))
        reply = c.take()
        self.assertEqual(len(reply), 10 + 124)
        size, flags = P.EXPORT_NAME_REPLY.unpack_from(reply)
        self.assertEqual(size, 4 * MiB)
        self.assertEqual(flags, P.FLAG_HAS_FLAGS | P.FLAG_SEND_FLUSH | P.FLAG_SEND_FUA
                         | P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES)
        self.assertEqual(reply[10:], bytes(124))
        self.assertIs(c.session.export, self.other)
        self.assertEqual(c.counters["handshakes"], 1)

    def test_export_name_no_zeroes(self):
        c = self.client()
        c.flags()
        c.send(P.option_request(P.OPT_EXPORT_NAME, b"mem"))
        self.assertEqual(len(c.take()), 10)

    def test_export_name_unknown_disconnects(self):
        c = self.client()
        c.flags()
        c.send(P.option_request(P.OPT_EXPORT_NAME, b"nope"))
        self.assertEqual(c.take(), b"")
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["protocol_errors"], 1)
        self.assertIn("unknown export b'nope'", self.logged())

    def test_default_export(self):
        self.table.default = "other"
        c = self.client()
        c.flags()
        replies = c.option(P.OPT_GO, P.go_data(b"", (P.INFO_NAME,)))
        self.assertEqual(replies[-1][1], P.REP_ACK)
        self.assertIn((P.OPT_GO, P.REP_INFO, P.U16.pack(P.INFO_NAME) + b"other"), replies)
        self.assertIs(c.session.export, self.other)

    def test_no_default_export(self):
        c = self.client()
        c.flags()
        replies = c.option(P.OPT_GO, P.go_data(b""))
        self.assertEqual([r[1] for r in replies], [P.REP_ERR_UNKNOWN])

    def test_list(self):
        c = self.client()
        c.flags()
        replies = c.option(P.OPT_LIST)
        self.assertEqual(replies, [
            (P.OPT_LIST, P.REP_SERVER, b"\0\0\0\x03mem"),
            (P.OPT_LIST, P.REP_SERVER, b"\0\0\0\x05other"),
            (P.OPT_LIST, P.REP_ACK, b""),
        ])
        replies = c.option(P.OPT_LIST, b"junk")
        self.assertEqual(replies[0][:2], (P.OPT_LIST, P.REP_ERR_INVALID))
        self.assertEqual(c.counters["option_errors"], 1)
        self.assertFalse(c.closed)

    def test_info_then_go(self):
        c = self.client()
        c.flags()
        replies = c.option(P.OPT_INFO, P.go_data(
            b"mem", (P.INFO_NAME, P.INFO_DESCRIPTION, P.INFO_BLOCK_SIZE, 77)))
        self.assertEqual(replies, [
            (P.OPT_INFO, P.REP_INFO, P.INFO_EXPORT_LAYOUT.pack(
                P.INFO_EXPORT, MiB, P.FLAG_HAS_FLAGS | P.FLAG_SEND_FLUSH | P.FLAG_SEND_FUA
                | P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES)),
            (P.OPT_INFO, P.REP_INFO, b"\0\x01mem"),
            (P.OPT_INFO, P.REP_INFO, b"\0\x02in-memory test export"),
            (P.OPT_INFO, P.REP_INFO, P.INFO_BLOCK_SIZE_LAYOUT.pack(
                P.INFO_BLOCK_SIZE, 1, 4096, 32 * MiB)),
            (P.OPT_INFO, P.REP_ACK, b""),
        ])
        self.assertIsNone(c.session.export)  # INFO does not end the handshake
        replies = c.go("other", info=())
        self.assertEqual(replies[-1], (P.OPT_GO, P.REP_ACK, b""))
        # Block sizes are sent even when not asked for; no description when empty.
        self.assertEqual([r[2][:2] for r in replies[:-1]], [b"\0\0", b"\0\x03"])
        self.assertIs(c.session.export, self.other)

    def test_go_unknown_and_malformed(self):
        c = self.client()
        c.flags()
        replies = c.go("missing")
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0][1], P.REP_ERR_UNKNOWN)
        self.assertIn(b"no export named b'missing'; known: mem, other", replies[0][2])
        for data in (b"\0\0", b"\0\0\0\x09mem\0\0", b"\0\0\0\x03mem\0\x02\0\x03",
                     b"\xff\0\0\0mem\0\0", b"\0\0\0\x03\xffem\0\0"):
            replies = c.option(P.OPT_GO, data)
            self.assertEqual(len(replies), 1, data)
            self.assertIn(replies[0][1], (P.REP_ERR_INVALID, P.REP_ERR_UNKNOWN), data)
        self.assertEqual(c.counters["option_errors"], 6)
        self.assertEqual(c.counters["protocol_errors"], 0)
        self.assertEqual(c.go()[-1][1], P.REP_ACK)

    def test_block_size_required_for_aligned_export(self):
        dirname = self.mktemp()
        os.makedirs(dirname)
        volume = Volume(os.path.join(dirname, "v.img"), 0, MiB, block_size=4096,
                        strict_alignment=True)
        self.addCleanup(volume.close)
        self.table.add(VolumeExport(volume, "strict"))
        c = self.client()
        c.flags()
        replies = c.go("strict", info=())
        self.assertEqual(replies[0][1], P.REP_ERR_BLOCK_SIZE_REQD)
        replies = c.go("strict", info=(P.INFO_BLOCK_SIZE,))
        self.assertIn((P.OPT_GO, P.REP_INFO, P.INFO_BLOCK_SIZE_LAYOUT.pack(
            P.INFO_BLOCK_SIZE, 4096, 4096, 32 * MiB)), replies)
        self.assertEqual(replies[-1][1], P.REP_ACK)

    def test_abort(self):
        c = self.client()
        c.flags()
        self.assertEqual(c.option(P.OPT_ABORT), [(P.OPT_ABORT, P.REP_ACK, b"")])
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["protocol_errors"], 0)

    def test_unsupported_options(self):
        c = self.client()
        c.flags()
        for option in (P.OPT_STRUCTURED_REPLY, P.OPT_STARTTLS, P.OPT_SET_META_CONTEXT,
                       P.OPT_EXTENDED_HEADERS, 99, 0x7FFFFFFF):
            replies = c.option(option, b"x" * (option % 5))
            self.assertEqual(len(replies), 1)
            self.assertEqual(replies[0][:2], (option, P.REP_ERR_UNSUP))
            self.assertTrue(replies[0][2])  # a message for the user
        self.assertFalse(c.closed)
        self.assertEqual(c.go()[-1][1], P.REP_ACK)

    def test_oversize_option_skipped(self):
        c = self.client(max_option_bytes=1024)
        c.flags()
        replies = c.option(P.OPT_GO, b"\xaa" * 5000)
        self.assertEqual(replies[0][:2], (P.OPT_GO, P.REP_ERR_TOO_BIG))
        self.assertEqual(c.go()[-1][1], P.REP_ACK)
        c2 = self.client(max_option_bytes=1024)
        c2.flags()
        c2.send(P.OPTION_HEADER.pack(P.IHAVEOPT, P.OPT_EXPORT_NAME, 5000))
        self.assertTrue(c2.closed)

    def test_too_many_options(self):
        c = self.client(max_options=3)
        c.flags()
        for _ in range(3):
            self.assertEqual(len(c.option(P.OPT_LIST)), 3)
        c.send(P.option_request(P.OPT_LIST))
        self.assertTrue(c.closed)
        self.assertIn("more than 3 options", self.logged())

    def test_handshake_timeout(self):
        c = self.client(handshake_timeout=5)
        c.flags()
        c.clock.advance(4.9)
        self.assertFalse(c.closed)
        c.clock.advance(0.2)
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["handshake_timeouts"], 1)
        done = self.client(handshake_timeout=5)
        done.start()
        done.clock.advance(60)
        self.assertFalse(done.closed)
        self.assertEqual(done.clock.getDelayedCalls(), [])

    def test_byte_at_a_time(self):
        c = self.client()
        stream = (P.CLIENT_FLAGS.pack(3) + P.option_request(P.OPT_LIST)
                  + P.option_request(P.OPT_GO, P.go_data(b"other", (P.INFO_BLOCK_SIZE,)))
                  + P.request(P.CMD_WRITE, 7, 0, 4, data=b"abcd"))
        for i in range(len(stream)):
            c.send(stream[i:i + 1])
        self.assertEqual(self.other.data[:4], b"abcd")
        out = c.take()
        self.assertTrue(out.endswith(P.simple_reply(7)))

    def test_connection_limit(self):
        c = self.client(max_connections=1)
        self.assertIsNone(c.factory.buildProtocol(None))
        self.assertEqual(c.counters["connections_refused"], 1)
        c.lose()
        self.assertIsNotNone(c.factory.buildProtocol(None))
