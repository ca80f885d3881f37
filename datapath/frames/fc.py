"""FC-2 frames: the 24-byte header, SOF/EOF delimiters and the FC CRC-32.

Two delimiter encodings exist on the transports we use:

* FCIP (RFC 3643) and our own framing: one word ``c, c, ~c, ~c`` with the
  SOF/EOF code ``c`` (:func:`delimiter_word`);
* LINKTYPE 225 captures and the RIO area of log entries (which Wireshark's
  ``fcsof`` dissector reads): the 8b/10b ordered sets ``BC B5 56 56`` etc.
  (:data:`SOF_ORDERED_SETS`, :data:`EOF_ORDERED_SETS`).

The CRC is zlib's CRC-32 over header and padded payload, stored little-endian
(Linux FCoE byte order; ``fc.crc.status`` good in tshark).

Two builders make the same bytes from the one header table: :func:`build_fc_frame`
(a header dict, checked by the table's construct Struct: the reference) and
:func:`fc_frame_parts` (positional fields, one pack of :data:`FC_HEADER_WORDS`: the
hot path of the FCIP encoder and the log entry's RIO area).
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, uint


class RCtl(enum.IntEnum):
    FCP_DATA = 0x01
    CT_REQUEST = 0x02
    CT_REPLY = 0x03
    FCP_XFER_RDY = 0x05
    FCP_CMND = 0x06
    FCP_RSP = 0x07
    ELS_REQUEST = 0x22
    ELS_REPLY = 0x23
    BLS_ABTS = 0x81
    BLS_BA_ACC = 0x84
    BLS_BA_RJT = 0x85


class FcType(enum.IntEnum):
    BLS = 0x00
    ELS = 0x01
    FCP = 0x08
    CT = 0x20


class FCtl(enum.IntFlag):
    EXCHANGE_CONTEXT = 1 << 23   # sent by the exchange responder
    SEQUENCE_CONTEXT = 1 << 22
    FIRST_SEQUENCE = 1 << 21
    LAST_SEQUENCE = 1 << 20
    END_SEQUENCE = 1 << 19
    SEQUENCE_INITIATIVE = 1 << 16
    RETRANSMITTED = 1 << 9
    RELATIVE_OFFSET = 1 << 3
    FILL_MASK = 0x3


class Sof(enum.IntEnum):
    F = 0x28
    I4 = 0x29
    I2 = 0x2D
    I3 = 0x2E
    N4 = 0x31
    N2 = 0x35
    N3 = 0x36
    C4 = 0x39


class Eof(enum.IntEnum):
    N = 0x41
    T = 0x42
    RT = 0x44
    DT = 0x46
    NI = 0x49
    DTI = 0x4E
    RTI = 0x4F
    A = 0x50


#: Well-known addresses
FABRIC_LOGIN_SERVER = 0xFFFFFE
NAME_SERVER = 0xFFFFFC

FC_HEADER = Layout("fc", [
    uint("r_ctl", 1, "routing (high nibble) and information category (low nibble)",
         values={v.value: v.name for v in RCtl}),
    uint("d_id", 3, "destination N_Port ID"),
    uint("cs_ctl", 1, "class-specific control / priority"),
    uint("s_id", 3, "source N_Port ID"),
    uint("type", 1, "data structure type", values={v.value: v.name for v in FcType}),
    uint("f_ctl", 3, "frame control"),
    uint("seq_id", 1, "sequence ID"),
    uint("df_ctl", 1, "data field control (optional headers)"),
    uint("seq_cnt", 2, "frame count within the sequence"),
    uint("ox_id", 2, "originator exchange ID"),
    uint("rx_id", 2, "responder exchange ID, 0xFFFF until assigned"),
    uint("parameter", 4, "relative offset when F_CTL bit 3 is set"),
], doc="FC-2 frame header")

FC_HEADER_SIZE = FC_HEADER.size
FC_CRC_SIZE = 4
MAX_PAYLOAD = 2112
#: the FC CRC as stored after the padded payload (little-endian)
FC_CRC = struct.Struct("<I")
_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _word_format(layout: Layout) -> str:
    """``layout``'s struct format with each 1-byte field and the 3-byte field after it as
    one 32-bit word (the 3-byte field in its low 24 bits): struct has no 3-byte code."""
    codes, fields, i = [], layout.fields, 0
    while i < len(fields):
        if fields[i].width == 1 and i + 1 < len(fields) and fields[i + 1].width == 3:
            codes.append("I")
            i += 2
        else:
            codes.append(_STRUCT_CODES[fields[i].width])
            i += 1
    return ">" + "".join(codes)


#: FC_HEADER in 9 values: R_CTL|D_ID, CS_CTL|S_ID, TYPE|F_CTL words, then SEQ_ID .. Parameter
#: as the table has them; one pack per frame (twice as fast as the table's ``packer``, which
#: needs the 3-byte fields as bytes)
FC_HEADER_WORDS = struct.Struct(_word_format(FC_HEADER))
_FILL = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_F_CTL_WITHOUT_FILL = 0xFFFFFF & ~int(FCtl.FILL_MASK)

#: ordered set of each SOF code (LINKTYPE 225, fcsof)
SOF_ORDERED_SETS = {
    Sof.F: 0xBCB55858, Sof.I2: 0xBCB55555, Sof.N2: 0xBCB53535, Sof.I3: 0xBCB55656,
    Sof.N3: 0xBCB53636, Sof.C4: 0xBCB51919, Sof.I4: 0xBCB55959, Sof.N4: 0xBCB53939,
}
#: ordered sets of each EOF code; the first of each pair is the one we send
EOF_ORDERED_SETS = {
    Eof.N: (0xBC95D5D5, 0xBCB5D5D5), Eof.T: (0xBCB57575, 0xBC957575),
    Eof.DT: (0xBCB59595, 0xBC959595), Eof.A: (0xBCB5F5F5, 0xBC95F5F5),
    Eof.NI: (0xBCAAD5D5, 0xBC8AD5D5), Eof.DTI: (0xBCAA9595, 0xBC8A9595),
    Eof.RT: (0xBCB59999, 0xBC959999), Eof.RTI: (0xBCAA9999, 0xBC8A9999),
}
_SOF_BY_ORDERED_SET = {word: code for code, word in SOF_ORDERED_SETS.items()}
_EOF_BY_ORDERED_SET = {word: code for code, words in EOF_ORDERED_SETS.items() for word in words}


def delimiter_word(code: int) -> bytes:
    """The FCIP delimiter word ``c, c, ~c, ~c``."""
    inv = ~code & 0xFF
    return bytes((code, code, inv, inv))


def parse_delimiter_word(data, offset: int, layer: str, field: str, codes: type[enum.IntEnum],
                         base: int = 0) -> enum.IntEnum:
    word = bytes(data[offset:offset + 4])
    where = base + offset
    if len(word) < 4:
        raise DecodeError(layer, field, where, f"truncated: {len(word)} of 4 delimiter bytes")
    c = word[0]
    if word[1] != c or word[2] != (~c & 0xFF) or word[3] != (~c & 0xFF):
        raise DecodeError(layer, field, where, f"malformed delimiter word {word.hex()}")
    try:
        return codes(c)
    except ValueError:
        raise DecodeError(layer, field, where, f"unknown {field.upper()} code 0x{c:02x}") from None


def fc_crc(header_and_payload: bytes) -> bytes:
    return FC_CRC.pack(zlib.crc32(header_and_payload))


@dataclass
class FcFrame:
    header: dict
    payload: bytes         # without fill bytes
    crc_ok: bool
    sof: int | None = None
    eof: int | None = None

    @property
    def r_ctl(self) -> int:
        return self.header["r_ctl"]


def build_fc_frame(header: dict, payload: bytes = b"") -> bytes:
    """Header + payload padded to a word + CRC. F_CTL's fill-byte count is set here."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"fc: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    fill = -len(payload) % 4
    fields = dict(header)
    fields["f_ctl"] = (int(fields.get("f_ctl", 0)) & ~int(FCtl.FILL_MASK)) | fill
    if "rx_id" not in fields:
        fields["rx_id"] = 0xFFFF
    body = FC_HEADER.build(fields) + payload + bytes(fill)
    return body + fc_crc(body)


def fc_frame_parts(r_ctl: int, d_id: int, s_id: int, fc_type: int, f_ctl: int, seq_id: int,
                   seq_cnt: int, ox_id: int, rx_id: int, parameter: int, payload=b"",
                   cs_ctl: int = 0, df_ctl: int = 0) -> tuple[bytes, bytes, bytes]:
    """An FC frame as ``(header, fill, crc)``; the payload goes between header and fill.

    The bytes of :func:`build_fc_frame` (F_CTL's fill-byte count is set here) from one
    :data:`FC_HEADER_WORDS` pack. The FCIP encoder and the log entry's RIO area wrap these
    parts in their own delimiters.
    """
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise ValueError(f"fc: payload of {size} bytes exceeds {MAX_PAYLOAD}")
    fill = -size & 3
    header = FC_HEADER_WORDS.pack((r_ctl << 24) | d_id, (cs_ctl << 24) | s_id,
                                  (fc_type << 24) | (f_ctl & _F_CTL_WITHOUT_FILL) | fill,
                                  seq_id, df_ctl, seq_cnt, ox_id, rx_id, parameter)
    pad = _FILL[fill]
    crc = zlib.crc32(pad, zlib.crc32(payload, zlib.crc32(header)))
    return header, pad, FC_CRC.pack(crc)


def parse_fc_frame(data, offset: int = 0, end: int | None = None, base: int = 0,
                   fast: bool = False) -> FcFrame:
    """Header, payload and CRC status of the FC frame in ``data[offset:end]``.

    A bad CRC does not raise: callers count it (``crc_ok``).
    """
    end = len(data) if end is None else end
    length = end - offset
    if length < FC_HEADER_SIZE + FC_CRC_SIZE:
        FC_HEADER.check_length(data[:end], offset, base)
        raise DecodeError("fc", "crc", base + end, f"truncated: {length} bytes hold no CRC")
    if length % 4:
        raise DecodeError("fc", "payload", base + offset + FC_HEADER_SIZE,
                          f"frame length {length} is not a multiple of 4")
    header = FC_HEADER.parse(data, offset, base, fast)
    body = bytes(data[offset:end - FC_CRC_SIZE])
    crc_ok = fc_crc(body) == bytes(data[end - FC_CRC_SIZE:end])
    fill = header["f_ctl"] & FCtl.FILL_MASK
    payload = body[FC_HEADER_SIZE:len(body) - fill] if fill <= len(body) - FC_HEADER_SIZE else b""
    return FcFrame(header, payload, crc_ok)


def build_sof_eof_unit(header: dict, payload: bytes = b"", sof: int = Sof.I3,
                       eof: int = Eof.T) -> bytes:
    """One frame with ordered-set delimiters: LINKTYPE 225 and the log entry RIO area."""
    return (SOF_ORDERED_SETS[Sof(sof)].to_bytes(4, "big") + build_fc_frame(header, payload)
            + EOF_ORDERED_SETS[Eof(eof)][0].to_bytes(4, "big"))


def parse_sof_eof_unit(data, offset: int = 0, end: int | None = None, base: int = 0,
                       fast: bool = False) -> FcFrame:
    end = len(data) if end is None else end
    if end - offset < 8:
        raise DecodeError("fc", "sof", base + offset, f"truncated: {end - offset} bytes")
    sof_word = int.from_bytes(data[offset:offset + 4], "big")
    eof_word = int.from_bytes(data[end - 4:end], "big")
    if sof_word not in _SOF_BY_ORDERED_SET:
        raise DecodeError("fc", "sof", base + offset, f"unknown SOF ordered set 0x{sof_word:08x}")
    if eof_word not in _EOF_BY_ORDERED_SET:
        raise DecodeError("fc", "eof", base + end - 4, f"unknown EOF ordered set 0x{eof_word:08x}")
    frame = parse_fc_frame(data, offset + 4, end - 4, base, fast)
    frame.sof = _SOF_BY_ORDERED_SET[sof_word]
    frame.eof = _EOF_BY_ORDERED_SET[eof_word]
    return frame
