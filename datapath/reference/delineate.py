"""Reference model of ``datapath.kernels.delineate``: FCIP stream delineation.

Walks the chunk frame by frame with the frames library's own checks
(``fcip.check_header``, ``fc.parse_delimiter_word``, ``FC_HEADER.parse``) and
turns the first :class:`DecodeError` into an error code by the field it names.
Records are dicts keyed like the kernel's ``FRAME_DTYPE``. The FC CRC is not
checked (as in the kernel).
"""

from __future__ import annotations

from typing import NamedTuple

from datapath.frames import fcip
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FC_CRC_SIZE, FC_HEADER, Eof, Sof, parse_delimiter_word
from datapath.kernels.delineate import DelineationError as E

RECORD_FIELDS = ("offset", "length", *(f.name for f in FC_HEADER.fields), "sof", "eof", "special")
MIN_FRAME_BYTES = fcip.MIN_FRAME_WORDS * 4

#: DecodeError.field -> error code
FIELD_ERRORS = {
    "protocol": E.BAD_PROTOCOL,
    "version": E.BAD_VERSION,
    "protocol_c": E.BAD_COMPLEMENT,
    "version_c": E.BAD_COMPLEMENT,
    "pflags_c": E.BAD_COMPLEMENT,
    "reserved_c": E.BAD_COMPLEMENT,
    "flags_len_c": E.BAD_COMPLEMENT,
    "protocol_specific": E.BAD_PROTOCOL_SPECIFIC,
    "reserved": E.BAD_RESERVED,
    "flags": E.CRCV_SET,
    "frame_len": E.BAD_LENGTH,
    "sof": E.BAD_SOF,
    "eof": E.BAD_EOF,
}


class ReferenceResult(NamedTuple):
    frames: list[dict]
    consumed: int
    error: E
    error_offset: int


def _record(data: bytes, start: int, length: int, encap: dict) -> dict:
    """The record of the complete frame at ``start``; DecodeError if it is invalid."""
    if encap["pflags"] & fcip.PFLAG_SPECIAL_FRAME:
        record = dict.fromkeys(RECORD_FIELDS, 0)
        record.update(offset=start, length=length, special=1)
        return record
    end = start + length
    sof = parse_delimiter_word(data, start + fcip.HEADER_SIZE, "fcip", "sof", Sof)
    eof = parse_delimiter_word(data, end - 4, "fcip", "eof", Eof)
    fc_bytes = length - fcip.OVERHEAD
    if fc_bytes < FC_HEADER.size + FC_CRC_SIZE or fc_bytes % 4:
        raise DecodeError("fcip", "frame_len", start + fcip.FCIP_HEADER.offsets["flags_len"],
                          f"{fc_bytes} bytes cannot hold an FC header and CRC")
    header = FC_HEADER.parse(data, start + fcip.HEADER_SIZE + 4, fast=True)
    record = {name: header[name] for name in RECORD_FIELDS if name in header}
    record.update(offset=start, length=length, sof=int(sof), eof=int(eof), special=0)
    return record


def delineate(chunk, max_frames: int | None = None) -> ReferenceResult:
    data = bytes(chunk)
    if max_frames is None:
        max_frames = len(data) // MIN_FRAME_BYTES + 1
    frames: list[dict] = []
    start = 0
    while len(frames) < max_frames and len(data) - start >= fcip.HEADER_SIZE:
        try:
            encap = fcip.check_header(data, start, fast=True)
            length = encap["frame_len"] * 4
            if start + length > len(data):
                break                                   # incomplete frame
            frames.append(_record(data, start, length, encap))
        except DecodeError as exc:
            return ReferenceResult(frames, start, FIELD_ERRORS[exc.field], exc.offset)
        start += length
    return ReferenceResult(frames, start, E.OK, -1)


class StreamDelineator:
    """Reference of the kernel module's ``StreamDelineator``: a growing bytes buffer."""

    def __init__(self):
        self.buffer = b""
        self.stream_offset = 0
        self.error = E.OK
        self.error_stream_offset = -1

    def feed(self, data) -> tuple[bytes, ReferenceResult]:
        if self.error:
            return b"", ReferenceResult([], 0, self.error, self.error_stream_offset)
        block = self.buffer + bytes(data)
        result = delineate(block)
        if result.error:
            self.error = result.error
            self.error_stream_offset = self.stream_offset + result.error_offset
            self.buffer = b""
        else:
            self.buffer = block[result.consumed:]
        self.stream_offset += result.consumed
        return block, result
