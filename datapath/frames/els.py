"""Extended and basic link services (FC-LS): the logins an edge answers.

ELS frames (TYPE 0x01, R_CTL 0x22 request / 0x23 reply) carry a command code
in byte 0. FLOGI, PLOGI and their LS_ACC share the 116-byte service
parameter layout (:data:`LOGIN`); PRLI and its LS_ACC carry one FCP service
parameter page (:data:`PRLI`). BLS frames (TYPE 0) are ABTS (no payload),
BA_ACC and BA_RJT.
"""

from __future__ import annotations

import enum

from datapath.frames.errors import DecodeError
from datapath.frames.fc import RCtl
from datapath.frames.fields import Layout, raw, uint


class ElsCommand(enum.IntEnum):
    LS_RJT = 0x01
    LS_ACC = 0x02
    PLOGI = 0x03
    FLOGI = 0x04
    LOGO = 0x05
    PRLI = 0x20
    PRLO = 0x21
    SCR = 0x62


class LsRjtReason(enum.IntEnum):
    INVALID_COMMAND = 0x01
    LOGICAL_ERROR = 0x03
    LOGICAL_BUSY = 0x05
    PROTOCOL_ERROR = 0x07
    UNABLE_TO_PERFORM = 0x09
    NOT_SUPPORTED = 0x0B


#: LS_RJT explanations we send
EXPLAIN_NONE = 0x00
EXPLAIN_INVALID_PORT_NAME = 0x0D     # the WWN is not allowed to log in (table 405)
EXPLAIN_NOT_LOGGED_IN = 0x1E

#: common service parameter features
FEATURE_CONTINUOUS_OFFSET = 0x8000
FEATURE_F_PORT = 0x1000              # set by the fabric in its FLOGI LS_ACC
CLASS_VALID = 0x8000
CLASS_SEQUENTIAL_DELIVERY = 0x0800

#: FCP service parameters (PRLI page, word 3)
FCP_WRITE_XFER_RDY_DISABLED = 0x0001
FCP_READ_XFER_RDY_DISABLED = 0x0002
FCP_TARGET_FUNCTION = 0x0010
FCP_INITIATOR_FUNCTION = 0x0020
PRLI_ESTABLISH_IMAGE_PAIR = 0x20
PRLI_REQUEST_EXECUTED = 0x1          # accept response code
FC4_TYPE_FCP = 0x08

LOGIN = Layout("els_login", [
    uint("command", 1, "0x04 FLOGI, 0x03 PLOGI, 0x02 LS_ACC",
         values={v.value: v.name for v in ElsCommand}),
    uint("reserved", 3, "0"),
    uint("fc_ph_version", 2, "highest and lowest FC-PH version"),
    uint("bb_credit", 2, "buffer-to-buffer credit"),
    uint("common_features", 2, "0x8000 continuously increasing offset, 0x1000 F_Port"),
    uint("bb_rcv_size", 2, "largest frame payload received (low 12 bits)"),
    uint("total_concurrent_seq", 2, "total concurrent sequences"),
    uint("rel_offset_by_category", 2, "relative offset by information category"),
    uint("e_d_tov", 4, "error detect timeout, ms"),
    uint("port_name", 8, "N_Port name (WWPN)"),
    uint("node_name", 8, "node name (WWNN)"),
    raw("class1", 16, "class 1 service parameters"),
    raw("class2", 16, "class 2 service parameters"),
    uint("class3_options", 2, "0x8000 class valid, 0x0800 sequential delivery"),
    uint("class3_initiator_ctl", 2, "initiator control"),
    uint("class3_recipient_ctl", 2, "recipient control"),
    uint("class3_rcv_size", 2, "class 3 receive data field size"),
    uint("class3_concurrent_seq", 2, "concurrent sequences"),
    uint("class3_ee_credit", 2, "end-to-end credit"),
    uint("class3_open_seq", 2, "open sequences per exchange"),
    uint("class3_reserved", 2, "0"),
    raw("class4", 16, "class 4 service parameters"),
    raw("vendor_version", 16, "vendor version level"),
], doc="FLOGI / PLOGI / their LS_ACC: service parameters")

PRLI = Layout("els_prli", [
    uint("command", 1, "0x20 PRLI, 0x02 LS_ACC"),
    uint("page_length", 1, "16"),
    uint("payload_length", 2, "4 + 16 per page"),
    uint("type_code", 1, "FC-4 type, 0x08 FCP"),
    uint("type_code_ext", 1, "0"),
    uint("pair_flags", 1, "PA valid bits, establish image pair, accept response code",
         bits=(("originator_pa_valid", 1), ("responder_pa_valid", 1), ("image_pair", 1),
               ("reserved_flag", 1), ("response_code", 4))),
    uint("reserved", 1, "0"),
    uint("originator_pa", 4, "originator process associator"),
    uint("responder_pa", 4, "responder process associator"),
    uint("service_params", 4, "FCP: 0x01 write XFER_RDY disabled, 0x02 read XFER_RDY "
                              "disabled, 0x10 target, 0x20 initiator"),
], doc="PRLI / its LS_ACC with one FCP service parameter page")

LS_RJT = Layout("els_ls_rjt", [
    uint("command", 1, "0x01"),
    uint("reserved", 4, "0"),
    uint("reason", 1, "reason code", values={v.value: v.name for v in LsRjtReason}),
    uint("explanation", 1, "reason explanation"),
    uint("vendor", 1, "vendor unique"),
], doc="LS_RJT")

LOGO = Layout("els_logo", [
    uint("command", 1, "0x05"),
    uint("reserved", 4, "0"),
    uint("port_id", 3, "N_Port ID logging out"),
    uint("port_name", 8, "N_Port name logging out"),
], doc="LOGO")

LS_ACC = Layout("els_ls_acc", [
    uint("command", 1, "0x02"),
    uint("reserved", 3, "0"),
], doc="LS_ACC without service parameters (LOGO, PRLO, SCR)")

BA_ACC = Layout("bls_ba_acc", [
    uint("seq_id_valid", 1, "0x80 when seq_id is meaningful"),
    uint("seq_id", 1, "last deliverable sequence"),
    uint("reserved", 2, "0"),
    uint("ox_id", 2, "aborted exchange, originator ID"),
    uint("rx_id", 2, "aborted exchange, responder ID"),
    uint("low_seq_cnt", 2, "lowest SEQ_CNT aborted"),
    uint("high_seq_cnt", 2, "highest SEQ_CNT aborted"),
], doc="BA_ACC (answer to ABTS)")

BA_RJT = Layout("bls_ba_rjt", [
    uint("reserved", 1, "0"),
    uint("reason", 1, "reason code"),
    uint("explanation", 1, "reason explanation"),
    uint("vendor", 1, "vendor unique"),
], doc="BA_RJT")

_COMMAND_LAYOUT = {ElsCommand.FLOGI: LOGIN, ElsCommand.PLOGI: LOGIN, ElsCommand.PRLI: PRLI,
                   ElsCommand.LS_RJT: LS_RJT, ElsCommand.LOGO: LOGO}


def build_login(command: int, port_name: int, node_name: int, fabric: bool = False,
                rcv_size: int = 2048) -> bytes:
    """FLOGI, PLOGI or the LS_ACC answering one (``fabric``: sent by the F_Port)."""
    features = FEATURE_CONTINUOUS_OFFSET | (FEATURE_F_PORT if fabric else 0)
    return LOGIN.build(
        command=command, fc_ph_version=0x2020, bb_credit=16, common_features=features,
        bb_rcv_size=rcv_size, total_concurrent_seq=255, rel_offset_by_category=0x1F,
        e_d_tov=2000, port_name=port_name, node_name=node_name,
        class3_options=CLASS_VALID | CLASS_SEQUENTIAL_DELIVERY, class3_rcv_size=rcv_size,
        class3_concurrent_seq=255, class3_open_seq=1)


def build_prli(service_params: int, accept: bool = False) -> bytes:
    """PRLI (initiator) or its LS_ACC (target) for FCP, establishing the image pair."""
    return PRLI.build(
        command=ElsCommand.LS_ACC if accept else ElsCommand.PRLI, page_length=16,
        payload_length=PRLI.size, type_code=FC4_TYPE_FCP, image_pair=1,
        response_code=PRLI_REQUEST_EXECUTED if accept else 0, service_params=service_params)


def build_ls_rjt(reason: int, explanation: int = EXPLAIN_NONE) -> bytes:
    return LS_RJT.build(command=ElsCommand.LS_RJT, reason=reason, explanation=explanation)


def build_logo(port_id: int, port_name: int) -> bytes:
    return LOGO.build(command=ElsCommand.LOGO, port_id=port_id, port_name=port_name)


def build_ls_acc() -> bytes:
    return LS_ACC.build(command=ElsCommand.LS_ACC)


def build_ba_acc(ox_id: int, rx_id: int) -> bytes:
    return BA_ACC.build(ox_id=ox_id, rx_id=rx_id, high_seq_cnt=0xFFFF)


def _reply_layout(payload: bytes) -> Layout:
    """An LS_ACC's layout follows the request it answers; tell it by its shape."""
    if len(payload) >= LOGIN.size:
        return LOGIN
    if len(payload) >= PRLI.size and payload[1] == 16:
        return PRLI
    return LS_ACC


def parse_els(payload: bytes, base: int = 0, fast: bool = False) -> dict:
    """Decode an ELS payload; the result carries ``command_name``."""
    if not payload:
        raise DecodeError("els", "command", base, "empty ELS payload")
    try:
        command = ElsCommand(payload[0])
    except ValueError:
        raise DecodeError("els", "command", base, f"unknown ELS command 0x{payload[0]:02x}") from None
    layout = _reply_layout(payload) if command == ElsCommand.LS_ACC \
        else _COMMAND_LAYOUT.get(command, LS_ACC)
    out = dict(layout.parse(payload, 0, base, fast))
    for name in ("class1", "class2", "class4", "vendor_version"):
        out.pop(name, None)
    out["command_name"] = command.name
    return out


def parse_bls(r_ctl: int, payload: bytes, base: int = 0, fast: bool = False) -> dict:
    if r_ctl == RCtl.BLS_BA_ACC:
        return dict(BA_ACC.parse(payload, 0, base, fast), command_name="BA_ACC")
    if r_ctl == RCtl.BLS_BA_RJT:
        return dict(BA_RJT.parse(payload, 0, base, fast), command_name="BA_RJT")
    if r_ctl == RCtl.BLS_ABTS:
        return {"command_name": "ABTS"}
    raise DecodeError("bls", "r_ctl", base, f"unknown basic link service R_CTL 0x{r_ctl:02x}")
