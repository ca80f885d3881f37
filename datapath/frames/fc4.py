"""Dispatch an FC frame's payload to its FC-4 / link-service decoder.

``frame_kind`` names a frame in one word (``fcp_cmnd``, ``els_plogi``,
``bls_abts``, ``ct_gid_pn``...); ``decode_fc_payload`` returns the payload's
fields as a plain dict, WWNs as colon-separated text.
"""

from __future__ import annotations

from datapath.frames import ct, els, fcp
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FcFrame, FcType, RCtl
from datapath.frames.names import format_wwn

_FCP_KINDS = {RCtl.FCP_CMND: "fcp_cmnd", RCtl.FCP_DATA: "fcp_data",
              RCtl.FCP_XFER_RDY: "fcp_xfer_rdy", RCtl.FCP_RSP: "fcp_rsp"}
_BLS_KINDS = {RCtl.BLS_ABTS: "bls_abts", RCtl.BLS_BA_ACC: "bls_ba_acc",
              RCtl.BLS_BA_RJT: "bls_ba_rjt"}
_WWN_KEYS = ("port_name", "node_name")


def frame_kind(frame: FcFrame) -> str:
    r_ctl, fc_type = frame.header["r_ctl"], frame.header["type"]
    if fc_type == FcType.FCP and r_ctl in _FCP_KINDS:
        return _FCP_KINDS[r_ctl]
    if fc_type == FcType.ELS and r_ctl in (RCtl.ELS_REQUEST, RCtl.ELS_REPLY):
        try:
            return "els_" + els.ElsCommand(frame.payload[0]).name.lower()
        except (IndexError, ValueError):
            return "els_unknown"
    if fc_type == FcType.BLS and r_ctl in _BLS_KINDS:
        return _BLS_KINDS[r_ctl]
    if fc_type == FcType.CT and r_ctl in (RCtl.CT_REQUEST, RCtl.CT_REPLY):
        command = int.from_bytes(frame.payload[8:10], "big")
        try:
            return "ct_" + ct.CtCommand(command).name.lower()
        except ValueError:
            return "ct_unknown"
    return "fc_other"


def decode_fc_payload(frame: FcFrame, base: int = 0, fast: bool = True) -> dict:
    """Fields of the payload; ``base`` is the payload's offset for error reports."""
    base += 24   # payload follows the FC header
    r_ctl, fc_type, payload = frame.header["r_ctl"], frame.header["type"], frame.payload
    if fc_type == FcType.FCP:
        if r_ctl == RCtl.FCP_CMND:
            out = fcp.parse_fcp_cmnd(payload, base, fast)
        elif r_ctl == RCtl.FCP_RSP:
            out = fcp.parse_fcp_rsp(payload, base, fast)
        elif r_ctl == RCtl.FCP_XFER_RDY:
            out = fcp.parse_xfer_rdy(payload, base, fast)
        elif r_ctl == RCtl.FCP_DATA:
            out = {"relative_offset": frame.header["parameter"], "length": len(payload)}
        else:
            raise DecodeError("fc", "r_ctl", base - 24, f"R_CTL 0x{r_ctl:02x} is not an FCP IU")
    elif fc_type == FcType.ELS:
        out = els.parse_els(payload, base, fast)
    elif fc_type == FcType.BLS:
        out = els.parse_bls(r_ctl, payload, base, fast)
    elif fc_type == FcType.CT:
        out = ct.parse_ct(payload, r_ctl == RCtl.CT_REQUEST, base, fast)
    else:
        out = {"length": len(payload)}
    for key in _WWN_KEYS:
        if key in out:
            out[key] = format_wwn(out[key])
    return out
