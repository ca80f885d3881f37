"""What every hardware block shares: one stream in, one stream out, and the co-simulation.

The block convention
    A block is an ``amaranth.lib.wiring.Component`` with exactly two ports, ``i``
    (``In(stream.Signature(W_in))``) and ``o`` (``Out(stream.Signature(W_out))``),
    flat unsigned payloads, one clock domain (``sync``). A block with several kinds
    of input takes them as commands on ``i`` (an opcode field); a block with several
    results sends them as tagged beats on ``o``. So one harness drives every block
    in simulation, and one Verilog testbench (``tools/hdl_export.py``) drives every
    exported block in Icarus Verilog.

    Each block module has a :class:`Codec` (items <-> payload integers) and a
    ``reference(items, params) -> list`` that computes, with ``datapath.reference``,
    the outputs the block must give for those inputs.

Co-simulation (:func:`run`)
    The input items go in as payloads with ``valid`` raised at random (probability
    ``valid_p`` per cycle) and held until ``ready``; the output side raises ``ready``
    at random (``ready_p``), so both sides see back-pressure. The run ends when every
    input has been taken and the output has been idle for ``drain`` cycles, or at
    ``max_cycles`` (an error: the block hung). Randomness is ``random.Random(seed)``:
    a failure prints the seed and the inputs, and :func:`replay` runs them again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from amaranth.sim import Simulator


class CosimError(AssertionError):
    """The hardware and the reference disagree (or the block hung): a replayable case."""


@dataclass
class Codec:
    """Items to input payloads and output payloads to items (both plain integers on the wire)."""
    encode: Callable[[Any], int]
    decode: Callable[[int], Any]


@dataclass
class Result:
    outputs: list
    cycles: int
    accepted_at: list[int] = field(default_factory=list)      # cycle of each input beat
    emitted_at: list[int] = field(default_factory=list)       # cycle of each output beat


def run(dut, payloads: Sequence[int], *, seed: int = 0, valid_p: float = 0.7,
        ready_p: float = 0.7, drain: int = 64, max_cycles: int = 1_000_000,
        vcd: str | None = None) -> Result:
    """Drive ``payloads`` into ``dut.i`` and collect ``dut.o``'s payloads (see the module doc)."""
    rng_in, rng_out = random.Random(seed), random.Random(seed ^ 0x5EED)
    outputs: list[int] = []
    accepted_at: list[int] = []
    emitted_at: list[int] = []
    state = {"cycle": 0, "inputs_done": False, "idle": 0, "hung": False}

    async def producer(ctx):
        for payload in payloads:
            while rng_in.random() >= valid_p:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, payload)
            ctx.set(dut.i.valid, 1)
            while True:     # not tick().until(): it cannot be closed when the run ends first
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
            accepted_at.append(state["cycle"])
            ctx.set(dut.i.valid, 0)
        state["inputs_done"] = True

    async def consumer(ctx):
        while True:
            ctx.set(dut.o.ready, rng_out.random() < ready_p)
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                  dut.o.payload)
            state["cycle"] += 1
            if valid and ready:
                outputs.append(int(payload))
                emitted_at.append(state["cycle"])
                state["idle"] = 0
            elif state["inputs_done"]:
                state["idle"] += 1
            if state["inputs_done"] and state["idle"] >= drain:
                return
            if state["cycle"] >= max_cycles:
                state["hung"] = True
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    if state["hung"]:
        raise CosimError(f"no end after {max_cycles} cycles: {len(accepted_at)} of "
                         f"{len(payloads)} inputs taken, {len(outputs)} outputs")
    return Result(outputs, state["cycle"], accepted_at, emitted_at)


def check(make_dut: Callable[[], Any], codec: Codec, items: Sequence, expected: Sequence, *,
          seed: int, label: str = "", **kw) -> Result:
    """Run ``items`` through a fresh block and compare its decoded outputs with ``expected``;
    :class:`CosimError` names the seed, the first difference and the inputs to replay."""
    result = run(make_dut(), [codec.encode(x) for x in items], seed=seed, **kw)
    got = [codec.decode(v) for v in result.outputs]
    if got != list(expected):
        first = next((n for n, (a, b) in enumerate(zip(got, expected)) if a != b),
                     min(len(got), len(expected)))
        raise CosimError(
            f"{label or type(make_dut).__name__}: hardware and reference differ at output "
            f"{first} (hardware gave {len(got)} outputs, reference {len(expected)}):\n"
            f"  hardware:  {got[first:first + 3]!r}\n  reference: {list(expected)[first:first + 3]!r}\n"
            f"replay: hdl_models.cosim.replay(<block>, {seed}, {list(items)!r})")
    return result


def replay(make_dut, codec: Codec, reference, seed: int, items: Sequence, **kw) -> Result:
    """Run a printed failing case again (``reference(items)`` gives the expected outputs)."""
    return check(make_dut, codec, items, reference(items), seed=seed, **kw)
