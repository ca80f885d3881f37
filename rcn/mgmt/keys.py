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
and publishes. Epoch n+1 becomes ``send`` only once every device that needs the key
(:meth:`KeyManager.needers`) has acknowledged a snapshot version holding it (at least
the one it was first published in) -- never on a timer: a device cut off from the
management server but still on the data plane would otherwise see its neighbours seal
under an epoch it never got. The epochs before it become ``retiring`` (accept-only),
stamped with the snapshot version that publishes the activation (the first in which
epoch n+1 sends; kept in :attr:`Epoch.version`). A retiring epoch is removed once its
overlap (``overlap`` seconds; ``group_overlap`` for group keys: a source edge's retained
entries stay sealed under the epoch they were logged with) has passed *and* every
device that needs it has acknowledged a version at least that stamp -- i.e. sends under
the successor; a device still sealing with it is never refused. Each step publishes.

No timer ever makes an epoch send or go: the clock only holds a retirement back (the
overlap), rotates on schedule, and makes the server speak up: a pending epoch not
acknowledged by everyone ``warn_after`` seconds after it was made, and a retiring epoch
kept past its overlap, are logged once each (a warning naming the devices; counters
``late_activations`` and ``late_retirements``), and :meth:`listing` names them
(``waiting_for``) at any time. A device deleted from the settings (or no
longer an edge of the group) stops being needed, so it never holds a key back.

Rotation runs every ``rotate_every`` seconds per link and group (from the newest epoch's
making; 0: never) and on demand (:meth:`KeyManager.rotate`: ``POST
/api/v1/keys/rotate``, ``rcn key rotate``). A link or group holds at most
:data:`MAX_EPOCHS` epochs; one whose new epoch is still pending is not rotated again
(neither on schedule nor on demand), so a device that never acknowledges holds one
link's or group's rotation at one pending epoch, not a growing pile.

State lives in the server's store (:meth:`rcn.mgmt.store.Store.save_keys`, the material
as hex in a 0600 database): a restarted server goes on with the same keys, deadlines,
pending versions and retiring stamps (a retiring row written by a server before the
stamps holds its own pending version there, or 0, and waits only for that); the
warnings are given again once per epoch after a restart. Every timer is on the injected
clock. Key material never leaves this module except in :meth:`KeyManager.ring_for` (the
snapshots): :meth:`listing`, the log lines and the counters name links, groups, epochs
and device IDs only.
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
    warn_after: float = 10.0


@dataclass
class Epoch:
    epoch: int
    material: bytes = field(repr=False)
    state: str
    created: float
    #: pending: warn then if not every device has it; retiring: removed no earlier
    deadline: float | None = None
    #: pending: the snapshot version first holding it; retiring: the version in which its
    #: successor first sends (removed once every device acknowledged that one)
    version: int = 0

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
        self.counters = dict.fromkeys(("generated", "rotations", "activated", "retired",
                                       "late_activations", "late_retirements"), 0)
        self._warned: set[tuple[str, str, int, str]] = set()   # (kind, name, epoch, state)
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
        self._warned = {w for w in self._warned if w[:2] in self.keys}
        self._arm(soon=True)        # a device gone may have been the last one waited for
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

    def waiting_for(self, kind: str, name: str, e: Epoch) -> list[str]:
        """The devices ``e`` waits for: pending, those that have not acknowledged a
        snapshot holding it; retiring, those that have not acknowledged the one in which
        its successor sends; sending, none. (An acknowledged version above the server's
        own is no acknowledgement.)"""
        if e.state == SENDING:
            return []
        current = self.current()
        return sorted(d for d in self.needers(kind, name)
                      if not e.version <= self.acked(d) <= current)

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
        pending = [e for e in epochs.values() if e.state == PENDING]
        if pending:
            late = self.waiting_for(kind, name, pending[0])
            return (f"epoch {pending[0].epoch} is still being distributed"
                    + (f" (not yet acknowledged by {', '.join(late)})" if late else "")
                    + "; rotate again once it sends")
        if len(epochs) >= MAX_EPOCHS:
            return (f"holds {len(epochs)} epochs already (at most {MAX_EPOCHS}); rotate again "
                    f"when old ones have been retired")
        return None

    def _add_pending(self, kind: str, name: str, now: float) -> Epoch:
        epochs = self.keys.setdefault((kind, name), {})
        n = max(epochs, default=0) + 1
        epoch = epochs[n] = Epoch(n, new_key(n, send=False).material, PENDING, now,
                                  now + self.policy.warn_after)
        self.counters["rotations"] += 1
        _log.info("{kind} {name}: key epoch {epoch} distributed, accept-only", kind=kind,
                  name=name, epoch=n)
        return epoch

    def _stamp(self, fresh: list[Epoch]) -> None:
        """Publish a change; stamp ``fresh`` (new pending epochs, epochs just made
        retiring) with the version carrying it."""
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
                    late = self.waiting_for(kind, name, e)
                    if not late:
                        fresh += self._activate(kind, name, epochs, e, now)
                        changed = True
                    elif e.deadline is not None and now >= e.deadline:
                        self._warn(kind, name, e, late)
                elif e.state == RETIRING and e.deadline is not None and now >= e.deadline:
                    late = self.waiting_for(kind, name, e)
                    if not late:
                        self._retire(kind, name, epochs, e)
                        changed = True
                    else:
                        self._warn(kind, name, e, late)
            due = self._due(kind, name, now)
            if due is not None and due <= now:
                fresh.append(self._add_pending(kind, name, now))
                changed = True
        if changed:
            self._stamp(fresh)
        return changed

    def _activate(self, kind, name, epochs: dict[int, Epoch], e: Epoch,
                  now: float) -> list[Epoch]:
        """``e`` sends; the one sending before retires (returned: to be stamped with the
        version that publishes this)."""
        retiring = []
        for old in epochs.values():
            if old.state == SENDING:
                old.state, old.deadline = RETIRING, now + self._overlap(kind)
                retiring.append(old)
        e.state, e.deadline = SENDING, None
        self._warned.discard((kind, name, e.epoch, PENDING))
        self.counters["activated"] += 1
        _log.info("{kind} {name}: key epoch {epoch} sends (every device has it)", kind=kind,
                  name=name, epoch=e.epoch)
        return retiring

    def _retire(self, kind, name, epochs: dict[int, Epoch], e: Epoch) -> None:
        del epochs[e.epoch]
        self._warned.discard((kind, name, e.epoch, RETIRING))
        self.counters["retired"] += 1
        _log.info("{kind} {name}: key epoch {epoch} retired", kind=kind, name=name,
                  epoch=e.epoch)

    def _warn(self, kind: str, name: str, e: Epoch, late: list[str]) -> None:
        """Once per epoch and state (per server run): the devices it waits for."""
        if (kind, name, e.epoch, e.state) in self._warned:
            return
        self._warned.add((kind, name, e.epoch, e.state))
        devices = ", ".join(late)
        if e.state == PENDING:
            self.counters["late_activations"] += 1
            _log.warn("{kind} {name}: key epoch {epoch} still not sending {after:g} s after "
                      "it was made: {devices} have not acknowledged snapshot version "
                      "{version}, which holds it; the epoch before it keeps sending until "
                      "they have (are they connected to the management server?)", kind=kind,
                      name=name, epoch=e.epoch, after=self.policy.warn_after, devices=devices,
                      version=e.version)
        else:
            self.counters["late_retirements"] += 1
            _log.warn("{kind} {name}: key epoch {epoch} kept past its overlap: {devices} "
                      "have not acknowledged snapshot version {version}, in which its "
                      "successor sends, so they may still seal with it (are they connected "
                      "to the management server?)", kind=kind, name=name, epoch=e.epoch,
                      devices=devices, version=e.version)

    def _due(self, kind: str, name: str, now: float) -> float | None:
        """When ``kind`` ``name`` is next rotated on schedule (None: not scheduled)."""
        epochs = self.keys.get((kind, name), {})
        if self.policy.rotate_every <= 0 or not self.in_use(kind, name) or not epochs \
                or any(e.state == PENDING for e in epochs.values()) \
                or len(epochs) >= MAX_EPOCHS:
            return None
        return max(e.created for e in epochs.values()) + self.policy.rotate_every

    def _next_event(self, now: float) -> float | None:
        """When :meth:`tick` next has something to do by the clock: a deadline ahead, or
        one passed that was not warned about yet (one passed and warned about waits for
        acknowledgements, which call :meth:`tick` themselves)."""
        times = [e.deadline for (kind, name), epochs in self.keys.items()
                 for e in epochs.values()
                 if e.deadline is not None and (e.state == RETIRING or
                                                e.state == PENDING and e.version)
                 and (e.deadline > now or (kind, name, e.epoch, e.state) not in self._warned)]
        times += [t for t in (self._due(k, n, now) for k, n in self.keys) if t is not None]
        return min(times, default=None)

    def _arm(self, soon: bool = False) -> None:
        """The timer for the next event (``soon``: a look at once, e.g. after the devices
        changed)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._running:
            return
        now = self.clock.seconds()
        when = now if soon else self._next_event(now)
        if when is not None:
            self._call = self.clock.callLater(max(0.0, when - now), self.tick)

    # -- what the operator sees ---------------------------------------------------------------
    def listing(self) -> dict:
        """Links and groups with their epochs, states and ages -- never key material. An
        epoch's ``deadline_in_s``: pending, until the server warns that it still waits
        (``warn_after``); retiring, until its overlap ends (it goes then, or once every
        device has acknowledged ``version``, the snapshot in which its successor sends);
        ``waiting_for``: the devices it waits for (:meth:`waiting_for`)."""
        now = self.clock.seconds()
        links, groups = [], []
        for (kind, name), epochs in sorted(self.keys.items()):
            due = self._due(kind, name, now)
            row = {"in_use": self.in_use(kind, name),
                   "holders": sorted(self.needers(kind, name)) if self.in_use(kind, name)
                   else [],
                   "next_rotation_in_s": None if due is None else max(0.0, due - now),
                   "epochs": [self._epoch_row(kind, name, e, now) for e in
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
                             "warn_after_s": p.warn_after}}

    def _epoch_row(self, kind: str, name: str, e: Epoch, now: float) -> dict:
        return {"epoch": e.epoch, "state": e.state, "send": e.state == SENDING,
                "accept": True, "age_s": now - e.created,
                "deadline_in_s": None if e.deadline is None else max(0.0, e.deadline - now),
                "version": e.version or None,
                "waiting_for": self.waiting_for(kind, name, e)}
