"""The pair table 411 as an edge holds it, and the order guarantee ID policies (【0063】【0064】).

DESIGN.md 4: the table's fields, the pair states (``rcn.pairstate``) and the ID policies
A-1, A-2 and B.

A :class:`PairRow` is one pair as this edge sees it: its identity (a
:class:`PairEntry`), which end of it is attached here (``side``), its state
(``rcn.pairstate``), the source volume's geometry when known (PAIR_CREATE
carries it; a configured pair may name it), and -- at the source edge -- the
differential bitmap 727 of the entries failure Suspend dropped (【0084】).

A pair configured in the edge file (policy B, or set up before the RCN) starts
in the state the file gives (Duplex by default); a pair created by PAIR_CREATE
starts in Simplex. The target edge also learns pairs from the entries that
reach it: a WR for a pair it has no row for makes one in Duplex (the source edge
only sends WRs for replicating pairs).

Dropped entries become bitmap bits at once when the geometry is known; when it is
not (a configured pair without ``capacity``), their extents are kept until the
target's DPOK brings one (:meth:`PairRow.bitmap_727`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.groups import POLICIES, group_id
from rcn.pairstate import Event, PairState, next_state


@dataclass(frozen=True)
class PairEntry:
    """A pair's identity: the row of table 411 as an edge needs it."""
    source_wwn: int
    source_lun: int
    target_wwn: int
    target_lun: int
    group: int
    customer: str = ""

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.source_wwn, self.target_wwn, self.target_lun)

    def describe(self) -> str:
        return (f"pair {format_wwn(self.source_wwn)} LUN {self.source_lun} -> "
                f"{format_wwn(self.target_wwn)} LUN {self.target_lun}")


@dataclass(eq=False)
class PairRow:
    entry: PairEntry
    side: str                                    # "source" or "target"
    state: PairState = PairState.DUPLEX
    geometry: tuple[int, int, int] | None = None   # capacity, block size, track size
    bitmap: DifferentialBitmap | None = None     # 727 (source side)
    _extents: list = field(default_factory=list, repr=False)   # dropped, geometry unknown
    whole: bool = False                          # 727 is every track (the log was lost)
    busy: str | None = None                      # the control command under way
    last_error: str | None = None                # why the pair last went to failure Suspend

    def apply(self, event: Event) -> PairState:
        """Move on ``event``; ``PairStateError`` (naming the pair and state) if not allowed."""
        self.state = next_state(self.state, event, f"{self.entry.describe()} at the "
                                                   f"{self.side} edge")
        return self.state

    def dropped(self, lba: np.ndarray, blocks: np.ndarray, block_size: int = 512) -> None:
        """Entries failure Suspend took out of the log: their tracks go into 727."""
        if not len(lba):
            return
        if self.geometry is None:
            self._extents.append((lba.astype(np.uint64), blocks.astype(np.uint64), block_size))
            return
        if self.bitmap is None:
            self.bitmap = DifferentialBitmap(self.geometry[0], self.geometry[2])
        self.bitmap.mark_extents(lba.astype(np.uint64), blocks.astype(np.uint64), block_size)

    def lost_everything(self) -> None:
        """Every write of the pair may be missing at the target (a memory-mode log lost in
        a restart): 727 is the whole volume."""
        self.whole = True
        if self.geometry is not None:
            self.bitmap = DifferentialBitmap(self.geometry[0], self.geometry[2])
            self.bitmap.set_range(0, self.bitmap.track_count)

    def bitmap_727(self, volume_bytes: int, track_size: int) -> DifferentialBitmap:
        """727 in the target's DPOK geometry, with the kept extents marked into it;
        ``ValueError`` if 727 already has another geometry."""
        if self.whole:
            out = DifferentialBitmap(volume_bytes, track_size)
            out.set_range(0, out.track_count)
            return out
        if self.bitmap is not None:
            if self.bitmap.geometry != (volume_bytes, track_size):
                raise ValueError(f"{self.entry.describe()}: bitmap 727 is "
                                 f"{self.bitmap.geometry}, the target's "
                                 f"{(volume_bytes, track_size)} (volume bytes, track size)")
            out = self.bitmap.copy()
        else:
            out = DifferentialBitmap(volume_bytes, track_size)
        for lba, blocks, block_size in self._extents:
            out.mark_extents(lba, blocks, block_size)
        return out

    def clear_727(self) -> None:
        self.bitmap = None
        self.whole = False
        self._extents.clear()

    def dirty_tracks(self) -> int:
        return self.bitmap.popcount() if self.bitmap is not None else 0

    def describe(self) -> dict:
        e = self.entry
        return {"source_wwn": format_wwn(e.source_wwn), "source_lun": e.source_lun,
                "target_wwn": format_wwn(e.target_wwn), "target_lun": e.target_lun,
                "group": e.group, "customer": e.customer, "side": self.side,
                "state": self.state.value, "bitmap_727_tracks": self.dirty_tracks(),
                "busy": self.busy, "last_error": self.last_error}


class EdgePairs:
    """The rows of one edge, by (source WWN, target WWN, target LUN).

    With a ``path``, :meth:`save` keeps the rows (states, geometry, 727) in a JSON
    file written atomically, and :meth:`load` brings them back after a restart:
    pair changes are rare, so a plain write + fsync + rename per change is enough.
    """

    def __init__(self, policy: str = "B", path: str | None = None):
        if policy not in POLICIES:
            raise ValueError(f"group policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self.path = path
        self.rows: dict[tuple[int, int, int], PairRow] = {}
        # per-group pair control marks that must survive a restart (rcn.edge.control)
        self.failed_groups: set[int] = set()      # source side: dropped, notice queued
        self.restart_pending: dict[int, int] = {}  # group -> mark: next CTRL has RESTART
        self.sok_sent: set[int] = set()           # source side: failover answered
        #: source side: the target edge's time (io_time_ns) of the last failover SUSPEND
        #: acted on, per group: a copy of it, or of an older one, is a replay
        self.failover_seen: dict[int, int] = {}
        self.restarted = False                    # load() found a pair file

    def save(self) -> None:
        if self.path is None:
            return
        rows = []
        for row in self.rows.values():
            e = row.entry
            rows.append({"entry": [e.source_wwn, e.source_lun, e.target_wwn, e.target_lun,
                                   e.group, e.customer], "side": row.side,
                         "state": row.state.value, "geometry": row.geometry,
                         "bitmap": row.bitmap.serialize().hex() if row.bitmap else None,
                         "extents": [[lba.tolist(), blocks.tolist(), bs]
                                     for lba, blocks, bs in row._extents],
                         "last_error": row.last_error, "whole": row.whole})
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": 1, "rows": rows,
                       "failed_groups": sorted(self.failed_groups),
                       "sok_sent": sorted(self.sok_sent),
                       "restart_pending": sorted(self.restart_pending.items()),
                       "failover_seen": sorted(self.failover_seen.items())}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> int:
        """Rows from the file (they replace configured rows of the same pair); how many."""
        if self.path is None or not os.path.exists(self.path):
            return 0
        self.restarted = True
        with open(self.path) as f:
            doc = json.load(f)
        for item in doc["rows"]:
            entry = PairEntry(*item["entry"])
            row = PairRow(entry, item["side"], PairState(item["state"]),
                          tuple(item["geometry"]) if item["geometry"] else None)
            if item["bitmap"]:
                row.bitmap = DifferentialBitmap.deserialize(bytes.fromhex(item["bitmap"]))
            row._extents = [(np.array(a, np.uint64), np.array(b, np.uint64), bs)
                            for a, b, bs in item["extents"]]
            row.last_error = item.get("last_error")
            row.whole = bool(item.get("whole", False))
            self.rows[entry.key] = row
        self.failed_groups.update(doc.get("failed_groups", ()))
        self.sok_sent.update(doc.get("sok_sent", ()))
        self.restart_pending.update((group, mark) for group, mark in
                                    doc.get("restart_pending", ()))
        self.failover_seen.update((group, when) for group, when in
                                  doc.get("failover_seen", ()))
        return len(doc["rows"])

    def add(self, row: PairRow) -> PairRow:
        if row.entry.key in self.rows:
            raise ValueError(f"{row.entry.describe()} is already in the pair table")
        self.rows[row.entry.key] = row
        return row

    def remove(self, row: PairRow) -> None:
        self.rows.pop(row.entry.key, None)

    def find(self, source_wwn: int, target_wwn: int, target_lun: int) -> PairRow | None:
        return self.rows.get((source_wwn, target_wwn, target_lun))

    def in_group(self, group: int, side: str | None = None) -> list[PairRow]:
        return [r for r in self.rows.values()
                if r.entry.group == group and (side is None or r.side == side)]

    def group_sources(self, group: int) -> set[tuple[int, int]]:
        return {(r.entry.source_wwn, r.entry.target_wwn) for r in self.rows.values()
                if r.entry.group == group}

    def group_for(self, source_wwn: int, target_wwn: int, source_edge, target_edge) -> int:
        """The order guarantee ID policy A-1 or A-2 gives a new pair (B gives none: 0)."""
        return group_id(self.policy, 0, source_wwn, target_wwn, source_edge, target_edge)

    def __iter__(self):
        return iter(self.rows.values())

    def __len__(self):
        return len(self.rows)
