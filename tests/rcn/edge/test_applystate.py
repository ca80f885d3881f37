"""ApplyState: monotonic counters, group-commit durability, reload, corrupt files."""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import TestCase

from rcn.edge import applystate as applystate_module
from rcn.edge.applystate import ApplyState, ApplyStateError, decode_table, encode_table
from tests.rcn.edge.test_logstore import FakeRunSync


class ApplyStateTestCase(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "apply.state")
        self.run_sync = FakeRunSync()

    def make(self, load: bool = True, **kw) -> ApplyState:
        kw.setdefault("run_sync", self.run_sync)
        state = ApplyState(kw.pop("path", self.path), **kw)
        if load:
            state.load()
        return state

    def close(self, state: ApplyState) -> None:
        d = state.close()
        self.run_sync.run_all()
        self.assertTrue(d.called, "close() did not finish")

    def write_file(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)


class MonotonicTests(ApplyStateTestCase):
    def test_lower_value_is_ignored(self):
        state = self.make()
        state.record(1, 5)
        state.record(1, 3)
        self.assertEqual(state.applied(1), 5)
        self.assertEqual(state.applied(2), 0)
        self.assertEqual(state.counters()["records_ignored"], 1)
        self.run_sync.run_all()
        self.assertEqual(decode_table(open(self.path, "rb").read(), self.path), {1: 5})

    def test_lower_value_fires_when_a_higher_one_is_durable(self):
        state = self.make()
        high = state.record(1, 9)
        low = state.record(1, 4)            # ignored, but it waits for durability too
        self.assertFalse(low.called)
        self.run_sync.run_all()
        self.assertTrue(high.called)
        self.assertTrue(low.called)
        self.assertTrue(state.record(1, 2).called, "an already durable value did not fire at once")

    def test_bad_arguments(self):
        state = self.make()
        self.assertRaises(ValueError, state.record, -1, 1)
        self.assertRaises(ValueError, state.record, 1, 1 << 64)
        self.assertRaises(ValueError, state.record, 1, "3")


class DurabilityTests(ApplyStateTestCase):
    def test_deferred_fires_only_when_the_value_is_durable(self):
        state = self.make()
        d = state.record(1, 5)
        self.assertFalse(d.called)
        self.assertEqual((state.applied(1), state.durable(1)), (5, 0))
        self.assertFalse(os.path.exists(self.path))
        self.run_sync.run_next()
        self.assertTrue(d.called)
        self.assertEqual(state.durable(1), 5)
        self.assertEqual(decode_table(open(self.path, "rb").read(), self.path), {1: 5})

    def test_records_during_a_write_share_the_next_one(self):
        state = self.make()
        syncs = []
        real = applystate_module._fsync
        self.patch(applystate_module, "_fsync", lambda fd: (syncs.append(fd), real(fd)))
        first = state.record(1, 1)
        later = [state.record(1, 2), state.record(2, 7), state.record(1, 3)]
        self.assertEqual(len(self.run_sync.calls), 1, "a second write started while one ran")
        self.run_sync.run_next()
        self.assertTrue(first.called)
        self.assertEqual([d.called for d in later], [False] * 3)
        self.assertEqual(len(syncs), 2)              # the file and its directory
        self.assertEqual(len(self.run_sync.calls), 1)
        self.run_sync.run_next()
        self.assertEqual([d.called for d in later], [True] * 3)
        self.assertEqual(len(syncs), 4, "three records took more than one write")
        self.assertEqual((state.durable(1), state.durable(2)), (3, 7))
        self.assertEqual(state.counters()["writes"], 2)
        self.assertFalse(os.path.exists(self.path + ".tmp"))

    def test_failed_write_fails_the_waiters_and_keeps_the_old_file(self):
        state = self.make()
        state.record(1, 1)
        self.run_sync.run_all()
        before = open(self.path, "rb").read()

        def broken(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(applystate_module, "_fsync", broken)
        d = state.record(1, 2)
        self.run_sync.run_all()
        failure = self.failureResultOf(d, ApplyStateError)
        self.assertIn("No space left", str(failure.value))
        self.assertEqual(open(self.path, "rb").read(), before)
        self.assertEqual(state.durable(1), 1)
        self.flushLoggedErrors(OSError)
        self.patch(applystate_module, "_fsync", os.fsync)
        retry = state.record(1, 2)
        self.run_sync.run_all()
        self.assertTrue(retry.called)
        self.assertEqual(state.durable(1), 2)

    def test_real_thread_path(self):
        state = ApplyState(self.path)
        state.load()

        def check(_):
            self.assertEqual(state.durable(3), 40)
            return state.close()

        return state.record(3, 40).addCallback(check)

    def test_memory_only(self):
        state = ApplyState(None)
        self.assertEqual(state.load(), {})
        self.assertTrue(state.record(1, 3).called)
        self.assertEqual(state.durable(1), 3)
        self.assertTrue(state.close().called)


class ReloadTests(ApplyStateTestCase):
    def test_reload_after_close(self):
        state = self.make()
        state.record(1, 10)
        state.record(2, 20)
        self.run_sync.run_next()
        state.record(2, 21)                 # dirty when close() is called
        self.close(state)
        again = self.make(load=False)
        self.assertEqual(again.load(), {1: 10, 2: 21})
        self.assertEqual((again.applied(2), again.durable(2)), (21, 21))

    def test_missing_file_is_an_empty_table_and_tmp_is_removed(self):
        with open(self.path + ".tmp", "wb") as f:
            f.write(b"half a write")
        self.assertEqual(self.make(load=False).load(), {})
        self.assertFalse(os.path.exists(self.path + ".tmp"))

    def test_record_before_load_raises(self):
        state = self.make(load=False)
        exc = self.assertRaises(ApplyStateError, state.record, 1, 1)
        self.assertIn("load", str(exc))

    def test_missing_directory(self):
        state = self.make(load=False, path=os.path.join(self.dir, "nope", "apply.state"))
        exc = self.assertRaises(ApplyStateError, state.load)
        self.assertIn("does not exist", str(exc))


class CorruptTests(ApplyStateTestCase):
    def assertCorrupt(self, data: bytes, words: str) -> None:
        self.write_file(data)
        exc = self.assertRaises(ApplyStateError, self.make(load=False).load)
        self.assertEqual(exc.path, self.path)
        self.assertIn(self.path, str(exc))
        self.assertIn(words, str(exc))

    def test_flipped_bit_is_a_crc_error(self):
        data = bytearray(encode_table({1: 5, 2: 6}))
        data[-1] ^= 1
        self.assertCorrupt(bytes(data), "CRC32C mismatch")

    def test_truncated_file(self):
        data = encode_table({1: 5, 2: 6})
        self.assertCorrupt(data[:-4], "announces 2 items")
        self.assertCorrupt(data[:10], "shorter than the 16-byte header")

    def test_not_an_apply_state_file(self):
        self.assertCorrupt(b"{\"1\": 5, \"2\": 6}  ", "bad magic")
