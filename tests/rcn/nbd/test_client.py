"""rcn.nbd.client: the state machine against scripted server bytes, the client against our
own server (rcn.nbd.server) over real loopback, and against qemu-nbd."""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, error, reactor, task
from twisted.trial.unittest import TestCase

from rcn.nbd import protocol as P
from rcn.nbd.client import NbdClient, NbdError, connect, connect_url, parse_nbd_url
from rcn.nbd.export import ExportTable
from rcn.nbd.export import NbdError as ExportError
from rcn.nbd.server import NbdServerFactory
from tests.rcn.nbd.helpers import MemoryExport
from tests.support import CollectOutput, require_tool

MiB = 1 << 20


class FakeLink:
    def __init__(self):
        self.sent = bytearray()
        self.closed = False

    def write_sequence(self, chunks):
        for chunk in chunks:
            self.sent += chunk

    def close(self):
        self.closed = True

    def take(self) -> bytes:
        out = bytes(self.sent)
        self.sent.clear()
        return out


def info_export(size: int, flags: int) -> bytes:
    return P.option_reply(P.OPT_GO, P.REP_INFO, P.INFO_EXPORT_LAYOUT.pack(P.INFO_EXPORT, size,
                                                                          flags))


FLAGS = P.FLAG_HAS_FLAGS | P.FLAG_SEND_FLUSH | P.FLAG_SEND_FUA


class StateMachineTests(TestCase):
    """Scripted server bytes in, client bytes out."""

    def negotiated(self, size=MiB, flags=FLAGS, byte_at_a_time=False):
        link = FakeLink()
        client = NbdClient(link, "vol0")
        server = (P.handshake() + info_export(size, flags)
                  + P.option_reply(P.OPT_GO, P.REP_INFO, P.INFO_BLOCK_SIZE_LAYOUT.pack(
                      P.INFO_BLOCK_SIZE, 1, 4096, 32 * MiB))
                  + P.option_reply(P.OPT_GO, P.REP_ACK))
        if byte_at_a_time:
            for i in range(len(server)):
                client.data_received(server[i:i + 1])
        else:
            client.data_received(server)
        return link, client

    def test_handshake_and_go(self):
        for one_by_one in (False, True):
            link, client = self.negotiated(byte_at_a_time=one_by_one)
            sent = link.take()
            self.assertEqual(sent[:4], P.CLIENT_FLAGS.pack(P.FLAG_C_FIXED_NEWSTYLE
                                                           | P.FLAG_C_NO_ZEROES))
            magic, option, length = P.OPTION_HEADER.unpack_from(sent, 4)
            self.assertEqual((magic, option), (P.IHAVEOPT, P.OPT_GO))
            self.assertEqual(P.parse_go_data(sent[20:20 + length]), (b"vol0", [P.INFO_BLOCK_SIZE]))
            info = self.successResultOf(client.ready)
            self.assertEqual((info.name, info.size, info.flags, info.block_sizes),
                             ("vol0", MiB, FLAGS, (1, 4096, 32 * MiB)))
            self.assertFalse(info.read_only)

    def test_requests_and_out_of_order_replies(self):
        link, client = self.negotiated()
        link.take()
        w = client.write(512, b"x" * 1024, fua=True)
        r = client.read(0, 8)
        f = client.flush()
        sent = link.take()
        magic, flags, cmd, cookie_w, offset, length = P.REQUEST.unpack_from(sent, 0)
        self.assertEqual((magic, flags, cmd, offset, length),
                         (P.REQUEST_MAGIC, P.CMD_FLAG_FUA, P.CMD_WRITE, 512, 1024))
        self.assertEqual(sent[28:28 + 1024], b"x" * 1024)
        _, flags, cmd, cookie_r, offset, length = P.REQUEST.unpack_from(sent, 28 + 1024)
        self.assertEqual((flags, cmd, offset, length), (0, P.CMD_READ, 0, 8))
        _, _, cmd, cookie_f, _, _ = P.REQUEST.unpack_from(sent, 56 + 1024)
        self.assertEqual(cmd, P.CMD_FLUSH)
        self.assertEqual(len({cookie_w, cookie_r, cookie_f}), 3)
        self.assertEqual(client.in_flight, 3)
        # replies in reverse order, the read's data split across chunks
        reply = (P.simple_reply(cookie_f) + P.simple_reply(cookie_r) + b"abcdefgh"
                 + P.simple_reply(cookie_w, P.EIO))
        client.data_received(reply[:20])
        self.assertIsNone(self.successResultOf(f))
        self.assertNoResult(r)
        client.data_received(reply[20:])
        self.assertEqual(self.successResultOf(r), b"abcdefgh")
        failure = self.failureResultOf(w, NbdError)
        self.assertEqual((failure.value.code, failure.value.name), (P.EIO, "EIO"))
        self.assertIn("write: the server answered EIO", str(failure.value))
        self.assertEqual(client.in_flight, 0)
        self.assertFalse(link.closed)

    def test_requests_before_ready_wait_for_the_handshake(self):
        link = FakeLink()
        client = NbdClient(link, "vol0")
        d = client.write(0, b"early")
        client.data_received(P.handshake())
        self.assertNotIn(b"early", link.take())
        client.data_received(info_export(MiB, FLAGS) + P.option_reply(P.OPT_GO, P.REP_ACK))
        sent = link.take()
        self.assertEqual(P.REQUEST.unpack_from(sent)[2], P.CMD_WRITE)
        self.assertEqual(sent[28:], b"early")
        self.assertNoResult(d)

    def test_local_refusals(self):
        link, client = self.negotiated(flags=P.FLAG_HAS_FLAGS | P.FLAG_READ_ONLY)
        link.take()
        self.assertIn("read-only", str(self.failureResultOf(client.write(0, b"x"), NbdError).value))
        self.assertIn("FUA", str(self.failureResultOf(client.read(0, 1, fua=True), NbdError).value))
        self.assertIn("FLUSH", str(self.failureResultOf(client.flush(), NbdError).value))
        self.assertIn("beyond", str(self.failureResultOf(client.read(MiB - 1, 2), NbdError).value))
        self.assertEqual(link.take(), b"")

    def test_refused_export(self):
        link = FakeLink()
        client = NbdClient(link, "nope")
        client.data_received(P.handshake() + P.option_reply(P.OPT_GO, P.REP_ERR_UNKNOWN,
                                                            b"no export 'nope'"))
        failure = self.failureResultOf(client.ready, NbdError)
        self.assertEqual(str(failure.value), "NBD: the server refused export 'nope': "
                                             "NBD_REP_ERR_UNKNOWN: no export 'nope'")
        self.assertTrue(link.closed)
        self.failureResultOf(client.read(0, 1), NbdError)

    def test_old_server_gets_export_name(self):
        for no_zeroes in (True, False):
            link = FakeLink()
            client = NbdClient(link, "old")
            flags = P.FLAG_FIXED_NEWSTYLE | (P.FLAG_NO_ZEROES if no_zeroes else 0)
            client.data_received(P.handshake(flags) + P.option_reply(P.OPT_GO, P.REP_ERR_UNSUP))
            sent = link.take()
            self.assertTrue(sent.endswith(P.option_request(P.OPT_EXPORT_NAME, b"old")))
            reply = P.EXPORT_NAME_REPLY.pack(4 * MiB, FLAGS) + (b"" if no_zeroes else bytes(124))
            client.data_received(reply[:-1])
            self.assertNoResult(client.ready)
            client.data_received(reply[-1:])
            self.assertEqual(self.successResultOf(client.ready).size, 4 * MiB)

    def test_bad_server_input_closes_and_fails_everything(self):
        cases = [(b"NOTNBD!!" + bytes(10), "not NBDMAGIC"),
                 (P.HANDSHAKE.pack(P.NBDMAGIC, 0x00420281861253, 0), "oldstyle"),
                 (P.handshake(0), "fixed newstyle")]
        for data, message in cases:
            client = NbdClient(FakeLink(), "x")
            client.data_received(data)
            self.assertIn(message, str(self.failureResultOf(client.ready, NbdError).value))
        for reply, message in ((P.SIMPLE_REPLY.pack(P.STRUCTURED_REPLY_MAGIC, 0, 1),
                                "structured reply"),
                               (P.simple_reply(999), "cookie 999 matches no request"),
                               (P.SIMPLE_REPLY.pack(0x12345678, 0, 1), "magic 0x12345678")):
            link, client = self.negotiated()
            d = client.read(0, 4)
            client.data_received(reply)
            self.assertTrue(link.closed)
            failure = self.failureResultOf(d, NbdError)
            self.assertIn(message, str(failure.value))
            self.successResultOf(client.closed)

    def test_connection_lost_fails_outstanding(self):
        link, client = self.negotiated()
        d = client.write(0, b"x")
        client.connection_lost("Connection was closed cleanly.")
        self.assertIn("connection lost", str(self.failureResultOf(d, NbdError).value))
        self.successResultOf(client.closed)

    def test_disconnect_sends_disc(self):
        link, client = self.negotiated()
        link.take()
        d = client.disconnect()
        self.assertEqual(P.REQUEST.unpack_from(link.take())[2], P.CMD_DISC)
        self.assertTrue(link.closed)
        self.assertNoResult(d)
        client.connection_lost()
        self.successResultOf(d)

    def test_parse_nbd_url(self):
        self.assertEqual(parse_nbd_url("nbd://127.0.0.1:10900/vol0"), ("127.0.0.1", 10900, "vol0"))
        self.assertEqual(parse_nbd_url("nbd://host/a%20b"), ("host", 10809, "a b"))
        self.assertRaises(ValueError, parse_nbd_url, "http://host/x")


class OwnServerTests(TestCase):
    """Against rcn.nbd.server in this reactor over real loopback TCP."""

    timeout = 30

    def setUp(self):
        self.mem = MemoryExport("mem", 4 * MiB)
        self.ro = MemoryExport("ro", MiB, read_only=True)
        self.factory = NbdServerFactory(ExportTable([self.mem, self.ro]), reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.address = ("127.0.0.1", self.port.getHost().port)

    @defer.inlineCallbacks
    def test_many_writes_in_flight_then_read_back(self):
        client = yield connect(reactor, *self.address, "mem")
        self.assertEqual(client.size, 4 * MiB)
        self.assertTrue(client.flags & P.FLAG_SEND_FUA)
        blocks = [bytes([i]) * 65536 for i in range(64)]
        writes = [client.write(i * 65536, b, fua=(i % 2 == 0)) for i, b in enumerate(blocks)]
        self.assertEqual(client.in_flight, 64)
        yield defer.gatherResults(writes)
        yield client.flush()
        reads = yield defer.gatherResults([client.read(i * 65536, 65536) for i in range(64)])
        self.assertEqual(reads, blocks)
        self.assertEqual(bytes(self.mem.data[:64 * 65536]), b"".join(blocks))
        self.assertEqual([c[3] for c in self.mem.calls if c[0] == "write"][:4],
                         [True, False, True, False])
        yield client.disconnect()
        yield self._until(lambda: not self.factory.connections)
        self.assertEqual(self.factory.counters["requests_disc"], 1)
        self.assertEqual(self.factory.counters["protocol_errors"], 0)

    @defer.inlineCallbacks
    def test_replies_out_of_order(self):
        self.mem.deferred = True
        client = yield connect(reactor, *self.address, "mem")
        self.mem.data[:4] = b"abcd"
        first = client.read(0, 4)
        second = client.write(4096, b"z" * 512)
        yield self._until(lambda: len(self.mem.pending) == 2)
        self.mem.finish(1)
        yield second
        self.assertNoResult(first)
        self.mem.finish(0)
        self.assertEqual((yield first), b"abcd")
        yield client.disconnect()

    @defer.inlineCallbacks
    def test_error_reply_names_the_nbd_error(self):
        client = yield connect(reactor, *self.address, "mem")
        self.mem.fail_with = ExportError(P.ENOSPC, "full")
        with self.assertRaises(NbdError) as caught:
            yield client.write(0, b"x" * 512)
        self.assertEqual(caught.exception.name, "ENOSPC")
        self.mem.fail_with = None
        yield client.write(0, b"y" * 512)      # the connection goes on
        yield client.disconnect()

    @defer.inlineCallbacks
    def test_unknown_export_and_read_only(self):
        with self.assertRaises(NbdError) as caught:
            yield connect(reactor, *self.address, "missing")
        self.assertIn("NBD_REP_ERR_UNKNOWN", str(caught.exception))
        client = yield connect_url(reactor, f"nbd://{self.address[0]}:{self.address[1]}/ro")
        self.assertTrue(client.info.read_only)
        with self.assertRaises(NbdError):
            yield client.write(0, b"x")
        yield client.disconnect()

    def _until(self, condition):
        def check():
            if condition():
                poll.stop()
        poll = task.LoopingCall(check)
        return poll.start(0.01)


class QemuNbdTests(TestCase):
    """Against qemu-nbd serving a file (as the edge will apply to it later)."""

    timeout = 60

    def setUp(self):
        qemu_nbd = require_tool(self, "qemu-nbd")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.image = os.path.join(self.dir, "disk.img")
        with open(self.image, "wb") as f:
            f.truncate(8 * MiB)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = CollectOutput()
        self.process = reactor.spawnProcess(
            self.proc, qemu_nbd, [qemu_nbd, "-f", "raw", "-x", "disk", "-b", "127.0.0.1",
                                  "-p", str(self.port), "--shared", "4", "--persistent",
                                  self.image], env=dict(os.environ))
        self.addCleanup(self._stop)

    def _stop(self):
        if self.proc.ended.called:
            return None
        self.process.signalProcess("TERM")
        return self.proc.ended

    def _connect(self, name="disk"):
        """Connect once qemu-nbd listens (retrying refused connections, polled)."""
        result = defer.Deferred()

        def attempt():
            if self.proc.ended.called:
                result.errback(AssertionError(f"qemu-nbd exited: {self.proc.ended.result}"))
                return
            d = connect(reactor, "127.0.0.1", self.port, name)
            d.addCallbacks(result.callback, retry)

        def retry(failure):
            if failure.check(error.ConnectionRefusedError):
                reactor.callLater(0.02, attempt)
            else:
                result.errback(failure)
        attempt()
        return result

    @defer.inlineCallbacks
    def test_write_read_flush_against_qemu_nbd(self):
        client = yield self._connect()
        self.assertEqual(client.size, 8 * MiB)
        data = bytes((i * 7 + (i >> 12)) & 0xFF for i in range(MiB))
        writes = [client.write(off, data[off:off + 65536], fua=bool(client.flags & P.FLAG_SEND_FUA))
                  for off in range(0, MiB, 65536)]
        yield defer.gatherResults(writes)
        yield client.flush()
        back = yield client.read(0, MiB)
        self.assertEqual(back, data)
        with self.assertRaises(NbdError):
            yield client.read(8 * MiB - 1, 2)
        yield client.disconnect()
        with open(self.image, "rb") as f:
            self.assertEqual(f.read(MiB), data)

    @defer.inlineCallbacks
    def test_unknown_export_on_qemu_nbd(self):
        first = yield self._connect()       # waits until it listens
        yield first.disconnect()
        with self.assertRaises(NbdError) as caught:
            yield connect(reactor, "127.0.0.1", self.port, "other")
        self.assertIn("refused export 'other'", str(caught.exception))
