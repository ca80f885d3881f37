"""Sequence reorder buffer in hardware: ``datapath.kernels.reorder`` as a stream block.

Input beat: ``(sequence, handle)``. Output beats, tagged with the kernel's verdict numbers:

``RELEASED`` (0, the kernel's "accepted")
    an accepted entry, sent when it leaves in sequence order: ``(RELEASED, sequence,
    handle)`` for every sequence of the contiguous run from ``next_expected``, as soon as
    the run allows. Acceptance itself sends nothing: a handle comes back once, released
    or refused (or not yet, while its entry waits for a gap to fill).
``APPLIED_DUPLICATE`` (1), ``BUFFERED_DUPLICATE`` (2), ``BEYOND_WINDOW`` (3)
    the entry is refused, with its sequence and handle, exactly as the kernel's verdicts.

Beats leave in the order of the reference adapter (:func:`reference`): an input's refusal,
or the run it completes, before anything of the next input.

Sequences and the window
    The block keeps ``seq_bits`` of a sequence and measures ``ahead = (sequence -
    next_expected) mod 2**seq_bits`` as the kernel does mod 2**64: ``ahead < slots`` is
    in the window, ``ahead >= 2**(seq_bits-1)`` already applied, anything else beyond.
    With ``seq_bits == 64`` that is the kernel's rule exactly. With fewer bits it agrees
    with the kernel (and :func:`reference`, which works in uint64) while every sequence
    lies within ``[next_expected - 2**(seq_bits-1), next_expected + 2**(seq_bits-1))`` of
    the ``next_expected`` it meets: a sender never that far ahead or behind. The tests'
    vectors keep to that span and cross multiples of 2**seq_bits.

Slots
    One memory word per slot, ``slot = sequence mod slots``: the handle and a *lap bit*,
    bit ``log2(slots)`` of the sequence last written there. A slot is full when its lap
    bit equals that of the window's sequence for the slot; releasing a sequence moves
    the window past it, which flips the slot's expected lap, so a release needs no
    write and the only bookkeeping outside the memory is ``next_expected`` and a count.
    Every accepted entry is written, even one released at once, so that its slot reads
    empty for the next lap. Reset returns ``next_expected`` and the count to their
    initial values but not the block RAM: the block starts from its initial memory
    contents (as the FPGA is configured), not from a reset in mid-stream.

Timing (one ``sync`` domain, registered ``o``)
    Stage 0 takes an input beat and reads its slot; stage 1 classifies it and writes the
    slot. Inserts go at one per cycle, in order or not, and so do refusals. An in-order
    entry leaves at once; if other entries are buffered, input pauses while the run
    streams out, one handle per cycle from the memory (reads run one slot ahead): a run
    of n holds input for n + 1 cycles, n + 2 if it stops at a gap (reading the empty
    slot), none if it ends because nothing else is buffered.
"""

from __future__ import annotations

import enum
import random
from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from datapath.reference import reorder as ref
from hdl_models.cosim import Codec

NAME = "reorder"
# the receiver's window (rcn/edge/config.py: [receiver] window = 16384), the kernel's uint64
# sequences and int64 handles (non-negative here: the receiver counts them from 0)
PARAMS = dict(slots=16384, seq_bits=64, handle_bits=64, first_sequence=1)
ICE40 = dict(slots=4096, seq_bits=64, handle_bits=15, first_sequence=1)
ICE40_NOTE = ("16384 slots of a 64-bit handle are 1 Mbit, 8x the HX8K's 32 block RAMs; "
              "the iCE40 build has 4096 slots of a 15-bit handle (an index into a pending "
              "table), one 16-bit word per slot with the lap bit: 16 of the 32 block RAMs")
RATE_UNIT = "items"

SEQUENCE_MODULUS = 1 << 64
MAX_SEQ_BITS = 64
MAX_HANDLE_BITS = 64


class Tag(enum.IntEnum):
    RELEASED = ref.ACCEPTED
    APPLIED_DUPLICATE = ref.APPLIED_DUPLICATE
    BUFFERED_DUPLICATE = ref.BUFFERED_DUPLICATE
    BEYOND_WINDOW = ref.BEYOND_WINDOW


TAG_BITS = 2


class Entry(NamedTuple):
    """An input item: a log entry's sequence (uint64) and the caller's handle for it."""
    sequence: int
    handle: int


class Beat(NamedTuple):
    """An output item: ``tag`` (:class:`Tag`), the sequence (its low ``seq_bits``), the handle."""
    tag: Tag
    sequence: int
    handle: int


def _check_params(slots: int, seq_bits: int, handle_bits: int, first_sequence: int) -> int:
    """``log2(slots)`` if the parameters make a block; else a ``ValueError`` naming the bad one."""
    for name, value in (("slots", slots), ("seq_bits", seq_bits), ("handle_bits", handle_bits),
                        ("first_sequence", first_sequence)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if slots < 2 or slots & (slots - 1):
        raise ValueError(f"slots: {slots} is not a power of two >= 2")
    index_bits = slots.bit_length() - 1
    if not index_bits < seq_bits <= MAX_SEQ_BITS:
        # the window must fit in half the sequence space, and the lap bit must exist
        raise ValueError(f"seq_bits: {seq_bits} not in {index_bits + 1}..{MAX_SEQ_BITS} "
                         f"(more than log2(slots) = {index_bits})")
    if not 1 <= handle_bits <= MAX_HANDLE_BITS:
        raise ValueError(f"handle_bits: {handle_bits} not in 1..{MAX_HANDLE_BITS}")
    if not 0 <= first_sequence < SEQUENCE_MODULUS:
        raise ValueError(f"first_sequence: {first_sequence} is not a uint64 sequence")
    return index_bits


class ReorderBlock(wiring.Component):
    """The block (see the module doc); ``i``: sequence | handle << seq_bits,
    ``o``: sequence | handle << seq_bits | tag << (seq_bits + handle_bits)."""

    def __init__(self, slots: int, seq_bits: int, handle_bits: int, first_sequence: int):
        self.index_bits = _check_params(slots, seq_bits, handle_bits, first_sequence)
        self.slots = slots
        self.seq_bits = seq_bits
        self.handle_bits = handle_bits
        self.first_sequence = first_sequence % (1 << seq_bits)
        super().__init__({
            "i": In(stream.Signature(seq_bits + handle_bits)),
            "o": Out(stream.Signature(seq_bits + handle_bits + TAG_BITS)),
        })

    def _initial_laps(self) -> list[int]:
        """Memory contents that read empty: each slot's lap bit is the opposite of its
        window sequence's (the window is ``[first_sequence, first_sequence + slots)``)."""
        first, mask, k = self.first_sequence, self.slots - 1, self.index_bits
        return [((((first + ((slot - first) & mask)) >> k) & 1) ^ 1) << self.handle_bits
                for slot in range(self.slots)]

    def _slot_memory(self, m: Module):
        """The slots (word: handle | lap << handle_bits); its write and read ports."""
        m.submodules.slots = slots = Memory(shape=unsigned(self.handle_bits + 1),
                                            depth=self.slots, init=self._initial_laps())
        write = slots.write_port()
        # transparent: an insert right behind a write to its slot sees the write
        read = slots.read_port(transparent_for=(write,))
        return write, read

    def _output(self, m: Module):
        """The output register: whether it can take a beat, and ``emit(tag, sequence,
        handle)``, which loads one."""
        o_valid = Signal()
        o_payload = Signal(self.seq_bits + self.handle_bits + TAG_BITS)
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_payload)]
        can_emit = ~o_valid | self.o.ready

        def emit(tag, sequence, handle):
            m.d.sync += [o_valid.eq(1), o_payload.eq(Cat(sequence, handle, Const(tag, TAG_BITS)))]

        return o_valid, can_emit, emit

    def elaborate(self, platform):
        m = Module()
        sb, hb, k = self.seq_bits, self.handle_bits, self.index_bits
        write, read = self._slot_memory(m)
        slot_handle, slot_lap = read.data[:hb], read.data[hb]

        next_seq = Signal(sb, init=self.first_sequence)
        buffered = Signal(range(self.slots + 1))     # accepted out of order, not yet released
        running = Signal()                           # streaming a run out of the memory

        # stage 1: an input beat whose slot is on read.data
        s1_valid = Signal()
        s1_seq = Signal(sb)
        s1_handle = Signal(hb)
        o_valid, can_emit, emit = self._output(m)

        # The window test is a seq_bits-wide subtraction: stage 0 does it against both
        # values next_expected can have when the beat reaches stage 1 (as now, or one on
        # if stage 1 releases an in-order entry this cycle; no input is taken during a
        # run) and stage 1 picks one, so the carry chain is off stage 1's paths.
        in_seq, in_handle = self.i.payload[:sb], self.i.payload[sb:]

        def classify(ahead):
            return Cat(ahead == 0, ahead[k:] == 0, ahead[sb - 1])   # in order, in window, applied

        s1_class_now = Signal(3)
        s1_class_after = Signal(3)
        s1_next_moved = Signal()
        releases_now = Signal()                       # stage 1 moves next_expected on by one
        in_order, in_window, applied = Mux(s1_next_moved, s1_class_after, s1_class_now)
        full = slot_lap == s1_seq[k]
        # an in-order entry with others buffered: stream the run before the next input
        starts_run = in_order & (buffered != 0)

        m.d.comb += self.i.ready.eq(~running & (~s1_valid | (can_emit & ~starts_run)))
        # stage 0: read the slot of the beat being taken (stage 1 moves on whenever i.ready)
        m.d.comb += [read.addr.eq(in_seq[:k]), read.en.eq(self.i.ready)]
        with m.If(self.i.ready):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_seq.eq(in_seq), s1_handle.eq(in_handle),
                         s1_class_now.eq(classify((in_seq - next_seq)[:sb])),
                         s1_class_after.eq(classify((in_seq + ~next_seq)[:sb])),   # - next - 1
                         s1_next_moved.eq(releases_now)]

        next_index = (next_seq[:k] + 1)[:k]
        with m.If(running):
            with m.If(can_emit):
                with m.If(slot_lap == next_seq[k]):
                    emit(Tag.RELEASED, next_seq, slot_handle)
                    m.d.sync += [next_seq.eq(next_seq + 1), buffered.eq(buffered - 1),
                                 running.eq(buffered != 1)]
                    m.d.comb += [read.addr.eq(next_index), read.en.eq(1)]
                with m.Else():
                    m.d.sync += [o_valid.eq(0), running.eq(0)]
        with m.Elif(s1_valid & can_emit):
            with m.If(in_window & ~full):
                m.d.comb += [write.addr.eq(s1_seq[:k]), write.data.eq(Cat(s1_handle, s1_seq[k])),
                             write.en.eq(1)]
                with m.If(in_order):
                    emit(Tag.RELEASED, s1_seq, s1_handle)
                    m.d.sync += next_seq.eq(next_seq + 1)
                    m.d.comb += releases_now.eq(1)
                    with m.If(starts_run):          # i.ready is low: stage 1 empties here
                        m.d.sync += [running.eq(1), s1_valid.eq(0)]
                        m.d.comb += [read.addr.eq(next_index), read.en.eq(1)]
                with m.Else():
                    m.d.sync += [buffered.eq(buffered + 1), o_valid.eq(0)]
            with m.Elif(in_window):
                emit(Tag.BUFFERED_DUPLICATE, s1_seq, s1_handle)
            with m.Elif(applied):
                emit(Tag.APPLIED_DUPLICATE, s1_seq, s1_handle)
            with m.Else():
                emit(Tag.BEYOND_WINDOW, s1_seq, s1_handle)
        with m.Elif(can_emit):
            m.d.sync += o_valid.eq(0)
        return m


def build(**params) -> ReorderBlock:
    _check_params(**params)          # before the Elaboratable exists (else: "never used")
    return ReorderBlock(**params)


def codec(*, slots: int, seq_bits: int, handle_bits: int, first_sequence: int) -> Codec:
    """Entries to input payloads (the block keeps a sequence's low ``seq_bits``); output
    payloads to :class:`Beat`."""
    _check_params(slots, seq_bits, handle_bits, first_sequence)
    seq_mask, handle_mask = (1 << seq_bits) - 1, (1 << handle_bits) - 1

    def encode(entry) -> int:
        sequence, handle = entry
        if not (isinstance(sequence, int) and 0 <= sequence < SEQUENCE_MODULUS):
            raise ValueError(f"sequence: {sequence!r} is not a uint64 sequence")
        if not (isinstance(handle, int) and 0 <= handle <= handle_mask):
            raise ValueError(f"handle: {handle!r} does not fit in {handle_bits} bits")
        return (sequence & seq_mask) | handle << seq_bits

    def decode(payload: int) -> Beat:
        return Beat(Tag(payload >> (seq_bits + handle_bits)), payload & seq_mask,
                    (payload >> seq_bits) & handle_mask)

    return Codec(encode, decode)


def reference(items: list, *, slots: int, seq_bits: int, handle_bits: int,
              first_sequence: int) -> list[Beat]:
    """The beats the block must send: each entry into ``ReorderModel.insert``, its refusal
    if refused, then everything ``release`` gives (sequences cut to ``seq_bits``)."""
    model = ref.ReorderModel(slots, first_sequence)
    seq_mask = (1 << seq_bits) - 1
    beats = []
    for sequence, handle in items:
        [verdict] = model.insert([sequence], [handle])
        if verdict != ref.ACCEPTED:
            beats.append(Beat(Tag(verdict), sequence & seq_mask, handle))
        handles, first = model.release()
        beats.extend(Beat(Tag.RELEASED, (first + n) & seq_mask, h) for n, h in enumerate(handles))
    return beats


def vectors(rng: random.Random, n: int, *, slots: int, seq_bits: int, handle_bits: int,
            first_sequence: int) -> list[Entry]:
    """``n`` entries around a model's ``next_expected``: in order, shuffled runs that fill
    gaps, both kinds of duplicate, the window's last slot and the first beyond it, the
    applied/beyond boundary, handles 0 and all-ones. Sequences stay within the span where
    ``seq_bits`` wide arithmetic agrees with uint64 (see the module doc)."""
    model = ref.ReorderModel(slots, first_sequence)
    half = 1 << (seq_bits - 1)            # at most this far behind, less than this ahead
    max_handle = (1 << handle_bits) - 1
    pending: list[int] = []               # sequences of a shuffled run still to send
    items: list[Entry] = []

    def handle() -> int:
        return rng.choice((0, max_handle, rng.randint(0, max_handle), rng.randint(0, max_handle)))

    while len(items) < n:
        if pending:
            sequence = pending.pop()
        else:
            kind = rng.choices(
                ("in_order", "run", "ahead", "buffered", "applied", "edge", "beyond", "far"),
                weights=(6, 3, 3, 2, 2, 1, 1, 1))[0]
            if kind == "in_order":
                distance = 0
            elif kind == "run":                       # a shuffled block from next_expected
                pending = [(model.next_expected + d) % SEQUENCE_MODULUS
                           for d in range(rng.randint(2, min(slots, 12)))]
                rng.shuffle(pending)
                distance = model.ahead(pending.pop())
            elif kind == "ahead":
                distance = rng.randrange(slots)
            elif kind == "buffered" and model.buffered:
                distance = model.ahead(rng.choice(list(model.buffered)))
            elif kind == "beyond" and slots < half:   # none when the window is half the space
                distance = rng.randint(slots, half - 1)
            elif kind in ("applied", "buffered", "beyond"):
                distance = -rng.randint(1, min(half, 3 * slots))
            elif kind == "edge":                      # last in the window, first beyond
                distance = rng.choice((slots - 1, slots) if slots < half else (slots - 1,))
            else:                                     # the two ends of the span
                distance = rng.choice((-half, half - 1))
            sequence = (model.next_expected + distance) % SEQUENCE_MODULUS
        items.append(Entry(sequence, handle()))
        model.insert([sequence], [0])
        model.release()
    return items


def units(item) -> int:
    return 1


def rate_vectors(rng: random.Random, n: int, *, slots: int, seq_bits: int, handle_bits: int,
                 first_sequence: int) -> list:
    """Steady state for the line rate (tools/hdl_export.py): entries in sequence order, each
    released as it arrives."""
    mask = (1 << seq_bits) - 1
    return [Entry((first_sequence + k) & mask, rng.getrandbits(handle_bits)) for k in range(n)]
