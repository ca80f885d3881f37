"""The array's pair table (table 411 as an array holds it).

A row joins one of this array's volumes (``lun``) to a partner array's volume
(``partner_wwpn``, ``partner_lun``). ``role`` says which end this array is:
``"source"`` (host writes replicate from here; the differential bitmap is the
patent's 1211) or ``"target"`` (the partner's writes arrive here; bitmap 1213,
which records this array's own host writes while the pair is suspended).

The bitmap covers ``capacity`` bytes -- the source volume's size, which the
target learns from PAIR_CREATE's parameters -- in tracks of ``track_size``
bytes, so both ends' bitmaps have the same geometry and merge directly.

States and events are :mod:`rcn.pairstate`'s (``PairState`` is re-exported
here); :meth:`Pair.apply` is the only way a row changes state, and a refused
event raises :class:`rcn.pairstate.PairStateError` naming the pair and its
state. Rows are added and removed at run time (pair-create, delete).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import DEFAULT_TRACK_SIZE, DifferentialBitmap
from rcn.pairstate import REPLICATING, Event, PairState, PairStateError, next_state

__all__ = ["Pair", "PairTable", "PairState", "PairStateError", "CopyProgress", "ROLES",
           "DEFAULT_TRACK_SIZE"]

ROLES = ("source", "target")
MODES = ("sync", "async")


@dataclass
class CopyProgress:
    """One copy run: the initial copy, or a resync's differential copy."""
    kind: str                      # "initial" or "resync"
    bytes_total: int               # what the run set out to copy
    tracks: int                    # bitmap tracks those bytes touch
    started: float
    bytes_sent: int = 0            # read and sent as RIO WRs
    bytes_copied: int = 0          # of those, acknowledged (WROK)
    finished: float | None = None
    outcome: str = "running"       # running | done | stopped | failed

    @property
    def fraction(self) -> float:
        return self.bytes_copied / self.bytes_total if self.bytes_total else 1.0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "bytes_total": self.bytes_total, "tracks": self.tracks,
                "bytes_sent": self.bytes_sent, "bytes_copied": self.bytes_copied,
                "started": self.started, "finished": self.finished, "outcome": self.outcome}


@dataclass(eq=False)
class Pair:
    lun: int
    partner_wwpn: int
    partner_lun: int
    group: int
    state: PairState
    mode: str = "sync"            # "sync" or "async" (source side)
    queue_limit: int = 1024       # async: RIO WRs outstanding at most
    role: str = "source"          # "source" or "target" (the partner writes to this volume)
    capacity: int = 0             # bytes the pair covers (the source volume's size)
    track_size: int = DEFAULT_TRACK_SIZE
    bitmap: DifferentialBitmap | None = None
    # run-time figures, not configuration
    last_error: str | None = None
    copy: CopyProgress | None = None
    copies_completed: int = 0
    bytes_copied_total: int = 0
    residual: dict | None = None  # the last residual report (failover, takeover)
    busy: str | None = None       # the host command in progress, if any
    link_lost: bool = False       # failure Suspend because RIOs got no answer (link/edge gone)
    outstanding: int = 0          # async: RIO WRs in flight
    waiting: list = field(default_factory=list)   # async: Deferreds of writes waiting a place

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"pair LUN {self.lun}: role {self.role!r} is not one of "
                             f"{', '.join(ROLES)}")
        if self.mode not in MODES:
            raise ValueError(f"pair LUN {self.lun}: mode {self.mode!r} is not one of "
                             f"{', '.join(MODES)}")
        if self.bitmap is None:
            if self.capacity <= 0:
                raise ValueError(f"pair LUN {self.lun}: capacity {self.capacity} must be > 0")
            self.bitmap = DifferentialBitmap(self.capacity, self.track_size)
        else:
            self.capacity, self.track_size = self.bitmap.geometry

    @property
    def name(self) -> str:
        arrow = "->" if self.role == "source" else "<-"
        return (f"pair LUN {self.lun} ({self.role}, {arrow} {format_wwn(self.partner_wwpn)} "
                f"LUN {self.partner_lun})")

    @property
    def bitmap_name(self) -> str:
        """The patent's number for this end's bitmap."""
        return "1211" if self.role == "source" else "1213"

    @property
    def replicating(self) -> bool:
        """True when host writes to this volume go to the partner."""
        return self.role == "source" and self.state in REPLICATING

    def apply(self, event: Event) -> PairState:
        """Move to the state after ``event``; PairStateError (state unchanged) if refused."""
        self.state = next_state(self.state, event, self.name)
        return self.state

    # -- the differential bitmap, in bytes ---------------------------------
    def mark(self, offset: int, length: int) -> None:
        """Dirty the tracks under bytes ``offset..offset+length`` (clipped to the pair)."""
        end = min(offset + length, self.capacity)
        if length <= 0 or offset >= end:
            return
        first, last = offset // self.track_size, (end - 1) // self.track_size
        self.bitmap.set_range(first, last - first + 1)

    def dirty_bytes(self) -> int:
        """Bytes a differential copy of this end's bitmap would send (last track clipped)."""
        count = self.bitmap.popcount()
        if count == 0:
            return 0
        total = count * self.track_size
        last = self.bitmap.track_count - 1
        if int(self.bitmap.words[last >> 6]) >> (last & 63) & 1:
            total -= self.bitmap.track_count * self.track_size - self.capacity
        return total

    def as_dict(self) -> dict:
        copy = self.copy
        return {"lun": self.lun, "role": self.role, "partner_wwpn": format_wwn(self.partner_wwpn),
                "partner_lun": self.partner_lun, "group": self.group, "state": self.state.value,
                "mode": self.mode, "queue_limit": self.queue_limit, "capacity": self.capacity,
                "track_size": self.track_size, "bitmap": self.bitmap_name,
                "dirty_tracks": self.bitmap.popcount(), "dirty_bytes": self.dirty_bytes(),
                "bytes_to_copy": copy.bytes_total if copy else None,
                "bytes_copied": copy.bytes_copied if copy else None,
                "copy_progress": round(copy.fraction, 6) if copy else None,
                "copy": copy.as_dict() if copy else None,
                "copies_completed": self.copies_completed,
                "bytes_copied_total": self.bytes_copied_total,
                "last_error": self.last_error, "residual": self.residual, "busy": self.busy,
                "link_lost": self.link_lost}


class PairTable:
    """Rows by LUN: at most one pair per volume."""

    def __init__(self, pairs=()):
        self._by_lun: dict[int, Pair] = {}
        for pair in pairs:
            self.add(pair)

    @classmethod
    def from_config(cls, pair_configs, capacities: dict[int, int],
                    track_size: int = DEFAULT_TRACK_SIZE) -> "PairTable":
        """Rows from ``[[pair]]`` tables; ``capacities``: volume sizes by LUN. A pair's own
        ``track_size`` (when it has one) wins over ``track_size``."""
        return cls(Pair(p.lun, p.partner_wwpn, p.partner_lun, p.group, PairState(p.state), p.mode,
                        p.queue_limit, p.role, capacities[p.lun],
                        getattr(p, "track_size", None) or track_size)
                   for p in pair_configs)

    def add(self, pair: Pair) -> None:
        if pair.lun in self._by_lun:
            raise ValueError(f"LUN {pair.lun} is already in a pair "
                             f"({self._by_lun[pair.lun].name})")
        self._by_lun[pair.lun] = pair

    def remove(self, lun: int) -> Pair:
        return self._by_lun.pop(lun)

    def for_lun(self, lun: int) -> Pair | None:
        return self._by_lun.get(lun)

    def partners(self) -> set[int]:
        """WWNs of the partner arrays this array logs in to (as source or target)."""
        return {p.partner_wwpn for p in self._by_lun.values()}

    def __iter__(self):
        return iter(sorted(self._by_lun.values(), key=lambda p: p.lun))

    def __len__(self):
        return len(self._by_lun)
