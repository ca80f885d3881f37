"""The array's pair table (table 411 as the array holds it).

A pair joins one of this array's volumes (the source) to a partner array's
volume (the target) within an order guarantee group. The states are those of
DESIGN.md section 4; this issue only declares them from the configuration —
the transitions (creation, initial copy, suspend, resync, takeover) arrive
with the pair lifecycle issue, which extends :class:`PairTable`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from datapath.frames.names import format_wwn


class PairState(enum.Enum):
    SIMPLEX = "simplex"
    INITIAL_COPYING = "initial-copying"
    DUPLEX = "duplex"
    DUPLEX_PENDING = "duplex-pending"
    SUSPENDING = "suspending"
    SUSPEND = "suspend"
    FAILURE_SUSPEND = "failure-suspend"


#: states in which a host write to the source is sent to the partner
REPLICATING = frozenset({PairState.DUPLEX})


@dataclass
class Pair:
    lun: int
    partner_wwpn: int
    partner_lun: int
    group: int
    state: PairState
    mode: str = "sync"            # "sync" or "async"
    queue_limit: int = 1024
    role: str = "source"          # "source" or "target" (the partner writes to this volume)

    @property
    def replicating(self) -> bool:
        return self.role == "source" and self.state in REPLICATING

    def as_dict(self) -> dict:
        return {"lun": self.lun, "partner_wwpn": format_wwn(self.partner_wwpn),
                "partner_lun": self.partner_lun, "group": self.group, "state": self.state.value,
                "mode": self.mode, "queue_limit": self.queue_limit, "role": self.role}


class PairTable:
    """Pairs by source LUN; at most one pair per volume."""

    def __init__(self, pairs=()):
        self._by_lun: dict[int, Pair] = {}
        for pair in pairs:
            self.add(pair)

    @classmethod
    def from_config(cls, pair_configs) -> "PairTable":
        return cls(Pair(p.lun, p.partner_wwpn, p.partner_lun, p.group, PairState(p.state), p.mode,
                        p.queue_limit, p.role) for p in pair_configs)

    def add(self, pair: Pair) -> None:
        if pair.lun in self._by_lun:
            raise ValueError(f"LUN {pair.lun} is already in a pair")
        self._by_lun[pair.lun] = pair

    def for_lun(self, lun: int) -> Pair | None:
        return self._by_lun.get(lun)

    def partners(self) -> set[int]:
        """WWNs of the partner arrays this array logs in to (as source or target)."""
        return {p.partner_wwpn for p in self._by_lun.values()}

    def __iter__(self):
        return iter(sorted(self._by_lun.values(), key=lambda p: p.lun))

    def __len__(self):
        return len(self._by_lun)
