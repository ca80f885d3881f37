"""Property round trips: build -> parse gives the values back, for every layer.

Hypothesis runs derandomized (a fixed seed per test), so every run checks the
same examples.
"""

from __future__ import annotations

import crc32c
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.frames import ct, els, fc, fcip, fcp, logentry
from datapath.frames.fields import Layout
from tests.datapath.frames.test_layouts import frame_layouts

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
FEW = settings(max_examples=50, deadline=None, derandomize=True)

LAYOUTS = frame_layouts()


def uint_bits(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def layout_values(layout: Layout, exclude=()) -> st.SearchStrategy[dict]:
    """Every top-level field: integers within the width, raw bytes of the width."""
    return st.fixed_dictionaries({
        f.name: st.binary(min_size=f.width, max_size=f.width) if f.raw else uint_bits(8 * f.width)
        for f in layout.fields if f.name not in exclude})


def sub_values(layout: Layout, values: dict) -> dict:
    """The sub-bit fields of ``values``, read off most significant bit first."""
    out = {}
    for f in layout.fields:
        if not f.bits:
            continue
        bit_string = format(values[f.name], f"0{8 * f.width}b")
        at = 0
        for name, width in f.bits:
            out[name] = int(bit_string[at:at + width], 2)
            at += width
    return out


class LayoutRoundTripTests(TestCase):
    """One test per layout: rows of random values through every code path."""

    def check_round_trip(self, layout: Layout, rows: list[dict]) -> None:
        wire = b"".join(layout.build(values) for values in rows)
        self.assertEqual(len(wire), layout.size * len(rows))
        for i, values in enumerate(rows):
            data = wire[i * layout.size:(i + 1) * layout.size]
            expected = dict(values, **sub_values(layout, values))
            for fast in (False, True):
                parsed = layout.parse(wire, i * layout.size, fast=fast)
                self.assertEqual({k: parsed[k] for k in expected}, expected, f"fast={fast}")
            compiled = layout.compiled.parse(data)
            self.assertEqual({k: compiled[k] for k in values}, values)
            self.assertEqual(layout.compiled.build(values), data)
            # building from the sub-fields gives the same bytes as from the whole field
            bit_fields = {f.name for f in layout.fields if f.bits}
            if bit_fields:
                subs = {k: v for k, v in expected.items() if k not in bit_fields}
                self.assertEqual(layout.build(subs), data)
        array = layout.wire_to_array(wire)
        for i, values in enumerate(rows):
            for f in layout.fields:
                cell = array[f.name][i]
                got = bytes(cell.tolist()) if f.raw else int(cell)
                self.assertEqual(got, values[f.name], f"numpy {layout.layer}.{f.name}")
        self.assertEqual(layout.array_to_wire(array), wire)


def _layout_test(layout: Layout):
    @SETTINGS
    @given(rows=st.lists(layout_values(layout), min_size=1, max_size=3))
    def test(self, rows):
        self.check_round_trip(layout, rows)
    test.__name__ = f"test_{layout.layer}"
    test.__doc__ = f"{layout.layer}: random field values build, parse and convert back"
    return test


for _layout in LAYOUTS:
    setattr(LayoutRoundTripTests, f"test_{_layout.layer}", _layout_test(_layout))


# -- FC, SOF/EOF, FCIP ----------------------------------------------------

fc_headers = layout_values(fc.FC_HEADER)
payloads = st.binary(max_size=fc.MAX_PAYLOAD)


class FcFrameRoundTripTests(TestCase):
    def check_header(self, parsed: dict, header: dict, payload: bytes) -> None:
        for name, value in header.items():
            if name == "f_ctl":
                value = (value & ~0x3) | (-len(payload) % 4)
            self.assertEqual(parsed[name], value, name)

    @SETTINGS
    @given(header=fc_headers, payload=payloads)
    def test_fc_frame_keeps_payload_and_crc(self, header, payload):
        frame = fc.build_fc_frame(header, payload)
        self.assertEqual(len(frame) % 4, 0)
        for fast in (False, True):
            parsed = fc.parse_fc_frame(frame, fast=fast)
            self.assertEqual(parsed.payload, payload)
            self.assertTrue(parsed.crc_ok)
            self.check_header(parsed.header, header, payload)

    @SETTINGS
    @given(header=fc_headers, payload=st.binary(max_size=256),
           sof=st.sampled_from(sorted(fc.SOF_ORDERED_SETS)),
           eof=st.sampled_from(sorted(fc.EOF_ORDERED_SETS)),
           before=st.binary(max_size=8), after=st.binary(max_size=8), base=uint_bits(16))
    def test_sof_eof_unit(self, header, payload, sof, eof, before, after, base):
        unit = fc.build_sof_eof_unit(header, payload, sof, eof)
        buf = before + unit + after
        parsed = fc.parse_sof_eof_unit(buf, len(before), len(before) + len(unit), base, fast=True)
        self.assertEqual((parsed.sof, parsed.eof), (sof, eof))
        self.assertEqual(parsed.payload, payload)
        self.assertTrue(parsed.crc_ok)
        self.check_header(parsed.header, header, payload)

    @SETTINGS
    @given(header=fc_headers, payload=payloads, sof=st.sampled_from(list(fc.Sof)),
           eof=st.sampled_from(list(fc.Eof)), ts_seconds=uint_bits(32), ts_fraction=uint_bits(32))
    def test_fcip_frame(self, header, payload, sof, eof, ts_seconds, ts_fraction):
        frame = fcip.build_fcip_frame(header, payload, sof, eof, ts_seconds=ts_seconds,
                                      ts_fraction=ts_fraction)
        for fast in (False, True):
            parsed = fcip.parse_fcip_frame(frame, fast=fast)
            self.assertEqual(parsed.length, len(frame))
            self.assertEqual(parsed.encap["frame_len"] * 4, len(frame))
            self.assertEqual((parsed.encap["ts_seconds"], parsed.encap["ts_fraction"]),
                             (ts_seconds, ts_fraction))
            self.assertEqual((parsed.fc.sof, parsed.fc.eof), (sof, eof))
            self.assertEqual(parsed.fc.payload, payload)
            self.assertTrue(parsed.fc.crc_ok)
            self.check_header(parsed.fc.header, header, payload)

    @FEW
    @given(frames=st.lists(st.tuples(fc_headers, st.binary(max_size=300)), min_size=1, max_size=4),
           base=uint_bits(20))
    def test_fcip_stream_of_frames(self, frames, base):
        stream = b"".join(fcip.build_fcip_frame(h, p) for h, p in frames)
        at = 0
        for header, payload in frames:
            parsed = fcip.parse_fcip_frame(stream, at, base)
            self.assertEqual(parsed.fc.payload, payload)
            self.assertTrue(parsed.fc.crc_ok)
            at += parsed.length
        self.assertEqual(at, len(stream))

    @FEW
    @given(body=st.integers(6, 100).flatmap(lambda words: st.binary(min_size=4 * words,
                                                                    max_size=4 * words)))
    def test_fcip_special_frame(self, body):
        frame = fcip.encapsulate(body, special=True)
        parsed = fcip.parse_fcip_frame(frame)
        self.assertIsNone(parsed.fc)
        self.assertEqual(parsed.encap["pflags"], fcip.PFLAG_SPECIAL_FRAME)
        self.assertEqual(parsed.special_body, fc.delimiter_word(fc.Sof.I3) + body
                         + fc.delimiter_word(fc.Eof.T))


# -- log entries ------------------------------------------------------------

HEADER_FIELDS = ("flags", "group_id", "ttl", "sequence", "io_time_ns", "target_wwn",
                 "target_lun", "source_wwn", "source_lun")


@st.composite
def header_fields(draw, body_length: int) -> dict:
    """Random header fields, with consistent segmentation for a body of ``body_length``."""
    widths = {f.name: f.width for f in logentry.LOG_HEADER.fields}
    fields = {name: draw(uint_bits(8 * widths[name])) for name in HEADER_FIELDS}
    count = draw(st.integers(1, 0xFFFF))
    offset = draw(st.integers(0, 0xFFFFFFFF - body_length))
    fields.update(segment_count=count, segment_index=draw(st.integers(0, count - 1)),
                  segment_offset=offset,
                  total_length=draw(st.integers(offset + body_length, 0xFFFFFFFF)))
    return fields


units = st.lists(st.tuples(fc_headers, st.binary(max_size=200),
                           st.sampled_from(sorted(fc.SOF_ORDERED_SETS)),
                           st.sampled_from(sorted(fc.EOF_ORDERED_SETS))), max_size=4)
nak_ranges = st.lists(st.tuples(uint_bits(64), uint_bits(64)).map(lambda r: tuple(sorted(r))),
                      max_size=20)
simple_types = [t for t in logentry.EntryType if t != logentry.EntryType.BATCH]


@st.composite
def inner_entry(draw) -> bytes:
    kind = draw(st.sampled_from(simple_types))
    if kind == logentry.EntryType.NAK:
        return logentry.build_nak(draw(nak_ranges), sequence=draw(uint_bits(64)))
    if kind == logentry.EntryType.KEEPALIVE:
        return logentry.build_keepalive(draw(uint_bits(64)), draw(uint_bits(64)))
    return logentry.build_entry(kind, draw(st.binary(max_size=300)), sequence=draw(uint_bits(64)))


class LogEntryRoundTripTests(TestCase):
    def check_entry(self, data: bytes, entry_type: int, fields: dict, body: bytes):
        for fast in (False, True):
            entry = logentry.parse_datagram(data, fast=fast)
            self.assertTrue(entry.crc_ok)
            self.assertEqual(entry.payload, body)
            self.assertEqual(entry.length, len(data))
            self.assertIsInstance(entry.header, logentry.LogHeader)
            self.assertEqual(entry.header.entry_type, entry_type)
            self.assertEqual(entry.header.rio_length, len(body))
            self.assertEqual(entry.header.magic, logentry.MAGIC)
            self.assertEqual(entry.header.version, logentry.VERSION)
            for name, value in fields.items():
                self.assertEqual(getattr(entry.header, name), value, name)
        zeroed = data[:80] + bytes(4) + data[84:88]
        self.assertEqual(int.from_bytes(data[80:84], "big"), crc32c.crc32c(zeroed + body))

    @SETTINGS
    @given(data=st.data())
    def test_rio_entries(self, data):
        for entry_type in sorted(logentry.RIO_TYPES):
            frames = data.draw(units)
            area = logentry.build_rio_area([fc.build_sof_eof_unit(*u) for u in frames])
            fields = data.draw(header_fields(len(area)))
            entry = logentry.build_entry(entry_type, area, **fields)
            self.check_entry(entry, entry_type, fields, area)
            spans = logentry.split_rio_area(area, 88)
            self.assertEqual(len(spans), len(frames))
            for (start, length), (header, payload, sof, eof) in zip(spans, frames):
                unit = fc.parse_sof_eof_unit(entry, start, start + length)
                self.assertEqual((unit.payload, unit.sof, unit.eof), (payload, sof, eof))
                self.assertTrue(unit.crc_ok)

    @SETTINGS
    @given(data=st.data(), ranges=nak_ranges)
    def test_nak_entry(self, data, ranges):
        body_length = 8 + 16 * len(ranges)
        fields = data.draw(header_fields(body_length))
        entry = logentry.build_nak(ranges, **fields)
        self.assertEqual(len(entry), 88 + body_length)
        self.check_entry(entry, logentry.EntryType.NAK, fields, entry[88:])
        self.assertEqual(logentry.parse_nak_ranges(entry[88:], 88), ranges)

    @SETTINGS
    @given(data=st.data(), probe_id=uint_bits(64), echo=uint_bits(64))
    def test_keepalive_entry(self, data, probe_id, echo):
        fields = data.draw(header_fields(16))
        entry = logentry.build_keepalive(probe_id, echo, **fields)
        self.check_entry(entry, logentry.EntryType.KEEPALIVE, fields, entry[88:])
        self.assertEqual(logentry.parse_keepalive(entry[88:]),
                         dict(probe_id=probe_id, echo_time_ns=echo))

    @FEW
    @given(data=st.data(), entries=st.lists(inner_entry(), max_size=6), base=uint_bits(20))
    def test_batch_entry(self, data, entries, base):
        body_length = 8 + sum(len(e) + (-len(e) % 8) for e in entries)
        fields = data.draw(header_fields(body_length))
        batch = logentry.build_batch(entries, **fields)
        self.check_entry(batch, logentry.EntryType.BATCH, fields, batch[88:])
        for fast in (False, True):
            outer, spans = logentry.parse_batch(batch, base, fast)
            self.assertTrue(outer.crc_ok)
            self.assertEqual(len(spans), len(entries))
            at = 96
            for (start, length), inner in zip(spans, entries):
                self.assertEqual((start, length), (base + at, len(inner)))
                self.assertEqual(batch[start - base:start - base + length], inner)
                self.assertEqual(len(batch[at + length:at + length + (-length % 8)].strip(b"\0")), 0)
                self.assertTrue(logentry.parse_datagram(inner).crc_ok)
                at += length + (-length % 8)
            self.assertEqual(at, len(batch))

    def test_every_entry_type_is_covered(self):
        covered = set(logentry.RIO_TYPES) | {logentry.EntryType.NAK, logentry.EntryType.KEEPALIVE,
                                             logentry.EntryType.BATCH}
        self.assertEqual(covered, set(logentry.EntryType))


# -- FCP, ELS, CT parse functions ------------------------------------------------------

class Fc4RoundTripTests(TestCase):
    @SETTINGS
    @given(lun=st.integers(0, fcp.FLAT_LUN_LIMIT - 1), lba=uint_bits(64), blocks=uint_bits(32),
           fua=st.booleans(), group=uint_bits(5), fcp_dl=uint_bits(32), write=st.booleans(),
           attribute=st.sampled_from(list(fcp.TaskAttribute)), crn=uint_bits(8))
    def test_fcp_cmnd_write16(self, lun, lba, blocks, fua, group, fcp_dl, write, attribute, crn):
        cdb = fcp.build_write16(lba, blocks, fua, group) if write else fcp.build_read16(lba, blocks)
        payload = fcp.build_fcp_cmnd(lun, cdb, fcp_dl, write=write, read=not write,
                                     attribute=attribute, crn=crn)
        for fast in (False, True):
            cmnd = fcp.parse_fcp_cmnd(payload, fast=fast)
            self.assertEqual((cmnd["lun"], cmnd["fcp_dl"], cmnd["crn"], cmnd["attribute"]),
                             (lun, fcp_dl, crn, attribute))
            self.assertEqual((cmnd["wrdata"], cmnd["rddata"]), (int(write), int(not write)))
            parsed = cmnd["cdb"]
            self.assertEqual(parsed["opcode_name"], "WRITE_16" if write else "READ_16")
            self.assertEqual((parsed["lba"], parsed["transfer_length"]), (lba, blocks))
            if write:
                self.assertEqual(parsed["group_number"], group)
                self.assertEqual(parsed["cdb_flags"], 0x08 if fua else 0)

    @SETTINGS
    @given(lun=st.integers(0, fcp.FLAT_LUN_LIMIT - 1),
           action=st.sampled_from(list(fcp.RcnServiceAction)), group_id=uint_bits(32),
           source_lun=uint_bits(16), allocation=uint_bits(32), fast_flag=st.booleans())
    def test_fcp_cmnd_rcn_control(self, lun, action, group_id, source_lun, allocation, fast_flag):
        cdb = fcp.build_rcn_control(action, group_id, source_lun, allocation, fast_flag)
        for fast in (False, True):
            cmnd = fcp.parse_fcp_cmnd(fcp.build_fcp_cmnd(lun, cdb, allocation, read=True), fast=fast)
            parsed = cmnd["cdb"]
            self.assertEqual(cmnd["lun"], lun)
            self.assertEqual(parsed["service_action_name"], action.name)
            self.assertEqual((parsed["group_id"], parsed["source_lun"], parsed["allocation_length"],
                              parsed["control_flags"]),
                             (group_id, source_lun, allocation, int(fast_flag)))

    @SETTINGS
    @given(status=uint_bits(8), residual=uint_bits(32), under=st.booleans(),
           sense=st.binary(max_size=96), info=st.sampled_from([b"", bytes(4), bytes(8)]),
           trailing=st.binary(max_size=8))
    def test_fcp_rsp(self, status, residual, under, sense, info, trailing):
        payload = fcp.build_fcp_rsp(status, residual, under, sense, info)
        for fast in (False, True):
            rsp = fcp.parse_fcp_rsp(payload + trailing, fast=fast)
            self.assertEqual((rsp["scsi_status"], rsp["residual"]), (status, residual))
            self.assertEqual((rsp["sense"], rsp["response_info"]), (sense.hex(), info.hex()))
            self.assertEqual(bool(rsp["flags"] & fcp.RSP_SNS_LEN_VALID), bool(sense))
            self.assertEqual(bool(rsp["flags"] & fcp.RSP_RSP_LEN_VALID), bool(info))
            if residual:
                self.assertEqual(rsp["flags"] & (fcp.RSP_RESID_UNDER | fcp.RSP_RESID_OVER),
                                 fcp.RSP_RESID_UNDER if under else fcp.RSP_RESID_OVER)
            try:
                name = fcp.ScsiStatus(status).name
            except ValueError:
                name = f"0x{status:02x}"
            self.assertEqual(rsp["status_name"], name)

    @SETTINGS
    @given(offset=uint_bits(32), burst=uint_bits(32))
    def test_xfer_rdy(self, offset, burst):
        self.assertEqual(fcp.parse_xfer_rdy(fcp.build_xfer_rdy(offset, burst)),
                         dict(relative_offset=offset, burst_length=burst, reserved=0))

    @SETTINGS
    @given(command=st.sampled_from([els.ElsCommand.FLOGI, els.ElsCommand.PLOGI,
                                    els.ElsCommand.LS_ACC]),
           port_name=uint_bits(64), node_name=uint_bits(64), fabric=st.booleans(),
           rcv_size=uint_bits(12))
    def test_els_login(self, command, port_name, node_name, fabric, rcv_size):
        out = els.parse_els(els.build_login(command, port_name, node_name, fabric, rcv_size))
        self.assertEqual(out["command_name"], command.name)
        self.assertEqual((out["port_name"], out["node_name"]), (port_name, node_name))
        self.assertEqual((out["bb_rcv_size"], out["class3_rcv_size"]), (rcv_size, rcv_size))
        self.assertEqual(bool(out["common_features"] & els.FEATURE_F_PORT), fabric)

    @SETTINGS
    @given(service_params=uint_bits(32), accept=st.booleans())
    def test_els_prli(self, service_params, accept):
        out = els.parse_els(els.build_prli(service_params, accept))
        self.assertEqual(out["command_name"], "LS_ACC" if accept else "PRLI")
        self.assertEqual(out["service_params"], service_params)
        self.assertEqual(out["response_code"], 1 if accept else 0)

    @SETTINGS
    @given(port_name=uint_bits(64), port_id=uint_bits(24))
    def test_ct_gid_pn(self, port_name, port_id):
        self.assertEqual(ct.parse_ct(ct.build_gid_pn(port_name), request=True)["port_name"],
                         port_name)
        self.assertEqual(ct.parse_ct(ct.build_gid_pn_accept(port_id), request=False)["port_id"],
                         port_id)
