"""Prometheus ``/metrics`` for every daemon, collected at scrape time.

Daemons keep their counters as plain Python numbers in plain objects (a dict
like ``NbdServerFactory.counters``, a dataclass, attributes): the hot path
never calls ``prometheus_client``. A :class:`MetricsRegistry` is told where
those numbers live, as callables it reads when Prometheus scrapes::

    metrics = MetricsRegistry()
    metrics.counters("nbd", lambda: factory.counters, "NBD server",
                     gauges=("connections_active",))
    metrics.gauge("rio_link_up", lambda: 1.0 if port.link else 0.0, "FCIP link up (1) or down (0)")
    metrics.labelled("pair_dirty_tracks", "gauge", "tracks set in the differential bitmap",
                     ("lun",), lambda: [((str(lun),), bitmap.popcount()) for lun, bitmap in ...])
    latency = LatencyHistogram()            # the daemon calls latency.observe(seconds)
    metrics.histogram("apply_latency_seconds", "write apply latency", latency.snapshot)
    site = metrics_site(metrics)            # or MetricsResource(metrics) under another root

Each key ``k`` of a ``counters`` source becomes ``rcn_<subsystem>_<k>_total``
(a counter) or ``rcn_<subsystem>_<k>`` (a gauge, for keys named in
``gauges``). Keys are sanitised into valid Prometheus names (anything but
``[a-zA-Z0-9_]`` becomes ``_``; a leading digit gets a ``_`` in front).

A source that raises, or returns something that is not a number, costs only
its own family: the scrape goes on without it, and the problem is logged once
(again when it changes, and when the source recovers), not on every scrape.
A family whose name another family already produced in the same scrape is
skipped the same way. Label names are checked when a family is registered
(they come from the code, not from data): a bad one is a ``ValueError``.

:class:`LatencyHistogram` is the plain object for latencies: ``observe`` is a
bisect and three additions, ``snapshot`` feeds :meth:`MetricsRegistry.histogram`,
``quantile`` estimates percentiles for reports (``rcn demo``).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.utils import floatToGoString
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import Site

from rcn.web import BoundedSite

__all__ = ["DEFAULT_LATENCY_BOUNDS_S", "LatencyHistogram", "MetricsRegistry", "MetricsResource",
           "metrics_site", "sanitize"]

_log = Logger()
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge")

#: 50 us .. 10 s, roughly 1-2.5-5 per decade (Prometheus' usual spacing)
DEFAULT_LATENCY_BOUNDS_S: tuple[float, ...] = (
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0)


def sanitize(name: str) -> str:
    """``name`` as a valid Prometheus metric name part: ``[a-zA-Z0-9_]``, no leading digit."""
    name = _INVALID.sub("_", str(name))
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def _check_labels(names: Iterable[str], where: str) -> tuple[str, ...]:
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"metrics: {where}: label name {name!r} is not a valid Prometheus "
                             "label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")
    if len(set(names)) != len(names):
        raise ValueError(f"metrics: {where}: label names {names} repeat a name")
    return names


def _number(value, what: str) -> float:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} is {value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} is {value!r}, not a number") from None


def _exposed(family) -> tuple[str, ...]:
    """The sample names a family puts in the text format (to find collisions)."""
    if family.type == "counter":
        return (family.name + "_total",)
    if family.type == "histogram":
        return (family.name + "_bucket", family.name + "_sum", family.name + "_count")
    return (family.name,)


class _Scrape:
    """The one collector of a MetricsRegistry: runs every registered family builder."""

    def __init__(self, owner: "MetricsRegistry"):
        self.owner = owner

    def collect(self):
        return self.owner._collect()


class MetricsRegistry:
    """A ``prometheus_client`` CollectorRegistry (not the global one) plus helpers.

    ``namespace`` prefixes every name (``rcn_...``). ``registry`` is open for
    other custom collectors; only the families added through the helpers get
    the error handling and collision checks described in the module doc.
    """

    def __init__(self, namespace: str = "rcn"):
        self.namespace = sanitize(namespace) if namespace else ""
        self.registry = CollectorRegistry(auto_describe=False)
        self._builders: list[tuple[str, Callable[[], list]]] = []
        self._failing: dict[str, str] = {}      # what -> the problem last logged
        self.registry.register(_Scrape(self))

    def name(self, *parts: str) -> str:
        """The full metric name of ``parts`` (each sanitised), with the namespace."""
        return "_".join(sanitize(p) for p in ((self.namespace,) if self.namespace else ()) + parts)

    # -- registering ------------------------------------------------------------------
    def counters(self, subsystem: str, source: Callable[[], Mapping[str, int | float]],
                 doc: str = "", labels: Mapping[str, str] | None = None,
                 gauges: Iterable[str] = ()) -> None:
        """One metric per key of ``source()``: ``rcn_<subsystem>_<key>_total`` (a counter),
        or ``rcn_<subsystem>_<key>`` (a gauge) for the keys in ``gauges``. ``labels``
        are constant labels on every sample."""
        label_names, label_values = self._constant_labels(labels, f"counters {subsystem!r}")
        gauges = frozenset(gauges)
        what = f"counters {subsystem!r}"
        doc = doc or f"{subsystem} counters"

        def build() -> list:
            values = source()
            out = []
            for key, value in values.items():
                value = _number(value, f"key {key!r}")
                name = self.name(subsystem, str(key))
                if key in gauges:
                    family = GaugeMetricFamily(name, f"{doc}: {key}", labels=label_names)
                else:
                    family = CounterMetricFamily(name, f"{doc}: {key}", labels=label_names)
                family.add_metric(label_values, value)
                out.append(family)
            return out
        self._builders.append((what, build))

    def gauge(self, name: str, source: Callable[[], float], doc: str = "",
              labels: Mapping[str, str] | None = None) -> None:
        """``rcn_<name>``, the value ``source()`` returns."""
        full = self.name(name)
        label_names, label_values = self._constant_labels(labels, f"gauge {full}")

        def build() -> list:
            family = GaugeMetricFamily(full, doc or name, labels=label_names)
            family.add_metric(label_values, _number(source(), "the value"))
            return [family]
        self._builders.append((f"gauge {full}", build))

    def labelled(self, name: str, kind: str, doc: str, label_names: Sequence[str],
                 source: Callable[[], Iterable[tuple[Sequence[str], float]]]) -> None:
        """``rcn_<name>`` (``kind`` "counter": ``..._total``) with one sample per
        ``(label values, value)`` that ``source()`` yields, e.g. ``(("7",), 123.0)``."""
        if kind not in _KINDS:
            raise ValueError(f"metrics: labelled {name!r}: kind {kind!r} is not one of {_KINDS}")
        full = self.name(name)
        label_names = _check_labels(label_names, f"labelled {full}")
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily

        def build() -> list:
            family = cls(full, doc or name, labels=label_names)
            seen = set()
            for values, value in source():
                values = tuple(str(v) for v in values)
                if len(values) != len(label_names):
                    raise ValueError(f"label values {values} do not match label names "
                                     f"{label_names}")
                if values in seen:
                    raise ValueError(f"label values {values} appear twice")
                seen.add(values)
                family.add_metric(values, _number(value, f"the value for {values}"))
            return [family]
        self._builders.append((f"labelled {full}", build))

    def histogram(self, name: str, doc: str,
                  source: Callable[[], tuple[Sequence[tuple[float, int]], float, int]],
                  labels: Mapping[str, str] | None = None) -> None:
        """``rcn_<name>`` from ``source()`` = (cumulative buckets ``[(upper bound, count)]``
        in increasing bound order, sum, count), e.g. ``LatencyHistogram.snapshot``. A
        missing ``+Inf`` bucket is added with ``count``."""
        full = self.name(name)
        label_names, label_values = self._constant_labels(labels, f"histogram {full}")

        def build() -> list:
            buckets, total, count = source()
            count = _number(count, "the count")
            rows, last_bound, last_count = [], -math.inf, 0.0
            for bound, cumulative in buckets:
                bound, cumulative = float(bound), _number(cumulative, f"bucket {bound}")
                if bound <= last_bound or cumulative < last_count:
                    raise ValueError(f"bucket ({bound}, {cumulative}) after ({last_bound}, "
                                     f"{last_count}): bounds must increase and counts be "
                                     "cumulative")
                rows.append((floatToGoString(bound), cumulative))
                last_bound, last_count = bound, cumulative
            if last_bound != math.inf:
                if count < last_count:
                    raise ValueError(f"count {count} is below the last bucket's {last_count}")
                rows.append(("+Inf", count))
            elif last_count != count:
                raise ValueError(f"the +Inf bucket holds {last_count}, the count is {count}")
            family = HistogramMetricFamily(full, doc or name, labels=label_names)
            family.add_metric(label_values, rows, _number(total, "the sum"))
            return [family]
        self._builders.append((f"histogram {full}", build))

    @staticmethod
    def _constant_labels(labels: Mapping[str, str] | None,
                         where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        labels = dict(labels or {})
        names = _check_labels(labels, where)
        return names, tuple(str(labels[n]) for n in names)

    # -- scraping ---------------------------------------------------------------------
    def _collect(self):
        seen: dict[str, str] = {}
        for what, build in self._builders:
            try:
                families = build()
            except Exception as exc:
                self._problem(what, f"{type(exc).__name__}: {exc}", exc)
                continue
            clashes = []
            for family in families:
                names = _exposed(family)
                clash = next((seen[n] for n in names if n in seen), None)
                if clash is not None:
                    clashes.append(f"{family.name} (already from {clash})")
                    continue
                seen.update(dict.fromkeys(names, what))
                yield family
            if clashes:
                self._problem(what, "name clash: " + ", ".join(clashes) + "; skipped", None)
            elif what in self._failing:
                del self._failing[what]
                _log.info("metrics: {what} is collected again", what=what)

    def _problem(self, what: str, text: str, exc: Exception | None) -> None:
        if self._failing.get(what) == text:
            return                      # already logged: not once per scrape
        self._failing[what] = text
        if exc is None:
            _log.warn("metrics: {what}: {problem}", what=what, problem=text)
        else:
            _log.failure("metrics: {what} could not be collected ({problem}); left out of "
                         "this scrape until it recovers", what=what, problem=text)

    def render(self) -> bytes:
        """Every family in the Prometheus text exposition format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class LatencyHistogram:
    """Latencies in fixed buckets; a plain object for the hot path.

    ``bounds_s`` are the buckets' upper bounds in seconds (strictly
    increasing, positive, finite); an implicit last bucket takes the rest.
    Negative observations (a clock stepping back) count as 0.
    """

    __slots__ = ("bounds", "counts", "sum", "count", "min", "max")

    def __init__(self, bounds_s: Sequence[float] = DEFAULT_LATENCY_BOUNDS_S):
        bounds = tuple(float(b) for b in bounds_s)
        if not bounds:
            raise ValueError("LatencyHistogram: at least one bucket bound is needed")
        if any(not (0 < b < math.inf) for b in bounds) or any(
                a >= b for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"LatencyHistogram: bounds {bounds} must be positive, finite and "
                             "strictly increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def quantile(self, q: float) -> float:
        """Estimate of the ``q`` quantile (0 <= q <= 1), in seconds; NaN before any observation.

        Linear interpolation inside the bucket holding rank ``q * count`` (the
        first bucket starting at 0), as Prometheus' ``histogram_quantile``
        does, then clamped to the observed minimum and maximum; the last,
        unbounded bucket answers the maximum.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"LatencyHistogram.quantile: q={q} is not in [0, 1]")
        if not self.count:
            return math.nan
        rank = q * self.count
        below = 0
        last = len(self.bounds)
        for i, n in enumerate(self.counts):
            if n and below + n >= rank:
                if i == last:
                    return self.max
                lower = self.bounds[i - 1] if i else 0.0
                estimate = lower + (self.bounds[i] - lower) * (rank - below) / n
                return min(max(estimate, self.min), self.max)
            below += n
        return self.max                 # not reached: the counts add up to count

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """(cumulative ``[(upper bound, count)]`` ending with ``(inf, count)``, sum, count)."""
        buckets, total = [], 0
        for bound, n in zip(self.bounds + (math.inf,), self.counts):
            total += n
            buckets.append((bound, total))
        return buckets, self.sum, self.count


class MetricsResource(resource.Resource):
    """GET (and HEAD): the registry in the text exposition format; other methods 405."""

    isLeaf = True

    def __init__(self, registry: MetricsRegistry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        body = self.registry.render()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return body


class _MetricsRoot(resource.Resource):
    def __init__(self, metrics: MetricsResource):
        super().__init__()
        self.metrics = metrics

    def getChild(self, path: bytes, request):
        if path == b"metrics" and not any(request.postpath):
            return self.metrics
        return resource.NoResource("Only /metrics is served here.")


def metrics_site(registry: MetricsRegistry) -> Site:
    """A Site serving ``/metrics`` (404 for every other path), for daemons without a web API."""
    return BoundedSite(_MetricsRoot(MetricsResource(registry)))
