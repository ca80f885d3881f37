"""FC common transport (FC-GS): the name server's GID_PN query.

An array asks the name server (0xFFFFFC) for the N_Port ID of a port name;
the edge answers from its logins. CT frames are TYPE 0x20, R_CTL 0x02
request / 0x03 reply; the payload is a 16-byte preamble and the command's
operand.
"""

from __future__ import annotations

import enum

from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, uint

GS_TYPE_DIRECTORY = 0xFC
GS_SUBTYPE_NAME_SERVER = 0x02


class CtCommand(enum.IntEnum):
    GID_PN = 0x0121
    REJECT = 0x8001
    ACCEPT = 0x8002


CT_PREAMBLE = Layout("ct", [
    uint("revision", 1, "1"),
    uint("in_id", 3, "0"),
    uint("gs_type", 1, "0xFC directory service"),
    uint("gs_subtype", 1, "0x02 name server"),
    uint("options", 1, "0"),
    uint("reserved", 1, "0"),
    uint("command", 2, "0x0121 GID_PN, 0x8002 accept, 0x8001 reject",
         values={v.value: v.name for v in CtCommand}),
    uint("max_residual_size", 2, "0"),
    uint("fragment_id", 1, "0"),
    uint("reason", 1, "reject reason"),
    uint("explanation", 1, "reject explanation"),
    uint("vendor", 1, "vendor unique"),
], doc="CT_IU preamble")

GID_PN_REQUEST = Layout("ct_gid_pn", [
    uint("port_name", 8, "the port name looked up"),
], doc="GID_PN operand")

GID_PN_ACCEPT = Layout("ct_gid_pn_acc", [
    uint("control", 1, "0x80 on the last entry"),
    uint("port_id", 3, "N_Port ID of the name"),
], doc="GID_PN accept operand")

REASON_UNABLE = 0x09
EXPLAIN_PORT_ID_NOT_REGISTERED = 0x01


def _preamble(command: int, **kw) -> bytes:
    return CT_PREAMBLE.build(revision=1, gs_type=GS_TYPE_DIRECTORY,
                             gs_subtype=GS_SUBTYPE_NAME_SERVER, command=command, **kw)


def build_gid_pn(port_name: int) -> bytes:
    return _preamble(CtCommand.GID_PN) + GID_PN_REQUEST.build(port_name=port_name)


def build_gid_pn_accept(port_id: int) -> bytes:
    return _preamble(CtCommand.ACCEPT) + GID_PN_ACCEPT.build(control=0x80, port_id=port_id)


def build_ct_reject(reason: int = REASON_UNABLE,
                    explanation: int = EXPLAIN_PORT_ID_NOT_REGISTERED) -> bytes:
    return _preamble(CtCommand.REJECT, reason=reason, explanation=explanation)


def parse_ct(payload: bytes, request: bool, base: int = 0, fast: bool = False) -> dict:
    """Preamble and, for GID_PN and its accept, the operand."""
    out = dict(CT_PREAMBLE.parse(payload, 0, base, fast))
    try:
        out["command_name"] = CtCommand(out["command"]).name
    except ValueError:
        raise DecodeError("ct", "command", base + 8,
                          f"unknown CT command 0x{out['command']:04x}") from None
    at = CT_PREAMBLE.size
    if out["command"] == CtCommand.GID_PN and request:
        out.update(GID_PN_REQUEST.parse(payload, at, base, fast))
    elif out["command"] == CtCommand.ACCEPT and not request:
        out.update(GID_PN_ACCEPT.parse(payload, at, base, fast))
    return out
