"""Parser targets: frames, log entries, batches, RIO areas, DPOK bitmaps, rcn-decode inputs,
and the delineation and batch kernels against their references (differential targets: any
disagreement is a finding).

Each parser runs both ways where it has two (the checked construct Struct and the fast
``struct`` path): they must agree. A ``DecodeError`` is the declared outcome of bad input;
the targets catch it at each stage and go on with what still decodes, so one input reaches
as deep as it can.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

from datapath.frames import capture, ct, dpok, els, fc, fcip, fcp, gbe, logentry
from datapath.frames.errors import DecodeError
from datapath.frames.fc4 import decode_fc_payload, frame_kind
from datapath.kernels import batching, bitmap, delineate as kernel
from datapath.reference import delineate as reference
from tools.fuzz_targets.kit import MiB, Finding, Target, register

_LOG_MAGIC = logentry.MAGIC.to_bytes(4, "big")
_SOF_MARK = b"\xbc\xb5"
_CRC_AT = logentry.LOG_HEADER.offsets["crc32c"]

SOURCE_WWN = 0x500A098000000001
TARGET_WWN = 0x500A098000000002
ARRAY_ID, VIRTUAL_ID = 0x010100, 0x010200


# -- seeds: the project's own builders -----------------------------------------------------

def write_exchange(ox_id: int = 1, blocks: int = 1, lba: int = 8):
    """(to_edge, back) FC frames of one WRITE(16), from tools.sample_traffic."""
    from tools.sample_traffic import write_exchange as exchange
    return exchange(ox_id, 0, lba, bytes(range(256)) * 2 * blocks)


def _els_frames() -> list[tuple[dict, bytes]]:
    req = dict(r_ctl=fc.RCtl.ELS_REQUEST, d_id=fc.FABRIC_LOGIN_SERVER, s_id=0, type=fc.FcType.ELS,
               f_ctl=0x290000, ox_id=3)
    rep = dict(req, r_ctl=fc.RCtl.ELS_REPLY, d_id=ARRAY_ID, s_id=fc.FABRIC_LOGIN_SERVER,
               f_ctl=0x990000)
    ct_req = dict(req, r_ctl=fc.RCtl.CT_REQUEST, type=fc.FcType.CT, d_id=fc.NAME_SERVER)
    ct_rep = dict(ct_req, r_ctl=fc.RCtl.CT_REPLY)
    bls = dict(req, r_ctl=fc.RCtl.BLS_BA_ACC, type=fc.FcType.BLS)
    return [
        (req, els.build_login(els.ElsCommand.FLOGI, SOURCE_WWN, SOURCE_WWN)),
        (rep, els.build_login(els.ElsCommand.LS_ACC, 0x20000000C9E00000, 0x10000000C9E00000,
                              fabric=True)),
        (req, els.build_login(els.ElsCommand.PLOGI, SOURCE_WWN, SOURCE_WWN)),
        (req, els.build_prli(0x22)), (rep, els.build_prli(0x12, accept=True)),
        (req, els.build_logo(ARRAY_ID, SOURCE_WWN)), (rep, els.build_ls_rjt(9, 0x1E)),
        (rep, els.build_ls_acc()),
        (ct_req, ct.build_gid_pn(TARGET_WWN)), (ct_rep, ct.build_gid_pn_accept(VIRTUAL_ID)),
        (ct_rep, ct.build_ct_reject()),
        (bls, els.build_ba_acc(3, 4)), (dict(bls, r_ctl=fc.RCtl.BLS_ABTS), b""),
    ]


def _fcp_frames() -> list[tuple[dict, bytes]]:
    to_edge, back = write_exchange(blocks=4)
    h = dict(r_ctl=fc.RCtl.FCP_CMND, d_id=VIRTUAL_ID, s_id=ARRAY_ID, type=fc.FcType.FCP,
             f_ctl=0x290000, ox_id=5)
    control = fcp.build_fcp_cmnd(3, fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 7, 2, 4096),
                                 4096, read=True)
    sense = bytes.fromhex("700005000000000a0000000024000000 0000".replace(" ", ""))
    rsp = fcp.build_fcp_rsp(fcp.ScsiStatus.CHECK_CONDITION, 512, True, sense, bytes(4))
    return [*to_edge, *back, (h, control), (dict(h, r_ctl=fc.RCtl.FCP_RSP), rsp),
            (dict(h, r_ctl=fc.RCtl.FCP_XFER_RDY), fcp.build_xfer_rdy(0, 4096)),
            (h, fcp.build_fcp_cmnd(0, fcp.build_read16(0, 8), 4096, read=True)),
            (dict(h, r_ctl=fc.RCtl.FCP_DATA), fcp.build_pair_params(1 << 30, 512, 65536)),
            (dict(h, r_ctl=fc.RCtl.FCP_DATA), fcp.build_residual_report(7, 9, 1, 1))]


def all_frames() -> list[tuple[dict, bytes]]:
    return _fcp_frames() + _els_frames()


def fcip_frames() -> list[bytes]:
    return [fcip.build_fcip_frame(h, p) for h, p in all_frames()]


def sof_eof_units() -> list[bytes]:
    return [fc.build_sof_eof_unit(h, p) for h, p in all_frames()]


_ENTRY = dict(group_id=7, sequence=1, io_time_ns=1_700_000_000 * 10**9, target_wwn=TARGET_WWN,
              source_wwn=SOURCE_WWN, target_lun=4)


def command_area(blocks: int = 1) -> bytes:
    from rcn.logxfer.rioarea import command_area as area
    from rcn.rio.fcp import build_write16_cdb
    return area(ARRAY_ID, VIRTUAL_ID, 5, 4, build_write16_cdb(8, blocks), bytes(512 * blocks))


def response_area(data_in: bytes = b"") -> bytes:
    from rcn.logxfer.rioarea import response_area as area
    from rcn.rio.fcp import ScsiResult
    return area(VIRTUAL_ID, ARRAY_ID, 5, 6, ScsiResult(data_in=data_in), len(data_in))


def control_area() -> bytes:
    from rcn.logxfer.rioarea import command_area as area
    cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, 7, 0)
    return area(ARRAY_ID, VIRTUAL_ID, 6, 4, cdb, data_in_length=24)


def log_entries() -> list[bytes]:
    E = logentry.EntryType
    wr = logentry.build_entry(E.WR, command_area(2), **_ENTRY)
    wrok = logentry.build_entry(E.WROK, response_area(), **_ENTRY)
    units = logentry.build_entry(E.WR, logentry.build_rio_area(sof_eof_units()[:3]), **_ENTRY)
    out = [wr, wrok, units,
           logentry.build_entry(E.CTRL, control_area(), **dict(_ENTRY, sequence=2)),
           logentry.build_entry(E.CTRL_OK, response_area(fcp.build_residual_report(1, 2)),
                                **dict(_ENTRY, sequence=2)),
           logentry.build_entry(E.WROK, response_area(), flags=logentry.EntryFlag.CUMULATIVE,
                                **dict(_ENTRY, sequence=3)),
           logentry.build_nak([(1, 1), (5, 9)], **_ENTRY),
           logentry.build_keepalive(42, 1_700_000_000 * 10**9),
           logentry.build_batch([wr, wrok, logentry.build_nak([(2, 3)], **_ENTRY)], group_id=7)]
    out += logentry.segment_entry(E.WR, command_area(1), 300, **dict(_ENTRY, sequence=4))[:2]
    return out


class _Kept(io.BytesIO):
    """A BytesIO the capture writers may close: its bytes stay readable."""

    def close(self):
        pass


def capture_bytes(linktype: int, packets: list[bytes], pcapng: bool = False) -> bytes:
    out = _Kept()
    writer = capture.CaptureWriter(out, linktype, pcapng=pcapng)
    for n, packet in enumerate(packets):
        writer.write(packet, 1_700_000_000 + n / 1000)
    writer.close()
    return out.getvalue()


def sample_capture(pcapng: bool = False, writes: int = 2) -> bytes:
    from tools.sample_traffic import generate
    out = _Kept()
    generate(out, writes=writes, pcapng=pcapng)
    return out.getvalue()


# -- helpers ---------------------------------------------------------------------------------

def _error(features: list, exc: DecodeError) -> None:
    if not isinstance(exc.offset, int) or exc.offset < 0:
        raise Finding(f"DecodeError with a bad offset {exc.offset!r}: {exc}")
    features.append(f"{exc.layer}.{exc.field}")


def _same(what: str, checked, fast) -> None:
    if checked != fast:
        raise Finding(f"{what}: the checked and the fast parser disagree: {checked!r} != {fast!r}")


def _both(features: list, what: str, parse, *args):
    """``parse(*args, fast=...)`` both ways; they must agree (result or DecodeError)."""
    results = []
    for fast in (False, True):
        try:
            results.append(parse(*args, fast=fast))
        except DecodeError as exc:
            results.append(exc)
    checked, quick = results
    if isinstance(checked, DecodeError) or isinstance(quick, DecodeError):
        _same(what, getattr(checked, "as_dict", lambda: "a result")(),
              getattr(quick, "as_dict", lambda: "a result")())
        _error(features, checked)
        return None
    return checked, quick


def _fc4(features: list, frame: fc.FcFrame, fast_frame: fc.FcFrame | None = None) -> None:
    features.append(frame_kind(frame))
    pair = _both(features, "fc4", lambda fast: decode_fc_payload(
        frame if not fast or fast_frame is None else fast_frame, fast=fast))
    if pair is not None:
        _same("fc4", dict(pair[0]), dict(pair[1]))


def _plain(header) -> dict:
    return {k: v for k, v in dict(header).items() if not k.startswith("_")}


def fix_log_crcs(data: bytes, rng) -> bytes:
    """Mostly: every log entry in ``data`` with its CRC32C made right again."""
    if rng.random() < 0.25:
        return data
    out = bytearray(data)
    at = out.find(_LOG_MAGIC)
    while at >= 0 and at + logentry.HEADER_SIZE <= len(out):
        length = int.from_bytes(out[at + logentry.LOG_HEADER.offsets["rio_length"]:][:4], "big")
        end = min(len(out), at + logentry.HEADER_SIZE + length)
        header = bytes(out[at:at + logentry.HEADER_SIZE])
        crc = logentry.entry_crc(header, bytes(out[at + logentry.HEADER_SIZE:end]))
        out[at + _CRC_AT:at + _CRC_AT + 4] = crc.to_bytes(4, "big")
        at = out.find(_LOG_MAGIC, at + 4)
    return bytes(out)


def fix_fcip(data: bytes, rng) -> bytes:
    """Mostly: every FCIP header's complements and every FC CRC made right again."""
    if rng.random() < 0.25:
        return data
    out = bytearray(data)
    at = out.find(fcip.SYNC_PATTERN)
    while at >= 0 and at + fcip.HEADER_SIZE <= len(out):
        out[at + 10] = ~out[at + 8] & 0xFF
        out[at + 11] = ~out[at + 9] & 0xFF
        out[at + 14] = ~out[at + 12] & 0xFF
        out[at + 15] = ~out[at + 13] & 0xFF
        end = at + ((out[at + 12] & 3) << 8 | out[at + 13]) * 4
        if at + fcip.OVERHEAD + 28 <= end <= len(out):
            body = bytes(out[at + fcip.HEADER_SIZE + 4:end - 8])
            out[end - 8:end - 4] = zlib.crc32(body).to_bytes(4, "little")
        at = out.find(fcip.SYNC_PATTERN, at + 8)
    return bytes(out)


_DECODE_ERRORS = (DecodeError,)
LOG_FIELDS = ((_LOG_MAGIC, 0, logentry.LOG_HEADER), (_LOG_MAGIC, 88, logentry.COUNT_HEADER),
              (_LOG_MAGIC, 96, logentry.NAK_RANGE), (_LOG_MAGIC, 96, logentry.KEEPALIVE),
              (_SOF_MARK, -4, logentry.COUNT_HEADER), (_SOF_MARK, 4, fc.FC_HEADER),
              (_SOF_MARK, 28, fcp.FCP_CMND), (_SOF_MARK, 28, fcp.FCP_RSP))
FCIP_FIELDS = ((fcip.SYNC_PATTERN, 0, fcip.FCIP_HEADER), (fcip.SYNC_PATTERN, 32, fc.FC_HEADER),
               (fcip.SYNC_PATTERN, 56, fcp.FCP_CMND), (fcip.SYNC_PATTERN, 56, els.LOGIN),
               (fcip.SYNC_PATTERN, 56, fcp.FCP_RSP), (fcip.SYNC_PATTERN, 56, ct.CT_PREAMBLE))


# -- log entries ----------------------------------------------------------------------------

def _rio_units(features: list, area: bytes) -> None:
    try:
        units = logentry.split_rio_area(area)
    except DecodeError as exc:
        _error(features, exc)
        return
    for start, length in units:
        pair = _both(features, "rio unit", fc.parse_sof_eof_unit, area, start, start + length)
        if pair is not None:
            _same("rio unit header", _plain(pair[0].header), _plain(pair[1].header))
            _fc4(features, *pair)


def run_log_entry(data: bytes):
    features: list = []
    pair = _both(features, "log entry", logentry.parse_datagram, data)
    if pair is None:
        return tuple(features)
    entry, fast = pair
    _same("log header", entry.header, fast.header)          # LogHeader records, both ways
    _same("log body", (entry.payload, entry.crc_ok), (fast.payload, fast.crc_ok))
    kind = logentry.EntryType(entry.header.entry_type)
    features.append(kind.name)
    try:
        if kind == logentry.EntryType.NAK:
            features.append(min(len(logentry.parse_nak_ranges(entry.payload)), 3))
        elif kind == logentry.EntryType.KEEPALIVE:
            logentry.parse_keepalive(entry.payload)
        elif kind == logentry.EntryType.BATCH:
            batch = _both(features, "batch", logentry.parse_batch, data)
            if batch is not None:
                _same("batch spans", batch[0][1], batch[1][1])
                for start, length in batch[0][1]:
                    features.append(run_log_entry(data[start:start + length]))
        else:
            _rio_units(features, entry.payload)
    except DecodeError as exc:
        _error(features, exc)
    return tuple(features)


register(Target(
    "log-entry", "log entry datagrams (WR, WROK, CTRL, CTRL_OK, NAK, KEEPALIVE, BATCH) and the "
    "FC units of their RIO areas: parse_datagram checked == fast, parse_nak_ranges, "
    "parse_keepalive, parse_batch, split_rio_area, parse_sof_eof_unit, decode_fc_payload",
    run_log_entry, log_entries, fields=LOG_FIELDS, fixup=fix_log_crcs, parser=True))


def run_batch_unpack(data: bytes):
    """batching.unpack (kernel) == logentry.parse_batch: same spans or the same DecodeError."""
    try:
        _, spans = logentry.parse_batch(data)
        want = [(a, n) for a, n in spans]
    except DecodeError as exc:
        want = exc.as_dict()
    try:
        offsets, lengths = batching.unpack(data)
        got = list(zip(offsets.tolist(), lengths.tolist()))
    except DecodeError as exc:
        got = exc.as_dict()
    if got != want:
        raise Finding(f"batching.unpack {got!r} != logentry.parse_batch {want!r}")
    try:
        batching.unpack(data, check_crc=True)
    except DecodeError as exc:
        return ("crc", exc.layer, exc.field)
    return ("ok", min(len(got), 4)) if isinstance(got, list) else (got["layer"], got["field"])


def batch_seeds() -> list[bytes]:
    entries = log_entries()
    return [logentry.build_batch(entries[:2]), logentry.build_batch(entries[2:6], group_id=3),
            logentry.build_batch([entries[6]])]


register(Target(
    "batch-unpack", "BATCH datagrams: the batching.unpack kernel against logentry.parse_batch "
    "(differential: same inner spans or the same DecodeError)",
    run_batch_unpack, batch_seeds, fields=LOG_FIELDS, fixup=fix_log_crcs, parser=True))


# -- RIO areas (rcn.logxfer.rioarea: the target edge's apply path) --------------------------------

def run_rio_area(data: bytes):
    from rcn.logxfer.rioarea import parse_command_area, parse_response_area
    features = []
    for parse in (parse_command_area, parse_response_area):
        try:
            parse(data)
            features.append("ok")
        except DecodeError as exc:
            _error(features, exc)
    return tuple(features)


register(Target(
    "rio-area", "the RIO area of WR/CTRL and WROK/CTRL_OK entries as the target edge reads "
    "it (rcn.logxfer.rioarea.parse_command_area, parse_response_area)",
    run_rio_area, lambda: [command_area(1), command_area(3), control_area(), response_area(),
                           response_area(bytes(600))],
    clean=_DECODE_ERRORS,
    fields=((_SOF_MARK, -4, logentry.COUNT_HEADER), (_SOF_MARK, 4, fc.FC_HEADER),
            (_SOF_MARK, 28, fcp.FCP_CMND), (_SOF_MARK, 28, fcp.FCP_RSP)),
    parser=True))


# -- FC, FCIP, FC-4 -----------------------------------------------------------------------------

def run_fcip_frame(data: bytes):
    features: list = []
    pair = _both(features, "fcip frame", fcip.parse_fcip_frame, data)
    if pair is None:
        return tuple(features)
    checked, fast = pair
    _same("fcip encap", _plain(checked.encap), _plain(fast.encap))
    if checked.fc is None:
        return ("special",)
    _same("fc header", _plain(checked.fc.header), _plain(fast.fc.header))
    _same("fc frame", (checked.fc.payload, checked.fc.crc_ok, checked.fc.sof, checked.fc.eof),
          (fast.fc.payload, fast.fc.crc_ok, fast.fc.sof, fast.fc.eof))
    _fc4(features, checked.fc, fast.fc)
    return tuple(features)


register(Target(
    "fcip-frame", "one FCIP frame: parse_fcip_frame checked == fast, then the FC-4 payload "
    "(FCP_CMND/RSP/XFER_RDY, ELS, BLS, CT) both ways",
    run_fcip_frame, fcip_frames, fields=FCIP_FIELDS, fixup=fix_fcip, parser=True))


def run_fc_unit(data: bytes):
    features: list = []
    pair = _both(features, "sof..eof unit", fc.parse_sof_eof_unit, data)
    if pair is not None:
        _same("fc header", _plain(pair[0].header), _plain(pair[1].header))
        _fc4(features, *pair)
    bare = _both(features, "bare fc frame", fc.parse_fc_frame, data[4:-4])
    if bare is not None:
        _same("bare fc header", _plain(bare[0].header), _plain(bare[1].header))
        _fc4(features, *bare)
    return tuple(features)


register(Target(
    "fc-unit", "an FC frame between SOF and EOF ordered sets (LINKTYPE 225, the RIO area's "
    "units) and the bare FC-2 frame inside it (LINKTYPE 224), with their FC-4 payloads",
    run_fc_unit, sof_eof_units,
    fields=((None, 4, fc.FC_HEADER), (None, 28, fcp.FCP_CMND), (None, 28, els.LOGIN),
            (None, 28, fcp.FCP_RSP), (None, 28, ct.CT_PREAMBLE), (None, 28, els.PRLI)),
    parser=True))


def run_fc4(data: bytes):
    """byte 0 R_CTL, byte 1 TYPE, the rest the payload."""
    if len(data) < 2:
        return ()
    header = dict.fromkeys(f.name for f in fc.FC_HEADER.fields)
    header.update({k: 0 for k in header}, r_ctl=data[0], type=data[1], f_ctl=0)
    frame = fc.FcFrame(header, data[2:], True)
    features = [frame_kind(frame)]
    _fc4(features, frame)
    for parse in (fcp.parse_pair_params, fcp.parse_residual_report):
        try:
            parse(data[2:])
        except DecodeError as exc:
            _error(features, exc)
    return tuple(features)


register(Target(
    "fc4", "FC-4 payloads by R_CTL and TYPE (first two bytes): FCP_CMND and its CDB, FCP_RSP, "
    "XFER_RDY, ELS (FLOGI/PLOGI/PRLI/LOGO/LS_ACC/LS_RJT), BLS, CT (GID_PN), PAIR_CREATE "
    "parameters, residual reports",
    run_fc4, lambda: [bytes((h["r_ctl"], h["type"])) + p for h, p in all_frames()],
    fields=((None, 2, fcp.FCP_CMND), (None, 2, fcp.FCP_RSP), (None, 2, els.LOGIN),
            (None, 2, els.PRLI), (None, 2, ct.CT_PREAMBLE), (None, 2, fcp.RCN_PAIR_PARAMS),
            (None, 18, fcp.WRITE_16), (None, 18, fcp.RCN_CONTROL)),
    parser=True))


def run_gbe(data: bytes):
    features: list = []
    pair = _both(features, "ethernet", gbe.parse_ethernet, data)
    if pair is not None:
        _same("packet", pair[0], pair[1])
        features.append(None if pair[0] is None else pair[0].proto)
    return tuple(features)


def gbe_seeds() -> list[bytes]:
    frames = fcip_frames()[:2]
    entry = log_entries()[0]
    return [gbe.build_ethernet(gbe.build_tcp("10.0.0.1", "10.0.0.2", 40000, 3225, 1000, frames[0])),
            gbe.build_ethernet(gbe.build_udp("10.0.1.2", "10.0.1.3", 47001, 47001, entry))]


register(Target(
    "gbe", "Ethernet / IPv4 / TCP|UDP as rcn-decode reads captures (parse_ethernet both ways)",
    run_gbe, gbe_seeds,
    fields=((None, 0, gbe.ETHERNET), (None, 14, gbe.IPV4), (None, 34, gbe.UDP),
            (None, 34, gbe.TCP)), parser=True))


def run_dpok(data: bytes):
    try:
        bm = bitmap.deserialize(data)
    except DecodeError as exc:
        return (exc.field,)
    again = bitmap.deserialize(bitmap.serialize(bm))
    if again.popcount() != bm.popcount() or again.track_count != bm.track_count:
        raise Finding("DPOK bitmap: serialize(deserialize(x)) does not round-trip")
    return ("ok", min(bm.popcount(), 3))


def dpok_seeds() -> list[bytes]:
    out = []
    for encoding in (dpok.ENCODING_RAW, dpok.ENCODING_RUNS):
        bm = bitmap.DifferentialBitmap(1 << 30, 65536)
        bm.mark_extents(*[np.array(v, dtype="uint64") for v in
                          ([0, 1 << 20, (1 << 21) - 1], [8, 300, 1])], 512)
        out.append(bitmap.serialize(bm, encoding))
    return out


register(Target(
    "dpok-bitmap", "the DPOK differential bitmap (RESYNC's data-in): bitmap.deserialize, and "
    "serialize of what it returns",
    run_dpok, dpok_seeds, fields=((None, 0, dpok.HEADER),),
    memory_bound=lambda n: 16 * MiB + 64 * n, parser=True))


# -- the delineation kernel against its reference model ------------------------------------------

def _as_dicts(frames) -> list[dict]:
    return [dict(zip(kernel.FRAME_DTYPE.names, row)) for row in frames.tolist()]


def _compare(what: str, got, want) -> None:
    got_t = (_as_dicts(got.frames), got.consumed, int(got.error), got.error_offset)
    want_t = (want.frames, want.consumed, int(want.error), want.error_offset)
    if got_t != want_t:
        raise Finding(f"{what}: kernel {got_t[1:]} != reference {want_t[1:]} "
                      f"(frames equal: {got_t[0] == want_t[0]})")


def run_delineate(data: bytes):
    got, want = kernel.delineate(data), reference.delineate(data)
    _compare("delineate", got, want)
    limit = len(data) % 5
    _compare(f"delineate(max_frames={limit})", kernel.delineate(data, limit),
             reference.delineate(data, limit))
    # the stream helpers, fed in pieces the input's length chooses
    step = 1 + len(data) % 97
    stream_k, stream_r = kernel.StreamDelineator(), reference.StreamDelineator()
    for at in range(0, len(data), step):
        block_k, got_s = stream_k.feed(data[at:at + step])
        block_r, want_s = stream_r.feed(data[at:at + step])
        if bytes(block_k) != bytes(block_r):
            raise Finding(f"StreamDelineator: kernel block != reference block at {at}")
        _compare(f"StreamDelineator feed at {at}", got_s, want_s)
    return (int(got.error), min(len(got.frames), 3), got.consumed == len(data))


register(Target(
    "delineate", "the FCIP delineation kernel (datapath.kernels.delineate: delineate, "
    "max_frames, StreamDelineator fed in pieces) against datapath.reference.delineate "
    "(differential: any disagreement is a finding)",
    run_delineate, lambda: [b"".join(fcip_frames()[:4]), b"".join(fcip_frames()[4:9]),
                            fcip_frames()[-1]],
    fields=FCIP_FIELDS, fixup=fix_fcip, parser=True))


# -- rcn-decode inputs ----------------------------------------------------------------------------

def _decode(data: bytes, entry: str, keys=None, shown: bool = False):
    """rcn-decode on ``data`` (``keys``: ``rcn.decode.sealed.Keys``, as ``--keys``): its
    features; with ``shown``, also the text of every record as JSON and as a tree."""
    from rcn.decode.decoder import Decoder
    from rcn.decode.filters import walk
    from rcn.decode.render import to_json, to_tree
    from rcn.decode.summary import Summary
    decoder = Decoder(keys=keys)
    summary = Summary()
    if entry == "hex":
        records = list(decoder.decode_hex_text(data.decode("latin-1")))
        records += list(decoder.finish())
    else:
        records = list(decoder.decode_file(data))
    features, texts = set(), []
    for record in records:
        texts += (to_json(record), to_tree(record))
        summary.add(record)
        for part in walk(record):
            features.add(part.get("kind"))
            for what in ("seal", "hop"):
                if what in part:
                    note = part[what] if what == "seal" else part[what].get("check", "")
                    features.add(f"{what}: {str(note).split(':')[0][:24]}")
            for error in part.get("errors") or ():
                features.add(f"{error['layer']}.{error['field']}")
    texts.append(str(summary.report()))
    features = frozenset(features)
    return (features, texts) if shown else features


def capture_seeds() -> list[bytes]:
    units = sof_eof_units()[:4]
    return [sample_capture(), sample_capture(pcapng=True, writes=1),
            capture_bytes(capture.LINKTYPE_FC_2_WITH_FRAME_DELIMS, units),
            capture_bytes(capture.LINKTYPE_FC_2, [u[4:-4] for u in units], pcapng=True)]


register(Target(
    "decode-capture", "rcn-decode on pcap/pcapng input (Ethernet with FCIP and log entries, "
    "LINKTYPE 224/225): every record rendered as JSON and tree and summarised; bad input must "
    "only ever become error records",
    lambda data: _decode(data, "file"), capture_seeds,
    fields=((b"\xd4\xc3\xb2\xa1", 0, gbe.UDP), (b"\x0a\x0d\x0d\x0a", 0, gbe.UDP)) + FCIP_FIELDS
    + LOG_FIELDS[:2], fixup=fix_log_crcs, max_len=1 << 17, test_runs=150, parser=True))

register(Target(
    "decode-fcip-stream", "rcn-decode on an FCIP stream file (concatenated FCIP frames): "
    "resynchronisation, records, summary",
    lambda data: _decode(data, "file"), lambda: [b"".join(fcip_frames()[:6]),
                                                 b"".join(fcip_frames()[6:])],
    fields=FCIP_FIELDS, fixup=fix_fcip, test_runs=200, parser=True))


def hex_seeds() -> list[bytes]:
    def text(data: bytes) -> str:
        return " ".join(data[i:i + 16].hex(" ") for i in range(0, len(data), 16))
    entries = log_entries()
    return [("# a write\n" + text(fcip_frames()[0]) + "\n\n0x" + entries[0][:96].hex()
             + "\n\n" + text(entries[6]) + "\n\n" + text(sof_eof_units()[1])).encode(),
            text(b"".join(fcip_frames()[2:4])).replace(" ", ":").encode(),
            text(entries[-1]).encode() + b"\n\n" + text(entries[-2]).encode()]


register(Target(
    "decode-hex", "rcn-decode on hex text (paragraphs of hex, comments, 0x, colons): each "
    "paragraph as a frame, datagram or stream",
    lambda data: _decode(data, "hex"), hex_seeds,
    tokens=(b"\n\n", b"# ", b"0x", b":", b",", b"fcip", b"52434e4c01", b"bcb55656",
            b"0101fefe0101fefe"), test_runs=200, parser=True))
