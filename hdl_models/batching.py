"""Batch packer in hardware: log entries in, BATCH datagrams out under a byte budget.

What it computes
    The core relay's batching (``rcn.core.relay``): ``plan_batches`` boundaries and
    ``pack`` datagrams, byte for byte ``logentry.build_batch(entries, group_id=0, ttl=1,
    sequence=n)`` with n = 1, 2, ... for the batches in the order they leave. The whole
    datagram is made here: the 88-byte header with its lengths, sequence and CRC32C, the
    count prefix and the entries, each padded with zeros to 8 bytes.

Input (69 bits): an entry beat or a flush
    ``data`` bytes 0..7 in bits [0:64] (byte 0, the first on the wire, in bits [0:8]),
    ``count - 1`` in [64:67], ``last`` in [67] (the entry's last beat), ``flush`` in [68].
    Only an entry's last beat may be short (``count`` is read on it alone); its bytes
    beyond ``count`` are ignored and go out as the zero padding. A flush (the other bits
    ignored) closes the open batch, like the relay's ``max_delay`` timer: ``plan_batches``
    runs on what arrived since the previous flush. A flush between the beats of an entry
    closes the batch of the entries before it; that entry starts the next one.

Output (66 bits): the datagrams as 8-byte beats
    ``data`` in [0:64] (same byte order), ``last`` in [64] on a datagram's last beat,
    ``dropped`` in [65]: a one-beat report that an entry longer than ``max_entry`` bytes
    came and was dropped (the buffer cannot hold it); reports and batches leave in the
    order their causes arrived.

When a batch closes (the same boundaries as ``plan_batches``, but as early as known)
    at an entry's last beat, if the entry would take the open batch over ``max_bytes`` or
    past ``max_entries`` (the entry starts the next batch); at once after an entry joins,
    if no further entry could (``max_entries`` reached, or less than 8 bytes of budget
    left, as with an entry that alone exceeds the budget); at a flush. The batch a stream
    leaves open at its end stays in the block until a flush or a later entry closes it.

How (one ``sync`` domain, three stages)
    *Fill*: entry beats go into a circular buffer (a ``Memory`` of 64-bit beats), padded.
    Two CRC32C registers run over them, both from zero: one over the open batch's padded
    entries including the entry in progress, one over the entry in progress alone; a
    snapshot keeps the first at the entry's start. So when an entry turns out not to fit,
    the closed batch's body CRC is the snapshot and the new batch's is the entry's own:
    no CRC is ever shifted. A closed batch (beat count, entry count, body CRC) waits in a
    one-descriptor slot. *Finish*: the CRC needs the header first, and the header (length,
    count, sequence) is known only at the close. CRC32C is linear: with ``R(s, M)`` the
    register after ``M`` from state ``s``, ``R(~0, H + B) = A^|B| R(~0, H) ^ R(0, B)``.
    The finisher runs the 96 header + prefix bytes, then advances through ``|B|`` zero
    bytes (512, 64, 8 or 1 beats a cycle, the largest that fits), and combines. *Emit*: 12 header
    beats, then the body read back from the buffer; a beat's buffer space is free once read.

Rate: a datagram's 12 + n beats (n = its padded entries / 8) leave on consecutive cycles,
one idle cycle between datagrams, so the input, without the header beats, runs at
n / (n + 13) beats per cycle when the output is always ready (0.89 for 88-byte entries in
1 KiB batches). The finisher needs at most 35 + n / 512 cycles after a close and works
while the previous batch is sent. The input pauses while a closed batch waits for the
finisher, while a full batch waits to close, and while the buffer is full; it holds a
non-full open batch and the largest entry (it must keep an entry until its end decides
where it goes). After the last input the last batch starts to leave within 40 + n / 512
cycles. ``max_entry`` is a multiple of 8, so an entry is dropped at the beat that makes it
longer. The CRC equations here are a small copy of what ``hdl_models.crc`` derives, kept
local so the two blocks stay independent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from datapath.frames import logentry
from datapath.frames.logentry import COUNT_HEADER, HEADER_SIZE, LOG_HEADER, MAX_BATCH
from datapath.reference import batching as ref
from hdl_models.cosim import Codec
from hdl_models.crc import POLYNOMIALS, equations
from hdl_models.crc import WIDTH as CRC_WIDTH

NAME = "batching"
# the core relay's BatchPolicy defaults (rcn/core/relay.py) and the largest log datagram
# (rcn/edge/config.py max_datagram): any entry the relay forwards fits the buffer
PARAMS = dict(max_bytes=65000, max_entries=256, max_entry=65000)
ICE40 = dict(max_bytes=8192, max_entries=256, max_entry=8192)
ICE40_NOTE = ("the buffer holds the open batch and the largest entry: 65000-byte batches "
              "and entries need 128 KiB, the HX8K has 16 KiB of block RAM; 8 KiB batches "
              "and entries need 2048 x 64 bits, all 32 of its SB_RAM40_4K")
RATE_UNIT = "bytes"

BEAT_BYTES = 8
HEADER_BEATS = (HEADER_SIZE + COUNT_HEADER.size) // BEAT_BYTES      # 12: header + count prefix
CRC_POLY = POLYNOMIALS["crc32c"]  # reflected
CRC_ONES = 0xFFFFFFFF
ZERO_STRIDES = (512, 64, 8, 1)   # beats of zeros the finisher can skip in one cycle

IN_LAYOUT = data.StructLayout({"data": 64, "count_m1": 3, "last": 1, "flush": 1})
OUT_LAYOUT = data.StructLayout({"data": 64, "last": 1, "dropped": 1})
IN_WIDTH = IN_LAYOUT.size        # 69
OUT_WIDTH = OUT_LAYOUT.size      # 66


# -- items --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryBeat:
    """Up to 8 bytes of an entry (8 unless ``last``); ``junk`` fills the rest of a short
    last beat on the wire, and the block must ignore it."""
    data: bytes
    last: bool = False
    junk: bytes = b""

    def __post_init__(self):
        if not 1 <= len(self.data) <= BEAT_BYTES:
            raise ValueError(f"EntryBeat.data: {len(self.data)} bytes, not 1..8")
        if not self.last and len(self.data) != BEAT_BYTES:
            raise ValueError(f"EntryBeat.data: {len(self.data)} bytes on a beat that is not "
                             f"the entry's last (only the last may be short)")
        if len(self.data) + len(self.junk) > BEAT_BYTES:
            raise ValueError(f"EntryBeat.junk: {len(self.junk)} bytes do not fit beside "
                             f"{len(self.data)} bytes of data")


@dataclass(frozen=True)
class Flush:
    """Close the open batch (the relay's ``max_delay`` timer)."""


@dataclass(frozen=True)
class BatchBeat:
    """8 bytes of a BATCH datagram; ``last`` on its last beat."""
    data: bytes
    last: bool = False


@dataclass(frozen=True)
class Dropped:
    """An entry longer than ``max_entry`` bytes was dropped (it does not fit the buffer)."""


def entry_beats(entry: bytes, junk: bytes = b"") -> list[EntryBeat]:
    """An entry (at least one byte) as input beats; ``junk`` rides in a short last beat."""
    if not entry:
        raise ValueError("entry: empty (a beat carries at least one byte)")
    cuts = range(0, len(entry), BEAT_BYTES)
    return [EntryBeat(entry[at:at + BEAT_BYTES], at + BEAT_BYTES >= len(entry),
                      junk[:BEAT_BYTES - len(entry[at:at + BEAT_BYTES])]
                      if at + BEAT_BYTES >= len(entry) else b"")
            for at in cuts]


# -- parameters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    max_bytes: int
    max_entries: int
    max_entry: int

    @classmethod
    def of(cls, max_bytes: int, max_entries: int, max_entry: int) -> "Geometry":
        if not ref.BATCH_OVERHEAD <= max_bytes <= 1 << 24:
            raise ValueError(f"max_bytes: {max_bytes} is not in {ref.BATCH_OVERHEAD}..{1 << 24}")
        if not 1 <= max_entries <= MAX_BATCH:
            raise ValueError(f"max_entries: {max_entries} is not in 1..{MAX_BATCH}")
        if not BEAT_BYTES <= max_entry <= 1 << 24 or max_entry % BEAT_BYTES:
            raise ValueError(f"max_entry: {max_entry} is not a multiple of 8 in 8..{1 << 24}")
        return cls(max_bytes, max_entries, max_entry)

    @property
    def budget_beats(self) -> int:
        """Padded entry beats a batch may hold within ``max_bytes``."""
        return (self.max_bytes - ref.BATCH_OVERHEAD) // BEAT_BYTES

    @property
    def entry_beats(self) -> int:
        return self.max_entry // BEAT_BYTES

    @property
    def depth(self) -> int:
        """Buffer beats (a power of two): a non-full open batch, the largest entry and
        room to take the beat that makes an entry too long."""
        need = max(0, self.budget_beats - 1) + self.entry_beats + 1
        return 1 << (need - 1).bit_length()

    @property
    def body_beats(self) -> int:
        """Most padded entry beats in one batch (a lone entry may exceed the budget)."""
        return max(self.budget_beats, self.entry_beats)


# -- CRC32C equations (hdl_models.crc's, as XOR masks) ----------------------------------------
def _rows(beats: int, data: bool) -> list[int]:
    """Register bit ``i`` after ``beats`` beats as the mask of what it is the XOR of
    (:func:`hdl_models.crc.equations`): over the register before (``data`` False: zero
    data) or over one beat's 64 data bits (``data`` True: from register 0)."""
    eqs = equations(CRC_POLY, BEAT_BYTES * beats)
    return [e >> CRC_WIDTH for e in eqs] if data else [e & CRC_ONES for e in eqs]


def _apply(m: Module, name: str, rows: list[int], value: Signal) -> Signal:
    """The GF(2) matrix-vector product as 32 XOR trees over ``value``'s bits, named
    (a signal, so the simulator and the netlist see each tree once)."""
    product = Signal(32, name=name)
    m.d.comb += product.eq(Cat(*[(value & Const(mask, len(value))).xor() for mask in rows]))
    return product


def _named(m: Module, name: str, value) -> Signal:
    signal = Signal(len(value), name=name)
    m.d.comb += signal.eq(value)
    return signal


_STEP_REGISTER = _rows(1, data=False)
_STEP_DATA = _rows(1, data=True)
_STRIDE_REGISTERS = {stride: _rows(stride, data=False) for stride in ZERO_STRIDES}


def _header_beats(sequence, body_beats, count, crc) -> list:
    """The 12 beats of a BATCH header and count prefix as Amaranth values: the constant
    bytes of ``build_batch``'s header, with the variable fields (big-endian) laid over."""
    template = logentry.build_entry(logentry.EntryType.BATCH, b"", group_id=0, ttl=1)
    template += bytes(COUNT_HEADER.size)
    length = Cat(Const(0, 3), body_beats + 1)[:32]          # 8-byte prefix + body beats
    fields = {LOG_HEADER.offsets["sequence"]: (sequence, 8),
              LOG_HEADER.offsets["total_length"]: (length, 4),
              LOG_HEADER.offsets["rio_length"]: (length, 4),
              LOG_HEADER.offsets["crc32c"]: (crc, 4),
              HEADER_SIZE + COUNT_HEADER.offsets["count"]: (count, 4)}
    octets = []
    at = 0
    while at < len(template):
        if at in fields:
            value, width = fields[at]
            value = Cat(value, Const(0, 8 * width))[:8 * width]
            octets += [value.word_select(width - 1 - k, 8) for k in range(width)]
            at += width
        else:
            octets.append(Const(template[at], 8))
            at += 1
    return [Cat(*octets[k:k + BEAT_BYTES]) for k in range(0, len(octets), BEAT_BYTES)]


def _select(m: Module, domain: str, target: Signal, index, values) -> None:
    """``target = values[index]`` (a mux on ``index``) in ``domain``."""
    with m.Switch(index):
        for k, value in enumerate(values):
            with m.Case(k):
                m.d[domain] += target.eq(value)


# -- the block ------------------------------------------------------------------------------
class _Slot(NamedTuple):
    """A closed batch (or a dropped-entry report), from fill to finish."""
    full: Signal
    dropped: Signal
    beats: Signal
    count: Signal
    crc: Signal                 # of the body


class _Finished(NamedTuple):
    """A batch with its sequence and whole CRC (or a dropped-entry report), to emit."""
    done: Signal
    dropped: Signal
    sequence: Signal
    beats: Signal
    count: Signal
    crc: Signal


class BatchPacker(wiring.Component):
    """See the module docstring."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        super().__init__({"i": In(stream.Signature(IN_WIDTH)),
                          "o": Out(stream.Signature(OUT_WIDTH))})

    def elaborate(self, platform):
        g = self.geometry
        m = Module()
        m.submodules.buffer = buffer = Memory(shape=64, depth=g.depth, init=[])
        write = buffer.write_port()
        read = buffer.read_port()
        slot, free_at = self._fill(m, write)
        finished = self._finish(m, slot)
        self._emit(m, finished, read, free_at)
        return m

    def _fill(self, m: Module, write):
        """Take entry beats into the buffer and close batches: the closed batch (a
        :class:`_Slot`) and the buffer's oldest beat not yet read out (``free_at``)."""
        g = self.geometry
        addr_bits = (g.depth - 1).bit_length()
        beat = data.View(IN_LAYOUT, self.i.payload)

        # a closed batch (or a dropped-entry report) between fill and finish
        slot_full = Signal()
        slot_dropped = Signal()
        slot_beats = Signal(range(g.body_beats + 1))
        slot_count = Signal(range(g.max_entries + 1))
        slot_crc = Signal(32)

        wp = Signal(addr_bits + 1)              # next buffer beat to write
        entry_at = Signal(addr_bits + 1)        # where the entry in progress starts
        free_at = Signal(addr_bits + 1)         # oldest beat not yet read out (emit's)
        entry_len = Signal(range(g.entry_beats + 1))    # its beats so far
        open_beats = Signal(range(g.body_beats + 1))
        open_count = Signal(range(g.max_entries + 1))
        batch_crc = Signal(32)                  # open batch's entries + the entry in progress
        committed_crc = Signal(32)              # batch_crc at the entry's start
        entry_crc = Signal(32)                  # the entry in progress alone
        dropping = Signal()                     # skipping the rest of a too-long entry

        used = Signal(addr_bits + 1)
        m.d.comb += used.eq(wp - free_at)
        full = Signal()                         # no further entry can join the open batch
        m.d.comb += full.eq((open_count != 0) & ((open_count == g.max_entries)
                                                 | (open_beats >= g.budget_beats)))
        m.d.comb += self.i.ready.eq((used != g.depth) & ~slot_full & ~full)

        lanes = _named(m, "lanes", Cat(*[
            Mux(~beat.last | (beat.count_m1 >= k), beat.data[8 * k:8 * k + 8], 0)
            for k in range(BEAT_BYTES)]))
        data_term = _apply(m, "data_term", _STEP_DATA, lanes)
        batch_next = _named(m, "batch_next",
                            _apply(m, "batch_shifted", _STEP_REGISTER, batch_crc) ^ data_term)
        entry_next = _named(m, "entry_next",
                            _apply(m, "entry_shifted", _STEP_REGISTER, entry_crc) ^ data_term)
        ends = entry_len + 1
        joins = (open_count == 0) | ((open_count < g.max_entries)
                                     & (open_beats + ends <= g.budget_beats))

        def close_open_batch():
            m.d.sync += [slot_full.eq(1), slot_dropped.eq(0), slot_beats.eq(open_beats),
                         slot_count.eq(open_count), slot_crc.eq(committed_crc),
                         open_beats.eq(0), open_count.eq(0),
                         batch_crc.eq(entry_crc), committed_crc.eq(0)]

        take = self.i.valid & self.i.ready
        with m.If(full & ~slot_full):
            close_open_batch()
        with m.Elif(take & beat.flush):
            with m.If(open_count != 0):
                close_open_batch()
        with m.Elif(take & dropping):
            m.d.sync += dropping.eq(~beat.last)
        with m.Elif(take & (entry_len == g.entry_beats)):
            # one beat too many: forget the entry, report it, skip to its end
            m.d.sync += [slot_full.eq(1), slot_dropped.eq(1), wp.eq(entry_at),
                         batch_crc.eq(committed_crc), entry_crc.eq(0), entry_len.eq(0),
                         dropping.eq(~beat.last)]
        with m.Elif(take):
            m.d.comb += [write.en.eq(1), write.addr.eq(wp[:addr_bits]), write.data.eq(lanes)]
            m.d.sync += wp.eq(wp + 1)
            with m.If(~beat.last):
                m.d.sync += [entry_len.eq(ends), batch_crc.eq(batch_next),
                             entry_crc.eq(entry_next)]
            with m.Else():
                m.d.sync += [entry_at.eq(wp + 1), entry_len.eq(0), entry_crc.eq(0)]
                with m.If(joins):
                    m.d.sync += [open_beats.eq(open_beats + ends), open_count.eq(open_count + 1),
                                 batch_crc.eq(batch_next), committed_crc.eq(batch_next)]
                with m.Else():
                    m.d.sync += [slot_full.eq(1), slot_dropped.eq(0), slot_beats.eq(open_beats),
                                 slot_count.eq(open_count), slot_crc.eq(committed_crc),
                                 open_beats.eq(ends), open_count.eq(1),
                                 batch_crc.eq(entry_next), committed_crc.eq(entry_next)]
        return _Slot(slot_full, slot_dropped, slot_beats, slot_count, slot_crc), free_at

    def _finish(self, m: Module, slot: _Slot) -> _Finished:
        """The header's CRC, advanced past the body, combined with the body's."""
        slot_full, slot_dropped, slot_beats, slot_count, slot_crc = slot
        next_sequence = Signal(64, init=1)
        fin_busy = Signal()
        fin_done = Signal()
        fin_dropped = Signal()
        fin_sequence = Signal(64)
        fin_beats = Signal.like(slot_beats)
        fin_count = Signal.like(slot_count)
        fin_crc = Signal(32)                    # the body's, then the datagram's
        fin_register = Signal(32)
        fin_step = Signal(range(HEADER_BEATS + 1))
        fin_zeros = Signal.like(slot_beats)     # zero beats still to advance through
        header_for_crc = Signal(64)
        _select(m, "comb", header_for_crc, fin_step,
                _header_beats(fin_sequence, fin_beats, fin_count, Const(0, 32)))
        header_term = _apply(m, "fin_header_term", _STEP_DATA, header_for_crc)
        skipped = {stride: _apply(m, f"fin_skip_{stride}", rows, fin_register)
                   for stride, rows in _STRIDE_REGISTERS.items()}

        with m.If(~fin_busy & ~fin_done & slot_full):
            m.d.sync += [slot_full.eq(0), fin_dropped.eq(slot_dropped), fin_beats.eq(slot_beats),
                         fin_count.eq(slot_count), fin_crc.eq(slot_crc)]
            with m.If(slot_dropped):
                m.d.sync += fin_done.eq(1)
            with m.Else():
                m.d.sync += [fin_busy.eq(1), fin_sequence.eq(next_sequence),
                             next_sequence.eq(next_sequence + 1), fin_register.eq(CRC_ONES),
                             fin_step.eq(0), fin_zeros.eq(slot_beats)]
        with m.If(fin_busy):
            with m.If(fin_step != HEADER_BEATS):
                m.d.sync += [fin_register.eq(skipped[1] ^ header_term),
                             fin_step.eq(fin_step + 1)]
            for stride in ZERO_STRIDES:                 # the largest skip that fits
                with m.Elif(fin_zeros >= stride):
                    m.d.sync += [fin_register.eq(skipped[stride]),
                                 fin_zeros.eq(fin_zeros - stride)]
            with m.Else():
                m.d.sync += [fin_crc.eq(fin_register ^ fin_crc ^ CRC_ONES),
                             fin_busy.eq(0), fin_done.eq(1)]
        return _Finished(fin_done, fin_dropped, fin_sequence, fin_beats, fin_count, fin_crc)

    def _emit(self, m: Module, finished: _Finished, read, free_at: Signal) -> None:
        """Header beats, then the body from the buffer."""
        g = self.geometry
        addr_bits = (g.depth - 1).bit_length()
        fin_done, fin_dropped, fin_sequence, fin_beats, fin_count, fin_crc = finished
        emitting = Signal()
        out_dropped = Signal()
        out_sequence = Signal(64)
        out_beats = Signal.like(fin_beats)
        out_count = Signal.like(fin_count)
        out_crc = Signal(32)
        out_index = Signal(range(HEADER_BEATS + g.body_beats + 1))
        o_valid = Signal()
        o_from_buffer = Signal()                # payload data is the buffer's read register
        o_header = Signal(64)
        o_last = Signal()
        o_dropped = Signal()
        out = data.View(OUT_LAYOUT, self.o.payload)
        m.d.comb += [self.o.valid.eq(o_valid),
                     out.data.eq(Mux(o_from_buffer, read.data, o_header)),
                     out.last.eq(o_last), out.dropped.eq(o_dropped)]
        advance = ~o_valid | self.o.ready
        m.d.comb += [read.en.eq(0), read.addr.eq(free_at[:addr_bits])]

        with m.If(~emitting & fin_done):
            m.d.sync += [fin_done.eq(0), emitting.eq(1), out_dropped.eq(fin_dropped),
                         out_sequence.eq(fin_sequence), out_beats.eq(fin_beats),
                         out_count.eq(fin_count), out_crc.eq(fin_crc), out_index.eq(0)]
        with m.If(advance):
            m.d.sync += o_valid.eq(emitting)
            with m.If(emitting & out_dropped):
                m.d.sync += [o_from_buffer.eq(0), o_header.eq(0), o_last.eq(1),
                             o_dropped.eq(1), emitting.eq(0)]
            with m.Elif(emitting & (out_index < HEADER_BEATS)):
                m.d.sync += [o_from_buffer.eq(0), o_last.eq(0), o_dropped.eq(0),
                             out_index.eq(out_index + 1)]
                _select(m, "sync", o_header, out_index[:4],
                        _header_beats(out_sequence, out_beats, out_count, out_crc))
            with m.Elif(emitting):
                last = out_index == HEADER_BEATS - 1 + out_beats
                m.d.comb += read.en.eq(1)
                m.d.sync += [o_from_buffer.eq(1), o_last.eq(last), o_dropped.eq(0),
                             free_at.eq(free_at + 1), out_index.eq(out_index + 1)]
                with m.If(last):
                    m.d.sync += emitting.eq(0)


def build(max_bytes: int, max_entries: int, max_entry: int) -> BatchPacker:
    return BatchPacker(Geometry.of(max_bytes, max_entries, max_entry))


# -- items <-> payloads -------------------------------------------------------------------
def encode(item) -> int:
    if isinstance(item, Flush):
        return 1 << 68
    if not isinstance(item, EntryBeat):
        raise TypeError(f"batching: {type(item).__name__} is not an EntryBeat or a Flush")
    lanes = int.from_bytes((item.data + item.junk).ljust(BEAT_BYTES, b"\0"), "little")
    return lanes | (len(item.data) - 1) << 64 | int(item.last) << 67


def decode(payload: int):
    if payload >> 65 & 1:
        return Dropped()
    return BatchBeat((payload & (1 << 64) - 1).to_bytes(BEAT_BYTES, "little"),
                     bool(payload >> 64 & 1))


def codec(max_bytes: int, max_entries: int, max_entry: int) -> Codec:
    return Codec(encode, decode)


# -- reference --------------------------------------------------------------------------------
def reference(items: list, max_bytes: int, max_entries: int, max_entry: int) -> list:
    """The outputs, in order: batches as ``plan_batches`` cuts each flush-delimited run of
    entries and ``pack`` builds them (``group_id=0, ttl=1``, sequences 1, 2, ...), each
    sent as soon as its boundary is known (see the module docstring), and a
    :class:`Dropped` where an entry grows past ``max_entry``."""
    g = Geometry.of(max_bytes, max_entries, max_entry)
    timed: list[tuple[int, list]] = []           # (input index the output is due at, beats)
    runs: list[tuple[list[tuple[bytes, int]], int | None]] = []
    run: list[tuple[bytes, int]] = []            # (entry, index of its last beat)
    parts: list[bytes] = []
    dropping = False
    for index, item in enumerate(items):
        if isinstance(item, Flush):
            runs.append((run, index))
            run = []
            continue
        if dropping:
            dropping = not item.last
            continue
        parts.append(item.data)
        if len(parts) > g.entry_beats:
            timed.append((index, [Dropped()]))
            parts, dropping = [], not item.last
        elif item.last:
            run.append((b"".join(parts), index))
            parts = []
    runs.append((run, None))                     # entries no flush has closed yet

    sequence = 1
    for run, flush_at in runs:
        if not run:
            continue
        lengths = [len(entry) for entry, _ in run]
        starts, ends = ref.plan_batches(lengths, max_bytes, max_entries)
        offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        blob = b"".join(entry for entry, _ in run)
        for k, (start, end) in enumerate(zip(starts, ends)):
            size = ref.BATCH_OVERHEAD + sum(ref.padded(n) for n in lengths[start:end])
            if end - start >= max_entries or size + BEAT_BYTES > max_bytes:
                due = run[end - 1][1]            # full: closed as its last entry joins
            elif k + 1 < len(starts):
                due = run[end][1]                # the next entry did not fit
            elif flush_at is not None:
                due = flush_at
            else:
                continue                         # still open
            (datagram,) = ref.pack(blob, offsets, lengths, [start], [end], [sequence],
                                   group_id=0, ttl=1)
            sequence += 1
            timed.append((due, [BatchBeat(datagram[at:at + BEAT_BYTES],
                                          at + BEAT_BYTES == len(datagram))
                                for at in range(0, len(datagram), BEAT_BYTES)]))
    timed.sort(key=lambda pair: pair[0])         # stable: same-index batches keep their order
    return [beat for _, beats in timed for beat in beats]


# -- vectors ------------------------------------------------------------------------------------
def _length(rng: random.Random, g: Geometry) -> int:
    """Entry lengths at the edges: 1 byte, around a beat, a bare log header, exactly the
    budget, one past it, the largest entry, one past it (dropped), and anything between."""
    budget = max(1, g.max_bytes - ref.BATCH_OVERHEAD)       # an entry alone fills a batch
    edges = [1, 7, 8, 9, HEADER_SIZE, budget, budget + 1, budget // 2, g.max_entry,
             g.max_entry + 1, g.max_entry + rng.randint(2, 24)]
    pick = rng.random()
    if pick < 0.3:
        return max(1, rng.choice(edges))
    if pick < 0.6:
        return rng.randint(1, max(1, min(g.max_entry, budget) // 3))
    return rng.randint(1, g.max_entry + 8)


def vectors(rng: random.Random, n: int, max_bytes: int, max_entries: int,
            max_entry: int) -> list:
    """``n`` items: entries of random bytes (junk in short last beats), flushes now and
    then (sometimes twice, sometimes inside an entry), a Flush last so that every batch
    closes -- unless the items end inside an entry, which then stays in the block."""
    g = Geometry.of(max_bytes, max_entries, max_entry)
    items: list = []
    while len(items) < n - 1:
        if rng.random() < 0.08:
            items.append(Flush())
            continue
        entry = rng.randbytes(_length(rng, g))
        beats = entry_beats(entry, rng.randbytes(BEAT_BYTES))
        if rng.random() < 0.05 and len(beats) > 1:      # a flush between an entry's beats
            cut = rng.randint(1, len(beats) - 1)
            beats = beats[:cut] + [Flush()] + beats[cut:]
        items += beats
    return items[:n - 1] + [Flush()]


def units(item) -> int:
    return len(item.data) if isinstance(item, EntryBeat) else 0


def rate_vectors(rng, n: int, max_bytes: int, max_entries: int, max_entry: int) -> list:
    """Steady state for the line rate (tools/hdl_export.py): 512-byte entries (a 4 KiB
    write's log entry is larger; a batch of small entries is the busy case), then a flush."""
    out: list = []
    while len(out) < n:
        out += entry_beats(rng.randbytes(512))
    return out + [Flush()]
