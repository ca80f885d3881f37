"""The simulation's keys: what a management server would hand each device, and rotations.

Every device holds the link keys of the links its routes use (a core: only those -- never
a group key), every edge the keys of the groups it serves (DESIGN.md 9). A rotation goes
the way the management server's does (issue 17): first every holder *accepts* the new
epoch, then every holder *sends* with it, then -- after an overlap in which both are
accepted -- the old epoch is *retired*. Each step is applied to every device at once
(:meth:`SimKeys.rotate`); a test may run the workload between the steps.

Groups made while a simulation runs (pair-create picks a group by policy) get their key
the first time an edge seals for one, as a management server makes one with the pair:
every edge (``edges``) holds it from then on. Opening never makes one: a group id off
the wire that no edge sealed for stays ``e2e_unknown_key``.
"""

from __future__ import annotations

from rcn.logxfer.keys import Key, KeyRing, link_name, new_key
from rcn.logxfer.routes import Address

ACCEPT, SEND, RETIRE = "accept", "send", "retire"


class SimKeys:
    """Keys of ``links`` (pairs of addresses) and ``groups`` (id -> the edges holding them)."""

    def __init__(self, links, groups: dict[int, tuple[Address, ...]], edges=()):
        self.links = {link_name(a, b): {1: new_key(1)} for a, b in links}
        self.groups = {g: {1: new_key(1)} for g in groups}
        self.group_holders = {g: tuple(holders) for g, holders in groups.items()}
        self.edges = tuple(edges)
        self.devices: dict[Address, list] = {}     # address -> the seals to tell (set_ring)
        self.epoch = 1
        self.rotations: list[str] = []

    @classmethod
    def for_paths(cls, paths, groups: dict[int, tuple[Address, ...]]) -> "SimKeys":
        """Keys of the links of ``paths``; their ends are the edges."""
        links = {link_name(a, b) for path in paths for a, b in zip(path, path[1:])}
        edges = {end for path in paths for end in (path[0], path[-1])}
        return cls(sorted(links), groups, sorted(edges))

    def add_group(self, group: int) -> None:
        """A key for a new group, held by every edge (told at once)."""
        if group not in self.groups:
            self.groups[group] = {self.epoch: new_key(self.epoch)}
            self.group_holders[group] = self.edges
            self.push()

    def ring_of(self, me: Address) -> KeyRing:
        ring = _Ring(self) if me in self.edges else KeyRing()
        for (a, b), keys in self.links.items():
            if me in (a, b):
                for key in keys.values():
                    ring.add_link(a, b, key)
        for group, keys in self.groups.items():
            if me in self.group_holders[group]:
                for key in keys.values():
                    ring.add_group(group, key)
        return ring

    def attach(self, me: Address, *seals) -> KeyRing:
        """``me``'s ring now, and its seals (HopSeal, GroupSeal) told of every rotation."""
        self.devices.setdefault(me, []).extend(seals)
        return self.ring_of(me)

    def _every_key_set(self):
        yield from self.links.values()
        yield from self.groups.values()

    def rotate(self, step: str, devices=None) -> None:
        """One step of a rotation of every link and group key, told to ``devices`` (their
        addresses; every device when None -- a test of a botched rotation tells only
        some, and :meth:`push` tells the rest later)."""
        new, old = self.epoch + 1, self.epoch
        for keys in self._every_key_set():
            if step == ACCEPT:
                keys[new] = new_key(new, send=False)
            elif step == SEND:
                keys[new] = Key(new, keys[new].material, True)
            elif step == RETIRE:
                del keys[old]
            else:
                raise ValueError(f"rotation step {step!r}")
        if step == RETIRE:
            self.epoch = new
        self.rotations.append(step)
        self.push(devices)

    def push(self, devices=None) -> None:
        for me, seals in self.devices.items():
            if devices is not None and me not in devices:
                continue
            ring = self.ring_of(me)
            for seal in seals:
                seal.set_ring(ring)

    def epochs_of(self, me: Address) -> dict:
        return self.ring_of(me).epochs()


class _Ring(KeyRing):
    """An edge's ring: sealing for a group without a key makes one
    (:meth:`SimKeys.add_group`)."""

    def __init__(self, keys: SimKeys):
        super().__init__()
        self._keys = keys

    def group_send_key(self, group: int) -> Key | None:
        if group not in self.groups:
            self._keys.add_group(group)
            self.groups[group] = dict(self._keys.groups[group])
        return super().group_send_key(group)
