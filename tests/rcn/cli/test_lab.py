"""``rcn lab``'s text: the one-line figures of ``rcn lab status`` and ``rcn lab down``'s report."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from rcn.cli.lab import describe_down, summary


class LabTextTests(TestCase):
    def test_down_without_lab(self):
        self.assertIn("nothing to stop", describe_down([], "x"))

    def test_summary_lines(self):
        self.assertEqual(summary({"alive": False, "role": "edge"}), "not running")
        edge = {"alive": True, "role": "edge", "groups": [
            {"group": 7, "log_generation": 5, "applied": 4, "log_retained_entries": 1}],
            "ack_latency_p99_s": 0.002, "lag_p99_s": float("nan"),
            "pairs": [{"side": "source", "source_lun": 0, "target_lun": 1,
                       "state": "failure-suspend", "bitmap_727_tracks": 3}]}
        self.assertEqual(summary(edge),
                         "group 7 gen 5 applied 4 retained 1; pairs: source LUN 0->1 "
                         "failure-suspend (727: 3 tracks); ack p99 2.00ms lag p99 -")
        array = {"alive": True, "role": "storage", "edge_link": "up", "pairs": [
            {"lun": 0, "role": "source", "group": 7, "state": "duplex-pending",
             "dirty_tracks": 12, "copy_progress": 0.25}]}
        self.assertEqual(summary(array), "link up; pairs: LUN 0 source group 7 "
                                         "duplex-pending (12 dirty tracks) copy 25%")
        stopped = {"alive": True, "role": "storage", "edge_link": "up", "pairs": [
            {"lun": 0, "role": "source", "group": 7, "state": "failure-suspend",
             "last_error": "RIO WR failed: rio: FCIP link down", "link_lost": True},
            {"lun": 1, "role": "source", "group": 8, "state": "failure-suspend",
             "last_error": "the partner refused a WR", "link_lost": False}]}
        self.assertEqual(summary(stopped),
                         "link up; pairs: LUN 0 source group 7 failure-suspend [RIO WR failed: "
                         "rio: FCIP link down; resyncs by itself when the edge answers], "
                         "LUN 1 source group 8 failure-suspend [the partner refused a WR; "
                         "`rcn array resync` brings it back]")
        core = {"alive": True, "role": "core", "forwarded": 9, "batches_sent": 2,
                "drops": {"no_route": 1}}
        self.assertEqual(summary(core), "forwarded 9, batches 2, drops 1 (no_route 1)")
