"""RIO areas: the exchange's frames as SOF..EOF units, readable by our decoder and tshark."""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import TestCase

from datapath.frames import fc, fcp, logentry
from datapath.frames.errors import DecodeError
from rcn.logxfer.rioarea import (command_area, parse_command_area, parse_response_area,
                                 response_area)
from rcn.rio.fcp import ScsiResult, ScsiStatus, build_write16_cdb, check_condition, SenseKey


class RioAreaTests(TestCase):
    def test_write_round_trip_with_good_fc_crcs(self):
        data = bytes(range(256)) * 40                        # 10240 bytes: 5 data frames
        area = command_area(0x010100, 0x010200, 0x1234, 3, build_write16_cdb(8, 20), data,
                            attribute=fcp.TaskAttribute.ORDERED)
        units = logentry.split_rio_area(area)
        self.assertEqual(len(units), 6)
        frames = [fc.parse_sof_eof_unit(area, at, at + n) for at, n in units]
        self.assertTrue(all(f.crc_ok for f in frames))
        self.assertEqual([f.header["r_ctl"] for f in frames], [fc.RCtl.FCP_CMND] + [fc.RCtl.FCP_DATA] * 5)
        self.assertEqual([f.header["parameter"] for f in frames[1:]], [0, 2048, 4096, 6144, 8192])
        self.assertEqual(frames[-1].eof, fc.Eof.T)
        self.assertEqual(frames[1].eof, fc.Eof.N)
        command = parse_command_area(area)
        self.assertEqual((command.lun, command.attribute, command.parsed["lba"],
                          command.parsed["transfer_length"]), (3, fcp.TaskAttribute.ORDERED, 8, 20))
        self.assertEqual(command.data_out, data)

    def test_control_with_data_in_round_trip(self):
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 7, 0, 4096)
        area = command_area(1, 2, 3, 0, cdb, data_in_length=4096)
        command = parse_command_area(area)
        self.assertEqual((command.data_out, command.data_in_length), (b"", 4096))
        answer = response_area(2, 1, 3, 9, ScsiResult(data_in=b"\x5a" * 3000), 4096)
        result = parse_response_area(answer)
        self.assertEqual((result.data_in, result.residual), (b"\x5a" * 3000, 1096))

    def test_check_condition_survives(self):
        answer = response_area(2, 1, 3, 9, check_condition(SenseKey.ILLEGAL_REQUEST, (0x25, 0)))
        result = parse_response_area(answer)
        self.assertEqual(result.status, ScsiStatus.CHECK_CONDITION)
        self.assertEqual(result.sense[2] & 0x0F, SenseKey.ILLEGAL_REQUEST)

    def test_missing_data_frame_is_an_error(self):
        # 64 frames: the area still holds FCP_DL bytes without one, so the tiling finds it
        area = command_area(1, 2, 3, 0, build_write16_cdb(0, 256), bytes(131072))
        units = logentry.split_rio_area(area)
        at, n = units[1]
        cut = area[:at - 4] + area[at + n:]                  # drop the first data frame
        with self.assertRaises(DecodeError) as caught:
            parse_command_area(cut)
        self.assertEqual(caught.exception.field, "parameter")

    def test_first_unit_must_be_a_command(self):
        answer = response_area(2, 1, 3, 9, ScsiResult())
        self.assertRaises(DecodeError, parse_command_area, answer)
        self.assertRaises(DecodeError, parse_command_area, b"\x00\x00\x00\x07abc")

    def test_fcp_dl_beyond_the_area_is_refused_before_allocating(self):
        area = bytearray(command_area(1, 2, 3, 0, build_write16_cdb(0, 8), bytes(4096)))
        fcp_dl_at = 4 + 4 + 24 + 28            # unit length, SOF, FC header, FCP_CMND to FCP_DL
        self.assertEqual(int.from_bytes(area[fcp_dl_at:fcp_dl_at + 4], "big"), 4096)
        area[fcp_dl_at:fcp_dl_at + 4] = (64 << 20).to_bytes(4, "big")
        tracemalloc.start()
        try:
            with self.assertRaises(DecodeError) as caught:
                parse_command_area(bytes(area), base=100)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 1 << 20)
        error = caught.exception
        self.assertEqual((error.layer, error.field, error.offset), ("fcp_cmnd", "fcp_dl",
                                                                   100 + fcp_dl_at))
        self.assertIn(str(64 << 20), str(error))

    def test_data_beyond_fcp_dl_is_an_error(self):
        area = bytearray(command_area(1, 2, 3, 0, build_write16_cdb(0, 8), bytes(4096)))
        area[60:64] = (4095).to_bytes(4, "big")
        with self.assertRaises(DecodeError) as caught:
            parse_command_area(bytes(area))
        self.assertEqual(caught.exception.field, "parameter")

    def test_answer_must_end_with_its_fcp_rsp(self):
        answer = response_area(2, 1, 3, 9, ScsiResult())
        with self.assertRaises(DecodeError) as caught:
            parse_response_area(answer + answer)
        self.assertEqual((caught.exception.field, caught.exception.offset), ("r_ctl", len(answer) + 4))
