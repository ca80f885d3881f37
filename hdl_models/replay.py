"""The hop layer's replay window in hardware: ``datapath.reference.replay`` as a stream block.

Input beat: ``counter | op << counter_bits`` with ``op`` CHECK (0: is the counter fresh?)
or MARK (1: is it fresh? then record it -- what a receiver does once the datagram's tag
verified). Output beat, one per input, in order: ``fresh | op << 1``, ``fresh`` as it was
before the command.

State: ``top`` (the highest counter recorded, with a flag for "none yet") and a bitmap of
``window`` bits in registers, bit ``counter mod window`` set when that counter was recorded
(RFC 6479's indexing: nothing is shifted). Recording a counter above ``top`` clears, in the
same cycle, the bits of the counters it skips (a run of ``counter - top`` bits rotated to
``(top + 1) mod window``; all of them for a jump of a window or more) and sets its own;
recording one behind the window changes nothing. So the block agrees with
``rcn.logxfer.seal.ReplayWindow`` verdict for verdict (the tests check both against the
reference model).

Timing (one ``sync`` domain, registered ``o``): one command per cycle.

This is the small-window, register form: a 4096-counter window in registers with a
4096-bit rotate is far larger than the block RAM form ``hdl_models/README.md`` describes
(the bitmap in one block RAM, a jump clearing the words it crosses over several cycles).
It is not in ``hdl_models.BLOCKS`` (not exported or synthesised by ``tools/hdl_export.py``).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from datapath.reference import replay as ref
from hdl_models.cosim import Codec

NAME = "replay"
PARAMS = dict(window=4096, counter_bits=64)     # rcn.logxfer.seal.REPLAY_WINDOW, hop counter
SMALL = dict(window=64, counter_bits=64)
CHECK, MARK = ref.CHECK, ref.MARK


def _check_params(window: int, counter_bits: int) -> int:
    for name, value in (("window", window), ("counter_bits", counter_bits)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if window < 2 or window & (window - 1):
        raise ValueError(f"window: {window} is not a power of two >= 2")
    index_bits = window.bit_length() - 1
    if not index_bits < counter_bits <= 64:
        raise ValueError(f"counter_bits: {counter_bits} not in {index_bits + 1}..64")
    return index_bits


class ReplayBlock(wiring.Component):
    """The block (see the module doc)."""

    def __init__(self, window: int, counter_bits: int):
        self.index_bits = _check_params(window, counter_bits)
        self.window = window
        self.counter_bits = counter_bits
        super().__init__({
            "i": In(stream.Signature(counter_bits + 1)),
            "o": Out(stream.Signature(2)),
        })

    def elaborate(self, platform):
        m = Module()
        w, cb = self.window, self.counter_bits
        top = Signal(cb)
        have_top = Signal()
        bitmap = Signal(w)
        counter = self.i.payload[:cb]
        op = self.i.payload[cb]
        index = counter[:self.index_bits]
        above = ~have_top | (counter > top)
        behind = Signal(cb)
        m.d.comb += behind.eq(top - counter)
        in_window = have_top & ~above & (behind < w)
        seen = bitmap.bit_select(index, 1)
        fresh = above | (in_window & ~seen)

        # the bits of the counters a jump skips: (top, counter] from (top + 1) mod w
        jump = Signal(cb)
        m.d.comb += jump.eq(counter - top)
        run = Signal(w)
        m.d.comb += run.eq((Const(1, w + 1) << jump[:self.index_bits + 1]) - 1)
        start = Signal(self.index_bits)
        m.d.comb += start.eq(top[:self.index_bits] + 1)
        back = Signal(self.index_bits + 1)
        m.d.comb += back.eq(w - start)
        skipped = Signal(w)
        m.d.comb += skipped.eq(((run << start) | (run >> back))[:w])
        own = Signal(w)
        m.d.comb += own.eq(Const(1, w) << index)

        take = self.i.valid & (~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(fresh | (op << 1))]
            with m.If(op == MARK):
                with m.If(above):
                    m.d.sync += [top.eq(counter), have_top.eq(1)]
                    m.d.sync += bitmap.eq(Mux(~have_top | (jump >= w), own,
                                              (bitmap & ~skipped) | own))
                with m.Elif(in_window):
                    m.d.sync += bitmap.eq(bitmap | own)
        return m


def build(window: int = PARAMS["window"], counter_bits: int = PARAMS["counter_bits"]):
    return ReplayBlock(window, counter_bits)


def codec(counter_bits: int = PARAMS["counter_bits"]) -> Codec:
    return Codec(encode=lambda item: item[1] | item[0] << counter_bits,
                 decode=lambda value: (value >> 1, bool(value & 1)))


def reference(items, window: int = PARAMS["window"]) -> list[tuple[int, bool]]:
    return ref.run(list(items), window)
