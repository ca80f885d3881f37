"""Record selection for ``--type``, ``--group``, ``--seq`` and ``--wwn``.

A record matches when it, or a part nested in it (a unit inside a log entry,
an entry inside a batch), matches every given criterion. Criteria of one
option are alternatives: ``--type fcp_cmnd,els`` matches either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from datapath.frames.names import format_wwn, parse_wwn

_WWN_KEYS = ("target_wwn", "source_wwn", "port_name", "node_name")


def walk(record: dict) -> Iterator[dict]:
    """The record and every unit and batch entry inside it, depth first."""
    yield record
    for key in ("entries", "units"):
        for part in record.get(key, ()):
            yield from walk(part)


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"5,10-20"`` -> ``[(5, 5), (10, 20)]``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        first, sep, last = item.partition("-")
        try:
            a, b = int(first, 0), int(last, 0) if sep else int(first, 0)
        except ValueError:
            raise ValueError(f"not a number or range: {item!r}") from None
        if a > b:
            raise ValueError(f"range {item!r} is reversed")
        out.append((a, b))
    if not out:
        raise ValueError("empty range list")
    return out


@dataclass
class RecordFilter:
    types: list[str] = field(default_factory=list)
    groups: list[tuple[int, int]] = field(default_factory=list)
    seqs: list[tuple[int, int]] = field(default_factory=list)
    wwns: list[str] = field(default_factory=list)     # normalised text form

    @classmethod
    def from_options(cls, types=None, groups=None, seqs=None, wwns=None) -> "RecordFilter":
        return cls(
            types=[t.strip().lower() for t in (types or "").split(",") if t.strip()],
            groups=parse_ranges(groups) if groups else [],
            seqs=parse_ranges(seqs) if seqs else [],
            wwns=[format_wwn(parse_wwn(w)) for w in (wwns or "").split(",") if w.strip()])

    @property
    def active(self) -> bool:
        return bool(self.types or self.groups or self.seqs or self.wwns)

    def matches(self, record: dict) -> bool:
        if not self.active:
            return True
        parts = list(walk(record))
        return all(check(parts) for check in (self._type, self._group, self._seq, self._wwn))

    def _type(self, parts) -> bool:
        if not self.types:
            return True
        kinds = {p.get("kind", "") for p in parts}
        return any(k == t or k.startswith(t + "_") for k in kinds for t in self.types)

    @staticmethod
    def _in(ranges, value) -> bool:
        return value is not None and any(a <= value <= b for a, b in ranges)

    def _group(self, parts) -> bool:
        return not self.groups or any(self._in(self.groups, p.get("log", {}).get("group_id"))
                                      for p in parts)

    def _seq(self, parts) -> bool:
        return not self.seqs or any(self._in(self.seqs, p.get("log", {}).get("sequence"))
                                    for p in parts)

    def _wwn(self, parts) -> bool:
        if not self.wwns:
            return True
        for p in parts:
            for layer in (p.get("log", {}), p.get("fc4", {})):
                if any(layer.get(k) in self.wwns for k in _WWN_KEYS):
                    return True
        return False
