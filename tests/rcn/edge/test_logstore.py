"""LogStore: group commit, replay, torn tails, delete counters, segments, quotas."""

from __future__ import annotations

import errno
import os

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import TestCase

from datapath.frames.logstore import KIND_CHECKPOINT, KIND_ENTRY, RECORD
from rcn.edge import logfiles, logrecords
from rcn.edge.logrecords import encode_checkpoint, encode_entry, scan_records, segment_name
from rcn.edge.logstore import LogStore, LogStoreError, LogStoreFull


class FakeRunSync:
    """A ``run_sync`` that holds each callable until the test runs it."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.ran = 0

    def __call__(self, fn) -> Deferred:
        d = Deferred()
        self.calls.append((fn, d))
        return d

    def run_next(self):
        fn, d = self.calls.pop(0)
        self.ran += 1
        try:
            result = fn()
        except Exception as exc:
            d.errback(exc)
        else:
            d.callback(result)

    def run_all(self, limit: int = 1000):
        while self.calls and limit:
            self.run_next()
            limit -= 1


def entry(group: int, sequence: int, size: int = 100) -> bytes:
    stamp = f"g{group}s{sequence}:".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


class LogStoreTestCase(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.run_sync = FakeRunSync()

    def make(self, **kw) -> LogStore:
        kw.setdefault("run_sync", self.run_sync)
        store = LogStore(kw.pop("directory", self.dir), **kw)
        self.addCleanup(self.shut, store)
        return store

    def shut(self, store: LogStore):
        """Close a store at the end of a test, running the fake thread's calls."""
        if store._closed:
            return
        d = store.close()
        if store._run_sync is self.run_sync:
            self.run_sync.run_all()
        return d

    def opened(self, **kw) -> LogStore:
        store = self.make(**kw)
        store.open()
        return store

    def put(self, store: LogStore, group: int, size: int = 100) -> tuple[int, Deferred]:
        sequence = store.next_sequence(group)
        return sequence, store.append(group, sequence, entry(group, sequence, size))

    def close(self, store: LogStore) -> None:
        d = store.close()
        self.run_sync.run_all()
        self.assertTrue(d.called, "close() did not finish")

    def segments(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if n.endswith(".seg"))

    def records(self, name: str) -> list[tuple[int, object]]:
        with open(os.path.join(self.dir, name), "rb") as f:
            return [(kind, value) for _, kind, value in scan_records(f.read())]

    def entries_in(self, name: str) -> list[tuple[int, int]]:
        return [(v[0], v[1]) for kind, v in self.records(name) if kind == KIND_ENTRY]


# Bytes the log store wrote before its records were read and written through the field
# tables of datapath.frames.logstore (hex, copied from files the old code wrote).
OLD_ENTRY = ("52434c5301000000000000111b59a746"      # ENTRY, 17 bytes, CRC32C
             "01020304" "0000000000000005"           # group 0x01020304, sequence 5
             "68656c6c6f")                           # b"hello"
OLD_CHECKPOINT = ("52434c53020000000000002c67d16320" "00000002"
                  "00000001000000000000000a0000000000000008"
                  "000000070000000000000005" "0000000000000003")
OLD_EMPTY_CHECKPOINT = "52434c53020000000000000448674bc7" "00000000"
# Segment 1 of a store that appended b"one" (group 1), b"two" (group 2) and b"three"
# (group 1), one commit each, then deleted group 1's sequence 1 and closed.
OLD_SEGMENT = (
    "52434c530200000000000018d6154d5c000000010000000100000000000000000000000000000000"
    "52434c53010000000000000ff5cabb0b0000000100000000000000016f6e6552434c530100000000"
    "00000fde14c61100000002000000000000000174776f52434c5301000000000000110c5071e50000"
    "00010000000000000002746872656552434c530200000000000018c9ef143e000000010000000100"
    "000000000000020000000000000001")


class OnDiskFormatTests(LogStoreTestCase):
    """The records' bytes did not change when their layout became a field table."""

    def test_entry_record_is_byte_identical(self):
        data = bytes.fromhex(OLD_ENTRY)
        self.assertEqual(b"".join(encode_entry(0x01020304, 5, b"hello")), data)
        self.assertEqual(list(scan_records(data)), [(0, KIND_ENTRY, (0x01020304, 5, b"hello"))])

    def test_checkpoint_record_is_byte_identical(self):
        items = [(1, 10, 8), (7, 5, 3)]
        self.assertEqual(encode_checkpoint(items), bytes.fromhex(OLD_CHECKPOINT))
        self.assertEqual(encode_checkpoint([]), bytes.fromhex(OLD_EMPTY_CHECKPOINT))
        data = bytes.fromhex(OLD_CHECKPOINT + OLD_EMPTY_CHECKPOINT)
        self.assertEqual(list(scan_records(data)),
                         [(0, KIND_CHECKPOINT, items), (60, KIND_CHECKPOINT, [])])

    def test_the_same_appends_write_the_same_segment(self):
        store = self.opened()
        for group, data in ((1, b"one"), (2, b"two"), (1, b"three")):
            store.append(group, store.next_sequence(group), data)
            self.run_sync.run_all()
        store.delete(1, 1)
        self.close(store)
        self.assertEqual(self.segments(), [segment_name(1)])
        with open(os.path.join(self.dir, segment_name(1)), "rb") as f:
            self.assertEqual(f.read().hex(), OLD_SEGMENT)

    def test_a_directory_the_old_store_wrote_opens(self):
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, segment_name(1)), "wb") as f:
            f.write(bytes.fromhex(OLD_SEGMENT))
        store = self.opened()
        self.assertEqual([store.get(1, 2), store.get(2, 1)], [b"three", b"two"])
        self.assertEqual(store.group_stats(1)["deleted"], 1)
        appended = store.append(1, store.next_sequence(1), b"four")
        self.run_sync.run_all()
        self.assertTrue(appended.called)
        self.close(store)
        self.assertEqual(self.segments(), [segment_name(1), segment_name(2)])
        replayed = self.make().open()
        self.assertEqual(replayed.entries, {1: [(2, b"three"), (3, b"four")], 2: [(1, b"two")]})

    def test_replay_of_an_old_directory(self):
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, segment_name(1)), "wb") as f:
            f.write(bytes.fromhex(OLD_SEGMENT))
        replayed = self.make().open()
        self.assertEqual(replayed.entries, {1: [(2, b"three")], 2: [(1, b"two")]})
        self.assertEqual(replayed.generation, {1: 2, 2: 1})
        self.assertEqual(replayed.deleted, {1: 1, 2: 0})


class MemoryModeTests(LogStoreTestCase):
    def test_memory_mode_fires_at_once_without_files_or_threads(self):
        store = self.make(directory=None, mode="memory")
        self.assertEqual(store.open().entries, {})
        sequence, d = self.put(store, 7)
        self.assertEqual(sequence, 1)
        self.assertTrue(d.called)
        self.assertEqual(self.run_sync.calls, [])
        self.assertFalse(os.path.exists(self.dir))
        self.assertEqual(store.get(7, 1), entry(7, 1))
        self.assertTrue(store.delete(7, 1))
        self.assertEqual(store.group_stats(7)["deleted"], 1)
        self.assertEqual(store.counters()["fsyncs"], 0)

    def test_memory_mode_quota_still_applies(self):
        store = self.make(directory=None, mode="memory", group_quota_bytes=150)
        _, first = self.put(store, 1)
        _, second = self.put(store, 1)
        self.assertTrue(first.called)
        self.assertFalse(second.called)
        self.assertEqual(store.counters()["quota_waits"], 1)
        store.delete(1, 1)
        self.assertTrue(second.called)
        self.assertEqual(store.retained(1), [2])


class GroupCommitTests(LogStoreTestCase):
    def test_first_append_starts_a_commit_at_once(self):
        store = self.opened()
        _, d = self.put(store, 1)
        self.assertEqual(len(self.run_sync.calls), 1)
        self.assertFalse(d.called)
        self.run_sync.run_next()
        self.assertTrue(d.called)
        self.assertEqual(self.entries_in(self.segments()[0]), [(1, 1)])

    def test_appends_during_a_commit_share_the_next_single_fsync(self):
        store = self.opened()
        syncs = []
        real = logfiles._fdatasync
        self.patch(logfiles, "_fdatasync", lambda fd: (syncs.append(fd), real(fd)))
        _, first = self.put(store, 1)
        later = [self.put(store, group)[1] for group in (1, 2, 1, 3)]
        self.assertEqual(len(self.run_sync.calls), 1, "a second commit started while one ran")
        self.run_sync.run_next()
        self.assertEqual(len(syncs), 1)
        self.assertTrue(first.called)
        self.assertEqual([d.called for d in later], [False] * 4)
        self.assertEqual(len(self.run_sync.calls), 1, "the next commit did not start")
        self.run_sync.run_next()
        self.assertEqual(len(syncs), 2, "four entries took more than one fsync")
        self.assertEqual([d.called for d in later], [True] * 4)
        counters = store.counters()
        self.assertEqual((counters["commits"], counters["commit_entries"], counters["batch_max"],
                          counters["fsyncs"]), (2, 5, 4, 2))

    def test_deferreds_fire_only_after_the_fsync(self):
        store = self.opened()
        seen = []
        deferreds = []
        real = logfiles._fdatasync
        self.patch(logfiles, "_fdatasync",
                   lambda fd: (seen.append([d.called for d in deferreds]), real(fd)))
        deferreds.extend(self.put(store, 1)[1] for _ in range(3))
        self.run_sync.run_all()
        self.assertEqual(seen[0], [False, False, False])
        self.assertTrue(all(d.called for d in deferreds))

    def test_records_reach_the_file_in_append_order(self):
        store = self.opened()
        order = []
        for group in (5, 1, 5, 3, 1, 5, 2):
            sequence, _ = self.put(store, group)
            order.append((group, sequence))
        self.run_sync.run_all()
        self.assertEqual(self.entries_in(self.segments()[0]), order)

    def test_record_format_header_and_crc(self):
        store = self.opened()
        self.put(store, 0x01020304)
        self.run_sync.run_all()
        with open(os.path.join(self.dir, self.segments()[0]), "rb") as f:
            data = f.read()
        # The segment starts with a CHECKPOINT; the ENTRY follows it.
        magic, kind, _, length, _ = RECORD.packer.unpack_from(data)
        self.assertEqual((magic, kind), (b"RCLS", KIND_CHECKPOINT))
        at = RECORD.size + length
        magic, kind, _, length, crc = RECORD.packer.unpack_from(data, at)
        self.assertEqual((magic, kind, length), (b"RCLS", KIND_ENTRY, 12 + 100))
        payload = data[at + RECORD.size:]
        self.assertEqual(payload[:12], bytes.fromhex("01020304" "0000000000000001"))
        self.assertEqual(crc, logrecords._crc(payload))
        self.assertEqual(data[at + 5:at + 8], b"\0\0\0")

    def test_real_thread_path(self):
        store = LogStore(self.dir)     # deferToThread
        store.open()
        deferreds = [self.put(store, 1)[1] for _ in range(20)]

        def check(_):
            self.assertEqual(store.retained(1), list(range(1, 21)))
            self.assertGreaterEqual(store.counters()["fsyncs"], 1)
            return store.close()

        def reopen(_):
            again = LogStore(self.dir)
            replayed = again.open()
            self.assertEqual([s for s, _ in replayed.entries[1]], list(range(1, 21)))
            return again.close()

        return DeferredList(deferreds, fireOnOneErrback=True).addCallback(check).addCallback(
            reopen)

    def test_close_finishes_the_running_commit_and_what_is_pending(self):
        store = self.opened()
        _, first = self.put(store, 1)
        _, second = self.put(store, 1)
        closed = store.close()
        self.assertRaises(LogStoreError, self.put, store, 1)
        self.run_sync.run_next()
        self.assertTrue(first.called)
        self.assertFalse(closed.called)
        self.run_sync.run_next()
        self.assertTrue(second.called)
        self.assertTrue(closed.called)
        self.assertEqual(self.run_sync.calls, [])
        self.assertEqual(self.entries_in(self.segments()[0]), [(1, 1), (1, 2)])

    def test_failed_fsync_takes_the_store_out_of_service(self):
        store = self.opened()

        def broken(fd):
            raise OSError(errno.EIO, "Input/output error")

        self.patch(logfiles, "_fdatasync", broken)
        _, first = self.put(store, 1)
        _, second = self.put(store, 1)
        self.run_sync.run_next()
        for d in (first, second):
            failure = self.failureResultOf(d, LogStoreError)
            self.assertIn("Input/output error", str(failure.value))
        self.assertRaises(LogStoreError, store.next_sequence, 1)
        self.assertEqual(store.counters()["errors"], 1)
        self.flushLoggedErrors(OSError)


class ReplayTests(LogStoreTestCase):
    def test_replay_after_close(self):
        store = self.opened()
        for _ in range(5):
            self.put(store, 1)
        self.put(store, 2, size=300)
        self.run_sync.run_all()
        store.delete(1, 1)
        store.delete(1, 2)
        self.close(store)
        again = self.make()
        replayed = again.open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [3, 4, 5])
        self.assertEqual(replayed.entries[1][0][1], entry(1, 3))
        self.assertEqual(replayed.entries[2], [(1, entry(2, 1, 300))])
        self.assertEqual(replayed.generation, {1: 5, 2: 1})
        self.assertEqual(replayed.deleted, {1: 2, 2: 0})
        self.assertEqual(again.next_sequence(1), 6)
        self.assertEqual(again.get(1, 4), entry(1, 4))
        self.assertEqual(again.counters()["retained_bytes"], 600)

    def test_replay_after_a_torn_tail(self):
        store = self.opened()
        for _ in range(3):
            self.put(store, 1)
        self.run_sync.run_all()
        self.close(store)
        [name] = self.segments()
        path = os.path.join(self.dir, name)
        size = os.path.getsize(path)
        os.truncate(path, size - 5)
        again = self.make()
        replayed = again.open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [1, 2])
        self.assertEqual(replayed.generation[1], 2)
        self.assertEqual(os.path.getsize(path), size - RECORD.size - 12 - 100)
        self.assertEqual(again.counters()["torn_tails"], 1)
        # The torn sequence was never acknowledged: it is allocated again...
        sequence, d = self.put(again, 1)
        self.assertEqual(sequence, 3)
        self.run_sync.run_all()
        self.assertTrue(d.called)
        # ...into a new segment, never after the truncated tail.
        self.assertEqual(len(self.segments()), 2)
        self.assertEqual(os.path.getsize(path), size - RECORD.size - 12 - 100)
        self.assertEqual(self.entries_in(self.segments()[1]), [(1, 3)])

    def test_crash_keeps_acknowledged_entries_and_reuses_unwritten_sequences(self):
        store = self.opened()
        acked = [self.put(store, 1)[1] for _ in range(3)]
        self.run_sync.run_all()
        self.assertTrue(all(d.called for d in acked))
        store.next_sequence(1)                       # allocated, never appended
        _, lost = self.put(store, 1)                 # appended, its commit never runs
        self.crash(store)
        self.assertFalse(lost.called)
        replayed = self.make().open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [1, 2, 3])
        self.assertEqual(replayed.generation[1], 3)

    def crash(self, store: LogStore) -> None:
        """What a power cut leaves: queued commits never run, the files just closed."""
        fds = [store._writer._fd, store._writer._lock_fd]
        for fn, _ in self.run_sync.calls:        # a queued commit holds the segment's fd
            names = fn.__code__.co_freevars
            fds.append(fn.__closure__[names.index("fd")].cell_contents)
        self.run_sync.calls.clear()
        for fd in fds:
            if fd is not None:
                os.close(fd)
        store._writer._fd = store._writer._lock_fd = None
        store._closed = True

    def test_bad_crc_on_the_last_record_is_a_torn_tail(self):
        store = self.opened()
        for _ in range(2):
            self.put(store, 1)
        self.close(store)
        path = os.path.join(self.dir, self.segments()[0])
        with open(path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
        replayed = self.make().open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [1])

    def test_zero_bytes_after_the_last_record_are_a_torn_tail(self):
        store = self.opened()
        self.put(store, 1)
        self.close(store)
        path = os.path.join(self.dir, self.segments()[0])
        size = os.path.getsize(path)
        with open(path, "ab") as f:
            f.write(bytes(4096))
        replayed = self.make().open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [1])
        self.assertEqual(os.path.getsize(path), size)

    def test_bad_crc_followed_by_zero_bytes_is_a_torn_tail(self):
        store = self.opened()
        for _ in range(2):
            self.put(store, 1)
        self.close(store)
        path = os.path.join(self.dir, self.segments()[0])
        size = os.path.getsize(path)
        with open(path, "r+b") as f:         # the last entry's payload end never hit the disk
            f.seek(size - 40)
            f.write(bytes(40 + 8192))
        replayed = self.make().open()
        self.assertEqual([s for s, _ in replayed.entries[1]], [1])
        self.assertEqual(os.path.getsize(path), size - RECORD.size - 12 - 100)

    def test_corrupt_middle_record_raises_with_file_and_offset(self):
        store = self.opened()
        for _ in range(3):
            self.put(store, 1)
        self.close(store)
        path = os.path.join(self.dir, self.segments()[0])
        records = list(scan_records(open(path, "rb").read()))
        offset = records[2][0]          # the second ENTRY, between two good records
        with open(path, "r+b") as f:
            f.seek(offset + RECORD.size + 20)
            f.write(b"\xff\xff")
        size = os.path.getsize(path)
        exc = self.assertRaises(LogStoreError, self.make().open)
        self.assertIn(path, str(exc))
        self.assertIn(f"offset {offset}", str(exc))
        self.assertIn("CRC32C", str(exc))
        self.assertEqual(os.path.getsize(path), size, "a corrupt segment was truncated")

    def test_torn_tail_in_a_segment_that_is_not_the_last_raises(self):
        store = self.opened(segment_bytes=1)
        for _ in range(2):
            self.put(store, 1)
            self.run_sync.run_all()
        self.close(store)
        self.assertEqual(len(self.segments()), 2)
        path = os.path.join(self.dir, self.segments()[0])
        os.truncate(path, os.path.getsize(path) - 3)
        exc = self.assertRaises(LogStoreError, self.make().open)
        self.assertIn(path, str(exc))
        self.assertIn("not the last", str(exc))

    def test_locked_directory_and_file_in_the_way(self):
        self.opened()
        exc = self.assertRaises(LogStoreError, self.make().open)
        self.assertIn("in use by another log store", str(exc))
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("x")
        exc = self.assertRaises(LogStoreError, self.make(directory=blocker).open)
        self.assertIn(blocker, str(exc))

    def test_append_before_open_raises(self):
        store = self.make()
        self.assertRaises(LogStoreError, store.next_sequence, 1)


class DeleteTests(LogStoreTestCase):
    def test_delete_out_of_order_and_the_delete_counter(self):
        store = self.opened()
        for _ in range(5):
            self.put(store, 1)
        self.run_sync.run_all()
        steps = []
        for sequence in (3, 1, 2, 5, 4):
            self.assertTrue(store.delete(1, sequence))
            steps.append(store.group_stats(1)["deleted"])
        self.assertEqual(steps, [0, 1, 3, 3, 5])
        self.assertFalse(store.delete(1, 4))
        self.assertFalse(store.delete(9, 1))
        self.assertEqual(store.retained(1), [])
        self.assertEqual(store.counters()["delete_unknown"], 2)

    def test_delete_counter_does_not_pass_an_allocated_unappended_sequence(self):
        store = self.opened()
        held = store.next_sequence(1)
        sequence, _ = self.put(store, 1)
        store.delete(1, sequence)
        self.assertEqual(store.group_stats(1)["deleted"], 0)
        store.append(1, held, entry(1, held))
        store.delete(1, held)
        self.assertEqual(store.group_stats(1)["deleted"], 2)

    def test_delete_frees_quota_bytes(self):
        store = self.opened()
        self.put(store, 1, size=250)
        self.assertEqual(store.group_stats(1)["retained_bytes"], 250)
        store.delete(1, 1)
        self.assertEqual(store.group_stats(1)["retained_bytes"], 0)
        self.assertEqual(store.counters()["retained_entries"], 0)

    def test_checkpoint_persists_the_delete_counter_across_close(self):
        store = self.opened()
        for _ in range(4):
            self.put(store, 1)
        self.run_sync.run_all()
        for sequence in (1, 2, 4):
            store.delete(1, sequence)
        self.close(store)
        replayed = self.make().open()
        self.assertEqual(replayed.deleted[1], 2)
        # 4 was deleted above the counter: it comes back, re-sending it is harmless.
        self.assertEqual([s for s, _ in replayed.entries[1]], [3, 4])

    def test_checkpoint_rides_on_a_commit_without_its_own_fsync(self):
        store = self.opened()
        self.put(store, 1)
        self.run_sync.run_all()
        store.delete(1, 1)
        self.assertEqual(self.run_sync.calls, [], "one delete forced a commit")
        self.put(store, 2)
        self.run_sync.run_all()
        kinds = [kind for kind, _ in self.records(self.segments()[0])]
        self.assertEqual(kinds, [KIND_CHECKPOINT, KIND_ENTRY, KIND_ENTRY, KIND_CHECKPOINT])
        self.assertEqual(self.records(self.segments()[0])[-1][1], [(1, 1, 1)])
        self.assertEqual(store.counters()["fsyncs"], 2)

    def test_checkpoint_every_n_deletes_is_written_without_fsync(self):
        store = self.opened(checkpoint_every=3)
        for _ in range(3):
            self.put(store, 1)
        self.run_sync.run_all()
        fsyncs = store.counters()["fsyncs"]
        store.delete(1, 1)
        store.delete(1, 2)
        self.assertEqual(self.run_sync.calls, [])
        store.delete(1, 3)
        self.assertEqual(len(self.run_sync.calls), 1)
        self.run_sync.run_all()
        self.assertEqual(store.counters()["fsyncs"], fsyncs)
        self.assertEqual(self.records(self.segments()[0])[-1], (KIND_CHECKPOINT, [(1, 3, 3)]))

    def test_checkpoint_interval_with_a_clock(self):
        clock = task.Clock()
        store = self.opened(clock=clock, checkpoint_interval=2.0)
        self.put(store, 1)
        self.run_sync.run_all()
        store.delete(1, 1)
        clock.advance(1.9)
        self.assertEqual(self.run_sync.calls, [])
        clock.advance(0.1)
        self.assertEqual(len(self.run_sync.calls), 1)
        self.run_sync.run_all()
        self.assertEqual(self.records(self.segments()[0])[-1], (KIND_CHECKPOINT, [(1, 1, 1)]))


class SegmentTests(LogStoreTestCase):
    def test_rollover_begins_with_a_checkpoint_and_reclaims_deleted_segments(self):
        store = self.opened(segment_bytes=250)
        self.put(store, 2, size=10)     # 38 bytes, into the first segment
        for _ in range(6):          # one 128-byte record per commit: two fill a segment
            self.put(store, 1)
            self.run_sync.run_all()
        names = self.segments()
        self.assertEqual(len(names), 3)
        self.assertEqual(store.counters()["segments_created"], 3)
        self.assertEqual(self.entries_in(names[0]), [(2, 1), (1, 1), (1, 2)])
        self.assertEqual(self.entries_in(names[1]), [(1, 3), (1, 4)])
        head = self.records(names[1])[0]
        self.assertEqual(head, (KIND_CHECKPOINT, [(1, 2, 0), (2, 1, 0)]))
        store.delete(1, 1)
        store.delete(1, 2)
        self.assertEqual(self.run_sync.calls, [])     # segment 1 still holds group 2's entry
        store.delete(2, 1)
        self.assertEqual(len(self.run_sync.calls), 1, "a reclaimable segment did not start a job")
        self.run_sync.run_all()
        self.assertEqual(self.segments(), names[1:])
        self.assertEqual(store.counters()["segments_reclaimed"], 1)

    def test_current_segment_is_not_reclaimed(self):
        store = self.opened()
        self.put(store, 1)
        self.run_sync.run_all()
        store.delete(1, 1)
        self.run_sync.run_all()
        self.assertEqual(len(self.segments()), 1)

    def test_generation_survives_reclaim_of_all_old_segments(self):
        store = self.opened(segment_bytes=200)
        for _ in range(4):            # group 1 only in the first segments
            self.put(store, 1)
            self.run_sync.run_all()
        for sequence in range(1, 5):
            store.delete(1, sequence)
        for _ in range(3):            # group 2 moves the log on
            self.put(store, 2)
            self.run_sync.run_all()
            store.delete(2, store.retained(2)[0])
        self.run_sync.run_all()
        names = self.segments()
        self.assertEqual(len(names), 1)
        self.assertEqual(self.entries_in(names[0]), [(2, 3)])
        self.assertEqual(store.counters()["segments_created"], 4)
        self.assertEqual(store.counters()["segments_reclaimed"], 3)
        self.close(store)
        again = self.make()
        replayed = again.open()
        self.assertEqual(replayed.generation, {1: 4, 2: 3})
        self.assertEqual(replayed.deleted, {1: 4, 2: 3})
        self.assertEqual(replayed.entries, {})
        self.assertEqual(again.next_sequence(1), 5)

    def test_replayed_segments_without_live_entries_are_reclaimed_after_the_new_checkpoint(self):
        store = self.opened(segment_bytes=100)      # every commit opens a new segment
        for _ in range(2):
            self.put(store, 1)
            self.run_sync.run_all()
        store.delete(1, 1)
        store.delete(1, 2)
        self.run_sync.run_all()
        self.close(store)
        [last] = self.segments()       # the first was reclaimed; the current one stays
        again = self.make(segment_bytes=100)
        self.assertEqual(again.open().deleted, {1: 2})
        self.assertEqual(again.counters()["segments"], 1)
        self.put(again, 1)
        self.assertEqual(self.segments(), [last], "unlinked before the new checkpoint")
        self.run_sync.run_all()
        self.assertEqual(self.segments(), [segment_name(int(last[:16]) + 1)])
        self.assertEqual(self.records(self.segments()[0])[0], (KIND_CHECKPOINT, [(1, 2, 2)]))


class QuotaTests(LogStoreTestCase):
    def test_quota_backpressure_waits_and_releases_in_order(self):
        store = self.opened(group_quota_bytes=300)
        for _ in range(3):
            self.put(store, 1)
        self.run_sync.run_all()
        _, fourth = self.put(store, 1)
        _, fifth = self.put(store, 1, size=10)       # fits, but waits behind the fourth
        _, other = self.put(store, 2)                # another group is not held up
        self.assertEqual(store.counters()["quota_waits"], 2)
        self.run_sync.run_all()
        self.assertTrue(other.called)
        self.assertFalse(fourth.called)
        self.assertFalse(fifth.called)
        self.assertEqual(store.retained(1), [1, 2, 3])
        store.delete(1, 2)
        self.assertEqual(store.retained(1), [1, 3, 4])    # the fifth would make 310 bytes
        self.assertFalse(fourth.called, "fired before it was durable")
        self.run_sync.run_all()
        self.assertTrue(fourth.called)
        self.assertFalse(fifth.called)
        store.delete(1, 1)
        self.run_sync.run_all()
        self.assertTrue(fifth.called)
        self.assertEqual(store.retained(1), [3, 4, 5])
        self.assertEqual(store.counters()["quota_waiting"], 0)

    def test_entry_larger_than_the_quota_waits_for_an_empty_group(self):
        store = self.opened(group_quota_bytes=100)
        _, small = self.put(store, 1, size=50)
        _, big = self.put(store, 1, size=500)
        self.run_sync.run_all()
        self.assertTrue(small.called)
        self.assertFalse(big.called)
        store.delete(1, 1)
        self.run_sync.run_all()
        self.assertTrue(big.called)
        self.assertEqual(store.group_stats(1)["retained_bytes"], 500)

    def test_log_store_full_when_too_many_wait(self):
        store = self.opened(group_quota_bytes=100, max_waiters=2)
        self.put(store, 1)
        waiting = [self.put(store, 1)[1]]
        self.put(store, 2)
        waiting.append(self.put(store, 2)[1])
        sequence = store.next_sequence(1)
        exc = self.assertRaises(LogStoreFull, store.append, 1, sequence, entry(1, sequence))
        self.assertTrue(exc.released)
        self.assertIn("BUSY", str(exc))
        self.assertEqual(store.next_sequence(1), sequence, "the refused sequence was lost")
        self.assertEqual(store.counters()["full_refusals"], 1)
        self.close(store)
        for d in waiting:                 # close() fails what still waits for room
            self.assertIn("closed before", str(self.failureResultOf(d, LogStoreError).value))


class ValueErrorTests(LogStoreTestCase):
    def test_bad_sequences_are_value_errors(self):
        store = self.opened()
        self.assertRaises(ValueError, store.append, 1, 1, b"x")          # never allocated
        sequence, _ = self.put(store, 1)
        self.assertRaises(ValueError, store.append, 1, sequence, b"x")   # already retained
        self.assertRaises(ValueError, store.append, 1, 0, b"x")
        self.assertRaises(ValueError, store.append, 1, 99, b"x")
        self.run_sync.run_all()
        store.delete(1, sequence)
        exc = self.assertRaises(ValueError, store.append, 1, sequence, b"x")   # <= D
        self.assertIn("delete counter", str(exc))
        held = store.next_sequence(1)
        later, _ = self.put(store, 1)
        self.run_sync.run_all()
        store.delete(1, later)                                            # deleted above D
        self.assertRaises(ValueError, store.append, 1, later, b"x")
        self.assertRaises(ValueError, store.release, 1, held)             # not the newest
        self.assertRaises(ValueError, store.next_sequence, -1)
        self.assertRaises(ValueError, LogStore, None)
        self.assertRaises(ValueError, LogStore, self.dir, mode="tape")

    def test_release_gives_back_the_newest_sequence(self):
        store = self.opened()
        sequence = store.next_sequence(3)
        store.release(3, sequence)
        self.assertEqual(store.next_sequence(3), sequence)
