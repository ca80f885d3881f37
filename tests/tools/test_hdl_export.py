"""tools/hdl_export.py on a tiny block: Verilog out, Icarus run equal, yosys and nextpnr figures."""

from __future__ import annotations

import contextlib
import io
import json
import os

from twisted.trial.unittest import TestCase

from tests.support import require_tool

try:
    import amaranth  # noqa: F401
    from tests.hdl_models import increment
    from tools import hdl_export
    SKIP = None
except ImportError as exc:
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"


class HdlExportTests(TestCase):
    skip = SKIP

    def setUp(self):
        for tool in hdl_export.TOOLS:
            require_tool(self, tool)
        self.out = os.path.abspath(self.mktemp())

    def export(self, *extra) -> tuple[int, str, list[dict]]:
        text = io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(io.StringIO()):
            code = hdl_export.main(["--block", "tests.hdl_models.increment", "--out", self.out,
                                    "--vectors", "100", "--rate-items", "100", *extra])
        with open(os.path.join(self.out, "report.json")) as f:
            return code, text.getvalue(), json.load(f)

    def test_export_simulate_synthesise_place(self):
        code, text, (row,) = self.export()
        self.assertEqual(code, 0, text)
        self.assertTrue(row["verilog_equal"])
        self.assertEqual((row["w_in"], row["w_out"], row["outputs"]), (16, 16, 100))
        self.assertGreaterEqual(row["ffs"], 16)            # the output register at least
        self.assertGreater(row["luts"], 0)
        self.assertEqual(row["brams"], 0)
        self.assertGreater(row["fmax_mhz"], 50.0)
        self.assertEqual(row["cycles_per_item"], 1.0)
        self.assertAlmostEqual(row["line_rate"], row["fmax_mhz"] * 1e6)
        with open(os.path.join(self.out, "increment.v")) as f:
            verilog = f.read()
        self.assertIn("module rcn_increment", verilog)
        self.assertRegex(text, r"increment\s+equal\s+\d+")

    def test_a_verilog_run_that_differs_fails(self):
        self.patch(increment, "reference", lambda items, width: [x + 2 for x in items])
        code, text, (row,) = self.export("--no-pnr")
        self.assertEqual(code, 1)
        self.assertFalse(row["verilog_equal"])
        self.assertIn("DIFFER", text)


class EveryBlockTests(TestCase):
    """Every real block through Icarus against its reference and through yosys (no place
    and route here: tools/hdl_export.py does that when run by hand, minutes per block)."""
    skip = SKIP

    def test_every_block_equal_in_icarus_and_synthesised(self):
        import hdl_models
        for tool in ("iverilog", "vvp", "yosys"):
            require_tool(self, tool)
        out = os.path.abspath(self.mktemp())
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = hdl_export.main(["--no-pnr", "--vectors", "150", "--rate-items", "600",
                                    "--out", out])
        with open(os.path.join(out, "report.json")) as f:
            rows = {r["block"]: r for r in json.load(f)}
        self.assertEqual(code, 0, rows)
        self.assertEqual(sorted(rows), sorted(hdl_models.BLOCKS))
        for name, row in rows.items():
            self.assertTrue(row["verilog_equal"], name)
            self.assertEqual(row["undefined_outputs"], 0, name)
            self.assertGreaterEqual(row["expected"], hdl_export.MIN_OUTPUTS, name)
            self.assertGreater(row["luts"], 0, name)
            self.assertLessEqual(row["luts"], 7680, name)        # fits an HX8K
            self.assertLessEqual(row["brams"], 32, name)
            self.assertGreaterEqual(row["units_per_cycle"], 0.4, name)
