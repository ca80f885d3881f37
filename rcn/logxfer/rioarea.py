"""The RIO area of a log entry (patent 805): an FCP exchange as SOF..EOF units.

A WR or CTRL entry carries the command side of the exchange as the source
link saw it: the FCP_CMND frame, then the data-out frames (relative offsets,
at most ``max_frame`` bytes each). A WROK or CTRL_OK entry carries the answer:
data-in frames, then the FCP_RSP. Each unit is ``logentry.build_rio_area``'s
4-byte length and the frame between SOF and EOF ordered sets, so Wireshark's
``fcsof`` dissector reads them and the target edge replays the command on its
own link (new exchange IDs; the data and CDB are what matter there).

The FC CRCs in the units are computed (for Wireshark) but not checked on
parsing: the entry's CRC32C already covers the whole area.

Encoding and decoding are hot paths (every replicated write): a unit wraps
``fc.fc_frame_parts``, the FC frame the FCIP encoder sends too, and is read back
with the same table-derived ``fc.FC_HEADER_WORDS``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.fc import (EOF_ORDERED_SETS, FC_CRC_SIZE, FC_HEADER_SIZE, FC_HEADER_WORDS,
                                SOF_ORDERED_SETS, Eof, FcType, FCtl, RCtl, Sof, fc_frame_parts)
from datapath.frames.logentry import UNIT_LENGTH_SIZE
from rcn.rio.fcp import ScsiResult, parse_response, response_payload

MAX_DATA_FRAME = 2048

_UNIT_HEAD = struct.Struct(">II")             # unit length, SOF ordered set
_SOF_I3 = SOF_ORDERED_SETS[Sof.I3]
_SOF_N3 = SOF_ORDERED_SETS[Sof.N3]
_EOF_T = EOF_ORDERED_SETS[Eof.T][0].to_bytes(4, "big")
_EOF_N = EOF_ORDERED_SETS[Eof.N][0].to_bytes(4, "big")
_UNIT_OVERHEAD = 4 + FC_HEADER_SIZE + FC_CRC_SIZE + 4     # SOF, FC header, CRC, EOF
_PAYLOAD_AT = 4 + FC_HEADER_SIZE              # in a unit after its length: SOF, FC header
_TRAILER = FC_CRC_SIZE + 4                    # FC CRC, EOF
_FILL = int(FCtl.FILL_MASK)
_CMND_SIZE = fcp.FCP_CMND.size
_CMND_UNPACK = fcp.FCP_CMND.packer.unpack
_FCP_DL_AT = fcp.FCP_CMND.offsets["fcp_dl"]

_CMND = int(RCtl.FCP_CMND)
_DATA = int(RCtl.FCP_DATA)
_XFER_RDY = int(RCtl.FCP_XFER_RDY)
_RSP = int(RCtl.FCP_RSP)
_FCP = int(FcType.FCP)
_EC = int(FCtl.EXCHANGE_CONTEXT)
_FIRST = int(FCtl.FIRST_SEQUENCE)
_LAST = int(FCtl.LAST_SEQUENCE)
_END = int(FCtl.END_SEQUENCE)
_SI = int(FCtl.SEQUENCE_INITIATIVE)
_RO = int(FCtl.RELATIVE_OFFSET)


def encode_unit(r_ctl: int, d_id: int, s_id: int, f_ctl: int, seq_id: int, seq_cnt: int,
                ox_id: int, rx_id: int, parameter: int, payload=b"", sof: int = _SOF_I3,
                eof: bytes = _EOF_T) -> bytes:
    """One unit: length, SOF ordered set, FCP frame (type 8), CRC, EOF ordered set."""
    header, pad, crc = fc_frame_parts(r_ctl, d_id, s_id, _FCP, f_ctl, seq_id, seq_cnt, ox_id,
                                      rx_id, parameter, payload)
    return b"".join((_UNIT_HEAD.pack(_UNIT_OVERHEAD + len(payload) + len(pad), sof), header,
                     payload, pad, crc, eof))


def _data_units(out: list, d_id: int, s_id: int, f_ctl: int, seq_id: int, ox_id: int,
                rx_id: int, data, last_f_ctl: int, max_frame: int) -> None:
    view = memoryview(data)
    end = len(view)
    offset, count, sof = 0, 0, _SOF_I3
    while True:
        upto = offset + max_frame
        if upto >= end:
            out.append(encode_unit(_DATA, d_id, s_id, f_ctl | _END | last_f_ctl, seq_id, count,
                                   ox_id, rx_id, offset, view[offset:end], sof, _EOF_T))
            return
        out.append(encode_unit(_DATA, d_id, s_id, f_ctl, seq_id, count, ox_id, rx_id, offset,
                               view[offset:upto], sof, _EOF_N))
        offset, count, sof = upto, count + 1, _SOF_N3


def command_area(s_id: int, d_id: int, ox_id: int, lun: int, cdb: bytes, data_out=b"",
                 data_in_length: int = 0, attribute: int = fcp.TaskAttribute.SIMPLE,
                 max_frame: int = MAX_DATA_FRAME) -> bytes:
    """FCP_CMND (write data following at once, as with first burst) and the data-out frames."""
    write = len(data_out) > 0
    fcp_dl = len(data_out) if write else data_in_length
    cmnd = fcp.build_fcp_cmnd(lun, cdb, fcp_dl, write=write, read=data_in_length > 0,
                              attribute=attribute)
    units = [encode_unit(_CMND, d_id, s_id, _FIRST | _END | (0 if write else _SI), 0, 0,
                         ox_id, 0xFFFF, 0, cmnd)]
    if write:
        _data_units(units, d_id, s_id, _RO, 1, ox_id, 0xFFFF, data_out, _SI, max_frame)
    return b"".join(units)


def response_area(s_id: int, d_id: int, ox_id: int, rx_id: int, result: ScsiResult,
                  data_in_offered: int = 0, max_frame: int = MAX_DATA_FRAME) -> bytes:
    """The answer: data-in frames (if any), then FCP_RSP (``s_id``: the responder)."""
    units: list[bytes] = []
    seq_id = 0
    if result.data_in:
        _data_units(units, d_id, s_id, _EC | _RO, 0, ox_id, rx_id, result.data_in, 0, max_frame)
        seq_id = 1
    residual = result.residual
    if data_in_offered and not residual:
        residual = data_in_offered - len(result.data_in)
    units.append(encode_unit(_RSP, d_id, s_id, _EC | _LAST | _END, seq_id, 0, ox_id, rx_id, 0,
                             response_payload(result, residual)))
    return b"".join(units)


@dataclass(slots=True)
class RioCommand:
    """What a WR or CTRL entry asks the target to do."""
    lun: int
    cdb: bytes
    attribute: int
    data_out: bytes = field(default=b"", repr=False)
    data_in_length: int = 0
    parsed: dict = field(default_factory=dict)   # fcp.parse_cdb(cdb)


def _units(area, base: int):
    """(r_ctl, parameter, payload, offset) per unit, payload without the fill bytes."""
    at, end = 0, len(area)
    view = memoryview(area)
    while at < end:
        if end - at < UNIT_LENGTH_SIZE:
            raise DecodeError("log_rio", "unit_length", base + at, f"truncated: {end - at} bytes left")
        length = int.from_bytes(view[at:at + 4], "big")
        start = at + UNIT_LENGTH_SIZE
        if length < _UNIT_OVERHEAD or length % 4 or start + length > end:
            raise DecodeError("log_rio", "unit_length", base + at,
                              f"unit of {length} bytes does not fit the {end - start} left")
        r_d, _, t_f, _, _, _, _, _, parameter = FC_HEADER_WORDS.unpack_from(view, start + 4)
        payload_end = start + length - _TRAILER - (t_f & _FILL)
        yield r_d >> 24, parameter, view[start + _PAYLOAD_AT:payload_end], base + start
        at = start + length


def parse_command_area(area, base: int = 0) -> RioCommand:
    """The FCP_CMND and data-out of a WR/CTRL area; data frames must tile FCP_DL exactly.

    Untrusted input: FCP_DL is checked against the bytes the area carries after the
    FCP_CMND before anything is copied, and the data-out is joined once from the frames
    present. Anything malformed raises :class:`DecodeError` (field and offset named)."""
    units = _units(area, base)
    first = next(units, None)
    if first is None:
        raise DecodeError("log_rio", "unit_length", base, "empty RIO area")
    r_ctl, _, payload, at = first
    if r_ctl != _CMND:
        raise DecodeError("log_rio", "r_ctl", at, f"first unit is R_CTL 0x{r_ctl:02x}, "
                          "not FCP_CMND")
    if len(payload) != _CMND_SIZE:
        raise DecodeError("fcp_cmnd", "fcp_dl", at + _PAYLOAD_AT,
                          f"FCP_CMND of {len(payload)} bytes, not {_CMND_SIZE}")
    fcp_lun, _, attribute, _, flags, cdb, fcp_dl = _CMND_UNPACK(payload)
    write = flags & fcp.CMND_WRDATA
    after = len(area) - (at - base + _PAYLOAD_AT + _CMND_SIZE)  # area bytes after the FCP_CMND
    if write and fcp_dl > after:
        raise DecodeError("fcp_cmnd", "fcp_dl", at + _PAYLOAD_AT + _FCP_DL_AT,
                          f"FCP_DL of {fcp_dl} bytes, but only {after} bytes of the area "
                          "follow the FCP_CMND; the source built a bad entry")
    pieces = []
    filled = 0
    for r_ctl, parameter, payload, at in units:
        if r_ctl != _DATA or not write:
            raise DecodeError("log_rio", "r_ctl", at, f"unexpected R_CTL 0x{r_ctl:02x} after "
                              "the FCP_CMND")
        if parameter != filled or filled + len(payload) > fcp_dl:
            raise DecodeError("log_rio", "parameter", at, f"data at offset {parameter} of "
                              f"{len(payload)} bytes; expected offset {filled} within {fcp_dl}")
        pieces.append(payload)
        filled += len(payload)
    if write and filled != fcp_dl:
        raise DecodeError("log_rio", "parameter", base, f"{filled} of {fcp_dl} data bytes present")
    return RioCommand(fcp.decode_lun(fcp_lun), cdb,
                      (attribute >> fcp.CMND_ATTRIBUTE_SHIFT) & fcp.CMND_ATTRIBUTE_MASK,
                      b"".join(pieces) if write else b"", fcp_dl if flags & fcp.CMND_RDDATA else 0,
                      fcp.parse_cdb(cdb, base, fast=True))


def parse_response_area(area, base: int = 0) -> ScsiResult:
    """The data-in and FCP_RSP of a WROK/CTRL_OK area: data frames in order, then one
    FCP_RSP, last. The data-in is at most what the area carries; anything malformed
    raises :class:`DecodeError`."""
    pieces = []
    filled = 0
    result = None
    for r_ctl, parameter, payload, at in _units(area, base):
        if result is not None:
            raise DecodeError("log_rio", "r_ctl", at, f"R_CTL 0x{r_ctl:02x} after the FCP_RSP")
        if r_ctl == _DATA:
            if parameter != filled:
                raise DecodeError("log_rio", "parameter", at, f"data-in at offset {parameter}, "
                                  f"expected {filled}")
            pieces.append(payload)
            filled += len(payload)
        elif r_ctl == _RSP:
            result = parse_response(bytes(payload))
        else:
            raise DecodeError("log_rio", "r_ctl", at, f"unexpected R_CTL 0x{r_ctl:02x} in an answer")
    if result is None:
        raise DecodeError("log_rio", "r_ctl", base, "no FCP_RSP in the answer")
    result.data_in = b"".join(pieces)
    return result
