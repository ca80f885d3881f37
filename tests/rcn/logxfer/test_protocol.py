"""LogTransferProtocol: datagrams in, checked entries out; drops counted by reason."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from datapath.frames.logentry import HEADER_SIZE, EntryType, build_entry
from rcn.logxfer.protocol import (MAX_UDP_PAYLOAD, Drops, LogTransferProtocol, _SO_RCVBUFFORCE,
                                  _SO_SNDBUFFORCE, listen)
from rcn.logxfer.routes import Address

PEER = ("10.1.2.3", 47001)


def wr(body: bytes = b"\x00" * 64, **fields) -> bytes:
    fields.setdefault("group_id", 7)
    fields.setdefault("sequence", 1)
    return build_entry(EntryType.WR, body, **fields)


class FakeTransport:
    """What a UDP port offers the protocol: write(data, addr)."""

    def __init__(self, fail: OSError | None = None):
        self.written = []
        self.fail = fail

    def write(self, data, addr):
        if self.fail is not None:
            raise self.fail
        self.written.append((data, addr))


class Recorder:
    def __init__(self, fail: Exception | None = None):
        self.entries = []
        self.fail = fail

    def entry_received(self, entry, data, sender):
        if self.fail is not None:
            raise self.fail
        self.entries.append((entry, data, sender))


class ProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.handler = Recorder()
        self.protocol = LogTransferProtocol(self.handler)
        self.transport = FakeTransport()
        self.protocol.makeConnection(self.transport)

    def assertDropped(self, data: bytes, reason: str):
        self.protocol.datagramReceived(data, PEER)
        self.assertEqual(self.handler.entries, [])
        self.assertEqual(self.protocol.drops.by_reason, {reason: 1})
        self.assertEqual(self.protocol.drops.total, 1)

    def test_good_entry_reaches_the_handler(self):
        data = wr(sequence=42)
        self.protocol.datagramReceived(data, PEER)
        [(entry, got, sender)] = self.handler.entries
        self.assertIs(got, data)
        self.assertEqual(sender, Address(*PEER))
        self.assertTrue(entry.crc_ok)
        self.assertEqual((entry.header.entry_type, entry.header.sequence),
                         (EntryType.WR, 42))
        self.assertEqual(self.protocol.counters["received"], 1)
        self.assertEqual(self.protocol.counters["received_bytes"], len(data))
        self.assertEqual(self.protocol.drops.total, 0)

    def test_truncated_body_is_dropped_as_malformed(self):
        self.assertDropped(wr()[:-1], "malformed")

    def test_truncated_header_is_dropped_as_malformed(self):
        self.assertDropped(wr()[:HEADER_SIZE - 8], "malformed")

    def test_bytes_after_the_entry_are_dropped_as_malformed(self):
        self.assertDropped(wr() + b"\x00", "malformed")

    def test_bad_magic_is_dropped(self):
        data = bytearray(wr())
        data[0] ^= 0xFF
        self.assertDropped(bytes(data), "bad_magic")

    def test_unknown_version_is_dropped(self):
        self.assertDropped(wr(version=3), "unknown_version")

    def test_bad_crc_is_dropped(self):
        data = bytearray(wr())
        data[-1] ^= 0x01
        self.assertDropped(bytes(data), "bad_crc")

    def test_short_datagrams_are_malformed_wherever_they_are_cut(self):
        """A header cut in its magic or version field is not a bad magic or version."""
        for data in (b"", b"RC", b"RCNL", b"RCNL\x01", wr()[:HEADER_SIZE - 1]):
            self.protocol.datagramReceived(data, PEER)
        self.assertEqual(self.protocol.drops.by_reason, {"malformed": 5})

    def test_every_drop_is_counted_still_received(self):
        for data in (b"", b"junk" * 30, wr(version=9)):
            self.protocol.datagramReceived(data, PEER)
        self.assertEqual(self.protocol.counters["received"], 3)
        self.assertEqual(self.protocol.drops.by_reason,
                         {"malformed": 1, "bad_magic": 1, "unknown_version": 1})

    def test_handler_exception_is_counted_and_does_not_propagate(self):
        self.protocol.handler = Recorder(fail=ValueError("boom"))
        self.protocol.datagramReceived(wr(), PEER)            # no exception here
        self.assertEqual(self.protocol.drops.by_reason, {"handler_error": 1})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.protocol.handler = self.handler
        self.protocol.datagramReceived(wr(), PEER)            # the protocol still works
        self.assertEqual(len(self.handler.entries), 1)

    def test_send_writes_to_the_address_and_counts(self):
        self.assertTrue(self.protocol.send(b"abc", Address("10.0.0.1", 5)))
        self.assertTrue(self.protocol.send(b"defgh", Address("::1", 6)))
        self.assertEqual(self.transport.written, [(b"abc", ("10.0.0.1", 5)), (b"defgh", ("::1", 6))])
        self.assertEqual((self.protocol.counters["sent"], self.protocol.counters["sent_bytes"],
                          self.protocol.counters["send_errors"]), (2, 8, 0))

    def test_send_refused_by_the_kernel_is_counted(self):
        self.transport.fail = OSError(105, "No buffer space available")
        with capturedLogs() as events:
            self.assertFalse(self.protocol.send(b"abc", Address("10.0.0.1", 5)))
        self.assertEqual((self.protocol.counters["sent"], self.protocol.counters["send_errors"]),
                         (0, 1))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["peer"], "10.0.0.1:5")

    def test_send_without_transport_is_counted(self):
        protocol = LogTransferProtocol(self.handler)
        self.assertFalse(protocol.send(b"abc", Address("10.0.0.1", 5)))
        self.assertEqual(protocol.counters["send_errors"], 1)

    def test_connection_refused_is_counted(self):
        self.protocol.connectionRefused()
        self.assertEqual(self.protocol.counters["send_errors"], 1)


class DropsTests(SynchronousTestCase):
    def test_first_drops_then_one_in_n_are_logged(self):
        drops = Drops("core1", log_first=2, log_every=5)
        with capturedLogs() as events:
            for _ in range(10):
                drops.drop("no_route", Address("10.0.0.1", 1), "WR group 7")
        self.assertEqual([e["n"] for e in events], [1, 2, 5, 10])
        self.assertEqual(drops.by_reason, {"no_route": 10})
        self.assertEqual((events[0]["device"], events[0]["reason"], events[0]["peer"]),
                         ("core1: ", "no_route", "10.0.0.1:1"))


class FakeSocket:
    def __init__(self, refuse_force: bool):
        self.refuse_force = refuse_force
        self.options = []

    def setsockopt(self, level, option, value):
        if self.refuse_force and option in (_SO_RCVBUFFORCE, _SO_SNDBUFFORCE):
            raise PermissionError(1, "Operation not permitted")
        self.options.append((level, option, value))


class SocketBufferTests(SynchronousTestCase):
    def start(self, refuse_force: bool) -> FakeSocket:
        transport = FakeTransport()
        transport.socket = FakeSocket(refuse_force)
        LogTransferProtocol(Recorder(), receive_buffer=1 << 24,
                            send_buffer=1 << 22).makeConnection(transport)
        return transport.socket

    def test_buffers_are_forced_when_allowed(self):
        self.assertEqual(self.start(False).options,
                         [(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 24),
                          (socket.SOL_SOCKET, _SO_SNDBUFFORCE, 1 << 22)])

    def test_buffers_fall_back_to_the_capped_option(self):
        self.assertEqual(self.start(True).options,
                         [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24),
                          (socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)])


class _Notify(Recorder):
    def __init__(self):
        super().__init__()
        self.arrived = defer.Deferred()

    def entry_received(self, entry, data, sender):
        super().entry_received(entry, data, sender)
        self.arrived.callback(None)


class _NotifyDrops(Drops):
    def __init__(self):
        super().__init__()
        self.dropped = defer.Deferred()

    def drop(self, reason, peer, detail=""):
        super().drop(reason, peer, detail)
        if not self.dropped.called:
            self.dropped.callback(reason)


class LoopbackTests(TestCase):
    """Real UDP on 127.0.0.1: the maxPacketSize pitfall of DESIGN.md 3.3."""

    timeout = 20

    def open(self, protocol, port=None) -> Address:
        port = port if port is not None else listen(reactor, protocol, Address("127.0.0.1", 0))
        self.addCleanup(port.stopListening)
        return Address("127.0.0.1", port.getHost().port)

    def big_entry(self) -> bytes:
        data = wr(bytes(range(256)) * 234 + b"\x5a" * (60_000 - HEADER_SIZE - 256 * 234))
        self.assertEqual(len(data), 60_000)
        return data

    @defer.inlineCallbacks
    def test_a_60000_byte_datagram_arrives_whole(self):
        receiver = _Notify()
        to = self.open(LogTransferProtocol(receiver))
        sender = LogTransferProtocol(Recorder())
        self.open(sender)
        data = self.big_entry()
        self.assertTrue(sender.send(data, to))
        yield receiver.arrived
        [(entry, got, _)] = receiver.entries
        self.assertEqual(got, data)
        self.assertTrue(entry.crc_ok)
        self.assertGreater(MAX_UDP_PAYLOAD, len(data))

    @defer.inlineCallbacks
    def test_twisted_default_max_packet_size_would_truncate_it(self):
        """Without ``listen`` (8192-byte reads) the same datagram arrives cut and is dropped."""
        drops = _NotifyDrops()
        receiver = LogTransferProtocol(Recorder(), drops)
        to = self.open(receiver, reactor.listenUDP(0, receiver, interface="127.0.0.1"))
        sender = LogTransferProtocol(Recorder())
        self.open(sender)
        sender.send(self.big_entry(), to)
        reason = yield drops.dropped
        self.assertEqual(reason, "malformed")
        self.assertEqual(receiver.counters["received_bytes"], 8192)
