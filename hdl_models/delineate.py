"""FCIP delineator: a TCP byte stream in (up to 8 bytes a beat), one beat per FCIP frame out.

The hardware twin of ``datapath.kernels.delineate.StreamDelineator``: the same checks in
the same order, the same records, the same error codes and offsets -- but offsets count
from the start of the stream (the software's count from the start of each block).

Input beat (67 bits): ``data`` bytes 0..7 in bits [0:64] (byte 0, the first on the wire,
in bits [0:8]) and ``count - 1`` in [64:67]; bytes beyond ``count`` are ignored. Any beat
may be short, so TCP segments of any size go in as they come.

Output beat (:func:`output_layout`): ``error`` 0 and a frame record (``offset``,
``length``, the FC header fields, ``sof``, ``eof``, ``special``) for each complete valid
frame; or, once, ``error`` (a :class:`DelineationError` code), ``offset`` (the stream
offset of the bad frame) and ``error_at`` (the offending field's byte in that frame) when
the encapsulation is invalid: their sum is the kernel's ``error_stream_offset`` (the
codec adds them; in hardware the sum would put a 62-bit adder behind the verdict logic).
After an error the framing is lost for good, as in software: the block swallows its
input and says nothing more until reset.

How it works, and why it keeps up with 8 bytes a cycle:

* Every frame starts at a multiple of 4 in the stream (``frame_len`` counts words), so
  every field and every decision (28 header bytes present, frame complete) falls on a
  4-byte word boundary. A gearbox turns beats of 1..8 bytes into 0, 1 or 2 whole words
  (holding at most 3 bytes), so the core sees words and never a split field.
* The core takes up to two words a cycle with a word counter inside the current frame.
  Each header check reads a single word, so it runs as that word passes and the first
  failure is kept; the SOF word is checked as it passes too; ``pflags``, ``frame_len``
  and FC header words 8-13 are captured. A frame is at least 15 words, so at most one
  frame ends and at most one verdict falls in any beat: one output beat at most.
* The header verdict is given when word 6 (its last) arrives, as the software waits for
  all 28 bytes; the SOF, EOF and FC length verdict when the frame's last word arrives,
  as the software waits for the whole frame, though the SOF word came long before.
  The FC CRC is not checked (as in the kernel).
* Every field of an output beat is written at once from registers, so no field waits
  for the verdict logic: in an error beat only ``error``, ``offset`` and ``error_at``
  mean anything.

The core advances only when the output register is free or being emptied, so
``i.ready`` follows ``o.ready`` through one gate (no path from ``i.valid``).
"""

from __future__ import annotations

import dataclasses
import random
from functools import partial

from amaranth import C, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from datapath.frames import fcip
from datapath.frames.fc import FC_HEADER, MAX_PAYLOAD, Eof, Sof, delimiter_word
from datapath.frames.fcip import FCIP_HEADER
from datapath.kernels.delineate import (
    HEADER_SIZE, MIN_FC_BYTES, OVERHEAD, DelineationError as E)
from datapath.reference.delineate import RECORD_FIELDS, StreamDelineator
from hdl_models.cosim import Codec

NAME = "delineate"
PARAMS = {"offset_bits": 64}          # the kernel's record offset is a uint64
ICE40 = PARAMS
ICE40_NOTE = ""
RATE_UNIT = "bytes"

BEAT_BYTES = 8
WORD = 4
IN_LAYOUT = data.StructLayout({"data": 8 * BEAT_BYTES, "count_m1": 3})

HEADER_WORDS = HEADER_SIZE // WORD                        # 7: words 0..6
SOF_WORD = HEADER_WORDS                                   # 7
FC_FIRST_WORD = SOF_WORD + 1                              # 8
FC_WORDS = FC_HEADER.size // WORD                         # 6: words 8..13
MIN_FC_FRAME_WORDS = (OVERHEAD + MIN_FC_BYTES) // WORD    # 16: room for FC header + CRC
WORD_INDEX_BITS = fcip.MAX_FRAME_WORDS.bit_length()       # 10
LENGTH_BITS = (fcip.MAX_FRAME_WORDS * WORD).bit_length()  # 12

_FLAGS_LEN_BITS = {name: (shift, mask)
                   for name, shift, mask in FCIP_HEADER.by_name["flags_len"].bit_masks}
_PROTOCOL_WORD = fcip.SYNC_PATTERN[:4]                     # what bytes 4-7 must copy


def _complement(a: str, b: str):
    return lambda field: field(b) != ~field(a)


def _flags_len_part(field, part: str):
    shift, mask = _FLAGS_LEN_BITS[part]
    return (field("flags_len") >> shift) & mask


def _outside(value, low: int, high: int):
    return (value < low) | (value > high)


#: check_header's checks in its order: (code, field reported, bad(field) -> Value), where
#: ``field(name)`` gives an encapsulation header field.
HEADER_CHECKS = [
    (E.BAD_PROTOCOL, "protocol", lambda field: field("protocol") != fcip.FCIP_PROTOCOL),
    (E.BAD_VERSION, "version", lambda field: field("version") != fcip.FCIP_VERSION),
    (E.BAD_COMPLEMENT, "protocol_c", _complement("protocol", "protocol_c")),
    (E.BAD_COMPLEMENT, "version_c", _complement("version", "version_c")),
    (E.BAD_PROTOCOL_SPECIFIC, "protocol_specific",
     lambda field: field("protocol_specific") != int.from_bytes(_PROTOCOL_WORD, "big")),
    (E.BAD_COMPLEMENT, "pflags_c", _complement("pflags", "pflags_c")),
    (E.BAD_RESERVED, "reserved", lambda field: field("reserved") != 0),
    (E.BAD_COMPLEMENT, "reserved_c", _complement("reserved", "reserved_c")),
    (E.BAD_COMPLEMENT, "flags_len_c", _complement("flags_len", "flags_len_c")),
    (E.CRCV_SET, "flags_len",
     lambda field: (_flags_len_part(field, "flags") & fcip.FLAG_CRCV) != 0),
    (E.BAD_LENGTH, "flags_len", lambda field: _outside(_flags_len_part(field, "frame_len"),
                                                       fcip.MIN_FRAME_WORDS, fcip.MAX_FRAME_WORDS)),
]


def _word_of(name: str) -> int:
    return FCIP_HEADER.offsets[name] // WORD


def _check_one_word_each():
    """The hardware runs each check as its word passes: refuse a check that reads two words."""
    for _, reported, bad in HEADER_CHECKS:
        words = set()

        def field(name):
            start, width = FCIP_HEADER.offsets[name], FCIP_HEADER.by_name[name].width
            words.update({start // WORD, (start + width - 1) // WORD})
            return C(0, 8 * width)

        bad(field)
        if words != {_word_of(reported)}:
            raise RuntimeError(f"delineate: the {reported} check reads header words "
                               f"{sorted(words)}; the hardware checks one word at a time")


_check_one_word_each()


def output_layout(offset_bits: int) -> data.StructLayout:
    """The output beat; the FC fields come from ``FC_HEADER``, in its order."""
    return data.StructLayout({
        "error": 4, "offset": offset_bits, "length": LENGTH_BITS, "error_at": LENGTH_BITS,
        **{f.name: 8 * f.width for f in FC_HEADER.fields},
        "sof": 8, "eof": 8, "special": 1})


Frame = dataclasses.make_dataclass("Frame", RECORD_FIELDS, frozen=True)
Frame.__module__ = __name__
Frame.__doc__ = "One delineated frame: the reference record, ``offset`` counted in the stream."


@dataclasses.dataclass(frozen=True)
class Error:
    """The stream cannot be delineated: ``code`` and the stream offset of the bad field."""
    code: E
    offset: int


# -- helpers on little-endian packed byte vectors -------------------------------

def _byte(vector, offset: int):
    return vector[8 * offset:8 * offset + 8]


def _be(vector, offset: int, width: int):
    """The big-endian field of ``width`` bytes at byte ``offset``."""
    return Cat(*(_byte(vector, offset + i) for i in reversed(range(width))))


def _one_of(value, codes):
    result = C(0, 1)
    for code in codes:
        result = result | (value == int(code))
    return result


def _delimiter_ok(word, codes):
    """The delimiter word ``c, c, ~c, ~c`` with ``c`` one of ``codes`` (fc.parse_delimiter_word)."""
    c = _byte(word, 0)
    return ((_byte(word, 1) == c) & (_byte(word, 2) == ~c) & (_byte(word, 3) == ~c)
            & _one_of(c, codes))


def _offset_bits(offset_bits) -> int:
    if not isinstance(offset_bits, int) or not LENGTH_BITS <= offset_bits <= 64:
        raise ValueError(f"offset_bits: expected an integer in {LENGTH_BITS}..64 (offsets wrap "
                         f"at 2**offset_bits), got {offset_bits!r}")
    return offset_bits


# -- the block ------------------------------------------------------------------

def _slot_checks(m: Module, present, index, header_field):
    """Each header check on the slot (of a beat's two words) holding its word: per slot,
    the first check that fails (``slot_error``, 0: none) and its field's byte in the frame."""
    slot_error = [Signal(4, name=f"slot{s}_error") for s in range(2)]
    slot_error_at = [Signal(range(HEADER_SIZE), name=f"slot{s}_error_at") for s in range(2)]
    for s in range(2):
        for code, field, bad in reversed(HEADER_CHECKS):
            with m.If(present[s] & (index[s] == _word_of(field))
                      & bad(partial(header_field, s))):
                m.d.comb += [slot_error[s].eq(code),
                             slot_error_at[s].eq(FCIP_HEADER.offsets[field])]
    return slot_error, slot_error_at


def _verdict(m: Module, header_due, header_error, header_error_at, ending, special, sof_ok,
             eof, last):
    """What this beat reports, if anything: ``(report, error, error_word, error_byte)``."""
    report = Signal()
    error = Signal(4)
    error_word = Signal(WORD_INDEX_BITS)        # the bad field's word in the frame...
    error_byte = Signal(2)                      # ... and its byte in that word
    with m.If(header_due):
        m.d.comb += [report.eq(header_error != 0), error.eq(header_error),
                     error_word.eq(header_error_at >> 2), error_byte.eq(header_error_at)]
    with m.Elif(ending):
        m.d.comb += report.eq(1)
        with m.If(special):
            pass                                 # no SOF/EOF, nothing else to check
        with m.Elif(~sof_ok):
            m.d.comb += [error.eq(E.BAD_SOF), error_word.eq(SOF_WORD)]
        with m.Elif(~_delimiter_ok(eof, Eof)):
            m.d.comb += [error.eq(E.BAD_EOF), error_word.eq(last)]
        with m.Elif(last < MIN_FC_FRAME_WORDS - 1):
            m.d.comb += [error.eq(E.BAD_LENGTH), error_word.eq(_word_of("flags_len")),
                         error_byte.eq(FCIP_HEADER.offsets["flags_len"] % WORD)]
    return report, error, error_word, error_byte


def _report(out, error, error_at, frame_start, last, special, sof_code, eof, fc) -> list:
    """The output record's fields, every one from registers (a special frame: no SOF, EOF
    or FC fields)."""
    return [out.error.eq(error),
            out.offset.eq(Cat(C(0, 2), frame_start)),
            out.error_at.eq(error_at),
            out.length.eq(Cat(C(0, 2), last + 1)), out.special.eq(special),
            out.sof.eq(Mux(special, 0, sof_code)),
            out.eof.eq(Mux(special, 0, _byte(eof, 0)))] + [
        out[f.name].eq(Mux(special, 0, _be(fc, FC_HEADER.offsets[f.name], f.width)))
        for f in FC_HEADER.fields]


class Delineator(wiring.Component):
    def __init__(self, offset_bits: int = 64):
        self.offset_bits = _offset_bits(offset_bits)
        self.out_layout = output_layout(self.offset_bits)
        super().__init__({"i": In(stream.Signature(IN_LAYOUT.size)),
                          "o": Out(stream.Signature(self.out_layout.size))})

    def _gearbox(self, m: Module):
        """Beats of 1..8 bytes -> 0..2 whole words: the beat for the core (``g_valid``,
        ``g_two``, ``g_data``), ``dead`` (an error was reported) and ``take`` (the core
        consumes the beat now)."""
        beat = IN_LAYOUT(self.i.payload)
        held = Signal(range(WORD))                 # bytes of an unfinished word held back
        held_bytes = Signal(8 * (WORD - 1))
        total = Signal(range(WORD - 1 + BEAT_BYTES + 1))
        joined = Signal(8 * (WORD - 1 + BEAT_BYTES))       # held bytes, then the beat's
        m.d.comb += total.eq(held + beat.count_m1 + 1)
        with m.Switch(held):
            for h in range(WORD):
                with m.Case(h):
                    m.d.comb += joined.eq(Cat(held_bytes[:8 * h], beat.data))
        words = total >> 2
        left = Signal(8 * (WORD - 1))
        with m.Switch(words):
            for n in range(3):
                with m.Case(n):
                    m.d.comb += left.eq(joined[32 * n:32 * n + 24])

        g_valid = Signal()                          # a beat of whole words for the core
        g_two = Signal()                            # ... with two words (else one)
        g_data = Signal(8 * BEAT_BYTES)

        dead = Signal()                             # an error was reported: swallow all
        take = Signal()                             # the core consumes the g beat now
        m.d.comb += [take.eq(g_valid & (dead | ~self.o.valid | self.o.ready)),
                     self.i.ready.eq(~g_valid | take)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(total[:2]), held_bytes.eq(left),
                         g_valid.eq(words != 0), g_two.eq(words == 2), g_data.eq(joined[:64])]
        with m.Elif(take):
            m.d.sync += g_valid.eq(0)
        return g_valid, g_two, g_data, dead, take

    def elaborate(self, platform):
        m = Module()
        out = self.out_layout(self.o.payload)
        g_valid, g_two, g_data, dead, take = self._gearbox(m)
        w = (g_data[:32], g_data[32:])

        # -- core: whole words, the current frame's word counter ----------------------
        frame_start = Signal(self.offset_bits - 2)  # in words
        rel = Signal(WORD_INDEX_BITS)               # index in the frame of word w[0]
        checked = Signal()                          # the header passed; `last` is valid
        last = Signal(WORD_INDEX_BITS)              # index of the frame's EOF word
        header_error = Signal(4)                    # the first failed check so far ...
        header_error_at = Signal(range(HEADER_SIZE))  # ... and its byte in the frame
        special = Signal()
        frame_len = Signal(WORD_INDEX_BITS)
        sof_code = Signal(8)
        sof_ok = Signal()
        fc = Signal(32 * FC_WORDS)

        end0 = checked & (rel == last)
        end1 = g_two & ~end0 & checked & (rel + 1 == last)
        rel1 = Mux(end0, 0, rel + 1)                # index of w[1] (a new frame after end0)
        index = (rel, rel1)
        present = (C(1, 1), g_two)
        header_due = ~checked & ((rel == HEADER_WORDS - 1)
                                 | (g_two & (rel1 == HEADER_WORDS - 1)))
        ending = end0 | end1
        eof = Mux(end0, w[0], w[1])

        def capture(target, word_index: int, value):
            """``target`` takes ``value(slot)`` from the slot holding frame word ``word_index``."""
            with m.If(rel == word_index):
                m.d.sync += target.eq(value(0))
            with m.If(g_two & (rel1 == word_index)):
                m.d.sync += target.eq(value(1))

        def header_field(slot: int, name: str):
            """Header field ``name`` read from slot ``slot``, assuming that slot holds its word."""
            return _be(w[slot], FCIP_HEADER.offsets[name] % WORD, FCIP_HEADER.by_name[name].width)

        # Each header check reads one word, so it runs as that word passes, and the first
        # failure is kept: by the time word 6 arrives (always a later beat than word 3) the
        # verdict is a register, not logic in front of the output.
        slot_error, slot_error_at = _slot_checks(m, present, index, header_field)
        report, error, error_word, error_byte = _verdict(
            m, header_due, header_error, header_error_at, ending, special, sof_ok, eof, last)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take & ~dead):
            capture(special, _word_of("pflags"),
                    lambda s: (header_field(s, "pflags") & fcip.PFLAG_SPECIAL_FRAME) != 0)
            capture(frame_len, _word_of("flags_len"),
                    lambda s: _flags_len_part(partial(header_field, s), "frame_len"))
            capture(sof_code, SOF_WORD, lambda s: _byte(w[s], 0))
            capture(sof_ok, SOF_WORD, lambda s: _delimiter_ok(w[s], Sof))
            for k in range(FC_WORDS):
                capture(fc[32 * k:32 * k + 32], FC_FIRST_WORD + k, lambda s: w[s])
            with m.If(ending):
                m.d.sync += [frame_start.eq(frame_start + last + 1), checked.eq(0),
                             rel.eq(end0 & g_two),
                             header_error.eq(Mux(end0, slot_error[1], 0)),
                             header_error_at.eq(slot_error_at[1])]
            with m.Else():
                m.d.sync += rel.eq(rel + 1 + g_two)
                with m.If(header_error == 0):
                    with m.If(slot_error[0] != 0):
                        m.d.sync += [header_error.eq(slot_error[0]),
                                     header_error_at.eq(slot_error_at[0])]
                    with m.Else():
                        m.d.sync += [header_error.eq(slot_error[1]),
                                     header_error_at.eq(slot_error_at[1])]
                with m.If(header_due & (header_error == 0)):
                    m.d.sync += [checked.eq(1), last.eq(frame_len - 1)]
            # every field at once, straight from registers (see the module doc)
            with m.If(report):
                m.d.sync += [self.o.valid.eq(1), dead.eq(error != 0),
                             *_report(out, error, Cat(error_byte, error_word), frame_start,
                                      last, special, sof_code, eof, fc)]
        return m


# -- the module interface (hdl_models convention) ---------------------------------------

def build(offset_bits: int = 64) -> Delineator:
    return Delineator(offset_bits)


def codec(offset_bits: int = 64) -> Codec:
    bits = _offset_bits(offset_bits)
    layout = output_layout(bits)

    def encode(piece: bytes) -> int:
        if not isinstance(piece, (bytes, bytearray)) or not 1 <= len(piece) <= BEAT_BYTES:
            raise ValueError(f"delineate input: a beat is 1..{BEAT_BYTES} bytes, got {piece!r}")
        return IN_LAYOUT.const({"data": int.from_bytes(piece, "little"),
                                "count_m1": len(piece) - 1}).as_value().value

    def decode(payload: int):
        beat = layout.from_bits(payload)
        if beat.error:
            return Error(E(beat.error), (beat.offset + beat.error_at) & ((1 << bits) - 1))
        return Frame(**{name: beat[name] for name in RECORD_FIELDS})

    return Codec(encode, decode)


def reference(items: list, offset_bits: int = 64) -> list:
    """Feed the pieces to the reference ``StreamDelineator``; its records with stream offsets,
    then its error once (it repeats it for every later feed; the hardware says it once)."""
    wrap = (1 << _offset_bits(offset_bits)) - 1
    delineator = StreamDelineator()
    outputs = []
    for piece in items:
        block_start = delineator.stream_offset          # the stream offset of block[0]
        _, result = delineator.feed(piece)
        outputs += [Frame(**dict(record, offset=(block_start + record["offset"]) & wrap))
                    for record in result.frames]
        if result.error:
            outputs.append(Error(result.error, delineator.error_stream_offset & wrap))
            break
    return outputs


def units(piece: bytes) -> int:
    return len(piece)


# -- random streams ------------------------------------------------------------------

#: how a stream is damaged (at most once: the first error ends delineation)
DAMAGE = ("header", "pflags", "reserved", "flags_len", "sof", "eof", "short", "any", "prefix")
#: how the stream is cut into beats
CUTS = ("full", "random", "tiny", "mostly_full")


def _frame(rng: random.Random) -> bytes:
    """A valid FCIP frame: mostly short FC frames (many frames per simulated cycle), now and
    then a special frame, a minimum-size one or a maximum-size one."""
    roll = rng.random()
    if roll < 0.1:
        words = rng.choice([fcip.MIN_FRAME_WORDS, fcip.MIN_FRAME_WORDS + 1, rng.randint(15, 40),
                            rng.randint(15, 40), fcip.MAX_FRAME_WORDS])
        return fcip.encapsulate(rng.randbytes(words * WORD - fcip.OVERHEAD), special=True)
    if roll < 0.12:
        size = MAX_PAYLOAD                                   # 544 words, the longest FC frame
    elif roll < 0.25:
        size = 0                                             # 16 words, the shortest FC frame
    else:
        size = rng.randint(1, 80)
    header = {f.name: rng.getrandbits(8 * f.width) for f in FC_HEADER.fields}
    return fcip.build_fcip_frame(header, rng.randbytes(size), sof=rng.choice(list(Sof)),
                                 eof=rng.choice(list(Eof)), ts_seconds=rng.getrandbits(32))


def _damage(rng: random.Random, frame: bytes, kind: str) -> bytes:
    """``frame`` damaged by ``kind``; ``pflags``/``reserved``/``flags_len`` rewrite the field
    *and* its complement so the later checks (special, reserved, CRCV, length) are reached."""
    data = bytearray(frame)
    if kind == "header":                                     # mostly the checked bytes 0..15
        checked = FCIP_HEADER.offsets["ts_seconds"]
        data[rng.randrange(checked if rng.random() < 0.8 else HEADER_SIZE)] ^= rng.randint(1, 255)
    elif kind == "any":
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    elif kind in ("sof", "eof"):
        at = HEADER_SIZE if kind == "sof" else len(data) - WORD
        if rng.random() < 0.5:
            data[at + rng.randrange(WORD)] ^= rng.randint(1, 255)
        else:                                                # well formed, unknown code
            data[at:at + WORD] = delimiter_word(rng.choice([0x00, 0x2A, 0x43, 0xFF]))
    elif kind == "short":                                    # 15 words: no room for FC CRC
        data = bytearray(fcip.encapsulate(rng.randbytes(FC_HEADER.size)))
    else:
        width = FCIP_HEADER.by_name[kind].width
        if kind == "flags_len":
            crcv = fcip.FLAG_CRCV << _FLAGS_LEN_BITS["flags"][0]
            value = rng.choice([crcv | len(frame) // WORD, rng.randint(0, 14),
                                rng.randint(546, 1023), rng.getrandbits(16),
                                len(frame) // WORD + rng.choice([-1, 1])])
        else:
            value = rng.choice([1, 0x80, 0x81, rng.getrandbits(8)])
        at, at_c = FCIP_HEADER.offsets[kind], FCIP_HEADER.offsets[kind + "_c"]
        data[at:at + width] = value.to_bytes(width, "big")
        data[at_c:at_c + width] = (~value & ((1 << 8 * width) - 1)).to_bytes(width, "big")
    return bytes(data)


def _cut(rng: random.Random, stream_bytes: bytes, how: str) -> list[bytes]:
    pieces, at = [], 0
    while at < len(stream_bytes):
        if how == "full":
            size = BEAT_BYTES
        elif how == "tiny":
            size = rng.randint(1, 3)
        elif how == "mostly_full":
            size = BEAT_BYTES if rng.random() < 0.9 else rng.randint(1, BEAT_BYTES)
        else:
            size = rng.randint(1, BEAT_BYTES)
        pieces.append(stream_bytes[at:at + size])
        at += size
    return pieces


def vectors(rng: random.Random, n: int, offset_bits: int = 64, damage: str | None = "random",
            cut: str | None = None) -> list[bytes]:
    """``n`` beats of a stream of valid frames, cut at random (``cut``: one of CUTS, random if
    None); half the time one frame is damaged (``damage``: one of DAMAGE, ``"random"`` or
    None for a clean stream). The stream ends wherever the ``n`` beats do, so its last frame
    is usually incomplete."""
    how = cut or rng.choice(CUTS)
    if damage == "random":
        damage = rng.choice(DAMAGE) if rng.random() < 0.5 else None
    frames, size = [], 0
    while size < n * BEAT_BYTES:
        frames.append(_frame(rng))
        size += len(frames[-1])
    if damage == "prefix":
        garbage = [b"\x01\x01\xfe", bytes(30), rng.randbytes(rng.randint(1, 40))]
        frames.insert(0, rng.choice(garbage))
    elif damage:
        victim = rng.randrange(len(frames))
        frames[victim] = _damage(rng, frames[victim], damage)
    return _cut(rng, b"".join(frames), how)[:n]


def rate_vectors(rng: random.Random, n: int, offset_bits: int = 64) -> list[bytes]:
    """Steady state for the line rate (tools/hdl_export.py): clean frames in full 8-byte beats."""
    return vectors(rng, n, offset_bits, damage=None, cut="full")
