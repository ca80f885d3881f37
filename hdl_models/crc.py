"""CRC-32 (the FC frame CRC, zlib's) and CRC32C (log entries), 64 data bits per cycle.

Input beat (68 bits): ``data`` bytes 0..7 in bits [0:64] (byte 0, the first on the wire,
in bits [0:8]), ``count - 1`` in [64:67] (a beat carries 1..8 bytes, so the field cannot
name an impossible count), ``last`` in [67]. Bytes beyond ``count`` are ignored. Any beat
may be short, not only the last. Output: one 32-bit beat per message, the final CRC
(after the xor-out), as ``zlib.crc32`` / ``crc32c.crc32c`` return it.

An empty message cannot be sent: a beat carries at least one byte. (Its CRC is the
constant 0 for both variants; the sender knows that without asking the hardware.)

How 64 bits per cycle works. The reflected CRC is linear over GF(2): after ``n`` bytes
the register is ``A_n·s ^ B_n·d``. :func:`equations` derives those XOR equations at
elaboration time by running the bit-serial CRC on symbols (each bit a bitmask of the
state and data bits it is the XOR of). A short beat of ``n`` bytes is moved to the *end*
of the 8-byte window behind ``8 - n`` zero bytes: zeros entering first add nothing to the
data term, so ``B_n·d == B_8·(0…0, d)``. So there is one 64-bit data tree, a byte shifter
in front of it, and a mux of the eight small 32-bit state matrices ``A_1..A_8``; the data
path and the state path are parallel, and every beat (short or full) takes one cycle.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import crc32c
from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl_models.cosim import Codec

NAME = "crc"
PARAMS = {"variant": "crc32c"}
ICE40 = PARAMS
ICE40_NOTE = ""
RATE_UNIT = "bytes"

# Reflected (LSB-first) polynomials; both start at all ones and xor all ones out.
POLYNOMIALS = {"crc32": 0xEDB88320, "crc32c": 0x82F63B78}
SOFTWARE = {"crc32": zlib.crc32, "crc32c": crc32c.crc32c}
WIDTH = 32
BEAT_BYTES = 8
IN_WIDTH = 8 * BEAT_BYTES + 3 + 1
ALL_ONES = (1 << WIDTH) - 1


@dataclass(frozen=True)
class Beat:
    """Up to eight bytes of a message; ``last`` ends the message."""
    data: bytes
    last: bool = False


def _polynomial(variant: str) -> int:
    try:
        return POLYNOMIALS[variant]
    except KeyError:
        raise ValueError(f"variant: {variant!r} is not one of {sorted(POLYNOMIALS)}") from None


def equations(poly: int, nbytes: int) -> list[int]:
    """Register bit ``i`` after ``nbytes`` bytes, as a bitmask of what it is the XOR of:
    bits 0..31 are the register before, bits 32 + k the message's data bit k (byte k // 8,
    bit k % 8, the order the reflected CRC takes them)."""
    reg = [1 << i for i in range(WIDTH)]
    for k in range(8 * nbytes):
        feedback = reg[0] ^ (1 << (WIDTH + k))
        reg = reg[1:] + [0]
        reg = [r ^ feedback if poly >> i & 1 else r for i, r in enumerate(reg)]
    return reg


def apply(eqs: list[int], register: int, data: bytes) -> int:
    """Evaluate :func:`equations` in software (for tests of the equations themselves)."""
    inputs = register | int.from_bytes(data, "little") << WIDTH
    return sum((bin(e & inputs).count("1") & 1) << i for i, e in enumerate(eqs))


def _xor_of(bits: Signal, mask: int, offset: int = 0):
    """XOR of ``bits[j - offset]`` for every set bit ``j`` of ``mask`` (0 if none)."""
    picked = [bits[j - offset] for j in range(offset, offset + len(bits)) if mask >> j & 1]
    return Cat(*picked).xor() if picked else 0


class Crc(wiring.Component):
    def __init__(self, variant: str):
        self.variant = variant
        self.poly = _polynomial(variant)
        super().__init__({"i": In(stream.Signature(IN_WIDTH)), "o": Out(stream.Signature(WIDTH))})

    def elaborate(self, platform):
        m = Module()
        data = self.i.payload[:64]
        count_m1 = self.i.payload[64:67]
        last = self.i.payload[67]

        register = Signal(WIDTH, init=ALL_ONES)
        aligned = Signal(64)        # the beat's bytes at the end of the window, zeros first
        state_term = Signal(WIDTH)  # A_count · register
        data_term = Signal(WIDTH)   # B_8 · aligned
        after = Signal(WIDTH)

        with m.Switch(count_m1):
            for n in range(1, BEAT_BYTES + 1):
                with m.Case(n - 1):
                    a_n = equations(self.poly, n)
                    m.d.comb += aligned.eq(Cat(Const(0, 8 * (BEAT_BYTES - n)), data[:8 * n]))
                    m.d.comb += state_term.eq(Cat(*[_xor_of(register, e & ALL_ONES)
                                                    for e in a_n]))
        b_8 = equations(self.poly, BEAT_BYTES)
        m.d.comb += data_term.eq(Cat(*[_xor_of(aligned, e, WIDTH) for e in b_8]))
        m.d.comb += after.eq(state_term ^ data_term)

        # Registered output; a new beat is taken while the output slot is free or leaving.
        take = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(take)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & take):
            with m.If(last):
                m.d.sync += [register.eq(ALL_ONES), self.o.payload.eq(after ^ ALL_ONES),
                             self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += register.eq(after)
        return m


def build(variant: str) -> Crc:
    _polynomial(variant)        # before the Component exists, so no unused-elaboratable noise
    return Crc(variant)


def encode(beat: Beat) -> int:
    if not isinstance(beat.data, (bytes, bytearray)) or not 1 <= len(beat.data) <= BEAT_BYTES:
        raise ValueError(f"data: a beat carries 1..{BEAT_BYTES} bytes, got {beat.data!r}")
    return (int.from_bytes(beat.data, "little") | (len(beat.data) - 1) << 64
            | int(bool(beat.last)) << 67)


def codec(variant: str) -> Codec:
    _polynomial(variant)
    return Codec(encode, int)


def beats(message: bytes, sizes: list[int] | None = None) -> list[Beat]:
    """``message`` as beats of ``sizes`` bytes (8 each, the tail shorter, by default)."""
    if not message:
        raise ValueError("message: empty; a beat carries at least one byte")
    if sizes is None:
        sizes = [BEAT_BYTES] * (len(message) // BEAT_BYTES) + (
            [len(message) % BEAT_BYTES] if len(message) % BEAT_BYTES else [])
    if sum(sizes) != len(message):
        raise ValueError(f"sizes: add up to {sum(sizes)}, the message has {len(message)} bytes")
    out, at = [], 0
    for size in sizes:
        out.append(Beat(message[at:at + size]))
        at += size
    out[-1] = Beat(out[-1].data, last=True)
    return out


def messages(items: list[Beat]) -> list[bytes]:
    """The whole messages in ``items`` (a trailing message without ``last`` is not one)."""
    done, pending = [], b""
    for beat in items:
        pending += beat.data
        if beat.last:
            done.append(pending)
            pending = b""
    return done


def reference(items: list[Beat], variant: str) -> list[int]:
    _polynomial(variant)
    return [SOFTWARE[variant](message) for message in messages(items)]


def vectors(rng, n: int, variant: str) -> list[Beat]:
    """``n`` beats: messages of 1..200 bytes (every tail length, the 1-byte message, whole
    beats, short beats in the middle, all-zero and all-ones bytes); the last beat ends
    whatever message it falls in."""
    items: list[Beat] = []
    while len(items) < n:
        length = rng.choice([1, 8, 9, 16, rng.randint(1, 16), rng.randint(1, 200)])
        fill = rng.choice(["random", "random", "zeros", "ones"])
        message = (rng.randbytes(length) if fill == "random"
                   else (b"\0" if fill == "zeros" else b"\xff") * length)
        sizes = None
        if rng.random() < 0.25:         # arbitrary beat sizes, short beats mid-message
            sizes, left = [], length
            while left:
                sizes.append(rng.randint(1, min(BEAT_BYTES, left)))
                left -= sizes[-1]
        items += beats(message, sizes)
    items = items[:n]
    if items:
        items[-1] = Beat(items[-1].data, last=True)
    return items


def units(item: Beat) -> int:
    return len(item.data)


def rate_vectors(rng, n: int, variant: str) -> list[Beat]:
    """Steady state for the line rate (tools/hdl_export.py): 64-byte messages of full beats."""
    out: list[Beat] = []
    while len(out) < n:
        out += beats(rng.randbytes(64))
    return out[:n - n % 8] or out[:8]
