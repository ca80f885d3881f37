"""NBD transmission phase over a StringTransport: commands, errors, pipelining, back-pressure."""

from __future__ import annotations

import errno
import os

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rcn.nbd import protocol as P
from rcn.nbd.export import ExportTable, NbdError, VolumeExport
from rcn.nbd.session import NbdSession, ServerLimits
from rcn.storage import volume as volume_module
from rcn.storage.volume import Volume, VolumeError
from tests.rcn.nbd.helpers import Client, MemoryExport

MiB = 1 << 20


class TransmissionTestCase(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.patch(NbdSession, "_log", Logger(observer=self.events.append))

    def logged(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)

    def client(self, export, **limits) -> Client:
        c = Client(ExportTable([export]), ServerLimits(**limits) if limits else None)
        c.start(export.name)
        c.take()
        return c

    def volume(self, capacity=8 * MiB, **kw) -> Volume:
        dirname = self.mktemp()
        os.makedirs(dirname)
        volume = Volume(os.path.join(dirname, "lun.img"), 0, capacity, **kw)
        self.addCleanup(volume.close)
        return volume


class VolumeCommandTests(TransmissionTestCase):
    """Every command against a real Volume."""

    def setUp(self):
        super().setUp()
        self.vol = self.volume()
        self.c = self.client(VolumeExport(self.vol, "disk", "test disk"))

    def test_write_read(self):
        c = self.c
        c.request(P.CMD_WRITE, 1, 4096, 8, data=b"abcdefgh")
        c.request(P.CMD_READ, 2, 4094, 12)
        self.assertEqual(c.replies({2: 12}), [(1, 0, b""), (2, 0, b"\0\0abcdefgh\0\0")])
        with open(self.vol.path, "rb") as f:
            f.seek(4096)
            self.assertEqual(f.read(8), b"abcdefgh")
        self.assertEqual(c.counters["requests_write"], 1)
        self.assertEqual(c.counters["requests_read"], 1)
        self.assertEqual(c.counters["bytes_written"], 8)
        self.assertEqual(c.counters["bytes_read"], 12)

    def test_fua_and_flush(self):
        synced = []
        self.patch(volume_module.os, "fdatasync", synced.append)
        c = self.c
        c.request(P.CMD_WRITE, 1, 0, 4, data=b"wxyz")
        self.assertEqual(synced, [])
        c.request(P.CMD_WRITE, 2, 0, 4, flags=P.CMD_FLAG_FUA, data=b"WXYZ")
        self.assertEqual(len(synced), 1)
        c.request(P.CMD_FLUSH, 3)
        self.assertEqual(len(synced), 2)
        c.request(P.CMD_TRIM, 4, 0, 4096, flags=P.CMD_FLAG_FUA)
        self.assertEqual(len(synced), 3)
        c.request(P.CMD_WRITE_ZEROES, 5, 0, 4096, flags=P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE)
        self.assertEqual(len(synced), 4)
        c.request(P.CMD_READ, 6, 0, 4, flags=P.CMD_FLAG_FUA)  # FUA is accepted on any command
        self.assertEqual([(r[0], r[1]) for r in c.replies({6: 4})],
                         [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)])
        self.assertEqual(c.counters["requests_flush"], 1)

    def test_trim_and_write_zeroes_read_back_zero(self):
        c = self.c
        c.request(P.CMD_WRITE, 1, 0, 3 * 65536, data=b"\xab" * (3 * 65536))
        c.request(P.CMD_TRIM, 2, 100, 65536)
        c.request(P.CMD_WRITE_ZEROES, 3, 2 * 65536, 1000)
        c.request(P.CMD_WRITE_ZEROES, 4, 2 * 65536 + 5000, 1000, flags=P.CMD_FLAG_NO_HOLE)
        c.request(P.CMD_READ, 5, 0, 3 * 65536)
        replies = c.replies({5: 3 * 65536})
        self.assertEqual([r[:2] for r in replies], [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)])
        expect = bytearray(b"\xab" * (3 * 65536))
        expect[100:100 + 65536] = bytes(65536)
        expect[131072:132072] = bytes(1000)
        expect[136072:137072] = bytes(1000)
        self.assertEqual(replies[-1][2], bytes(expect))
        self.assertEqual(self.c.counters["requests_trim"], 1)
        self.assertEqual(self.c.counters["requests_write_zeroes"], 2)

    def test_out_of_range(self):
        c = self.c
        size = self.vol.capacity
        c.request(P.CMD_READ, 1, size - 4, 8)
        c.request(P.CMD_WRITE, 2, size - 4, 8, data=b"12345678")  # payload is consumed
        c.request(P.CMD_TRIM, 3, size, 1)
        c.request(P.CMD_WRITE_ZEROES, 4, 2 ** 63, 512)
        c.request(P.CMD_READ, 5, size - 4, 4)
        self.assertEqual(c.replies({5: 4}), [
            (1, P.EINVAL, b""), (2, P.ENOSPC, b""), (3, P.EINVAL, b""),
            (4, P.ENOSPC, b""), (5, 0, bytes(4))])
        self.assertEqual(c.counters["errors"], 4)
        self.assertEqual(c.counters["errors_EINVAL"], 2)
        self.assertEqual(c.counters["errors_ENOSPC"], 2)
        self.assertIn("read at offset 8388604 length 8 ends past the export size 8388608",
                      self.logged())
        self.assertFalse(c.closed)

    def test_bad_flags_and_commands(self):
        c = self.c
        c.request(P.CMD_WRITE, 1, 0, 4, flags=P.CMD_FLAG_NO_HOLE, data=b"nope")
        c.request(P.CMD_READ, 2, 0, 4, flags=P.CMD_FLAG_DF)
        c.request(P.CMD_FLUSH, 3, 0, 512)
        c.request(P.CMD_BLOCK_STATUS, 4, 0, 512)
        c.request(P.CMD_CACHE, 5, 0, 512)
        c.request(77, 6)
        c.request(P.CMD_READ, 7, 0, 4, flags=0x8000)
        c.request(P.CMD_READ, 8, 0, 4)
        self.assertEqual([r[:2] for r in c.replies({8: 4})],
                         [(i, P.EINVAL) for i in range(1, 8)] + [(8, 0)])
        self.assertEqual(self.vol.read(0, 4), bytes(4))
        self.assertEqual(c.counters["requests_unknown"], 3)

    def test_oversize_requests(self):
        c = self.c
        c.request(P.CMD_READ, 1, 0, 32 * MiB + 1)
        c.request(P.CMD_READ, 2, 0, 2 ** 32 - 1)
        self.assertEqual(c.replies(), [(1, P.EINVAL, b""), (2, P.EINVAL, b"")])
        # TRIM and WRITE_ZEROES carry no payload: the limit does not apply to them.
        c.request(P.CMD_TRIM, 3, 0, self.vol.capacity)
        self.assertEqual(c.replies(), [(3, 0, b"")])

    def test_disc_waits_for_nothing_and_closes(self):
        c = self.c
        c.request(P.CMD_WRITE, 1, 0, 2, data=b"hi")
        c.request(P.CMD_DISC, 2)
        c.request(P.CMD_WRITE, 3, 0, 2, data=b"no")  # after DISC: ignored
        self.assertEqual(c.replies(), [(1, 0, b"")])
        self.assertTrue(c.closed)
        self.assertEqual(self.vol.read(0, 2), b"hi")
        self.assertEqual(c.counters["requests_disc"], 1)
        self.assertEqual(c.counters["protocol_errors"], 0)

    def test_export_errors_map_to_nbd_codes(self):
        c = self.c

        def failing(code):
            def pwrite(fd, data, offset):
                raise OSError(code, os.strerror(code))
            return pwrite
        for cookie, (code, expect) in enumerate([
                (errno.ENOSPC, P.ENOSPC), (errno.EDQUOT, P.ENOSPC), (errno.EFBIG, P.ENOSPC),
                (errno.EIO, P.EIO), (errno.EROFS, P.EPERM), (errno.ENOMEM, P.ENOMEM),
                (errno.ELOOP, P.EIO)]):
            self.patch(volume_module.os, "pwrite", failing(code))
            c.request(P.CMD_WRITE, cookie, 0, 4, data=b"data")
            self.assertEqual(c.replies(), [(cookie, expect, b"")], errno.errorcode[code])
        self.assertFalse(c.closed)


class ReadOnlyTests(TransmissionTestCase):
    def test_writes_refused_with_eperm(self):
        vol = self.volume()
        vol.write(0, b"keep")
        c = self.client(VolumeExport(vol, "ro", read_only=True))
        self.assertEqual(c.session.export.read_only, True)
        c.request(P.CMD_WRITE, 1, 0, 4, data=b"lost")
        c.request(P.CMD_TRIM, 2, 0, 4096)
        c.request(P.CMD_WRITE_ZEROES, 3, 0, 4096)
        c.request(P.CMD_FLUSH, 4)
        c.request(P.CMD_READ, 5, 0, 4)
        self.assertEqual(c.replies({5: 4}), [(1, P.EPERM, b""), (2, P.EPERM, b""),
                                              (3, P.EPERM, b""), (4, 0, b""), (5, 0, b"keep")])
        self.assertEqual(c.counters["errors_EPERM"], 3)

    def test_read_only_flags(self):
        vol = self.volume()
        c = Client(ExportTable([VolumeExport(vol, "ro", read_only=True)]))
        c.flags()
        replies = c.go("ro")
        _, size, flags = P.INFO_EXPORT_LAYOUT.unpack(replies[0][2])
        self.assertEqual(flags, P.FLAG_HAS_FLAGS | P.FLAG_READ_ONLY | P.FLAG_SEND_FLUSH
                         | P.FLAG_CAN_MULTI_CONN)
        self.assertEqual(size, vol.capacity)


class AlignmentTests(TransmissionTestCase):
    def test_misaligned_requests_on_strict_export(self):
        vol = self.volume(block_size=4096, strict_alignment=True)
        c = self.client(VolumeExport(vol, "strict"))
        c.request(P.CMD_WRITE, 1, 512, 4096, data=b"\1" * 4096)
        c.request(P.CMD_WRITE, 2, 4096, 512, data=b"\2" * 512)
        c.request(P.CMD_READ, 3, 0, 100)
        c.request(P.CMD_TRIM, 4, 4096, 10)
        c.request(P.CMD_WRITE, 5, 4096, 4096, data=b"\3" * 4096)
        c.request(P.CMD_READ, 6, 4096, 4096)
        self.assertEqual(c.replies({6: 4096}), [
            (1, P.EINVAL, b""), (2, P.EINVAL, b""), (3, P.EINVAL, b""), (4, P.EINVAL, b""),
            (5, 0, b""), (6, 0, b"\3" * 4096)])
        self.assertIn("not aligned to the minimum block size 4096", self.logged())

    def test_byte_granular_export_accepts_any_alignment(self):
        vol = self.volume(block_size=4096)
        c = self.client(VolumeExport(vol, "loose"))
        c.request(P.CMD_WRITE, 1, 4095, 3, data=b"abc")
        c.request(P.CMD_READ, 2, 4094, 5)
        self.assertEqual(c.replies({2: 5}), [(1, 0, b""), (2, 0, b"\0abc\0")])


class LimitTests(TransmissionTestCase):
    def test_oversize_write_payload_is_skipped(self):
        mem = MemoryExport()
        c = self.client(mem, max_request_bytes=4096, max_skip_bytes=64 * 1024)
        c.request(P.CMD_WRITE, 1, 0, 8192, data=b"\xff" * 8192)
        c.request(P.CMD_WRITE, 2, 0, 4, data=b"good")
        self.assertEqual(c.replies(), [(1, P.EINVAL, b""), (2, 0, b"")])
        self.assertEqual(bytes(mem.data[:8]), b"good\0\0\0\0")
        self.assertEqual([call[0] for call in mem.calls], ["write"])
        self.assertIn("write of 8192 bytes exceeds the maximum 4096", self.logged())

    def test_skipped_payload_in_pieces(self):
        mem = MemoryExport()
        c = self.client(mem, max_request_bytes=4096)
        stream = (P.request(P.CMD_WRITE, 1, 0, 10000, data=b"\xff" * 10000)
                  + P.request(P.CMD_WRITE, 2, 0, 3, data=b"abc"))
        for i in range(0, len(stream), 333):
            c.send(stream[i:i + 333])
        self.assertEqual(c.replies(), [(1, P.EINVAL, b""), (2, 0, b"")])
        self.assertEqual(bytes(mem.data[:4]), b"abc\0")

    def test_write_too_large_to_skip_disconnects(self):
        mem = MemoryExport()
        c = self.client(mem, max_request_bytes=4096, max_skip_bytes=8192)
        c.request(P.CMD_WRITE, 1, 0, 9000)
        self.assertEqual(c.replies(), [(1, P.EINVAL, b"")])
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["protocol_errors"], 1)
        self.assertIn("too large to skip", self.logged())

    def test_bad_request_magic_disconnects_server_stays_up(self):
        mem = MemoryExport()
        c = self.client(mem)
        c.request(P.CMD_WRITE, 1, 0, 2, data=b"ok")
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\0\0")
        c.request(P.CMD_WRITE, 2, 0, 2, data=b"no")
        self.assertEqual(c.replies(), [(1, 0, b"")])
        self.assertTrue(c.closed)
        self.assertEqual(c.counters["protocol_errors"], 1)
        self.assertIn("request magic 0x47455420 at stream offset 61", self.logged())
        c.lose()
        # The same factory serves the next client.
        again = Client(None, factory=c.factory)
        again.start()
        again.request(P.CMD_READ, 3, 0, 2)
        self.assertEqual(again.replies({3: 2}), [(3, 0, b"ok")])
        self.assertEqual(c.counters["connections"], 2)

    def test_error_logging_is_bounded(self):
        mem = MemoryExport()
        c = self.client(mem, max_logged_errors=3)
        for cookie in range(10):
            c.request(P.CMD_READ, cookie, mem.size, 1)
        self.assertEqual(len(c.replies()), 10)
        self.assertEqual(c.counters["errors"], 10)
        warnings = [e for e in self.events if "refused with" in formatEvent(e)]
        self.assertEqual(len(warnings), 3)
        self.assertIn("further errors on this connection are counted", formatEvent(warnings[-1]))


class PipelineTests(TransmissionTestCase):
    def test_pipelined_requests_one_write(self):
        mem = MemoryExport()
        c = self.client(mem)
        writes = []
        c.transport.writeSequence = lambda seq: writes.append(list(seq))
        stream = b"".join(P.request(P.CMD_WRITE, i, i * 512, 512, data=bytes([i]) * 512)
                          for i in range(20))
        stream += b"".join(P.request(P.CMD_READ, 100 + i, i * 512, 512) for i in range(20))
        c.send(stream)
        self.assertEqual(len(writes), 1)
        out = b"".join(writes[0])
        from tests.rcn.nbd.helpers import parse_simple_replies
        replies = parse_simple_replies(out, {100 + i: 512 for i in range(20)})
        self.assertEqual([r[0] for r in replies], list(range(20)) + [100 + i for i in range(20)])
        for i in range(20):
            self.assertEqual(replies[20 + i][2], bytes([i]) * 512)

    def test_requests_split_anywhere(self):
        mem = MemoryExport()
        c = self.client(mem)
        stream = b"".join(P.request(P.CMD_WRITE, i, (i - 1) * 1000, 1000, data=bytes([i]) * 1000)
                          for i in range(1, 6)) + P.request(P.CMD_READ, 9, 0, 5000)
        for step in (1, 7, 27, 28, 29, 1001):
            mem.data[:] = bytes(mem.size)
            for i in range(0, len(stream), step):
                c.send(stream[i:i + step])
            replies = c.replies({9: 5000})
            self.assertEqual([r[0] for r in replies], [1, 2, 3, 4, 5, 9], step)
            self.assertEqual(replies[-1][2], b"".join(bytes([i]) * 1000 for i in range(1, 6)))

    def test_out_of_order_completion(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem)
        mem.data[0:8] = b"preread!"
        c.request(P.CMD_READ, 10, 0, 8)
        c.request(P.CMD_WRITE, 11, 100, 3, data=b"abc")
        c.request(P.CMD_FLUSH, 12)
        self.assertEqual(c.take(), b"")
        self.assertEqual(c.session.inflight, 3)
        mem.finish(2)           # the flush first
        mem.finish(1)           # then the write
        mem.finish(0)           # the read last
        self.assertEqual(c.replies({10: 8}), [(12, 0, b""), (11, 0, b""), (10, 0, b"preread!")])
        self.assertEqual(c.session.inflight, 0)

    def test_deferred_errors(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem)
        mem.fail_with = NbdError(P.ENOSPC, "remote copy path is full")
        c.request(P.CMD_WRITE, 1, 0, 1, data=b"x")
        mem.fail_with = VolumeError(errno.EINVAL, "bad")
        c.request(P.CMD_TRIM, 2, 0, 1)
        mem.fail_with = RuntimeError("bug in export")
        c.request(P.CMD_READ, 3, 0, 1)
        for _ in range(3):
            mem.finish()
        self.assertEqual(c.replies(), [(1, P.ENOSPC, b""), (2, P.EINVAL, b""), (3, P.EIO, b"")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        self.assertIn("bug in export", self.logged())

    def test_short_read_from_export_is_eio(self):
        mem = MemoryExport()
        mem.read = lambda offset, length: b"short"
        c = self.client(mem)
        c.request(P.CMD_READ, 1, 0, 100)
        self.assertEqual(c.replies(), [(1, P.EIO, b"")])

    def test_fua_on_trim_flushes_after_deferred(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem)
        c.request(P.CMD_TRIM, 1, 0, 512, flags=P.CMD_FLAG_FUA)
        self.assertEqual(mem.calls, [("trim", 0, 512)])
        mem.finish()
        self.assertEqual(mem.calls[-1], ("flush",))
        self.assertEqual(c.take(), b"")
        mem.finish()
        self.assertEqual(c.replies(), [(1, 0, b"")])

    def test_disc_waits_for_inflight(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem)
        c.request(P.CMD_WRITE, 1, 0, 1, data=b"x")
        c.request(P.CMD_DISC, 2)
        self.assertFalse(c.closed)
        mem.finish()
        self.assertEqual(c.replies(), [(1, 0, b"")])
        self.assertTrue(c.closed)

    def test_replies_after_connection_lost_are_dropped(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem)
        c.request(P.CMD_WRITE, 1, 0, 1, data=b"x")
        c.request(P.CMD_READ, 2, 0, 1)
        c.lose()
        mem.finish()
        mem.finish()
        self.assertEqual(c.take(), b"")
        self.assertEqual(c.counters["replies_dropped"], 2)
        self.assertEqual(c.counters["connections_active"], 0)


class BackpressureTests(TransmissionTestCase):
    def test_inflight_cap_pauses_and_resumes(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem, max_inflight_bytes=16 * 1024)
        stream = b"".join(P.request(P.CMD_WRITE, i, i * 4096, 4096, data=bytes([i]) * 4096)
                          for i in range(10))
        c.send(stream)
        # 4 x 4 KiB = 16 KiB is not over the cap; the fifth write is.
        self.assertEqual(len(mem.pending), 5)
        self.assertEqual(c.transport.producerState, "paused")
        self.assertTrue(c.session.paused)
        self.assertEqual(c.counters["backpressure_pauses"], 1)
        mem.finish()
        mem.finish()
        self.assertEqual(c.transport.producerState, "paused")  # 12 KiB: above half the cap
        resumed = []
        self.patch(c.transport, "resumeProducing", lambda: resumed.append(True))
        mem.finish()
        # 8 KiB in flight: resumed, and the buffered requests are parsed at once
        # until the cap is passed again (2 old + 3 new).
        self.assertEqual(resumed, [True])
        self.assertEqual(len(mem.pending), 5)
        self.assertEqual(c.transport.producerState, "paused")
        self.assertEqual(c.counters["backpressure_pauses"], 2)
        del c.transport.resumeProducing
        while mem.pending:
            mem.finish()
        self.assertEqual([r[0] for r in c.replies()], list(range(10)))
        self.assertEqual(c.transport.producerState, "producing")
        self.assertEqual(mem.data[9 * 4096], 9)

    def test_request_count_cap(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem, max_inflight_requests=4)
        c.send(b"".join(P.request(P.CMD_FLUSH, i) for i in range(6)))
        self.assertEqual(len(mem.pending), 4)
        self.assertEqual(c.transport.producerState, "paused")
        for _ in range(3):
            mem.finish()
        self.assertEqual(len(mem.pending), 3)
        while mem.pending:
            mem.finish()
        self.assertEqual(sorted(r[0] for r in c.replies()), list(range(6)))

    def test_input_while_paused_is_bounded(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem, max_inflight_requests=1, max_backlog_bytes=100)
        c.request(P.CMD_FLUSH, 1)
        self.assertTrue(c.session.paused)
        c.request(P.CMD_FLUSH, 2)
        c.request(P.CMD_FLUSH, 3)
        self.assertFalse(c.closed)
        c.send(bytes(60))
        self.assertTrue(c.closed)
        self.assertIn("arrived while the connection was paused", self.logged())

    def test_send_buffer_full_stops_reading(self):
        mem = MemoryExport()
        c = self.client(mem)
        c.proto.pauseProducing()       # the transport says its send buffer is full
        self.assertEqual(c.transport.producerState, "paused")
        c.request(P.CMD_READ, 1, 0, 4)  # arrives anyway: kept, not processed
        self.assertEqual(c.take(), b"")
        self.assertEqual(mem.calls, [])
        c.proto.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")
        self.assertEqual(c.replies({1: 4}), [(1, 0, bytes(4))])

    def test_both_reasons_must_clear(self):
        mem = MemoryExport(deferred=True)
        c = self.client(mem, max_inflight_requests=1)
        c.request(P.CMD_FLUSH, 1)
        c.proto.pauseProducing()
        mem.finish()
        self.assertEqual(c.transport.producerState, "paused")
        c.proto.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")
