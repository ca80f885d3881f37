"""FCIP stream delineation kernel == reference model, and agreement with datapath.frames.fcip.

Hypothesis runs derandomized (a fixed seed per test), so every run checks the
same examples. Streams are built with ``fcip.build_fcip_frame`` /
``fcip.encapsulate``, then cut, corrupted and prefixed with garbage.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.frames import fcip
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FC_HEADER, MAX_PAYLOAD, Eof, Sof
from datapath.frames.fcip import FCIP_HEADER
from datapath.kernels import delineate as kernel
from datapath.kernels.delineate import FRAME_DTYPE, DelineationError as E
from datapath.reference import delineate as reference

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
EACH = settings(max_examples=100, deadline=None, derandomize=True)
FEW = settings(max_examples=100, deadline=None, derandomize=True)
MAX_FRAMES = st.none() | st.integers(0, 8)

FC_VALUES = st.fixed_dictionaries({
    f.name: st.integers(0, (1 << 8 * f.width) - 1) for f in FC_HEADER.fields})


@st.composite
def fcip_frames(draw, max_payload: int = MAX_PAYLOAD) -> bytes:
    """One valid FCIP frame: an FC frame (random header, payload 0..max) or a special frame."""
    seed = draw(st.integers(0, 2**32 - 1))
    if draw(st.sampled_from([False] * 7 + [True])):
        words = draw(st.integers(fcip.MIN_FRAME_WORDS, min(fcip.MAX_FRAME_WORDS, 15 + max_payload // 4)))
        body = random.Random(seed).randbytes(words * 4 - fcip.OVERHEAD)
        return fcip.encapsulate(body, special=True)
    size = draw(st.integers(0, max_payload))
    return fcip.build_fcip_frame(
        draw(FC_VALUES), random.Random(seed).randbytes(size),
        sof=draw(st.sampled_from(Sof)), eof=draw(st.sampled_from(Eof)),
        ts_seconds=draw(st.integers(0, 2**32 - 1)))


#: how a stream is damaged; each kind has its own test so each gets its share of examples
KINDS = ("none", "any", "header", "pflags", "reserved", "flags_len", "sof", "eof")


@st.composite
def streams(draw, kind: str) -> bytes:
    """Valid frames, sometimes a garbage prefix; then damage of ``kind``, and sometimes a cut.

    ``any``/``header``/``sof``/``eof`` flip bits of one byte anywhere / in an
    encapsulation header / in a delimiter word; ``pflags``/``reserved``/
    ``flags_len`` rewrite that field *and* its complement, so the later checks
    (special frames, reserved, CRCV, length) are reached.
    """
    prefix = b""
    if draw(st.sampled_from([False, False, False, True])):
        prefix = draw(st.sampled_from([b"\x01\x01\xfe", b"\x00" * 30]) | st.binary(max_size=40))
    frames = draw(st.lists(fcip_frames(max_payload=draw(st.sampled_from([64, 600, MAX_PAYLOAD]))),
                           max_size=6))
    data = bytearray(prefix + b"".join(frames))
    if kind == "any" and data:
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif kind != "none" and frames:
        i = len(frames) - 1 - draw(st.integers(0, len(frames) - 1))   # mostly the last
        start = len(prefix) + sum(map(len, frames[:i]))
        end = start + len(frames[i])
        if kind == "header":
            data[start + draw(st.integers(0, fcip.HEADER_SIZE - 1))] ^= draw(st.integers(1, 255))
        elif kind in ("sof", "eof"):
            at = start + fcip.HEADER_SIZE if kind == "sof" else end - 4
            data[at + draw(st.integers(0, 3))] ^= draw(st.integers(1, 255))
        else:
            if kind == "flags_len":
                value = (draw(st.integers(0, 63)) << 10) | draw(st.integers(0, 1023))
            else:
                value = draw(st.integers(0, 255))
            width = FCIP_HEADER.by_name[kind].width
            at, at_c = start + FCIP_HEADER.offsets[kind], start + FCIP_HEADER.offsets[kind + "_c"]
            data[at:at + width] = value.to_bytes(width, "big")
            data[at_c:at_c + width] = (~value & ((1 << 8 * width) - 1)).to_bytes(width, "big")
    if draw(st.booleans()):
        data = data[:len(data) - draw(st.integers(0, len(data)))]     # mostly a short cut
    return bytes(data)


ANY_STREAM = st.sampled_from(KINDS).flatmap(streams)


def as_dicts(frames: np.ndarray) -> list[dict]:
    return [dict(zip(FRAME_DTYPE.names, row)) for row in frames.tolist()]


def run_both(test: TestCase, chunk: bytes, max_frames=None):
    """Kernel and reference on ``chunk``; assert they agree; return the kernel's result."""
    got = kernel.delineate(chunk, max_frames)
    want = reference.delineate(chunk, max_frames)
    test.assertEqual(as_dicts(got.frames), want.frames)
    test.assertEqual((got.consumed, got.error, got.error_offset),
                     (want.consumed, want.error, want.error_offset))
    test.assertIsInstance(got.error, E)
    return got


def frame(payload: bytes = b"abcd", sof=Sof.I3, eof=Eof.T, **header) -> bytes:
    return fcip.build_fcip_frame(header or {"r_ctl": 1, "d_id": 0x010203}, payload, sof=sof, eof=eof)


def patched(data: bytes, field: str, value: int) -> bytes:
    """``data`` with encapsulation header field ``field`` (at offset 0) set to ``value``."""
    f = FCIP_HEADER.by_name[field]
    at = FCIP_HEADER.offsets[field]
    return data[:at] + value.to_bytes(f.width, "big") + data[at + f.width:]


def with_flags_len(data: bytes, flags_len: int) -> bytes:
    """``data`` with flags_len and a matching complement."""
    return patched(patched(data, "flags_len", flags_len), "flags_len_c", ~flags_len & 0xFFFF)


class EquivalenceTests(TestCase):
    """Kernel == reference on random streams."""

    def check(self, chunk, max_frames):
        run_both(self, chunk, max_frames)

    @EACH
    @given(streams("none"), MAX_FRAMES)
    def test_clean_streams_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("any"), MAX_FRAMES)
    def test_streams_with_a_damaged_byte_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("header"), MAX_FRAMES)
    def test_streams_with_a_damaged_header_byte_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("pflags"), MAX_FRAMES)
    def test_streams_with_rewritten_pflags_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("reserved"), MAX_FRAMES)
    def test_streams_with_rewritten_reserved_byte_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("flags_len"), MAX_FRAMES)
    def test_streams_with_rewritten_flags_and_length_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("sof"), MAX_FRAMES)
    def test_streams_with_a_damaged_sof_word_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @EACH
    @given(streams("eof"), MAX_FRAMES)
    def test_streams_with_a_damaged_eof_word_match_reference(self, chunk, max_frames):
        self.check(chunk, max_frames)

    @FEW
    @given(st.binary(max_size=300))
    def test_random_garbage_matches_reference(self, chunk):
        run_both(self, chunk)

    @FEW
    @given(ANY_STREAM)
    def test_every_input_type_gives_the_same_result(self, chunk):
        want = kernel.delineate(chunk)
        for variant in (bytearray(chunk), memoryview(chunk), np.frombuffer(chunk, np.uint8).copy()):
            got = kernel.delineate(variant)
            self.assertEqual(as_dicts(got.frames), as_dicts(want.frames))
            self.assertEqual(got[1:], want[1:])

    @FEW
    @given(ANY_STREAM, st.integers(1, 4))
    def test_resuming_at_consumed_with_small_outputs_gives_the_one_shot_frames(self, chunk, max_frames):
        whole = kernel.delineate(chunk)
        records, base = [], 0
        for _ in range(len(chunk) + 1):
            part = kernel.delineate(memoryview(chunk)[base:], max_frames)
            for record in as_dicts(part.frames):
                records.append(dict(record, offset=record["offset"] + base))
            if part.error or len(part.frames) < max_frames:
                break
            base += part.consumed
        self.assertEqual(records, as_dicts(whole.frames))
        self.assertEqual((base + part.consumed, part.error), (whole.consumed, whole.error))
        if part.error:
            self.assertEqual(base + part.error_offset, whole.error_offset)


class FramesLibraryAgreementTests(TestCase):
    """The kernel agrees with datapath.frames.fcip.parse_fcip_frame."""

    @SETTINGS
    @given(ANY_STREAM)
    def test_records_match_parse_fcip_frame_and_errors_make_it_raise(self, chunk):
        result = kernel.delineate(chunk)
        for record in as_dicts(result.frames):
            parsed = fcip.parse_fcip_frame(chunk, record["offset"], fast=True)
            self.assertEqual(parsed.length, record["length"])
            if parsed.fc is None:
                self.assertEqual(record["special"], 1)
                continue
            self.assertEqual(record["special"], 0)
            self.assertEqual({f: record[f] for f in FC_HEADER.dtype.names},
                             {f: parsed.fc.header[f] for f in FC_HEADER.dtype.names})
            self.assertEqual((record["sof"], record["eof"]), (parsed.fc.sof, parsed.fc.eof))
        if result.consumed < len(chunk):
            # an error, or an incomplete frame: either way the frames library cannot parse it
            with self.assertRaises(DecodeError):
                fcip.parse_fcip_frame(chunk, result.consumed, fast=True)


class DelineationTests(TestCase):
    """Specific behaviour of the wrapper, each checked against the reference too."""

    def test_empty_input_gives_no_frames_and_no_error(self):
        result = run_both(self, b"")
        self.assertEqual((len(result.frames), result.consumed, result.error, result.error_offset),
                         (0, 0, E.OK, -1))

    def test_one_frame_gives_its_fields(self):
        data = fcip.build_fcip_frame(
            {"r_ctl": 0x06, "d_id": 0x123456, "cs_ctl": 0x11, "s_id": 0xABCDEF, "type": 0x08,
             "f_ctl": 0x290000, "seq_id": 0x22, "df_ctl": 0x33, "seq_cnt": 0x4455, "ox_id": 0x6677,
             "rx_id": 0x8899, "parameter": 0xDEADBEEF}, b"xyz", sof=Sof.N3, eof=Eof.N)
        (record,) = as_dicts(run_both(self, data).frames)
        self.assertEqual(record, {
            "offset": 0, "length": len(data), "r_ctl": 0x06, "d_id": 0x123456, "cs_ctl": 0x11,
            "s_id": 0xABCDEF, "type": 0x08, "f_ctl": 0x290001, "seq_id": 0x22, "df_ctl": 0x33,
            "seq_cnt": 0x4455, "ox_id": 0x6677, "rx_id": 0x8899, "parameter": 0xDEADBEEF,
            "sof": Sof.N3, "eof": Eof.N, "special": 0})

    def test_frames_follow_each_other_and_all_bytes_are_consumed(self):
        parts = [frame(b"a" * n) for n in (0, 5, MAX_PAYLOAD)]
        result = run_both(self, b"".join(parts))
        self.assertEqual(result.frames["offset"].tolist(), [0, len(parts[0]), len(parts[0]) + len(parts[1])])
        self.assertEqual(result.frames["length"].tolist(), [len(p) for p in parts])
        self.assertEqual(result.consumed, sum(map(len, parts)))

    def test_largest_frame_is_545_words(self):
        data = fcip.encapsulate(bytes(fcip.MAX_FRAME_WORDS * 4 - fcip.OVERHEAD))
        self.assertEqual(run_both(self, data).frames["length"].tolist(), [len(data)])

    def test_special_frame_has_special_set_and_zero_fc_fields(self):
        data = fcip.encapsulate(b"\xff" * 40, special=True)
        (record,) = as_dicts(run_both(self, data).frames)
        self.assertEqual(record, dict(dict.fromkeys(FRAME_DTYPE.names, 0), length=len(data), special=1))

    def test_shortest_special_frame_is_15_words(self):
        data = fcip.encapsulate(bytes(fcip.MIN_FRAME_WORDS * 4 - fcip.OVERHEAD), special=True)
        self.assertEqual(run_both(self, data).frames["length"].tolist(), [fcip.MIN_FRAME_WORDS * 4])

    def test_incomplete_header_is_not_consumed_and_not_an_error(self):
        data = frame()
        result = run_both(self, data + data[:fcip.HEADER_SIZE - 1])
        self.assertEqual((len(result.frames), result.consumed, result.error), (1, len(data), E.OK))

    def test_incomplete_frame_is_not_consumed_and_not_an_error(self):
        data = frame(b"p" * 100)
        result = run_both(self, data + data[:-1])
        self.assertEqual((len(result.frames), result.consumed, result.error), (1, len(data), E.OK))

    def test_full_output_stops_at_the_next_frame_start(self):
        data = frame()
        result = run_both(self, data * 3 + b"garbage that is never examined", max_frames=2)
        self.assertEqual((len(result.frames), result.consumed, result.error), (2, 2 * len(data), E.OK))

    def test_max_frames_zero_consumes_nothing(self):
        result = run_both(self, frame(), max_frames=0)
        self.assertEqual((len(result.frames), result.consumed, result.error), (0, 0, E.OK))

    def test_frames_before_an_error_are_kept(self):
        good = frame()
        result = run_both(self, good * 2 + patched(good, "protocol", 2))
        self.assertEqual((len(result.frames), result.consumed), (2, 2 * len(good)))
        self.assertEqual((result.error, result.error_offset), (E.BAD_PROTOCOL, 2 * len(good)))

    def assertBadHeader(self, data: bytes, error: E, field: str):
        """``data`` after one good frame stops with ``error`` at ``field``'s chunk offset."""
        good = frame()
        result = run_both(self, good + data)
        at = len(good) + FCIP_HEADER.offsets[field]
        self.assertEqual((len(result.frames), result.consumed, result.error, result.error_offset),
                         (1, len(good), error, at))

    def test_bad_protocol(self):
        self.assertBadHeader(patched(frame(), "protocol", 0), E.BAD_PROTOCOL, "protocol")

    def test_bad_version(self):
        self.assertBadHeader(patched(frame(), "version", 2), E.BAD_VERSION, "version")

    def test_bad_complement_of_each_complemented_field(self):
        for field in ("protocol_c", "version_c", "pflags_c", "reserved_c", "flags_len_c"):
            f = FCIP_HEADER.by_name[field]
            good = frame()
            value = int.from_bytes(good[FCIP_HEADER.offsets[field]:][:f.width], "big") ^ 1
            self.assertBadHeader(patched(good, field, value), E.BAD_COMPLEMENT, field)

    def test_bad_protocol_specific(self):
        self.assertBadHeader(patched(frame(), "protocol_specific", 0x01010000),
                             E.BAD_PROTOCOL_SPECIFIC, "protocol_specific")

    def test_bad_reserved_even_with_its_complement(self):
        data = patched(patched(frame(), "reserved", 1), "reserved_c", 0xFE)
        self.assertBadHeader(data, E.BAD_RESERVED, "reserved")

    def test_crcv_set(self):
        good = frame()
        flags_len = int.from_bytes(good[12:14], "big") | (fcip.FLAG_CRCV << 10)
        self.assertBadHeader(with_flags_len(good, flags_len), E.CRCV_SET, "flags_len")

    def test_frame_len_outside_15_to_545_words(self):
        for words in (0, fcip.MIN_FRAME_WORDS - 1, fcip.MAX_FRAME_WORDS + 1, 1023):
            self.assertBadHeader(with_flags_len(frame(), words), E.BAD_LENGTH, "flags_len")

    def test_header_errors_need_only_the_header(self):
        data = patched(frame(b"q" * 200), "version", 7)[:fcip.HEADER_SIZE]
        result = run_both(self, data)
        self.assertEqual((result.error, result.error_offset), (E.BAD_VERSION, 1))

    def test_fc_frame_too_short_for_header_and_crc(self):
        # 15 words leave 24 bytes between SOF and EOF: an FC header but no CRC
        data = fcip.encapsulate(bytes(FC_HEADER.size))
        self.assertEqual(len(data), fcip.MIN_FRAME_WORDS * 4)
        self.assertBadHeader(data, E.BAD_LENGTH, "flags_len")

    def test_malformed_sof_word(self):
        good = frame()
        result = run_both(self, good[:fcip.HEADER_SIZE + 2] + b"\x00" + good[fcip.HEADER_SIZE + 3:])
        self.assertEqual((result.error, result.error_offset, result.consumed),
                         (E.BAD_SOF, fcip.HEADER_SIZE, 0))

    def test_unknown_sof_code(self):
        good = frame()
        bad = good[:fcip.HEADER_SIZE] + bytes((0x2A, 0x2A, 0xD5, 0xD5)) + good[fcip.HEADER_SIZE + 4:]
        result = run_both(self, bad)
        self.assertEqual((result.error, result.error_offset), (E.BAD_SOF, fcip.HEADER_SIZE))

    def test_eof_code_in_sof_place_is_unknown(self):
        result = run_both(self, frame(sof=Eof.T))
        self.assertEqual((result.error, result.error_offset), (E.BAD_SOF, fcip.HEADER_SIZE))

    def test_malformed_or_unknown_eof_word(self):
        good = frame()
        for word in (bytes((0x42, 0x42, 0xBD, 0xBC)), bytes((0x43, 0x43, 0xBC, 0xBC)), bytes(4)):
            result = run_both(self, good + good[:-4] + word)
            self.assertEqual((len(result.frames), result.error, result.error_offset),
                             (1, E.BAD_EOF, 2 * len(good) - 4))

    def test_fc_crc_is_not_checked(self):
        good = frame(b"payload!")
        bad_crc = good[:-5] + bytes((good[-5] ^ 0xFF,)) + good[-4:]
        self.assertFalse(fcip.parse_fcip_frame(bad_crc).fc.crc_ok)
        result = run_both(self, bad_crc)
        self.assertEqual((len(result.frames), result.error), (1, E.OK))


class WrapperTests(TestCase):
    """Argument handling of delineate()."""

    def test_bytes_are_not_copied(self):
        data = frame()
        self.assertIs(kernel.as_byte_array(data).base, data)

    def test_frames_is_a_view_of_a_caller_supplied_out(self):
        out = np.zeros(4, FRAME_DTYPE)
        result = kernel.delineate(frame() * 2, out=out)
        self.assertTrue(np.shares_memory(result.frames, out))
        self.assertEqual(out["length"].tolist()[:2], [len(frame())] * 2)

    def test_max_frames_limits_a_caller_supplied_out(self):
        out = np.zeros(4, FRAME_DTYPE)
        result = kernel.delineate(frame() * 3, max_frames=1, out=out)
        self.assertEqual((len(result.frames), out["length"].tolist()[1]), (1, 0))

    def test_max_frames_larger_than_out_is_rejected(self):
        self.assertRaises(ValueError, kernel.delineate, frame(), 5, np.zeros(4, FRAME_DTYPE))

    def test_negative_or_non_integer_max_frames_is_rejected(self):
        self.assertRaises(ValueError, kernel.delineate, frame(), -1)
        self.assertRaises(ValueError, kernel.delineate, frame(), 1.5)

    def test_out_of_the_wrong_dtype_is_rejected(self):
        self.assertRaises(TypeError, kernel.delineate, frame(), None, np.zeros(4, np.uint8))

    def test_read_only_out_is_rejected(self):
        out = np.zeros(4, FRAME_DTYPE)
        out.flags.writeable = False
        self.assertRaises(ValueError, kernel.delineate, frame(), None, out)

    def test_chunk_of_the_wrong_type_or_dtype_is_rejected(self):
        self.assertRaises(TypeError, kernel.delineate, "text")
        self.assertRaises(TypeError, kernel.delineate, np.zeros(8, np.int8))

    def test_chunk_of_two_dimensions_or_strided_is_rejected(self):
        self.assertRaises(ValueError, kernel.delineate, np.zeros((2, 64), np.uint8))
        self.assertRaises(ValueError, kernel.delineate, np.zeros(128, np.uint8)[::2])
        self.assertRaises(ValueError, kernel.delineate, memoryview(bytes(128))[::2])

    def test_frame_dtype_holds_every_fc_header_field_with_its_type(self):
        for name in FC_HEADER.dtype.names:
            self.assertEqual(FRAME_DTYPE[name], FC_HEADER.dtype[name])
        self.assertEqual(FRAME_DTYPE.names[:2], ("offset", "length"))
        self.assertEqual(FRAME_DTYPE.names[-3:], ("sof", "eof", "special"))

    def test_warm_up_runs(self):
        kernel.warm_up()


class StreamDelineatorTests(TestCase):
    """The stateful helper == delineating the whole stream at once, and == its reference."""

    @FEW
    @given(ANY_STREAM, st.lists(st.integers(1, 3000), max_size=8))
    def test_pieces_give_the_frames_of_the_whole_stream(self, stream, sizes):
        stream_k, stream_r = kernel.StreamDelineator(), reference.StreamDelineator()
        got, at = [], 0
        for size in sizes + [len(stream)]:
            piece, at = stream[at:at + size], at + size
            block, result = stream_k.feed(piece)
            ref_block, ref_result = stream_r.feed(piece)
            self.assertEqual(bytes(block), ref_block)
            self.assertEqual(as_dicts(result.frames), ref_result.frames)
            self.assertEqual(result[1:], ref_result[1:])
            self.assertLess(stream_k.held, fcip.MAX_FRAME_WORDS * 4)
            got += [bytes(block[r["offset"]:r["offset"] + r["length"]]) for r in as_dicts(result.frames)]
        whole = kernel.delineate(stream)
        self.assertEqual(got, [stream[r["offset"]:r["offset"] + r["length"]] for r in as_dicts(whole.frames)])
        self.assertEqual((stream_k.error, stream_k.error_stream_offset), (whole.error, whole.error_offset))
        if not whole.error:
            self.assertEqual(stream_k.stream_offset, whole.consumed)

    def test_error_is_sticky_and_data_after_it_is_dropped(self):
        stream = kernel.StreamDelineator()
        good = frame()
        _, first = stream.feed(good + patched(good, "version", 9))
        block, later = stream.feed(good)
        self.assertEqual((first.error, first.error_offset), (E.BAD_VERSION, len(good) + 1))
        self.assertEqual((block, len(later.frames), later.error, later.error_offset),
                         (b"", 0, E.BAD_VERSION, len(good) + 1))
        self.assertEqual(stream.held, 0)

    def test_whole_frames_are_passed_through_without_copying(self):
        stream = kernel.StreamDelineator()
        data = frame() * 2
        block, result = stream.feed(data)
        self.assertIs(block, data)
        self.assertEqual((len(result.frames), stream.held), (2, 0))
