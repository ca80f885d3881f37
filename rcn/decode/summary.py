"""``--summary``: what a capture holds, and what is wrong with it.

* counts per kind (entries inside batches and units inside entries included);
* per order-guarantee group: WR/CTRL sequence range, gaps (missing sequences)
  and duplicates (the same sequence and segment seen again);
* lag: capture time minus the entry's I/O time, for WR entries;
* FC CRC and CRC32C failures, and decode errors per layer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from rcn.decode.filters import walk

_SEQUENCED = frozenset({"log_wr", "log_ctrl"})
_GAP_LIMIT = 32


@dataclass
class _Group:
    seen: set = field(default_factory=set)          # (sequence, segment_index)
    sequences: set = field(default_factory=set)
    duplicates: int = 0
    retransmits: int = 0


class Summary:
    def __init__(self):
        self.frames = 0
        self.kinds: Counter = Counter()
        self.errors: Counter = Counter()
        self.fc_crc_failures = 0
        self.crc32c_failures = 0
        self.groups: dict[int, _Group] = defaultdict(_Group)
        self.lags_ms: list[float] = []

    def add(self, record: dict) -> None:
        self.frames += 1
        for err in record.get("errors", ()):
            self.errors[err["layer"]] += 1
        for part in walk(record):
            self.kinds[part.get("kind", "unknown")] += 1
            if part.get("fc", {}).get("crc") == "bad":
                self.fc_crc_failures += 1
            log = part.get("log")
            if log is None:
                continue
            if log.get("crc32c") == "bad":
                self.crc32c_failures += 1
            if part is not record:   # nested errors count once each, by layer
                for err in part.get("errors", ()):
                    self.errors[err["layer"]] += 1
            if part.get("kind") in _SEQUENCED:
                self._sequence(log, record.get("time"))

    def _sequence(self, log: dict, capture_time) -> None:
        group = self.groups[log["group_id"]]
        key = (log["sequence"], log["segment_index"])
        if key in group.seen:
            group.duplicates += 1
        group.seen.add(key)
        group.sequences.add(log["sequence"])
        if log["flags"] & 0x0001:
            group.retransmits += 1
        if capture_time is not None and log["io_time_ns"] and log["segment_index"] == 0:
            self.lags_ms.append((capture_time - log["io_time_ns"] / 1e9) * 1e3)

    def report(self) -> dict:
        groups = {}
        for group_id, g in sorted(self.groups.items()):
            seqs = sorted(g.sequences)
            gaps, missing = [], 0
            for a, b in zip(seqs, seqs[1:]):
                if b > a + 1:
                    missing += b - a - 1
                    if len(gaps) < _GAP_LIMIT:
                        gaps.append([a + 1, b - 1])
            groups[str(group_id)] = {"entries": len(g.seen), "first": seqs[0], "last": seqs[-1],
                                     "missing": missing, "gaps": gaps,
                                     "duplicates": g.duplicates, "retransmits": g.retransmits}
        return {"frames": self.frames, "kinds": dict(sorted(self.kinds.items())),
                "groups": groups, "lag_ms": _stats(self.lags_ms),
                "fc_crc_failures": self.fc_crc_failures, "crc32c_failures": self.crc32c_failures,
                "errors": dict(sorted(self.errors.items()))}


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
    return {"count": len(ordered), "min": ordered[0], "mean": sum(ordered) / len(ordered),
            "p50": pct(50), "p99": pct(99), "max": ordered[-1]}


def render_summary(report: dict) -> str:
    out = [f"frames: {report['frames']}", "kinds:"]
    out += [f"  {kind:<16} {count}" for kind, count in report["kinds"].items()]
    out.append("groups:" if report["groups"] else "groups: none")
    for group_id, g in report["groups"].items():
        gaps = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in g["gaps"])
        out.append(f"  group {group_id}: sequences {g['first']}..{g['last']}, {g['entries']} entries, "
                   f"{g['missing']} missing{' (' + gaps + ')' if gaps else ''}, "
                   f"{g['duplicates']} duplicates, {g['retransmits']} retransmits")
    lag = report["lag_ms"]
    if lag:
        out.append(f"lag ms: min {lag['min']:.3f} mean {lag['mean']:.3f} p50 {lag['p50']:.3f} "
                   f"p99 {lag['p99']:.3f} max {lag['max']:.3f} ({lag['count']} entries)")
    else:
        out.append("lag ms: no WR entries with capture times")
    out.append(f"FC CRC failures: {report['fc_crc_failures']}")
    out.append(f"CRC32C failures: {report['crc32c_failures']}")
    errors = ", ".join(f"{layer} {n}" for layer, n in report["errors"].items())
    out.append(f"decode errors: {errors or 'none'}")
    return "\n".join(out)
