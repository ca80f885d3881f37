"""A tiny block in the hdl_models convention (a registered +1), for testing the tooling."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl_models.cosim import Codec

NAME = "increment"
PARAMS = ICE40 = {"width": 16}
ICE40_NOTE = ""
RATE_UNIT = "items"


class Increment(wiring.Component):
    def __init__(self, width: int):
        self.width = width
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        take = self.o.ready | ~self.o.valid
        with m.If(take):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload + 1)]
        m.d.comb += self.i.ready.eq(take)
        return m


def build(width: int) -> Increment:
    return Increment(width)


def codec(width: int) -> Codec:
    return Codec(int, int)


def reference(items, width: int) -> list:
    return [(x + 1) % (1 << width) for x in items]


def vectors(rng, n: int, width: int) -> list:
    return [rng.choice([0, (1 << width) - 1, rng.getrandbits(width)]) for _ in range(n)]


def units(item) -> int:
    return 1
