"""``fields.record_type``: typed records made from a field table (``logentry.LogHeader``)."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from datapath.frames import logentry
from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, raw, record_type, uint

BITS = Layout("bits", [
    uint("kind", 1, "a byte"),
    uint("packed", 2, "two sub-fields", bits=(("high", 4), ("low", 12))),
    uint("wide", 3, "a 24-bit integer"),
    raw("pad", 2, "0"),
], doc="a table with sub-bits and a 3-byte field")
Bits = record_type(BITS, "Bits", __name__)


class RecordTypeTests(TestCase):
    def test_fields_in_table_order_then_sub_bits_with_zero_defaults(self):
        self.assertEqual(Bits._fields, ("kind", "packed", "wide", "pad", "high", "low"))
        self.assertEqual(Bits(kind=3), Bits(3, 0, 0, b"\x00\x00", 0, 0))
        self.assertEqual(Bits.__module__, __name__)

    def test_checked_and_fast_parse_agree_with_the_layout(self):
        data = BITS.build(kind=1, high=0xA, low=0x123, wide=0x010203, pad=b"xy")
        want = Bits(kind=1, packed=0xA123, wide=0x010203, pad=b"xy", high=0xA, low=0x123)
        for fast in (False, True):
            self.assertEqual(Bits.parse(data, fast=fast), want)
            self.assertEqual(Bits.parse(b"..." + data, 3, fast=fast), want)

    def test_errors_are_the_layouts(self):
        for fast in (False, True):
            with self.assertRaises(DecodeError) as caught:
                Bits.parse(bytes(5), 0, 100, fast=fast)
            self.assertEqual((caught.exception.layer, caught.exception.field), ("bits", "wide"))

    def test_a_field_named_parse_is_refused(self):
        with self.assertRaises(ValueError):
            record_type(Layout("odd", [uint("parse", 1)]), "Odd")

    def test_log_header_is_one_unpack_on_the_fast_path_and_the_same_checked(self):
        data = logentry.build_entry(logentry.EntryType.WR, b"body", group_id=7, sequence=9,
                                    source_wwn=1, target_wwn=2)
        fast = logentry.LogHeader.parse(data, fast=True)
        self.assertEqual(fast, logentry.LogHeader.parse(data))
        self.assertEqual((fast.group_id, fast.sequence, fast.rio_length), (7, 9, 4))
        self.assertEqual(fast._asdict(), dict(logentry.LOG_HEADER.parse(data, fast=True)))
