"""The reorder buffer block (hdl_models.reorder) against datapath.reference.reorder."""

from __future__ import annotations

import random

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

try:

    from hdl_models import cosim, reorder
    from hdl_models.reorder import Beat, Entry, Tag
    SKIP = None
except ImportError as exc:          # the hdl extra is not installed
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"

from datapath.kernels.reorder import ReorderBuffer

M = 2 ** 64

# small blocks that wrap their sequence space many times, the minimum seq_bits (the window
# is half the space: nothing is beyond it), uint64 wrapping at 2**64, and the full size
SMALL = [
    dict(slots=2, seq_bits=3, handle_bits=2, first_sequence=5),
    dict(slots=4, seq_bits=4, handle_bits=3, first_sequence=13),
    dict(slots=8, seq_bits=4, handle_bits=4, first_sequence=0),
    dict(slots=8, seq_bits=64, handle_bits=8, first_sequence=M - 5),
    dict(slots=16, seq_bits=10, handle_bits=5, first_sequence=M - 700),
]


def check(params, items, seed, **kw):
    return cosim.check(lambda: reorder.build(**params), reorder.codec(**params), items,
                       reorder.reference(items, **params), seed=seed,
                       label=f"reorder {params}", **kw)


def full_rate(params, items):
    """Run at valid = ready = 1 (and check the outputs): the cycle of every beat."""
    return check(params, items, seed=0, valid_p=1.0, ready_p=1.0)


class ReferenceTests(SynchronousTestCase):
    """The reference adapter and the vectors, so neither can share a bug with the HDL."""
    skip = SKIP

    def test_hand_made_example(self):
        p = dict(slots=4, seq_bits=64, handle_bits=8, first_sequence=1)
        items = [Entry(3, 30), Entry(2, 20), Entry(2, 21), Entry(5, 50), Entry(1, 10),
                 Entry(1, 11), Entry(4, 40), Entry(9, 90), Entry(8, 80), Entry(4, 41)]
        self.assertEqual(reorder.reference(items, **p), [
            Beat(Tag.BUFFERED_DUPLICATE, 2, 21),     # 3 and 2 wait for 1
            Beat(Tag.BEYOND_WINDOW, 5, 50),          # window is 1..4
            Beat(Tag.RELEASED, 1, 10), Beat(Tag.RELEASED, 2, 20), Beat(Tag.RELEASED, 3, 30),
            Beat(Tag.APPLIED_DUPLICATE, 1, 11),
            Beat(Tag.RELEASED, 4, 40),
            Beat(Tag.BEYOND_WINDOW, 9, 90),          # window is 5..8
            Beat(Tag.APPLIED_DUPLICATE, 4, 41),      # 8 is buffered, 4 is behind
        ])

    def test_cut_to_seq_bits(self):
        p = dict(slots=2, seq_bits=3, handle_bits=4, first_sequence=7)
        items = [Entry(8, 1), Entry(7, 2), Entry(7, 3)]     # 8 is 0 in three bits
        self.assertEqual(reorder.reference(items, **p), [
            Beat(Tag.RELEASED, 7, 2), Beat(Tag.RELEASED, 0, 1), Beat(Tag.APPLIED_DUPLICATE, 7, 3)])

    def test_agrees_with_the_numba_kernel(self):
        # the adapter's verdicts and release order are the kernel's, not only the model's
        for p in (SMALL[3], dict(reorder.PARAMS, slots=64, handle_bits=63)):   # int64 handles
            items = reorder.vectors(random.Random(3), 400, **p)
            buffer = ReorderBuffer(p["slots"], first_sequence=p["first_sequence"])
            beats = []
            for sequence, handle in items:
                verdict = buffer.insert_one(sequence, handle)
                if verdict:
                    beats.append(Beat(Tag(verdict), sequence, handle))
                handles, first = buffer.release(np.zeros(p["slots"], np.int64))
                beats += [Beat(Tag.RELEASED, (first + n) % M, int(h))
                          for n, h in enumerate(handles)]
            self.assertEqual(reorder.reference(items, **p), beats)

    def test_vectors_hit_the_corner_cases_and_keep_to_the_span(self):
        for p in SMALL + [reorder.PARAMS]:
            items = reorder.vectors(random.Random(1), 400, **p)
            self.assertEqual(len(items), 400)
            beats = reorder.reference(items, **p)
            tags = {beat.tag for beat in beats}
            expected = set(Tag) - ({Tag.BEYOND_WINDOW} if p["slots"] == 2 ** (p["seq_bits"] - 1)
                                   else set())
            self.assertEqual(tags, expected, p)
            self.assertTrue({h for _, h in items} >= {0, 2 ** p["handle_bits"] - 1}, p)
            # every sequence within [next - half, next + half) of the next_expected it meets
            model = reorder.ref.ReorderModel(p["slots"], p["first_sequence"])
            half = 2 ** (p["seq_bits"] - 1)
            longest_run = 0
            for sequence, handle in items:
                distance = (sequence - model.next_expected + half) % M - half
                self.assertTrue(-half <= distance < half, (p, sequence))
                model.insert([sequence], [handle])
                longest_run = max(longest_run, len(model.release()[0]))
            self.assertGreaterEqual(longest_run, min(p["slots"], 6), p)   # one insert frees many
            if p["seq_bits"] < 64:      # the vectors cross multiples of 2**seq_bits
                self.assertGreater(len({s >> p["seq_bits"] for s, _ in items}), 1, p)
        wrapped = reorder.vectors(random.Random(1), 50, **SMALL[3])
        self.assertTrue(any(s < 10 for s, _ in wrapped))        # from 2**64 - 5 past 0


class CosimTests(SynchronousTestCase):
    """Hardware == reference, with valid and ready toggled at random."""
    skip = SKIP

    def test_random_vectors_under_back_pressure(self):
        rng = random.Random(2024)
        for p in SMALL:
            for seed in range(3):
                valid_p, ready_p = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
                items = reorder.vectors(random.Random(seed), 250, **p)
                result = check(p, items, seed, valid_p=valid_p, ready_p=ready_p)
                self.assertEqual(len(result.accepted_at), 250)

    def test_datapath_and_ice40_sizes(self):
        for p in (reorder.PARAMS, reorder.ICE40, dict(reorder.PARAMS, first_sequence=M - 3)):
            items = reorder.vectors(random.Random(7), 250, **p)
            check(p, items, seed=7, valid_p=0.8, ready_p=0.6)

    def test_duplicate_right_behind_its_first_copy(self):
        # the second reads the slot in the cycle the first writes it
        p = SMALL[1]
        result = full_rate(p, [Entry(15, 1), Entry(15, 2), Entry(14, 3), Entry(14, 4)])
        self.assertEqual([reorder.codec(**p).decode(v) for v in result.outputs],
                         [Beat(Tag.BUFFERED_DUPLICATE, 15, 2), Beat(Tag.BUFFERED_DUPLICATE, 14, 4)])

    def test_a_slot_is_empty_again_on_the_next_lap(self):
        # slots=2: every slot is reused every other sequence, in order and out of order
        p = dict(slots=2, seq_bits=64, handle_bits=4, first_sequence=0)
        items = [Entry(s, s % 16) for s in range(12)]
        items += [Entry(13, 1), Entry(12, 2), Entry(13, 3), Entry(15, 4), Entry(14, 5)]
        for seed, rate in ((0, 1.0), (1, 0.5)):
            check(p, items, seed=seed, valid_p=rate, ready_p=rate)


class ThroughputTests(SynchronousTestCase):
    """At valid = ready = 1: one input and one output beat per cycle."""
    skip = SKIP
    p = dict(slots=64, seq_bits=64, handle_bits=8, first_sequence=M - 20)

    def assert_consecutive(self, cycles):
        self.assertEqual([b - a for a, b in zip(cycles, cycles[1:])], [1] * (len(cycles) - 1))

    def test_in_order_one_entry_per_cycle(self):
        first = self.p["first_sequence"]
        result = full_rate(self.p, [Entry((first + n) % M, n % 256) for n in range(200)])
        self.assert_consecutive(result.accepted_at)
        self.assert_consecutive(result.emitted_at)
        self.assertEqual(len(result.emitted_at), 200)

    def test_out_of_order_and_refused_entries_one_per_cycle(self):
        first = self.p["first_sequence"]
        gap = [Entry((first + n) % M, n) for n in range(63, 0, -1)]        # all but next
        refused = [Entry((first + 64 + n) % M, n) for n in range(50)]      # beyond
        refused += [Entry((first + 5) % M, n) for n in range(50)]          # buffered copies
        result = full_rate(self.p, gap + refused)
        self.assert_consecutive(result.accepted_at)
        self.assertEqual(len(result.outputs), 100)
        self.assert_consecutive(result.emitted_at)

    def test_a_release_run_streams_one_handle_per_cycle(self):
        first = self.p["first_sequence"]
        items = [Entry((first + n) % M, n) for n in range(63, 0, -1)] + [Entry(first, 0)]
        result = full_rate(self.p, items)
        self.assertEqual(len(result.emitted_at), 64)
        self.assert_consecutive(result.emitted_at)
        # input waits: stage 1's cycle, then the 63 from memory
        after = full_rate(self.p, items + [Entry((first + 64) % M, 64)])
        self.assertEqual(after.accepted_at[-1] - after.accepted_at[-2], 64 + 1)

    def test_a_run_that_stops_at_a_gap(self):
        first = self.p["first_sequence"]
        items = [Entry((first + n) % M, n) for n in range(63, 0, -1) if n != 40]
        items += [Entry(first, 0), Entry((first + 104) % M, 1)]    # releases 40, then beyond
        result = full_rate(self.p, items)
        self.assertEqual(len(result.emitted_at), 41)
        self.assert_consecutive(result.emitted_at[:40])
        # one more cycle than above: the run ends when it reads the empty slot of first + 40
        self.assertEqual(result.accepted_at[-1] - result.accepted_at[-2], 40 + 2)


class InterfaceTests(SynchronousTestCase):
    skip = SKIP

    def test_bad_parameters_are_named(self):
        good = dict(slots=8, seq_bits=8, handle_bits=4, first_sequence=0)
        for field, value in (("slots", 6), ("slots", 1), ("seq_bits", 3), ("seq_bits", 65),
                             ("handle_bits", 0), ("first_sequence", -1),
                             ("first_sequence", M)):
            with self.assertRaises(ValueError) as caught:
                reorder.build(**dict(good, **{field: value}))
            self.assertIn(field, str(caught.exception))
        with self.assertRaises(TypeError) as caught:
            reorder.codec(**dict(good, slots=8.0))
        self.assertIn("slots", str(caught.exception))

    def test_codec(self):
        p = dict(slots=8, seq_bits=8, handle_bits=4, first_sequence=0)
        c = reorder.codec(**p)
        self.assertEqual(c.encode(Entry(0x1234, 0xA)), 0x34 | 0xA << 8)   # low seq_bits kept
        self.assertEqual(c.decode(0x34 | 0xA << 8 | 3 << 12), Beat(Tag.BEYOND_WINDOW, 0x34, 0xA))
        for bad, field in ((Entry(1, 16), "handle"), (Entry(1, -1), "handle"),
                           (Entry(-1, 0), "sequence"), (Entry(M, 0), "sequence")):
            with self.assertRaises(ValueError) as caught:
                c.encode(bad)
            self.assertIn(field, str(caught.exception))

    def test_module_exports(self):
        self.assertEqual(reorder.NAME, "reorder")
        self.assertEqual(reorder.RATE_UNIT, "items")
        self.assertEqual(reorder.units(Entry(1, 2)), 1)
        self.assertEqual(reorder.PARAMS["slots"], 16384)       # the receiver's default window
        self.assertTrue(reorder.ICE40_NOTE)                     # ICE40 is smaller: says why

