"""One fault's record, the per-role table, and the text the run ends with."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Fault:
    lab: int
    role: str
    fault: str
    device: str
    at_s: float
    hold_s: float = 0.0
    acked: int = 0
    recovery_s: float | None = None
    manual: list = field(default_factory=list)       # commands issued, with their answers
    unexpected: bool = False
    stuck: bool = False
    known: str | None = None
    state: dict | None = None                        # what the parties showed when stuck
    why: list = field(default_factory=list)
    required: int = 0                                # writes the prefix checks required
    lost: int = 0
    torn: int = 0
    phantoms: int = 0
    backwards: int = 0
    prefix: list = field(default_factory=list)
    bounds: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    note: str = ""
    skipped: str | None = None                       # why the fault could not be done
    refused: dict = field(default_factory=dict)      # rotate: seal refusals it caused
    retransmits: int | None = None                   # rotate: the edges' retransmissions
    storm: bool = False                              # rotate: more than tools.chaos.keys allows

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.torn or self.phantoms or self.backwards or self.stuck
                    or self.unexpected or self.bounds or self.answers or self.refused
                    or self.storm)


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def table_rows(records: list[Fault], roles: list[str]) -> list[dict]:
    rows = []
    for role in roles + ["all"]:
        mine = [r for r in records if role in ("all", r.role)]
        if not mine and role != "all":
            continue
        kinds = {}
        for r in mine:
            kinds[r.fault] = kinds.get(r.fault, 0) + 1
        times = [r.recovery_s for r in mine if r.recovery_s is not None]
        rows.append({"role": role, "faults": len(mine),
                     "kinds": ", ".join(f"{k} {n}" for k, n in kinds.items()),
                     "acked": sum(r.acked for r in mine),
                     "required": sum(r.required for r in mine),
                     "lost": sum(r.lost for r in mine), "torn": sum(r.torn for r in mine),
                     "backwards": sum(r.backwards for r in mine),
                     "recovery_p50_s": _p50(times),
                     "recovery_max_s": max(times) if times else None,
                     "manual": sum(len(r.manual) for r in mine),
                     "unexpected": sum(r.unexpected for r in mine),
                     "stuck": sum(r.stuck for r in mine),
                     "stuck_known": sum(r.stuck and r.known is not None for r in mine),
                     "bounds": sum(len(r.bounds) for r in mine),
                     "answers": sum(len(r.answers) for r in mine),
                     "skipped": sum(r.skipped is not None for r in mine),
                     "refused": sum(sum(r.refused.values()) for r in mine),
                     "storms": sum(r.storm for r in mine)})
    return rows


def _seal_column(row: dict) -> str:
    """Rotations: refusals of the seal and storms; skipped faults."""
    parts = []
    if row.get("refused"):
        parts.append(f"{row['refused']} refused")
    if row.get("storms"):
        parts.append(f"{row['storms']} storm")
    if row.get("skipped"):
        parts.append(f"{row['skipped']} skipped")
    return ", ".join(parts) or "-"


def render(report: dict) -> str:
    def s(v):
        return "-" if v is None else f"{v:.1f}"
    columns = ["role", "faults", "acked", "lost", "torn", "back", "rec p50 s", "rec max s",
               "manual", "stuck", "bounds", "answers", "seal"]
    rows = [{"role": r["role"], "faults": f"{r['faults']} ({r['kinds']})", "acked": r["acked"],
             "lost": r["lost"], "torn": r["torn"], "back": r["backwards"],
             "rec p50 s": s(r["recovery_p50_s"]), "rec max s": s(r["recovery_max_s"]),
             "manual": f"{r['manual']}"
                       + (f" ({r['unexpected']} unexpected)" if r["unexpected"] else ""),
             "stuck": f"{r['stuck']}"
                      + (f" ({r['stuck_known']} known)" if r["stuck_known"] else ""),
             "bounds": r["bounds"], "answers": r["answers"],
             "seal": _seal_column(r)} for r in report["table"]]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    out = [line.rstrip() for line in lines]
    for lab in report["labs"]:
        result = lab["result"] or {}
        if result.get("judged"):
            equal = {True: "equal", False: "DIFFER", None: "not compared"}[result["equal"]]
            out.append(f"lab {lab['lab']} ({lab['kind']}): drained "
                       f"{'yes' if result['drained'] else 'NO'}, volumes {equal}, final check "
                       f"{result['lost']} lost, {result['torn']} torn")
        else:
            out.append(f"lab {lab['lab']} ({lab['kind']}): not judged ({result.get('why')})")
    for rec in report["records"]:
        if rec.get("skipped"):
            out.append(f"skipped: lab {rec['lab']} {rec['role']} {rec['fault']}: "
                       f"{rec['skipped']}")
        if rec.get("refused") or rec.get("storm"):
            out.append(f"seal: lab {rec['lab']} {rec['role']} {rec['fault']}: refused "
                       f"{rec['refused'] or 'nothing'}, {rec['retransmits']} retransmissions"
                       + (" (a storm)" if rec["storm"] else ""))
        if rec["stuck"]:
            out.append(f"stuck: lab {rec['lab']} {rec['role']} {rec['fault']}"
                       + (f" (known: {rec['known']})" if rec["known"] else "") + ": "
                       + "; ".join(rec["why"]))
            out += [f"    {line}" for line in rec["state"]["shown"]]
    out.append(f"{sum(r['faults'] for r in report['table'] if r['role'] == 'all')} faults in "
               f"{report['duration_s']:.0f} s, seed {report['seed']}: "
               + ("PASS" if report["passed"] else "FAIL"))
    return "\n".join(out)
