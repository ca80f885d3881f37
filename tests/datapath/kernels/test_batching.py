"""Batch coalescing kernels == the reference model (datapath.reference.batching).

Packing is also checked byte for byte against ``logentry.build_batch`` and
unpacking, valid or malformed, against ``logentry.parse_batch`` (same spans,
or the same DecodeError: layer, field, offset and reason). Hypothesis runs
derandomized; sizes stay small so the file also runs quickly with
NUMBA_DISABLE_JIT=1.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.frames import logentry
from datapath.frames.errors import DecodeError
from datapath.frames.logentry import MAX_BATCH, EntryType
from datapath.kernels import batching
from datapath.kernels.coalesce import coalesce_plan
from datapath.reference import batching as reference

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
FEW = settings(max_examples=60, deadline=None, derandomize=True)

U64 = 2**64 - 1
INNER_TYPES = [t for t in EntryType if t != EntryType.BATCH]


def i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def log_entry(entry_type=EntryType.WR, body: bytes = b"", **fields) -> bytes:
    return logentry.build_entry(entry_type, body, **fields)


entries_st = st.lists(
    st.builds(log_entry, st.sampled_from(INNER_TYPES), st.binary(max_size=40),
              group_id=st.integers(0, 2**32 - 1), sequence=st.integers(0, U64)),
    max_size=12)

header_fields_st = st.fixed_dictionaries({}, optional={
    "group_id": st.integers(0, 2**32 - 1), "sequence": st.integers(0, U64),
    "flags": st.integers(0, 0xFFFF), "ttl": st.integers(0, 255),
    "io_time_ns": st.integers(0, U64), "target_wwn": st.integers(0, U64),
    "target_lun": st.integers(0, U64), "source_wwn": st.integers(0, U64),
    "source_lun": st.integers(0, U64), "version": st.integers(0, 255),
    "seal": st.integers(0, 255), "reserved": st.binary(min_size=2, max_size=2),
    "key_epoch": st.integers(0, 2**32 - 1)})


@st.composite
def laid_out(draw, entries=entries_st):
    """Entries at shuffled places in one buffer, with gaps; some referenced twice."""
    items = draw(entries)
    order = draw(st.permutations(range(len(items))))
    buf, at = bytearray(), {}
    for index in order:
        buf += draw(st.binary(max_size=9))
        at[index] = len(buf)
        buf += items[index]
    buf += draw(st.binary(max_size=9))
    refs = list(range(len(items)))
    if items:
        refs += draw(st.lists(st.integers(0, len(items) - 1), max_size=3))
        refs = draw(st.permutations(refs))
    return (bytes(buf), [at[i] for i in refs], [len(items[i]) for i in refs],
            [items[i] for i in refs])


def outcome(func, *args, **kw):
    """``("ok", offsets, lengths)`` or ``("error", layer, field, offset, reason)``."""
    try:
        offsets, lengths = func(*args, **kw)
    except DecodeError as exc:
        return ("error", exc.layer, exc.field, exc.offset, exc.reason)
    return ("ok", [int(o) for o in offsets], [int(n) for n in lengths])


# -- plan --------------------------------------------------------------------------------

class PlanTests(TestCase):
    @SETTINGS
    @given(lengths=st.lists(st.integers(0, 9000), max_size=60),
           budget=st.integers(96, 20000),
           limit=st.one_of(st.integers(1, 8), st.just(MAX_BATCH)))
    def test_plan_matches_reference(self, lengths, budget, limit):
        starts, ends = batching.plan_batches(i64(lengths), budget, limit)
        self.assertEqual((starts.tolist(), ends.tolist()),
                         reference.plan_batches(lengths, budget, limit))
        self.assertEqual(starts.dtype, np.int64)
        if lengths:
            self.assertEqual(starts[0], 0)
            self.assertEqual(ends[-1], len(lengths))
            self.assertEqual(starts[1:].tolist(), ends[:-1].tolist())

    def test_empty_input_gives_no_batches(self):
        starts, ends = batching.plan_batches(i64([]), 1000, 10)
        self.assertEqual((starts.tolist(), ends.tolist()), ([], []))

    def test_budget_counts_the_whole_datagram(self):
        # 96 + 8 + 8 = 112: two 5-byte entries (padded to 8) fit exactly
        self.assertEqual(batching.plan_batches(i64([5, 5]), 112, 10)[1].tolist(), [2])
        self.assertEqual(batching.plan_batches(i64([5, 5]), 111, 10)[1].tolist(), [1, 2])

    def test_oversized_entry_gets_a_batch_of_its_own(self):
        starts, ends = batching.plan_batches(i64([8, 5000, 8, 8]), 1000, 10)
        self.assertEqual(list(zip(starts.tolist(), ends.tolist())), [(0, 1), (1, 2), (2, 4)])

    def test_count_limit_closes_a_batch(self):
        starts, ends = batching.plan_batches(i64([0] * 7), 1 << 20, 3)
        self.assertEqual(list(zip(starts.tolist(), ends.tolist())), [(0, 3), (3, 6), (6, 7)])

    def test_largest_count_limit(self):
        starts, ends = batching.plan_batches(i64([0] * (MAX_BATCH + 5)), 1 << 20)
        self.assertEqual((ends - starts).tolist(), [MAX_BATCH, 5])

    def test_argument_errors(self):
        cases = [
            ((np.zeros(3, np.int32), 1000, 5), TypeError, "lengths"),
            (([1, 2], 1000, 5), TypeError, "lengths"),
            ((np.zeros((2, 2), np.int64), 1000, 5), ValueError, "lengths"),
            ((np.zeros(4, np.int64)[::2], 1000, 5), ValueError, "lengths"),
            ((i64([3, -1]), 1000, 5), ValueError, "lengths"),
            ((i64([2**32]), 1000, 5), ValueError, "lengths"),
            ((i64([1]), 95, 5), ValueError, "byte_budget"),
            ((i64([1]), 1000.0, 5), TypeError, "byte_budget"),
            ((i64([1]), batching.MAX_DATAGRAM + 1, 5), ValueError, "byte_budget"),
            ((i64([1]), 1000, 0), ValueError, "count_limit"),
            ((i64([1]), 1000, MAX_BATCH + 1), ValueError, "count_limit"),
            ((i64([1]), 1000, True), TypeError, "count_limit"),
        ]
        for args, error, name in cases:
            exc = self.assertRaises(error, batching.plan_batches, *args)
            self.assertIn(name, str(exc))


# -- pack --------------------------------------------------------------------------------

class PackTests(TestCase):
    def check_pack(self, buf, offsets, lengths, starts, ends, **kw):
        out, bounds = batching.pack(buf, i64(offsets), i64(lengths), i64(starts), i64(ends), **kw)
        sequences = kw.pop("sequences", None)
        kw.pop("out", None)
        expected = reference.pack(buf, offsets, lengths, starts, ends,
                                  None if sequences is None else sequences.tolist(), **kw)
        self.assertEqual(bounds.tolist()[0] if len(bounds) else None, 0)
        self.assertEqual([out[a:b].tobytes() for a, b in zip(bounds[:-1], bounds[1:])], expected)
        self.assertEqual(int(bounds[-1]), sum(map(len, expected)))
        return out, bounds

    @SETTINGS
    @given(layout=laid_out(), fields=header_fields_st, budget=st.integers(96, 600),
           limit=st.integers(1, 6))
    def test_pack_matches_build_batch(self, layout, fields, budget, limit):
        buf, offsets, lengths, _ = layout
        starts, ends = batching.plan_batches(i64(lengths), budget, limit)
        self.check_pack(buf, offsets, lengths, starts.tolist(), ends.tolist(), **fields)

    @FEW
    @given(layout=laid_out(), first=st.integers(U64 - 3, U64), limit=st.integers(1, 4))
    def test_per_batch_sequences_wrap_around(self, layout, first, limit):
        buf, offsets, lengths, _ = layout
        starts, ends = batching.plan_batches(i64(lengths), 1 << 16, limit)
        sequences = (np.arange(len(starts), dtype=np.uint64) + np.uint64(first))  # wraps
        out, bounds = self.check_pack(buf, offsets, lengths, starts.tolist(), ends.tolist(),
                                      sequences=sequences, group_id=5)
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            header = logentry.parse_entry(out[a:b].tobytes()).header
            self.assertEqual(header.sequence, (first + k) % 2**64)

    @FEW
    @given(chunks=st.lists(st.binary(max_size=30), max_size=10), cut=st.integers(0, 10))
    def test_entries_are_opaque_bytes(self, chunks, cut):
        buf = b"".join(chunks)
        offsets = np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist() if chunks else []
        starts, ends = ([0, min(cut, len(chunks))], [min(cut, len(chunks)), len(chunks)])
        self.check_pack(buf, offsets, [len(c) for c in chunks], starts, ends, group_id=1)

    def test_crc32c_is_valid(self):
        entries = [log_entry(body=b"x" * n, sequence=n) for n in range(6)]
        buf = b"".join(entries)
        lengths = [len(e) for e in entries]
        offsets = np.cumsum([0] + lengths[:-1]).tolist()
        out, bounds = self.check_pack(buf, offsets, lengths, [0, 2], [2, 6], group_id=3)
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.assertTrue(logentry.parse_datagram(out[a:b].tobytes()).crc_ok)

    def test_empty_batch_and_no_batches(self):
        out, bounds = self.check_pack(b"", [], [], [0], [0])
        self.assertEqual(out.tobytes(), logentry.build_batch([]))
        out, bounds = batching.pack(b"", i64([]), i64([]), i64([]), i64([]))
        self.assertEqual((out.size, bounds.tolist()), (0, [0]))

    def test_caller_buffer_is_written_in_place_and_padding_zeroed(self):
        entries = [log_entry(body=b"abc"), log_entry(body=b"defgh")]      # 91 and 93 bytes
        buf = np.frombuffer(b"".join(entries), dtype=np.uint8)
        lengths = i64([91, 93])
        starts, ends = i64([0]), i64([2])
        size = int(batching.batch_bounds(lengths, starts, ends)[-1])
        out = np.full(size + 16, 0xEE, dtype=np.uint8)
        packed, bounds = batching.pack(buf, i64([0, 91]), lengths, starts, ends, out=out)
        self.assertIs(packed, out)
        self.assertEqual(out[:size].tobytes(), logentry.build_batch(entries))
        self.assertEqual(out[size:].tolist(), [0xEE] * 16)

    def test_largest_batch(self):
        entry = log_entry()
        offsets = i64([0] * MAX_BATCH)
        lengths = i64([len(entry)] * MAX_BATCH)
        starts, ends = batching.plan_batches(lengths, 1 << 20)
        out, bounds = batching.pack(entry, offsets, lengths, starts, ends, group_id=2)
        self.assertEqual(out.tobytes(), logentry.build_batch([entry] * MAX_BATCH, group_id=2))

    def test_argument_errors(self):
        buf = log_entry()
        good = dict(offsets=i64([0]), lengths=i64([88]), starts=i64([0]), ends=i64([1]))

        def call(buffer=buf, **kw):
            args = dict(good, **kw)
            extra = {k: v for k, v in args.items() if k not in good}
            return batching.pack(buffer, args["offsets"], args["lengths"], args["starts"],
                                 args["ends"], **extra)

        cases = [
            (dict(buffer=[1, 2]), TypeError, "buf"),
            (dict(buffer=np.zeros(88, np.int8)), TypeError, "buf"),
            (dict(offsets=np.zeros(1, np.uint64)), TypeError, "offsets"),
            (dict(lengths=i64([88, 88])), ValueError, "lengths"),
            (dict(offsets=i64([-1])), ValueError, "offsets"),
            (dict(offsets=i64([1])), ValueError, "past"),
            (dict(lengths=i64([-1])), ValueError, "lengths"),
            (dict(ends=i64([2])), ValueError, "outside"),
            (dict(starts=i64([1]), ends=i64([0])), ValueError, "ends before"),
            (dict(ends=i64([1, 1])), ValueError, "ends"),
            (dict(out=np.zeros(10, np.uint8)), ValueError, "out"),
            (dict(out=np.zeros(1000, np.uint8)[::2]), ValueError, "out"),
            (dict(rio_length=3), ValueError, "rio_length"),
            (dict(sequences=np.zeros(2, np.uint64)), ValueError, "sequences"),
            (dict(sequences=np.zeros(1, np.uint64), sequence=1), ValueError, "sequence"),
        ]
        for kw, error, text in cases:
            exc = self.assertRaises(error, call, **kw)
            self.assertIn(text, str(exc))
        readonly = np.zeros(1000, np.uint8)
        readonly.flags.writeable = False
        self.assertRaises(ValueError, call, out=readonly)
        shared = np.zeros(1000, np.uint8)
        shared[:88] = np.frombuffer(buf, np.uint8)
        self.assertIn("overlaps", str(self.assertRaises(ValueError, call, buffer=shared,
                                                        out=shared)))
        many = i64([0] * (MAX_BATCH + 1))
        exc = self.assertRaises(ValueError, batching.pack, buf, many, many, i64([0]),
                                i64([MAX_BATCH + 1]))
        self.assertIn(str(MAX_BATCH), str(exc))


# -- unpack ------------------------------------------------------------------------------

def packed_batch(entries: list[bytes], **fields) -> bytes:
    buf = b"".join(entries)
    lengths = [len(e) for e in entries]
    offsets = np.cumsum([0] + lengths[:-1]).tolist() if entries else []
    out, _ = batching.pack(buf, i64(offsets), i64(lengths), i64([0]), i64([len(entries)]),
                           **fields)
    return out.tobytes()


#: byte offsets worth hitting in a header: each checked field, and the count
FIELD_AT = sorted({logentry.LOG_HEADER.offsets[name] for name in (
    "magic", "version", "entry_type", "segment_index", "segment_count", "segment_offset",
    "total_length", "rio_length")} | {88, 91})

mutation_st = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 12), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 12), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 100), st.integers(0, 255)),
    # a field of the outer header or of one of the first inner entries
    st.tuples(st.just("field"), st.tuples(st.integers(0, 3), st.sampled_from(FIELD_AT)),
              st.sampled_from([0, 1, 2, 6, 7, 8, 0xFF, 4096, 4097, 0xFFFFFFFF])),
)


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        if kind == "flip" and out:
            out[where % len(out)] ^= value
        elif kind == "cut":
            del out[where % (len(out) + 1):]
        elif kind == "append":
            out += bytes([value]) * where
        elif kind == "field":
            entry, at = where
            start = 0 if entry == 0 else 96 + 88 * (entry - 1)   # inner entries of bodyless kind
            at += start
            width = 1 if at - start in (4, 5) else 4
            if at - start in (64, 66):
                width = 2
            piece = (value % (1 << (8 * width))).to_bytes(width, "big")
            if at + width <= len(out):
                out[at:at + width] = piece
    return bytes(out)


class UnpackTests(TestCase):
    @SETTINGS
    @given(entries=entries_st, fields=header_fields_st, base=st.integers(0, 10**6))
    def test_unpack_matches_parse_batch(self, entries, fields, base):
        fields["version"] = logentry.VERSION
        data = packed_batch(entries, **fields)
        got = outcome(batching.unpack, data, base)
        self.assertEqual(got, outcome(reference.unpack, data, base))
        self.assertEqual(got[0], "ok")
        self.assertEqual([data[o - base:o - base + n] for o, n in zip(got[1], got[2])], entries)

    @settings(max_examples=600, deadline=None, derandomize=True)
    @given(entries=st.lists(st.sampled_from([log_entry(EntryType.KEEPALIVE),
                                             log_entry(EntryType.NAK, sequence=2),
                                             log_entry(EntryType.WR, b"\1" * 13)]), max_size=5),
           mutations=st.lists(mutation_st, min_size=1, max_size=3),
           base=st.integers(0, 1000))
    def test_malformed_input_raises_what_parse_batch_raises(self, entries, mutations, base):
        data = mutate(packed_batch(entries, group_id=3), mutations)
        self.assertEqual(outcome(batching.unpack, data, base),
                         outcome(reference.unpack, data, base))

    def test_every_truncation_raises_what_parse_batch_raises(self):
        data = packed_batch([log_entry(EntryType.WR, b"abc"), log_entry(EntryType.NAK)])
        for cut in range(len(data)):
            expected = outcome(reference.unpack, data[:cut])
            self.assertEqual(expected[0], "error")
            self.assertEqual(outcome(batching.unpack, data[:cut]), expected, f"cut at {cut}")

    def test_body_shorter_than_the_count_raises_what_parse_batch_raises(self):
        for size in range(9):
            data = logentry.build_entry(EntryType.BATCH, bytes(size))
            expected = outcome(reference.unpack, data)
            self.assertEqual(outcome(batching.unpack, data), expected, f"body of {size}")
            self.assertEqual(expected[0] == "error", size < 8)
            if size < 8:
                self.assertEqual(expected[1:4], ("log_count", "count" if size < 4 else "reserved",
                                                 88 if size < 4 else 92))

    def test_targeted_errors(self):
        two = packed_batch([log_entry(EntryType.KEEPALIVE), log_entry(EntryType.WR, b"x")])
        nested = packed_batch([logentry.build_batch([])])
        cases = [
            (nested, ("log", "entry_type", 101)),
            (two[:88] + (1).to_bytes(4, "big") + two[92:], ("log_count", "count", 88)),
            (two[:88] + (3).to_bytes(4, "big") + two[92:], ("log", "magic", len(two))),
            (two[:88] + (4097).to_bytes(4, "big") + two[92:], ("log_count", "count", 88)),
            (two[:100] + b"\x03" + two[101:], ("log", "version", 100)),
            (two[:100] + b"\x01" + two[101:], ("log", "version", 100)),
            (two[:-1], ("log", "rio_length", 76)),
        ]
        for data, (layer, field, offset) in cases:
            exc = self.assertRaises(DecodeError, batching.unpack, data)
            self.assertEqual((exc.layer, exc.field, exc.offset), (layer, field, offset))
            exc = self.assertRaises(DecodeError, batching.unpack, data, 500)
            self.assertEqual(exc.offset, offset + 500)

    def test_version_is_read_at_call_time_not_baked_into_the_kernel(self):
        # numba caches a kernel by its own file's source: a version compiled in as a
        # constant would survive a change of logentry.VERSION (a stale cache after an
        # upgrade). Changing the number must change what unpack accepts, at once.
        current = logentry.VERSION
        today = packed_batch([log_entry(EntryType.KEEPALIVE), log_entry(EntryType.WR, b"x")])
        self.assertEqual(batching.unpack(today)[0].tolist(), [96, 184])
        self.patch(logentry, "VERSION", current + 1)
        exc = self.assertRaises(DecodeError, batching.unpack, today)
        self.assertEqual((exc.layer, exc.field, exc.offset), ("log", "version", 4))
        self.assertIn(f"unknown version {current}", str(exc))
        inner = [log_entry(EntryType.KEEPALIVE, version=current + 1),
                 log_entry(EntryType.WR, b"x", version=current + 1)]
        newer = logentry.build_batch(inner, version=current + 1)
        self.assertEqual(batching.unpack(newer)[0].tolist(), [96, 184])
        mixed = logentry.build_batch([inner[0], log_entry(EntryType.WR, b"x", version=current)],
                                     version=current + 1)
        exc = self.assertRaises(DecodeError, batching.unpack, mixed)
        self.assertEqual((exc.field, exc.offset), ("version", 184 + 4))

    def test_trailing_bytes_are_outside_the_batch(self):
        data = packed_batch([log_entry(EntryType.KEEPALIVE)])
        offsets, lengths = batching.unpack(data + b"\xff" * 9)
        self.assertEqual((offsets.tolist(), lengths.tolist()), ([96], [88]))

    def test_empty_batch_has_no_entries(self):
        offsets, lengths = batching.unpack(logentry.build_batch([]))
        self.assertEqual((offsets.size, lengths.size, offsets.dtype), (0, 0, np.int64))

    def test_largest_batch_unpacks(self):
        entry = log_entry(EntryType.KEEPALIVE, bytes(16))
        data = packed_batch([entry] * MAX_BATCH)
        offsets, lengths = batching.unpack(data)
        self.assertEqual(offsets.tolist(), [96 + 104 * k for k in range(MAX_BATCH)])
        self.assertEqual(set(lengths.tolist()), {104})

    def test_check_crc_raises_on_a_bad_crc_only_when_asked(self):
        data = packed_batch([log_entry(EntryType.KEEPALIVE)])
        batching.unpack(data, check_crc=True)
        bad = data[:-1] + bytes([data[-1] ^ 1])
        self.assertEqual(batching.unpack(bad)[1].tolist(), [88])
        exc = self.assertRaises(DecodeError, batching.unpack, bad, 10, True)
        self.assertEqual((exc.layer, exc.field, exc.offset), ("log", "crc32c", 90))

    def test_accepts_bytes_bytearray_memoryview_and_arrays(self):
        data = packed_batch([log_entry(EntryType.KEEPALIVE), log_entry()])
        array = np.frombuffer(data, np.uint8).copy()
        for view in (data, bytearray(data), memoryview(data), array,
                     np.frombuffer(data, np.uint8)):
            self.assertEqual(batching.unpack(view)[0].tolist(), [96, 184])

    def test_argument_errors(self):
        data = packed_batch([])
        self.assertRaises(TypeError, batching.unpack, list(data))
        self.assertRaises(TypeError, batching.unpack, np.zeros(96, np.int8))
        self.assertRaises(ValueError, batching.unpack, np.zeros((2, 96), np.uint8))
        self.assertRaises(TypeError, batching.unpack, data, 1.5)


# -- coalescing plan ---------------------------------------------------------------------

def coalesce_both(keys, lbas, blocks):
    got = coalesce_plan(np.array(keys, np.uint64), np.array(lbas, np.uint64),
                        np.array(blocks, np.uint32))
    return got.tolist(), reference.coalesce_plan(keys, lbas, blocks)


writes_st = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 12)),
                     max_size=40)


class CoalescePlanTests(TestCase):
    @SETTINGS
    @given(writes=writes_st, key_base=st.sampled_from([0, 7, 2**63, U64 - 3]),
           lba_base=st.sampled_from([0, 1000, 2**40, 2**64 - 20]))
    def test_plan_matches_reference(self, writes, key_base, lba_base):
        keys = [key_base + k for k, _, _ in writes]
        lbas = [(lba_base + a) % 2**64 for _, a, _ in writes]      # the top and 0 together
        blocks = [min(n, 2**64 - lba) for (_, _, n), lba in zip(writes, lbas)]  # up to the top
        got, expected = coalesce_both(keys, lbas, blocks)
        self.assertEqual(got, expected)

    @FEW
    @given(writes=writes_st)
    def test_far_apart_keys_and_lbas_use_the_general_sort(self, writes):
        # keys and LBAs too wide to share one 64-bit sort key
        keys = [k * (2**62) for k, _, _ in writes]
        lbas = [(a % 2) * 2**62 + a for _, a, _ in writes]
        blocks = [n for _, _, n in writes]
        got, expected = coalesce_both(keys, lbas, blocks)
        self.assertEqual(got, expected)

    def test_empty_batch(self):
        self.assertEqual(coalesce_both([], [], []), ([], []))

    def test_returns_bool_array(self):
        got = coalesce_plan(np.zeros(2, np.uint64), np.zeros(2, np.uint64),
                            np.ones(2, np.uint32))
        self.assertEqual((got.dtype, got.tolist()), (np.bool_, [True, False]))

    def test_covered_by_the_union_of_later_writes(self):
        # write 0 (blocks 0..9) is covered by 1 (0..4) and 2 (5..9) together
        self.assertEqual(coalesce_both([1, 1, 1], [0, 0, 5], [10, 5, 5])[0],
                         [True, False, False])

    def test_a_gap_in_the_union_keeps_the_write(self):
        self.assertEqual(coalesce_both([1, 1, 1], [0, 0, 6], [10, 5, 4])[0],
                         [False, False, False])

    def test_earlier_writes_never_cover_later_ones(self):
        self.assertEqual(coalesce_both([1, 1], [0, 2], [10, 3])[0], [False, False])

    def test_last_write_is_never_droppable(self):
        self.assertEqual(coalesce_both([1, 1, 1], [0, 0, 0], [4, 4, 4])[0], [True, True, False])

    def test_another_volume_does_not_cover(self):
        self.assertEqual(coalesce_both([1, 2], [0, 0], [4, 8])[0], [False, False])

    def test_zero_block_write_is_never_droppable(self):
        self.assertEqual(coalesce_both([1, 1], [3, 0], [0, 8])[0], [False, False])

    def test_write_ending_at_the_last_block(self):
        top = 2**64 - 4
        self.assertEqual(coalesce_both([0, 0, 0], [top, top + 2, top], [4, 2, 4])[0],
                         [True, True, False])
        self.assertEqual(coalesce_both([0, 0], [top + 1, top], [3, 3])[0], [False, False])
        # the end point 2**64 is not the start point 0
        self.assertEqual(coalesce_both([0, 0], [2**64 - 1, 0], [1, 1])[0], [False, False])

    def test_largest_block_counts(self):
        big = 2**32 - 1
        got = coalesce_plan(np.zeros(3, np.uint64),
                            np.array([5, 2**40, 0], np.uint64),
                            np.array([big, big, big], np.uint32))
        self.assertEqual(got.tolist(), [False, False, False])
        got = coalesce_plan(np.zeros(3, np.uint64), np.array([5, 0, 6], np.uint64),
                            np.array([big - 1, 6, big], np.uint32))
        self.assertEqual(got.tolist(), [True, False, False])

    def test_write_past_the_last_block_is_an_error(self):
        exc = self.assertRaises(ValueError, coalesce_plan, np.zeros(2, np.uint64),
                                np.array([0, 2**64 - 2], np.uint64), np.array([1, 3], np.uint32))
        self.assertIn("write 1", str(exc))

    def test_docstring_states_the_atomic_apply_condition(self):
        doc = " ".join(coalesce_plan.__doc__.split())
        self.assertIn("only when the receiver applies the whole batch atomically", doc)
        self.assertIn("prefix consistency", doc)

    def test_argument_errors(self):
        z64, z32 = np.zeros(2, np.uint64), np.zeros(2, np.uint32)
        self.assertRaises(TypeError, coalesce_plan, np.zeros(2, np.int64), z64, z32)
        self.assertRaises(TypeError, coalesce_plan, z64, z64, z64)
        self.assertRaises(ValueError, coalesce_plan, z64, np.zeros(3, np.uint64), z32)
        self.assertRaises(ValueError, coalesce_plan, z64, z64, np.zeros(3, np.uint32))


class WarmUpTests(TestCase):
    def test_warm_up_runs_every_kernel(self):
        batching.warm_up()
