"""Mutation tests: damaged input decodes or raises DecodeError, and nothing else.

For every frame type we start from a valid encoding and try every truncation,
appended garbage and (Hypothesis, derandomized) byte flips. Each decode runs
under an interval timer, so a decoder that loops forever fails the test
instead of hanging the suite. Every DecodeError must name a field that exists
in its layer and an offset inside the buffer. Targeted corruptions check the
exact layer, field and offset.
"""

from __future__ import annotations

import io
import signal

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from datapath.frames import capture, ct, els, fc, fcip, fcp, gbe, logentry
from datapath.frames.errors import DecodeError
from tests.datapath.frames.test_layouts import frame_layouts
from tests.support import assert_decode_error

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
HANG_SECONDS = 10.0

#: layer -> the field names a DecodeError of that layer may carry
KNOWN_FIELDS: dict[str, set[str]] = {}
for _layout in frame_layouts():
    KNOWN_FIELDS.setdefault(_layout.layer, set()).update(
        {f.name for f in _layout.fields} | {name for f in _layout.fields for name, _ in f.bits})
for _layer, _extra in {"fc": {"crc", "payload", "sof", "eof"}, "fcip": {"sof", "eof"},
                       "els": {"command"}, "bls": {"r_ctl"}, "log_rio": {"unit_length"},
                       "capture": {"magic", "global_header", "record_header", "record",
                                   "section_header", "block"}}.items():
    KNOWN_FIELDS.setdefault(_layer, set()).update(_extra)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


def patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def apply_flips(data: bytes, flips) -> bytes:
    out = bytearray(data)
    for index, mask in flips:
        out[index % len(out)] ^= mask
    return bytes(out)


def flips(max_flips: int = 4):
    """(index, xor mask) pairs; the index is taken modulo the buffer length."""
    return st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)),
                    min_size=1, max_size=max_flips)


single_flip = flips(1)


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang(f"decoder still running after {HANG_SECONDS} s")


# -- valid encodings --------------------------------------------------------------

HEADER = dict(r_ctl=0x06, d_id=0x010200, s_id=0x010300, type=0x08, f_ctl=0x290000, ox_id=0x1234)
CDB = fcp.build_write16(0x1000, 8)
CMND = fcp.build_fcp_cmnd(3, CDB, 4096, write=True)
CMND_RCN = fcp.build_fcp_cmnd(3, fcp.build_rcn_control(3, 7, 2, 4096), 4096, read=True)
SENSE = hx("70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00")
RSP = fcp.build_fcp_rsp(fcp.ScsiStatus.CHECK_CONDITION, 512, True, SENSE, bytes(4))
FCIP_FRAME = fcip.build_fcip_frame(HEADER, CMND)                           # 96 bytes
UNIT = fc.build_sof_eof_unit(HEADER, CMND)                                 # 68 bytes
FC_FRAME = fc.build_fc_frame(HEADER, b"data in five")                      # 40 bytes
RIO = logentry.build_rio_area([UNIT, fc.build_sof_eof_unit(dict(HEADER, r_ctl=1), bytes(32))])
LOG = logentry.build_entry(logentry.EntryType.WR, RIO, group_id=7, sequence=5)
NAK = logentry.build_nak([(1, 2), (5, 9)], group_id=7)
KEEPALIVE = logentry.build_keepalive(1, 2)
INNER = [LOG, KEEPALIVE, logentry.build_entry(logentry.EntryType.WROK, RSP[:-4], sequence=5)]
BATCH = logentry.build_batch(INNER, group_id=7)
ELS_PAYLOADS = {
    "plogi": els.build_login(els.ElsCommand.PLOGI, 0x2000002500000001, 0x2000002500000000),
    "flogi_acc": els.build_login(els.ElsCommand.LS_ACC, 0x2000002500000001, 1, fabric=True),
    "prli": els.build_prli(els.FCP_INITIATOR_FUNCTION),
    "prli_acc": els.build_prli(els.FCP_WRITE_XFER_RDY_DISABLED, accept=True),
    "ls_rjt": els.build_ls_rjt(els.LsRjtReason.UNABLE_TO_PERFORM),
    "logo": els.build_logo(0x010200, 0x2000002500000001),
    "ls_acc": els.build_ls_acc(),
}
BA_ACC = els.build_ba_acc(0x1234, 0x56)
BA_RJT = els.BA_RJT.build(reason=9, explanation=3)
GID_PN = ct.build_gid_pn(0x2000002500000001)
GID_PN_ACC = ct.build_gid_pn_accept(0x010200)
CT_REJECT = ct.build_ct_reject()
UDP_FRAME = gbe.build_ethernet(gbe.build_udp("10.0.0.1", "10.0.0.2", 40000, 47001, KEEPALIVE))
TCP_FRAME = gbe.build_ethernet(gbe.build_tcp("10.0.0.1", "10.0.0.2", 40000, 3225, 7, FCIP_FRAME))
TCP_SMALL = gbe.build_ethernet(gbe.build_tcp("10.0.0.1", "10.0.0.2", 40000, 3225, 7, b"abc"))

# pcap, little endian, microseconds, LINKTYPE_ETHERNET, two records (hand-written)
PCAP = hx("""d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000
             e8030000 20a10700 04000000 04000000 deadbeef
             e9030000 00000000 02000000 02000000 abcd""")
PCAP_BOUNDARIES = {24, 24 + 16 + 4, len(PCAP)}


def _written(pcapng: bool) -> bytes:
    buf = io.BytesIO()
    writer = capture.CaptureWriter(buf, capture.LINKTYPE_ETHERNET, pcapng=pcapng)
    for i, frame in enumerate((UDP_FRAME, TCP_FRAME, UDP_FRAME[:60])):
        writer.write(frame, 1700000000.25 + i)
    return buf.getvalue()


PCAP_NANO = _written(False)
PCAPNG = _written(True)


def pcapng_block_ends(data: bytes) -> list[int]:
    ends, at = [], 0
    while at < len(data):
        at += int.from_bytes(data[at + 4:at + 8], "little")
        ends.append(at)
    return ends


def pcap_record_ends(data: bytes) -> list[int]:
    ends, at = [24], 24
    while at < len(data):
        at += 16 + int.from_bytes(data[at + 8:at + 12], "little")
        ends.append(at)
    return ends


class MutationCase(TestCase):
    """Decode helpers: a hang guard and the DecodeError invariants."""

    def setUp(self):
        self._previous = signal.signal(signal.SIGALRM, _on_alarm)

    def tearDown(self):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)

    def check_error(self, exc: DecodeError, length: int, base: int = 0) -> None:
        self.assertIn(exc.layer, KNOWN_FIELDS, str(exc))
        self.assertIn(exc.field, KNOWN_FIELDS[exc.layer], str(exc))
        self.assertTrue(base <= exc.offset <= base + length, f"{exc} outside {length} bytes")
        self.assertTrue(exc.reason)

    def attempt(self, func, data: bytes, *args, base: int = 0):
        """``func(data, *args)``: its result, or the DecodeError it raised."""
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            return func(data, *args)
        except DecodeError as exc:
            self.check_error(exc, len(data), base)
            return exc
        except Exception as exc:  # noqa: BLE001 - anything else is the failure under test
            self.fail(f"{getattr(func, '__name__', func)} raised {type(exc).__name__}: {exc}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def every_truncation(self, func, data: bytes, must_fail: bool = True) -> list:
        results = []
        for cut in range(len(data)):
            result = self.attempt(func, data[:cut])
            if must_fail:
                self.assertIsInstance(result, DecodeError, f"cut at {cut} accepted")
            results.append(result)
        return results

    def error(self, func, data, *args, **kw) -> DecodeError:
        """``func`` must raise DecodeError; the invariants hold; return it."""
        exc = assert_decode_error(self, func, data, *args, **kw)
        self.check_error(exc, len(data), kw.get("base", 0))
        return exc

    def assert_error_at(self, exc: DecodeError, layer: str, field: str, offset: int) -> None:
        self.assertEqual((exc.layer, exc.field, exc.offset), (layer, field, offset), str(exc))


# -- FCIP ----------------------------------------------------------------------

class FcipMutationTests(MutationCase):
    def test_every_truncation_raises(self):
        self.every_truncation(fcip.parse_fcip_frame, FCIP_FRAME)

    def test_truncated_header_names_the_cut_field(self):
        expected = {0: "protocol", 5: "protocol_specific", 13: "flags_len", 27: "encap_crc"}
        for cut, field in expected.items():
            exc = self.error(fcip.parse_fcip_frame, FCIP_FRAME[:cut])
            self.assert_error_at(exc, "fcip", field, fcip.FCIP_HEADER.offsets[field])

    def test_truncated_frame_body(self):
        exc = self.error(fcip.parse_fcip_frame, FCIP_FRAME[:-1])
        self.assert_error_at(exc, "fcip", "frame_len", 12)

    def test_appended_garbage_is_not_part_of_the_frame(self):
        for garbage in (b"\0", b"\xff" * 7, FCIP_FRAME):
            frame = self.attempt(fcip.parse_fcip_frame, FCIP_FRAME + garbage)
            self.assertEqual(frame.length, len(FCIP_FRAME))
            self.assertEqual(frame.fc.payload, CMND)
            self.assertTrue(frame.fc.crc_ok)

    def test_protocol_c_wrong(self):
        exc = self.error(fcip.parse_fcip_frame, patch(FCIP_FRAME, 2, b"\xff"))
        self.assert_error_at(exc, "fcip", "protocol_c", 2)

    def test_protocol_c_wrong_with_offset_and_base(self):
        exc = self.error(fcip.parse_fcip_frame, b"xy" + patch(FCIP_FRAME, 2, b"\xff"), 2,
                         base=1000)
        self.assert_error_at(exc, "fcip", "protocol_c", 1004)

    def test_each_checked_header_byte(self):
        cases = [
            (0, b"\x02", "protocol", 0),
            (1, b"\x02", "version", 1),
            (3, b"\x00", "version_c", 3),
            (5, b"\x02", "protocol_specific", 4),
            (8, b"\x80", "pflags_c", 10),
            (9, b"\x01", "reserved", 9),
            (11, b"\x00", "reserved_c", 11),
            (15, b"\xe8", "flags_len_c", 14),
            (12, hx("0418 fbe7"), "flags", 12),            # CRCV set
            (12, hx("000e fff1"), "frame_len", 12),         # 14 words < 15
            (12, hx("0222 fddd"), "frame_len", 12),         # 546 words > 545
            (12, hx("0019 ffe6"), "frame_len", 12),         # 25 words, 24 present
            (28, hx("2e2ed1d0"), "sof", 28),                # malformed SOF word
            (28, hx("3030cfcf"), "sof", 28),                # well formed, unknown code
            (92, hx("4242bdbc"), "eof", 92),
            (92, hx("4343bcbc"), "eof", 92),
        ]
        for at, new, field, offset in cases:
            exc = self.error(fcip.parse_fcip_frame, patch(FCIP_FRAME, at, new))
            self.assert_error_at(exc, "fcip", field, offset)

    def test_corrupted_payload_keeps_decoding_with_bad_crc(self):
        frame = self.attempt(fcip.parse_fcip_frame, patch(FCIP_FRAME, 60, b"\x55"))
        self.assertFalse(frame.fc.crc_ok)
        self.assertEqual(len(frame.fc.payload), len(CMND))

    @SETTINGS
    @given(changes=flips())
    def test_byte_flips_decode_or_raise_decode_error(self, changes):
        result = self.attempt(fcip.parse_fcip_frame, apply_flips(FCIP_FRAME, changes))
        if not isinstance(result, DecodeError) and result.fc is not None:
            self.assertEqual(result.length, len(FCIP_FRAME))

    @SETTINGS
    @given(change=single_flip)
    def test_single_byte_flip_is_always_noticed(self, change):
        index = change[0][0] % len(FCIP_FRAME)
        result = self.attempt(fcip.parse_fcip_frame, apply_flips(FCIP_FRAME, change))
        if isinstance(result, DecodeError):
            return
        if 16 <= index < 28:   # timestamp and encapsulation CRC are not checked
            self.assertTrue(result.fc.crc_ok)
            self.assertEqual(result.fc.payload, CMND)
        else:
            self.assertFalse(result.fc.crc_ok, f"flip at {index} went unnoticed")


# -- FC frames and SOF/EOF units -------------------------------------------------

class FcMutationTests(MutationCase):
    def test_truncated_header_names_the_field_at_the_cut(self):
        expected = {0: ("r_ctl", 0), 1: ("d_id", 1), 3: ("d_id", 1), 4: ("cs_ctl", 4),
                    5: ("s_id", 5), 8: ("type", 8), 9: ("f_ctl", 9), 11: ("f_ctl", 9),
                    12: ("seq_id", 12), 13: ("df_ctl", 13), 14: ("seq_cnt", 14),
                    16: ("ox_id", 16), 18: ("rx_id", 18), 19: ("rx_id", 18),
                    20: ("parameter", 20), 23: ("parameter", 20)}
        for cut in range(24):
            exc = self.error(fc.parse_fc_frame, FC_FRAME[:cut])
            self.assert_error_at(exc, "fc", *expected.get(cut, expected[max(
                c for c in expected if c <= cut)]))

    def test_header_without_crc(self):
        for cut in range(24, 28):
            self.assert_error_at(self.error(fc.parse_fc_frame, FC_FRAME[:cut]), "fc", "crc", cut)

    def test_truncated_header_with_base(self):
        exc = self.error(fc.parse_fc_frame, b"\0" * 8 + FC_FRAME[:10], 8, base=100)
        self.assert_error_at(exc, "fc", "f_ctl", 100 + 8 + 9)

    def test_every_truncation_raises_or_fails_the_crc(self):
        for cut, result in enumerate(self.every_truncation(fc.parse_fc_frame, FC_FRAME, False)):
            if isinstance(result, DecodeError):
                if cut >= 28:
                    self.assert_error_at(result, "fc", "payload", 24)
            else:
                self.assertEqual(cut % 4, 0)
                self.assertFalse(result.crc_ok, f"cut at {cut}")

    def test_appended_garbage(self):
        self.assert_error_at(self.error(fc.parse_fc_frame, FC_FRAME + b"\0"), "fc", "payload", 24)
        self.assertFalse(self.attempt(fc.parse_fc_frame, FC_FRAME + bytes(4)).crc_ok)

    def test_every_single_byte_corruption_fails_the_crc(self):
        for index in range(len(FC_FRAME)):
            for mask in (0x01, 0x80, 0xFF):
                frame = self.attempt(fc.parse_fc_frame, apply_flips(FC_FRAME, [(index, mask)]))
                self.assertFalse(frame.crc_ok, f"byte {index} ^ {mask:#x}")

    def test_corrupted_payload_keeps_decoding_but_crc_fails(self):
        frame = self.attempt(fc.parse_fc_frame, patch(FC_FRAME, 26, b"X"))
        self.assertFalse(frame.crc_ok)
        self.assertEqual(frame.payload, b"daXa in five")
        self.assertEqual(frame.header["ox_id"], 0x1234)

    @SETTINGS
    @given(changes=flips())
    def test_byte_flips_never_raise(self, changes):
        data = apply_flips(FC_FRAME, changes)
        frame = self.attempt(fc.parse_fc_frame, data)
        self.assertNotIsInstance(frame, DecodeError)
        changed = [i for i in range(len(data)) if data[i] != FC_FRAME[i]]
        if changed and changed[-1] - changed[0] < 4:
            # CRC-32 detects every error burst of up to 32 bits
            self.assertFalse(frame.crc_ok, f"bytes {changed}")
        elif not changed:
            self.assertTrue(frame.crc_ok)

    def test_sof_eof_unit_every_truncation_raises(self):
        self.every_truncation(fc.parse_sof_eof_unit, UNIT)

    def test_sof_eof_unit_targeted(self):
        self.assert_error_at(self.error(fc.parse_sof_eof_unit, patch(UNIT, 0, hx("bcb55657"))),
                             "fc", "sof", 0)
        self.assert_error_at(self.error(fc.parse_sof_eof_unit, patch(UNIT, 64, hx("bcb57576"))),
                             "fc", "eof", 64)
        self.assert_error_at(self.error(fc.parse_sof_eof_unit, UNIT[:7]), "fc", "sof", 0)
        self.assert_error_at(self.error(fc.parse_sof_eof_unit, UNIT + b"\0"), "fc", "eof", 65)
        # a unit of SOF, 12 header bytes and EOF: the header is cut at seq_id
        short = UNIT[:16] + UNIT[-4:]
        self.assert_error_at(self.error(fc.parse_sof_eof_unit, short), "fc", "seq_id", 16)

    @SETTINGS
    @given(change=single_flip)
    def test_sof_eof_unit_single_flip_is_noticed(self, change):
        result = self.attempt(fc.parse_sof_eof_unit, apply_flips(UNIT, change))
        if not isinstance(result, DecodeError):
            self.assertFalse(result.crc_ok)

    @SETTINGS
    @given(changes=flips())
    def test_sof_eof_unit_byte_flips(self, changes):
        self.attempt(fc.parse_sof_eof_unit, apply_flips(UNIT, changes))


# -- FCP ------------------------------------------------------------------------

class FcpMutationTests(MutationCase):
    def test_fcp_cmnd_every_truncation_raises(self):
        # fcp_lun 0-7, crn 8, task_attribute 9, task_management 10, cdb_len_rw 11,
        # cdb 12-27, fcp_dl 28-31
        starts = [0] * 8 + [8, 9, 10, 11] + [12] * 16 + [28] * 4
        for cut, exc in enumerate(self.every_truncation(fcp.parse_fcp_cmnd, CMND)):
            self.assertEqual((exc.layer, exc.offset), ("fcp_cmnd", starts[cut]), f"cut at {cut}")

    def test_fcp_cmnd_targeted(self):
        self.assert_error_at(self.error(fcp.parse_fcp_cmnd, CMND[:20]), "fcp_cmnd", "cdb", 12)
        self.assert_error_at(self.error(fcp.parse_fcp_cmnd, CMND + b"\0"), "fcp_cmnd", "fcp_dl", 32)
        self.assert_error_at(self.error(fcp.parse_fcp_cmnd, patch(CMND, 11, b"\x05")),
                             "fcp_cmnd", "cdb_len_rw", 11)
        self.assert_error_at(self.error(fcp.parse_fcp_cmnd, patch(CMND_RCN, 13, b"\x09")),
                             "rcn_control", "service_action", 13)
        self.assert_error_at(self.error(fcp.parse_fcp_cmnd, patch(CMND_RCN, 13, b"\x00"), base=24),
                             "rcn_control", "service_action", 37)

    def test_fcp_cmnd_unknown_opcode_decodes(self):
        cmnd = self.attempt(fcp.parse_fcp_cmnd, patch(CMND, 12, b"\xee"))
        self.assertEqual(cmnd["cdb"], {"opcode": 0xEE, "opcode_name": "0xee"})

    @SETTINGS
    @given(changes=flips())
    def test_fcp_cmnd_byte_flips(self, changes):
        self.attempt(fcp.parse_fcp_cmnd, apply_flips(CMND, changes))

    @SETTINGS
    @given(changes=flips())
    def test_fcp_cmnd_rcn_control_byte_flips(self, changes):
        self.attempt(fcp.parse_fcp_cmnd, apply_flips(CMND_RCN, changes))

    def test_fcp_rsp_every_truncation_raises(self):
        self.every_truncation(fcp.parse_fcp_rsp, RSP)

    def test_fcp_rsp_targeted(self):
        self.assert_error_at(self.error(fcp.parse_fcp_rsp, RSP[:11]), "fcp_rsp", "scsi_status", 11)
        self.assert_error_at(self.error(fcp.parse_fcp_rsp, RSP[:-1]), "fcp_rsp", "sense_length", 16)
        self.assert_error_at(self.error(fcp.parse_fcp_rsp, patch(RSP, 16, hx("00000100"))),
                             "fcp_rsp", "sense_length", 16)

    def test_fcp_rsp_appended_garbage_is_ignored(self):
        rsp = self.attempt(fcp.parse_fcp_rsp, RSP + b"garbage")
        self.assertEqual(rsp["sense"], SENSE.hex())

    @SETTINGS
    @given(changes=flips())
    def test_fcp_rsp_byte_flips(self, changes):
        self.attempt(fcp.parse_fcp_rsp, apply_flips(RSP, changes))

    def test_xfer_rdy_truncation(self):
        data = fcp.build_xfer_rdy(0, 4096)
        for cut, exc in enumerate(self.every_truncation(fcp.parse_xfer_rdy, data)):
            self.assertEqual(exc.layer, "fcp_xfer_rdy")
            self.assertEqual(exc.offset, cut // 4 * 4)


# -- ELS, BLS, CT --------------------------------------------------------------------

class LinkServiceMutationTests(MutationCase):
    def test_els_every_truncation(self):
        for name, payload in ELS_PAYLOADS.items():
            # an LS_ACC is told by its shape: a cut login or PRLI accept reads as a
            # shorter LS_ACC
            self.every_truncation(els.parse_els, payload,
                                  must_fail=name not in ("flogi_acc", "prli_acc"))

    def test_els_appended_garbage(self):
        for name, payload in ELS_PAYLOADS.items():
            out = self.attempt(els.parse_els, payload + b"\0" * 3)
            self.assertEqual(out, els.parse_els(payload), name)

    def test_els_targeted(self):
        self.assert_error_at(self.error(els.parse_els, b""), "els", "command", 0)
        self.assert_error_at(self.error(els.parse_els, b"\x99" + bytes(15), base=24),
                             "els", "command", 24)
        self.assert_error_at(self.error(els.parse_els, ELS_PAYLOADS["plogi"][:24]),
                             "els_login", "port_name", 20)
        self.assert_error_at(self.error(els.parse_els, ELS_PAYLOADS["logo"][:6]),
                             "els_logo", "port_id", 5)
        self.assert_error_at(self.error(els.parse_els, ELS_PAYLOADS["prli"][:17]),
                             "els_prli", "service_params", 16)
        self.assert_error_at(self.error(els.parse_els, ELS_PAYLOADS["ls_rjt"][:5]),
                             "els_ls_rjt", "reason", 5)

    @SETTINGS
    @given(which=st.sampled_from(sorted(ELS_PAYLOADS)), changes=flips())
    def test_els_byte_flips(self, which, changes):
        self.attempt(els.parse_els, apply_flips(ELS_PAYLOADS[which], changes))

    def test_bls(self):
        self.every_truncation(lambda p: els.parse_bls(fc.RCtl.BLS_BA_ACC, p), BA_ACC)
        self.every_truncation(lambda p: els.parse_bls(fc.RCtl.BLS_BA_RJT, p), BA_RJT)
        self.assertEqual(els.parse_bls(fc.RCtl.BLS_ABTS, b"")["command_name"], "ABTS")
        exc = self.error(lambda p, base: els.parse_bls(0x86, p, base), BA_ACC, base=24)
        self.assert_error_at(exc, "bls", "r_ctl", 24)
        exc = self.error(lambda p: els.parse_bls(fc.RCtl.BLS_BA_ACC, p), BA_ACC[:5])
        self.assert_error_at(exc, "bls_ba_acc", "ox_id", 4)

    @SETTINGS
    @given(r_ctl=st.sampled_from([0x81, 0x84, 0x85, 0x86]), changes=flips())
    def test_bls_byte_flips(self, r_ctl, changes):
        self.attempt(lambda p: els.parse_bls(r_ctl, p), apply_flips(BA_ACC, changes))

    def test_ct_every_truncation_raises(self):
        self.every_truncation(lambda p: ct.parse_ct(p, True), GID_PN)
        self.every_truncation(lambda p: ct.parse_ct(p, False), GID_PN_ACC)
        self.every_truncation(lambda p: ct.parse_ct(p, False), CT_REJECT)

    def test_ct_targeted(self):
        exc = self.error(lambda p: ct.parse_ct(p, True), patch(GID_PN, 8, hx("0122")))
        self.assert_error_at(exc, "ct", "command", 8)
        exc = self.error(lambda p: ct.parse_ct(p, True), GID_PN[:20])
        self.assert_error_at(exc, "ct_gid_pn", "port_name", 16)
        exc = self.error(lambda p, base: ct.parse_ct(p, False, base), GID_PN_ACC[:18], base=24)
        self.assert_error_at(exc, "ct_gid_pn_acc", "port_id", 24 + 17)
        exc = self.error(lambda p: ct.parse_ct(p, True), GID_PN[:9])
        self.assert_error_at(exc, "ct", "command", 8)

    def test_ct_appended_garbage_is_ignored(self):
        out = self.attempt(lambda p: ct.parse_ct(p, True), GID_PN + b"\xff" * 4)
        self.assertEqual(out["port_name"], 0x2000002500000001)

    @SETTINGS
    @given(which=st.sampled_from([(GID_PN, True), (GID_PN_ACC, False), (CT_REJECT, False)]),
           changes=flips())
    def test_ct_byte_flips(self, which, changes):
        payload, request = which
        self.attempt(lambda p: ct.parse_ct(p, request), apply_flips(payload, changes))


# -- log entries --------------------------------------------------------------------

def _nak(data: bytes):
    return logentry.parse_nak_ranges(logentry.parse_datagram(data).payload, 88)


def _keepalive(data: bytes):
    return logentry.parse_keepalive(logentry.parse_datagram(data).payload, 88)


def _rio(data: bytes):
    entry = logentry.parse_datagram(data)
    return [fc.parse_sof_eof_unit(data, start, start + length)
            for start, length in logentry.split_rio_area(entry.payload, 88)], entry


class LogMutationTests(MutationCase):
    def test_every_truncation_raises(self):
        for data in (LOG, NAK, KEEPALIVE, BATCH):
            self.every_truncation(logentry.parse_datagram, data)
        self.every_truncation(logentry.parse_batch, BATCH)

    def test_truncated_header_names_the_field_at_the_cut(self):
        for cut, field in {0: "magic", 4: "version", 5: "entry_type", 7: "flags", 13: "seal",
                           14: "reserved", 50: "source_wwn", 87: "key_epoch"}.items():
            exc = self.error(logentry.parse_datagram, LOG[:cut])
            self.assert_error_at(exc, "log", field, logentry.LOG_HEADER.offsets[field])

    def test_other_versions_are_rejected(self):
        self.assertEqual(LOG[4], 2)
        for version in (1, 3):
            data = logentry.build_entry(logentry.EntryType.WR, RIO, version=version)
            for fast in (False, True):
                exc = self.error(logentry.parse_datagram, data, fast=fast)
                self.assert_error_at(exc, "log", "version", 4)

    def test_version_3_is_rejected(self):
        data = logentry.build_entry(logentry.EntryType.WR, RIO, version=3)
        for fast in (False, True):
            exc = self.error(logentry.parse_datagram, data, fast=fast)
            self.assert_error_at(exc, "log", "version", 4)
        self.assert_error_at(self.error(logentry.parse_datagram, data, base=1000),
                             "log", "version", 1004)
        self.assert_error_at(self.error(logentry.parse_datagram, patch(LOG, 4, b"\x03")),
                             "log", "version", 4)

    def test_targeted_header_errors(self):
        body = b"x" * 12
        cases = [
            (patch(LOG, 0, b"X"), "magic", 0),
            (patch(LOG, 5, b"\x00"), "entry_type", 5),
            (patch(LOG, 5, b"\x08"), "entry_type", 5),
            (logentry.build_entry(1, body, segment_index=2, segment_count=2), "segment_index", 64),
            (logentry.build_entry(1, body, segment_count=0), "segment_index", 64),
            (logentry.build_entry(1, body, segment_offset=1), "total_length", 72),
            (logentry.build_entry(1, body, total_length=11), "total_length", 72),
            (LOG[:-1], "rio_length", 76),
            (LOG + b"\0", "rio_length", 76),
        ]
        for data, field, offset in cases:
            self.assert_error_at(self.error(logentry.parse_datagram, data), "log", field, offset)

    def test_bad_crc_decodes_with_crc_ok_false(self):
        for at in (8, 80, 87, 88, len(LOG) - 1):
            entry = self.attempt(logentry.parse_datagram, apply_flips(LOG, [(at, 0x10)]))
            self.assertFalse(entry.crc_ok, f"byte {at}")

    @SETTINGS
    @given(which=st.sampled_from(["log", "nak", "keepalive", "batch"]), change=single_flip)
    def test_single_byte_flip_is_always_noticed(self, which, change):
        data = dict(log=LOG, nak=NAK, keepalive=KEEPALIVE, batch=BATCH)[which]
        result = self.attempt(logentry.parse_datagram, apply_flips(data, change))
        if not isinstance(result, DecodeError):
            self.assertFalse(result.crc_ok)

    @SETTINGS
    @given(changes=flips())
    def test_rio_entry_byte_flips(self, changes):
        self.attempt(_rio, apply_flips(LOG, changes))

    def test_rio_area_targeted(self):
        bad = logentry.build_entry(1, hx("00000008") + bytes(8))
        self.assert_error_at(self.error(_rio, bad), "log_rio", "unit_length", 88)
        cut = logentry.build_entry(1, RIO[:-1] + b"")
        self.assert_error_at(self.error(_rio, cut), "log_rio", "unit_length", 88 + 4 + len(UNIT))
        tail = logentry.build_entry(1, RIO + b"\0\0")
        self.assert_error_at(self.error(_rio, tail), "log_rio", "unit_length", 88 + len(RIO))

    def test_nak_targeted(self):
        reversed_range = logentry.build_nak([(1, 2), (9, 5)])
        self.assert_error_at(self.error(_nak, reversed_range), "log_nak_range", "last", 88 + 32)
        short = logentry.build_entry(logentry.EntryType.NAK, NAK[88:-16])
        self.assert_error_at(self.error(_nak, short), "log_count", "count", 88)
        tiny = logentry.build_entry(logentry.EntryType.NAK, NAK[88:93])
        self.assert_error_at(self.error(_nak, tiny), "log_count", "reserved", 92)

    @SETTINGS
    @given(changes=flips())
    def test_nak_byte_flips(self, changes):
        self.attempt(_nak, apply_flips(NAK, changes))

    def test_keepalive_targeted(self):
        long = logentry.build_entry(logentry.EntryType.KEEPALIVE, KEEPALIVE[88:] + b"\0")
        self.assert_error_at(self.error(_keepalive, long), "log_keepalive", "echo_time_ns", 104)
        short = logentry.build_entry(logentry.EntryType.KEEPALIVE, KEEPALIVE[88:98])
        self.assert_error_at(self.error(_keepalive, short), "log_keepalive", "echo_time_ns", 96)

    @SETTINGS
    @given(changes=flips())
    def test_keepalive_byte_flips(self, changes):
        self.attempt(_keepalive, apply_flips(KEEPALIVE, changes))

    def test_batch_targeted(self):
        nested = logentry.build_batch([logentry.build_batch([])])
        self.assert_error_at(self.error(logentry.parse_batch, nested), "log", "entry_type", 101)
        self.assert_error_at(self.error(logentry.parse_batch, patch(BATCH, 88, hx("00000002"))),
                             "log_count", "count", 88)
        self.assert_error_at(self.error(logentry.parse_batch, patch(BATCH, 88, hx("00000004"))),
                             "log", "magic", len(BATCH))
        self.assert_error_at(self.error(logentry.parse_batch, patch(BATCH, 88, hx("00001001"))),
                             "log_count", "count", 88)
        self.assert_error_at(self.error(logentry.parse_batch, patch(BATCH, 100, b"\x03")),
                             "log", "version", 100)
        exc = self.error(logentry.parse_batch, patch(BATCH, 100, b"\x01"), base=500)
        self.assert_error_at(exc, "log", "version", 600)

    def test_batch_appended_garbage_is_outside_the_batch(self):
        outer, spans = self.attempt(logentry.parse_batch, BATCH + b"\xff" * 9)
        self.assertEqual(outer.length, len(BATCH))
        self.assertEqual(len(spans), len(INNER))

    @SETTINGS
    @given(changes=flips())
    def test_batch_byte_flips(self, changes):
        self.attempt(logentry.parse_batch, apply_flips(BATCH, changes))


# -- Ethernet, IPv4, UDP, TCP ----------------------------------------------------------

class GbeMutationTests(MutationCase):
    def test_every_truncation_raises(self):
        for frame in (UDP_FRAME, TCP_FRAME):
            self.every_truncation(gbe.parse_ethernet, frame)

    def test_ethernet_padding_is_ignored(self):
        for frame, payload in ((UDP_FRAME, KEEPALIVE), (TCP_FRAME, FCIP_FRAME)):
            packet = self.attempt(gbe.parse_ethernet, frame + bytes(6))
            self.assertEqual(packet.payload, payload)

    def test_targeted(self):
        cases = [
            (UDP_FRAME[:10], "eth", "src", 6),
            (UDP_FRAME[:20], "ipv4", "flags_frag", 20),
            (patch(UDP_FRAME, 14, b"\x65"), "ipv4", "version_ihl", 14),
            (patch(UDP_FRAME, 14, b"\x44"), "ipv4", "version_ihl", 14),
            (patch(UDP_FRAME, 20, b"\x20"), "ipv4", "flags_frag", 20),     # MF
            (patch(UDP_FRAME, 21, b"\x01"), "ipv4", "flags_frag", 20),     # DF, offset 1
            (patch(UDP_FRAME, 16, b"\xff"), "ipv4", "total_length", 16),
            (patch(UDP_FRAME, 16, hx("0010")), "ipv4", "total_length", 16),
            (patch(UDP_FRAME, 38, hx("0004")), "udp", "length", 38),
            (patch(UDP_FRAME, 38, hx("ffff")), "udp", "length", 38),
            (patch(TCP_FRAME, 46, b"\x40"), "tcp", "offset_flags", 46),
            (patch(TCP_SMALL, 46, b"\xf0"), "tcp", "offset_flags", 46),   # 60 > 23 bytes
            (patch(UDP_FRAME, 16, hx("0018")), "udp", "length", 38),        # UDP header cut
        ]
        for data, layer, field, offset in cases:
            self.assert_error_at(self.error(gbe.parse_ethernet, data), layer, field, offset)

    def test_other_traffic_is_none(self):
        self.assertIsNone(self.attempt(gbe.parse_ethernet, patch(UDP_FRAME, 12, hx("86dd"))))
        self.assertIsNone(self.attempt(gbe.parse_ethernet, patch(UDP_FRAME, 23, b"\x01")))

    @SETTINGS
    @given(tcp=st.booleans(), changes=flips())
    def test_byte_flips(self, tcp, changes):
        result = self.attempt(gbe.parse_ethernet, apply_flips(TCP_FRAME if tcp else UDP_FRAME,
                                                              changes))
        self.assertTrue(result is None or isinstance(result, (DecodeError, gbe.Packet)))


# -- capture files --------------------------------------------------------------------

class CaptureMutationTests(MutationCase):
    def read(self, data: bytes) -> list:
        items = self.attempt(lambda d: list(capture.read_capture(d)), data)
        self.assertFalse(isinstance(items, DecodeError), "read_capture raised instead of yielding")
        for i, item in enumerate(items):
            self.assertIsInstance(item, (capture.Record, DecodeError))
            if isinstance(item, DecodeError):
                self.assertEqual(item.layer, "capture")
                self.check_error(item, len(data))
                self.assertEqual(i, len(items) - 1, "an error ends the capture")
        return items

    def records(self, data: bytes) -> list:
        items = self.read(data)
        self.assertTrue(all(isinstance(i, capture.Record) for i in items))
        return items

    def test_hand_written_pcap(self):
        records = self.records(PCAP)
        self.assertEqual([(r.index, r.time, r.linktype, r.data) for r in records],
                         [(1, 1000.5, 1, hx("deadbeef")), (2, 1001.0, 1, hx("abcd"))])

    def test_written_captures_read_back(self):
        for data in (PCAP_NANO, PCAPNG):
            records = self.records(data)
            self.assertEqual([r.data for r in records], [UDP_FRAME, TCP_FRAME, UDP_FRAME[:60]])
            self.assertEqual([r.time for r in records], [1700000000.25, 1700000001.25,
                                                          1700000002.25])

    def check_every_truncation(self, data: bytes, clean_cuts: set[int]) -> None:
        full = self.records(data)
        for cut in range(len(data)):
            items = self.read(data[:cut])
            records = [i for i in items if isinstance(i, capture.Record)]
            self.assertEqual([r.data for r in records], [r.data for r in full[:len(records)]])
            errors = [i for i in items if isinstance(i, DecodeError)]
            self.assertEqual(bool(errors), cut not in clean_cuts, f"cut at {cut}")

    def test_pcap_every_truncation(self):
        self.assertEqual(set(pcap_record_ends(PCAP)), PCAP_BOUNDARIES)
        self.check_every_truncation(PCAP, PCAP_BOUNDARIES)
        self.check_every_truncation(PCAP_NANO, set(pcap_record_ends(PCAP_NANO)))

    def test_pcapng_every_truncation(self):
        ends = pcapng_block_ends(PCAPNG)
        self.assertEqual(len(ends), 5)      # SHB, IDB, three EPBs
        self.check_every_truncation(PCAPNG, set(ends[1:]))

    def test_truncated_pcap_record(self):
        items = self.read(PCAP[:24 + 16 + 2])
        self.assertEqual(len(items), 1)
        self.assert_error_at(items[0], "capture", "record", 24)
        items = self.read(PCAP[:-1])
        self.assertIsInstance(items[0], capture.Record)
        self.assert_error_at(items[1], "capture", "record", 44)

    def test_truncated_pcap_record_header(self):
        items = self.read(PCAP[:24 + 5])
        self.assertEqual(len(items), 1)
        self.assert_error_at(items[0], "capture", "record_header", 24)

    def test_not_a_capture(self):
        self.assert_error_at(self.read(b"")[0], "capture", "magic", 0)
        self.assert_error_at(self.read(b"GET / HTTP/1.1\r\n")[0], "capture", "magic", 0)
        self.assert_error_at(self.read(PCAP[:10])[0], "capture", "global_header", 0)

    def test_truncated_pcapng(self):
        ends = pcapng_block_ends(PCAPNG)
        self.assert_error_at(self.read(PCAPNG[:20])[-1], "capture", "section_header", 0)
        for cut in (ends[1] + 3, ends[1] + 7, ends[1] + 8, ends[2] - 1):
            items = self.read(PCAPNG[:cut])
            self.assertEqual(len(items), 1, f"cut at {cut}")
            self.assert_error_at(items[0], "capture", "block", ends[1])

    def test_appended_garbage_is_reported(self):
        for data in (PCAP, PCAP_NANO, PCAPNG):
            for garbage in (b"\0", b"\xff" * 20, b"\x01" * 7):
                items = self.read(data + garbage)
                self.assertEqual(len(items), len(self.records(data)) + 1)
                self.assertIsInstance(items[-1], DecodeError)

    @SETTINGS
    @given(which=st.sampled_from(["pcap", "pcap_nano", "pcapng"]), changes=flips())
    def test_byte_flips_yield_records_or_errors(self, which, changes):
        data = dict(pcap=PCAP, pcap_nano=PCAP_NANO, pcapng=PCAPNG)[which]
        self.read(apply_flips(data, changes))
