"""FCIP stream delineation: cut a received TCP byte chunk into FCIP frames.

One call scans ``chunk`` from offset 0. For each complete, valid FCIP frame it
writes one record of :data:`FRAME_DTYPE` (frame start ``offset`` in the chunk,
``length`` in bytes, the FC header fields, the ``sof``/``eof`` codes and
``special``), then goes on at the next frame. It stops at

(a) an incomplete frame at the end (fewer than the 28 header bytes, or a
    valid header whose ``frame_len`` reaches past the chunk): ``consumed`` is
    that frame's start, ``error`` is ``OK``; call again when more bytes arrived;
(b) the first invalid encapsulation: ``error`` says what is wrong and
    ``error_offset`` is the byte offset in the chunk of the offending field,
    ``consumed`` is the start of the bad frame; the records before it are valid;
(c) a full output array: ``consumed`` is the start of the next (unexamined) frame.

The checks and their order are those of ``datapath.frames.fcip.check_header``
(protocol, version, their complements, the protocol-specific copy of bytes
0-3, pFlags complement, reserved byte and its complement, flags/length
complement, CRCV clear, ``frame_len`` in 15..545 words), then, for a frame
that is not a special frame (pFlags 0x01), those of ``parse_fcip_frame``: the
SOF word ``c, c, ~c, ~c`` with ``c`` a :class:`~datapath.frames.fc.Sof` code,
the EOF word likewise with an :class:`~datapath.frames.fc.Eof` code, and room
for the FC header and CRC between them (the FC part is a whole number of words
since ``frame_len`` counts words). Header checks need only the 28 header bytes;
SOF, EOF and length checks wait for the whole frame. A special frame has no FC
frame: its FC fields, ``sof`` and ``eof`` are 0 and ``special`` is 1.

**The FC CRC is not checked here**: checking it means reading every payload
byte, which most callers do not need; the caller checks it (``fc.fc_crc``)
where it matters.

Field offsets and widths come from the Layouts (``FCIP_HEADER``,
``FC_HEADER``) at import time. The kernel is built by :func:`_make_kernel` with
them as closure variables rather than module globals: numba's on-disk cache key
includes a closure's cell contents but not globals, so a changed Layout
recompiles instead of silently reusing the old offsets. Its steps
(``_check_header``, ``_record_fc``, ``_record_special``) take the layouts as
arguments from it, for the same reason.
"""

from __future__ import annotations

import collections
import enum
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, types

from datapath.frames import fcip
from datapath.frames.fc import FC_CRC_SIZE, FC_HEADER, Eof, Sof
from datapath.frames.fcip import FCIP_HEADER
from datapath.kernels._checks import require_array


class DelineationError(enum.IntEnum):
    """Why a scan stopped at an invalid encapsulation; ``OK`` if it did not."""

    OK = 0
    BAD_PROTOCOL = 1            # protocol byte is not 1 (FCIP)
    BAD_VERSION = 2             # version byte is not 1
    BAD_COMPLEMENT = 3          # protocol_c, version_c, pflags_c, reserved_c or flags_len_c
    BAD_PROTOCOL_SPECIFIC = 4   # bytes 4-7 are not a copy of bytes 0-3
    BAD_RESERVED = 5            # reserved byte is not 0
    CRCV_SET = 6                # the CRCV flag must be clear in FCIP
    BAD_LENGTH = 7              # frame_len outside 15..545, or too short for FC header + CRC
    BAD_SOF = 8                 # malformed SOF word or unknown SOF code
    BAD_EOF = 9                 # malformed EOF word or unknown EOF code


_ERRORS = tuple(DelineationError)          # code -> enum member, without an enum call

# -- constants from the Layouts ----------------------------------------------

HEADER_SIZE = FCIP_HEADER.size                       # 28
DELIMITER_SIZE = 4
OVERHEAD = HEADER_SIZE + 2 * DELIMITER_SIZE          # header, SOF word, EOF word
MIN_FRAME_BYTES = fcip.MIN_FRAME_WORDS * 4
MAX_FRAME_BYTES = fcip.MAX_FRAME_WORDS * 4
MIN_FC_BYTES = FC_HEADER.size + FC_CRC_SIZE          # FC header + CRC between SOF and EOF

_FcipOffsets = collections.namedtuple("_FcipOffsets", list(FCIP_HEADER.offsets), module=__name__)
_FcOffsets = collections.namedtuple("_FcOffsets", list(FC_HEADER.offsets), module=__name__)

#: the FC header fields the kernel writes, by name (numba needs literal record field names)
_FC_FIELDS = ("r_ctl", "d_id", "cs_ctl", "s_id", "type", "f_ctl", "seq_id", "df_ctl",
              "seq_cnt", "ox_id", "rx_id", "parameter")
if _FC_FIELDS != FC_HEADER.dtype.names or any(f.raw for f in FC_HEADER.fields):
    raise RuntimeError(f"datapath.kernels.delineate writes FC fields {_FC_FIELDS}, but FC_HEADER "
                       f"now has {FC_HEADER.dtype.names}: update the kernel")

#: one record per delineated frame; aligned so numba and numpy read it field by field cheaply
FRAME_DTYPE = np.dtype(
    [("offset", np.uint64), ("length", np.uint32)]
    + [(name, FC_HEADER.dtype[name]) for name in FC_HEADER.dtype.names]
    + [("sof", np.uint8), ("eof", np.uint8), ("special", np.uint8)],
    align=True)


def _code_table(codes) -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    for code in codes:
        table[int(code)] = 1
    return table


def _flags_len_bits() -> tuple[int, int, int, int]:
    masks = dict((name, (shift, mask)) for name, shift, mask in FCIP_HEADER.by_name["flags_len"].bit_masks)
    return masks["flags"] + masks["frame_len"]


#: the scalar constants of the checks (from the Layouts and ``datapath.frames.fcip``)
_Constants = collections.namedtuple("_Constants", [
    "protocol", "version", "protocol_word", "special_flag", "crcv_flag", "flags_len_width",
    "flags_shift", "flags_mask", "len_shift", "len_mask", "min_words", "max_words",
    "header_size", "delimiter_size", "fc_start", "overhead", "min_fc"], module=__name__)
_flags_shift, _flags_mask, _len_shift, _len_mask = _flags_len_bits()
_CONSTANTS = _Constants(*(np.int64(v) for v in (
    fcip.FCIP_PROTOCOL, fcip.FCIP_VERSION,
    int.from_bytes(fcip.SYNC_PATTERN[:4], "big"),       # bytes 0-3 of a valid header
    fcip.PFLAG_SPECIAL_FRAME, fcip.FLAG_CRCV, FCIP_HEADER.by_name["flags_len"].width,
    _flags_shift, _flags_mask, _len_shift, _len_mask,
    fcip.MIN_FRAME_WORDS, fcip.MAX_FRAME_WORDS,
    HEADER_SIZE, DELIMITER_SIZE, HEADER_SIZE + DELIMITER_SIZE, OVERHEAD, MIN_FC_BYTES)))

# error codes as the kernels return them
_OK = np.int64(DelineationError.OK)
_BAD_PROTOCOL = np.int64(DelineationError.BAD_PROTOCOL)
_BAD_VERSION = np.int64(DelineationError.BAD_VERSION)
_BAD_COMPLEMENT = np.int64(DelineationError.BAD_COMPLEMENT)
_BAD_SPECIFIC = np.int64(DelineationError.BAD_PROTOCOL_SPECIFIC)
_BAD_RESERVED = np.int64(DelineationError.BAD_RESERVED)
_CRCV_SET = np.int64(DelineationError.CRCV_SET)
_BAD_LENGTH = np.int64(DelineationError.BAD_LENGTH)
_BAD_SOF = np.int64(DelineationError.BAD_SOF)
_BAD_EOF = np.int64(DelineationError.BAD_EOF)


# -- kernels -------------------------------------------------------------------

_BYTES_RO = types.Array(types.uint8, 1, "C", readonly=True)
_FRAMES = types.Array(numba.from_dtype(FRAME_DTYPE), 1, "C")
_RESULT = types.UniTuple(types.int64, 4)


@njit(types.int64(_BYTES_RO, types.int64, types.int64), cache=True, nogil=True)
def _be(buf, at, width):
    """The big-endian unsigned integer of ``width`` (1..4) bytes at ``buf[at]``."""
    value = np.int64(0)
    for i in range(width):
        value = (value << 8) | np.int64(buf[at + i])
    return value


@njit(types.boolean(_BYTES_RO, types.int64, types.int64, types.int64), cache=True, nogil=True)
def _complements(buf, a, b, width):
    """True if the ``width`` bytes at ``b`` are the ones' complement of those at ``a``."""
    for i in range(width):
        if (buf[a + i] ^ buf[b + i]) != 0xFF:
            return False
    return True


@njit(types.boolean(_BYTES_RO, types.int64, types.Array(types.uint8, 1, "C", readonly=True)),
      cache=True, nogil=True)
def _delimiter_ok(buf, at, valid):
    """The delimiter word ``c, c, ~c, ~c`` at ``buf[at]`` with ``valid[c]`` set."""
    c = buf[at]
    return (buf[at + 1] == c and (buf[at + 2] ^ c) == 0xFF and (buf[at + 3] ^ c) == 0xFF
            and valid[c] != 0)


# The steps of the kernel, inlined into it by numba (inline="always"): the layout constants
# it passes fold as if written in place, and an import that finds the kernel in the cache
# compiles and loads nothing more. They take the layouts as arguments, never as globals
# (see the module doc).


@njit(inline="always", nogil=True)
def _check_header(buf, start, H, K):
    """``check_header``'s checks, in its order, on the 28 header bytes at ``buf[start]``:
    the frame's length in bytes, or ``-(error << 8 | offset)``, ``offset`` the failed field's
    in the header (one integer: returning a tuple made the kernel a quarter slower)."""
    if buf[start + H.protocol] != K.protocol:
        return -(_BAD_PROTOCOL << 8 | H.protocol)
    if buf[start + H.version] != K.version:
        return -(_BAD_VERSION << 8 | H.version)
    if not _complements(buf, start + H.protocol, start + H.protocol_c, 1):
        return -(_BAD_COMPLEMENT << 8 | H.protocol_c)
    if not _complements(buf, start + H.version, start + H.version_c, 1):
        return -(_BAD_COMPLEMENT << 8 | H.version_c)
    if _be(buf, start + H.protocol_specific, 4) != K.protocol_word:
        return -(_BAD_SPECIFIC << 8 | H.protocol_specific)
    if not _complements(buf, start + H.pflags, start + H.pflags_c, 1):
        return -(_BAD_COMPLEMENT << 8 | H.pflags_c)
    if buf[start + H.reserved] != 0:
        return -(_BAD_RESERVED << 8 | H.reserved)
    if not _complements(buf, start + H.reserved, start + H.reserved_c, 1):
        return -(_BAD_COMPLEMENT << 8 | H.reserved_c)
    if not _complements(buf, start + H.flags_len, start + H.flags_len_c, K.flags_len_width):
        return -(_BAD_COMPLEMENT << 8 | H.flags_len_c)
    flags_len = _be(buf, start + H.flags_len, K.flags_len_width)
    if (flags_len >> K.flags_shift) & K.flags_mask & K.crcv_flag:
        return -(_CRCV_SET << 8 | H.flags_len)
    words = (flags_len >> K.len_shift) & K.len_mask
    if words < K.min_words or words > K.max_words:
        return -(_BAD_LENGTH << 8 | H.flags_len)
    return words * 4


@njit(inline="always", nogil=True)
def _record_fc(rec, buf, start, length, K, F, FW):
    """``rec``: the FC frame at ``buf[start]`` (its delimiters and FC header fields)."""
    rec["special"] = 0
    rec["sof"] = buf[start + K.header_size]
    rec["eof"] = buf[start + length - K.delimiter_size]
    fc = start + K.fc_start
    rec["r_ctl"] = _be(buf, fc + F.r_ctl, FW.r_ctl)
    rec["d_id"] = _be(buf, fc + F.d_id, FW.d_id)
    rec["cs_ctl"] = _be(buf, fc + F.cs_ctl, FW.cs_ctl)
    rec["s_id"] = _be(buf, fc + F.s_id, FW.s_id)
    rec["type"] = _be(buf, fc + F.type, FW.type)
    rec["f_ctl"] = _be(buf, fc + F.f_ctl, FW.f_ctl)
    rec["seq_id"] = _be(buf, fc + F.seq_id, FW.seq_id)
    rec["df_ctl"] = _be(buf, fc + F.df_ctl, FW.df_ctl)
    rec["seq_cnt"] = _be(buf, fc + F.seq_cnt, FW.seq_cnt)
    rec["ox_id"] = _be(buf, fc + F.ox_id, FW.ox_id)
    rec["rx_id"] = _be(buf, fc + F.rx_id, FW.rx_id)
    rec["parameter"] = _be(buf, fc + F.parameter, FW.parameter)


@njit(inline="always", nogil=True)
def _record_special(rec):
    """``rec``: a special frame (no FC frame: every FC field, ``sof`` and ``eof`` 0)."""
    rec["special"] = 1
    rec["sof"] = 0
    rec["eof"] = 0
    rec["r_ctl"] = 0
    rec["d_id"] = 0
    rec["cs_ctl"] = 0
    rec["s_id"] = 0
    rec["type"] = 0
    rec["f_ctl"] = 0
    rec["seq_id"] = 0
    rec["df_ctl"] = 0
    rec["seq_cnt"] = 0
    rec["ox_id"] = 0
    rec["rx_id"] = 0
    rec["parameter"] = 0


def _make_kernel(H, F, FW, K, sof_valid, eof_valid):
    """The kernel, with the layout constants as closure variables (see the module doc).

    ``H``/``F``: FCIP / FC header field offsets, ``FW``: FC field widths
    (namedtuples keyed by field name), ``K``: the scalar constants (``_Constants``),
    ``sof_valid``/``eof_valid``: 1 at each known delimiter code.
    """

    @njit(_RESULT(_BYTES_RO, _FRAMES), cache=True, nogil=True)
    def delineate_kernel(buf, out):
        """Scan ``buf``; fill ``out[:count]``; return (count, consumed, error, error_offset)."""
        size = np.int64(buf.shape[0])
        capacity = np.int64(out.shape[0])
        start = np.int64(0)
        count = np.int64(0)
        error = _OK
        where = np.int64(-1)
        while count < capacity:                  # each pass records a frame or leaves
            if size - start < K.header_size:
                break
            length = _check_header(buf, start, H, K)
            if length < 0:
                error, where = -length >> 8, start + (-length & 0xFF)
                break
            if length > size - start:
                break                            # incomplete: wait for more bytes
            rec = out[count]
            if buf[start + H.pflags] & K.special_flag:
                _record_special(rec)
            else:                                # as parse_fcip_frame: SOF, EOF, FC length
                eof_at = start + length - K.delimiter_size
                if not _delimiter_ok(buf, start + K.header_size, sof_valid):
                    error, where = _BAD_SOF, start + K.header_size
                    break
                if not _delimiter_ok(buf, eof_at, eof_valid):
                    error, where = _BAD_EOF, eof_at
                    break
                if length - K.overhead < K.min_fc:
                    error, where = _BAD_LENGTH, start + H.flags_len
                    break
                _record_fc(rec, buf, start, length, K, F, FW)
            rec["offset"] = start
            rec["length"] = length
            count += 1
            start += length
        return count, start, error, where

    return delineate_kernel


_kernel = _make_kernel(
    _FcipOffsets(**FCIP_HEADER.offsets),
    _FcOffsets(**FC_HEADER.offsets),
    _FcOffsets(**{f.name: f.width for f in FC_HEADER.fields}),
    _CONSTANTS, _code_table(Sof), _code_table(Eof))


# -- wrapper -------------------------------------------------------------------

class DelineationResult(NamedTuple):
    frames: np.ndarray          # FRAME_DTYPE records of the complete valid frames (a view)
    consumed: int               # bytes of the chunk the caller may drop
    error: DelineationError     # OK unless the scan stopped at an invalid encapsulation
    error_offset: int           # chunk offset of the offending field; -1 when error is OK


def as_byte_array(chunk) -> np.ndarray:
    """``chunk`` as a 1-D uint8 array over the same memory (bytes are not copied)."""
    if isinstance(chunk, np.ndarray):
        return require_array("chunk", chunk, np.uint8)
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        if isinstance(chunk, memoryview) and not chunk.c_contiguous:
            raise ValueError("chunk: memoryview must be C-contiguous")
        return np.frombuffer(chunk, dtype=np.uint8)
    raise TypeError(f"chunk: expected bytes, bytearray, memoryview or a uint8 array, "
                    f"got {type(chunk).__name__}")


def default_capacity(nbytes: int) -> int:
    """Records enough for every frame of an ``nbytes`` chunk (frames have >= 60 bytes) plus one,
    so a scan with this capacity never stops for a full output array."""
    return nbytes // MIN_FRAME_BYTES + 1


def delineate(chunk, max_frames: int | None = None, out: np.ndarray | None = None) -> DelineationResult:
    """Delineate the FCIP frames of ``chunk`` (see the module doc for the stop rules).

    ``max_frames`` bounds the records written (default: enough for the whole
    chunk). ``out`` is an optional preallocated FRAME_DTYPE array to write into
    (then ``max_frames`` defaults to, and may not exceed, ``len(out)``);
    ``frames`` of the result is a view of it. The FC CRC is not checked.
    """
    buf = as_byte_array(chunk)
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 0):
        raise ValueError(f"max_frames: expected an integer >= 0, got {max_frames!r}")
    if out is None:
        out = np.empty(default_capacity(len(buf)) if max_frames is None else int(max_frames),
                       dtype=FRAME_DTYPE)
    else:
        require_array("out", out, FRAME_DTYPE, writeable=True)
        if max_frames is not None:
            if max_frames > len(out):
                raise ValueError(f"max_frames: {max_frames} exceeds len(out) = {len(out)}")
            out = out[:max_frames]
    count, consumed, error, error_offset = _kernel(buf, out)
    return DelineationResult(out[:count], int(consumed), _ERRORS[error], int(error_offset))


class StreamDelineator:
    """Delineates a byte stream handed over in arbitrary pieces (``dataReceived``).

    ``feed(data)`` returns ``(block, result)``: ``block`` is the bytes the
    result's offsets index (``data`` itself when no partial frame was held,
    else the held tail + ``data``), ``result`` is :func:`delineate` of it.
    Between feeds at most one incomplete frame is held (< 2180 bytes), so the
    buffer is bounded. An invalid encapsulation loses the framing for good: the
    first result with an error is returned once, then every later ``feed``
    drops its data and returns no frames with the same error (``error_offset``
    then counts from the start of the stream); the caller should drop the
    connection.
    """

    def __init__(self):
        self._tail = b""
        self.stream_offset = 0        # stream offset of the first byte not yet delineated
        self.error = DelineationError.OK
        self.error_stream_offset = -1

    @property
    def held(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._tail)

    def feed(self, data) -> tuple[bytes, DelineationResult]:
        if self.error:
            return b"", DelineationResult(np.empty(0, FRAME_DTYPE), 0, self.error,
                                          self.error_stream_offset)
        block = self._tail + bytes(data) if self._tail else data
        result = delineate(block)
        if result.error:
            self.error = result.error
            self.error_stream_offset = self.stream_offset + result.error_offset
            self._tail = b""
        else:
            self._tail = bytes(block[result.consumed:])
        self.stream_offset += result.consumed
        return block, result


def warm_up() -> None:
    """Run the kernel once (read-only and writable input) so numba fills its cache."""
    frame = fcip.build_fcip_frame({"r_ctl": 1}, b"warm")
    for chunk in (frame, bytearray(frame + frame[:10])):
        delineate(chunk)
