"""The CRC block (hdl_models.crc) against zlib.crc32 / crc32c.crc32c, with back-pressure."""

from __future__ import annotations

import random
import unittest
import zlib

try:
    from amaranth.sim import Simulator

    from hdl_models import cosim, crc
except ImportError:
    SKIP = "amaranth not installed: pip install .[hdl]"
else:
    SKIP = None

from datapath.frames import fc

VARIANTS = ("crc32", "crc32c")
CHECK = b"123456789"
CHECK_VALUES = {"crc32": 0xCBF43926, "crc32c": 0xE3069283}


def run_check(variant, items, seed, **kw):
    return cosim.check(lambda: crc.build(variant), crc.codec(variant), items,
                       crc.reference(items, variant), seed=seed, label=f"crc {variant}", **kw)


class EquationsTests(unittest.TestCase):
    """The XOR equations derived at elaboration time, evaluated in software."""
    skip = SKIP

    def test_every_beat_size_matches_the_library(self):
        rng = random.Random(9)
        for variant in VARIANTS:
            for n in range(1, crc.BEAT_BYTES + 1):
                eqs = crc.equations(crc.POLYNOMIALS[variant], n)
                for _ in range(20):
                    prefix, data = rng.randbytes(rng.randint(0, 20)), rng.randbytes(n)
                    # The library continues from a running CRC: its register is ~value.
                    register = crc.SOFTWARE[variant](prefix) ^ crc.ALL_ONES
                    got = crc.apply(eqs, register, data) ^ crc.ALL_ONES
                    self.assertEqual(got, crc.SOFTWARE[variant](prefix + data), (variant, n))

    def test_zeros_first_add_nothing_to_the_data_term(self):
        # What the short-beat alignment relies on: B_n·d == B_8·(0…0, d).
        poly = crc.POLYNOMIALS["crc32c"]
        full = crc.equations(poly, crc.BEAT_BYTES)
        data = bytes([0x5A, 0xC3, 0x01])
        short = crc.apply(crc.equations(poly, 3), 0, data)
        self.assertEqual(crc.apply(full, 0, bytes(5) + data), short)


class ReferenceTests(unittest.TestCase):
    """The reference adapter on hand-made examples, so it cannot share a bug with the HDL."""
    skip = SKIP

    def test_check_values(self):
        for variant, value in CHECK_VALUES.items():
            self.assertEqual(crc.reference(crc.beats(CHECK), variant), [value])

    def test_crc32c_rfc3720_vectors(self):
        # RFC 3720 appendix B.4: 32 bytes of zeros, of ones, and 0..31 ascending.
        items = (crc.beats(bytes(32)) + crc.beats(b"\xff" * 32)
                 + crc.beats(bytes(range(32)), [3, 8, 1, 8, 8, 4]))
        self.assertEqual(crc.reference(items, "crc32c"), [0x8A9136AA, 0x62A8AB43, 0x46DD794E])

    def test_crc32_is_the_fc_frame_crc(self):
        body = bytes(range(24)) + b"payload!"
        value, = crc.reference(crc.beats(body), "crc32")
        self.assertEqual(value.to_bytes(4, "little"), fc.fc_crc(body))

    def test_messages_split_on_last_and_drop_an_unfinished_tail(self):
        items = [crc.Beat(b"12345678"), crc.Beat(b"9", last=True), crc.Beat(b"ab", last=True),
                 crc.Beat(b"cd")]
        self.assertEqual(crc.messages(items), [CHECK, b"ab"])

    def test_beats_split(self):
        self.assertEqual(crc.beats(CHECK), [crc.Beat(b"12345678"), crc.Beat(b"9", last=True)])
        self.assertEqual([b.data for b in crc.beats(CHECK, [1, 8])], [b"1", b"23456789"])
        with self.assertRaisesRegex(ValueError, "sizes"):
            crc.beats(CHECK, [8])
        with self.assertRaisesRegex(ValueError, "message"):
            crc.beats(b"")

    def test_bad_input_names_the_field(self):
        for data in (b"", bytes(9)):
            with self.assertRaisesRegex(ValueError, "data"):
                crc.encode(crc.Beat(data, last=True))
        with self.assertRaisesRegex(ValueError, "variant: 'crc16'"):
            crc.build("crc16")
        with self.assertRaisesRegex(ValueError, "variant"):
            crc.reference([], "crc16")

    def test_vectors_hit_the_corner_cases(self):
        items = crc.vectors(random.Random(1), 600, "crc32c")
        self.assertEqual(len(items), 600)
        self.assertTrue(items[-1].last)
        tails = {len(b.data) for b in items if b.last}
        self.assertEqual(tails, set(range(1, 9)))
        self.assertIn(1, {len(m) for m in crc.messages(items)})
        self.assertTrue(any(len(a.data) < 8 and not a.last for a in items),
                        "no short beat in the middle of a message")
        self.assertIn(bytes(8), [b.data for b in items])
        self.assertIn(b"\xff" * 8, [b.data for b in items])


class CosimTests(unittest.TestCase):
    skip = SKIP

    def test_check_values_in_hardware(self):
        for variant, value in CHECK_VALUES.items():
            result = cosim.run(crc.build(variant), [crc.encode(b) for b in crc.beats(CHECK)])
            self.assertEqual(result.outputs, [value])

    def test_random_vectors_with_back_pressure(self):
        for variant in VARIANTS:
            for seed in range(3):
                rng = random.Random(seed)
                items = crc.vectors(rng, 150, variant)
                run_check(variant, items, seed, valid_p=rng.uniform(0.3, 1.0),
                          ready_p=rng.uniform(0.3, 1.0))

    def test_every_length_1_to_200_at_one_beat_per_cycle(self):
        # Every tail length, with whole messages back to back at full rate: each beat,
        # short or full, and each one-beat message is taken in the cycle after the last.
        items = [b for n in range(1, 201) for b in crc.beats(bytes(range(n)))]
        result = run_check("crc32", items, seed=7, valid_p=1.0, ready_p=1.0)
        self.assertEqual(len(result.outputs), 200)
        start = result.accepted_at[0]
        self.assertEqual(result.accepted_at, list(range(start, start + len(items))))

    def test_bytes_beyond_count_are_ignored(self):
        items = crc.beats(CHECK * 3, [3, 8, 1, 7, 8])
        garbage = random.Random(5)
        payloads = [crc.encode(b) | garbage.getrandbits(64 - 8 * len(b.data)) << 8 * len(b.data)
                    for b in items]
        result = cosim.run(crc.build("crc32c"), payloads, seed=3)
        self.assertEqual(result.outputs, crc.reference(items, "crc32c"))

    def test_output_holds_and_input_stalls_while_not_ready(self):
        dut = crc.build("crc32")
        first, second = crc.encode(crc.Beat(b"a", last=True)), crc.encode(crc.Beat(b"b", True))
        seen = {}

        async def bench(ctx):
            ctx.set(dut.o.ready, 0)
            ctx.set(dut.i.payload, first)
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
            ctx.set(dut.i.payload, second)
            held = []
            for _ in range(5):
                await ctx.tick()
                held.append((ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready)))
            seen["held"] = held
            ctx.set(dut.o.ready, 1)
            self.assertEqual(ctx.get(dut.i.ready), 1)     # the leaving output frees the slot
            await ctx.tick()
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
            seen["next"] = ctx.get(dut.o.payload)

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        self.assertEqual(seen["held"], [(1, zlib.crc32(b"a"), 0)] * 5)
        self.assertEqual(seen["next"], zlib.crc32(b"b"))


