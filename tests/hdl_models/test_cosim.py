"""The co-simulation harness itself, on a tiny block: back-pressure, mismatches, hangs."""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

try:
    from amaranth import Module
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from amaranth.back import verilog

    import hdl_models
    from hdl_models.cosim import CosimError, check, run
    from tests.hdl_models import increment
    SKIP = None
except ImportError as exc:          # the hdl extra is not installed
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"


class CosimTests(SynchronousTestCase):
    skip = SKIP

    def test_outputs_match_under_random_back_pressure(self):
        codec = increment.codec(8)
        items = list(range(256))
        for seed, (valid_p, ready_p) in enumerate([(1.0, 1.0), (0.3, 0.9), (0.9, 0.2)]):
            result = check(lambda: increment.build(8), codec, items,
                           increment.reference(items, 8), seed=seed, valid_p=valid_p,
                           ready_p=ready_p)
            self.assertEqual(len(result.accepted_at), 256)
        # at full rate one item per cycle
        full = run(increment.build(8), items, valid_p=1.0, ready_p=1.0)
        self.assertEqual(full.emitted_at[-1] - full.emitted_at[0], 255)

    def test_a_difference_names_the_seed_and_the_replay(self):
        items = [1, 2, 3]
        with self.assertRaises(CosimError) as caught:
            check(lambda: increment.build(8), increment.codec(8), items, [2, 3, 5], seed=42)
        text = str(caught.exception)
        self.assertIn("differ at output 2", text)
        self.assertIn("hardware:  [4]", text)
        self.assertIn("replay: hdl_models.cosim.replay(<block>, 42, [1, 2, 3])", text)

    def test_a_block_that_never_answers_is_a_hang_not_a_pass(self):
        class Stuck(wiring.Component):
            def __init__(self):
                super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

            def elaborate(self, platform):
                m = Module()
                m.d.sync += self.o.payload.eq(self.o.payload + 1)   # clocked, ready never rises
                return m
        with self.assertRaises(CosimError) as caught:
            run(Stuck(), [1, 2], max_cycles=500)
        self.assertIn("0 of 2 inputs taken", str(caught.exception))


class VerilogExportTests(SynchronousTestCase):
    skip = SKIP

    def test_every_block_exports_at_ice40_parameters_with_the_stream_ports(self):
        for name in hdl_models.BLOCKS:
            block = importlib.import_module(f"hdl_models.{name}")
            text = verilog.convert(block.build(**block.ICE40), name=f"rcn_{name}")
            self.assertIn(f"module rcn_{name}", text)
            for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid",
                         "o__ready"):
                self.assertRegex(text, rf"(input|output) (\[\d+:0\] )?{port};", name)
