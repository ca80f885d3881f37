"""Golden byte vectors for every fixed layout, and the builders' known outputs.

Every vector below is a hex literal written by hand from the standard
(FC-FS/FC-LS/FC-GS, RFC 3643/3821, FCP-4/SBC/SPC-4, RFC 791/768/793/1071, the NBD
protocol's doc/proto.md) or from the
log entry table in ``datapath.frames.logentry``'s docstring; none is produced
by our own builders. Check values of the CRCs are the published ones
(CRC-32 and CRC-32C of ``b"123456789"``).
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from pathlib import Path

import crc32c
import numpy as np
from twisted.trial.unittest import TestCase

import datapath.frames
from datapath.frames import (applystate, ct, dpok, els, fc, fcip, fcp, gbe, hop, logentry,
                             logstore, names, nbd)
from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout
from tests.support import check_layout_golden


def hx(text: str) -> bytes:
    """Hex with any whitespace between digits."""
    return bytes.fromhex(text)


def frame_layouts() -> list[Layout]:
    """Every :class:`Layout` defined in a ``datapath.frames`` module."""
    found: dict[int, Layout] = {}
    for info in pkgutil.iter_modules(datapath.frames.__path__):
        module = importlib.import_module(f"datapath.frames.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Layout):
                found[id(value)] = value
    return list(found.values())


# An FCP_CMND frame from the initiator 01.03.00 to the target 01.02.00.
CMND_HEADER = dict(r_ctl=0x06, d_id=0x010200, s_id=0x010300, type=0x08, f_ctl=0x290000,
                   ox_id=0x1234)
CMND_HEADER_HEX = "06 010200 00 010300 08 290000 00 00 0000 1234 ffff 00000000"
# WRITE(16) of 8 blocks at LBA 0x1000 to LUN 3, 4096 bytes, WRDATA.
WRITE16_CDB_HEX = "8a 00 0000000000001000 00000008 00 00"
CMND_HEX = "0003000000000000 00 00 00 01" + WRITE16_CDB_HEX + "00001000"
SENSE_HEX = "70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00"  # ILLEGAL REQUEST, 24h
PORT_NAME = 0x2000002500000001
NODE_NAME = 0x2000002500000000
PLOGI_HEX = """
    03 000000
    2020 0010 8000 0800 00ff 001f 000007d0
    2000002500000001
    2000002500000000
    00000000 00000000 00000000 00000000
    00000000 00000000 00000000 00000000
    8800 0000 0000 0800 00ff 0000 0001 0000
    00000000 00000000 00000000 00000000
    00000000 00000000 00000000 00000000
"""
CT_GID_PN_HEX = "01 000000 fc 02 00 00 0121 0000 00 00 00 00"
CT_ACCEPT_HEX = "01 000000 fc 02 00 00 8002 0000 00 00 00 00"


# layout -> [(hex, values)]; values name every field (and sub-field) of the vector.
VECTORS: dict[Layout, list[tuple[str, dict]]] = {
    fc.FC_HEADER: [
        (CMND_HEADER_HEX,
         dict(r_ctl=0x06, d_id=0x010200, cs_ctl=0, s_id=0x010300, type=0x08, f_ctl=0x290000,
              seq_id=0, df_ctl=0, seq_cnt=0, ox_id=0x1234, rx_id=0xFFFF, parameter=0)),
        # FCP_DATA, second frame of the sequence, relative offset 2048, one fill byte
        ("01 010200 00 010300 08 090009 01 00 0001 1234 0056 00000800",
         dict(r_ctl=0x01, d_id=0x010200, cs_ctl=0, s_id=0x010300, type=0x08, f_ctl=0x090009,
              seq_id=1, df_ctl=0, seq_cnt=1, ox_id=0x1234, rx_id=0x0056, parameter=0x800)),
    ],
    fcip.FCIP_HEADER: [
        # a 24-word frame (an FCP_CMND), no timestamp
        ("01 01 fe fe 0101fefe 00 00 ff ff 0018 ffe7 00000000 00000000 00000000",
         dict(protocol=1, version=1, protocol_c=0xFE, version_c=0xFE,
              protocol_specific=0x0101FEFE, pflags=0, reserved=0, pflags_c=0xFF,
              reserved_c=0xFF, flags_len=0x0018, flags=0, frame_len=24, flags_len_c=0xFFE7,
              ts_seconds=0, ts_fraction=0, encap_crc=0)),
        # special frame, 20 words, timestamp 0x5f5e1000.8
        ("01 01 fe fe 0101fefe 01 00 fe ff 0014 ffeb 5f5e1000 80000000 00000000",
         dict(protocol=1, version=1, protocol_c=0xFE, version_c=0xFE,
              protocol_specific=0x0101FEFE, pflags=1, reserved=0, pflags_c=0xFE,
              reserved_c=0xFF, flags_len=0x0014, flags=0, frame_len=20, flags_len_c=0xFFEB,
              ts_seconds=0x5F5E1000, ts_fraction=0x80000000, encap_crc=0)),
        # CRCV (0x0400) set: the flags sub-field is 1, the length 545 (0x221)
        ("01 01 fe fe 0101fefe 00 00 ff ff 0621 f9de 00000000 00000000 00000000",
         dict(protocol=1, version=1, protocol_c=0xFE, version_c=0xFE,
              protocol_specific=0x0101FEFE, pflags=0, reserved=0, pflags_c=0xFF,
              reserved_c=0xFF, flags_len=0x0621, flags=1, frame_len=545, flags_len_c=0xF9DE,
              ts_seconds=0, ts_fraction=0, encap_crc=0)),
    ],
    fcp.FCP_CMND: [
        (CMND_HEX,
         dict(fcp_lun=0x0003000000000000, crn=0, task_attribute=0, reserved_attr=0, priority=0,
              attribute=0, task_management=0, cdb_len_rw=0x01, additional_cdb_length=0,
              rddata=0, wrdata=1, cdb=hx(WRITE16_CDB_HEX), fcp_dl=4096)),
        # READ(16) of one block at LBA 255 from flat LUN 300, ORDERED, priority 3, CRN 7
        ("412c000000000000 07 1a 00 02 88 00 00000000000000ff 00000001 00 00 00000200",
         dict(fcp_lun=0x412C000000000000, crn=7, task_attribute=0x1A, reserved_attr=0,
              priority=3, attribute=2, task_management=0, cdb_len_rw=0x02,
              additional_cdb_length=0, rddata=1, wrdata=0,
              cdb=hx("88 00 00000000000000ff 00000001 00 00"), fcp_dl=512)),
        # an additional CDB of 4 words: 0x10 in bits 7-2
        ("0000000000000000 00 00 00 10 00000000000000000000000000000000 00000000",
         dict(fcp_lun=0, crn=0, task_attribute=0, task_management=0, cdb_len_rw=0x10,
              additional_cdb_length=4, rddata=0, wrdata=0, cdb=bytes(16), fcp_dl=0)),
    ],
    fcp.FCP_XFER_RDY: [
        ("00000800 00001000 00000000",
         dict(relative_offset=0x800, burst_length=0x1000, reserved=0)),
    ],
    fcp.FCP_RSP: [
        # CHECK CONDITION, 512 bytes under-run, 18 bytes of sense
        ("0000000000000000 0000 0a 02 00000200 00000012 00000000",
         dict(reserved=bytes(8), retry_delay=0, flags=0x0A, scsi_status=0x02, residual=0x200,
              sense_length=18, response_length=0)),
        ("0000000000000000 0064 01 08 00000000 00000000 00000008",
         dict(reserved=bytes(8), retry_delay=100, flags=0x01, scsi_status=0x08, residual=0,
              sense_length=0, response_length=8)),
    ],
    fcp.WRITE_16: [
        # FUA, LBA 0x123456789, 16 blocks, group 5
        ("8a 08 0000000123456789 00000010 05 00",
         dict(opcode=0x8A, cdb_flags=0x08, lba=0x123456789, transfer_length=16, group_number=5,
              control=0)),
        (WRITE16_CDB_HEX,
         dict(opcode=0x8A, cdb_flags=0, lba=0x1000, transfer_length=8, group_number=0,
              control=0)),
    ],
    fcp.RCN_CONTROL: [
        # RESYNC, FAST, group 7, source LUN 2, 4096 bytes of bitmap accepted
        ("c1 03 01 00 00000007 0002 00001000 00 00",
         dict(opcode=0xC1, service_action=3, control_flags=1, reserved1=0, group_id=7,
              source_lun=2, allocation_length=4096, reserved2=0, control=0)),
    ],
    fcp.SENSE_FIXED: [
        # current error, ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h)
        (SENSE_HEX,
         dict(valid_code=0x70, valid=0, response_code=0x70, obsolete=0, key_flags=0x05,
              filemark=0, eom=0, ili=0, sdat_ovfl=0, sense_key=5, information=0,
              additional_length=10, command_specific=0, asc=0x24, ascq=0, fru_code=0,
              sense_key_specific=bytes(3))),
        # valid information (LBA 0x1234), ILI, MEDIUM ERROR, UNRECOVERED READ ERROR (11h/00h)
        ("f0 00 23 00001234 0a 00000000 11 00 00 000000",
         dict(valid_code=0xF0, valid=1, response_code=0x70, obsolete=0, key_flags=0x23,
              filemark=0, eom=0, ili=1, sdat_ovfl=0, sense_key=3, information=0x1234,
              additional_length=10, command_specific=0, asc=0x11, ascq=0, fru_code=0,
              sense_key_specific=bytes(3))),
        # deferred error, ILLEGAL REQUEST, SKSV with C/D set: the CDB's byte 2 is wrong
        ("71 00 05 00000000 0a 00000000 24 00 00 c00002",
         dict(valid_code=0x71, valid=0, response_code=0x71, obsolete=0, key_flags=0x05,
              filemark=0, eom=0, ili=0, sdat_ovfl=0, sense_key=5, information=0,
              additional_length=10, command_specific=0, asc=0x24, ascq=0, fru_code=0,
              sense_key_specific=hx("c00002"))),
    ],
    fcp.SENSE_DESCRIPTOR: [
        # current error, ILLEGAL REQUEST, 24h/00h, no descriptors
        ("72 05 24 00 00 0000 00",
         dict(code=0x72, reserved_bit=0, response_code=0x72, key=0x05, reserved_key=0,
              sense_key=5, asc=0x24, ascq=0, sdat_ovfl=0, reserved=0, additional_length=0)),
        # deferred error, UNIT ATTENTION, POWER ON OR RESET (29h/00h), 12 descriptor bytes
        ("73 06 29 00 00 0000 0c",
         dict(code=0x73, reserved_bit=0, response_code=0x73, key=0x06, reserved_key=0,
              sense_key=6, asc=0x29, ascq=0, sdat_ovfl=0, reserved=0, additional_length=12)),
    ],
    fcp.RCN_PAIR_PARAMS: [
        # 1 GiB, 512-byte blocks, 64 KiB tracks, async
        ("0000000040000000 00000200 00010000 01 00000000000000",
         dict(capacity=1 << 30, block_size=512, track_size=65536, mode=1, reserved=bytes(7))),
    ],
    fcp.RCN_RESIDUAL_REPORT: [
        # applied through 5, 9 seen, 1 dropped past a gap, 3 never received
        ("0000000000000005 0000000000000009 00000001 00000003",
         dict(applied=5, received_max=9, discarded=1, known_missing=3)),
    ],
    els.LOGIN: [
        (PLOGI_HEX,
         dict(command=0x03, reserved=0, fc_ph_version=0x2020, bb_credit=16,
              common_features=0x8000, bb_rcv_size=2048, total_concurrent_seq=255,
              rel_offset_by_category=0x1F, e_d_tov=2000, port_name=PORT_NAME,
              node_name=NODE_NAME, class1=bytes(16), class2=bytes(16), class3_options=0x8800,
              class3_initiator_ctl=0, class3_recipient_ctl=0, class3_rcv_size=2048,
              class3_concurrent_seq=255, class3_ee_credit=0, class3_open_seq=1,
              class3_reserved=0, class4=bytes(16), vendor_version=bytes(16))),
    ],
    els.PRLI: [
        # PRLI from an initiator: image pair, initiator function + read XFER_RDY disabled
        ("20 10 0014 08 00 20 00 00000000 00000000 00000022",
         dict(command=0x20, page_length=16, payload_length=20, type_code=8, type_code_ext=0,
              pair_flags=0x20, originator_pa_valid=0, responder_pa_valid=0, image_pair=1,
              reserved_flag=0, response_code=0, reserved=0, originator_pa=0, responder_pa=0,
              service_params=0x22)),
        # its LS_ACC: both PAs valid, image pair established, request executed
        ("02 10 0014 08 00 e1 00 00000011 00000022 00000011",
         dict(command=0x02, page_length=16, payload_length=20, type_code=8, type_code_ext=0,
              pair_flags=0xE1, originator_pa_valid=1, responder_pa_valid=1, image_pair=1,
              reserved_flag=0, response_code=1, reserved=0, originator_pa=0x11,
              responder_pa=0x22, service_params=0x11)),
    ],
    els.LS_RJT: [
        # unable to perform, invalid port name
        ("01 00000000 09 0d 00",
         dict(command=0x01, reserved=0, reason=0x09, explanation=0x0D, vendor=0)),
    ],
    els.LOGO: [
        ("05 00000000 010200 2000002500000001",
         dict(command=0x05, reserved=0, port_id=0x010200, port_name=PORT_NAME)),
    ],
    els.LS_ACC: [
        ("02 000000", dict(command=0x02, reserved=0)),
    ],
    els.BA_ACC: [
        ("80 03 0000 1234 0056 0000 ffff",
         dict(seq_id_valid=0x80, seq_id=3, reserved=0, ox_id=0x1234, rx_id=0x0056,
              low_seq_cnt=0, high_seq_cnt=0xFFFF)),
    ],
    els.BA_RJT: [
        ("00 09 03 00", dict(reserved=0, reason=0x09, explanation=0x03, vendor=0)),
    ],
    ct.CT_PREAMBLE: [
        (CT_GID_PN_HEX,
         dict(revision=1, in_id=0, gs_type=0xFC, gs_subtype=0x02, options=0, reserved=0,
              command=0x0121, max_residual_size=0, fragment_id=0, reason=0, explanation=0,
              vendor=0)),
        ("01 000000 fc 02 00 00 8001 0000 00 09 01 00",
         dict(revision=1, in_id=0, gs_type=0xFC, gs_subtype=0x02, options=0, reserved=0,
              command=0x8001, max_residual_size=0, fragment_id=0, reason=0x09, explanation=0x01,
              vendor=0)),
    ],
    ct.GID_PN_REQUEST: [
        ("2000002500000001", dict(port_name=PORT_NAME)),
    ],
    ct.GID_PN_ACCEPT: [
        ("80 010200", dict(control=0x80, port_id=0x010200)),
    ],
    logentry.LOG_HEADER: [
        # version 2: a clear WR (seal 0, key_epoch 0) ...
        ("""52434e4c 02 01 0001 00000007 10 00 0000
            0000000000000005 0123456789abcdef
            5000000000000001 0000000000000003 5000000000000002 0000000000000004
            0001 0003 00000800 00001800 00000800 deadbeef 00000000""",
         dict(magic=0x52434E4C, version=2, entry_type=1, flags=1, group_id=7, ttl=16,
              seal=0, reserved=bytes(2), sequence=5, io_time_ns=0x0123456789ABCDEF,
              target_wwn=0x5000000000000001, target_lun=3, source_wwn=0x5000000000000002,
              source_lun=4, segment_index=1, segment_count=3, segment_offset=0x800,
              total_length=0x1800, rio_length=0x800, crc32c=0xDEADBEEF, key_epoch=0)),
        # ... and a WROK sealed end to end (seal 1 AES-256-GCM) under group key epoch 9
        ("""52434e4c 02 02 0000 00000007 0f 01 0000
            0000000000000005 0000000000000000
            5000000000000001 0000000000000003 5000000000000002 0000000000000004
            0000 0001 00000000 0000004c 0000004c 01020304 00000009""",
         dict(magic=0x52434E4C, version=2, entry_type=2, flags=0, group_id=7, ttl=15,
              seal=1, reserved=bytes(2), sequence=5, io_time_ns=0,
              target_wwn=0x5000000000000001, target_lun=3, source_wwn=0x5000000000000002,
              source_lun=4, segment_index=0, segment_count=1, segment_offset=0,
              total_length=0x4C, rio_length=0x4C, crc32c=0x01020304, key_epoch=9)),
    ],
    # the hop envelope's header: link key epoch 3, counter 2^60 + 5
    hop.HOP_HEADER: [
        ("52434e48 01 01 0000 00000003 00000000 1000000000000005",
         dict(magic=0x52434E48, version=1, suite=1, reserved=bytes(2), key_epoch=3,
              reserved2=bytes(4), counter=(1 << 60) + 5)),
    ],
    logentry.COUNT_HEADER: [
        ("00000002 00000000", dict(count=2, reserved=0)),
    ],
    logentry.NAK_RANGE: [
        ("0000000000000005 0000000000000009", dict(first=5, last=9)),
    ],
    logentry.KEEPALIVE: [
        ("00000000000000ab 0000018bcfe56800", dict(probe_id=0xAB, echo_time_ns=0x18BCFE56800)),
    ],
    nbd.HANDSHAKE: [
        ("4e42444d41474943 49484156454f5054 0003",
         dict(magic=0x4E42444D41474943, option_magic=0x49484156454F5054, handshake_flags=3)),
    ],
    nbd.CLIENT_FLAGS: [
        ("00000003", dict(client_flags=3)),
    ],
    nbd.OPTION_HEADER: [
        # NBD_OPT_GO with 10 bytes of data
        ("49484156454f5054 00000007 0000000a",
         dict(magic=0x49484156454F5054, option=7, length=10)),
    ],
    nbd.OPTION_REPLY: [
        # NBD_REP_INFO to NBD_OPT_GO, 12 bytes of data
        ("0003e889045565a9 00000007 00000003 0000000c",
         dict(magic=0x0003E889045565A9, option=7, reply_type=3, length=12)),
        # NBD_REP_ERR_UNSUP to NBD_OPT_STRUCTURED_REPLY
        ("0003e889045565a9 00000008 80000001 00000000",
         dict(magic=0x0003E889045565A9, option=8, reply_type=0x80000001, length=0)),
    ],
    nbd.EXPORT_NAME_REPLY: [
        # 1 GiB, HAS_FLAGS | READ_ONLY
        ("0000000040000000 0003", dict(size=1 << 30, transmission_flags=3)),
    ],
    nbd.INFO_EXPORT: [
        # NBD_INFO_EXPORT: 1 GiB, HAS_FLAGS | SEND_FLUSH | SEND_FUA
        ("0000 0000000040000000 000d", dict(info_type=0, size=1 << 30, transmission_flags=0xD)),
    ],
    nbd.INFO_BLOCK_SIZE: [
        # NBD_INFO_BLOCK_SIZE: 1, 4096, 32 MiB
        ("0003 00000001 00001000 02000000",
         dict(info_type=3, minimum=1, preferred=4096, maximum=32 << 20)),
    ],
    nbd.REQUEST: [
        # NBD_CMD_WRITE with FUA, cookie 7, 4096 bytes at 4096
        ("25609513 0001 0001 0000000000000007 0000000000001000 00001000",
         dict(magic=0x25609513, flags=1, type=1, cookie=7, offset=4096, length=4096)),
    ],
    nbd.SIMPLE_REPLY: [
        ("67446698 00000000 0000000000000007", dict(magic=0x67446698, error=0, cookie=7)),
        # EIO
        ("67446698 00000005 ffffffffffffffff",
         dict(magic=0x67446698, error=5, cookie=(1 << 64) - 1)),
    ],
    # 16 TiB volume in 64 KiB tracks, 3 dirty tracks sent as 2 runs
    dpok.HEADER: [
        ("44504f4b 01 01 0000 00010000 0000100000000000 0000000010000000 0000000000000003"
         " 0000000000000002",
         dict(magic=0x44504F4B, version=1, encoding=1, reserved=0, track_size=0x10000,
              volume_bytes=1 << 44, track_count=1 << 28, dirty_tracks=3, items=2)),
    ],
    # The edge's files. Written down from the bytes the log store and the apply counters
    # wrote before their layouts became tables: an ENTRY record of group 0x01020304,
    # sequence 5 and entry b"hello" (CRC32C over the 17-byte payload) ...
    logstore.RECORD: [
        ("52434c53 01 000000 00000011 1b59a746",
         dict(magic=b"RCLS", kind=1, reserved=bytes(3), length=17, crc32c=0x1B59A746)),
        ("52434c53 02 000000 0000002c 67d16320",
         dict(magic=b"RCLS", kind=2, reserved=bytes(3), length=44, crc32c=0x67D16320)),
    ],
    logstore.ENTRY_PREFIX: [
        ("01020304 0000000000000005", dict(group=0x01020304, sequence=5)),
    ],
    # ... a CHECKPOINT of (1, 10, 8) and (7, 5, 3) ...
    logstore.CHECKPOINT_COUNT: [
        ("00000002", dict(count=2)),
    ],
    logstore.CHECKPOINT_ITEM: [
        ("00000001 000000000000000a 0000000000000008", dict(group=1, generation=10, deleted=8)),
    ],
    # ... and an apply counter slot of generation 3 holding {1: 10, 2: 21}.
    applystate.SLOT: [
        ("52434153 0002 0000 00000002 df21dbe1 0000000000000003",
         dict(magic=b"RCAS", version=2, reserved=0, count=2, crc32c=0xDF21DBE1, generation=3)),
    ],
    applystate.ITEM: [
        ("00000002 0000000000000015", dict(group=2, applied=21)),
    ],
    gbe.ETHERNET: [
        ("020000000002 020000000001 0800",
         dict(dst=hx("020000000002"), src=hx("020000000001"), ethertype=0x0800)),
    ],
    gbe.IPV4: [
        # the classic worked example: 192.168.0.1 -> 192.168.0.199, UDP, checksum b861
        ("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7",
         dict(version_ihl=0x45, version=4, ihl=5, tos=0, total_length=0x73, ident=0,
              flags_frag=0x4000, ip_flags=2, frag_offset=0, ttl=64, proto=17, checksum=0xB861,
              src=0xC0A80001, dst=0xC0A800C7)),
        # a fragment: MF set, offset 185 (x 8 bytes)
        ("4600 05dc 1c46 20b9 3f06 0000 0a000001 0a000002",
         dict(version_ihl=0x46, version=4, ihl=6, tos=0, total_length=1500, ident=0x1C46,
              flags_frag=0x20B9, ip_flags=1, frag_offset=185, ttl=63, proto=6, checksum=0,
              src=0x0A000001, dst=0x0A000002)),
    ],
    gbe.UDP: [
        ("b799 b799 0068 1234", dict(sport=47001, dport=47001, length=0x68, checksum=0x1234)),
    ],
    gbe.TCP: [
        # ACK|PSH, no options
        ("c000 0c99 00000001 00000002 5018 ffff abcd 0000",
         dict(sport=0xC000, dport=3225, seq=1, ack=2, offset_flags=0x5018, data_offset=5,
              reserved=0, flags=0x018, window=0xFFFF, checksum=0xABCD, urgent=0)),
        # SYN with the NS bit (the 9th flag bit) and one option word
        ("0c99 c000 ffffffff 00000000 6102 0400 0000 0000",
         dict(sport=3225, dport=0xC000, seq=0xFFFFFFFF, ack=0, offset_flags=0x6102,
              data_offset=6, reserved=0, flags=0x102, window=0x400, checksum=0, urgent=0)),
    ],
}


class GoldenVectorTests(TestCase):
    """Each layout against hand-written vectors: checked, compiled, struct and numpy paths."""

    def check_vectors(self, layout: Layout) -> None:
        vectors = VECTORS[layout]
        self.assertTrue(vectors)
        for text, values in vectors:
            data = hx(text)
            check_layout_golden(self, layout, data, values)
            top = {name: value for name, value in values.items() if name in layout.by_name}
            self.assertEqual(set(top), set(layout.by_name), f"{layout.layer}: vector names all fields")
            checked = layout.struct.parse(data)
            compiled = layout.compiled.parse(data)
            for name, value in top.items():
                self.assertEqual(checked[name], value, f"checked {layout.layer}.{name}")
                self.assertEqual(compiled[name], value, f"compiled {layout.layer}.{name}")
            self.assertEqual(layout.compiled.build(top), data)
            self.assertEqual(layout.struct.build(top), data)

    def test_every_layout_has_a_vector(self):
        self.assertEqual({layout.layer for layout in frame_layouts()},
                         {layout.layer for layout in VECTORS})
        self.assertEqual(len(frame_layouts()), 46)

    def test_fc_header(self):
        self.check_vectors(fc.FC_HEADER)

    def test_fcip_header(self):
        self.check_vectors(fcip.FCIP_HEADER)

    def test_fcp_cmnd(self):
        self.check_vectors(fcp.FCP_CMND)

    def test_fcp_xfer_rdy(self):
        self.check_vectors(fcp.FCP_XFER_RDY)

    def test_fcp_rsp(self):
        self.check_vectors(fcp.FCP_RSP)

    def test_write_16(self):
        self.check_vectors(fcp.WRITE_16)

    def test_rcn_control(self):
        self.check_vectors(fcp.RCN_CONTROL)

    def test_rcn_pair_params(self):
        self.check_vectors(fcp.RCN_PAIR_PARAMS)

    def test_rcn_residual_report(self):
        self.check_vectors(fcp.RCN_RESIDUAL_REPORT)

    def test_sense_fixed(self):
        self.check_vectors(fcp.SENSE_FIXED)

    def test_sense_descriptor(self):
        self.check_vectors(fcp.SENSE_DESCRIPTOR)

    def test_pair_params_and_residual_report_round_trip(self):
        params = fcp.build_pair_params(1 << 30, 512, 65536, 1)
        self.assertEqual(fcp.parse_pair_params(params)["track_size"], 65536)
        self.assertRaises(DecodeError, fcp.parse_pair_params, params[:-1])
        report = fcp.build_residual_report(5, 9, 1, 3)
        self.assertEqual(fcp.parse_residual_report(report)["known_missing"], 3)
        self.assertRaises(DecodeError, fcp.parse_residual_report, report + b"\0")

    def test_login(self):
        self.check_vectors(els.LOGIN)

    def test_prli(self):
        self.check_vectors(els.PRLI)

    def test_ls_rjt(self):
        self.check_vectors(els.LS_RJT)

    def test_logo(self):
        self.check_vectors(els.LOGO)

    def test_ls_acc(self):
        self.check_vectors(els.LS_ACC)

    def test_ba_acc(self):
        self.check_vectors(els.BA_ACC)

    def test_ba_rjt(self):
        self.check_vectors(els.BA_RJT)

    def test_ct_preamble(self):
        self.check_vectors(ct.CT_PREAMBLE)

    def test_gid_pn_request(self):
        self.check_vectors(ct.GID_PN_REQUEST)

    def test_gid_pn_accept(self):
        self.check_vectors(ct.GID_PN_ACCEPT)

    def test_log_header(self):
        self.check_vectors(logentry.LOG_HEADER)

    def test_hop_header(self):
        self.check_vectors(hop.HOP_HEADER)

    def test_count_header(self):
        self.check_vectors(logentry.COUNT_HEADER)

    def test_nak_range(self):
        self.check_vectors(logentry.NAK_RANGE)

    def test_keepalive(self):
        self.check_vectors(logentry.KEEPALIVE)

    def test_nbd_handshake(self):
        self.check_vectors(nbd.HANDSHAKE)

    def test_nbd_client_flags(self):
        self.check_vectors(nbd.CLIENT_FLAGS)

    def test_nbd_option_header(self):
        self.check_vectors(nbd.OPTION_HEADER)

    def test_nbd_option_reply(self):
        self.check_vectors(nbd.OPTION_REPLY)

    def test_nbd_export_name_reply(self):
        self.check_vectors(nbd.EXPORT_NAME_REPLY)

    def test_nbd_info_export(self):
        self.check_vectors(nbd.INFO_EXPORT)

    def test_nbd_info_block_size(self):
        self.check_vectors(nbd.INFO_BLOCK_SIZE)

    def test_nbd_request(self):
        self.check_vectors(nbd.REQUEST)

    def test_nbd_simple_reply(self):
        self.check_vectors(nbd.SIMPLE_REPLY)

    def test_dpok_bitmap_header(self):
        self.check_vectors(dpok.HEADER)

    def test_logstore_record(self):
        self.check_vectors(logstore.RECORD)

    def test_logstore_entry_prefix(self):
        self.check_vectors(logstore.ENTRY_PREFIX)

    def test_logstore_checkpoint(self):
        self.check_vectors(logstore.CHECKPOINT_COUNT)
        self.check_vectors(logstore.CHECKPOINT_ITEM)

    def test_applystate_slot(self):
        self.check_vectors(applystate.SLOT)
        self.check_vectors(applystate.ITEM)

    def test_ethernet(self):
        self.check_vectors(gbe.ETHERNET)

    def test_ipv4(self):
        self.check_vectors(gbe.IPV4)

    def test_udp(self):
        self.check_vectors(gbe.UDP)

    def test_tcp(self):
        self.check_vectors(gbe.TCP)


class LayoutGeometryTests(TestCase):
    """Sizes and offsets from the standards, and the numpy dtypes."""

    def test_sizes_match_the_standards(self):
        expected = {"fc": 24, "fcip": 28, "fcp_cmnd": 32, "fcp_xfer_rdy": 12, "fcp_rsp": 24,
                    "scsi": 16, "rcn_control": 16, "els_login": 116, "els_prli": 20,
                    "els_ls_rjt": 8, "els_logo": 16, "els_ls_acc": 4, "bls_ba_acc": 12,
                    "bls_ba_rjt": 4, "ct": 16, "ct_gid_pn": 8, "ct_gid_pn_acc": 4, "log": 88,
                    "hop": 24, "log_count": 8, "log_nak_range": 16, "log_keepalive": 16, "eth": 14,
                    "ipv4": 20, "udp": 8, "tcp": 20, "dpok_bitmap": 44,
                    "rcn_pair_params": 24, "rcn_residual_report": 24, "logstore_record": 16,
                    "logstore_entry": 12, "logstore_checkpoint": 4,
                    "logstore_checkpoint_item": 20, "applystate_slot": 24, "applystate_item": 12,
                    "scsi_sense": 18, "scsi_sense_descriptor": 8, "nbd_handshake": 18,
                    "nbd_client_flags": 4, "nbd_option": 16, "nbd_option_reply": 20,
                    "nbd_export_name_reply": 10, "nbd_info_export": 12,
                    "nbd_info_block_size": 14, "nbd_request": 28, "nbd_simple_reply": 16}
        self.assertEqual({layout.layer: layout.size for layout in frame_layouts()}, expected)

    def test_standard_field_offsets(self):
        self.assertEqual(fc.FC_HEADER.offsets["f_ctl"], 9)
        self.assertEqual(fc.FC_HEADER.offsets["ox_id"], 16)
        self.assertEqual(fc.FC_HEADER.offsets["parameter"], 20)
        self.assertEqual(fcip.FCIP_HEADER.offsets["flags_len"], 12)
        self.assertEqual(fcip.FCIP_HEADER.offsets["encap_crc"], 24)
        self.assertEqual(fcp.FCP_CMND.offsets["cdb"], 12)
        self.assertEqual(fcp.FCP_CMND.offsets["fcp_dl"], 28)
        self.assertEqual(fcp.FCP_RSP.offsets["scsi_status"], 11)
        self.assertEqual(els.LOGIN.offsets["port_name"], 20)
        self.assertEqual(els.LOGIN.offsets["node_name"], 28)
        self.assertEqual(els.LOGIN.offsets["class3_options"], 68)
        self.assertEqual(els.PRLI.offsets["service_params"], 16)
        self.assertEqual(els.LS_RJT.offsets["reason"], 5)
        self.assertEqual(ct.CT_PREAMBLE.offsets["command"], 8)
        self.assertEqual(logentry.LOG_HEADER.offsets["segment_index"], 64)
        self.assertEqual(logentry.LOG_HEADER.offsets["rio_length"], 76)
        self.assertEqual(logentry.LOG_HEADER.offsets["crc32c"], 80)
        # version 2 kept version 1's offsets: seal and key_epoch took reserved bytes
        self.assertEqual(logentry.LOG_HEADER.offsets["seal"], 13)
        self.assertEqual(logentry.LOG_HEADER.offsets["reserved"], 14)
        self.assertEqual(logentry.LOG_HEADER.offsets["sequence"], 16)
        self.assertEqual(logentry.LOG_HEADER.offsets["key_epoch"], 84)
        self.assertEqual(hop.HOP_HEADER.offsets["key_epoch"], 8)
        self.assertEqual(hop.HOP_HEADER.offsets["counter"], 16)
        self.assertEqual(gbe.TCP.offsets["offset_flags"], 12)

    def test_log_header_dtype(self):
        dtype = logentry.LOG_HEADER.dtype
        self.assertEqual(dtype.itemsize, 88)
        self.assertEqual(dtype["sequence"], np.dtype(np.uint64))
        self.assertEqual(dtype["segment_index"], np.dtype(np.uint16))
        self.assertEqual(dtype["seal"], np.dtype(np.uint8))
        self.assertEqual(dtype["reserved"].subdtype, (np.dtype(np.uint8), (2,)))
        self.assertEqual(dtype["key_epoch"], np.dtype(np.uint32))

    def test_hop_header_dtype(self):
        dtype = hop.HOP_HEADER.dtype
        self.assertEqual(dtype.itemsize, 24)
        self.assertEqual(dtype["key_epoch"], np.dtype(np.uint32))
        self.assertEqual(dtype["counter"], np.dtype(np.uint64))
        self.assertEqual(dtype["reserved2"].subdtype, (np.dtype(np.uint8), (4,)))

    def test_fc_header_dtype_widens_three_byte_fields(self):
        dtype = fc.FC_HEADER.dtype
        # 1+4+1+4+1+4+1+1+2+2+2+4: the 3-byte IDs and F_CTL are uint32
        self.assertEqual(dtype.itemsize, 27)
        for name in ("d_id", "s_id", "f_ctl"):
            self.assertEqual(dtype[name], np.dtype(np.uint32))

    def test_dtype_fields_are_native_unsigned(self):
        widths = {1: 1, 2: 2, 3: 4, 4: 4, 8: 8}
        for layout in frame_layouts():
            self.assertEqual(layout.dtype.names, tuple(f.name for f in layout.fields))
            for f in layout.fields:
                dt = layout.dtype[f.name]
                if f.raw:
                    self.assertEqual(dt.subdtype, (np.dtype(np.uint8), (f.width,)))
                    continue
                self.assertEqual(dt.kind, "u", f"{layout.layer}.{f.name}")
                self.assertTrue(dt.isnative, f"{layout.layer}.{f.name}")
                self.assertEqual(dt.itemsize, widths[f.width], f"{layout.layer}.{f.name}")

    def test_wire_to_array_with_stride(self):
        # two FC headers 28 bytes apart (each followed by its 4-byte CRC slot)
        first = hx(CMND_HEADER_HEX)
        second = hx("01 010200 00 010300 08 090009 01 00 0001 1234 0056 00000800")
        buf = first + b"\xaa" * 4 + second + b"\xbb" * 4
        arr = fc.FC_HEADER.wire_to_array(buf, stride=28)
        self.assertEqual(len(arr), 2)
        self.assertEqual([int(v) for v in arr["r_ctl"]], [0x06, 0x01])
        self.assertEqual([int(v) for v in arr["f_ctl"]], [0x290000, 0x090009])
        self.assertEqual([int(v) for v in arr["parameter"]], [0, 0x800])
        self.assertEqual(fc.FC_HEADER.array_to_wire(arr), first + second)

    def test_wire_to_array_rejects_a_short_buffer(self):
        self.assertRaises(ValueError, fc.FC_HEADER.wire_to_array, bytes(47), 2)
        self.assertRaises(ValueError, fc.FC_HEADER.wire_to_array, bytes(48), 2, 20)

    def test_build_rejects_unknown_and_oversized_fields(self):
        self.assertRaises(KeyError, fc.FC_HEADER.build, dict(bogus=1))
        self.assertRaises(ValueError, fc.FC_HEADER.build, dict(d_id=1 << 24))
        self.assertRaises(ValueError, gbe.ETHERNET.build, dict(dst=b"\x00" * 5))


class FcBuilderTests(TestCase):
    def test_fc_crc_is_zlib_crc32_little_endian(self):
        # CRC-32 check value 0xCBF43926, stored least significant byte first
        self.assertEqual(fc.fc_crc(b"123456789"), hx("2639f4cb"))

    def test_build_fc_frame_pads_and_counts_fill_bytes(self):
        payload = hx("0102030405")
        body = hx("06 010200 00 010300 08 290003 00 00 0000 1234 ffff 00000000") \
            + payload + hx("000000")
        self.assertEqual(fc.build_fc_frame(CMND_HEADER, payload),
                         body + zlib.crc32(body).to_bytes(4, "little"))

    def test_build_fc_frame_word_aligned_payload_has_no_fill(self):
        # fill bits given by the caller are replaced by the real count (0)
        body = hx(CMND_HEADER_HEX) + hx(CMND_HEX)
        frame = fc.build_fc_frame(dict(CMND_HEADER, f_ctl=0x290003), hx(CMND_HEX))
        self.assertEqual(frame, body + zlib.crc32(body).to_bytes(4, "little"))
        self.assertEqual(len(frame), 60)

    def test_build_fc_frame_keeps_an_explicit_rx_id(self):
        body = hx("23 010300 00 fffffe 01 980000 00 00 0000 0001 0002 00000000") + hx("02000000")
        frame = fc.build_fc_frame(dict(r_ctl=0x23, d_id=0x010300, s_id=0xFFFFFE, type=0x01,
                                       f_ctl=0x980000, ox_id=1, rx_id=2), hx("02000000"))
        self.assertEqual(frame, body + zlib.crc32(body).to_bytes(4, "little"))

    def test_build_fc_frame_rejects_oversized_payload(self):
        self.assertEqual(len(fc.build_fc_frame({}, bytes(2112))), 24 + 2112 + 4)
        self.assertRaises(ValueError, fc.build_fc_frame, {}, bytes(2113))

    def test_delimiter_word(self):
        self.assertEqual(fc.delimiter_word(fc.Sof.I3), hx("2e2ed1d1"))
        self.assertEqual(fc.delimiter_word(fc.Sof.N3), hx("3636c9c9"))
        self.assertEqual(fc.delimiter_word(fc.Eof.T), hx("4242bdbd"))
        self.assertEqual(fc.delimiter_word(fc.Eof.N), hx("4141bebe"))

    def test_sof_eof_codes(self):
        self.assertEqual({c.name: c.value for c in fc.Sof},
                         dict(F=0x28, I4=0x29, I2=0x2D, I3=0x2E, N4=0x31, N2=0x35, N3=0x36,
                              C4=0x39))
        self.assertEqual({c.name: c.value for c in fc.Eof},
                         dict(N=0x41, T=0x42, RT=0x44, DT=0x46, NI=0x49, DTI=0x4E, RTI=0x4F,
                              A=0x50))

    def test_build_sof_eof_unit_sofi3_eoft(self):
        body = hx(CMND_HEADER_HEX) + hx(CMND_HEX)
        unit = fc.build_sof_eof_unit(CMND_HEADER, hx(CMND_HEX))
        self.assertEqual(unit, hx("bcb55656") + body + zlib.crc32(body).to_bytes(4, "little")
                         + hx("bcb57575"))

    def test_build_sof_eof_unit_sofn3_eofn(self):
        unit = fc.build_sof_eof_unit(CMND_HEADER, b"", sof=fc.Sof.N3, eof=fc.Eof.N)
        self.assertEqual(unit[:4], hx("bcb53636"))
        self.assertEqual(unit[-4:], hx("bc95d5d5"))
        parsed = fc.parse_sof_eof_unit(unit)
        self.assertEqual((parsed.sof, parsed.eof), (fc.Sof.N3, fc.Eof.N))
        self.assertTrue(parsed.crc_ok)


class FcipBuilderTests(TestCase):
    def fc_frame(self) -> bytes:
        body = hx(CMND_HEADER_HEX) + hx(CMND_HEX)
        return body + zlib.crc32(body).to_bytes(4, "little")

    def test_sync_pattern(self):
        self.assertEqual(fcip.SYNC_PATTERN, hx("0101fefe0101fefe"))
        self.assertEqual(fcip.FCIP_PORT, 3225)

    def test_encapsulate_fcp_cmnd_frame(self):
        frame = fcip.encapsulate(self.fc_frame())
        self.assertEqual(len(frame), 96)
        self.assertEqual(frame, hx("01 01 fe fe 0101fefe 00 00 ff ff 0018 ffe7 00000000 00000000"
                                   "00000000 2e2ed1d1") + self.fc_frame() + hx("4242bdbd"))

    def test_encapsulate_timestamp_delimiters_and_special_flag(self):
        frame = fcip.encapsulate(self.fc_frame(), sof=fc.Sof.N3, eof=fc.Eof.N,
                                 ts_seconds=0x01020304, ts_fraction=0x80000000, special=True)
        self.assertEqual(frame[:32], hx("01 01 fe fe 0101fefe 01 00 fe ff 0018 ffe7 01020304"
                                        "80000000 00000000 3636c9c9"))
        self.assertEqual(frame[-4:], hx("4141bebe"))

    def test_build_fcip_frame(self):
        self.assertEqual(fcip.build_fcip_frame(CMND_HEADER, hx(CMND_HEX)),
                         hx("01 01 fe fe 0101fefe 00 00 ff ff 0018 ffe7 00000000 00000000"
                            "00000000 2e2ed1d1") + self.fc_frame() + hx("4242bdbd"))

    def test_build_fcip_frame_largest_payload(self):
        frame = fcip.build_fcip_frame(CMND_HEADER, bytes(2112))
        # 28 + 4 + 24 + 2112 + 4 + 4 = 2176 bytes = 544 words
        self.assertEqual(len(frame), 2176)
        self.assertEqual(frame[12:16], hx("0220 fddf"))

    def test_encapsulate_rejects_bad_lengths(self):
        self.assertRaises(ValueError, fcip.encapsulate, bytes(61))     # not word aligned
        self.assertRaises(ValueError, fcip.encapsulate, bytes(16))     # 13 words < 15
        self.assertRaises(ValueError, fcip.encapsulate, bytes(545 * 4 - 36 + 4))  # 546 words


class FcpBuilderTests(TestCase):
    def test_encode_lun(self):
        self.assertEqual(fcp.encode_lun(0), 0)
        self.assertEqual(fcp.encode_lun(3), 0x0003000000000000)
        self.assertEqual(fcp.encode_lun(255), 0x00FF000000000000)
        self.assertEqual(fcp.encode_lun(256), 0x4100000000000000)
        self.assertEqual(fcp.encode_lun(300), 0x412C000000000000)
        self.assertEqual(fcp.encode_lun(16383), 0x7FFF000000000000)
        self.assertRaises(ValueError, fcp.encode_lun, 16384)
        self.assertRaises(ValueError, fcp.encode_lun, -1)

    def test_decode_lun(self):
        self.assertEqual(fcp.decode_lun(0x0003000000000000), 3)
        self.assertEqual(fcp.decode_lun(0x412C000000000000), 300)
        self.assertEqual(fcp.decode_lun(0x7FFF000000000000), 16383)
        # logical unit / extended addressing are kept as the raw eight bytes
        self.assertEqual(fcp.decode_lun(0x8001000000000000), 0x8001000000000000)
        self.assertEqual(fcp.decode_lun(0xC000000000000000), 0xC000000000000000)

    def test_lun_round_trip_whole_range(self):
        for lun in range(fcp.FLAT_LUN_LIMIT):
            self.assertEqual(fcp.decode_lun(fcp.encode_lun(lun)), lun)

    def test_build_write16(self):
        self.assertEqual(fcp.build_write16(0x1000, 8), hx(WRITE16_CDB_HEX))
        self.assertEqual(fcp.build_write16(0x123456789, 16, fua=True, group=5),
                         hx("8a 08 0000000123456789 00000010 05 00"))
        # the group number keeps its low 5 bits only
        self.assertEqual(fcp.build_write16(0, 1, group=0x25)[14], 0x05)

    def test_build_read16(self):
        self.assertEqual(fcp.build_read16(255, 1), hx("88 00 00000000000000ff 00000001 00 00"))

    def test_build_fcp_cmnd(self):
        self.assertEqual(fcp.build_fcp_cmnd(3, fcp.build_write16(0x1000, 8), 4096, write=True),
                         hx(CMND_HEX))
        self.assertEqual(
            fcp.build_fcp_cmnd(300, fcp.build_read16(255, 1), 512, read=True,
                               attribute=fcp.TaskAttribute.ORDERED, crn=7),
            hx("412c000000000000 07 02 00 02 88 00 00000000000000ff 00000001 00 00 00000200"))
        self.assertRaises(ValueError, fcp.build_fcp_cmnd, 0, bytes(17), 0)

    def test_build_fcp_cmnd_pads_a_short_cdb(self):
        self.assertEqual(fcp.build_fcp_cmnd(0, hx("00"), 0),
                         hx("0000000000000000 00 00 00 00") + bytes(16) + hx("00000000"))

    def test_build_rcn_control(self):
        self.assertEqual(fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 7, 2, 4096, fast=True),
                         hx("c1 03 01 00 00000007 0002 00001000 00 00"))
        self.assertEqual(fcp.build_rcn_control(1, 0x01020304, 0xFFFF),
                         hx("c1 01 00 00 01020304 ffff 00000000 00 00"))
        self.assertRaises(ValueError, fcp.build_rcn_control, 9, 0, 0)

    def test_build_xfer_rdy(self):
        self.assertEqual(fcp.build_xfer_rdy(0x800, 0x1000), hx("00000800 00001000 00000000"))

    def test_build_fcp_rsp_good(self):
        self.assertEqual(fcp.build_fcp_rsp(), bytes(24))

    def test_build_fcp_rsp_with_sense(self):
        self.assertEqual(
            fcp.build_fcp_rsp(fcp.ScsiStatus.CHECK_CONDITION, residual=512, under=True,
                              sense=hx(SENSE_HEX)),
            hx("0000000000000000 0000 0a 02 00000200 00000012 00000000") + hx(SENSE_HEX))

    def test_build_fcp_rsp_response_info_before_sense(self):
        self.assertEqual(
            fcp.build_fcp_rsp(fcp.ScsiStatus.CHECK_CONDITION, residual=16,
                              sense=hx(SENSE_HEX), response_info=hx("00000000 00000000")),
            hx("0000000000000000 0000 07 02 00000010 00000012 00000008")
            + hx("00000000 00000000") + hx(SENSE_HEX))

    def test_parse_fcp_rsp_with_sense(self):
        rsp = fcp.parse_fcp_rsp(hx("0000000000000000 0000 0a 02 00000200 00000012 00000000")
                                + hx(SENSE_HEX))
        self.assertEqual(rsp["status_name"], "CHECK_CONDITION")
        self.assertEqual(rsp["residual"], 512)
        self.assertEqual(rsp["sense"], SENSE_HEX.replace(" ", ""))
        self.assertEqual(rsp["response_info"], "")

    def test_parse_fcp_cmnd(self):
        cmnd = fcp.parse_fcp_cmnd(hx(CMND_HEX))
        self.assertEqual(cmnd["lun"], 3)
        self.assertEqual(cmnd["fcp_dl"], 4096)
        self.assertEqual((cmnd["wrdata"], cmnd["rddata"]), (1, 0))
        self.assertEqual(cmnd["cdb"]["opcode_name"], "WRITE_16")
        self.assertEqual(cmnd["cdb"]["lba"], 0x1000)
        self.assertEqual(cmnd["cdb"]["transfer_length"], 8)


class ElsCtBuilderTests(TestCase):
    def test_build_login_plogi(self):
        self.assertEqual(els.build_login(els.ElsCommand.PLOGI, PORT_NAME, NODE_NAME), hx(PLOGI_HEX))

    def test_build_login_fabric_accept_sets_f_port(self):
        data = els.build_login(els.ElsCommand.LS_ACC, PORT_NAME, NODE_NAME, fabric=True)
        self.assertEqual(data[:12], hx("02 000000 2020 0010 9000 0800"))
        self.assertEqual(data[12:], hx(PLOGI_HEX)[12:])

    def test_parse_els_login(self):
        out = els.parse_els(hx(PLOGI_HEX))
        self.assertEqual(out["command_name"], "PLOGI")
        self.assertEqual(out["port_name"], PORT_NAME)
        self.assertNotIn("class1", out)

    def test_build_prli_write_xfer_rdy_disabled(self):
        self.assertEqual(els.FCP_WRITE_XFER_RDY_DISABLED, 0x0001)
        data = els.build_prli(els.FCP_WRITE_XFER_RDY_DISABLED)
        self.assertEqual(data, hx("20 10 0014 08 00 20 00 00000000 00000000 00000001"))
        # FCP-4: word 3 bit 0 is WRITE FCP_XFER_RDY DISABLED, bit 1 the read one
        service_params = int.from_bytes(data[16:20], "big")
        self.assertEqual(service_params & 0x1, 1)
        self.assertEqual(service_params & 0x2, 0)

    def test_build_prli_accept(self):
        data = els.build_prli(els.FCP_WRITE_XFER_RDY_DISABLED | els.FCP_TARGET_FUNCTION,
                              accept=True)
        self.assertEqual(data, hx("02 10 0014 08 00 21 00 00000000 00000000 00000011"))
        out = els.parse_els(data)
        self.assertEqual(out["command_name"], "LS_ACC")
        self.assertEqual(out["response_code"], els.PRLI_REQUEST_EXECUTED)
        self.assertEqual(out["image_pair"], 1)
        self.assertTrue(out["service_params"] & els.FCP_WRITE_XFER_RDY_DISABLED)

    def test_build_small_els_and_bls(self):
        self.assertEqual(els.build_ls_rjt(els.LsRjtReason.UNABLE_TO_PERFORM,
                                          els.EXPLAIN_INVALID_PORT_NAME), hx("01 00000000 09 0d 00"))
        self.assertEqual(els.build_logo(0x010200, PORT_NAME),
                         hx("05 00000000 010200 2000002500000001"))
        self.assertEqual(els.build_ls_acc(), hx("02000000"))
        self.assertEqual(els.build_ba_acc(0x1234, 0x0056), hx("00 00 0000 1234 0056 0000 ffff"))

    def test_build_gid_pn(self):
        self.assertEqual(ct.build_gid_pn(PORT_NAME), hx(CT_GID_PN_HEX) + hx("2000002500000001"))

    def test_build_gid_pn_accept(self):
        self.assertEqual(ct.build_gid_pn_accept(0x010200), hx(CT_ACCEPT_HEX) + hx("80 010200"))

    def test_build_ct_reject(self):
        self.assertEqual(ct.build_ct_reject(), hx("01 000000 fc 02 00 00 8001 0000 00 09 01 00"))

    def test_parse_ct_gid_pn(self):
        out = ct.parse_ct(hx(CT_GID_PN_HEX) + hx("2000002500000001"), request=True)
        self.assertEqual((out["command_name"], out["port_name"]), ("GID_PN", PORT_NAME))
        out = ct.parse_ct(hx(CT_ACCEPT_HEX) + hx("80 010200"), request=False)
        self.assertEqual((out["command_name"], out["port_id"]), ("ACCEPT", 0x010200))


class LogEntryBuilderTests(TestCase):
    def test_crc32c_package_is_castagnoli(self):
        self.assertEqual(crc32c.crc32c(b"123456789"), 0xE3069283)

    def test_build_entry_header_and_crc32c(self):
        body = bytes(range(16))
        data = logentry.build_entry(logentry.EntryType.WR, body, group_id=7, sequence=5)
        self.assertEqual(len(data), 88 + 16)
        self.assertEqual(data[:80], hx(
            """52434e4c 02 01 0000 00000007 10 00 0000 0000000000000005 0000000000000000
               0000000000000000 0000000000000000 0000000000000000 0000000000000000
               0000 0001 00000000 00000010 00000010"""))
        self.assertEqual(data[84:88], bytes(4))
        self.assertEqual(data[88:], body)
        zeroed = data[:80] + bytes(4) + data[84:88]
        self.assertEqual(int.from_bytes(data[80:84], "big"), crc32c.crc32c(zeroed + body))
        self.assertTrue(logentry.parse_datagram(data).crc_ok)

    def test_build_entry_crc32c_covers_every_header_field(self):
        data = logentry.build_entry(
            logentry.EntryType.CTRL, b"\xff" * 5, flags=3, ttl=1, io_time_ns=1 << 63,
            target_wwn=0x5000000000000001, target_lun=1, source_wwn=0x5000000000000002,
            source_lun=2, segment_index=1, segment_count=2, segment_offset=5, total_length=10)
        zeroed = data[:80] + bytes(4) + data[84:88]
        self.assertEqual(int.from_bytes(data[80:84], "big"), crc32c.crc32c(zeroed + b"\xff" * 5))
        self.assertEqual(data[64:80], hx("0001 0002 00000005 0000000a 00000005"))

    def test_build_entry_explicit_version(self):
        self.assertEqual(logentry.build_entry(logentry.EntryType.WR, version=3)[4], 3)

    def test_build_entry_seal_fields(self):
        data = logentry.build_entry(logentry.EntryType.WR, bytes(40), seal=1, key_epoch=0x0A0B0C0D)
        self.assertEqual(data[12:16], hx("10 01 0000"))
        self.assertEqual(data[84:88], hx("0a0b0c0d"))
        header = logentry.parse_datagram(data).header
        self.assertEqual((header.seal, header.key_epoch), (1, 0x0A0B0C0D))

    def test_build_hop_header(self):
        self.assertEqual(hop.build_hop_header(3, (1 << 60) + 5),
                         hx("52434e48 01 01 0000 00000003 00000000 1000000000000005"))
        self.assertEqual(hop.hop_nonce(5), hx("00000000 0000000000000005"))

    def test_build_rio_area(self):
        unit = hx("bcb55656") + bytes(28) + hx("bcb57575")
        self.assertEqual(logentry.build_rio_area([unit, unit]),
                         hx("00000024") + unit + hx("00000024") + unit)

    def test_build_nak(self):
        data = logentry.build_nak([(1, 3), (10, 10)], group_id=9)
        self.assertEqual(data[5], logentry.EntryType.NAK)
        self.assertEqual(data[88:], hx("00000002 00000000 0000000000000001 0000000000000003"
                                       "000000000000000a 000000000000000a"))
        self.assertEqual(data[76:80], hx("00000028"))
        self.assertEqual(logentry.parse_nak_ranges(data[88:]), [(1, 3), (10, 10)])

    def test_build_keepalive(self):
        data = logentry.build_keepalive(0xAB, 0x18BCFE56800)
        self.assertEqual(data[5], logentry.EntryType.KEEPALIVE)
        self.assertEqual(data[88:], hx("00000000000000ab 0000018bcfe56800"))

    def test_build_batch_pads_entries_to_8_bytes(self):
        first = logentry.build_entry(logentry.EntryType.WR, b"abcde")         # 93 bytes
        second = logentry.build_keepalive(1, 2)                                # 104 bytes
        batch = logentry.build_batch([first, second], group_id=4)
        self.assertEqual(batch[5], logentry.EntryType.BATCH)
        self.assertEqual(batch[88:], hx("00000002 00000000") + first + hx("000000") + second)
        self.assertEqual(len(batch), 88 + 8 + 96 + 104)
        outer, spans = logentry.parse_batch(batch)
        self.assertTrue(outer.crc_ok)
        self.assertEqual(spans, [(96, 93), (192, 104)])


class GbeBuilderTests(TestCase):
    def test_internet_checksum_rfc1071_example(self):
        self.assertEqual(gbe.internet_checksum(hx("0001 f203 f4f5 f6f7")), 0x220D)

    def test_internet_checksum_odd_length_pads_with_zero(self):
        self.assertEqual(gbe.internet_checksum(hx("0001 f203 f4f5 f6")),
                         gbe.internet_checksum(hx("0001 f203 f4f5 f600")))

    def test_internet_checksum_of_a_checksummed_header_is_zero(self):
        self.assertEqual(gbe.internet_checksum(hx("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")), 0)

    def test_build_ipv4_header_checksum(self):
        payload = bytes(0x73 - 20)
        self.assertEqual(gbe.build_ipv4("192.168.0.1", "192.168.0.199", gbe.IPPROTO_UDP, payload),
                         hx("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7") + payload)

    def test_build_udp_checksum_verifies(self):
        packet = gbe.build_udp("10.0.0.1", "10.0.0.2", 40000, logentry.LOG_PORT, b"hello")
        segment = packet[20:]
        self.assertEqual(segment[:6], hx("9c40 b799 000d"))
        pseudo = hx("0a000001 0a000002 00 11 000d")
        self.assertEqual(gbe.internet_checksum(pseudo + segment), 0)
        self.assertEqual(segment[8:], b"hello")

    def test_build_tcp_checksum_verifies(self):
        packet = gbe.build_tcp("10.0.0.1", "10.0.0.2", 40000, fcip.FCIP_PORT, 7, b"abc", ack=9)
        segment = packet[20:]
        self.assertEqual(segment[:16], hx("9c40 0c99 00000007 00000009 5018 ffff"))
        pseudo = hx("0a000001 0a000002 00 06 0017")
        self.assertEqual(gbe.internet_checksum(pseudo + segment), 0)
        self.assertEqual(gbe.internet_checksum(packet[:20]), 0)

    def test_build_ethernet(self):
        self.assertEqual(gbe.build_ethernet(b"IP"), hx("020000000002 020000000001 0800") + b"IP")


class NamesTests(TestCase):
    def test_format_wwn(self):
        self.assertEqual(names.format_wwn(0x2000002500000001), "20:00:00:25:00:00:00:01")
        self.assertEqual(names.format_wwn(0), "00:00:00:00:00:00:00:00")

    def test_parse_wwn(self):
        self.assertEqual(names.parse_wwn("20:00:00:25:00:00:00:01"), 0x2000002500000001)
        self.assertEqual(names.parse_wwn(" 50:0A:09:80:00:00:00:FF\n"), 0x500A0980000000FF)
        self.assertEqual(names.parse_wwn("2000002500000001"), 0x2000002500000001)

    def test_parse_wwn_rejects_malformed_text(self):
        for text in ("", "20:00:00:25:00:00:00", "20:00:00:25:00:00:00:01:02",
                     "200000250000001", "20-00-00-25-00-00-00-01", "2g:00:00:25:00:00:00:01",
                     "2000:0025:0000:0001"):
            self.assertRaises(ValueError, names.parse_wwn, text)

    def test_format_port_id(self):
        self.assertEqual(names.format_port_id(0x010200), "01.02.00")
        self.assertEqual(names.format_port_id(0xFFFFFC), "ff.ff.fc")


class ReadmeWireFormatTests(TestCase):
    """README.md's log-transfer wire format tables are the field tables, row by row."""

    def readme_rows(self, marker: str) -> list[tuple[int, int, str, str]]:
        text = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
        start = text.index(f"<!-- {marker} -->")
        block = text[start:text.index(f"<!-- end {marker} -->", start)]
        rows = []
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].isdigit():
                rows.append((int(cells[0]), int(cells[1]), cells[2].strip("`"), cells[3]))
        return rows

    def test_log_header_table(self):
        self.assertEqual(self.readme_rows("log-header-table"),
                         [(o, w, n, d) for n, o, w, _r, _b, d, _v in logentry.LOG_HEADER.rows()])

    def test_hop_header_table(self):
        self.assertEqual(self.readme_rows("hop-header-table"),
                         [(o, w, n, d) for n, o, w, _r, _b, d, _v in hop.HOP_HEADER.rows()])
