"""NBD wire constants and layouts against golden bytes; runner argument parsing."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import nbd
from rcn.nbd import protocol as P
from rcn.storage.nbdserve import parse_export, parse_size
from rcn.nbd.export import ExportTable, NbdError, error_code
from rcn.storage.volume import VolumeError
from tests.rcn.nbd.helpers import MemoryExport


class LayoutTests(SynchronousTestCase):
    def test_magics_spell_their_names(self):
        self.assertEqual(P.NBDMAGIC.to_bytes(8, "big"), b"NBDMAGIC")
        self.assertEqual(P.IHAVEOPT.to_bytes(8, "big"), b"IHAVEOPT")

    def test_layouts_are_the_field_tables(self):
        """Each layout is its datapath.frames.nbd table's packer: one definition."""
        for name, table in [("HANDSHAKE", nbd.HANDSHAKE), ("CLIENT_FLAGS", nbd.CLIENT_FLAGS),
                            ("OPTION_HEADER", nbd.OPTION_HEADER),
                            ("OPTION_REPLY", nbd.OPTION_REPLY),
                            ("EXPORT_NAME_REPLY", nbd.EXPORT_NAME_REPLY),
                            ("REQUEST", nbd.REQUEST), ("SIMPLE_REPLY", nbd.SIMPLE_REPLY),
                            ("INFO_EXPORT_LAYOUT", nbd.INFO_EXPORT),
                            ("INFO_BLOCK_SIZE_LAYOUT", nbd.INFO_BLOCK_SIZE)]:
            self.assertIs(getattr(P, name), table.packer, name)

    def test_handshake_golden(self):
        self.assertEqual(P.handshake().hex(), "4e42444d41474943" "49484156454f5054" "0003")
        self.assertEqual(P.option_request(P.OPT_LIST).hex(),
                         "49484156454f5054" "00000003" "00000000")

    def test_request_golden(self):
        data = P.request(P.CMD_WRITE, 0x0102030405060708, 0x1000, 4, P.CMD_FLAG_FUA, b"abcd")
        self.assertEqual(data.hex(), "25609513" "0001" "0001" "0102030405060708"
                                     "0000000000001000" "00000004" + b"abcd".hex())
        self.assertEqual(P.REQUEST.size, 28)

    def test_simple_reply_golden(self):
        self.assertEqual(P.simple_reply(9, P.EINVAL).hex(),
                         "67446698" "00000016" "0000000000000009")

    def test_option_reply_golden(self):
        self.assertEqual(P.option_reply(P.OPT_GO, P.REP_ERR_UNKNOWN, b"x").hex(),
                         "0003e889045565a9" "00000007" "80000006" "00000001" "78")

    def test_go_data_round_trip(self):
        data = P.go_data(b"disk", (P.INFO_NAME, P.INFO_BLOCK_SIZE))
        self.assertEqual(data.hex(), "00000004" + b"disk".hex() + "0002" "0001" "0003")
        self.assertEqual(P.parse_go_data(data), (b"disk", [1, 3]))
        self.assertEqual(P.parse_go_data(P.go_data(b"")), (b"", []))

    def test_go_data_malformed(self):
        for data, message in [
                (b"\0\0\0", "at least 6"),
                (b"\0\0\x10\x01" + bytes(10), "exceeds 4096"),
                (b"\0\0\0\x08abc\0\0", "overruns"),
                (b"\0\0\0\x01a\0\x01", "need 2 bytes, option carries 0"),
                (b"\0\0\0\x01a\0\0\0", "need 0 bytes, option carries 1")]:
            exc = self.assertRaises(ValueError, P.parse_go_data, data)
            self.assertIn(message, str(exc))


class ErrorMappingTests(SynchronousTestCase):
    def test_error_codes(self):
        import errno
        self.assertEqual(error_code(NbdError(P.ENOSPC)), P.ENOSPC)
        self.assertEqual(error_code(NbdError(999)), P.EIO)
        self.assertEqual(error_code(VolumeError(errno.EINVAL, "x")), P.EINVAL)
        self.assertEqual(error_code(OSError(errno.EDQUOT, "quota")), P.ENOSPC)
        self.assertEqual(error_code(OSError(errno.EACCES, "no")), P.EPERM)
        self.assertEqual(error_code(OSError(errno.ENOENT, "gone")), P.EIO)
        self.assertIsNone(error_code(KeyError("bug")))
        self.assertEqual(str(NbdError(P.EPERM, "read-only")), "EPERM: read-only")


class ExportTableTests(SynchronousTestCase):
    def test_table(self):
        a, b = MemoryExport("a"), MemoryExport("b")
        table = ExportTable([a, b])
        self.assertEqual(table.names(), ["a", "b"])
        self.assertIs(table.get("b"), b)
        self.assertIsNone(table.get(""))
        table.default = "a"
        self.assertIs(table.get(""), a)
        self.assertRaises(ValueError, table.add, MemoryExport("a"))
        self.assertRaises(ValueError, table.add, MemoryExport("x" * 5000))
        self.assertIs(table.remove("a"), a)
        self.assertEqual(len(table), 1)
        self.assertIn("b", table)


class RunnerArgumentTests(SynchronousTestCase):
    def test_sizes(self):
        self.assertEqual(parse_size("4096"), 4096)
        self.assertEqual(parse_size("64k"), 65536)
        self.assertEqual(parse_size("10G"), 10 << 30)
        self.assertEqual(parse_size("1TiB"), 1 << 40)
        self.assertRaises(ValueError, parse_size, "1.5G")
        self.assertRaises(ValueError, parse_size, "lots")

    def test_exports(self):
        self.assertEqual(parse_export("d=/tmp/a:b.img:1M"), ("d", "/tmp/a:b.img", 1 << 20, False))
        self.assertEqual(parse_export("ro=/x.img:8M:ro"), ("ro", "/x.img", 8 << 20, True))
        for bad in ("nopath", "d=", "d=/x.img", "d=:1M"):
            self.assertRaises(ValueError, parse_export, bad)
