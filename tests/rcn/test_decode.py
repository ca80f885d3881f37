"""rcn-decode: reassembly, inputs, bad input, filters, summary, exit status, and sealed
log transfer (hop envelopes, end-to-end seals, ``--keys``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from datapath.frames import capture, fc, fcip, fcp, gbe, logentry
from rcn.decode.cli import PROGRESS_MIN_BYTES, Progress, main
from rcn.decode.decoder import Decoder
from rcn.decode.sealed import Keys
from rcn.decode.streams import FcipDelineator, TcpStream
from rcn.logxfer.keys import Key, KeyRing
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal
from tools.sample_traffic import SOURCE_WWN, TARGET_WWN, generate, write_exchange

SRC, DST = ("10.0.0.1", 40000), ("10.0.0.2", fcip.FCIP_PORT)


def fcip_frames(count: int, lba0: int = 100) -> list[bytes]:
    """``count`` FCP_CMND frames with distinct OX_IDs and LBAs."""
    out = []
    for i in range(count):
        header = dict(r_ctl=fc.RCtl.FCP_CMND, d_id=0x010200, s_id=0x010100, type=fc.FcType.FCP,
                      ox_id=i)
        cmnd = fcp.build_fcp_cmnd(1, fcp.build_write16(lba0 + i, 1), 512, write=True)
        out.append(fcip.build_fcip_frame(header, cmnd))
    return out


def tcp_capture(segments: list[tuple[int, bytes]], pcapng: bool = False) -> bytes:
    """An Ethernet capture of TCP segments ``(seq, payload)`` from SRC to DST."""
    f = io.BytesIO()
    writer = capture.CaptureWriter(f, pcapng=pcapng)
    for n, (seq, payload) in enumerate(segments):
        packet = gbe.build_tcp(SRC[0], DST[0], SRC[1], DST[1], seq, payload)
        writer.write(gbe.build_ethernet(packet), 1000.0 + n)
    return f.getvalue()


def decode(data: bytes) -> list[dict]:
    return list(Decoder().decode_file(data))


def lbas(records: list[dict]) -> list[int]:
    return [r["fc4"]["cdb"]["lba"] for r in records if r.get("kind") == "fcp_cmnd"]


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(args), out)
    return status, out.getvalue()


class TcpReassemblyTests(TestCase):
    def test_frame_split_across_segments(self):
        frame = fcip_frames(1)[0]
        records = decode(tcp_capture([(1000, frame[:10]), (1010, frame[10:50]),
                                      (1050, frame[50:])]))
        self.assertEqual(lbas(records), [100])
        self.assertEqual(records[0]["errors"], [])

    def test_several_frames_in_one_segment(self):
        frames = fcip_frames(3)
        records = decode(tcp_capture([(5, b"".join(frames))]))
        self.assertEqual(lbas(records), [100, 101, 102])
        self.assertEqual([r["stream_offset"] for r in records],
                         [0, len(frames[0]), len(frames[0]) + len(frames[1])])

    def test_retransmitted_segment_decoded_once(self):
        a, b = fcip_frames(2)
        records = decode(tcp_capture([(0, a), (0, a), (len(a), b), (len(a) - 8, a[-8:] + b[:8])]))
        self.assertEqual(lbas(records), [100, 101])

    def test_out_of_order_segments_are_put_in_order(self):
        a, b, c = fcip_frames(3)
        records = decode(tcp_capture([(0, a), (len(a) + len(b), c), (len(a), b)]))
        self.assertEqual(lbas(records), [100, 101, 102])

    def test_sequence_numbers_wrap_around(self):
        a, b = fcip_frames(2)
        start = (1 << 32) - 30
        records = decode(tcp_capture([(start, a), ((start + len(a)) & 0xFFFFFFFF, b)]))
        self.assertEqual(lbas(records), [100, 101])

    def test_pending_limit_drops_and_counts_early_data(self):
        stream = TcpStream(pending_limit=100)
        stream.add(0, b"x" * 10)
        self.assertEqual(stream.add(500, b"y" * 200), b"")
        self.assertEqual(stream.stats.dropped_bytes, 200)
        self.assertEqual(stream.pending_bytes, 0)

    def test_garbage_between_frames_is_reported_and_skipped(self):
        a, b = fcip_frames(2)
        delineator = FcipDelineator()
        items = delineator.feed(a + b"\xde\xad" * 20 + b)
        frames = [i for i in items if isinstance(i, tuple)]
        errors = [i for i in items if not isinstance(i, tuple)]
        self.assertEqual([offset for offset, _ in frames], [0, len(a) + 40])
        self.assertEqual(len(errors), 1)
        self.assertEqual((errors[0].layer, errors[0].offset), ("fcip", len(a)))

    def test_incomplete_frame_at_end_of_capture_is_reported(self):
        a, b = fcip_frames(2)
        records = decode(tcp_capture([(0, a + b[:40])]))
        self.assertEqual(lbas(records), [100])
        error = records[-1]
        self.assertEqual(error["kind"], "error")
        self.assertEqual(error["errors"][0]["offset"], len(a))
        self.assertIn("incomplete frame", error["errors"][0]["reason"])


class InputFormatTests(TestCase):
    def test_fcip_stream_file_larger_than_one_read_chunk(self):
        frames = fcip_frames(20000)            # about 1.9 MiB: frames cross 1 MiB reads
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"".join(frames))
        with open(path, "rb") as f:
            records = list(Decoder().decode_file(f))
        self.assertEqual(lbas(records), [100 + i for i in range(20000)])

    def test_capture_read_from_a_file_object(self):
        data = tcp_capture([(0, b"".join(fcip_frames(3)))])
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            self.assertEqual(lbas(list(Decoder().decode_file(f))), [100, 101, 102])

    def test_fcip_stream_file(self):
        records = decode(b"".join(fcip_frames(4)))
        self.assertEqual(lbas(records), [100, 101, 102, 103])

    def test_hex_text_paragraphs(self):
        a, b = fcip_frames(2)
        text = f"# first frame\n{a.hex(' ')}\n\n0x{b.hex()}\n".encode()
        records = decode(text)
        self.assertEqual(lbas(records), [100, 101])
        self.assertEqual([r["packet"] for r in records], [1, 2])

    def test_bad_hex_paragraph_is_reported_and_the_next_decoded(self):
        a = fcip_frames(1)[0]
        records = decode(f"zz11\n\n{a.hex()}\n".encode())
        self.assertEqual(records[0]["errors"][0]["layer"], "hex")
        self.assertEqual(lbas(records), [100])

    def test_linktype_225_and_224_captures(self):
        header = dict(r_ctl=fc.RCtl.FCP_CMND, d_id=0x010200, s_id=0x010100, type=fc.FcType.FCP)
        cmnd = fcp.build_fcp_cmnd(1, fcp.build_write16(77, 1), 512, write=True)
        for linktype, frame in ((capture.LINKTYPE_FC_2_WITH_FRAME_DELIMS,
                                 fc.build_sof_eof_unit(header, cmnd)),
                                (capture.LINKTYPE_FC_2, fc.build_fc_frame(header, cmnd))):
            f = io.BytesIO()
            writer = capture.CaptureWriter(f, linktype)
            writer.write(frame, 1.0)
            records = decode(f.getvalue())
            self.assertEqual(lbas(records), [77], linktype)
            self.assertEqual(records[0]["fc"]["crc"], "good")

    def test_pcapng_like_pcap(self):
        frames = fcip_frames(2)
        segments = [(0, frames[0]), (len(frames[0]), frames[1])]
        self.assertEqual(lbas(decode(tcp_capture(segments, pcapng=True))), [100, 101])

    def test_log_entry_units_and_batch(self):
        to_edge, _ = write_exchange(9, 2, 4242, bytes(4096))
        units = [fc.build_sof_eof_unit(h, p) for h, p in to_edge]
        wr = logentry.build_entry(logentry.EntryType.WR, logentry.build_rio_area(units),
                                  group_id=3, sequence=11)
        batch = logentry.build_batch([wr, logentry.build_nak([(4, 6)], group_id=3)])
        record = decode(batch.hex().encode())[0]
        self.assertEqual(record["kind"], "log_batch")
        inner = record["entries"]
        self.assertEqual([e["kind"] for e in inner], ["log_wr", "log_nak"])
        self.assertEqual([u["kind"] for u in inner[0]["units"]], ["fcp_cmnd", "fcp_data", "fcp_data"])
        self.assertEqual(inner[0]["units"][0]["fc4"]["cdb"]["lba"], 4242)
        self.assertEqual(inner[0]["units"][2]["fc4"]["relative_offset"], 2048)
        self.assertEqual(inner[1]["nak_ranges"], [[4, 6]])


def split_write(max_body: int = 1000, sequence: int = 4) -> list[bytes]:
    to_edge, _ = write_exchange(1, 2, 999, bytes(range(256)) * 16)
    area = logentry.build_rio_area([fc.build_sof_eof_unit(h, p) for h, p in to_edge])
    return logentry.segment_entry(logentry.EntryType.WR, area, max_body, group_id=3,
                                  sequence=sequence, source_wwn=SOURCE_WWN, target_wwn=TARGET_WWN)


def hex_input(datagrams: list[bytes]) -> bytes:
    return "\n\n".join(d.hex() for d in datagrams).encode()


class SegmentedEntryTests(TestCase):
    def test_last_segment_to_arrive_carries_the_whole_exchange(self):
        segments = split_write()
        self.assertEqual(len(segments), 5)
        arrival = [segments[i] for i in (3, 0, 4, 0, 2, 1)]    # out of order, one duplicate
        records = decode(hex_input(arrival))
        self.assertEqual([("units" in r) for r in records], [False] * 5 + [True])
        last = records[-1]
        # FCP_CMND unit 4 + 68 bytes, two 2048-byte FCP_DATA units 4 + 2084 each
        self.assertEqual(last["reassembled"], {"segments": 5, "total_length": 72 + 2 * 2088})
        self.assertEqual([u["kind"] for u in last["units"]], ["fcp_cmnd", "fcp_data", "fcp_data"])
        self.assertEqual(last["units"][0]["fc4"]["cdb"]["lba"], 999)
        self.assertEqual(last["errors"], [])

    def test_incomplete_entry_is_reported_at_the_end(self):
        records = decode(hex_input(split_write()[:-1]))
        self.assertEqual(records[-1]["kind"], "error")
        self.assertIn("1 split entries incomplete", records[-1]["errors"][0]["reason"])

    def test_segments_that_do_not_tile_are_an_error(self):
        first, second = split_write(max_body=3000)
        # overlaps the first segment, leaves a hole
        header = logentry.LogHeader.parse(second)._replace(segment_offset=2000)
        bad = logentry.build_entry(logentry.EntryType.WR, second[logentry.HEADER_SIZE:],
                                   **{k: v for k, v in header._asdict().items()
                                      if k not in ("magic", "entry_type", "rio_length", "crc32c")})
        record = decode(hex_input([first, bad]))[-1]
        self.assertEqual(record["errors"][0]["field"], "segment_offset")


class BadInputTests(TestCase):
    def test_unknown_log_version_is_reported_and_next_entry_decoded(self):
        good = logentry.build_entry(logentry.EntryType.WR, group_id=1, sequence=1)
        bad = logentry.build_entry(logentry.EntryType.WR, group_id=1, sequence=2, version=9)
        f = io.BytesIO()
        writer = capture.CaptureWriter(f)
        for n, entry in enumerate((bad, good)):
            writer.write(gbe.build_ethernet(gbe.build_udp("10.0.1.2", "10.0.1.3", 47001, 47001,
                                                          entry)), 1.0 + n)
        first, second = decode(f.getvalue())
        self.assertEqual(first["kind"], "error")
        error = first["errors"][0]
        self.assertEqual((error["layer"], error["field"]), ("log", "version"))
        # Ethernet 14 + IPv4 20 + UDP 8, then the version byte at 4
        self.assertEqual(error["offset"], 42 + 4)
        self.assertEqual((second["kind"], second["log"]["sequence"]), ("log_wr", 1))

    def test_corrupted_fc_crc_is_flagged(self):
        frame = bytearray(fcip_frames(1)[0])
        frame[-10] ^= 0xFF    # inside the FC CRC
        record = decode(bytes(frame))[0]
        self.assertEqual(record["fc"]["crc"], "bad")
        self.assertIn("crc", [e["field"] for e in record["errors"]])

    def test_aborted_frame_is_flagged(self):
        header = dict(r_ctl=fc.RCtl.FCP_DATA, d_id=0x010200, s_id=0x010100, type=fc.FcType.FCP)
        record = decode(fcip.build_fcip_frame(header, bytes(512), eof=fc.Eof.A))[0]
        self.assertEqual((record["fc"]["eof"], record["fc"]["crc"]), ("EOFa", "good"))
        self.assertEqual([(e["field"], e["reason"][:24]) for e in record["errors"]],
                         [("eof", "frame ended with EOFa: a")])

    def test_corrupted_crc32c_is_flagged(self):
        entry = bytearray(logentry.build_entry(logentry.EntryType.WR, b"\x00" * 8, sequence=1))
        entry[-1] ^= 1
        record = decode(bytes(entry).hex().encode())[0]
        self.assertEqual(record["log"]["crc32c"], "bad")

    def test_truncated_capture_reports_offset_and_keeps_earlier_frames(self):
        data = tcp_capture([(0, f) for f in fcip_frames(1)] +
                           [(len(fcip_frames(1)[0]), fcip_frames(2)[1])])
        cut = data[:-30]
        records = decode(cut)
        self.assertEqual(lbas(records), [100])
        errors = [e for r in records for e in r["errors"]]
        self.assertEqual(errors[0]["layer"], "capture")
        self.assertGreater(errors[0]["offset"], 24)

    def test_garbage_file(self):
        records = decode(bytes(range(7, 200)) * 3)
        self.assertTrue(records)
        self.assertTrue(all(r["kind"] == "error" for r in records))


class CliTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            self.packets = generate(f, writes=12, group=5, seed=3)

    def test_json_lines_one_per_frame(self):
        status, out = run_cli("--json", self.path)
        records = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(status, 0)
        self.assertEqual(len(records), self.packets)
        self.assertEqual([r["frame"] for r in records], list(range(1, self.packets + 1)))
        kinds = {r["kind"] for r in records}
        self.assertEqual(kinds, {"fcp_cmnd", "fcp_data", "fcp_rsp", "log_wr", "log_wrok"})

    def test_tree_output_names_layers(self):
        status, out = run_cli(self.path)
        self.assertEqual(status, 0)
        first = out.split("\n\n")[0]
        self.assertIn("fcp_cmnd", first.splitlines()[0])
        self.assertIn("d_id=01.02.00", first)
        self.assertIn("opcode_name=WRITE_16", first)

    def test_type_filter(self):
        _, out = run_cli("--json", "--type", "log_wr", self.path)
        records = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([r["kind"] for r in records], ["log_wr"] * 12)
        # a family prefix; log entries match through the FC units inside them
        _, out = run_cli("--json", "--type", "fcp_rsp", self.path)
        self.assertEqual({json.loads(line)["kind"] for line in out.splitlines()},
                         {"fcp_rsp", "log_wrok"})
        _, out = run_cli("--json", "--type", "fcp", self.path)
        self.assertEqual({json.loads(line)["kind"] for line in out.splitlines()},
                         {"fcp_cmnd", "fcp_data", "fcp_rsp", "log_wr", "log_wrok"})

    def test_seq_and_group_filters(self):
        _, out = run_cli("--json", "--seq", "3-4,9", "--type", "log_wr", self.path)
        self.assertEqual([json.loads(line)["log"]["sequence"] for line in out.splitlines()],
                         [3, 4, 9])
        _, out = run_cli("--json", "--group", "6", self.path)
        self.assertEqual(out, "")

    def test_wwn_filter(self):
        wwn = ":".join(f"{b:02x}" for b in TARGET_WWN.to_bytes(8, "big"))
        _, out = run_cli("--json", "--wwn", wwn, self.path)
        self.assertEqual(len(out.splitlines()), 24)   # the WR and WROK of each write
        _, out = run_cli("--json", "--wwn", "20:00:00:00:00:00:00:99", self.path)
        self.assertEqual(out, "")
        self.assertNotEqual(SOURCE_WWN, TARGET_WWN)

    def test_summary_counts_gaps_duplicates_and_lag(self):
        records = [json.loads(line) for line in run_cli("--json", self.path)[1].splitlines()]
        self.assertTrue(records)
        status, out = run_cli("--summary", "--json", self.path)
        report = json.loads(out)
        self.assertEqual(status, 0)
        self.assertEqual(report["frames"], self.packets)
        self.assertEqual(report["groups"]["5"]["first"], 1)
        self.assertEqual(report["groups"]["5"]["last"], 12)
        self.assertEqual(report["groups"]["5"]["missing"], 0)
        self.assertEqual(report["lag_ms"]["count"], 12)
        self.assertGreater(report["lag_ms"]["min"], 0.39)

    def test_summary_finds_a_gap_and_a_duplicate(self):
        entries = [logentry.build_entry(logentry.EntryType.WR, group_id=2, sequence=s)
                   for s in (1, 2, 2, 5, 6)]
        text = "\n\n".join(e.hex() for e in entries).encode()
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(text)
        status, out = run_cli("--summary", "--json", path)
        group = json.loads(out)["groups"]["2"]
        self.assertEqual((group["missing"], group["gaps"], group["duplicates"]), (2, [[3, 4]], 1))
        _, text_out = run_cli("--summary", path)
        self.assertIn("2 missing (3..4), 1 duplicates", text_out)

    def test_exit_status_1_when_errors_seen(self):
        with open(self.path, "rb") as f:
            data = f.read()
        cut = self.mktemp()
        with open(cut, "wb") as f:
            f.write(data[:-100])
        status, out = run_cli("--summary", "--json", cut)
        self.assertEqual(status, 1)
        self.assertIn("capture", json.loads(out)["errors"])

    def test_exit_status_2_for_unreadable_file(self):
        status, _ = run_cli(os.path.join(self.mktemp(), "missing.pcap"))
        self.assertEqual(status, 2)

    def test_bad_range_is_a_usage_error(self):
        self.assertRaises(SystemExit, run_cli, "--seq", "9-3", self.path)

    def test_readme_summary_example_is_what_the_tool_prints(self):
        readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
        with open(readme) as f:
            text = f.read()
        block = text.split("<!-- summary-example -->")[1].split("<!-- end summary-example -->")[0]
        documented = block.strip().strip("`").strip()
        path = self.mktemp()
        with open(path, "wb") as f:
            generate(f, writes=3)    # README: python -m tools.sample_traffic sample.pcap --writes 3
        status, out = run_cli("--summary", path)
        self.assertEqual((status, out.strip()), (0, documented))

    def test_standard_input(self):
        with open(self.path, "rb") as f:
            data = f.read()
        script = os.path.join(os.path.dirname(sys.executable), "rcn-decode")
        proc = subprocess.run([script, "--summary", "--json", "-"], input=data,
                              capture_output=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout)["frames"], self.packets)

    def test_progress_on_a_terminal_for_large_files(self):
        class Tty(io.StringIO):
            def isatty(self):
                return True
        now = [0.0]
        path = self.mktemp()
        with open(path, "wb") as f:
            f.truncate(PROGRESS_MIN_BYTES)
        with open(path, "rb") as f:
            stream = Tty()
            progress = Progress(path, f, stream, clock=lambda: now[0])
            progress.update(10)                 # not yet due
            f.seek(PROGRESS_MIN_BYTES // 4)
            now[0] = 2.5
            progress.update(20)
        self.assertEqual(stream.getvalue(),
                         f"rcn-decode: {path}: 25% of {PROGRESS_MIN_BYTES / 1e9:.1f} GB, 20 frames\n")

    def test_no_progress_when_stderr_is_not_a_terminal(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.truncate(PROGRESS_MIN_BYTES)
        with open(path, "rb") as f:
            self.assertFalse(Progress(path, f, io.StringIO()).enabled)

    def test_installed_console_script(self):
        script = os.path.join(os.path.dirname(sys.executable), "rcn-decode")
        self.assertTrue(os.path.exists(script), f"{script}: run `make venv` to install it")
        proc = subprocess.run([script, "--summary", self.path], capture_output=True, text=True,
                              timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("group 5: sequences 1..12", proc.stdout)


# -- sealed log transfer (hop envelope, end-to-end seal) ---------------------------------

EDGE_A, CORE_B = Address("10.0.1.2", 47001), Address("10.0.1.3", 47001)


class _Refuse:
    """A hop layer's drop counter that fails the test on any drop."""

    def __init__(self):
        self.by_reason = {}

    def drop(self, reason, peer, detail=""):
        raise AssertionError(f"test keys: {reason} {peer} {detail}")


def seal_ring(group_material: bytes = b"\x07" * 32, link_epoch: int = 3) -> KeyRing:
    ring = KeyRing()
    ring.add_link(EDGE_A, CORE_B, Key(link_epoch, b"\x05" * 32))
    ring.add_group(5, Key(7, group_material))
    return ring


def sealed_wr(ring: KeyRing, max_body: int = 60000, sequence: int = 4, lba: int = 999,
              counter: int = 1000) -> list[bytes]:
    """A WR sealed end to end under group 5 and in hop envelopes from EDGE_A to CORE_B."""
    to_edge, _ = write_exchange(1, 2, lba, bytes(range(256)) * 16)
    area = logentry.build_rio_area([fc.build_sof_eof_unit(h, p) for h, p in to_edge])
    hop = HopSeal(EDGE_A, ring, _Refuse(), clock_ns=lambda: counter)
    return [hop.seal(d, CORE_B) for d in GroupSeal(ring).datagrams(
        logentry.EntryType.WR, area, max_body, group_id=5, sequence=sequence,
        source_wwn=SOURCE_WWN, target_wwn=TARGET_WWN)]


def udp_capture(datagrams: list[bytes], src: Address = EDGE_A, dst: Address = CORE_B) -> bytes:
    f = io.BytesIO()
    writer = capture.CaptureWriter(f)
    for n, datagram in enumerate(datagrams):
        writer.write(gbe.build_ethernet(gbe.build_udp(src.host, dst.host, src.port, dst.port,
                                                      datagram)), 1.0 + n)
    return f.getvalue()


def decode_with(data: bytes, ring: KeyRing | None) -> list[dict]:
    return list(Decoder(keys=None if ring is None else Keys(ring)).decode_file(data))


class SealedEntryTests(TestCase):
    def test_without_keys_the_clear_headers_show_and_the_body_is_sealed(self):
        (record,) = decode_with(udp_capture(sealed_wr(seal_ring())), None)
        self.assertEqual(record["kind"], "log_wr")
        hop = record["hop"]
        self.assertEqual((hop["magic"], hop["key_epoch"], hop["counter"], hop["check"]),
                         (0x52434E48, 3, 1001, "sealed (hop tag not checked)"))
        self.assertEqual(len(hop["tag"]), 32)
        log = record["log"]
        self.assertEqual((log["version"], log["seal"], log["key_epoch"], log["sequence"]),
                         (2, 1, 7, 4))
        sealed_length = 72 + 2 * 2088 + logentry.SEALED_OVERHEAD
        self.assertEqual(record["seal"],
                         f"sealed end to end: {sealed_length} bytes, group key epoch 7")
        self.assertNotIn("units", record)
        self.assertEqual(record["errors"], [])

    def test_with_keys_the_hop_tag_verifies_and_the_body_opens(self):
        (record,) = decode_with(udp_capture(sealed_wr(seal_ring())), seal_ring())
        self.assertEqual(record["hop"]["check"], "hop tag good")
        self.assertEqual(record["seal"], f"opened: group 5 epoch 7, {72 + 2 * 2088} bytes clear")
        self.assertEqual([u["kind"] for u in record["units"]], ["fcp_cmnd", "fcp_data", "fcp_data"])
        self.assertEqual(record["units"][0]["fc4"]["cdb"]["lba"], 999)
        self.assertEqual(record["errors"], [])

    def test_split_sealed_entry_opens_when_its_last_segment_is_in(self):
        datagrams = sealed_wr(seal_ring(), max_body=1000)
        self.assertEqual(len(datagrams), 5)
        records = decode_with(udp_capture([datagrams[i] for i in (2, 0, 4, 3, 1)]), seal_ring())
        self.assertEqual([("units" in r) for r in records], [False] * 4 + [True])
        self.assertEqual({r["hop"]["check"] for r in records}, {"hop tag good"})
        self.assertEqual(records[-1]["units"][0]["fc4"]["cdb"]["lba"], 999)
        self.assertEqual(records[-1]["reassembled"]["total_length"],
                         72 + 2 * 2088 + logentry.SEALED_OVERHEAD)
        self.assertEqual([e for r in records for e in r["errors"]], [])

    def test_altered_datagram_fails_the_hop_tag(self):
        datagram = bytearray(sealed_wr(seal_ring())[0])
        datagram[24 + logentry.LOG_HEADER.offsets["ttl"]] -= 1     # what a relay may not do
        (record,) = decode_with(udp_capture([bytes(datagram)]), seal_ring())
        self.assertTrue(record["hop"]["check"].startswith("hop: bad tag"))
        error = record["errors"][0]
        self.assertEqual((error["layer"], error["field"]), ("hop", "tag"))
        self.assertEqual(error["offset"], 42 + len(datagram) - 16)

    def test_replayed_datagram_is_flagged(self):
        datagram = sealed_wr(seal_ring())[0]
        first, second = decode_with(udp_capture([datagram, datagram]), seal_ring())
        self.assertEqual(first["hop"]["check"], "hop tag good")
        self.assertIn("replayed", second["hop"]["check"])
        self.assertEqual(second["errors"][0]["field"], "tag")

    def test_body_under_another_group_key_is_a_bad_tag(self):
        datagrams = sealed_wr(seal_ring(group_material=b"\x08" * 32))
        (record,) = decode_with(udp_capture(datagrams), seal_ring())
        self.assertEqual(record["hop"]["check"], "hop tag good")
        self.assertEqual(record["seal"], "seal: bad tag (group 5 epoch 7)")
        self.assertEqual([(e["layer"], e["field"]) for e in record["errors"]], [("seal", "tag")])
        self.assertNotIn("units", record)

    def test_missing_keys_are_named_not_errors(self):
        ring = seal_ring(link_epoch=4)
        ring.groups.clear()
        (record,) = decode_with(udp_capture(sealed_wr(seal_ring())), ring)
        self.assertEqual(record["hop"]["check"], "hop tag not checked: no key for link epoch 3")
        self.assertTrue(record["seal"].endswith("; no key for group 5 epoch 7"))
        self.assertEqual(record["errors"], [])
        (record,) = decode_with(udp_capture(sealed_wr(seal_ring()), src=Address("10.9.9.9", 1)),
                                seal_ring())
        self.assertIn("no link key for 10.9.9.9:1", record["hop"]["check"])

    def test_hop_layers_only_for_the_key_files_addresses(self):
        datagram = sealed_wr(seal_ring())[0]
        keys = Keys(seal_ring())
        decoder = Decoder(keys=keys)
        for n in range(50):
            data = udp_capture([datagram], dst=Address(f"10.7.0.{n}", 47001))
            (record,) = decoder.decode_file(data)
            self.assertIn("no link key", record["hop"]["check"])
        self.assertEqual(len(keys._hops), 0)
        (record,) = decoder.decode_file(udp_capture([datagram]))
        self.assertEqual((record["hop"]["check"], len(keys._hops)), ("hop tag good", 1))

    def test_sealed_nak_opens_to_its_ranges(self):
        body = logentry.build_nak([(4, 6), (9, 9)], group_id=5)[logentry.HEADER_SIZE:]
        (datagram,) = GroupSeal(seal_ring()).datagrams(logentry.EntryType.NAK, body, 60000,
                                                       group_id=5, sequence=9)
        (sealed,) = decode_with(hex_input([datagram]), None)
        self.assertNotIn("nak_ranges", sealed)
        (record,) = decode_with(hex_input([datagram]), seal_ring())
        self.assertEqual(record["nak_ranges"], [[4, 6], [9, 9]])

    def test_hop_envelope_in_hex_text_has_no_addresses_to_check(self):
        (record,) = decode_with(hex_input(sealed_wr(seal_ring())), seal_ring())
        self.assertEqual(record["hop"]["check"], "sealed (hop tag not checked: no UDP addresses)")
        self.assertEqual(record["units"][0]["fc4"]["cdb"]["lba"], 999)

    def test_batch_of_sealed_entries_in_an_envelope(self):
        ring = seal_ring()
        entries = [GroupSeal(ring).datagrams(logentry.EntryType.WR, logentry.build_rio_area(
            [fc.build_sof_eof_unit(h, p) for h, p in write_exchange(s, 0, 100 + s, bytes(512))[0]]),
            60000, group_id=5, sequence=s)[0] for s in (1, 2)]
        hop = HopSeal(EDGE_A, ring, _Refuse(), clock_ns=lambda: 5)
        datagram = hop.seal(logentry.build_batch(entries), CORE_B)
        (record,) = decode_with(udp_capture([datagram]), ring)
        self.assertEqual(record["kind"], "log_batch")
        self.assertEqual([e["units"][0]["fc4"]["cdb"]["lba"] for e in record["entries"]],
                         [101, 102])

    def test_short_or_unknown_envelope_is_an_error(self):
        datagram = sealed_wr(seal_ring())[0]
        for data, field in ((datagram[:30], "tag"), (datagram[:4] + b"\x02" + datagram[5:],
                                                     "version")):
            (record,) = decode_with(udp_capture([data]), None)
            self.assertEqual(record["kind"], "error")
            self.assertEqual((record["errors"][0]["layer"], record["errors"][0]["field"]),
                             ("hop", field))

    def test_unsealable_type_with_seal_set_is_an_error(self):
        entry = logentry.build_keepalive(1, 2)
        entry = logentry.build_entry(logentry.EntryType.KEEPALIVE, entry[88:], seal=1)
        (record,) = decode_with(hex_input([entry]), None)
        self.assertEqual(record["errors"][0]["field"], "seal")
        self.assertIn("KEEPALIVE is never sealed", record["errors"][0]["reason"])


class SealedCliTests(TestCase):
    def setUp(self):
        self.capture = self.mktemp()
        with open(self.capture, "wb") as f:
            f.write(udp_capture(sealed_wr(seal_ring())))
        self.keys = self.mktemp()
        seal_ring().save(self.keys)

    def test_keys_option_opens_tree_and_json(self):
        status, out = run_cli("--keys", self.keys, self.capture)
        self.assertEqual(status, 0)
        self.assertIn("check=hop tag good", out)
        self.assertIn("seal: opened: group 5 epoch 7", out)
        self.assertIn("opcode_name=WRITE_16", out)
        status, out = run_cli("--json", "--keys", self.keys, "--type", "fcp_cmnd", self.capture)
        (record,) = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(record["units"][0]["fc4"]["cdb"]["lba"], 999)
        for material in (b"\x05" * 32, b"\x07" * 32):
            self.assertNotIn(material.hex(), out)

    def test_a_key_file_with_held_group_epochs_opens_entries_under_them(self):
        # a source edge's key file after a rotation retired epoch 7 while its log kept
        # entries sealed under it: epoch 8 sends, 7 is held
        ring = seal_ring()
        ring.groups.clear()
        ring.add_group(5, Key(8, b"\x06" * 32))
        ring.add_held(5, Key(7, b"\x07" * 32))
        held = self.mktemp()
        ring.save(held)
        with open(held) as f:
            self.assertIn(f"group 5 7 {'07' * 32} held", f.read())
        status, out = run_cli("--keys", held, self.capture)
        self.assertEqual(status, 0)
        self.assertIn("seal: opened: group 5 epoch 7 (held)", out)
        self.assertIn("opcode_name=WRITE_16", out)
        self.assertNotIn("07" * 32, out)

    def test_without_keys_shown_as_sealed(self):
        status, out = run_cli(self.capture)
        self.assertEqual(status, 0)
        self.assertIn("check=sealed (hop tag not checked)", out)
        self.assertIn("seal: sealed end to end:", out)
        self.assertNotIn("WRITE_16", out)

    def test_bad_tag_sets_exit_status_1(self):
        other = self.mktemp()
        seal_ring(group_material=b"\x09" * 32).save(other)
        status, out = run_cli("--keys", other, self.capture)
        self.assertEqual(status, 1)
        self.assertIn("error: seal.tag", out)

    def test_key_file_readable_by_others_is_refused(self):
        os.chmod(self.keys, 0o644)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(run_cli("--keys", self.keys, self.capture)[0], 2)
        self.assertIn("chmod 600", stderr.getvalue())
        self.assertNotIn("07" * 32, stderr.getvalue())
