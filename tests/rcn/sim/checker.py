"""Prefix consistency (DESIGN.md invariant 1), checked at every step of a run.

The checker keeps, per order guarantee group, the group's writes in sequence
order as the source edge logged them, and a *shadow*: the target volumes as
they must look after the first ``k`` of those writes. After every change to a
target volume, :meth:`PrefixChecker.check` advances ``k`` (never back) until
the shadow equals the real target volumes; if no prefix matches, the
invariant is broken and the failure names the group, ``k`` and the first
differing volume and block.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class PrefixViolation(AssertionError):
    pass


@dataclass
class _Group:
    writes: dict[int, tuple[tuple[int, int], int, bytes]] = field(default_factory=dict)
    shadow: dict[tuple[int, int], bytearray] = field(default_factory=dict)
    k: int = 0
    checks: int = 0


class PrefixChecker:
    """``volumes``: (wwn, lun) -> bytearray of every target volume (the real ones)."""

    def __init__(self, volumes: dict[tuple[int, int], bytearray], block_size: int = 512):
        self.volumes = volumes
        self.block_size = block_size
        self.groups: dict[int, _Group] = {}
        self.volume_group: dict[tuple[int, int], int] = {}
        #: the first violation seen (the code under test may swallow the exception)
        self.violation: PrefixViolation | None = None

    def logged(self, group: int, sequence: int, target: tuple[int, int], lba: int,
               data: bytes) -> None:
        """The source edge logged write ``sequence`` of ``group`` to ``target`` volume."""
        g = self.groups.setdefault(group, _Group())
        if sequence in g.writes:
            raise PrefixViolation(f"group {group}: sequence {sequence} logged twice")
        g.writes[sequence] = (target, lba, bytes(data))
        if target not in g.shadow:
            g.shadow[target] = bytearray(len(self.volumes[target]))
            self.volume_group[target] = group

    def check(self, target: tuple[int, int]) -> int:
        """After a change to ``target``: its group's k (raises PrefixViolation)."""
        group = self.volume_group.get(target)
        if group is None:
            raise PrefixViolation(f"volume {target} changed but no logged write targets it")
        g = self.groups[group]
        g.checks += 1
        while True:
            if all(g.shadow[v] == self.volumes[v] for v in g.shadow):
                return g.k
            if g.k + 1 not in g.writes:
                self.violation = self.violation or PrefixViolation(self._explain(group, g))
                raise self.violation
            volume, lba, data = g.writes[g.k + 1]
            at = lba * self.block_size
            g.shadow[volume][at:at + len(data)] = data
            g.k += 1

    def _explain(self, group: int, g: _Group) -> str:
        for v in g.shadow:
            if g.shadow[v] != self.volumes[v]:
                real, shadow = self.volumes[v], g.shadow[v]
                first = next(i for i in range(len(real)) if real[i] != shadow[i])
                return (f"group {group}: target volume {v} equals no prefix of the group's "
                        f"{len(g.writes)} logged writes at or after k={g.k}: block "
                        f"{first // self.block_size} differs")
        return f"group {group}: no prefix matches"

    def prefix(self, group: int) -> int:
        return self.groups[group].k

    def complete(self, group: int) -> bool:
        g = self.groups[group]
        return g.k == len(g.writes) and self.check(next(iter(g.shadow))) == len(g.writes)
