"""The batch packer in hardware (hdl_models.batching) against plan_batches + pack."""

from __future__ import annotations

import random

import crc32c
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import logentry

try:

    from hdl_models import batching, crc
    from hdl_models.batching import BatchBeat, Dropped, EntryBeat, Flush, entry_beats
    from hdl_models.cosim import check
    SKIP = None
except ImportError as exc:          # the hdl extra is not installed
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"

SMALL = dict(max_bytes=256, max_entries=4, max_entry=128)
SHAPES = [
    SMALL,
    dict(max_bytes=200, max_entries=256, max_entry=64),     # entries smaller than the budget
    dict(max_bytes=96, max_entries=1, max_entry=16),        # no room: every entry alone
    dict(max_bytes=1000, max_entries=7, max_entry=40),
]


def datagram_beats(datagram: bytes) -> list:
    """A datagram as the block's output beats (written here, not taken from the module)."""
    return [BatchBeat(datagram[at:at + 8], at + 8 == len(datagram))
            for at in range(0, len(datagram), 8)]


def batch(entries: list[bytes], sequence: int) -> list:
    return datagram_beats(logentry.build_batch(entries, group_id=0, ttl=1, sequence=sequence))


def run(params: dict, items: list, seed: int, **kw):
    return check(lambda: batching.build(**params), batching.codec(**params), items,
                 batching.reference(items, **params), seed=seed,
                 **{"max_cycles": 20 * len(items) + 2000, **kw})


class ReferenceTests(SynchronousTestCase):
    skip = SKIP

    def test_reference_on_a_hand_made_example(self):
        """Budget 24 bytes of entries, 2 entries a batch, entries up to 32 bytes."""
        params = dict(max_bytes=96 + 24, max_entries=2, max_entry=32)
        a, b, c, d, e, f = (bytes([n]) * size for n, size in
                            enumerate([5, 8, 9, 40, 30, 3], 1))
        items = [*entry_beats(a, b"junk"), *entry_beats(b), *entry_beats(c), *entry_beats(d),
                 *entry_beats(e), Flush(), *entry_beats(f)]
        expected = (batch([a, b], 1)          # two entries: full, sent as b joins
                    + [Dropped()]             # d's 5th beat is one too many
                    + batch([c], 2)           # e (32 padded) does not fit beside c
                    + batch([e], 3))          # e alone exceeds the budget: sent at once
        # the Flush finds nothing open; f waits for the next flush
        self.assertEqual(batching.reference(items, **params), expected)

    def test_a_flush_closes_and_runs_are_planned_apart(self):
        params = dict(max_bytes=1000, max_entries=256, max_entry=64)
        a, b, c = b"a" * 10, b"b" * 17, b"c" * 64
        items = [*entry_beats(a), Flush(), Flush(), *entry_beats(b)[:2], Flush(),
                 *entry_beats(b)[2:], *entry_beats(c), Flush()]
        # the flush inside b closes [a]'s successor batch -- empty, so nothing: b belongs
        # to the run its last beat is in
        self.assertEqual(batching.reference(items, **params), batch([a], 1) + batch([b, c], 2))

    def test_items_and_parameters_refuse_bad_fields(self):
        for make, field in [(lambda: EntryBeat(b"", last=True), "EntryBeat.data"),
                            (lambda: EntryBeat(b"123456789", last=True), "EntryBeat.data"),
                            (lambda: EntryBeat(b"abc"), "EntryBeat.data"),
                            (lambda: EntryBeat(b"abc", True, b"123456"), "EntryBeat.junk"),
                            (lambda: entry_beats(b""), "entry"),
                            (lambda: batching.build(95, 4, 64), "max_bytes"),
                            (lambda: batching.build(256, 0, 64), "max_entries"),
                            (lambda: batching.build(256, 4097, 64), "max_entries"),
                            (lambda: batching.build(256, 4, 60), "max_entry"),
                            (lambda: batching.build(256, 4, 0), "max_entry")]:
            with self.assertRaises(ValueError) as caught:
                make()
            self.assertIn(field, str(caught.exception))
        with self.assertRaises(TypeError):
            batching.encode(b"not an item")

    def test_codec_lays_out_the_fields(self):
        payload = batching.encode(EntryBeat(b"\x01\x02\x03", True, b"\xff"))
        self.assertEqual(payload & 0xFFFFFFFF, 0xFF030201)       # byte 0 in bits 0..7
        self.assertEqual(payload >> 64, 0b1010)                   # last, count - 1 = 2
        self.assertEqual(batching.encode(Flush()), 1 << 68)
        self.assertEqual(batching.decode(1 << 65), Dropped())
        self.assertEqual(batching.decode(1 << 64 | 0x41), BatchBeat(b"A" + bytes(7), True))

    def test_crc_arithmetic_the_finisher_relies_on(self):
        """R(~0, H + B) = A^|B| R(~0, H) ^ R(0, B), with |B| in the finisher's strides:
        the CRC32C of header and body from the two separate registers."""
        rng = random.Random(9)

        def matrix(rows, value):
            return sum((bin(row & value).count("1") & 1) << i for i, row in enumerate(rows))

        for beats in [1, 7, 8, 63, 64, 65, 511, 512, 600, 1100]:
            header, body = rng.randbytes(96), rng.randbytes(8 * beats)
            register = crc.apply(crc.equations(batching.CRC_POLY, len(header)), 0xFFFFFFFF,
                                 header)
            left = beats
            while left:
                stride = next(s for s in batching.ZERO_STRIDES if s <= left)
                register = matrix(batching._rows(stride, data=False), register)
                left -= stride
            body_register = 0
            for at in range(0, len(body), 8):
                word = int.from_bytes(body[at:at + 8], "little")
                body_register = (matrix(batching._STEP_REGISTER, body_register)
                                 ^ matrix(batching._STEP_DATA, word))
            self.assertEqual(register ^ body_register ^ 0xFFFFFFFF,
                             crc32c.crc32c(header + body))

    def test_vectors_reach_the_corners(self):
        """Over a few seeds the generator gives every case the block distinguishes."""
        seen = set()
        for shape in SHAPES:
            for seed in range(3):
                items = batching.vectors(random.Random(seed), 300, **shape)
                self.assertEqual(len(items), 300)
                self.assertIsInstance(items[-1], Flush)
                outputs = batching.reference(items, **shape)
                seen |= {type(x).__name__ for x in outputs}
                budget = shape["max_bytes"] - 96
                sizes, size = [], 0
                for x in items:
                    if isinstance(x, Flush):
                        seen.add("flush inside an entry" if size else "flush")
                    else:
                        size += len(x.data)
                        if x.junk:
                            seen.add("junk")
                        if x.last:
                            sizes.append(size)
                            size = 0
                for size in sizes:
                    if size == budget:
                        seen.add("exactly the budget")
                    if budget < size <= shape["max_entry"]:
                        seen.add("alone over the budget")
                    if size == shape["max_entry"]:
                        seen.add("largest entry")
                    if size > shape["max_entry"]:
                        seen.add("too long")
        self.assertEqual(seen, {"BatchBeat", "Dropped", "flush", "flush inside an entry",
                                "junk", "exactly the budget", "alone over the budget",
                                "largest entry", "too long"})


class CosimTests(SynchronousTestCase):
    skip = SKIP

    def test_random_vectors_under_back_pressure(self):
        datagrams = dropped = 0
        for n, shape in enumerate(SHAPES):
            for seed in (n, 10 + n):
                rng = random.Random(seed)
                items = batching.vectors(rng, 200, **shape)
                result = run(shape, items, seed, valid_p=rng.uniform(0.3, 1.0),
                             ready_p=rng.uniform(0.3, 1.0), label=f"{shape} seed {seed}")
                outputs = [batching.decode(x) for x in result.outputs]
                datagrams += sum(isinstance(x, BatchBeat) and x.last for x in outputs)
                dropped += outputs.count(Dropped())
        self.assertGreater(datagrams, 200)
        self.assertGreater(dropped, 50)

    def test_edge_cases(self):
        p = dict(max_bytes=96 + 64, max_entries=3, max_entry=96)
        rng = random.Random(4)

        def entry(size, junk=b""):
            return entry_beats(rng.randbytes(size), junk)

        cases = {
            "exactly the budget, then one byte past it": entry(64) + entry(65) + [Flush()],
            "largest entry, then one byte too long (dropped on its last beat)":
                entry(96) + entry(97) + entry(3) + [Flush()],
            "too long by a beat and more (dropped mid-entry)":
                entry(5) + entry(96 + 20) + entry(7) + [Flush()],
            "count limit with one-byte entries": sum((entry(1, b"\xff" * 7)
                                                      for _ in range(7)), []) + [Flush()],
            "flushes: empty, twice, inside an entry":
                [Flush(), Flush()] + entry(9) + entry(30)[:2] + [Flush()] + entry(30)[2:]
                + [Flush(), Flush()],
            "an entry left in progress stays in the block": entry(16) + [Flush()] + entry(40)[:3],
            "junk in every short beat": sum((entry(n, b"\xaa" * 8) for n in range(1, 17)), [])
                + [Flush()],
        }
        for seed, (name, items) in enumerate(cases.items()):
            for valid_p, ready_p in [(1.0, 1.0), (0.5, 0.4)]:
                run(p, items, seed, valid_p=valid_p, ready_p=ready_p, label=name)
        # the cases do what their names say: (datagrams, dropped reports)
        kinds = {name: (sum(isinstance(x, BatchBeat) and x.last for x in outputs),
                         outputs.count(Dropped()))
                  for name, outputs in ((name, batching.reference(items, **p))
                                        for name, items in cases.items())}
        self.assertEqual(list(kinds.values()), [(2, 0), (2, 1), (1, 1), (3, 0), (2, 0),
                                                 (1, 0), (6, 0)])

    def test_full_rate_one_output_beat_per_cycle(self):
        """Valid and ready always high: a datagram's beats leave on consecutive cycles and
        one idle cycle separates datagrams; so the input (12 header beats fewer) runs at
        n / (n + 13) beats per cycle for batches of n body beats."""
        shape = dict(max_bytes=1024, max_entries=256, max_entry=1024)
        rng = random.Random(2)
        items = sum((entry_beats(rng.randbytes(88)) for _ in range(60)), []) + [Flush()]
        result = run(shape, items, 0, valid_p=1.0, ready_p=1.0)
        outputs = [batching.decode(x) for x in result.outputs]
        ends = [k for k, beat in enumerate(outputs) if beat.last]
        self.assertEqual(len(ends), 6)                  # 10 entries (110 beats) a batch
        start = 0
        for end in ends:
            cycles = result.emitted_at[start:end + 1]
            self.assertEqual(cycles[-1] - cycles[0], end - start)          # no gap inside
            if start:
                self.assertLessEqual(cycles[0] - result.emitted_at[start - 1], 2)
            start = end + 1
        taken = result.accepted_at
        middle = taken[110:-111]                        # beyond the first and the last batch
        self.assertGreaterEqual((len(middle) - 1) / (middle[-1] - middle[0]), 110 / 123)

    def test_the_relays_own_sizes(self):
        """PARAMS (65000-byte batches, 256 entries, a 128 KiB buffer) on a short stream:
        the count limit closes the first batch (256 small entries, far below 65000 bytes),
        the flush the rest."""
        rng = random.Random(7)
        items = sum((entry_beats(rng.randbytes(rng.choice([1, 8, 8, 88])), b"\x55" * 7)
                     for _ in range(260)), []) + [Flush()]
        result = run(batching.PARAMS, items, 7, valid_p=0.9, ready_p=0.8, drain=200)
        self.assertEqual(sum(batching.decode(x).last for x in result.outputs), 2)

