"""The NBD wire format: magic numbers, flags, codes, and the layouts' packers.

From the NBD protocol specification (NetworkBlockDevice/nbd, doc/proto.md),
fixed newstyle negotiation, simple replies. Every field is big-endian. The
fixed layouts are field tables in :mod:`datapath.frames.nbd`; the names below
(``HANDSHAKE``, ``REQUEST``, ...) are those tables' ``struct.Struct`` packers, so
a header is one pack or unpack on the hot path and its layout is written once.

Handshake (server first)::

    S: NBDMAGIC (u64)  IHAVEOPT (u64)  handshake flags (u16)        HANDSHAKE
    C: client flags (u32)                                          CLIENT_FLAGS
    C: IHAVEOPT (u64)  option (u32)  length (u32)  data             OPTION_HEADER
    S: REPLY_MAGIC (u64)  option (u32)  reply type (u32)  length (u32)  data
                                                                    OPTION_REPLY
    S: (after NBD_OPT_EXPORT_NAME) size (u64) transmission flags (u16)
       [124 zero bytes unless NO_ZEROES]                           EXPORT_NAME_REPLY

Transmission::

    C: REQUEST_MAGIC (u32) flags (u16) type (u16) cookie (u64) offset (u64)
       length (u32) [data for WRITE]                                REQUEST
    S: SIMPLE_REPLY_MAGIC (u32) error (u32) cookie (u64) [data for READ]
                                                                    SIMPLE_REPLY
"""

from __future__ import annotations

import struct

from datapath.frames import nbd

# -- magic numbers ----------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF    # not used: structured replies are refused
EXTENDED_REQUEST_MAGIC = 0x21E41C71    # not used: extended headers are refused

# -- handshake flags (server, u16) and client flags (u32) ---------------------

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1
CLIENT_FLAGS_KNOWN = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES

# -- transmission flags (u16) ---------------------------------------------------

FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_RESIZE = 1 << 9
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# -- options ------------------------------------------------------------------

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

OPTION_NAMES = {
    OPT_EXPORT_NAME: "EXPORT_NAME", OPT_ABORT: "ABORT", OPT_LIST: "LIST",
    OPT_PEEK_EXPORT: "PEEK_EXPORT", OPT_STARTTLS: "STARTTLS", OPT_INFO: "INFO", OPT_GO: "GO",
    OPT_STRUCTURED_REPLY: "STRUCTURED_REPLY", OPT_LIST_META_CONTEXT: "LIST_META_CONTEXT",
    OPT_SET_META_CONTEXT: "SET_META_CONTEXT", OPT_EXTENDED_HEADERS: "EXTENDED_HEADERS",
}

# -- option reply types -----------------------------------------------------------

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9
REP_ERR_EXT_HEADER_REQD = REP_FLAG_ERROR | 10

# -- NBD_REP_INFO types -----------------------------------------------------------

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# -- commands and command flags ------------------------------------------------------

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_RESIZE = 8

COMMAND_NAMES = {
    CMD_READ: "read", CMD_WRITE: "write", CMD_DISC: "disc", CMD_FLUSH: "flush",
    CMD_TRIM: "trim", CMD_CACHE: "cache", CMD_WRITE_ZEROES: "write_zeroes",
    CMD_BLOCK_STATUS: "block_status", CMD_RESIZE: "resize",
}

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
CMD_FLAG_PAYLOAD_LEN = 1 << 5

# -- error codes (the reply's error field) ------------------------------------------

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

ERROR_NAMES = {EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
               ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP",
               ESHUTDOWN: "ESHUTDOWN"}

# -- layouts ----------------------------------------------------------------------------

HANDSHAKE = nbd.HANDSHAKE.packer                  # NBDMAGIC, IHAVEOPT, handshake flags
CLIENT_FLAGS = nbd.CLIENT_FLAGS.packer
OPTION_HEADER = nbd.OPTION_HEADER.packer          # IHAVEOPT, option, length
OPTION_REPLY = nbd.OPTION_REPLY.packer            # magic, option, reply type, length
EXPORT_NAME_REPLY = nbd.EXPORT_NAME_REPLY.packer  # size, transmission flags (+124 zeroes)
EXPORT_NAME_PAD = 124
REQUEST = nbd.REQUEST.packer                      # magic, flags, type, cookie, offset, length
SIMPLE_REPLY = nbd.SIMPLE_REPLY.packer            # magic, error, cookie
INFO_EXPORT_LAYOUT = nbd.INFO_EXPORT.packer       # INFO_EXPORT, size, transmission flags
INFO_BLOCK_SIZE_LAYOUT = nbd.INFO_BLOCK_SIZE.packer   # INFO_BLOCK_SIZE, min, preferred, max
# the integers of variable-length option data (name lengths, info types)
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

# Strings (export names, descriptions, messages) are at most 4096 bytes.
MAX_STRING = 4096


def handshake(flags: int = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) -> bytes:
    return HANDSHAKE.pack(NBDMAGIC, IHAVEOPT, flags)


def option_request(option: int, data: bytes = b"") -> bytes:
    """A client's option (used by tests and tools)."""
    return OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data


def option_reply(option: int, reply_type: int, data: bytes = b"") -> bytes:
    return OPTION_REPLY.pack(OPTION_REPLY_MAGIC, option, reply_type, len(data)) + data


def go_data(name: bytes, info_requests: tuple[int, ...] = ()) -> bytes:
    """The data of NBD_OPT_INFO / NBD_OPT_GO: name, then the info types asked for."""
    return (U32.pack(len(name)) + name + U16.pack(len(info_requests))
            + b"".join(U16.pack(i) for i in info_requests))


def parse_go_data(data: bytes) -> tuple[bytes, list[int]]:
    """Split NBD_OPT_INFO / NBD_OPT_GO data; ValueError says what is malformed."""
    if len(data) < 6:
        raise ValueError(f"option data is {len(data)} bytes, needs at least 6 "
                         f"(name length, info request count)")
    (name_len,) = U32.unpack_from(data, 0)
    if name_len > MAX_STRING:
        raise ValueError(f"export name length {name_len} exceeds {MAX_STRING}")
    if 4 + name_len + 2 > len(data):
        raise ValueError(f"export name length {name_len} overruns the {len(data)}-byte option")
    name = bytes(data[4:4 + name_len])
    (count,) = U16.unpack_from(data, 4 + name_len)
    rest = len(data) - (6 + name_len)
    if rest != 2 * count:
        raise ValueError(f"{count} info requests need {2 * count} bytes, option carries {rest}")
    base = 6 + name_len
    return name, [U16.unpack_from(data, base + 2 * i)[0] for i in range(count)]


def request(cmd: int, cookie: int, offset: int = 0, length: int = 0, flags: int = 0,
            data: bytes = b"") -> bytes:
    """A client's transmission request (used by tests and tools)."""
    return REQUEST.pack(REQUEST_MAGIC, flags, cmd, cookie, offset, length) + data


def simple_reply(cookie: int, error: int = 0) -> bytes:
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, cookie)
