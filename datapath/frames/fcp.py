"""FCP information units (FCP-4) and the SCSI CDBs RCN sends.

A write exchange is FCP_CMND (WRITE(16)) -> [FCP_XFER_RDY] -> FCP_DATA... ->
FCP_RSP. FCP_DATA has no header of its own: the FC header's Parameter field
holds the relative offset (F_CTL bit 3 set).

Pair control travels as the vendor-specific CDB ``RCN CONTROL`` (opcode 0xC1):

====  =====================================================================
byte  field
====  =====================================================================
0     opcode 0xC1
1     service action: 1 PAIR_CREATE, 2 DUPLEX, 3 RESYNC, 4 SUSPEND, 5 TAKEOVER
2     flags: 0x01 FAST (answer without waiting for the remote side's flush)
3     reserved
4-7   order guarantee (consistency group) ID
8-9   source LUN (the target LUN is the FCP_LUN of the command)
10-13 allocation length: bytes of data-in the initiator accepts (RESYNC's bitmap)
14    reserved
15    control
====  =====================================================================

The builders of what the daemons send per command (FCP_CMND, READ/WRITE(16),
XFER_RDY) pack positionally with the table's ``packer`` (the fields in table
order; the golden vectors hold them to it): 1 us against 5-30 us for
``Layout.build``'s keyword path.
"""

from __future__ import annotations

import enum
import struct

from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, raw, uint


class TaskAttribute(enum.IntEnum):
    SIMPLE = 0
    HEAD_OF_QUEUE = 1
    ORDERED = 2
    ACA = 4


class ScsiStatus(enum.IntEnum):
    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class RcnServiceAction(enum.IntEnum):
    PAIR_CREATE = 1
    DUPLEX = 2
    RESYNC = 3
    SUSPEND = 4
    TAKEOVER = 5
    DELETE = 6


class Opcode(enum.IntEnum):
    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    INQUIRY = 0x12
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_16 = 0x88
    WRITE_16 = 0x8A
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    RCN_CONTROL = 0xC1


RCN_CONTROL_FAST = 0x01      # SUSPEND from the target side: answer at once (【0087】)
RCN_CONTROL_FAILURE = 0x02   # SUSPEND sent by an edge: go to failure Suspend (【0084】)
RSP_RESID_UNDER = 0x08
RSP_RESID_OVER = 0x04
RSP_SNS_LEN_VALID = 0x02
RSP_RSP_LEN_VALID = 0x01

FCP_CMND = Layout("fcp_cmnd", [
    uint("fcp_lun", 8, "logical unit, SAM-5 eight-byte LUN"),
    uint("crn", 1, "command reference number"),
    uint("task_attribute", 1, "priority (bits 6-3) and task attribute (bits 2-0)",
         bits=(("reserved_attr", 1), ("priority", 4), ("attribute", 3))),
    uint("task_management", 1, "task management flags"),
    uint("cdb_len_rw", 1, "additional CDB length in words, RDDATA, WRDATA",
         bits=(("additional_cdb_length", 6), ("rddata", 1), ("wrdata", 1))),
    raw("cdb", 16, "SCSI command descriptor block"),
    uint("fcp_dl", 4, "bytes the command transfers"),
], doc="FCP_CMND information unit")

FCP_XFER_RDY = Layout("fcp_xfer_rdy", [
    uint("relative_offset", 4, "offset of the data the target wants next"),
    uint("burst_length", 4, "bytes the target accepts in this burst"),
    uint("reserved", 4, "0"),
], doc="FCP_XFER_RDY information unit")

FCP_RSP = Layout("fcp_rsp", [
    raw("reserved", 8, "0"),
    uint("retry_delay", 2, "status qualifier / retry delay timer"),
    uint("flags", 1, "0x08 residual under, 0x04 over, 0x02 sense length valid, "
                     "0x01 response length valid"),
    uint("scsi_status", 1, "SCSI status", values={v.value: v.name for v in ScsiStatus}),
    uint("residual", 4, "bytes not transferred (under) or not accepted (over)"),
    uint("sense_length", 4, "bytes of sense data after the response info"),
    uint("response_length", 4, "bytes of response info (0, 4 or 8)"),
], doc="FCP_RSP information unit, fixed part")

WRITE_16 = Layout("scsi", [
    uint("opcode", 1, "0x8A WRITE(16), 0x88 READ(16)", values={v.value: v.name for v in Opcode}),
    uint("cdb_flags", 1, "WRPROTECT/RDPROTECT 0xE0, DPO 0x10, FUA 0x08"),
    uint("lba", 8, "first logical block"),
    uint("transfer_length", 4, "number of blocks"),
    uint("group_number", 1, "group number (low 5 bits)"),
    uint("control", 1, "control byte"),
], doc="READ(16) / WRITE(16) CDB")

RCN_CONTROL = Layout("rcn_control", [
    uint("opcode", 1, "0xC1 RCN CONTROL"),
    uint("service_action", 1, "pair operation",
         values={v.value: v.name for v in RcnServiceAction}),
    uint("control_flags", 1, "0x01 FAST, 0x02 FAILURE"),
    uint("reserved1", 1, "0"),
    uint("group_id", 4, "order guarantee (consistency group) ID"),
    uint("source_lun", 2, "the pair's source LUN"),
    uint("allocation_length", 4, "bytes of data-in the initiator accepts"),
    uint("reserved2", 1, "0"),
    uint("control", 1, "control byte"),
], doc="RCN CONTROL vendor-specific CDB")

RCN_PAIR_PARAMS = Layout("rcn_pair_params", [
    uint("capacity", 8, "source volume size in bytes"),
    uint("block_size", 4, "source volume block size in bytes"),
    uint("track_size", 4, "differential bitmap track size in bytes"),
    uint("mode", 1, "0 sync, 1 async"),
    raw("reserved", 7, "0"),
], doc="PAIR_CREATE data-out: what the target side needs to know of the source volume")

RCN_RESIDUAL_REPORT = Layout("rcn_residual_report", [
    uint("applied", 8, "the group's last sequence applied to the target array"),
    uint("received_max", 8, "highest sequence of the group the target edge has received"),
    uint("discarded", 4, "entries received past a gap and dropped (cannot apply in order)"),
    uint("known_missing", 4, "sequences between applied and received_max never received"),
], doc="TAKEOVER / fast SUSPEND data-in: what the target side has of the group")

SENSE_FIXED = Layout("scsi_sense", [
    uint("valid_code", 1, "VALID (bit 7) and response code 0x70 current / 0x71 deferred",
         bits=(("valid", 1), ("response_code", 7))),
    uint("obsolete", 1, "0"),
    uint("key_flags", 1, "FILEMARK, EOM, ILI, SDAT_OVFL and the sense key (bits 3-0)",
         bits=(("filemark", 1), ("eom", 1), ("ili", 1), ("sdat_ovfl", 1), ("sense_key", 4))),
    uint("information", 4, "command-specific information, e.g. the failing LBA"),
    uint("additional_length", 1, "bytes after this one: 10"),
    uint("command_specific", 4, "command-specific information"),
    uint("asc", 1, "additional sense code"),
    uint("ascq", 1, "additional sense code qualifier"),
    uint("fru_code", 1, "field replaceable unit code"),
    raw("sense_key_specific", 3, "SKSV (bit 7) and sense-key specific information"),
], doc="fixed format sense data (SPC-4 4.5.3)")

SENSE_DESCRIPTOR = Layout("scsi_sense_descriptor", [
    uint("code", 1, "reserved (bit 7) and response code 0x72 current / 0x73 deferred",
         bits=(("reserved_bit", 1), ("response_code", 7))),
    uint("key", 1, "reserved (bits 7-4) and the sense key (bits 3-0)",
         bits=(("reserved_key", 4), ("sense_key", 4))),
    uint("asc", 1, "additional sense code"),
    uint("ascq", 1, "additional sense code qualifier"),
    uint("sdat_ovfl", 1, "SDAT_OVFL (bit 7)"),
    uint("reserved", 2, "0"),
    uint("additional_length", 1, "bytes of sense data descriptors that follow"),
], doc="descriptor format sense data header (SPC-4 4.5.2)")

SENSE_FIXED_CODE = 0x70                  # current error, fixed format
SENSE_DESCRIPTOR_CODES = (0x72, 0x73)    # current, deferred error in descriptor format

CDB_SIZE = 16
FLAT_LUN_LIMIT = 1 << 14
BLOCK_SIZE = 512
CDB16_FUA = 0x08
CDB16_GROUP_MASK = 0x1F


def _sub_bits(layout: Layout, name: str) -> dict[str, tuple[int, int]]:
    return {sub: (shift, mask) for sub, shift, mask in layout.by_name[name].bit_masks}


_RW_BITS = _sub_bits(FCP_CMND, "cdb_len_rw")
#: RDDATA and WRDATA in FCP_CMND's ``cdb_len_rw`` byte, and the task attribute in its byte
CMND_RDDATA = 1 << _RW_BITS["rddata"][0]
CMND_WRDATA = 1 << _RW_BITS["wrdata"][0]
CMND_ATTRIBUTE_SHIFT, CMND_ATTRIBUTE_MASK = _sub_bits(FCP_CMND, "task_attribute")["attribute"]
_CMND_PACK = FCP_CMND.packer.pack
_CDB16_PACK = WRITE_16.packer.pack
_XFER_RDY_PACK = FCP_XFER_RDY.packer.pack


def encode_lun(lun: int) -> int:
    """SAM eight-byte LUN: peripheral addressing below 256, flat space up to 16383."""
    if not 0 <= lun < FLAT_LUN_LIMIT:
        raise ValueError(f"LUN {lun} outside 0..{FLAT_LUN_LIMIT - 1}")
    first = (lun >> 8) | 0x40 if lun >= 256 else 0
    return ((first << 8) | (lun & 0xFF)) << 48


def decode_lun(fcp_lun: int) -> int:
    first = fcp_lun >> 56
    method = first >> 6
    if method not in (0, 1):
        return fcp_lun  # hierarchical / extended addressing: keep the raw value
    return ((first & 0x3F) << 8) | ((fcp_lun >> 48) & 0xFF)


def build_fcp_cmnd(lun: int, cdb: bytes, fcp_dl: int, write: bool = False, read: bool = False,
                   attribute: int = TaskAttribute.SIMPLE, crn: int = 0) -> bytes:
    """An FCP_CMND (a CDB shorter than 16 bytes is padded with zeros); ValueError if a value
    does not fit."""
    if len(cdb) > CDB_SIZE:
        raise ValueError(f"fcp_cmnd: CDB of {len(cdb)} bytes; additional CDBs are not supported")
    try:
        return _CMND_PACK(encode_lun(lun), crn,
                          (attribute & CMND_ATTRIBUTE_MASK) << CMND_ATTRIBUTE_SHIFT, 0,
                          (CMND_RDDATA if read else 0) | (CMND_WRDATA if write else 0), cdb,
                          fcp_dl)
    except struct.error as exc:
        raise ValueError(f"fcp_cmnd: cannot build: {exc}") from None


def _cdb16(opcode: int, flags: int, lba: int, blocks: int, group: int) -> bytes:
    try:
        return _CDB16_PACK(opcode, flags, lba, blocks, group & CDB16_GROUP_MASK, 0)
    except struct.error as exc:
        raise ValueError(f"scsi: cannot build: {exc}") from None


def build_write16(lba: int, blocks: int, fua: bool = False, group: int = 0) -> bytes:
    return _cdb16(Opcode.WRITE_16, CDB16_FUA if fua else 0, lba, blocks, group)


def build_read16(lba: int, blocks: int) -> bytes:
    return _cdb16(Opcode.READ_16, 0, lba, blocks, 0)


def build_rcn_control(service_action: int, group_id: int, source_lun: int,
                      allocation_length: int = 0, fast: bool = False,
                      failure: bool = False) -> bytes:
    flags = (RCN_CONTROL_FAST if fast else 0) | (RCN_CONTROL_FAILURE if failure else 0)
    return RCN_CONTROL.build(opcode=Opcode.RCN_CONTROL, service_action=RcnServiceAction(service_action),
                             control_flags=flags, group_id=group_id,
                             source_lun=source_lun, allocation_length=allocation_length)


def build_pair_params(capacity: int, block_size: int, track_size: int, mode: int = 0) -> bytes:
    return RCN_PAIR_PARAMS.build(capacity=capacity, block_size=block_size,
                                 track_size=track_size, mode=mode)


def _parse_exact(layout: Layout, data: bytes) -> dict:
    """A whole payload of ``layout``; ``DecodeError`` when short or with bytes after it."""
    if len(data) != layout.size:
        raise DecodeError(layout.layer, layout.fields[0].name, 0,
                          f"{len(data)} bytes, expected {layout.size}")
    return dict(layout.parse(data, 0, 0, False))


def parse_pair_params(data: bytes) -> dict:
    """PAIR_CREATE data-out (exactly its 24 bytes)."""
    return _parse_exact(RCN_PAIR_PARAMS, data)


def build_residual_report(applied: int, received_max: int, discarded: int = 0,
                          known_missing: int = 0) -> bytes:
    return RCN_RESIDUAL_REPORT.build(applied=applied, received_max=received_max,
                                     discarded=discarded, known_missing=known_missing)


def parse_residual_report(data: bytes) -> dict:
    """TAKEOVER / fast SUSPEND data-in (exactly its 24 bytes)."""
    return _parse_exact(RCN_RESIDUAL_REPORT, data)


def build_xfer_rdy(relative_offset: int, burst_length: int) -> bytes:
    try:
        return _XFER_RDY_PACK(relative_offset, burst_length, 0)
    except struct.error as exc:
        raise ValueError(f"fcp_xfer_rdy: cannot build: {exc}") from None


def build_fcp_rsp(status: int = ScsiStatus.GOOD, residual: int = 0, under: bool = False,
                  sense: bytes = b"", response_info: bytes = b"") -> bytes:
    flags = 0
    if residual:
        flags |= RSP_RESID_UNDER if under else RSP_RESID_OVER
    if sense:
        flags |= RSP_SNS_LEN_VALID
    if response_info:
        flags |= RSP_RSP_LEN_VALID
    return FCP_RSP.build(flags=flags, scsi_status=status, residual=residual,
                         sense_length=len(sense), response_length=len(response_info)) \
        + response_info + sense


def parse_cdb(cdb: bytes, base: int = 0, fast: bool = False) -> dict:
    """The CDB's fields: READ/WRITE(16) and RCN CONTROL in full, others by opcode."""
    if not cdb:
        raise DecodeError("scsi", "opcode", base, "empty CDB")
    opcode = cdb[0]
    if opcode in (Opcode.WRITE_16, Opcode.READ_16):
        out = dict(WRITE_16.parse(cdb, 0, base, fast))
    elif opcode == Opcode.RCN_CONTROL:
        out = dict(RCN_CONTROL.parse(cdb, 0, base, fast))
        try:
            out["service_action_name"] = RcnServiceAction(out["service_action"]).name
        except ValueError:
            raise DecodeError("rcn_control", "service_action", base + 1,
                              f"unknown service action {out['service_action']}") from None
    else:
        out = {"opcode": opcode}
    try:
        out["opcode_name"] = Opcode(opcode).name
    except ValueError:
        out["opcode_name"] = f"0x{opcode:02x}"
    return out


def parse_fcp_cmnd(payload: bytes, base: int = 0, fast: bool = False) -> dict:
    cmnd = dict(FCP_CMND.parse(payload, 0, base, fast))
    if cmnd["additional_cdb_length"]:
        raise DecodeError("fcp_cmnd", "cdb_len_rw", base + 11,
                          f"additional CDB of {cmnd['additional_cdb_length']} words is not supported")
    if len(payload) != FCP_CMND.size:
        raise DecodeError("fcp_cmnd", "fcp_dl", base + FCP_CMND.size,
                          f"{len(payload) - FCP_CMND.size} bytes after FCP_DL")
    cmnd["lun"] = decode_lun(cmnd["fcp_lun"])
    cmnd["cdb"] = parse_cdb(cmnd.pop("cdb"), base + FCP_CMND.offsets["cdb"], fast)
    return cmnd


def parse_fcp_rsp(payload: bytes, base: int = 0, fast: bool = False) -> dict:
    rsp = dict(FCP_RSP.parse(payload, 0, base, fast))
    rsp.pop("reserved")
    info_len = rsp["response_length"] if rsp["flags"] & RSP_RSP_LEN_VALID else 0
    sense_len = rsp["sense_length"] if rsp["flags"] & RSP_SNS_LEN_VALID else 0
    at = FCP_RSP.size
    if at + info_len + sense_len > len(payload):
        raise DecodeError("fcp_rsp", "sense_length", base + 16,
                          f"response info {info_len} + sense {sense_len} bytes exceed the "
                          f"{len(payload) - at} present")
    rsp["response_info"] = payload[at:at + info_len].hex()
    rsp["sense"] = payload[at + info_len:at + info_len + sense_len].hex()
    try:
        rsp["status_name"] = ScsiStatus(rsp["scsi_status"]).name
    except ValueError:
        rsp["status_name"] = f"0x{rsp['scsi_status']:02x}"
    return rsp


def parse_xfer_rdy(payload: bytes, base: int = 0, fast: bool = False) -> dict:
    return dict(FCP_XFER_RDY.parse(payload, 0, base, fast))
