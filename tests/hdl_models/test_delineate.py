"""The FCIP delineator (hdl_models.delineate) against the reference StreamDelineator.

Streams are built with ``datapath.frames.fcip``, cut into beats of 1..8 bytes, damaged
one field at a time, and run through the block with valid/ready toggled at random.
Every named corner case asserts that the reference really reaches it (the error code it
names, the frame sizes), so a case cannot silently stop testing what it says.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

try:
    from amaranth.sim import Simulator

    from hdl_models import cosim, delineate
    from hdl_models.delineate import Error, Frame
except ImportError:
    SKIP = "amaranth not installed: pip install .[hdl]"
else:
    SKIP = None

from datapath.frames import fcip
from datapath.frames.fc import FC_HEADER, MAX_PAYLOAD, Eof, Sof, delimiter_word
from datapath.frames.fcip import FCIP_HEADER
from datapath.kernels.delineate import DelineationError as E

HEADER = {"r_ctl": 0x06, "d_id": 0x010203, "cs_ctl": 0x00, "s_id": 0x040506, "type": 0x08,
          "f_ctl": 0x290000, "seq_id": 7, "df_ctl": 0, "seq_cnt": 1, "ox_id": 0x1234,
          "rx_id": 0xFFFF, "parameter": 0}


def fc_frame(payload: bytes = b"abcd", **header) -> bytes:
    return fcip.build_fcip_frame({**HEADER, **header}, payload)


def special_frame(words: int = fcip.MIN_FRAME_WORDS) -> bytes:
    return fcip.encapsulate(bytes(i & 0xFF for i in range(words * 4 - fcip.OVERHEAD)), special=True)


def with_field(frame: bytes, name: str, value: int, complement: bool = False) -> bytes:
    """``frame`` with encapsulation field ``name`` set (and its ``_c`` field to match)."""
    data = bytearray(frame)
    names = [(name, value)]
    if complement:
        width = FCIP_HEADER.by_name[name].width
        names.append((name + "_c", ~value & ((1 << 8 * width) - 1)))
    for field, v in names:
        at, width = FCIP_HEADER.offsets[field], FCIP_HEADER.by_name[field].width
        data[at:at + width] = v.to_bytes(width, "big")
    return bytes(data)


def with_word(frame: bytes, at: int, word: bytes) -> bytes:
    return frame[:at] + word + frame[at + 4:]


def cut(stream: bytes, rng: random.Random, sizes=range(1, 9)) -> list[bytes]:
    pieces, at = [], 0
    while at < len(stream):
        size = rng.choice(sizes)
        pieces.append(stream[at:at + size])
        at += size
    return pieces


def run(items, seed, offset_bits=64, **kw):
    params = {"offset_bits": offset_bits}
    return cosim.check(lambda: delineate.build(**params), delineate.codec(**params), items,
                       delineate.reference(items, **params), seed=seed, label="delineate", **kw)


class ReferenceAdapterTests(SynchronousTestCase):
    """delineate.reference on hand-made streams: records as written by hand, not by the HDL."""
    skip = SKIP

    def setUp(self):
        self.first = fc_frame(b"abcd")                       # 28 + 4 + 24 + 4 + 4 + 4 = 68
        self.second = special_frame()                        # 60
        self.third = fc_frame(b"xyz", f_ctl=0)               # 3 bytes + 1 fill: 68, f_ctl 1

    def test_frames_get_stream_offsets_and_their_header_fields(self):
        stream = self.first + self.second + self.third
        items = cut(stream, random.Random(1))
        first = Frame(offset=0, length=68, **HEADER, sof=Sof.I3, eof=Eof.T, special=0)
        special = Frame(offset=68, length=60, **dict.fromkeys(HEADER, 0), sof=0, eof=0, special=1)
        third = Frame(offset=128, length=68, **dict(HEADER, f_ctl=1), sof=Sof.I3, eof=Eof.T,
                      special=0)
        self.assertEqual(delineate.reference(items), [first, special, third])

    def test_an_error_is_reported_once_at_its_stream_offset_and_ends_the_output(self):
        bad = with_field(self.first, "protocol_c", 0x00)
        items = cut(self.first + self.second + bad + self.first, random.Random(2))
        out = delineate.reference(items)
        self.assertEqual(out[2:], [Error(E.BAD_COMPLEMENT, 68 + 60 + 2)])
        self.assertEqual([frame.offset for frame in out[:2]], [0, 68])

    def test_a_frame_still_arriving_gives_nothing(self):
        items = cut(self.first + self.third[:fcip.HEADER_SIZE - 1], random.Random(3))
        self.assertEqual([frame.offset for frame in delineate.reference(items)], [0])
        items = cut(self.first + self.third[:-1], random.Random(3))
        self.assertEqual([frame.offset for frame in delineate.reference(items)], [0])

    def test_offsets_wrap_at_offset_bits(self):
        frames = [special_frame(fcip.MAX_FRAME_WORDS)] * 2        # 2180 bytes each
        out = delineate.reference(cut(b"".join(frames), random.Random(4)), offset_bits=12)
        self.assertEqual([frame.offset for frame in out], [0, 2180])
        out = delineate.reference(cut(b"".join(frames * 2), random.Random(4)), offset_bits=12)
        self.assertEqual([frame.offset for frame in out], [0, 2180, 4360 - 4096, 6540 - 4096])


class CodecTests(SynchronousTestCase):
    skip = SKIP

    def test_a_beat_carries_its_bytes_first_byte_lowest_and_count_minus_one(self):
        self.assertEqual(delineate.codec().encode(b"\x01\x02"), 0x0201 | 1 << 64)
        self.assertEqual(delineate.codec().encode(bytes(range(8))) >> 64, 7)

    def test_beats_of_no_bytes_or_more_than_eight_are_refused(self):
        for bad in (b"", bytes(9), "abc"):
            with self.assertRaisesRegex(ValueError, "delineate input"):
                delineate.codec().encode(bad)

    def test_an_error_beat_decodes_to_frame_offset_plus_field_offset(self):
        layout = delineate.output_layout(64)
        raw = layout.const({"error": E.BAD_EOF, "offset": 1000, "error_at": 64}).as_value().value
        self.assertEqual(delineate.codec().decode(raw), Error(E.BAD_EOF, 1064))

    def test_offset_bits_out_of_range_is_refused(self):
        for bad in (11, 65, "64"):
            with self.assertRaisesRegex(ValueError, "offset_bits"):
                delineate.build(offset_bits=bad)


class VectorTests(SynchronousTestCase):
    """The random vectors reach the corner cases (pure Python: reference only)."""
    skip = SKIP

    def test_vectors_hit_every_error_code_and_the_frame_size_limits(self):
        codes, lengths, specials = set(), set(), 0
        for seed in range(300):
            for out in delineate.reference(delineate.vectors(random.Random(seed), 300)):
                if isinstance(out, Error):
                    codes.add(out.code)
                else:
                    lengths.add(out.length)
                    specials += out.special
        self.assertEqual(codes, set(E) - {E.OK})
        self.assertTrue({fcip.MIN_FRAME_WORDS * 4, 64, fcip.MAX_FRAME_WORDS * 4} <= lengths)
        self.assertGreater(specials, 0)

    def test_vectors_have_the_requested_count_and_beat_sizes(self):
        for cut_kind, sizes in (("full", {8}), ("tiny", {1, 2, 3})):
            items = delineate.vectors(random.Random(5), 200, cut=cut_kind, damage=None)
            self.assertEqual(len(items), 200)
            self.assertEqual({len(x) for x in items[:-1]}, sizes)
            self.assertEqual(sum(map(delineate.units, items)), sum(map(len, items)))


class CosimTests(SynchronousTestCase):
    """Hardware == reference, with back-pressure on both sides."""
    skip = SKIP

    def test_random_streams_with_random_valid_and_ready(self):
        for seed in range(8):
            rng = random.Random(seed)
            items = delineate.vectors(rng, 250)
            run(items, seed, valid_p=rng.uniform(0.3, 1.0), ready_p=rng.uniform(0.3, 1.0))

    def test_a_slow_consumer_loses_no_frame(self):
        # ready 1 cycle in 10: an output beat waits longer than the shortest frame takes to
        # arrive, so the block must stall its input instead of overwriting the output
        for seed in (20, 21):
            rng = random.Random(seed)
            stream = b"".join(fc_frame(rng.randbytes(rng.randint(0, 40))) for _ in range(20))
            result = run(cut(stream, rng, sizes=[8]), seed, valid_p=1.0, ready_p=0.1)
            self.assertEqual(len(result.outputs), 20)

    def test_every_cut_and_every_damage_kind(self):
        for n, (cut_kind, damage) in enumerate(zip(delineate.CUTS * 3, delineate.DAMAGE)):
            items = delineate.vectors(random.Random(100 + n), 120, cut=cut_kind, damage=damage)
            run(items, 100 + n, valid_p=0.6, ready_p=0.6)

    def test_each_encapsulation_check_is_reported_like_the_kernel(self):
        good = fc_frame(b"0123456789")
        short_fc = fcip.encapsulate(bytes(FC_HEADER.size))      # 15 words: no room for the CRC
        cases = {
            "protocol": (with_field(good, "protocol", 2), E.BAD_PROTOCOL),
            "version": (with_field(good, "version", 0), E.BAD_VERSION),
            "protocol_c": (with_field(good, "protocol_c", 0xFF), E.BAD_COMPLEMENT),
            "version_c": (with_field(good, "version_c", 0x01), E.BAD_COMPLEMENT),
            "protocol_specific": (good[:6] + b"\x00" + good[7:], E.BAD_PROTOCOL_SPECIFIC),
            "pflags_c": (with_field(good, "pflags_c", 0x00), E.BAD_COMPLEMENT),
            "reserved": (with_field(good, "reserved", 0x10, complement=True), E.BAD_RESERVED),
            "reserved_c": (with_field(good, "reserved_c", 0x00), E.BAD_COMPLEMENT),
            "flags_len_c": (with_field(good, "flags_len_c", 0), E.BAD_COMPLEMENT),
            "crcv": (with_field(good, "flags_len", 1 << 10 | len(good) // 4, True), E.CRCV_SET),
            "too_short": (with_field(good, "flags_len", 14, True), E.BAD_LENGTH),
            "too_long": (with_field(good, "flags_len", 546, True), E.BAD_LENGTH),
            "no_room_for_fc_crc": (short_fc, E.BAD_LENGTH),
            "sof_malformed": (with_word(good, 28, b"\x2e\x2e\xd1\xd0"), E.BAD_SOF),
            "sof_unknown": (with_word(good, 28, delimiter_word(0x2A)), E.BAD_SOF),
            "eof_malformed": (with_word(good, len(good) - 4, b"\x42\x43\xbd\xbd"), E.BAD_EOF),
            "eof_unknown": (with_word(good, len(good) - 4, delimiter_word(0x43)), E.BAD_EOF),
        }
        for n, (name, (bad, code)) in enumerate(cases.items()):
            rng = random.Random(n)
            # a frame of 68 bytes first, so the bad one starts in the middle of a beat
            stream = fc_frame() + bad + good
            items = cut(stream, rng, sizes=[8, 8, 8, rng.randint(1, 8)])
            self.assertEqual(delineate.reference(items)[-1].code, code, name)
            run(items, n, valid_p=0.7, ready_p=0.7)

    def test_garbage_before_the_first_frame(self):
        for n, prefix in enumerate([bytes(30), b"\x01\x01\xfe", b"\x01\x01\xfe\xfe\x01\x01"]):
            items = cut(prefix + fc_frame() * 2, random.Random(n))
            self.assertIsInstance(delineate.reference(items)[-1], Error)
            run(items, n)

    def test_size_limits_special_frames_and_streams_that_stop_mid_frame(self):
        longest = special_frame(fcip.MAX_FRAME_WORDS)
        longest_fc = fc_frame(bytes(MAX_PAYLOAD))
        stream = (special_frame() + fc_frame(b"") + longest + special_frame(16) + longest_fc
                  + fc_frame(b"abc") + longest[:fcip.HEADER_SIZE - 1])
        for seed, sizes in enumerate([[8], [4], range(1, 9), [1, 2, 3]]):
            items = cut(stream, random.Random(seed), sizes=sizes)
            out = delineate.reference(items)
            self.assertEqual([frame.length for frame in out], [60, 64, 2180, 64, 2176, 68])
            run(items, seed, valid_p=0.8, ready_p=0.5)
        items = cut(fc_frame() + longest[:-1], random.Random(9))
        self.assertEqual(len(delineate.reference(items)), 1)
        run(items, 9)

    def test_after_an_error_input_is_swallowed_and_nothing_more_is_said(self):
        stream = with_field(fc_frame(), "version", 7) + fc_frame() * 30
        items = cut(stream, random.Random(6))
        result = run(items, 6, valid_p=1.0, ready_p=1.0)
        self.assertEqual(len(result.outputs), 1)
        self.assertEqual(len(result.accepted_at), len(items))

    def test_small_offsets_wrap_like_the_reference(self):
        stream = (fc_frame(bytes(MAX_PAYLOAD)) * 3 + fc_frame() * 2
                  + with_field(fc_frame(), "reserved", 1))
        items = cut(stream, random.Random(7), sizes=[8])
        out = delineate.reference(items, offset_bits=12)
        self.assertEqual(out[-1], Error(E.BAD_RESERVED, (3 * 2176 + 2 * 68 + 9) % 4096))
        run(items, 7, offset_bits=12, valid_p=1.0, ready_p=0.9)


class ThroughputTests(SynchronousTestCase):
    """Eight bytes a cycle in steady state, aligned or not."""
    skip = SKIP

    def test_one_full_beat_is_taken_every_cycle(self):
        for first in (8, 4, 3):
            rng = random.Random(first)
            stream = b"".join(delineate.vectors(rng, 420, cut="full", damage=None))
            items = [stream[:first]] + cut(stream[first:], rng, sizes=[8])[:400]
            result = run(items, first, valid_p=1.0, ready_p=1.0)
            gaps = {b - a for a, b in zip(result.accepted_at, result.accepted_at[1:])}
            self.assertEqual(gaps, {1}, f"first beat of {first} bytes")
            self.assertGreater(len(result.outputs), 5)          # frames were reported meanwhile


class StreamRuleTests(SynchronousTestCase):
    skip = SKIP

    def test_the_output_holds_until_taken(self):
        dut = delineate.build()
        items = [delineate.codec().encode(x)
                 for x in cut(fc_frame() * 40, random.Random(8), sizes=[8])]
        rng = random.Random(8)
        seen = []

        async def producer(ctx):
            for payload in items:
                ctx.set(dut.i.payload, payload)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

        async def consumer(ctx):
            for _ in range(len(items) * 3):
                ctx.set(dut.o.ready, rng.random() < 0.2)
                _, _, valid, ready, payload = await ctx.tick().sample(
                    dut.o.valid, dut.o.ready, dut.o.payload)
                seen.append((valid, ready, payload))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(producer, background=True)
        sim.add_testbench(consumer)
        sim.run()
        stalls = [(now, after) for now, after in zip(seen, seen[1:]) if now[0] and not now[1]]
        self.assertGreater(len(stalls), 10)
        for (_, _, payload), (valid, _, held) in stalls:
            self.assertEqual((valid, held), (1, payload))
        self.assertEqual(sum(1 for valid, ready, _ in seen if valid and ready), 40)


