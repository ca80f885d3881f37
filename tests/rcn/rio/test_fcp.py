"""rcn.rio.fcp's sense data and FCP payloads against hand-written bytes (SPC-4, FCP-4)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rcn.rio.fcp import (DATA_OFFSET_ERROR, SenseKey, build_write16_cdb, check_condition,
                         parse_sense, sense_data)


class SenseDataTest(SynchronousTestCase):
    def test_fixed_format_golden(self):
        self.assertEqual(sense_data(SenseKey.ILLEGAL_REQUEST, 0x24).hex(),
                         "700005000000000a000000002400000000 00".replace(" ", ""))
        self.assertEqual(check_condition(SenseKey.ABORTED_COMMAND, DATA_OFFSET_ERROR).sense.hex(),
                         "70000b000000000a000000004b05000000 00".replace(" ", ""))

    def test_parse_fixed_and_descriptor_format(self):
        fixed = bytes.fromhex("f0 00 23 00001234 0a 00000000 11 00 00 000000")
        self.assertEqual(parse_sense(fixed), (SenseKey.MEDIUM_ERROR, 0x11, 0x00))
        self.assertEqual(parse_sense(fixed[:14]), (SenseKey.MEDIUM_ERROR, 0x11, 0x00))
        self.assertEqual(parse_sense(bytes.fromhex("72 06 29 01 00 0000 00")),
                         (SenseKey.UNIT_ATTENTION, 0x29, 0x01))
        self.assertEqual(parse_sense(bytes.fromhex("f3 05 24 00")),
                         (SenseKey.ILLEGAL_REQUEST, 0x24, 0x00))

    def test_short_sense_reads_as_zeros(self):
        for sense in (b"", bytes.fromhex("72 05 24"), bytes.fromhex("70 00 05") + bytes(10)):
            self.assertEqual(parse_sense(sense), (0, 0, 0), sense.hex())


class CdbTest(SynchronousTestCase):
    def test_write16_golden(self):
        self.assertEqual(build_write16_cdb(0x1000, 8).hex(), "8a000000000000001000000000080000")
        self.assertEqual(build_write16_cdb(1, 1, fua=True).hex(),
                         "8a080000000000000001000000010000")
        self.assertRaises(ValueError, build_write16_cdb, 1 << 64, 1)
