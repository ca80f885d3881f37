"""rcn-bench's report: the pass/fail table, the JSON report and the PNG plot."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from rcn.bench import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def event(t, kind, label, link=None, state=None):
    return {"t": t, "kind": kind, "label": label, "link": link, "state": state}


def make_record(n_samples=20, seed=1):
    """A 20 s run: link wan1 cut 5..8 s, wan2 cut at 15 s and never restored."""
    rng = random.Random(seed)
    samples = []
    for i in range(n_samples):
        t = i * 20.0 / max(n_samples, 1)
        samples.append({"t": t,
                        "lag_ms": {"7": rng.uniform(1, 50), "9": None if i == 3 else 2.0},
                        "ack_p50_ms": 0.4, "ack_p99_ms": math.nan if i == 4 else 1.2,
                        "write_mb_s": rng.uniform(80, 120),
                        "applied_mb_s": None if i == 5 else 100.0})
    return {
        "version": 1,
        "scenario": {"name": "core-cut", "file": "tools/bench/core_cut.toml",
                     "description": "a core link cut for 10 s under load"},
        "started": 1700000000.0, "duration_s": 20.0, "groups": [7, 9],
        "samples": samples,
        "events": [event(0.0, "workload", "start fio"),
                   event(5.0, "link", "cut wan1", "wan1", "down"),
                   event(6.0, "impair", "wan2 delay 20ms"),
                   event(8.0, "link", "restore wan1", "wan1", "up"),
                   event(15.0, "link", "cut wan2", "wan2", "down")],
        "checks": [{"name": "pair state", "t": 12.25, "passed": True,
                    "detail": "pair 1 synchronous"},
                   {"name": "lag below 100 ms", "t": 19.0, "passed": True,
                    "detail": "p99 48.1 ms"}],
        "passed": True,
    }


class TableTests(SynchronousTestCase):

    def test_rows_aligned_under_headings(self):
        lines = report.results_table(make_record()).splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "AT", "(s)", "RESULT", "DETAIL"])
        self.assertEqual(len(lines), 4)                 # headings, two checks, summary
        # every column starts at the same offset on every row
        for heading in ("AT (s)", "RESULT", "DETAIL"):
            at = lines[0].index(heading)
            self.assertEqual(lines[0][at - 2:at], "  ")
            for row in lines[1:3]:
                self.assertNotEqual(row[at], " ", (heading, row))
                self.assertEqual(row[at - 1], " ", (heading, row))
        self.assertIn("pair state", lines[1])
        self.assertIn("12.2", lines[1])
        self.assertIn("PASS", lines[1])
        self.assertTrue(lines[2].endswith("p99 48.1 ms"))

    def test_summary_line_pass(self):
        self.assertEqual(report.results_table(make_record()).splitlines()[-1],
                         "2 checks: 2 passed, 0 failed — PASS")

    def test_one_failed_check_fails_the_run(self):
        record = make_record()
        record["checks"][1].update(passed=False, detail="p99 180 ms\nbound 100 ms")
        record["passed"] = False
        lines = report.results_table(record).splitlines()
        self.assertEqual(lines[-1], "2 checks: 1 passed, 1 failed — FAIL")
        self.assertIn("FAIL", lines[2].split())
        self.assertTrue(lines[2].endswith("p99 180 ms bound 100 ms"))   # one line per check

    def test_run_marked_failed_without_failed_check_is_fail(self):
        record = make_record()
        record["passed"] = False                        # e.g. the scenario aborted
        self.assertTrue(report.results_table(record).endswith("0 failed — FAIL"))

    def test_no_checks(self):
        record = make_record()
        record["checks"] = []
        self.assertEqual(report.results_table(record).splitlines(),
                         ["NAME  AT (s)  RESULT  DETAIL", "0 checks: 0 passed, 0 failed — PASS"])


class JsonTests(SynchronousTestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "report.json")

    def test_written_indented_and_reloadable_with_none_for_nan(self):
        record = make_record()
        record["samples"][0]["write_mb_s"] = math.inf
        report.write_json(record, self.path)
        with open(self.path) as f:
            text = f.read()
        self.assertNotIn("NaN", text)
        self.assertNotIn("Infinity", text)
        self.assertIn('\n  "scenario": {', text)       # indented
        loaded = json.loads(text)
        self.assertIsNone(loaded["samples"][4]["ack_p99_ms"])
        self.assertIsNone(loaded["samples"][0]["write_mb_s"])
        report.validate(loaded)
        expected = copy.deepcopy(record)
        expected["samples"][4]["ack_p99_ms"] = None
        expected["samples"][0]["write_mb_s"] = None
        self.assertEqual(loaded, expected)
        self.assertTrue(math.isnan(record["samples"][4]["ack_p99_ms"]))   # caller's untouched

    def test_atomic_replace(self):
        with open(self.path, "w") as f:
            f.write("old report")
        replaced = []
        real_replace = os.replace

        def spy(src, dst):
            with open(dst) as f:                        # the old file is whole until now
                self.assertEqual(f.read(), "old report")
            with open(src) as f:
                replaced.append((src, dst, json.load(f)["scenario"]["name"]))
            real_replace(src, dst)
        self.patch(report.os, "replace", spy)
        report.write_json(make_record(), self.path)
        self.assertEqual(replaced, [(self.path + ".tmp", self.path, "core-cut")])
        self.assertEqual(os.listdir(self.dir), ["report.json"])


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", head
    return struct.unpack(">II", head[16:24])


def by_gid(items, gid):
    return [item for item in items if item.get_gid() == gid]


class PlotTests(SynchronousTestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "run.png")

    def test_png_of_the_asked_size(self):
        report.plot(make_record(), self.path, title="a title")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(8), PNG_SIGNATURE)
        self.assertEqual(png_size(self.path), (1200, 800))
        self.assertEqual(os.listdir(self.dir), ["run.png"])     # no .tmp left behind

    def test_events_and_link_down_spans(self):
        record = make_record()
        fig = report.build_figure(record)
        lag_ax, rate_ax = fig.axes
        self.assertIs(lag_ax.get_shared_x_axes().joined(lag_ax, rate_ax), True)
        for ax in (lag_ax, rate_ax):
            lines = by_gid(ax.lines, "event")
            self.assertEqual(len(lines), len(record["events"]))
            self.assertEqual([line.get_xdata()[0] for line in lines],
                             [e["t"] for e in record["events"]])
            spans = by_gid(ax.patches, "link-down")
            self.assertEqual(len(spans), 2)
            # wan1 down 5..8; wan2 never restored: down until the end of the run (20 s)
            extents = [(round(s.get_x(), 6), round(s.get_x() + s.get_width(), 6))
                       for s in spans]
            self.assertEqual(extents, [(5.0, 8.0), (15.0, 20.0)])
        wan1, wan2 = by_gid(lag_ax.patches, "link-down")
        self.assertNotEqual(wan1.get_facecolor(), wan2.get_facecolor())   # a shade per link
        legend = [t.get_text() for t in lag_ax.get_legend().get_texts()]
        self.assertEqual(legend[-2:], ["wan1 down", "wan2 down"])
        labels = {t.get_text() for t in lag_ax.texts}
        self.assertEqual(labels, {e["label"] for e in record["events"]})
        self.assertEqual(fig.get_suptitle(), "core-cut — PASS")

    def test_data_lines_with_gaps_not_zeros(self):
        fig = report.build_figure(make_record())
        lag_ax, rate_ax = fig.axes
        lag = {line.get_label(): line.get_ydata() for line in lag_ax.lines
               if line.get_gid() != "event"}
        self.assertEqual(set(lag), {"lag, group 7", "lag, group 9", "source ack p99"})
        self.assertTrue(math.isnan(lag["lag, group 9"][3]))      # None
        self.assertTrue(math.isnan(lag["source ack p99"][4]))    # NaN
        self.assertEqual(lag["lag, group 9"][2], 2.0)
        ack = next(l for l in lag_ax.lines if l.get_label() == "source ack p99")
        self.assertEqual(ack.get_linestyle(), "--")
        rate = {line.get_label(): line.get_ydata() for line in rate_ax.lines
                if line.get_gid() != "event"}
        self.assertEqual(set(rate), {"host writes", "applied at target"})
        self.assertTrue(math.isnan(rate["applied at target"][5]))
        self.assertEqual(sum(math.isnan(v) for v in rate["applied at target"]), 1)

    def test_down_twice_and_stray_up(self):
        record = make_record()
        record["events"] = [event(1.0, "link", "up before down", "wan1", "up"),
                            event(2.0, "link", "down", "wan1", "down"),
                            event(3.0, "link", "down again", "wan1", "down"),
                            event(4.0, "link", "up", "wan1", "up"),
                            event(4.5, "link", "up again", "wan1", "up")]
        self.assertEqual(report.link_down_spans(record), [("wan1", 2.0, 4.0)])

    def test_zero_samples(self):
        record = make_record(n_samples=0)
        report.validate(record)
        fig = report.build_figure(record)
        for ax in fig.axes:
            self.assertEqual(by_gid(ax.lines, "event"), list(ax.lines))   # no data lines
            self.assertIn("no samples", [t.get_text() for t in ax.texts])
            self.assertEqual(len(by_gid(ax.patches, "link-down")), 2)
        report.plot(record, self.path)
        self.assertEqual(png_size(self.path), (1200, 800))

    def test_nothing_at_all(self):
        record = make_record(n_samples=0)
        record.update(events=[], checks=[], groups=[], duration_s=0.0)
        report.plot(record, self.path)
        self.assertEqual(png_size(self.path), (1200, 800))

    def test_thousands_of_samples(self):
        record = make_record(n_samples=5000)
        report.validate(record)
        fig = report.build_figure(record)
        group7 = next(l for l in fig.axes[0].lines if l.get_label() == "lag, group 7")
        self.assertEqual(len(group7.get_xdata()), 5000)
        report.plot(record, self.path)
        self.assertEqual(png_size(self.path), (1200, 800))


class ValidateTests(SynchronousTestCase):

    def assertNames(self, record, *words):
        with self.assertRaises(ValueError) as caught:
            report.validate(record)
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_valid_record(self):
        report.validate(make_record())

    def test_missing_top_level_field(self):
        record = make_record()
        del record["duration_s"]
        self.assertNames(record, "run record: duration_s:", "required")

    def test_missing_nested_field(self):
        record = make_record()
        del record["samples"][2]["applied_mb_s"]
        self.assertNames(record, "samples[2].applied_mb_s")

    def test_missing_scenario_name(self):
        record = make_record()
        del record["scenario"]["name"]
        self.assertNames(record, "scenario.name")

    def test_wrong_type(self):
        record = make_record()
        record["checks"][0]["passed"] = "yes"
        self.assertNames(record, "checks[0].passed", "boolean")

    def test_nan_time(self):
        record = make_record()
        record["samples"][1]["t"] = math.nan
        self.assertNames(record, "samples[1].t")

    def test_unknown_event_kind(self):
        record = make_record()
        record["events"][2]["kind"] = "impairment"
        self.assertNames(record, "events[2].kind", "impairment")

    def test_link_event_without_link(self):
        record = make_record()
        record["events"][1]["link"] = None
        self.assertNames(record, "events[1].link")

    def test_lag_for_each_group(self):
        record = make_record()
        del record["samples"][6]["lag_ms"]["9"]
        self.assertNames(record, "samples[6].lag_ms", "no lag for group 9")
        record = make_record()
        record["samples"][6]["lag_ms"]["11"] = 1.0
        self.assertNames(record, "samples[6].lag_ms", "group 11 is not in groups")

    def test_samples_in_time_order(self):
        record = make_record()
        record["samples"][8]["t"] = 1.0
        self.assertNames(record, "samples[8].t", "before")

    def test_passed_with_failed_check(self):
        record = make_record()
        record["checks"][0]["passed"] = False
        self.assertNames(record, "passed", "pair state")
