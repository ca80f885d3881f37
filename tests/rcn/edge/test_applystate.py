"""ApplyState: monotonic counters, group-commit durability, reload, corrupt files."""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import TestCase

from rcn.edge import applystate as applystate_module
from datapath.frames.applystate import SLOT, SLOT_BYTES
from rcn.edge.applystate import ApplyState, ApplyStateError, encode_table, read_slots
from tests.rcn.edge.test_logstore import FakeRunSync


def on_disk(path: str) -> dict[int, int]:
    with open(path, "rb") as f:
        return read_slots(f.read(), path)[0]


class ApplyStateTestCase(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "apply.state")
        self.run_sync = FakeRunSync()

    def make(self, opened: bool = True, **kw) -> ApplyState:
        kw.setdefault("run_sync", self.run_sync)
        state = ApplyState(kw.pop("path", self.path), **kw)
        if opened:
            state.open()
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
        self.assertEqual(on_disk(self.path), {1: 5})

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
        self.assertEqual(on_disk(self.path), {})
        self.run_sync.run_next()
        self.assertTrue(d.called)
        self.assertEqual(state.durable(1), 5)
        self.assertEqual(on_disk(self.path), {1: 5})

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
        self.assertEqual(len(syncs), 1)              # one fdatasync, no rename
        self.assertEqual(len(self.run_sync.calls), 1)
        self.run_sync.run_next()
        self.assertEqual([d.called for d in later], [True] * 3)
        self.assertEqual(len(syncs), 2, "three records took more than one write")
        self.assertEqual((state.durable(1), state.durable(2)), (3, 7))
        self.assertEqual(state.counters()["writes"], 2)

    def test_failed_write_fails_the_waiters_and_keeps_the_old_file(self):
        state = self.make()
        state.record(1, 1)
        self.run_sync.run_all()

        def broken(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(applystate_module, "_fsync", broken)
        d = state.record(1, 2)
        self.run_sync.run_all()
        failure = self.failureResultOf(d, ApplyStateError)
        self.assertIn("No space left", str(failure.value))
        with open(self.path, "rb") as f:
            data = f.read()
        # generation 1 went to slot 1; the failed generation 2 to slot 0: slot 1 is untouched
        self.assertEqual(read_slots(data[SLOT_BYTES:], self.path), ({1: 1}, 1))
        self.assertEqual(state.durable(1), 1)
        self.flushLoggedErrors(OSError)
        self.patch(applystate_module, "_fsync", os.fdatasync)
        retry = state.record(1, 2)
        self.run_sync.run_all()
        self.assertTrue(retry.called)
        self.assertEqual(state.durable(1), 2)

    def test_real_thread_path(self):
        state = ApplyState(self.path)
        state.open()

        def check(_):
            self.assertEqual(state.durable(3), 40)
            return state.close()

        return state.record(3, 40).addCallback(check)

    def test_memory_only(self):
        state = ApplyState(None)
        self.assertEqual(state.open(), {})
        self.assertTrue(state.record(1, 3).called)
        self.assertEqual(state.durable(1), 3)
        self.assertTrue(state.close().called)


# Slots the apply counters wrote before their layout became the field tables of
# datapath.frames.applystate: {1: 10, 2: 21} as generation 3, and a file whose slot 0 holds
# generation 2 ({1: 4, 2: 9}) and slot 1 generation 1 ({1: 4}).
OLD_TABLE = ("524341530002000000000002df21dbe1" "0000000000000003"
             "00000001000000000000000a" "000000020000000000000015")
OLD_SLOT_0 = ("5243415300020000000000028d993c44" "0000000000000002"
              "000000010000000000000004" "000000020000000000000009")
OLD_SLOT_1 = ("524341530002000000000001bfb32f0c" "0000000000000001" "000000010000000000000004")


class OnDiskFormatTests(ApplyStateTestCase):
    """The slots' bytes did not change when their layout became a field table."""

    def old_file(self) -> bytes:
        slot0 = bytes.fromhex(OLD_SLOT_0)
        return slot0 + bytes(SLOT_BYTES - len(slot0)) + bytes.fromhex(OLD_SLOT_1)

    def test_table_is_byte_identical(self):
        self.assertEqual(encode_table({2: 21, 1: 10}, 3), bytes.fromhex(OLD_TABLE))
        self.assertEqual(read_slots(bytes.fromhex(OLD_TABLE), self.path), ({1: 10, 2: 21}, 3))

    def test_the_same_records_write_the_same_file(self):
        state = self.make()
        state.record(1, 4)
        self.run_sync.run_all()
        state.record(2, 9)
        self.close(state)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.old_file())

    def test_a_file_the_old_code_wrote_opens(self):
        self.write_file(self.old_file())
        state = self.make(opened=False)
        self.assertEqual(state.open(), {1: 4, 2: 9})
        state.record(1, 5)
        self.run_sync.run_all()                  # generation 3 goes to slot 1
        self.assertEqual(on_disk(self.path), {1: 5, 2: 9})
        self.close(state)


class ReloadTests(ApplyStateTestCase):
    def test_reload_after_close(self):
        state = self.make()
        state.record(1, 10)
        state.record(2, 20)
        self.run_sync.run_next()
        state.record(2, 21)                 # dirty when close() is called
        self.close(state)
        again = self.make(opened=False)
        self.assertEqual(again.open(), {1: 10, 2: 21})
        self.assertEqual((again.applied(2), again.durable(2)), (21, 21))

    def test_missing_file_is_an_empty_table(self):
        self.assertEqual(self.make(opened=False).open(), {})
        self.assertTrue(os.path.exists(self.path))

    def test_torn_newest_slot_falls_back_to_the_other(self):
        with open(self.path, "wb") as f:
            f.write(encode_table({1: 5}, generation=2))
            f.seek(SLOT_BYTES)
            torn = bytearray(encode_table({1: 9}, generation=3))
            torn[-1] ^= 0xFF
            f.write(torn)
        state = self.make(opened=False)
        self.assertEqual(state.open(), {1: 5})
        state.record(1, 6)
        self.run_sync.run_all()                  # generation 3 goes to the torn slot
        self.assertEqual(on_disk(self.path), {1: 6})

    def test_writes_alternate_between_the_slots(self):
        state = self.make()
        for value in (1, 2, 3):
            state.record(1, value)
            self.run_sync.run_all()
        with open(self.path, "rb") as f:
            data = f.read()
        tables = [read_slots(data[:SLOT_BYTES], self.path), read_slots(data[SLOT_BYTES:], self.path)]
        self.assertEqual(sorted(t[1] for t in tables), [2, 3])
        self.assertEqual(read_slots(data, self.path), ({1: 3}, 3))

    def test_record_before_open_raises(self):
        state = self.make(opened=False)
        exc = self.assertRaises(ApplyStateError, state.record, 1, 1)
        self.assertIn("before open()", str(exc))

    def test_missing_directory(self):
        state = self.make(opened=False, path=os.path.join(self.dir, "nope", "apply.state"))
        exc = self.assertRaises(ApplyStateError, state.open)
        self.assertIn("does not exist", str(exc))


class CorruptTests(ApplyStateTestCase):
    def assertCorrupt(self, data: bytes, words: str) -> None:
        self.write_file(data)
        exc = self.assertRaises(ApplyStateError, self.make(opened=False).open)
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
        self.assertCorrupt(data[:10], f"shorter than the {SLOT.size}-byte header")

    def test_not_an_apply_state_file(self):
        self.assertCorrupt(b"{\"1\": 5, \"2\": 6, \"3\": 7, \"4\": 8}", "bad magic")
