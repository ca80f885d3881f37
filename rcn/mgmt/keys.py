"""The management server's log-transfer keys: generation, distribution, rotation (DESIGN.md 9).

What is keyed
-------------
* a **link key** per link: an unordered pair of log-transfer addresses that follow each
  other in some route's path (table 408) -- the hop layer's key between two neighbours;
* a **group key** per order guarantee group of the pairs -- the end-to-end key only the
  group's two edges hold.

A key is made (:func:`rcn.logxfer.keys.new_key`, 32 random bytes) when its link or group
first appears, as epoch 1, sending at once. Keys of a link that leaves every path are
kept (not sent to anyone, not rotated) so that the link, if it comes back, goes on from
its epochs; they go when an end is no longer any device's address. A group's keys go
with its last pair.

Who holds what (:meth:`KeyManager.ring_for`, the snapshot's ``"keys"``): a core the keys
of the links it is an end of, never a group key; an edge its links' keys and the keys of
the groups whose pairs have a storage attached to it (source or target).

Rotation
--------
Rotating a link or a group adds epoch n+1 as ``pending`` (accept-only: ``send`` false)
and publishes. Once every device that needs the key has acknowledged a snapshot version
holding it (its acknowledged version is at least the one the key was first published
in), or after ``activate_after`` seconds at most, epoch n+1 becomes ``send`` and the
epochs before it ``retiring`` (accept-only) for ``overlap`` seconds (``group_overlap``
for group keys: a source edge's retained entries stay sealed under the epoch they were
logged with), after which they are removed; each step publishes. Rotation runs every
``rotate_every`` seconds per link and group (from the newest epoch's making; 0: never)
and on demand (:meth:`KeyManager.rotate`: ``POST /api/v1/keys/rotate``, ``rcn key
rotate``). A link or group holds at most :data:`MAX_EPOCHS` epochs; one whose new epoch
is still pending is not rotated again.

State lives in the server's store (:meth:`rcn.mgmt.store.Store.save_keys`, the material
as hex in a 0600 database): a restarted server goes on with the same keys, deadlines
and pending versions. Every timer is on the injected clock. Key material never leaves
this module except in :meth:`KeyManager.ring_for` (the snapshots): :meth:`listing`,
the log lines and the counters name links, groups and epochs only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from twisted.logger import Logger

from rcn.logxfer.keys import KEY_SIZE, Key, KeyRing, link_name, new_key
from rcn.logxfer.routes import Address
from rcn.mgmt.errors import Conflict, NotFound, SettingsError

__all__ = ["KeyPolicy", "KeyManager", "Epoch", "LINK", "GROUP", "MAX_EPOCHS", "link_of"]

LINK, GROUP = "link", "group"
PENDING, SENDING, RETIRING = "pending", "send", "retiring"
STATES = (PENDING, SENDING, RETIRING)
MAX_EPOCHS = 8
_log = Logger()


@dataclass(frozen=True)
class KeyPolicy:
    """``[keys]`` of the server's file, in seconds (rcn.mgmt.config has each one's
    meaning)."""
    rotate_every: float = 86400.0
    overlap: float = 60.0
    group_overlap: float = 86400.0
    activate_after: float = 10.0


@dataclass
class Epoch:
    epoch: int
    material: bytes = field(repr=False)
    state: str
    created: float
    deadline: float | None = None     # pending: send by then; retiring: removed then
    version: int = 0                  # pending: the snapshot version first holding it

    def row(self, kind: str, name: str) -> tuple:
        return (kind, name, self.epoch, self.material.hex(), self.state, self.created,
                self.deadline, self.version)


def link_of(a: Address, b: Address) -> str:
    """The name of the link between ``a`` and ``b`` (either order): ``"A B"``."""
    first, second = link_name(a, b)
    return f"{first} {second}"


class KeyManager:
    """The keys of one management server (see the module doc). ``publish()`` gives the
    devices new snapshots and returns the snapshot version they carry; ``acked(device)``
    is the version a device holds (0: none); ``current()`` the server's version."""

    def __init__(self, clock, store, policy: KeyPolicy, *, publish: Callable[[], int],
                 acked: Callable[[str], int], current: Callable[[], int]):
        self.clock, self.store, self.policy = clock, store, policy
        self.publish, self.acked, self.current = publish, acked, current
        self.keys: dict[tuple[str, str], dict[int, Epoch]] = {}
        self.links: dict[str, tuple[Address, Address]] = {}    # in use: in some path
        self.devices: dict[str, str] = {}                      # address -> device ID
        self.groups: dict[int, frozenset[str]] = {}            # group -> its edges' IDs
        self.counters = dict.fromkeys(("generated", "rotations", "activated_by_acks",
                                       "activated_by_time", "retired"), 0)
        self._call = None
        self._busy = self._running = False
        self._load()

    # -- state -------------------------------------------------------------------------------
    def _load(self) -> None:
        where = f"settings database {getattr(self.store, 'path', '')}".rstrip()
        for kind, name, epoch, material, state, created, deadline, version in \
                self.store.key_rows():
            at = f"{where}: {kind} key {name!r} epoch {epoch}"
            try:
                raw = bytes.fromhex(material)
            except (TypeError, ValueError):
                raise ValueError(f"{at}: the key is not hex") from None
            if kind not in (LINK, GROUP) or state not in STATES or len(raw) != KEY_SIZE:
                raise ValueError(f"{at}: not a key row this server writes")
            self.keys.setdefault((kind, name), {})[epoch] = Epoch(
                epoch, raw, state, created, deadline, version)

    def _save(self) -> None:
        self.store.save_keys([e.row(kind, name) for (kind, name), epochs in
                              sorted(self.keys.items()) for e in epochs.values()])

    def _overlap(self, kind: str) -> float:
        return self.policy.group_overlap if kind == GROUP else self.policy.overlap

    def sync(self, paths: list[list[Address]], devices: dict[str, str],
             groups: dict[int, set[str]]) -> bool:
        """The links of ``paths`` (routes' log-transfer addresses), the devices by address
        and each group's edges: keys for new links and groups, none for gone ones. Does
        not publish (the caller's route change does). Returns whether keys changed."""
        self.devices = dict(devices)
        self.groups = {g: frozenset(edges) for g, edges in groups.items()}
        self.links = {}
        for path in paths:
            for a, b in zip(path, path[1:]):
                if a != b:
                    self.links[link_of(a, b)] = link_name(a, b)
        now, changed = self.clock.seconds(), False
        wanted = [(LINK, name) for name in self.links] + [(GROUP, str(g)) for g in self.groups]
        for kind, name in wanted:
            if (kind, name) not in self.keys:
                self.keys[(kind, name)] = {1: Epoch(1, new_key(1).material, SENDING, now)}
                self.counters["generated"] += 1
                _log.info("{kind} {name}: key epoch 1 made", kind=kind, name=name)
                changed = True
        for kind, name in list(self.keys):
            if not self._kept(kind, name):
                del self.keys[(kind, name)]
                _log.info("{kind} {name}: keys dropped (no longer in the settings)",
                          kind=kind, name=name)
                changed = True
        if changed:
            self._save()
        self._arm()
        return changed

    def _kept(self, kind: str, name: str) -> bool:
        if kind == GROUP:
            return name.isdigit() and int(name) in self.groups
        return all(end in self.devices for end in name.split(" "))

    def in_use(self, kind: str, name: str) -> bool:
        return name in self.links if kind == LINK else \
            name.isdigit() and int(name) in self.groups

    def needers(self, kind: str, name: str) -> set[str]:
        """The device IDs that hold the keys of ``kind`` ``name``."""
        if kind == GROUP:
            return set(self.groups.get(int(name), ()))
        return {self.devices[end] for end in name.split(" ") if end in self.devices}

    # -- what a device holds ------------------------------------------------------------------
    def ring_for(self, device_id: str, role: str, address: str) -> KeyRing:
        """The keys ``device_id`` needs (module doc); cores never get a group key."""
        ring = KeyRing()
        for name, (a, b) in self.links.items():
            if address in (str(a), str(b)):
                for e in self.keys.get((LINK, name), {}).values():
                    ring.add_link(a, b, Key(e.epoch, e.material, e.state == SENDING))
        if role == "edge":
            for group, edges in self.groups.items():
                if device_id in edges:
                    for e in self.keys.get((GROUP, str(group)), {}).values():
                        ring.add_group(group, Key(e.epoch, e.material, e.state == SENDING))
        return ring

    # -- rotation ---------------------------------------------------------------------------
    def rotate(self, *, link: tuple[str, str] | None = None, group: int | None = None,
               every: bool = False) -> dict:
        """Start rotating one link, one group or (``every``) all in use; a
        :class:`SettingsError` (400/404/409) names what cannot be rotated. Returns
        ``{"rotated": [...], "skipped": [...]}`` (``every``: those with a pending epoch
        or at :data:`MAX_EPOCHS` are skipped)."""
        if every:
            names = [(LINK, n) for n in sorted(self.links)] + \
                    [(GROUP, str(g)) for g in sorted(self.groups)]
        elif link is not None:
            names = [(LINK, self._link_named(link))]
        elif group is not None:
            if group not in self.groups:
                raise NotFound("group", f"group {group}: no pair has this order guarantee "
                                        f"group")
            names = [(GROUP, str(group))]
        else:
            raise SettingsError("body", "give a link, a group or all")
        rotated, skipped = [], []
        for kind, name in names:
            why = self._cannot_rotate(kind, name)
            if why is not None and not every:
                raise Conflict(kind, f"{kind} {name}: {why}")
            (skipped if why else rotated).append(
                {"kind": kind, "name": name, **({"reason": why} if why else {})})
        now = self.clock.seconds()
        fresh = [self._add_pending(r["kind"], r["name"], now) for r in rotated]
        for r, e in zip(rotated, fresh):
            r["epoch"] = e.epoch
        if fresh:
            self._stamp(fresh)
            self.tick()
        return {"rotated": rotated, "skipped": skipped}

    def _link_named(self, link) -> str:
        try:
            a, b = (Address.parse(text) for text in link)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SettingsError("link", f"link: expected two log-transfer addresses "
                                        f"HOST:PORT: {exc}") from None
        name = link_of(a, b)
        if name not in self.links:
            raise NotFound("link", f"link {name}: no route's path has these neighbours")
        return name

    def _cannot_rotate(self, kind: str, name: str) -> str | None:
        epochs = self.keys.get((kind, name), {})
        pending = [e.epoch for e in epochs.values() if e.state == PENDING]
        if pending:
            return f"epoch {pending[0]} is still being distributed; rotate again once it sends"
        if len(epochs) >= MAX_EPOCHS:
            return (f"holds {len(epochs)} epochs already (at most {MAX_EPOCHS}); rotate again "
                    f"when old ones have been retired")
        return None

    def _add_pending(self, kind: str, name: str, now: float) -> Epoch:
        epochs = self.keys.setdefault((kind, name), {})
        n = max(epochs, default=0) + 1
        epoch = epochs[n] = Epoch(n, new_key(n, send=False).material, PENDING, now,
                                  now + self.policy.activate_after)
        self.counters["rotations"] += 1
        _log.info("{kind} {name}: key epoch {epoch} distributed, accept-only", kind=kind,
                  name=name, epoch=n)
        return epoch

    def _stamp(self, fresh: list[Epoch]) -> None:
        """Publish a change; stamp the new pending epochs with the version carrying them."""
        version = self.publish()
        for e in fresh:
            e.version = version
        self._save()

    def acknowledged(self, device_id: str, version: int) -> None:
        """A device acknowledged (or registered holding) ``version``."""
        self.tick()

    def running(self, on: bool) -> None:
        """Timers on (what is due is done at once: a restart's deadlines may have passed)
        or off (the server stops; the state stays in the store)."""
        self._running = on
        if on:
            self.tick()
        else:
            self._arm()

    def tick(self) -> None:
        """Activate, retire and rotate what is due, publishing each step, until nothing
        more is; then the timer for what comes next. A call while one runs returns at
        once: the running one looks again before it ends."""
        if self._busy:
            return
        self._busy = True
        try:
            while self._step():
                pass
        finally:
            self._busy = False
        self._arm()

    def _step(self) -> bool:
        now, changed, fresh = self.clock.seconds(), False, []
        for (kind, name), epochs in list(self.keys.items()):
            for e in sorted(epochs.values(), key=lambda e: e.epoch):
                if e.state == PENDING and e.version:
                    how = self._ready(kind, name, e, now)
                    if how:
                        self._activate(kind, name, epochs, e, now, how)
                        changed = True
                elif e.state == RETIRING and e.deadline is not None and now >= e.deadline:
                    del epochs[e.epoch]
                    self.counters["retired"] += 1
                    _log.info("{kind} {name}: key epoch {epoch} retired", kind=kind, name=name,
                              epoch=e.epoch)
                    changed = True
            due = self._due(kind, name, now)
            if due is not None and due <= now:
                fresh.append(self._add_pending(kind, name, now))
        if fresh:
            self._stamp(fresh)
        elif changed:
            self.publish()
            self._save()
        return changed or bool(fresh)

    def _ready(self, kind: str, name: str, e: Epoch, now: float) -> str | None:
        current = self.current()
        if all(e.version <= self.acked(d) <= current for d in self.needers(kind, name)):
            return "acks"
        if e.deadline is not None and now >= e.deadline:
            return "time"
        return None

    def _activate(self, kind, name, epochs: dict[int, Epoch], e: Epoch, now: float,
                  how: str) -> None:
        for old in epochs.values():
            if old.state == SENDING:
                old.state, old.deadline = RETIRING, now + self._overlap(kind)
        e.state, e.deadline = SENDING, None
        self.counters["activated_by_" + how] += 1
        _log.info("{kind} {name}: key epoch {epoch} sends ({why})", kind=kind, name=name,
                  epoch=e.epoch, why="every device has it" if how == "acks" else
                  f"not every device acknowledged it within {self.policy.activate_after:g} s")

    def _due(self, kind: str, name: str, now: float) -> float | None:
        """When ``kind`` ``name`` is next rotated on schedule (None: not scheduled)."""
        epochs = self.keys.get((kind, name), {})
        if self.policy.rotate_every <= 0 or not self.in_use(kind, name) or not epochs \
                or any(e.state == PENDING for e in epochs.values()) \
                or len(epochs) >= MAX_EPOCHS:
            return None
        return max(e.created for e in epochs.values()) + self.policy.rotate_every

    def _next_event(self, now: float) -> float | None:
        times = [e.deadline for epochs in self.keys.values() for e in epochs.values()
                 if e.deadline is not None and e.state in (PENDING, RETIRING)]
        times += [t for t in (self._due(k, n, now) for k, n in self.keys) if t is not None]
        return min(times, default=None)

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._running:
            return
        now = self.clock.seconds()
        when = self._next_event(now)
        if when is not None:
            self._call = self.clock.callLater(max(0.0, when - now), self.tick)

    # -- what the operator sees ---------------------------------------------------------------
    def listing(self) -> dict:
        """Links and groups with their epochs, states and ages -- never key material."""
        now = self.clock.seconds()
        links, groups = [], []
        for (kind, name), epochs in sorted(self.keys.items()):
            due = self._due(kind, name, now)
            row = {"in_use": self.in_use(kind, name),
                   "holders": sorted(self.needers(kind, name)) if self.in_use(kind, name)
                   else [],
                   "next_rotation_in_s": None if due is None else max(0.0, due - now),
                   "epochs": [self._epoch_row(e, now) for e in
                              sorted(epochs.values(), key=lambda e: e.epoch)]}
            if kind == LINK:
                a, b = name.split(" ")
                links.append({"a": a, "b": b, **row})
            else:
                groups.append({"group": int(name), **row})
        p = self.policy
        return {"links": links, "groups": groups,
                "schedule": {"rotate_every_s": p.rotate_every, "overlap_s": p.overlap,
                             "group_overlap_s": p.group_overlap,
                             "activate_after_s": p.activate_after}}

    @staticmethod
    def _epoch_row(e: Epoch, now: float) -> dict:
        return {"epoch": e.epoch, "state": e.state, "send": e.state == SENDING,
                "accept": True, "age_s": now - e.created,
                "deadline_in_s": None if e.deadline is None else max(0.0, e.deadline - now),
                "version": e.version or None}
