"""rcn.metrics: families read at scrape time, parsed back with prometheus_client's parser."""

from __future__ import annotations

import math

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from rcn import metrics as metrics_module
from rcn.metrics import LatencyHistogram, MetricsRegistry, metrics_site, sanitize


def parse_exposition(text: str | bytes) -> tuple[dict[str, float], dict[str, str]]:
    """(samples ``{'name{label="v",...}': value}``, family types ``{family name: type}``)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples, types


class RegistryTestCase(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.patch(metrics_module, "_log", Logger(observer=self.events.append))
        self.registry = MetricsRegistry()

    def scrape(self) -> tuple[dict[str, float], dict[str, str]]:
        return parse_exposition(self.registry.render())

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class CounterTests(RegistryTestCase):
    def test_each_key_is_a_total_counter_and_listed_keys_are_gauges(self):
        counters = {"connections": 3, "requests_write": 10, "connections_active": 1}
        self.registry.counters("nbd", lambda: counters, "NBD", gauges=("connections_active",))
        samples, types = self.scrape()
        self.assertEqual(samples, {"rcn_nbd_connections_total": 3.0,
                                   "rcn_nbd_requests_write_total": 10.0,
                                   "rcn_nbd_connections_active": 1.0})
        self.assertEqual(types, {"rcn_nbd_connections": "counter",
                                 "rcn_nbd_requests_write": "counter",
                                 "rcn_nbd_connections_active": "gauge"})

    def test_values_are_read_at_scrape_time(self):
        counters = {"frames_in": 1}
        self.registry.counters("fcip", lambda: counters)
        self.assertEqual(self.scrape()[0], {"rcn_fcip_frames_in_total": 1.0})
        counters["frames_in"] = 41
        counters["crc_errors"] = 2
        self.assertEqual(self.scrape()[0], {"rcn_fcip_frames_in_total": 41.0,
                                            "rcn_fcip_crc_errors_total": 2.0})

    def test_constant_labels_on_every_sample(self):
        self.registry.counters("fcip", lambda: {"frames_in": 5, "open": 2}, labels={"link": "0"},
                               gauges=("open",))
        self.assertEqual(self.scrape()[0], {'rcn_fcip_frames_in_total{link="0"}': 5.0,
                                            'rcn_fcip_open{link="0"}': 2.0})

    def test_dataclass_vars_and_float_values(self):
        class Counters:
            def __init__(self):
                self.sent, self.bytes_sent, self.ratio = 4, 2048, 0.5
        c = Counters()
        self.registry.counters("replication", lambda: vars(c), gauges=("ratio",))
        self.assertEqual(self.scrape()[0], {"rcn_replication_sent_total": 4.0,
                                            "rcn_replication_bytes_sent_total": 2048.0,
                                            "rcn_replication_ratio": 0.5})

    def test_namespace(self):
        registry = MetricsRegistry("bench")
        registry.counters("x", lambda: {"y": 1})
        self.assertEqual(parse_exposition(registry.render())[0], {"bench_x_y_total": 1.0})


class GaugeAndLabelledTests(RegistryTestCase):
    def test_gauge(self):
        state = {"up": True}
        self.registry.gauge("rio_link_up", lambda: 1 if state["up"] else 0, "link up")
        self.registry.gauge("queue_bytes", lambda: 1.5e6, "queued", labels={"path": "a"})
        samples, types = self.scrape()
        self.assertEqual(samples, {"rcn_rio_link_up": 1.0, 'rcn_queue_bytes{path="a"}': 1.5e6})
        self.assertEqual(types, {"rcn_rio_link_up": "gauge", "rcn_queue_bytes": "gauge"})
        state["up"] = False
        self.assertEqual(self.scrape()[0]["rcn_rio_link_up"], 0.0)

    def test_labelled_gauge_per_group(self):
        groups = {7: 123, 9: 0}
        self.registry.labelled("group_apply_lag_seconds", "gauge", "apply lag", ("group",),
                               lambda: [((str(g),), float(v)) for g, v in groups.items()])
        samples, types = self.scrape()
        self.assertEqual(samples, {'rcn_group_apply_lag_seconds{group="7"}': 123.0,
                                   'rcn_group_apply_lag_seconds{group="9"}': 0.0})
        self.assertEqual(types, {"rcn_group_apply_lag_seconds": "gauge"})

    def test_labelled_counter_with_two_labels(self):
        self.registry.labelled("entries_sent", "counter", "entries", ("group", "type"),
                               lambda: [(("7", "WR"), 10), ((7, "WROK"), 3)])
        samples, types = self.scrape()
        self.assertEqual(samples, {'rcn_entries_sent_total{group="7",type="WR"}': 10.0,
                                   'rcn_entries_sent_total{group="7",type="WROK"}': 3.0})
        self.assertEqual(types, {"rcn_entries_sent": "counter"})

    def test_labelled_with_no_samples_is_an_empty_family(self):
        self.registry.labelled("pair_dirty_tracks", "gauge", "dirty", ("lun",), lambda: [])
        self.assertEqual(self.scrape(), ({}, {"rcn_pair_dirty_tracks": "gauge"}))

    def test_bad_kind_and_label_names_are_refused_at_registration(self):
        with self.assertRaises(ValueError) as caught:
            self.registry.labelled("x", "summary", "", ("a",), lambda: [])
        self.assertIn("summary", str(caught.exception))
        for names in (("0lun",), ("lun-id",), ("__name",), ("a", "a")):
            self.assertRaises(ValueError, self.registry.labelled, "x", "gauge", "", names,
                              lambda: [])
        self.assertRaises(ValueError, self.registry.counters, "x", dict, labels={"bad label": "1"})
        self.assertRaises(ValueError, self.registry.gauge, "x", float, labels={"__x": "1"})


class HistogramTests(RegistryTestCase):
    def test_histogram_from_a_latency_histogram(self):
        latency = LatencyHistogram((0.001, 0.01, 0.1))
        for seconds in (0.0005, 0.002, 0.003, 0.05, 2.0):
            latency.observe(seconds)
        self.registry.histogram("rio_write_latency_seconds", "RIO WR to WROK", latency.snapshot)
        samples, types = self.scrape()
        self.assertEqual(types, {"rcn_rio_write_latency_seconds": "histogram"})
        self.assertEqual(samples, {
            'rcn_rio_write_latency_seconds_bucket{le="0.001"}': 1.0,
            'rcn_rio_write_latency_seconds_bucket{le="0.01"}': 3.0,
            'rcn_rio_write_latency_seconds_bucket{le="0.1"}': 4.0,
            'rcn_rio_write_latency_seconds_bucket{le="+Inf"}': 5.0,
            "rcn_rio_write_latency_seconds_count": 5.0,
            "rcn_rio_write_latency_seconds_sum": 2.0555})

    def test_missing_inf_bucket_is_added_from_the_count(self):
        self.registry.histogram("h", "doc", lambda: ([(1.0, 2), (2.0, 3)], 4.5, 7))
        samples, _ = self.scrape()
        self.assertEqual((samples['rcn_h_bucket{le="2.0"}'], samples['rcn_h_bucket{le="+Inf"}'],
                          samples["rcn_h_count"]), (3.0, 7.0, 7.0))

    def test_buckets_that_are_not_cumulative_skip_the_family(self):
        self.registry.histogram("h", "doc", lambda: ([(1.0, 5), (2.0, 3)], 4.5, 7))
        self.registry.gauge("other", lambda: 1)
        self.assertEqual(self.scrape()[0], {"rcn_other": 1.0})
        self.assertIn("counts be cumulative", self.logged()[0])


class SanitisingTests(RegistryTestCase):
    def test_sanitize(self):
        self.assertEqual([sanitize(n) for n in ("requests-write", "a.b c", "9lives", "", "ok_1")],
                         ["requests_write", "a_b_c", "_9lives", "_", "ok_1"])

    def test_keys_and_names_become_valid_prometheus_names(self):
        self.registry.counters("rio target", lambda: {"requests-write": 2, "9lives": 1,
                                                      "bytes/s": 3.5}, gauges=("bytes/s",))
        self.registry.gauge("link.up", lambda: 1)
        self.registry.labelled("dirty-tracks", "gauge", "", ("lun",), lambda: [(("0",), 4)])
        samples, _ = self.scrape()
        self.assertEqual(samples, {"rcn_rio_target_requests_write_total": 2.0,
                                   "rcn_rio_target__9lives_total": 1.0,
                                   "rcn_rio_target_bytes_s": 3.5,
                                   "rcn_link_up": 1.0,
                                   'rcn_dirty_tracks{lun="0"}': 4.0})

    def test_keys_that_sanitise_to_the_same_name_keep_the_first(self):
        self.registry.counters("x", lambda: {"a-b": 1, "a_b": 2})
        self.assertEqual(self.scrape()[0], {"rcn_x_a_b_total": 1.0})
        self.assertIn("name clash", self.logged()[0])


class BrokenSourceTests(RegistryTestCase):
    def test_raising_source_is_skipped_and_the_scrape_goes_on(self):
        state = {"broken": True}

        def source():
            if state["broken"]:
                raise ZeroDivisionError("no divisor yet")
            return {"applied": 3}
        self.registry.counters("first", lambda: {"a": 1})
        self.registry.counters("broken", source)
        self.registry.gauge("last", lambda: 2)
        self.assertEqual(self.scrape()[0], {"rcn_first_a_total": 1.0, "rcn_last": 2.0})
        state["broken"] = False
        self.assertEqual(self.scrape()[0], {"rcn_first_a_total": 1.0, "rcn_last": 2.0,
                                            "rcn_broken_applied_total": 3.0})

    def test_a_failure_is_logged_once_with_its_traceback_and_the_recovery_once(self):
        state = {"broken": True}

        def source():
            if state["broken"]:
                raise ZeroDivisionError("no divisor yet")
            return 1.0
        self.registry.gauge("ratio", source)
        self.registry.render()
        self.registry.render()
        self.assertEqual(len(self.events), 1)
        self.assertIn("gauge rcn_ratio could not be collected (ZeroDivisionError: no divisor yet)",
                      self.logged()[0])
        self.assertIsInstance(self.events[0]["log_failure"].value, ZeroDivisionError)
        state["broken"] = False
        self.registry.render()
        self.registry.render()
        self.assertEqual(len(self.events), 2)
        self.assertIn("rcn_ratio is collected again", self.logged()[1])

    def test_a_value_that_is_not_a_number_skips_the_family(self):
        self.registry.counters("nbd", lambda: {"connections": 1, "peer": "10.0.0.1"})
        self.registry.gauge("none", lambda: None)
        self.registry.labelled("lab", "gauge", "", ("a",), lambda: [(("1", "2"), 1)])
        self.assertEqual(self.scrape(), ({}, {}))
        text = "\n".join(self.logged())
        self.assertIn("key 'peer' is '10.0.0.1', not a number", text)
        self.assertIn("the value is None, not a number", text)
        self.assertIn("do not match label names", text)

    def test_two_families_with_one_name_keep_the_first(self):
        self.registry.gauge("rio_link_up", lambda: 1)
        self.registry.counters("rio_link", lambda: {"up": 5}, gauges=("up",))
        self.assertEqual(self.scrape()[0], {"rcn_rio_link_up": 1.0})
        self.assertIn("rcn_rio_link_up (already from gauge rcn_rio_link_up)", self.logged()[0])


class LatencyHistogramTests(SynchronousTestCase):
    def test_default_buckets_run_from_50_us_to_10_s(self):
        latency = LatencyHistogram()
        self.assertEqual((latency.bounds[0], latency.bounds[-1]), (50e-6, 10.0))
        self.assertEqual(list(latency.bounds), sorted(set(latency.bounds)))

    def test_quantile_interpolates_inside_the_bucket(self):
        latency = LatencyHistogram((1.0, 2.0, 3.0, 4.0))
        for i in range(1, 101):                       # 0.04 .. 4.0, 25 per bucket
            latency.observe(i * 0.04)
        self.assertAlmostEqual(latency.quantile(0.5), 2.0)
        self.assertAlmostEqual(latency.quantile(0.9), 3.6)
        self.assertAlmostEqual(latency.quantile(0.1), 0.4)
        self.assertAlmostEqual(latency.quantile(0.0), 0.04)   # the observed minimum
        self.assertAlmostEqual(latency.quantile(1.0), 4.0)

    def test_quantile_is_clamped_to_the_observed_range(self):
        latency = LatencyHistogram()
        for _ in range(1000):
            latency.observe(0.003)                    # all in (2.5 ms, 5 ms]
        for q in (0.01, 0.5, 0.99):
            self.assertEqual(latency.quantile(q), 0.003)

    def test_quantile_in_the_unbounded_bucket_is_the_maximum(self):
        latency = LatencyHistogram((0.1, 1.0))
        for seconds in (0.05,) * 8 + (20.0, 30.0):
            latency.observe(seconds)
        self.assertEqual(latency.quantile(0.99), 30.0)
        self.assertAlmostEqual(latency.quantile(0.4), 0.05)

    def test_quantile_of_nothing_is_nan_and_q_must_be_in_0_1(self):
        latency = LatencyHistogram()
        self.assertTrue(math.isnan(latency.quantile(0.5)))
        self.assertRaises(ValueError, latency.quantile, 1.5)
        self.assertRaises(ValueError, latency.quantile, -0.1)

    def test_snapshot_is_cumulative_with_sum_and_count(self):
        latency = LatencyHistogram((0.001, 0.01))
        for seconds in (0.001, 0.0001, 0.005, 0.5, -0.2):      # a bound is "le"; negative is 0
            latency.observe(seconds)
        buckets, total, count = latency.snapshot()
        self.assertEqual(buckets, [(0.001, 3), (0.01, 4), (math.inf, 5)])
        self.assertAlmostEqual(total, 0.5061)
        self.assertEqual(count, 5)

    def test_bad_bounds_are_refused(self):
        for bounds in ((), (0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)):
            self.assertRaises(ValueError, LatencyHistogram, bounds)


class MetricsSiteTests(TestCase):
    """metrics_site over a real TCP port, fetched with twisted.web.client.Agent."""

    def setUp(self):
        self.counters = {"connections": 2, "connections_active": 1}
        registry = MetricsRegistry()
        registry.counters("nbd", lambda: self.counters, "NBD", gauges=("connections_active",))
        self.port = reactor.listenTCP(0, metrics_site(registry), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.agent = Agent(reactor)

    def fetch(self, path: str, method: bytes = b"GET"):
        d = self.agent.request(method, (self.url + path).encode())
        return d.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response, body)))

    def test_get_metrics_is_the_text_format_read_at_scrape_time(self):
        def first(result):
            response, body = result
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                             [CONTENT_TYPE_LATEST.encode()])
            self.assertEqual(parse_exposition(body)[0], {"rcn_nbd_connections_total": 2.0,
                                                         "rcn_nbd_connections_active": 1.0})
            self.counters["connections"] = 3
            return self.fetch("/metrics")

        def second(result):
            self.assertEqual(parse_exposition(result[1])[0]["rcn_nbd_connections_total"], 3.0)
        return self.fetch("/metrics").addCallback(first).addCallback(second)

    def test_other_paths_are_404_and_other_methods_405(self):
        codes = []

        def record(result):
            codes.append(result[0].code)
        d = self.fetch("/")
        for path, method in (("/metricsx", b"GET"), ("/metrics/more", b"GET"),
                             ("/status", b"GET"), ("/metrics", b"POST")):
            d.addCallback(record)
            d.addCallback(lambda _, p=path, m=method: self.fetch(p, m))
        d.addCallback(record)
        return d.addCallback(lambda _: self.assertEqual(codes, [404, 404, 404, 404, 405]))

    def test_head_has_the_headers_and_no_body(self):
        def check(result):
            response, body = result
            self.assertEqual((response.code, body), (200, b""))
            self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                             [CONTENT_TYPE_LATEST.encode()])
        return self.fetch("/metrics", b"HEAD").addCallback(check)
