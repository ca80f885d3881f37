"""`rcn array` pair commands against a real control API (over a RemoteCopy with a fake
session), and the progress display they use."""

from __future__ import annotations

import io
import json

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from datapath.frames import fcp
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.cli.main import main as rcn_main
from rcn.pairstate import PairState
from rcn.progress import Progress, mode_for
from rcn.rio.fcp import ScsiResult
from rcn.storage.control import ControlResource
from tests.rcn.storage.support import TRACK, MiB, Rig
from tests.rcn.storage.test_commands import CommandArray

S = PairState
RESIDUAL_FIELDS = "applied 41, received up to 45, discarded 2, known missing 1"


class CliTests(TestCase):
    def setUp(self):
        self.rig = Rig(volumes=((0, 4 * MiB), (1, MiB)))
        self.rig.rc.clock = reactor               # timestamps (and automatic resyncs)
        self.addCleanup(self.rig.rc.stop)
        self.port = reactor.listenTCP(0, Site(ControlResource(CommandArray(self.rig))),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def rcn(self, *args):
        out, err = io.StringIO(), io.StringIO()

        def run():
            return rcn_main(["array", *args, "--url", self.url], out, err)
        return threads.deferToThread(run).addCallback(
            lambda status: (status, out.getvalue(), err.getvalue()))

    def test_pair_create_wait_shows_progress_until_duplex(self):
        self.rig.volumes[0].write(0, b"\x07" * (2 * MiB))

        def check(result):
            status, out, err = result
            self.assertEqual(status, 0, err)
            self.assertIn("pair LUN 0 (source) -> 50:0a:09:80:00:00:00:02 LUN 5: duplex", out)
            self.assertIn("copy: initial done 2.0 MiB / 2.0 MiB, 1 completed", out)
            self.assertRegex(err, r"^copying:      2\.0 / 2\.0 MiB .*\n$")   # not a tty: a line
            self.assertEqual(self.rig.session.controls, ["PAIR_CREATE", "DUPLEX"])
        return self.rcn("pair-create", "0", "--partner", "50:0a:09:80:00:00:00:02",
                        "--partner-lun", "5", "--mode", "async", "--wait",
                        "--interval", "0").addCallback(check)

    def test_wait_fails_when_the_copy_stops(self):
        self.rig.volumes[0].write(0, b"\x07" * MiB)
        self.rig.session.write_answer = RuntimeError("link down")

        def check(result):
            status, out, err = result
            self.assertEqual((status, out), (1, ""))
            self.assertIn("rcn: pair LUN 0 is failure-suspend, not duplex: ", err)
            self.assertIn("link down", err)
        return self.rcn("pair-create", "0", "--partner", "500a098000000002", "--partner-lun", "5",
                        "--wait", "--interval", "0").addCallback(check)

    def test_errors_print_the_apis_message(self):
        self.rig.add_pair(state=S.SIMPLEX)

        def resync(result):
            status, out, err = result
            self.assertEqual((status, out), (1, ""))
            self.assertIn("rcn: pair LUN 0 (source, -> 50:0a:09:80:00:00:00:02 LUN 5) is simplex: "
                          "resync needs suspend or failure-suspend (HTTP 409 from POST", err)
            return self.rcn("pair-create", "1", "--partner", "junk", "--partner-lun", "5")

        def bad_wwn(result):
            status, _, err = result
            self.assertEqual(status, 1)
            self.assertIn("partner_wwpn: not a WWN: 'junk'", err)
        return self.rcn("resync", "0", "--wait").addCallback(resync).addCallback(bad_wwn)

    def test_failover_prints_the_residual_report(self):
        self.rig.add_pair(role="target", state=S.DUPLEX)
        self.rig.session.control["SUSPEND"] = ScsiResult(
            data_in=fcp.build_residual_report(41, 45, 2, 1))

        def check(result):
            status, out, err = result
            self.assertEqual(status, 0, err)
            self.assertIn("pair LUN 0 (target) <- 50:0a:09:80:00:00:00:02 LUN 5: failure-suspend",
                          out)
            self.assertIn(f"residual at the target edge: {RESIDUAL_FIELDS}", out)
            self.assertTrue(self.rig.session.log[0]["cdb"]["control_flags"] & 1)
        return self.rcn("suspend", "0", "--fast").addCallback(check)

    def test_resync_wait_reverse_delete_and_status(self):
        pair = self.rig.add_pair(state=S.SUSPEND)
        pair.bitmap.set_range(2, 3)
        self.rig.session.control["RESYNC"] = ScsiResult(
            data_in=DifferentialBitmap(4 * MiB, TRACK).serialize())

        def resynced(result):
            status, out, err = result
            self.assertEqual(status, 0, err)
            self.assertIn(": duplex", out)
            self.assertIn("copy: resync done 0.2 MiB / 0.2 MiB", out)
            return self.rcn("pair-status")

        def table(result):
            status, out, _ = result
            header, row = out.splitlines()
            self.assertEqual(header.split(), ["LUN", "ROLE", "STATE", "PARTNER_WWPN", "PARTNER_LUN",
                                              "GROUP", "MODE", "DIRTY_TRACKS", "COPY"])
            self.assertEqual(row.split()[:8], ["0", "source", "duplex", "50:0a:09:80:00:00:00:02",
                                               "5", "7", "sync", "0"])
            return self.rcn("pair-status", "0", "--json")

        def one(result):
            status, out, _ = result
            self.assertEqual(json.loads(out)["copies_completed"], 1)
            return self.rcn("suspend", "0")

        def reverse(_):
            return self.rcn("reverse", "0")

        def reversed_(result):
            status, out, _ = result
            self.assertIn("pair LUN 0 (target) <- ", out)
            return self.rcn("pair-delete", "0", "--local")

        def deleted(result):
            self.assertEqual(result[:2], (0, "pair LUN 0 deleted (this array's row only)\n"))
            self.assertEqual(self.rig.session.controls, ["RESYNC", "DUPLEX", "SUSPEND"])
        d = self.rcn("resync", "0", "--wait", "--interval", "0")
        for step in (resynced, table, one, reverse, reversed_, deleted):
            d.addCallback(step)
        return d

    def test_takeover_without_a_pair(self):
        def check(result):
            status, _, err = result
            self.assertEqual(status, 1)
            self.assertIn("LUN 0 has no pair (HTTP 404", err)
        return self.rcn("takeover", "0").addCallback(check)


class TtyBuffer(io.StringIO):
    def isatty(self):
        return True


class ProgressTests(TestCase):
    def test_bar_on_a_tty_redraws_one_line(self):
        now = [0.0]
        out = TtyBuffer()
        self.assertEqual(mode_for(out), "bar")
        progress = Progress(10 * MiB, out, mode_for(out), "copying", clock=lambda: now[0])
        now[0] = 0.1
        progress.update(MiB)                          # too soon: nothing drawn
        self.assertEqual(out.getvalue(), "")
        now[0] = 1.0
        progress.update(5 * MiB)
        now[0] = 2.0
        progress.update(10 * MiB, final=True)
        self.assertEqual(out.getvalue(),
                         "\r[###############...............]      5.0 / 10.0 MiB      5.2 MB/s  "
                         "ETA   1.0s"
                         "\r[##############################]     10.0 / 10.0 MiB      5.2 MB/s  "
                         "ETA   0.0s\n")

    def test_lines_elsewhere_and_nothing_when_quiet(self):
        now = [0.0]
        out = io.StringIO()
        self.assertEqual((mode_for(out), mode_for(out, quiet=True)), ("lines", "none"))
        progress = Progress(0, out, "lines", "copying", clock=lambda: now[0])
        progress.update(0, final=True)
        self.assertEqual(out.getvalue(), "copying:      0.0 / 0.0 MiB      0.0 MB/s  ETA     ?\n")
