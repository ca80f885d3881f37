"""Differential bitmap unit: mark extents, OR-merge a second bitmap word by word, popcount.

The hardware form of ``datapath.kernels.bitmap.DifferentialBitmap``: one bit per track of a
volume of ``volume_bytes`` in tracks of ``track_size`` bytes, held in a memory of 64-bit
words (bit ``t % 64`` of word ``t // 64`` is track ``t``, as the kernel's ``words``).
``block_size`` is the size of an extent's blocks. All three are parameters.

Commands on ``i`` (:data:`COMMAND`, 99 bits: ``op`` in [0:3], then the arguments):

==========  =============================  ================================================
op          arguments                      effect
==========  =============================  ================================================
MARK        ``lba`` (64), ``blocks`` (32)  dirty the tracks under the extent, as
                                           ``mark_extents([lba], [blocks], block_size)``;
                                           refused (nothing marked) if it reaches past the
                                           volume's whole blocks; zero blocks mark nothing
MERGE_WORD  ``index`` (32), ``bits`` (64)  OR ``bits`` into word ``index``: one word of a
                                           second bitmap; refused if a set bit lies past
                                           ``track_count`` (a zero word anywhere is a no-op)
READ_WORD   ``index`` (32)                 emit the word; refused past the last word
POPCOUNT    -                              emit the number of dirty tracks
CLEAR       -                              clean every track
==========  =============================  ================================================

Results on ``o`` (:data:`RESULT`, 98 bits: ``tag``, ``index``, ``value``): COUNT (value =
dirty tracks), WORD (index, value = the word), REFUSED (value = the refused opcode; an
unknown opcode is refused too). Commands that are not refused and emit nothing (MARK,
MERGE_WORD, CLEAR) give no beat.

Timing. A MARK takes one cycle per word it touches (the middle words are set whole), a
MERGE_WORD one cycle, CLEAR one cycle per word of the bitmap: back to back at full rate.
The count of dirty tracks is kept incrementally (each write adds the popcount of the bits
it newly set), so POPCOUNT does not scan: it answers 8 cycles after it is taken (when
nothing is ahead of it), whatever the bitmap's size. Every command goes through:

* C: the accepted command, with the extent's last block and range check already added up
  (each with one carry chain: see :func:`add3`);
* W, the walker: expands the command into word operations, one a cycle, and presents the
  word address to the memory;
* S1: the old word is there (the read port is transparent to the write port, so a write
  to the same word one cycle earlier is seen); write ``old | mask``, keep ``mask & ~old``;
* S2, S3: popcount of those fresh bits (16-bit groups, then their sum);
* S4: add it to the count; an answer is registered into ``o``.

Only one answer is in flight at a time (an answer is issued only when ``o`` and the
pipeline hold none), so ``i.ready`` and the pipeline never depend on ``o.ready`` in the same
cycle (every output is a register); the price is one answering command (POPCOUNT,
READ_WORD, a refusal) per 6 cycles at most, which is fine for a unit whose job is marking.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from datapath.reference.bitmap import DifferentialBitmap
from hdl_models.cosim import Codec

NAME = "bitmap"
# The software kernel's sizes: a 1 TiB volume in 64 KiB tracks, 512-byte blocks:
# 16 Mi tracks, 256 Ki words, 2 MiB of bitmap.
PARAMS = {"volume_bytes": 1 << 40, "track_size": 65536, "block_size": 512}
# 64 Ki tracks (a 4 GiB volume): 1024 words of 64 bits = 8 KiB = 16 of the 32 block RAMs.
ICE40 = {"volume_bytes": 1 << 32, "track_size": 65536, "block_size": 512}
ICE40_NOTE = ("a 1 TiB volume at 64 KiB tracks is 16 Mi bits (2 MiB); an HX8K has 16 KiB of "
              "block RAM, so the iCE40 build holds 64 Ki tracks (a 4 GiB volume) in 16 BRAMs")
RATE_UNIT = "items"

WORD_BITS = 64
GROUP_BITS = 16       # popcount first per group, then the groups' sum
ALL_ONES = (1 << WORD_BITS) - 1


class Op(enum.IntEnum):
    MARK = 0
    MERGE_WORD = 1
    READ_WORD = 2
    POPCOUNT = 3
    CLEAR = 4


class Tag(enum.IntEnum):
    COUNT = 0
    WORD = 1
    REFUSED = 2


COMMAND = data.StructLayout({
    "op": 3,
    "arg": data.UnionLayout({
        "extent": data.StructLayout({"lba": 64, "blocks": 32}),
        "word": data.StructLayout({"bits": 64, "index": 32}),
    }),
})
RESULT = data.StructLayout({"tag": 2, "index": 32, "value": 64})


# -- items -----------------------------------------------------------------

@dataclass(frozen=True)
class Mark:
    lba: int
    blocks: int


@dataclass(frozen=True)
class MergeWord:
    index: int
    bits: int


@dataclass(frozen=True)
class ReadWord:
    index: int


@dataclass(frozen=True)
class Popcount:
    pass


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Count:
    tracks: int


@dataclass(frozen=True)
class Word:
    index: int
    bits: int


@dataclass(frozen=True)
class Refused:
    op: int          # an Op, or the raw number of an unknown opcode


# -- geometry ----------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    volume_bytes: int
    track_size: int
    block_size: int

    def __post_init__(self):
        DifferentialBitmap(self.volume_bytes, self.track_size)   # its checks, its messages
        size = self.block_size
        if not isinstance(size, int) or size <= 0 or size & (size - 1) or size > 1 << 30:
            raise ValueError(f"block_size: {size!r} is not a power of two in 1..2**30")

    @property
    def track_count(self) -> int:
        return -(-self.volume_bytes // self.track_size)

    @property
    def word_count(self) -> int:
        return -(-self.track_count // WORD_BITS)

    @property
    def limit_blocks(self) -> int:
        """Whole blocks in the volume: an extent must end at or before this one."""
        return self.volume_bytes // self.block_size

    @property
    def tail_mask(self) -> int:
        """The bits of the last word that are tracks."""
        tail = self.track_count % WORD_BITS
        return (1 << tail) - 1 if tail else ALL_ONES


# -- hardware ----------------------------------------------------------------

class Kind(enum.IntEnum):
    """What one issued word operation does (the answering kinds come last: see answers())."""
    OR = 0          # word |= mask, count += newly set bits
    CLEAR = 1       # word = 0, count = 0
    READ = 2        # answer the word
    COUNT = 3       # answer the count
    REFUSE = 4      # answer "refused"


def popcount_tree(bits):
    """Number of set bits, as a balanced tree of adders (depth log2 of the width)."""
    terms = [bits[n] for n in range(len(bits))]
    while len(terms) > 1:
        pairs = [a + b for a, b in zip(terms[0::2], terms[1::2])]
        terms = pairs + terms[len(pairs) * 2:]
    return terms[0]


def add3(a, b, k: int, width: int):
    """``a + b + k`` (``k`` a constant) modulo ``2**width`` with one carry chain, not two:
    a carry-save layer (one LUT per bit) turns the three terms into two."""
    k = Const(k, width)
    sums = a ^ b ^ k
    carries = (a & b) | (a & k) | (b & k)
    return (sums + (carries << 1))[:width]


def _thermometer(index, above: bool):
    """64-bit mask: bit n set when n >= index (``above``) or n <= index. A table of
    constants, so plain LUTs (64 comparators would each become a carry chain)."""
    masks = [ALL_ONES << n & ALL_ONES if above else ALL_ONES >> (WORD_BITS - 1 - n)
             for n in range(WORD_BITS)]
    return Array(Const(mask, WORD_BITS) for mask in masks)[index]


def _answers(valid, kind):
    """An operation that answers (READ, COUNT, REFUSE: the last kinds)."""
    return valid & (kind >= Kind.READ)


class BitmapUnit(wiring.Component):
    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        super().__init__({"i": In(stream.Signature(COMMAND.size)),
                          "o": Out(stream.Signature(RESULT.size))})

    def _widths(self) -> tuple[int, int, int]:
        """Bits of a word address, a track number, and an lba or block count (one that
        needs more bits than this is past the volume)."""
        g = self.geometry
        return (max(1, (g.word_count - 1).bit_length()), g.track_count.bit_length(),
                max(1, g.limit_blocks.bit_length()))

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        addr_bits, track_bits, lba_bits = self._widths()

        m.submodules.words = words = Memory(shape=WORD_BITS, depth=g.word_count, init=[])
        write = words.write_port()
        read = words.read_port(transparent_for=(write,))
        r = SimpleNamespace()            # the registers (each named as its attribute)
        r.count = Signal(track_bits)

        # C: the accepted command, with its extent's end added up
        r.c_valid = Signal()
        r.c_op = Signal(3)
        r.c_wide = Signal(WORD_BITS)       # lba, or the bits to merge
        r.c_narrow = Signal(32)            # blocks, or the word index
        r.c_last_block = Signal(lba_bits + 1)  # lba + blocks - 1
        r.c_past = Signal()                # the extent reaches past the volume
        r.c_narrow_zero = Signal()         # no blocks (or word 0)
        r.c_wide_zero = Signal()           # no bits to merge
        r.c_index_high = Signal()          # the word index has bits above the address's
        # W, the walker: the command being expanded into word operations, one a cycle
        r.w_valid = Signal()
        r.w_kind = Signal(3)
        r.w_addr = Signal(addr_bits)
        r.w_last = Signal(addr_bits)
        r.w_at_last = Signal()             # w_addr == w_last
        r.w_mask = Signal(WORD_BITS)       # mask of the current word, before the last-word cut
        r.w_last_mask = Signal(WORD_BITS)
        r.w_refused = Signal(3)
        # S1..S4: the read-modify-write pipeline (valid and kind move along it)
        r.s_valid = [Signal(name=f"s{n}_valid") for n in range(1, 5)]
        r.s_kind = [Signal(3, name=f"s{n}_kind") for n in range(1, 5)]
        r.s1_addr = Signal(addr_bits)
        r.s1_mask = Signal(WORD_BITS)
        r.s2_fresh = Signal(WORD_BITS)     # bits this write newly set
        r.s3_groups = [Signal(range(GROUP_BITS + 1), name=f"s3_group{n}")
                       for n in range(WORD_BITS // GROUP_BITS)]
        r.s4_delta = Signal(range(WORD_BITS + 1))  # how many
        # the one answer in flight: its word index and value (the word or the refused opcode)
        r.out_index = Signal(addr_bits)
        r.out_value = Signal(WORD_BITS)

        answer_pending = self.o.valid
        for valid, kind in zip(r.s_valid, r.s_kind):
            answer_pending |= _answers(valid, kind)
        r.issue = Signal()                 # W hands a word operation to S1
        r.w_free = Signal()                # W takes a command from C
        r.c_take = Signal()
        m.d.comb += [
            r.issue.eq(r.w_valid & ~(_answers(1, r.w_kind) & answer_pending)),
            r.w_free.eq(~r.w_valid | (r.issue & r.w_at_last)),
            r.c_take.eq(r.c_valid & r.w_free),
            self.i.ready.eq(~r.c_valid | r.c_take),
            read.addr.eq(r.w_addr),
        ]
        self._accept(m, r)
        self._issue(m, r)
        self._decode(m, r)
        self._read_modify_write(m, r, read, write)
        self._count_and_answer(m, r)
        return m

    def _accept(self, m: Module, r) -> None:
        """Accept a command into C (only the extent's adders here)."""
        g = self.geometry
        addr_bits, _, lba_bits = self._widths()
        cmd = COMMAND(self.i.payload)
        extent = cmd.arg.extent
        lba, blocks = extent.lba[:lba_bits], extent.blocks[:lba_bits]
        too_big = (extent.lba[lba_bits:] != 0) | (extent.blocks[lba_bits:] != 0)
        # lba + blocks > limit  <=>  lba + blocks + (2**lba_bits - 1 - limit) >= 2**lba_bits
        over = add3(lba, blocks, (1 << lba_bits) - 1 - g.limit_blocks, lba_bits + 2)
        with m.If(r.c_take):
            m.d.sync += r.c_valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                r.c_valid.eq(1), r.c_op.eq(cmd.op),
                r.c_wide.eq(extent.lba), r.c_narrow.eq(extent.blocks),
                r.c_last_block.eq(add3(lba, blocks, (1 << lba_bits + 1) - 1, lba_bits + 1)),
                r.c_past.eq(too_big | (over[lba_bits:] != 0)),
                r.c_narrow_zero.eq(extent.blocks == 0),
                r.c_wide_zero.eq(extent.lba == 0),
                r.c_index_high.eq(extent.blocks[addr_bits:] != 0),
            ]

    def _issue(self, m: Module, r) -> None:
        """Issue from W: one word operation per cycle."""
        ones = Const(ALL_ONES, WORD_BITS)
        m.d.sync += r.s_valid[0].eq(r.issue)
        for n in range(1, len(r.s_valid)):
            m.d.sync += [r.s_valid[n].eq(r.s_valid[n - 1]), r.s_kind[n].eq(r.s_kind[n - 1])]
        with m.If(r.issue):
            m.d.sync += [r.s_kind[0].eq(r.w_kind), r.s1_addr.eq(r.w_addr),
                         r.s1_mask.eq(r.w_mask & Mux(r.w_at_last, r.w_last_mask, ones))]
            with m.If(r.w_at_last):
                m.d.sync += r.w_valid.eq(0)
            with m.Else():
                m.d.sync += [r.w_addr.eq(r.w_addr + 1), r.w_mask.eq(ones),
                             r.w_at_last.eq(r.w_addr + 1 == r.w_last)]
            with m.If(_answers(1, r.w_kind)):
                m.d.sync += [r.out_index.eq(r.w_addr), r.out_value.eq(r.w_refused)]

    def _decode(self, m: Module, r) -> None:
        """Decode the command in C into W's first word operation and its range."""
        g = self.geometry
        addr_bits, track_bits, lba_bits = self._widths()
        first_track = Signal(track_bits)
        last_track = Signal(track_bits)
        c_lba = r.c_wide[:lba_bits]
        shift = g.block_size.bit_length() - g.track_size.bit_length()
        if shift >= 0:      # blocks are tracks or bigger: a block covers 2**shift tracks
            m.d.comb += [first_track.eq(c_lba << shift),
                         last_track.eq(Cat(Const((1 << shift) - 1, shift), r.c_last_block))]
        else:
            m.d.comb += [first_track.eq(c_lba >> -shift),
                         last_track.eq(r.c_last_block >> -shift)]
        first_word, last_word = first_track[6:], last_track[6:]

        # (no wide comparators here: they would be long carry chains on the decode path)
        index_in_range = ~r.c_index_high
        if g.word_count < 1 << addr_bits:
            index_in_range &= r.c_narrow[:addr_bits] < g.word_count
        merge_refused = ~index_in_range & ~r.c_wide_zero
        if g.tail_mask != ALL_ONES:
            merge_refused |= (r.c_narrow == g.word_count - 1) & ((r.c_wide & ~g.tail_mask) != 0)

        def load(kind, addr=0, last=0, at_last=1, mask=ALL_ONES, last_mask=ALL_ONES):
            m.d.sync += [r.w_valid.eq(1), r.w_kind.eq(kind), r.w_addr.eq(addr),
                         r.w_last.eq(last), r.w_at_last.eq(at_last), r.w_mask.eq(mask),
                         r.w_last_mask.eq(last_mask)]

        def refuse():
            load(Kind.REFUSE)
            m.d.sync += r.w_refused.eq(r.c_op)

        with m.If(r.c_take):
            with m.Switch(r.c_op):
                with m.Case(Op.MARK):
                    with m.If(r.c_past):
                        refuse()
                    with m.Elif(~r.c_narrow_zero):
                        load(Kind.OR, first_word, last_word, first_word == last_word,
                             _thermometer(first_track[:6], above=True),
                             _thermometer(last_track[:6], above=False))
                with m.Case(Op.MERGE_WORD):
                    with m.If(merge_refused):
                        refuse()
                    with m.Elif(index_in_range):     # (past the end with no bits: a no-op)
                        load(Kind.OR, r.c_narrow, r.c_narrow, mask=r.c_wide)
                with m.Case(Op.READ_WORD):
                    with m.If(index_in_range):
                        load(Kind.READ, r.c_narrow, r.c_narrow)
                    with m.Else():
                        refuse()
                with m.Case(Op.POPCOUNT):
                    load(Kind.COUNT)
                with m.Case(Op.CLEAR):
                    load(Kind.CLEAR, 0, g.word_count - 1, g.word_count == 1)
                with m.Default():
                    refuse()

    def _read_modify_write(self, m: Module, r, read, write) -> None:
        """S1: read-modify-write of the word; S2, S3: popcount of the bits it newly set."""
        s1_valid, s1_kind = r.s_valid[0], r.s_kind[0]
        old = read.data
        m.d.comb += [write.addr.eq(r.s1_addr),
                     write.data.eq(Mux(s1_kind == Kind.CLEAR, 0, old | r.s1_mask)),
                     write.en.eq(s1_valid & ((s1_kind == Kind.OR) | (s1_kind == Kind.CLEAR)))]
        m.d.sync += r.s2_fresh.eq(r.s1_mask & ~old)
        with m.If(s1_valid & (s1_kind == Kind.READ)):
            m.d.sync += r.out_value.eq(old)

        # -- S2, S3: popcount of the newly set bits ---------------------------------
        for n, group in enumerate(r.s3_groups):
            m.d.sync += group.eq(popcount_tree(r.s2_fresh[n * GROUP_BITS:(n + 1) * GROUP_BITS]))
        m.d.sync += r.s4_delta.eq(sum(r.s3_groups))

    def _count_and_answer(self, m: Module, r) -> None:
        """S4: the count of set bits, and the answer."""
        s4_valid, s4_kind = r.s_valid[3], r.s_kind[3]
        result = RESULT(self.o.payload)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(s4_valid):
            with m.Switch(s4_kind):
                with m.Case(Kind.OR):
                    m.d.sync += r.count.eq(r.count + r.s4_delta)
                with m.Case(Kind.CLEAR):
                    m.d.sync += r.count.eq(0)
                with m.Case(Kind.COUNT):
                    m.d.sync += [self.o.valid.eq(1), result.tag.eq(Tag.COUNT),
                                 result.index.eq(0), result.value.eq(r.count)]
                with m.Case(Kind.READ):
                    m.d.sync += [self.o.valid.eq(1), result.tag.eq(Tag.WORD),
                                 result.index.eq(r.out_index), result.value.eq(r.out_value)]
                with m.Case(Kind.REFUSE):
                    m.d.sync += [self.o.valid.eq(1), result.tag.eq(Tag.REFUSED),
                                 result.index.eq(0), result.value.eq(r.out_value)]


def build(volume_bytes: int, track_size: int, block_size: int) -> BitmapUnit:
    return BitmapUnit(Geometry(volume_bytes, track_size, block_size))


# -- codec -------------------------------------------------------------------

def _field(name: str, value, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name}: {value!r} is not an unsigned {bits}-bit integer")
    return value


def encode(item) -> int:
    if isinstance(item, Mark):
        arg = {"extent": {"lba": _field("lba", item.lba, 64),
                          "blocks": _field("blocks", item.blocks, 32)}}
        op = Op.MARK
    elif isinstance(item, (MergeWord, ReadWord)):
        bits = _field("bits", item.bits, 64) if isinstance(item, MergeWord) else 0
        arg = {"word": {"index": _field("index", item.index, 32), "bits": bits}}
        op = Op.MERGE_WORD if isinstance(item, MergeWord) else Op.READ_WORD
    elif isinstance(item, (Popcount, Clear)):
        arg, op = {}, Op.POPCOUNT if isinstance(item, Popcount) else Op.CLEAR
    else:
        raise TypeError(f"item: {item!r} is not a bitmap command")
    return COMMAND.const({"op": op, "arg": arg}).as_bits()


def decode(payload: int):
    result = RESULT.from_bits(payload)
    tag, value = int(result.tag), int(result.value)
    if tag == Tag.COUNT:
        return Count(value)
    if tag == Tag.WORD:
        return Word(int(result.index), value)
    if tag == Tag.REFUSED:
        return Refused(Op(value) if value in list(Op) else value)
    raise ValueError(f"tag: {tag} is not a result tag")


def codec(volume_bytes: int, track_size: int, block_size: int) -> Codec:
    return Codec(encode, decode)


# -- reference ---------------------------------------------------------------

def reference(items, volume_bytes: int, track_size: int, block_size: int) -> list:
    """The answers of ``datapath.reference.bitmap.DifferentialBitmap`` to ``items``."""
    bitmap = DifferentialBitmap(volume_bytes, track_size)
    out = []
    for item in items:
        if isinstance(item, Mark):
            try:
                bitmap.mark_extents([item.lba], [item.blocks], block_size)
            except ValueError:
                out.append(Refused(Op.MARK))
        elif isinstance(item, MergeWord):
            # the second bitmap: just this word's tracks (mark_runs refuses any past the end)
            other = DifferentialBitmap(volume_bytes, track_size)
            tracks = [WORD_BITS * item.index + n for n in range(WORD_BITS) if item.bits >> n & 1]
            try:
                other.mark_runs(tracks, [1] * len(tracks))
            except ValueError:
                out.append(Refused(Op.MERGE_WORD))
            else:
                bitmap.merge(other)
        elif isinstance(item, ReadWord):
            words = bitmap.to_words()
            out.append(Word(item.index, words[item.index]) if item.index < len(words)
                       else Refused(Op.READ_WORD))
        elif isinstance(item, Popcount):
            out.append(Count(bitmap.popcount()))
        elif isinstance(item, Clear):
            bitmap.clear_range(0, bitmap.track_count)
        else:
            raise TypeError(f"item: {item!r} is not a bitmap command")
    return out


# -- vectors -----------------------------------------------------------------

def _extent(rng: random.Random, g: Geometry) -> Mark:
    """An extent from the corners (word boundaries, the whole volume, zero length, the last
    track, just past the end, sums that overflow 64 bits) or an ordinary one of a few tracks.
    Whole-volume extents are rare so that popcounts stay informative."""
    limit = g.limit_blocks
    blocks_per_track = max(1, g.track_size // g.block_size)
    boundary_track = WORD_BITS * rng.randrange(1, g.word_count) if g.word_count > 1 else 0
    boundary = boundary_track * g.track_size // g.block_size
    lba = rng.randrange(limit + 1)
    few = rng.randrange(1, 3 * blocks_per_track + 1)
    kind = rng.choices(["boundary", "whole", "zero", "last", "past", "overflow", "words", "few"],
                       [4, 1, 1, 1, 1, 1, 2, 6])[0]
    if kind == "boundary":
        lba = max(0, boundary - rng.randrange(1, 2 * blocks_per_track + 1))
        blocks = min(limit - lba, few)
    elif kind == "whole":
        lba, blocks = 0, limit
    elif kind == "zero":      # in range, at the end, past the end
        lba, blocks = rng.choice([0, lba, limit, limit + 1]), 0
    elif kind == "last":
        lba, blocks = max(0, limit - 1), min(1, limit)
    elif kind == "past":      # one block too many
        blocks = limit - lba + 1
    elif kind == "overflow":
        lba = rng.choice([(1 << 64) - 1, (1 << 64) - rng.randrange(1, 1 << 33)])
        blocks = rng.randrange(1 << 32)
    elif kind == "words":     # up to four words of tracks
        blocks = min(limit - lba, rng.randrange(4 * WORD_BITS * blocks_per_track))
    else:
        blocks = min(limit - lba, few)
    return Mark(lba, min(blocks, (1 << 32) - 1))


def _word_bits(rng: random.Random) -> int:
    sparse = rng.getrandbits(64) & rng.getrandbits(64) & rng.getrandbits(64)
    return rng.choices([ALL_ONES, 0, 1, 1 << 63, rng.getrandbits(64), sparse],
                       [1, 1, 1, 1, 2, 6])[0]


def vectors(rng: random.Random, n: int, volume_bytes: int, track_size: int,
            block_size: int) -> list:
    """``n`` commands: marks and merges (overlapping, at the last word, past the end), word
    reads, a popcount after about every third, a clear now and then."""
    g = Geometry(volume_bytes, track_size, block_size)
    last = g.word_count - 1
    items = []
    while len(items) < n:
        kind = rng.choices(["mark", "merge", "read", "popcount", "clear"], [35, 20, 8, 33, 4])[0]
        if kind == "mark":
            items.append(_extent(rng, g))
        elif kind == "merge":
            index = rng.choice([rng.randrange(g.word_count)] * 5 + [last, last + 1, (1 << 32) - 1])
            bits = _word_bits(rng)
            if index == last and rng.random() < 0.5:
                bits &= g.tail_mask          # the last word, within its tracks
            items.append(MergeWord(index, bits))
        elif kind == "read":
            items.append(ReadWord(rng.choice([rng.randrange(g.word_count), last, last + 1])))
        elif kind == "popcount":
            items.append(Popcount())
        else:
            items.append(Clear())
    return items


def units(item) -> int:
    return 1


def rate_vectors(rng, n: int, *, volume_bytes: int, track_size: int, block_size: int) -> list:
    """Steady state for the line rate (tools/hdl_export.py): host writes of 8 blocks (one
    track, one word each) marked, then one POPCOUNT."""
    blocks = volume_bytes // block_size
    marks = [Mark(rng.randrange(0, blocks - 8), 8) for _ in range(max(1, n - 1))]
    return marks + [Popcount()]
