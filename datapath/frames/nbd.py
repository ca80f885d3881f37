"""NBD fixed layouts (NetworkBlockDevice/nbd, doc/proto.md): fixed newstyle, simple replies.

The magic numbers, flags and codes these fields carry are named in
:mod:`rcn.nbd.protocol`, which builds and parses every NBD message through these
tables (their ``packer``: NBD fields are 2, 4 or 8 bytes, so the table's struct is the
whole header in one pack, the speed the server's per-request path needs).

Handshake (server first)::

    S: HANDSHAKE                           NBDMAGIC, IHAVEOPT, handshake flags
    C: CLIENT_FLAGS
    C: OPTION_HEADER + data                IHAVEOPT, option, data length
    S: OPTION_REPLY + data                 reply magic, option, reply type, data length
       (NBD_REP_INFO data: INFO_EXPORT, INFO_BLOCK_SIZE, or a type and a string)
    S: EXPORT_NAME_REPLY [124 zero bytes]  after NBD_OPT_EXPORT_NAME, unless NO_ZEROES

Transmission::

    C: REQUEST [data of a WRITE]
    S: SIMPLE_REPLY [data of a READ]
"""

from __future__ import annotations

from datapath.frames.fields import Layout, uint

HANDSHAKE = Layout("nbd_handshake", [
    uint("magic", 8, "NBDMAGIC 0x4e42444d41474943 (\"NBDMAGIC\")"),
    uint("option_magic", 8, "IHAVEOPT 0x49484156454f5054: newstyle negotiation"),
    uint("handshake_flags", 2, "0x1 FIXED_NEWSTYLE, 0x2 NO_ZEROES"),
], doc="the server's newstyle greeting")

CLIENT_FLAGS = Layout("nbd_client_flags", [
    uint("client_flags", 4, "0x1 FIXED_NEWSTYLE, 0x2 NO_ZEROES"),
], doc="the client's answer to the greeting")

OPTION_HEADER = Layout("nbd_option", [
    uint("magic", 8, "IHAVEOPT 0x49484156454f5054"),
    uint("option", 4, "NBD_OPT_*"),
    uint("length", 4, "bytes of option data that follow"),
], doc="a client's option request")

OPTION_REPLY = Layout("nbd_option_reply", [
    uint("magic", 8, "0x0003e889045565a9"),
    uint("option", 4, "the option answered"),
    uint("reply_type", 4, "NBD_REP_*; bit 31 set for an error"),
    uint("length", 4, "bytes of reply data that follow"),
], doc="the server's reply to an option")

EXPORT_NAME_REPLY = Layout("nbd_export_name_reply", [
    uint("size", 8, "export size in bytes"),
    uint("transmission_flags", 2, "NBD_FLAG_*"),
], doc="the end of the handshake after NBD_OPT_EXPORT_NAME (124 zero bytes follow unless "
       "NO_ZEROES was agreed)")

INFO_EXPORT = Layout("nbd_info_export", [
    uint("info_type", 2, "NBD_INFO_EXPORT 0"),
    uint("size", 8, "export size in bytes"),
    uint("transmission_flags", 2, "NBD_FLAG_*"),
], doc="NBD_REP_INFO data: the export's size and flags")

INFO_BLOCK_SIZE = Layout("nbd_info_block_size", [
    uint("info_type", 2, "NBD_INFO_BLOCK_SIZE 3"),
    uint("minimum", 4, "minimum block size"),
    uint("preferred", 4, "preferred block size"),
    uint("maximum", 4, "maximum payload size"),
], doc="NBD_REP_INFO data: block size constraints")

REQUEST = Layout("nbd_request", [
    uint("magic", 4, "0x25609513"),
    uint("flags", 2, "NBD_CMD_FLAG_*"),
    uint("type", 2, "NBD_CMD_*"),
    uint("cookie", 8, "the client's handle, echoed in the reply"),
    uint("offset", 8, "byte offset in the export"),
    uint("length", 4, "bytes to read or write"),
], doc="a transmission request (a WRITE's data follows)")

SIMPLE_REPLY = Layout("nbd_simple_reply", [
    uint("magic", 4, "0x67446698"),
    uint("error", 4, "0 or an NBD error (errno value)"),
    uint("cookie", 8, "the request's cookie"),
], doc="a simple reply (a successful READ's data follows)")
