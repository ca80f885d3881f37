"""What an ``rcn-bench`` run leaves behind: a pass/fail table, a JSON report, a PNG plot.

The scenario runner builds a *run record* (a plain dict, :data:`RECORD_SCHEMA` plus the
cross-field rules in :func:`validate`) and hands it here:

* :func:`results_table` -- one aligned row per check and a summary line;
* :func:`write_json` -- the record, indented, written atomically, non-finite numbers as
  ``null`` (JSON has no NaN);
* :func:`plot` -- lag per order guarantee group (with the source ack p99) over
  throughput (host writes, target applies), events as vertical lines, link down..up
  intervals shaded. :func:`build_figure` returns the figure unsaved, for tests.

Measurements may be ``None`` (nothing measured in that interval): they are gaps in the
plot, never zeros. Plotting uses matplotlib's object API on an Agg canvas, never
pyplot's global state, so it is safe in a daemon and in parallel tests.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jsonschema

from rcn.console.commands import columns

EVENT_KINDS = ("impair", "link", "pair", "workload", "wait", "check", "note")

_MEASURE = {"type": ["number", "null"]}
_TIME = {"type": "number", "minimum": 0}

RECORD_SCHEMA = {
    "type": "object",
    "required": ["version", "scenario", "started", "duration_s", "groups", "samples",
                 "events", "checks", "passed"],
    "properties": {
        "version": {"const": 1},
        "scenario": {
            "type": "object",
            "required": ["name", "file", "description"],
            "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                           "description": {"type": "string"}},
        },
        "started": {"type": "number"},
        "duration_s": _TIME,
        "groups": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        "samples": {"type": "array", "items": {
            "type": "object",
            "required": ["t", "lag_ms", "ack_p50_ms", "ack_p99_ms", "write_mb_s",
                         "applied_mb_s"],
            "properties": {
                "t": _TIME,
                "lag_ms": {"type": "object", "additionalProperties": _MEASURE},
                "ack_p50_ms": _MEASURE, "ack_p99_ms": _MEASURE,
                "write_mb_s": _MEASURE, "applied_mb_s": _MEASURE,
            },
        }},
        "events": {"type": "array", "items": {
            "type": "object",
            "required": ["t", "kind", "label", "link", "state"],
            "properties": {
                "t": _TIME,
                "kind": {"enum": list(EVENT_KINDS)},
                "label": {"type": "string"},
                "link": {"type": ["string", "null"]},
                "state": {"enum": ["down", "up", None]},
            },
            # a link event must say which link and which way
            "if": {"properties": {"kind": {"const": "link"}}},
            "then": {"properties": {"link": {"type": "string"},
                                    "state": {"enum": ["down", "up"]}}},
        }},
        "checks": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "t", "passed", "detail"],
            "properties": {"name": {"type": "string"}, "t": _TIME,
                           "passed": {"type": "boolean"}, "detail": {"type": "string"}},
        }},
        "passed": {"type": "boolean"},
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(RECORD_SCHEMA)

# the PNG: 12 x 8 inches at 100 dpi
FIGSIZE_IN = (12, 8)
DPI = 100
SPAN_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")


# -- checking -------------------------------------------------------------------------------
def _field_name(error: jsonschema.ValidationError) -> str:
    """``samples[3].lag_ms`` for an error's place; a missing key is named itself."""
    name = error.json_path.removeprefix("$").removeprefix(".")
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        name = f"{name}.{missing}" if name else missing
    return name or "record"


def validate(record: Any) -> None:
    """``ValueError`` naming the first field of ``record`` that is missing or wrong.

    Checked as it will be written (NaN as null): so a NaN time is an error, a NaN
    measurement is a gap.
    """
    record = finite(record)
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(record))
    if error is not None:
        raise ValueError(f"run record: {_field_name(error)}: {error.message}")
    groups = {str(g) for g in record["groups"]}
    previous = 0.0
    for i, sample in enumerate(record["samples"]):
        where = f"samples[{i}]"
        lags = set(sample["lag_ms"])
        if lags != groups:
            missing, extra = sorted(groups - lags), sorted(lags - groups)
            what = (f"no lag for group {missing[0]}" if missing
                    else f"group {extra[0]} is not in groups")
            raise ValueError(f"run record: {where}.lag_ms: {what}")
        if sample["t"] < previous:
            raise ValueError(f"run record: {where}.t: {sample['t']} is before the previous "
                             f"sample's {previous}")
        previous = sample["t"]
    failed = [c["name"] for c in record["checks"] if not c["passed"]]
    if record["passed"] and failed:
        raise ValueError(f"run record: passed: true but check {failed[0]!r} failed")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (at any depth) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


# -- the table ------------------------------------------------------------------------------
def verdict(record: dict) -> str:
    """``PASS`` only when the run says so and no check failed."""
    ok = record["passed"] and all(c["passed"] for c in record["checks"])
    return "PASS" if ok else "FAIL"


def results_table(record: dict) -> str:
    """One aligned row per check, then ``N checks: P passed, F failed — PASS|FAIL``."""
    checks = record["checks"]
    rows = [(c["name"], f"{c['t']:.1f}", "PASS" if c["passed"] else "FAIL",
             " ".join(c["detail"].split()))       # one line per check keeps the columns
            for c in checks]
    passed = sum(1 for c in checks if c["passed"])
    noun = "check" if len(checks) == 1 else "checks"
    summary = (f"{len(checks)} {noun}: {passed} passed, {len(checks) - passed} failed"
               f" — {verdict(record)}")
    return columns(rows, ("NAME", "AT (s)", "RESULT", "DETAIL")) + "\n" + summary


# -- the JSON report -----------------------------------------------------------------------
def write_json(record: dict, path: str) -> None:
    """The record at ``path``, indented, via a temporary file and ``os.replace`` (a reader
    never sees half a report)."""
    text = json.dumps(finite(record), indent=2, allow_nan=False) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- the plot -------------------------------------------------------------------------------
def link_down_spans(record: dict) -> list[tuple[str, float, float]]:
    """``(link, down_t, up_t)`` per interval a link was down, in order of going down.

    A second ``down`` while down keeps the first; an ``up`` while up is ignored; a link
    still down at the end is down until :func:`end_time`.
    """
    down_since: dict[str, float] = {}
    spans = []
    for event in sorted((e for e in record["events"] if e["kind"] == "link"),
                        key=lambda e: e["t"]):
        link, t = event["link"], event["t"]
        if event["state"] == "down":
            down_since.setdefault(link, t)
        elif link in down_since:
            spans.append((link, down_since.pop(link), t))
    end = end_time(record)
    spans += [(link, t, max(t, end)) for link, t in down_since.items()]
    return sorted(spans, key=lambda s: s[1])


def end_time(record: dict) -> float:
    """The right edge of the plot: the run's duration, or the last thing in it if later."""
    times = [record["duration_s"]]
    times += [s["t"] for s in record["samples"][-1:]]
    times += [e["t"] for e in record["events"]]
    times += [c["t"] for c in record["checks"]]
    return max(times)


def _series(samples: list[dict], get) -> list[float]:
    """One value per sample; None (and NaN) as NaN, which matplotlib leaves as a gap."""
    out = []
    for sample in samples:
        value = get(sample)
        out.append(math.nan if value is None else float(value))
    return out


def build_figure(record: dict, title: str | None = None):
    """The plot as a matplotlib ``Figure`` (Agg canvas), not yet saved.

    Axes 0 is lag (ms), axes 1 throughput (MB/s). On both, every event is one line with
    ``gid="event"`` and every link down interval one span with ``gid="link-down"``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    lag_ax, rate_ax = fig.subplots(2, 1, sharex=True)
    samples = record["samples"]
    t = [s["t"] for s in samples]

    if samples:
        for group in record["groups"]:
            lag_ax.plot(t, _series(samples, lambda s, g=str(group): s["lag_ms"].get(g)),
                        linewidth=1, label=f"lag, group {group}")
        lag_ax.plot(t, _series(samples, lambda s: s["ack_p99_ms"]), linestyle="--",
                    linewidth=1, color="black", label="source ack p99")
        rate_ax.plot(t, _series(samples, lambda s: s["write_mb_s"]), linewidth=1,
                     label="host writes")
        rate_ax.plot(t, _series(samples, lambda s: s["applied_mb_s"]), linewidth=1,
                     label="applied at target")
    else:
        for ax in (lag_ax, rate_ax):
            ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center",
                    va="center", color="grey")

    colour_of: dict[str, str] = {}                   # one shade per link, labelled once
    for link, start, stop in link_down_spans(record):
        first = link not in colour_of
        colour = colour_of.setdefault(link, SPAN_COLOURS[len(colour_of) % len(SPAN_COLOURS)])
        for ax in (lag_ax, rate_ax):
            label = f"{link} down" if ax is lag_ax and first else None
            ax.axvspan(start, stop, color=colour, alpha=0.15, linewidth=0,
                       gid="link-down", label=label)

    # labels at the top of the lag axes: x in seconds, y in axes fractions
    label_at = blended_transform_factory(lag_ax.transData, lag_ax.transAxes)
    for event in record["events"]:
        for ax in (lag_ax, rate_ax):
            ax.axvline(event["t"], color="grey", linewidth=0.6, alpha=0.8, gid="event")
        lag_ax.text(event["t"], 0.98, event["label"], transform=label_at, rotation=90,
                    fontsize=6, ha="left", va="top", color="dimgrey", clip_on=True)

    end = end_time(record)
    rate_ax.set_xlim(0, end if end > 0 else 1)
    lag_ax.set_ylabel("lag (ms)")
    rate_ax.set_ylabel("throughput (MB/s)")
    rate_ax.set_xlabel("time since start (s)")
    for ax in (lag_ax, rate_ax):
        ax.set_ylim(bottom=0)
        ax.grid(True, linewidth=0.3)
        if ax.get_legend_handles_labels()[0]:
            # outside, to the right: inside it would hide event labels or data
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.suptitle(title or f"{record['scenario']['name']} — {verdict(record)}")
    return fig


def plot(record: dict, path: str, title: str | None = None) -> None:
    """The PNG (1200 x 800 px) at ``path``, written atomically like :func:`write_json`."""
    fig = build_figure(record, title)
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
