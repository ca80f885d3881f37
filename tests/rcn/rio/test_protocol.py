"""FcipProtocol: frame encoding, delineation, CRC/EOF checks, stream errors."""

from __future__ import annotations

import random

from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import fc, fcip
from datapath.frames.fc import Eof, Sof
from rcn.rio.errors import LinkDown
from rcn.rio.protocol import FcipProtocol, encode_frame, encode_frame_dict


class FakeEndpoint:
    def __init__(self, fail_on=None):
        self.frames = []
        self.downs = []
        self.link = None
        self.fail_on = fail_on

    def link_up(self, link):
        self.link = link

    def frame_received(self, frame):
        if self.fail_on is not None and frame.header["ox_id"] == self.fail_on:
            raise RuntimeError("handler bug")
        self.frames.append(frame)

    def link_down(self, reason):
        self.downs.append(reason)


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0
        self.nodelay = None

    def write(self, data):
        self.writes += 1
        super().write(data)

    def setTcpNoDelay(self, enabled):
        self.nodelay = enabled


def header(ox_id=1, **kw):
    values = dict(r_ctl=fc.RCtl.FCP_CMND, d_id=0x010200, s_id=0x010100, type=fc.FcType.FCP,
                  f_ctl=0x290000, seq_id=3, seq_cnt=0, ox_id=ox_id, rx_id=0xFFFF, parameter=0)
    values.update(kw)
    return values


def events_of(testcase) -> list:
    events = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class EncodeTest(SynchronousTestCase):
    def test_matches_reference_encoder(self):
        """The fast encoder is byte-identical to encapsulate(build_fc_frame(...))."""
        rng = random.Random(7)
        sizes = [0, 1, 2, 3, 4, 5, 24, 32, 2047, 2048, 2111, 2112] + \
            [rng.randrange(0, 2113) for _ in range(40)]
        for size in sizes:
            h = dict(r_ctl=rng.randrange(256), d_id=rng.randrange(1 << 24),
                     cs_ctl=rng.randrange(256), s_id=rng.randrange(1 << 24),
                     type=rng.randrange(256), f_ctl=rng.randrange(1 << 24),
                     seq_id=rng.randrange(256), df_ctl=rng.randrange(256),
                     seq_cnt=rng.randrange(1 << 16), ox_id=rng.randrange(1 << 16),
                     rx_id=rng.randrange(1 << 16), parameter=rng.randrange(1 << 32))
            payload = rng.randbytes(size)
            sof, eof = rng.choice(list(Sof)), rng.choice(list(Eof))
            want = fcip.encapsulate(fc.build_fc_frame(h, payload), sof, eof)
            self.assertEqual(encode_frame_dict(h, payload, sof, eof), want, f"size {size}")
            got = encode_frame(h["r_ctl"], h["d_id"], h["s_id"], h["type"], h["f_ctl"],
                               h["seq_id"], h["seq_cnt"], h["ox_id"], h["rx_id"], h["parameter"],
                               memoryview(payload), sof, eof, h["cs_ctl"], h["df_ctl"])
            self.assertEqual(got, want, f"size {size}")

    def test_defaults_match_build_fc_frame(self):
        """Missing fields are 0 and RX_ID 0xFFFF, as build_fc_frame has them."""
        h = {"r_ctl": 0x22, "ox_id": 5}
        self.assertEqual(encode_frame_dict(h, b"\x04abc"),
                         fcip.build_fcip_frame(h, b"\x04abc"))

    def test_rejects_bad_input(self):
        self.assertRaises(ValueError, encode_frame_dict, {"d_id": 1 << 24})
        self.assertRaises(KeyError, encode_frame_dict, {"colour": 1})
        self.assertRaises(ValueError, encode_frame_dict, {}, bytes(2113))
        self.assertRaises(ValueError, encode_frame_dict, {"seq_id": 256})


class FcipProtocolTest(SynchronousTestCase):
    def setUp(self):
        self.endpoint = FakeEndpoint()
        self.protocol = FcipProtocol(self.endpoint)
        self.transport = CountingTransport()
        self.protocol.makeConnection(self.transport)

    def test_link_up_sets_nodelay(self):
        self.assertIs(self.endpoint.link, self.protocol)
        self.assertTrue(self.transport.nodelay)

    def test_frames_in_one_chunk_and_byte_by_byte(self):
        frames = [fcip.build_fcip_frame(header(ox_id=n), bytes([n]) * (n * 7), sof=Sof.I3,
                                        eof=Eof.T if n % 2 else Eof.N) for n in range(1, 6)]
        stream = b"".join(frames)
        self.protocol.dataReceived(stream[:100])
        for i in range(100, len(stream)):
            self.protocol.dataReceived(stream[i:i + 1])
        got = self.endpoint.frames
        self.assertEqual([f.header["ox_id"] for f in got], [1, 2, 3, 4, 5])
        for n, frame in enumerate(got, start=1):
            self.assertEqual(frame.payload, bytes([n]) * (n * 7))     # fill bytes stripped
            self.assertEqual(frame.header["d_id"], 0x010200)
            self.assertEqual(frame.header["f_ctl"] & ~3, 0x290000)
            self.assertEqual(frame.header["seq_id"], 3)
            self.assertEqual((frame.sof, frame.eof), (Sof.I3, Eof.T if n % 2 else Eof.N))
            self.assertTrue(frame.crc_ok)
        self.assertEqual(self.protocol.counters["frames_in"], 5)
        self.assertEqual(self.protocol.counters["bytes_in"], len(stream))

    def test_bad_crc_counted_logged_and_dropped(self):
        events = events_of(self)
        good = fcip.build_fcip_frame(header(ox_id=1), b"data")
        bad = bytearray(fcip.build_fcip_frame(header(ox_id=2), b"data"))
        bad[fcip.HEADER_SIZE + 4 + 24] ^= 0x01          # first payload byte
        self.protocol.dataReceived(good + bytes(bad) + good)
        self.assertEqual([f.header["ox_id"] for f in self.endpoint.frames], [1, 1])
        self.assertEqual(self.protocol.counters["crc_errors"], 1)
        self.assertFalse(self.transport.disconnecting)
        self.assertTrue(any("CRC" in e.get("log_format", "") for e in events))

    def test_abort_eof_dropped(self):
        for eof in (Eof.A, Eof.NI, Eof.DTI, Eof.RTI):
            self.protocol.dataReceived(fcip.build_fcip_frame(header(), b"x", eof=eof))
        self.protocol.dataReceived(fcip.build_fcip_frame(header(), b"x", eof=Eof.T))
        self.assertEqual(len(self.endpoint.frames), 1)
        self.assertEqual(self.protocol.counters["eof_errors"], 4)

    def test_special_frame_ignored(self):
        special = bytearray(fcip.build_fcip_frame(header(), b"abcd"))
        special[8], special[10] = fcip.PFLAG_SPECIAL_FRAME, ~fcip.PFLAG_SPECIAL_FRAME & 0xFF
        self.protocol.dataReceived(bytes(special))
        self.assertEqual(self.endpoint.frames, [])
        self.assertEqual(self.protocol.counters["special_frames"], 1)

    def test_garbage_closes_link_with_reason(self):
        """Frames before the damage are delivered; then link_down(reason) and the close."""
        events = events_of(self)
        good = fcip.build_fcip_frame(header(ox_id=9), b"ok")
        self.protocol.dataReceived(good + b"\x02" + bytes(80))
        self.assertEqual([f.header["ox_id"] for f in self.endpoint.frames], [9])
        self.assertEqual(self.protocol.counters["stream_errors"], 1)
        self.assertEqual(len(self.endpoint.downs), 1)
        self.assertIn("BAD_PROTOCOL", self.endpoint.downs[0])
        self.assertIn(f"offset {len(good)}", self.endpoint.downs[0])
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(any("framing is lost" in e.get("reason", "") for e in events))
        self.protocol.dataReceived(good)                     # ignored from now on
        self.assertEqual(len(self.endpoint.frames), 1)
        self.assertRaises(LinkDown, self.protocol.send_frame, header())
        self.protocol.connectionLost(None)
        self.assertEqual(len(self.endpoint.downs), 1)

    def test_bad_length_complement(self):
        frame = bytearray(fcip.build_fcip_frame(header(), b"x"))
        frame[14] ^= 0xFF
        self.protocol.dataReceived(bytes(frame))
        self.assertIn("BAD_COMPLEMENT", self.endpoint.downs[0])

    def test_handler_error_does_not_stop_the_stream(self):
        self.endpoint.fail_on = 2
        self.protocol.dataReceived(b"".join(fcip.build_fcip_frame(header(ox_id=n), b"p")
                                            for n in (1, 2, 3)))
        self.assertEqual([f.header["ox_id"] for f in self.endpoint.frames], [1, 3])
        self.assertEqual(self.protocol.counters["handler_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_one_write_per_frame(self):
        for n in range(3):
            self.protocol.send_frame(header(ox_id=n), bytes(100))
        self.protocol.send_fc(1, 2, 3, 8, 0, 0, 0, 4, 5, 0, b"abc", Sof.N3, Eof.N)
        self.assertEqual(self.transport.writes, 4)
        self.assertEqual(self.protocol.counters["frames_out"], 4)
        stream = self.transport.value()
        first = fcip.parse_fcip_frame(stream)
        self.assertEqual(first.fc.payload, bytes(100))
        self.assertTrue(first.fc.crc_ok)

    def test_many_frames_in_one_write_sequence(self):
        sequences = []
        self.transport.writeSequence = lambda chunks: (sequences.append(list(chunks)),
                                                       StringTransport.writeSequence(
                                                           self.transport, chunks))
        frames = [(1, 2, 3, 8, 0x08, 0, n, 4, 5, n * 100, bytes([n]) * 100, Sof.N3, Eof.N)
                  for n in range(3)]
        self.protocol.send_fc_many(frames)
        self.assertEqual(len(sequences), 1)
        self.assertEqual(self.transport.writes, 0)
        self.assertEqual(self.protocol.counters["frames_out"], 3)
        stream, at = self.transport.value(), 0
        for n in range(3):
            frame = fcip.parse_fcip_frame(stream[at:])
            self.assertEqual((frame.fc.payload, frame.fc.header["parameter"]),
                             (bytes([n]) * 100, n * 100))
            self.assertTrue(frame.fc.crc_ok)
            at += len(sequences[0][n])

    def test_connection_lost_tells_endpoint(self):
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionDone
        self.protocol.connectionLost(Failure(ConnectionDone("bye")))
        self.assertEqual(len(self.endpoint.downs), 1)
        self.assertRaises(LinkDown, self.protocol.send_frame, header())
