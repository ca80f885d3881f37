"""Sequence reorder buffer kernels (datapath.kernels.reorder) against the reference model."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.kernels import reorder
from datapath.kernels.reorder import (
    STATE_COUNT, STATE_HIGHEST, STATE_NEXT, VERDICT_ACCEPTED, VERDICT_APPLIED_DUPLICATE,
    VERDICT_BEYOND_WINDOW, VERDICT_BUFFERED_DUPLICATE, ReorderBuffer,
)
from datapath.reference.reorder import ReorderModel

M = 2 ** 64


def seqs(*values) -> np.ndarray:
    return np.array([v % M for v in values], dtype=np.uint64)


def handles(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def insert(buffer: ReorderBuffer, *sequences: int) -> list[int]:
    """Insert ``sequences`` with handle = 1000 + position; the verdicts as a list."""
    return buffer.insert(seqs(*sequences), np.arange(1000, 1000 + len(sequences),
                                                     dtype=np.int64)).tolist()


def assert_same_state(case: TestCase, buffer: ReorderBuffer, model: ReorderModel) -> None:
    case.assertEqual(buffer.next_expected, model.next_expected)
    case.assertEqual(buffer.occupancy, model.occupancy)
    case.assertEqual(buffer.highest_buffered, model.highest_buffered)
    sequences, handles_ = buffer.entries()
    case.assertEqual(list(zip(sequences.tolist(), handles_.tolist())), model.entries())


# -- random operation sequences ---------------------------------------------------------

CAPACITIES = st.sampled_from([1, 2, 4, 8, 16, 64])
FIRST_SEQUENCES = st.one_of(
    st.just(1), st.just(0),
    st.integers(1, 8).map(lambda k: M - k),                  # wraps during the run
    st.integers(1, 80).map(lambda k: M - k),
    st.integers(0, M - 1),
)
# offsets beyond the window's neighbourhood: the 2**63 boundary between "beyond"
# and "applied", just behind, far ahead, anywhere
FAR_OFFSETS = st.one_of(st.sampled_from([2 ** 63 - 1, 2 ** 63, 2 ** 63 + 1, M - 1, 2 ** 62]),
                        st.integers(0, M - 1))
HANDLES = st.integers(-2 ** 63, 2 ** 63 - 1)


@st.composite
def scenarios(draw):
    """``(capacity, first_sequence, operations)``; insert offsets are from next_expected."""
    capacity = draw(CAPACITIES)
    first = draw(FIRST_SEQUENCES)
    offsets = st.one_of(st.integers(0, capacity - 1), st.integers(0, capacity - 1),
                        st.integers(0, capacity - 1), st.integers(-capacity - 2, 2 * capacity + 2),
                        FAR_OFFSETS)
    operation = st.one_of(
        st.tuples(st.just("insert"), st.lists(st.tuples(offsets, HANDLES), max_size=2 * capacity + 4)),
        # a shuffled run of the window, from its start or anywhere in it
        st.builds(lambda start, length, order: ("insert", [(start + i, h) for i, h in order[:length]]),
                  st.one_of(st.just(0), st.integers(0, capacity)), st.integers(0, capacity + 1),
                  st.permutations(range(capacity + 1)).map(
                      lambda order: [(i, 1000 + i) for i in order])),
        st.tuples(st.just("release"), st.one_of(st.none(), st.integers(0, capacity + 2)),
                  st.booleans()),
        st.tuples(st.just("missing"), st.one_of(st.none(), st.integers(0, 6)), st.booleans()),
        st.tuples(st.just("snapshot")),
    )
    return capacity, first, draw(st.lists(operation, max_size=40))


class ModelEquivalenceTests(TestCase):
    """Kernel wrapper == reference model on random operation sequences."""

    @settings(deadline=None, derandomize=True, max_examples=500)
    @given(scenarios())
    def test_random_operations_match_model(self, scenario):
        capacity, first, operations = scenario
        buffer = ReorderBuffer(capacity, first)
        model = ReorderModel(capacity, first)
        assert_same_state(self, buffer, model)
        for operation in operations:
            kind = operation[0]
            if kind == "insert":
                pairs = operation[1]
                sequences = [(buffer.next_expected + offset) % M for offset, _ in pairs]
                handle_list = [h for _, h in pairs]
                got = buffer.insert(np.array(sequences, dtype=np.uint64),
                                    np.array(handle_list, dtype=np.int64))
                self.assertEqual(got.dtype, np.uint8)
                self.assertEqual(got.tolist(), model.insert(sequences, handle_list))
            elif kind == "release":
                _, limit, preallocate = operation
                if preallocate:
                    out = np.full(capacity + 2, -7, dtype=np.int64)
                    got, first_released = buffer.release(out, limit)
                    expected, model_first = model.release(
                        capacity + 2 if limit is None else min(limit, capacity + 2))
                else:
                    got, first_released = buffer.release(limit=limit)
                    expected, model_first = model.release(limit)
                self.assertEqual(got.tolist(), expected)
                self.assertEqual(first_released, model_first)
            elif kind == "missing":
                _, max_ranges, preallocate = operation
                out = np.zeros((3, 2), dtype=np.uint64) if preallocate else None
                got = buffer.missing(max_ranges, out)
                expected = model.missing(max_ranges)
                if preallocate:
                    expected = expected[:3]
                self.assertEqual(got.dtype, np.uint64)
                self.assertEqual(got.shape[1:], (2,))
                self.assertEqual([tuple(r) for r in got.tolist()], expected)
            else:
                snapshot = buffer.snapshot()
                buffer = ReorderBuffer.from_snapshot(snapshot)
            assert_same_state(self, buffer, model)

    @settings(deadline=None, derandomize=True, max_examples=10)
    @given(st.integers(0, 2 ** 32), st.sampled_from([0, 1, 2 ** 63, M - 1000]))
    def test_largest_shuffled_window_matches_model(self, seed, first):
        """A 4096-slot buffer fed a shuffled window with holes and repeats, in batches."""
        capacity = 4096
        rng = np.random.default_rng(seed)
        offsets = rng.permutation(capacity + 64)[: capacity - 100]
        offsets = np.concatenate([offsets, offsets[:50]])          # repeats
        sequences = ((first + offsets.astype(object)) % M).astype(np.uint64)
        handle_array = rng.integers(-2 ** 63, 2 ** 63 - 1, size=sequences.shape[0], dtype=np.int64)
        buffer = ReorderBuffer(capacity, first)
        model = ReorderModel(capacity, first)
        for part in np.array_split(np.arange(sequences.shape[0]), 3):
            got = buffer.insert(sequences[part], handle_array[part])
            self.assertEqual(got.tolist(), model.insert(sequences[part].tolist(),
                                                        handle_array[part].tolist()))
        self.assertEqual([tuple(r) for r in buffer.missing().tolist()], model.missing())
        got, got_first = buffer.release()
        self.assertEqual((got.tolist(), got_first), model.release())
        assert_same_state(self, buffer, model)


# -- verdicts ---------------------------------------------------------------------------

class InsertTests(TestCase):
    def test_insert_one_gives_the_batch_verdicts(self):
        one, batch = ReorderBuffer(8, 10), ReorderBuffer(8, 10)
        sequences = [12, 10, 12, 9, 30, 11]
        got = [one.insert_one(s, n) for n, s in enumerate(sequences)]
        self.assertEqual(got, insert(batch, *sequences))
        self.assertEqual(one.entries()[0].tolist(), batch.entries()[0].tolist())
        self.assertEqual(one.next_expected, batch.next_expected)

    def test_first_sequence_defaults_to_one(self):
        buffer = ReorderBuffer(8)
        self.assertEqual(buffer.next_expected, 1)
        self.assertEqual(insert(buffer, 0), [VERDICT_APPLIED_DUPLICATE])

    def test_accepts_sequences_inside_window(self):
        buffer = ReorderBuffer(8, 10)
        self.assertEqual(insert(buffer, 10, 17, 12), [VERDICT_ACCEPTED] * 3)
        self.assertEqual(buffer.occupancy, 3)
        self.assertEqual(buffer.highest_buffered, 17)

    def test_sequence_at_window_end_is_beyond_window(self):
        buffer = ReorderBuffer(8, 10)
        self.assertEqual(insert(buffer, 18, 10 + 2 ** 62), [VERDICT_BEYOND_WINDOW] * 2)
        self.assertEqual(buffer.occupancy, 0)

    def test_sequence_behind_next_is_applied_duplicate(self):
        buffer = ReorderBuffer(8, 10)
        insert(buffer, 10, 11)
        buffer.release()
        self.assertEqual(insert(buffer, 11, 10, 0), [VERDICT_APPLIED_DUPLICATE] * 3)

    def test_half_range_boundary_separates_applied_from_beyond(self):
        buffer = ReorderBuffer(8, 10)
        self.assertEqual(insert(buffer, 10 + 2 ** 63 - 1, 10 + 2 ** 63, 10 - 2 ** 63),
                         [VERDICT_BEYOND_WINDOW, VERDICT_APPLIED_DUPLICATE,
                          VERDICT_APPLIED_DUPLICATE])

    def test_buffered_sequence_again_is_buffered_duplicate(self):
        buffer = ReorderBuffer(8)
        insert(buffer, 3)
        self.assertEqual(insert(buffer, 3), [VERDICT_BUFFERED_DUPLICATE])
        self.assertEqual(buffer.entries()[1].tolist(), [1000])     # first handle kept

    def test_duplicate_in_same_batch_is_buffered_duplicate(self):
        buffer = ReorderBuffer(8)
        self.assertEqual(insert(buffer, 5, 5, 5), [VERDICT_ACCEPTED] + [VERDICT_BUFFERED_DUPLICATE] * 2)
        self.assertEqual(buffer.entries()[1].tolist(), [1000])

    def test_rejected_entries_leave_state_unchanged(self):
        buffer = ReorderBuffer(8, 10)
        insert(buffer, 12)
        before = buffer.snapshot()
        insert(buffer, 12, 9, 18, 2 ** 63)
        after = buffer.snapshot()
        for name in before:
            self.assertTrue(np.array_equal(before[name], after[name]), name)

    def test_full_buffer_accepts_nothing_more(self):
        buffer = ReorderBuffer(4, 1)
        self.assertEqual(insert(buffer, 4, 3, 2, 1), [VERDICT_ACCEPTED] * 4)
        self.assertEqual(buffer.occupancy, buffer.capacity)
        self.assertEqual(insert(buffer, 5, 1), [VERDICT_BEYOND_WINDOW, VERDICT_BUFFERED_DUPLICATE])

    def test_window_moves_with_release(self):
        buffer = ReorderBuffer(4, 1)
        insert(buffer, 1, 2)
        buffer.release()
        self.assertEqual(insert(buffer, 6, 7), [VERDICT_ACCEPTED, VERDICT_BEYOND_WINDOW])

    def test_window_across_wrap_point(self):
        buffer = ReorderBuffer(8, M - 3)
        self.assertEqual(insert(buffer, M - 3, M - 1, 0, 4, 5, M - 4),
                         [VERDICT_ACCEPTED] * 4 + [VERDICT_BEYOND_WINDOW, VERDICT_APPLIED_DUPLICATE])
        self.assertEqual(buffer.highest_buffered, 4)

    def test_capacity_one(self):
        buffer = ReorderBuffer(1, 7)
        self.assertEqual(insert(buffer, 8, 7, 7), [VERDICT_BEYOND_WINDOW, VERDICT_ACCEPTED,
                                                   VERDICT_BUFFERED_DUPLICATE])
        self.assertEqual(buffer.release()[0].tolist(), [1001])
        self.assertEqual(buffer.next_expected, 8)

    def test_empty_batch(self):
        buffer = ReorderBuffer(8)
        verdicts = buffer.insert(np.empty(0, np.uint64), np.empty(0, np.int64))
        self.assertEqual((verdicts.shape, verdicts.dtype), ((0,), np.uint8))

    def test_verdicts_written_into_out(self):
        buffer = ReorderBuffer(8)
        out = np.full(2, 9, dtype=np.uint8)
        result = buffer.insert(seqs(1, 1), handles(4, 5), out)
        self.assertIs(result, out)
        self.assertEqual(out.tolist(), [VERDICT_ACCEPTED, VERDICT_BUFFERED_DUPLICATE])


# -- release ----------------------------------------------------------------------------

class ReleaseTests(TestCase):
    def test_release_returns_contiguous_run_and_its_first_sequence(self):
        buffer = ReorderBuffer(8, 5)
        buffer.insert(seqs(6, 5, 7, 9), handles(60, 50, 70, 90))
        got, first = buffer.release()
        self.assertEqual((got.tolist(), first), ([50, 60, 70], 5))
        self.assertEqual(buffer.next_expected, 8)
        self.assertEqual(buffer.occupancy, 1)

    def test_release_stops_at_gap(self):
        buffer = ReorderBuffer(8, 5)
        buffer.insert(seqs(6, 7), handles(60, 70))
        got, first = buffer.release()
        self.assertEqual((got.tolist(), first), ([], 5))
        self.assertEqual(buffer.next_expected, 5)

    def test_release_of_empty_buffer(self):
        got, first = ReorderBuffer(8, 3).release()
        self.assertEqual((got.tolist(), first, got.dtype), ([], 3, np.int64))

    def test_release_bounded_by_out_handles(self):
        buffer = ReorderBuffer(8)
        insert(buffer, 1, 2, 3, 4)
        out = np.zeros(3, dtype=np.int64)
        got, first = buffer.release(out)
        self.assertEqual((got.tolist(), first), ([1000, 1001, 1002], 1))
        self.assertTrue(np.shares_memory(got, out))
        self.assertEqual(buffer.release()[0].tolist(), [1003])

    def test_release_bounded_by_limit(self):
        buffer = ReorderBuffer(8)
        insert(buffer, 1, 2, 3, 4)
        self.assertEqual(buffer.release(limit=2)[0].tolist(), [1000, 1001])
        self.assertEqual(buffer.release(np.zeros(8, np.int64), limit=1)[0].tolist(), [1002])
        self.assertEqual(buffer.release(limit=0)[0].tolist(), [])
        self.assertEqual(buffer.next_expected, 4)

    def test_release_across_wrap_point(self):
        buffer = ReorderBuffer(4, M - 2)
        buffer.insert(seqs(0, M - 2, 1, M - 1), handles(3, 1, 4, 2))
        got, first = buffer.release()
        self.assertEqual((got.tolist(), first), ([1, 2, 3, 4], M - 2))
        self.assertEqual(buffer.next_expected, 2)
        self.assertEqual(buffer.state[STATE_HIGHEST], 1)     # next - 1 when empty

    def test_release_of_largest_full_buffer(self):
        capacity = 1 << 16
        buffer = ReorderBuffer(capacity, M - 10)
        offsets = np.random.default_rng(1).permutation(capacity).astype(np.uint64)
        sequences = offsets + np.uint64(M - 10)                 # array arithmetic wraps
        buffer.insert(sequences, offsets.astype(np.int64))
        self.assertEqual(buffer.occupancy, capacity)
        got, first = buffer.release()
        self.assertEqual(first, M - 10)
        self.assertTrue(np.array_equal(got, np.arange(capacity, dtype=np.int64)))
        self.assertEqual((buffer.next_expected, buffer.occupancy), (capacity - 10, 0))


# -- missing ----------------------------------------------------------------------------

class MissingTests(TestCase):
    def test_missing_ranges_up_to_highest_buffered(self):
        buffer = ReorderBuffer(16, 1)
        insert(buffer, 3, 4, 8, 10)
        self.assertEqual(buffer.missing().tolist(), [[1, 2], [5, 7], [9, 9]])

    def test_nothing_missing_when_empty_or_contiguous(self):
        buffer = ReorderBuffer(16, 1)
        self.assertEqual(buffer.missing().shape, (0, 2))
        insert(buffer, 1, 2, 3)
        self.assertEqual(buffer.missing().shape, (0, 2))

    def test_missing_truncated_to_max_ranges(self):
        buffer = ReorderBuffer(16, 1)
        insert(buffer, 3, 5, 7, 9)
        self.assertEqual(buffer.missing(2).tolist(), [[1, 2], [4, 4]])
        self.assertEqual(buffer.missing(0).shape, (0, 2))

    def test_missing_bounded_by_out(self):
        buffer = ReorderBuffer(16, 1)
        insert(buffer, 3, 5, 7, 9)
        out = np.zeros((3, 2), dtype=np.uint64)
        got = buffer.missing(out=out)
        self.assertTrue(np.shares_memory(got, out))
        self.assertEqual(got.tolist(), [[1, 2], [4, 4], [6, 6]])

    def test_missing_range_split_at_wrap_point(self):
        buffer = ReorderBuffer(8, M - 2)
        insert(buffer, 2)
        self.assertEqual(buffer.missing().tolist(), [[M - 2, M - 1], [0, 1]])

    def test_missing_does_not_change_state(self):
        buffer = ReorderBuffer(8, 1)
        insert(buffer, 4)
        before = buffer.snapshot()
        buffer.missing()
        for name, array in buffer.snapshot().items():
            self.assertTrue(np.array_equal(array, before[name]), name)

    def test_every_other_slot_missing_in_full_window(self):
        buffer = ReorderBuffer(64, 0)
        insert(buffer, *range(1, 64, 2))
        self.assertEqual(buffer.missing().tolist(), [[s, s] for s in range(0, 63, 2)])


# -- checkpoint -------------------------------------------------------------------------

class SnapshotTests(TestCase):
    def filled(self) -> ReorderBuffer:
        buffer = ReorderBuffer(8, M - 2)
        insert(buffer, M - 1, 1, 3)
        return buffer

    def test_snapshot_is_a_copy(self):
        buffer = self.filled()
        snapshot = buffer.snapshot()
        insert(buffer, M - 2)
        buffer.release()
        self.assertEqual(int(snapshot["state"][STATE_NEXT]), M - 2)
        self.assertEqual(int(snapshot["state"][STATE_COUNT]), 3)

    def test_restored_buffer_continues_identically(self):
        buffer = self.filled()
        copy = ReorderBuffer(8)
        copy.restore(buffer.snapshot())
        for b in (buffer, copy):
            self.assertEqual(insert(b, M - 2, 0, 2, 9), [0, 0, 0, 3])
        self.assertEqual(buffer.release()[0].tolist(), copy.release()[0].tolist())
        self.assertEqual(buffer.missing().tolist(), copy.missing().tolist())

    def test_snapshot_survives_savez(self):
        buffer = self.filled()
        stream = io.BytesIO()
        np.savez(stream, **buffer.snapshot())
        stream.seek(0)
        with np.load(stream) as stored:
            copy = ReorderBuffer.from_snapshot(stored)
        self.assertEqual(copy.missing().tolist(), buffer.missing().tolist())
        self.assertEqual([a.tolist() for a in copy.entries()], [a.tolist() for a in buffer.entries()])

    def corrupt(self, name: str, index, value) -> dict:
        snapshot = self.filled().snapshot()
        snapshot[name][index] = value
        return snapshot

    def assert_rejected(self, snapshot, message: str):
        buffer = ReorderBuffer(8)
        before = buffer.snapshot()
        error = self.assertRaises(ValueError, buffer.restore, snapshot)
        self.assertIn(message, str(error))
        for name, array in buffer.snapshot().items():
            self.assertTrue(np.array_equal(array, before[name]), name)

    def test_restore_rejects_count_mismatch(self):
        self.assert_rejected(self.corrupt("state", STATE_COUNT, 2), "count 2 but 3 full slots")

    def test_restore_rejects_sequence_in_wrong_slot(self):
        self.assert_rejected(self.corrupt("slot_sequence", 1, 2), "another slot")

    def test_restore_rejects_sequence_outside_window(self):
        self.assert_rejected(self.corrupt("slot_sequence", 1, 9), "outside the window")

    def test_restore_rejects_wrong_highest(self):
        self.assert_rejected(self.corrupt("state", STATE_HIGHEST, 1), "highest 1")

    def test_restore_rejects_wrong_highest_when_empty(self):
        snapshot = ReorderBuffer(8, 5).snapshot()
        snapshot["state"][STATE_HIGHEST] = 5
        self.assert_rejected(snapshot, "expected 4")

    def test_restore_rejects_slot_full_not_zero_or_one(self):
        self.assert_rejected(self.corrupt("slot_full", 1, 2), "other than 0 and 1")

    def test_restore_rejects_other_capacity(self):
        snapshot = ReorderBuffer(16).snapshot()
        error = self.assertRaises(ValueError, ReorderBuffer(8).restore, snapshot)
        self.assertIn("slot_sequence", str(error))

    def test_restore_rejects_wrong_dtype(self):
        snapshot = self.filled().snapshot()
        snapshot["slot_handle"] = snapshot["slot_handle"].astype(np.int32)
        self.assertRaises(TypeError, ReorderBuffer(8).restore, snapshot)

    def test_restore_rejects_missing_array(self):
        snapshot = self.filled().snapshot()
        del snapshot["state"]
        self.assert_rejected(snapshot, "missing array")
        self.assertRaises(ValueError, ReorderBuffer.from_snapshot, {})


# -- arguments and kernels --------------------------------------------------------------

class ArgumentTests(TestCase):
    def test_capacity_must_be_power_of_two_within_limit(self):
        for bad in (0, 3, 12, -4, 1 << 31, 2.0):
            self.assertRaises(ValueError, ReorderBuffer, bad)

    def test_first_sequence_must_be_uint64(self):
        self.assertRaises(ValueError, ReorderBuffer, 8, -1)
        self.assertRaises(ValueError, ReorderBuffer, 8, M)
        self.assertRaises(TypeError, ReorderBuffer, 8, 1.0)
        self.assertEqual(ReorderBuffer(8, np.uint64(M - 1)).next_expected, M - 1)

    def test_insert_rejects_wrong_sequence_arrays(self):
        buffer = ReorderBuffer(8)
        h = handles(1, 2)
        self.assertRaises(TypeError, buffer.insert, [1, 2], h)
        self.assertRaises(TypeError, buffer.insert, np.array([1, 2], np.int64), h)
        self.assertRaises(ValueError, buffer.insert, seqs(1, 2).reshape(1, 2), h)
        self.assertRaises(ValueError, buffer.insert, seqs(1, 9, 2, 9)[::2], h)

    def test_insert_rejects_wrong_handles_and_out(self):
        buffer = ReorderBuffer(8)
        s = seqs(1, 2)
        self.assertRaises(TypeError, buffer.insert, s, np.array([1, 2], np.uint64))
        self.assertRaises(ValueError, buffer.insert, s, handles(1))
        self.assertRaises(TypeError, buffer.insert, s, handles(1, 2), np.zeros(2, np.int64))
        self.assertRaises(ValueError, buffer.insert, s, handles(1, 2), np.zeros(3, np.uint8))
        read_only = np.zeros(2, np.uint8)
        read_only.flags.writeable = False
        self.assertRaises(ValueError, buffer.insert, s, handles(1, 2), read_only)
        self.assertEqual(buffer.occupancy, 0)

    def test_release_rejects_bad_arguments(self):
        buffer = ReorderBuffer(8)
        self.assertRaises(TypeError, buffer.release, np.zeros(4, np.uint64))
        self.assertRaises(ValueError, buffer.release, np.zeros((2, 2), np.int64))
        read_only = np.zeros(4, np.int64)
        read_only.flags.writeable = False
        self.assertRaises(ValueError, buffer.release, read_only)
        self.assertRaises(ValueError, buffer.release, None, -1)
        self.assertRaises(TypeError, buffer.release, None, 1.5)

    def test_missing_rejects_bad_arguments(self):
        buffer = ReorderBuffer(8)
        self.assertRaises(ValueError, buffer.missing, -1)
        self.assertRaises(TypeError, buffer.missing, True)
        self.assertRaises(ValueError, buffer.missing, None, np.zeros((4, 3), np.uint64))
        self.assertRaises(ValueError, buffer.missing, None, np.zeros(4, np.uint64))
        self.assertRaises(TypeError, buffer.missing, None, np.zeros((4, 2), np.int64))


class KernelTests(TestCase):
    def test_kernels_compiled_with_explicit_signatures(self):
        for kernel in (reorder._insert, reorder._release, reorder._missing):
            if not hasattr(kernel, "signatures"):      # NUMBA_DISABLE_JIT=1: plain Python
                continue
            self.assertEqual(len(kernel.signatures), 1, kernel)
            self.assertFalse(kernel._can_compile, kernel)  # no lazy compiles for other types

    def test_release_kernel_on_raw_arrays(self):
        slot_handle = handles(0, 11, 12, 0)
        slot_full = np.array([0, 1, 1, 0], dtype=np.uint8)
        state = seqs(5, 6, 2)
        out = np.zeros(4, dtype=np.int64)
        self.assertEqual(reorder._release(slot_handle, slot_full, state, out), 2)
        self.assertEqual(out[:2].tolist(), [11, 12])
        self.assertEqual(state.tolist(), [7, 6, 0])
        self.assertEqual(slot_full.tolist(), [0, 0, 0, 0])

    def test_modular_helpers_wrap(self):
        self.assertEqual(int(reorder._sub(np.uint64(1), np.uint64(3))), M - 2)
        self.assertEqual(int(reorder._add(np.uint64(M - 2), np.uint64(5))), 3)
        self.assertEqual(int(reorder._add(np.uint64(M - 2), np.uint64(1))), M - 1)
        self.assertEqual(int(reorder._inc(np.uint64(M - 1))), 0)

    def test_warm_up_runs(self):
        reorder.warm_up()
