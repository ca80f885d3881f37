"""The generated Wireshark Lua dissector: derived from the field tables, and tshark runs it.

As root, tshark skips Lua scripts silently unless ``/etc/wireshark/init.lua``
allows them, so the tshark tests assert that fields of the Lua protocol were
actually printed rather than trusting an exit status.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from twisted.trial.unittest import TestCase

from datapath.frames import capture, fc, fcp, gbe, hop, logentry
from datapath.frames.fc import FCtl, FcType, RCtl
from datapath.frames.fields import Layout, uint
from datapath.frames.logentry import EntryType
from datapath.frames.names import format_port_id
from rcn.logxfer.keys import Key, KeyRing
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal
from tests.support import require_tool, tshark_fields
from tools import gen_lua_dissector as gen

REPO = Path(__file__).resolve().parents[2]
PROTOFIELD = re.compile(r'ProtoField\.(\w+)\("(rcnlog\.\w+)"')
INITIATOR, TARGET = 0x010200, 0x020300
START = 1_700_000_000.0
LOG_LAYOUTS = (logentry.LOG_HEADER, logentry.COUNT_HEADER, logentry.NAK_RANGE, logentry.KEEPALIVE)


def row_text(name: str, offset: int, width: int) -> str:
    """How the script's layout tables spell one field row."""
    return f'{{ name = "{name}", offset = {offset}, width = {width}, '


class GeneratedScriptTest(TestCase):
    """The script's contents come from the tables (no tshark needed)."""

    def setUp(self):
        self.script = gen.generate()
        self.fields = dict((abbrev, kind) for kind, abbrev in PROTOFIELD.findall(self.script))

    def test_every_header_field_and_offset(self):
        for name, offset, width, raw, _bits, _doc, _values in logentry.LOG_HEADER.rows():
            self.assertIn(row_text(name, offset, width), self.script, name)
            self.assertIn(f"rcnlog.{name}", self.fields, name)
        self.assertIn(f"local LOG = {{ size = {logentry.HEADER_SIZE}, ", self.script)

    def test_every_body_field_and_offset(self):
        for layout in LOG_LAYOUTS[1:]:
            self.assertIn(f"size = {layout.size}, ", self.script, layout.layer)
            for name, offset, width, *_ in layout.rows():
                self.assertIn(row_text(name, offset, width), self.script, f"{layout.layer}.{name}")

    def test_protofield_types_follow_widths(self):
        kinds = {1: "uint8", 2: "uint16", 3: "uint24", 4: "uint32", 8: "uint64"}
        for name, _offset, width, raw, *_ in logentry.LOG_HEADER.rows():
            self.assertEqual(self.fields[f"rcnlog.{name}"], "bytes" if raw else kinds[width], name)

    def test_field_names_are_unique(self):
        abbrevs = [abbrev for _, abbrev in PROTOFIELD.findall(self.script)]
        self.assertEqual(len(abbrevs), len(set(abbrevs)))
        # COUNT_HEADER.reserved meets LOG_HEADER.reserved: the later one is qualified
        self.assertIn("rcnlog.count_reserved", self.fields)

    def test_entry_type_value_string(self):
        for entry_type in EntryType:
            self.assertIn(f'[{entry_type.value}] = "{entry_type.name}"', self.script)
        self.assertRegex(self.script, r'ProtoField\.uint8\("rcnlog\.entry_type", "[^"]*", '
                                      r'base\.DEC, vs_entry_type,')

    def test_constants_from_logentry(self):
        self.assertIn(f"local MAGIC = 0x{logentry.MAGIC:08X}", self.script)
        self.assertIn(f"local UNIT_LENGTH_SIZE = {logentry.UNIT_LENGTH_SIZE}", self.script)
        self.assertIn(f"local MIN_UNIT = {logentry.MIN_UNIT}", self.script)

    def test_follows_a_changed_table(self):
        """Move every header field by 4 bytes: the script's offsets move with them."""
        moved = Layout("log", [uint("extra", 4), *logentry.LOG_HEADER.fields],
                       doc=logentry.LOG_HEADER.doc)
        self.patch(gen, "LAYOUTS", (("LOG", moved),) + gen.LAYOUTS[1:])
        script = gen.generate()
        self.assertIn(row_text("extra", 0, 4), script)
        for name, offset, width, *_ in logentry.LOG_HEADER.rows():
            self.assertIn(row_text(name, offset + 4, width), script, name)
        self.assertIn(f"local LOG = {{ size = {logentry.HEADER_SIZE + 4}, ", script)

    def test_sub_bit_fields_become_masked_fields(self):
        """A table field with sub-bits (none in the log tables yet) gets a masked child field."""
        self.patch(gen, "LAYOUTS", gen.LAYOUTS + (("IPV4", gbe.IPV4),))
        script = gen.generate()
        # IPv4's ``version`` meets the header's: qualified by the table name
        self.assertIn('ProtoField.uint8("rcnlog.ipv4_version", "Version", base.DEC, nil, 0xF0,',
                      script)
        self.assertIn('ProtoField.uint16("rcnlog.frag_offset", "Frag offset", base.DEC, nil, '
                      '0x1FFF,', script)
        self.assertIn("field = pf_version_ihl, bits = { pf_ipv4_version, pf_ihl } }", script)

    def test_renamed_field_the_template_reads_fails(self):
        renamed = Layout("log_count", [uint("items", 4), uint("reserved", 4)])
        self.patch(gen, "LAYOUTS", tuple((name, renamed if name == "COUNT" else layout)
                                         for name, layout in gen.LAYOUTS))
        exc = self.assertRaises(ValueError, gen.generate)
        self.assertIn("log_count has no field count", str(exc))

    def test_registers_on_the_port(self):
        self.assertIn(f"local PORT = {logentry.LOG_PORT}", self.script)
        self.assertIn('DissectorTable.get("udp.port"):add(PORT, rcnlog)', self.script)
        self.assertIn('Proto("rcnlog", ', self.script)
        self.assertIn('Dissector.get("fcsof")', self.script)
        self.assertIn("local PORT = 12345", gen.generate(12345))
        self.assertRaises(ValueError, gen.generate, 0)
        self.assertRaises(ValueError, gen.generate, 65536)

    def test_cli_writes_file(self):
        path = self.mktemp()
        self.assertEqual(gen.main(["-o", path, "--port", "47002"]), 0)
        self.assertEqual(Path(path).read_text(encoding="utf-8"), gen.generate(47002))

    def test_cli_writes_stdout(self):
        out = io.StringIO()
        with redirect_stdout(out):
            gen.main([])
        self.assertEqual(out.getvalue(), gen.generate())

    def test_cli_help(self):
        out = io.StringIO()
        with redirect_stdout(out):
            exc = self.assertRaises(SystemExit, gen.main, ["--help"])
        self.assertEqual(exc.code, 0)
        for text in ("-o FILE", "--port N", "47001", "lua_script"):
            self.assertIn(text, out.getvalue())

    def test_runs_as_a_script_from_the_checkout(self):
        path = os.path.abspath(self.mktemp())
        proc = subprocess.run([sys.executable, "tools/gen_lua_dissector.py", "-o", path],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(Path(path).read_text(encoding="utf-8"), gen.generate())


# -- a capture for tshark -------------------------------------------------------

def _header(r_ctl, f_ctl, ox_id, **kw):
    return dict(dict(r_ctl=r_ctl, d_id=TARGET, s_id=INITIATOR, type=FcType.FCP, f_ctl=f_ctl,
                     ox_id=ox_id), **kw)


def write_units(lba: int, ox_id: int, blocks: int = 1) -> list[bytes]:
    """FCP_CMND WRITE(16) and its FCP_DATA (write XFER_RDY disabled), as SOF..EOF units."""
    length = blocks * fcp.BLOCK_SIZE
    cmnd = fcp.build_fcp_cmnd(3, fcp.build_write16(lba, blocks), length, write=True)
    first = FCtl.FIRST_SEQUENCE | FCtl.END_SEQUENCE | FCtl.SEQUENCE_INITIATIVE
    data_f_ctl = FCtl.END_SEQUENCE | FCtl.SEQUENCE_INITIATIVE | FCtl.RELATIVE_OFFSET
    return [fc.build_sof_eof_unit(_header(RCtl.FCP_CMND, first, ox_id), cmnd),
            fc.build_sof_eof_unit(_header(RCtl.FCP_DATA, data_f_ctl, ox_id, seq_id=1),
                                  bytes(range(256)) * (length // 256))]


def wr_entry(group: int, sequence: int, lba: int, ox_id: int) -> bytes:
    area = logentry.build_rio_area(write_units(lba, ox_id))
    return logentry.build_entry(EntryType.WR, area, group_id=group, sequence=sequence,
                                target_wwn=0x500A098000000002, target_lun=3)


BIG_SEQUENCE = (1 << 40) + 5     # needs all 64 bits of the field
SEGMENTED_AREA = logentry.build_rio_area(write_units(0x4000, 0x13))
BAD_UNIT_AREA = (9999).to_bytes(4, "big") + SEGMENTED_AREA[4:]
NO_EXPERT = {"_ws.expert.message": ""}    # a Lua error would show here
CASES = [
    # (entry, expected fields; "" where the packet has none)
    (wr_entry(7, BIG_SEQUENCE, 0x123456789A, 0x10), {
        "rcnlog.group_id": "7", "rcnlog.sequence": str(BIG_SEQUENCE), "rcnlog.entry_type": "1",
        "fc.d_id": ",".join([format_port_id(TARGET)] * 2), "fc.ox_id": "0x0010,0x0010",
        "fc.r_ctl": "0x06,0x01", "scsi_sbc.rdwr16.lba": "000000123456789a",
        "fcp.dl": "512", "fc.crc.status": "1,1", "rcnlog.unit_length": "68,548",
        "_ws.col.Protocol": "RCNLOG",
        "_ws.col.Info": f"WR group=7 seq={BIG_SEQUENCE}, 2 FC frames", **NO_EXPERT}),
    (logentry.build_nak([(5, 9), (12, 12)], group_id=7, sequence=101), {
        "rcnlog.group_id": "7", "rcnlog.sequence": "101", "rcnlog.entry_type": "5",
        "rcnlog.count": "2", "rcnlog.first": "5,12", "rcnlog.last": "9,12", "fc.d_id": "",
        "_ws.col.Info": "NAK group=7 seq=101, missing 5..9,12..12", **NO_EXPERT}),
    (logentry.build_keepalive(0xABCDEF, 1_700_000_000_123_456_789, group_id=0, sequence=0), {
        "rcnlog.group_id": "0", "rcnlog.sequence": "0", "rcnlog.entry_type": "7",
        "rcnlog.probe_id": str(0xABCDEF), "rcnlog.echo_time_ns": "1700000000123456789",
        "fc.d_id": "", "_ws.col.Info": f"KEEPALIVE group=0 seq=0, probe {0xABCDEF}", **NO_EXPERT}),
    (logentry.build_batch([wr_entry(9, 103, 0x2000, 0x11), wr_entry(9, 104, 0x3000, 0x12)],
                          group_id=9, sequence=105), {
        "rcnlog.group_id": "9,9,9", "rcnlog.sequence": "105,103,104",
        "rcnlog.entry_type": "6,1,1", "rcnlog.count": "2",
        "fc.d_id": ",".join([format_port_id(TARGET)] * 4),
        "fc.ox_id": "0x0011,0x0011,0x0012,0x0012",
        "scsi_sbc.rdwr16.lba": "0000000000002000,0000000000003000",
        "fc.crc.status": "1,1,1,1",
        "_ws.col.Info": "BATCH group=9 seq=105, [WR group=9 seq=103, 2 FC frames; "
                        "WR group=9 seq=104, 2 FC frames]", **NO_EXPERT}),
    # the first of two segments: its FC frames are not decoded
    (logentry.build_entry(EntryType.WR, SEGMENTED_AREA[:100], group_id=7, sequence=106,
                          segment_count=2, total_length=len(SEGMENTED_AREA)), {
        "rcnlog.sequence": "106", "rcnlog.segment_count": "2", "fc.d_id": "",
        "_ws.col.Info": "WR group=7 seq=106, segment 0/2",
        "_ws.expert.message": "segment 0 of 2"}),
    # a unit length that overruns the area: reported, and the dissector goes on
    (logentry.build_entry(EntryType.WR, BAD_UNIT_AREA, group_id=7, sequence=107), {
        "rcnlog.sequence": "107", "rcnlog.unit_length": "9999", "fc.d_id": "",
        "_ws.col.Info": "WR group=7 seq=107, 0 FC frames",
        "_ws.expert.message":
            f"unit of 9999 bytes does not fit the {len(BAD_UNIT_AREA) - 4} left"}),
]


class TsharkLuaTest(TestCase):
    """tshark loads the generated script and decodes a capture of log entries with it."""
    maxDiff = None

    def setUp(self):
        self.tshark = require_tool(self, "tshark")
        self.script = os.path.abspath(self.mktemp() + ".lua")
        os.makedirs(os.path.dirname(self.script), exist_ok=True)
        Path(self.script).write_text(gen.generate(), encoding="utf-8")

    def test_script_loads_every_field(self):
        proc = subprocess.run([self.tshark, "-G", "fields", "-X", f"lua_script:{self.script}"],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn("Lua", proc.stderr)
        listed = {line.split("\t")[2] for line in proc.stdout.splitlines()
                  if line.startswith("F\t") and "\trcnlog\t" in line}
        declared = {abbrev for _, abbrev in PROTOFIELD.findall(gen.generate())}
        if not listed:
            self.fail("tshark did not load the Lua script (as root, /etc/wireshark/init.lua must "
                      f"set run_user_scripts_when_superuser = true); stderr: {proc.stderr}")
        self.assertEqual(declared - listed, set(), "fields the script declares but tshark lacks")

    def test_decodes_entries_and_their_fc_frames(self):
        path = self.mktemp() + ".pcap"
        with open(path, "wb") as f:
            writer = capture.CaptureWriter(f, capture.LINKTYPE_ETHERNET)
            for i, (entry, _) in enumerate(CASES):
                udp = gbe.build_udp("10.0.1.2", "10.0.1.3", 50000, logentry.LOG_PORT, entry)
                writer.write(gbe.build_ethernet(udp), START + i)
            writer.close()
        names = sorted({name for _, want in CASES for name in want})
        rows = tshark_fields(self, path, names, "-X", f"lua_script:{self.script}")
        self.assertEqual(len(rows), len(CASES), rows)
        if not any(row[names.index("rcnlog.group_id")] for row in rows):
            self.fail("tshark printed no rcnlog field: the Lua script was not run (as root, "
                      "/etc/wireshark/init.lua must set run_user_scripts_when_superuser = true)")
        for index, (row, (_, want)) in enumerate(zip(rows, CASES), start=1):
            got = dict(zip(names, row))
            self.assertEqual({name: got[name] for name in want}, want, f"packet {index}")

    def test_other_port(self):
        """--port moves the registration: port 47001 is then left to other dissectors."""
        Path(self.script).write_text(gen.generate(47002), encoding="utf-8")
        path = self.mktemp() + ".pcap"
        entry = logentry.build_keepalive(1, 2, group_id=3, sequence=4)
        with open(path, "wb") as f:
            writer = capture.CaptureWriter(f, capture.LINKTYPE_ETHERNET)
            for i, port in enumerate((47002, logentry.LOG_PORT)):
                udp = gbe.build_udp("10.0.1.2", "10.0.1.3", 50000, port, entry)
                writer.write(gbe.build_ethernet(udp), START + i)
            writer.close()
        rows = tshark_fields(self, path, ["udp.dstport", "rcnlog.group_id"],
                             "-X", f"lua_script:{self.script}")
        self.assertEqual(rows, [["47002", "3"], [str(logentry.LOG_PORT), ""]])


# -- sealed log transfer ----------------------------------------------------------

EDGE, CORE = Address("10.0.1.2", logentry.LOG_PORT), Address("10.0.1.3", logentry.LOG_PORT)
GROUP_KEY = bytes(range(32, 64))


class _Refuse:
    """A hop layer's drop counter that fails the test on any drop."""

    def __init__(self):
        self.by_reason = {}

    def drop(self, reason, peer, detail=""):
        raise AssertionError(f"test keys: {reason} {peer} {detail}")


def sealed_ring() -> KeyRing:
    ring = KeyRing()
    ring.add_link(EDGE, CORE, Key(3, b"\x05" * 32))
    ring.add_group(9, Key(7, GROUP_KEY))
    return ring


def sealed_datagrams() -> list[bytes]:
    """A sealed WR (a 1000-byte FCP_DATA: 64 AES blocks and a partial one), a sealed NAK,
    and a clear KEEPALIVE, each in a hop envelope from EDGE to CORE."""
    ring = sealed_ring()
    groups, hop = GroupSeal(ring), HopSeal(EDGE, ring, _Refuse(), clock_ns=lambda: 1 << 40)
    cmnd = write_units(0x5000, 0x21, blocks=2)[0]
    data = fc.build_sof_eof_unit(_header(RCtl.FCP_DATA, FCtl.RELATIVE_OFFSET, 0x21, seq_id=1),
                                 bytes(range(200)) * 5)
    area = logentry.build_rio_area([cmnd, data])
    assert len(area) % 16 != 0
    wr = groups.datagrams(EntryType.WR, area, 60000, group_id=9, sequence=21)
    nak_body = logentry.build_nak([(3, 4)], group_id=9)[logentry.HEADER_SIZE:]
    nak = groups.datagrams(EntryType.NAK, nak_body, 60000, group_id=9, sequence=22)
    keepalive = [logentry.build_keepalive(5, 6, group_id=0, sequence=0)]
    return [hop.seal(d, CORE) for d in wr + nak + keepalive]


class TsharkSealedTest(TestCase):
    """Hop envelopes and end-to-end seals in tshark, with and without the key file."""
    maxDiff = None
    NAMES = ["rcnlog.hop_magic", "rcnlog.hop_key_epoch", "rcnlog.counter", "rcnlog.hop_tag",
             "rcnlog.seal", "rcnlog.key_epoch", "rcnlog.seal_state", "scsi_sbc.rdwr16.lba",
             "fc.crc.status", "rcnlog.first", "rcnlog.last", "rcnlog.probe_id", "_ws.col.Info",
             "_ws.expert.message"]

    def setUp(self):
        require_tool(self, "tshark")
        self.script = os.path.abspath(self.mktemp() + ".lua")
        os.makedirs(os.path.dirname(self.script), exist_ok=True)
        Path(self.script).write_text(gen.generate(), encoding="utf-8")
        self.pcap = self.mktemp() + ".pcap"
        with open(self.pcap, "wb") as f:
            writer = capture.CaptureWriter(f, capture.LINKTYPE_ETHERNET)
            for i, datagram in enumerate(sealed_datagrams()):
                udp = gbe.build_udp(EDGE.host, CORE.host, EDGE.port, CORE.port, datagram)
                writer.write(gbe.build_ethernet(udp), START + i)
            writer.close()
        self.keys = os.path.abspath(self.mktemp())
        sealed_ring().save(self.keys)

    def rows(self, *extra: str, pcap: str | None = None, experts: bool = False) -> list[dict]:
        rows = tshark_fields(self, pcap or self.pcap, self.NAMES,
                             "-X", f"lua_script:{self.script}", *extra)
        self.assertEqual(len(rows), 3, rows)
        if not rows[0][0]:
            self.fail("tshark printed no rcnlog field: the Lua script was not run")
        rows = [dict(zip(self.NAMES, row)) for row in rows]
        if not experts:
            # a Lua error, a malformed unit or an unreadable key file would show here
            self.assertEqual([row["_ws.expert.message"] for row in rows], ["", "", ""])
        return rows

    def altered_pcap(self, field: str) -> str:
        """The capture with one byte of the sealed WR's header changed in flight."""
        datagrams = sealed_datagrams()
        wr = bytearray(datagrams[0])
        wr[hop.HOP_HEADER_SIZE + logentry.LOG_HEADER.offsets[field]] ^= 1
        path = self.mktemp() + ".pcap"
        with open(path, "wb") as f:
            writer = capture.CaptureWriter(f, capture.LINKTYPE_ETHERNET)
            for i, datagram in enumerate([bytes(wr)] + datagrams[1:]):
                udp = gbe.build_udp(EDGE.host, CORE.host, EDGE.port, CORE.port, datagram)
                writer.write(gbe.build_ethernet(udp), START + i)
            writer.close()
        return path

    def test_body_tag_is_checked(self):
        other = os.path.abspath(self.mktemp())
        ring = sealed_ring()
        ring.groups = {9: {7: Key(7, bytes(32))}}
        ring.save(other)
        wr, nak, _ = self.rows("-o", f"rcnlog.key_file:{other}", experts=True)
        self.assertTrue(wr["rcnlog.seal_state"].endswith(": seal: bad tag (group 9 epoch 7)"))
        self.assertIn("seal: bad tag: the body does not open", wr["_ws.expert.message"])
        self.assertEqual((wr["scsi_sbc.rdwr16.lba"], nak["rcnlog.first"]), ("", ""))
        self.assertIn("seal: bad tag", wr["_ws.col.Info"])

    def test_associated_data_is_the_header_a_relay_may_not_change(self):
        keys = ("-o", f"rcnlog.key_file:{self.keys}")
        wr, _, _ = self.rows(*keys, pcap=self.altered_pcap("ttl"))       # a relay's change
        self.assertEqual(wr["scsi_sbc.rdwr16.lba"], "0000000000005000")
        wr, _, _ = self.rows(*keys, pcap=self.altered_pcap("sequence"), experts=True)
        self.assertIn("bad tag", wr["rcnlog.seal_state"])
        self.assertEqual(wr["scsi_sbc.rdwr16.lba"], "")

    def test_hop_envelope_fields_and_tag(self):
        for row in self.rows():
            self.assertEqual((row["rcnlog.hop_magic"], row["rcnlog.hop_key_epoch"]),
                             ("0x52434e48", "3"))
            self.assertEqual(len(row["rcnlog.hop_tag"]), 32)
        counters = [int(row["rcnlog.counter"]) for row in self.rows()]
        self.assertEqual(counters, [(1 << 40) + 1, (1 << 40) + 2, (1 << 40) + 3])

    def test_without_key_file_sealed_entries_show_their_clear_header(self):
        wr, nak, keepalive = self.rows()
        self.assertEqual((wr["rcnlog.seal"], wr["rcnlog.key_epoch"]), ("1", "7"))
        self.assertRegex(wr["rcnlog.seal_state"],
                         r"^sealed end to end: \d+ bytes, group key epoch 7$")
        self.assertEqual((wr["scsi_sbc.rdwr16.lba"], wr["fc.crc.status"]), ("", ""))
        self.assertEqual(wr["_ws.col.Info"],
                         f"WR group=9 seq=21, sealed [hop epoch 3 counter {(1 << 40) + 1}]")
        self.assertEqual((nak["rcnlog.first"], nak["_ws.col.Info"][:28]),
                         ("", "NAK group=9 seq=22, sealed ["))
        self.assertEqual((keepalive["rcnlog.seal"], keepalive["rcnlog.probe_id"]), ("0", "5"))

    def test_with_key_file_sealed_bodies_open(self):
        wr, nak, keepalive = self.rows("-o", f"rcnlog.key_file:{self.keys}")
        # the FC CRCs of the opened frames verify: the AES-CTR keystream is right
        self.assertEqual((wr["scsi_sbc.rdwr16.lba"], wr["fc.crc.status"]),
                         ("0000000000005000", "1,1"))
        self.assertTrue(wr["rcnlog.seal_state"].endswith(": opened with the key file, tag good"),
                        wr["rcnlog.seal_state"])
        self.assertTrue(wr["_ws.col.Info"].startswith("WR group=9 seq=21, opened, 2 FC frames ["))
        self.assertEqual((nak["rcnlog.first"], nak["rcnlog.last"]), ("3", "4"))
        self.assertEqual(keepalive["rcnlog.probe_id"], "5")

    def test_key_file_without_the_group_key(self):
        other = os.path.abspath(self.mktemp())
        ring = sealed_ring()
        ring.groups = {9: {8: Key(8, GROUP_KEY)}}
        ring.save(other)
        wr, _, _ = self.rows("-o", f"rcnlog.key_file:{other}")
        self.assertTrue(wr["rcnlog.seal_state"].endswith("(no key for group 9 epoch 7)"))
        self.assertEqual(wr["scsi_sbc.rdwr16.lba"], "")


class SealedScriptTest(TestCase):
    """What the script takes from the hop table and the seal constants (no tshark needed)."""

    def test_hop_header_rows_and_qualified_names(self):
        script = gen.generate()
        fields = dict((abbrev, kind) for kind, abbrev in PROTOFIELD.findall(script))
        for name, offset, width, *_ in hop.HOP_HEADER.rows():
            self.assertIn(row_text(name, offset, width), script, name)
        self.assertIn(f"local HOP = {{ size = {hop.HOP_HEADER_SIZE}, ", script)
        for abbrev in ("rcnlog.hop_magic", "rcnlog.hop_version", "rcnlog.hop_key_epoch",
                       "rcnlog.suite", "rcnlog.counter", "rcnlog.hop_tag", "rcnlog.seal",
                       "rcnlog.key_epoch", "rcnlog.seal_state"):
            self.assertIn(abbrev, fields)
        self.assertEqual(fields["rcnlog.counter"], "uint64")

    def test_seal_constants_and_key_file_preference(self):
        script = gen.generate()
        self.assertIn(f"local HOP_MAGIC = 0x{hop.HOP_MAGIC:08X}", script)
        self.assertIn(f"local SEAL_NONCE_SIZE = {logentry.SEAL_NONCE_SIZE}", script)
        sealable = ", ".join(f"[{int(t)}] = true" for t in sorted(logentry.SEALABLE_TYPES))
        self.assertIn(f"local SEALABLE_TYPES = {{ {sealable} }}", script)
        self.assertIn('rcnlog.prefs.key_file = Pref.string("Key file", ""', script)
        self.assertIn("local function aes256_block(", script)
        self.assertIn("local function gcm_tag_ok(", script)

    def test_e2e_aad_masks_reproduce_e2e_aad(self):
        mask, const = gen.e2e_aad_masks()
        entry = logentry.build_entry(EntryType.WR, b"x" * 40, flags=0x0005, group_id=9, ttl=3,
                                     seal=1, sequence=77, segment_index=1, segment_count=2,
                                     segment_offset=8, total_length=80, key_epoch=4,
                                     target_wwn=0x500A098000000002)
        header = logentry.LogHeader.parse(entry)
        self.assertEqual(bytes(h & m | c for h, m, c in zip(entry[:88], mask, const)),
                         logentry.e2e_aad(EntryType.WR, header))
        script = gen.generate()
        self.assertIn("local AAD_MASK = { " + ", ".join(f"0x{b:02X}" for b in mask) + " }",
                      script)
