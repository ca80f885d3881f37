"""The management server as one plain object: settings, routes, distribution, collection.

:class:`MgmtServer` ties the parts together (【0054】-【0067】, Fig. 9):

* :class:`~rcn.mgmt.settings.Settings` over a :class:`~rcn.mgmt.store.Store` --
  what the operator and customers enter, with its rules;
* route computation (:mod:`rcn.mgmt.routing`) -- run again after every settings
  change and whenever a device is lost or comes back (a device that was
  registered and is now disconnected or stale counts as failed: routes avoid it
  where another path exists; where none does, the path through it stays, and the
  edges' retransmission budget decides on failure Suspend);
* distribution (:class:`~rcn.mgmt.distribution.DistributionServer`) -- each device's
  snapshot; the snapshot version is ``settings version * 1,000,000 + reroutes``
  since that settings version, so a reroute alone also reaches the devices (a key
  step -- :mod:`rcn.mgmt.keys` -- counts as a reroute); the highest version published
  is kept in the store, so after a restart the numbers go on past it;
* log-transfer keys (:class:`~rcn.mgmt.keys.KeyManager`) -- made for the links of the
  routes' paths and for the pairs' groups at each recomputation, in each device's
  snapshot under ``"keys"`` (what that device needs only), rotated on a schedule and on
  demand; an acknowledged snapshot tells the keys a device has a new epoch;
* collection -- the devices' reports (every second, a bounded series per
  device in the distribution server) read back as per-pair figures: state (the
  source edge's row), lag (the target edge's group), residual entries (the
  source edge's log) and throughput (bytes applied per second at the target).
  A report is a device's input: rows and fields of the wrong shape read as
  absent (``None``), and a report holding any is counted (``bad_figures``) and
  logged with what was wrong, so no report can fail the API or ``/metrics``.

The REST endpoints (:mod:`rcn.mgmt.endpoints`) call it; it knows no HTTP.
"""

from __future__ import annotations

import math
from dataclasses import replace

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rcn.logxfer.routes import Address
from rcn.mgmt.distribution import DistributionServer
from rcn.mgmt.keys import KeyManager, KeyPolicy
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.routing import Demand, RoutingResult, compute_routes, reroute_without
from rcn.mgmt.settings import Settings
from rcn.mgmt.store import Store

_log = Logger()
REROUTE_STEP = 1_000_000


class MgmtServer:
    def __init__(self, clock, store: Store, *, history: int = 300, stale_after: float = 5.0,
                 health_interval: float = 1.0, keys: KeyPolicy = KeyPolicy()):
        self.clock = clock
        self.store = store
        self.settings = Settings(store)
        self.distribution = DistributionServer(clock, self.snapshot_for, self._reported,
                                               stale_after=stale_after, history=history,
                                               on_acked=self._acked)
        self.keys = KeyManager(clock, store, keys, publish=self._key_step,
                               acked=self._acked_version, current=lambda: self.version)
        self.routing: RoutingResult | None = None
        self.failed: frozenset[str] = frozenset()
        self._settings_version = -1
        self._reroutes = 0
        self.health_interval = health_interval
        self._health_call = None
        self.counters = {"recomputations": 0, "publishes": 0, "reports": 0, "bad_figures": 0}
        self.recompute()

    # -- routes and distribution --------------------------------------------------------
    @property
    def version(self) -> int:
        return self._settings_version * REROUTE_STEP + self._reroutes

    def recompute(self) -> RoutingResult:
        """Routes for the current settings, around the failed devices."""
        settings_version = self.settings.version()
        if settings_version != self._settings_version:
            self._settings_version, self._reroutes = settings_version, 0
            published = self.store.published_version()
            if published and published // REROUTE_STEP == settings_version:    # a restart: go on past it
                self._reroutes = published % REROUTE_STEP + 1
        else:
            self._reroutes += 1
        devices = self.store.list_devices()
        known = {d.id for d in devices}
        demands = [Demand(**d) for d in self.settings.demands(reverse=True)]
        links = self.store.list_links()
        routing = reroute_without(devices, links, demands, set(self.failed & known))
        if routing.infeasible and self.failed:
            # No way around a lost device: keep the path through it. The edges retransmit
            # until it is back, and their retransmission budget decides on failure Suspend.
            full = compute_routes(devices, links, demands)
            kept = {k: full.routes[k] for k in routing.infeasible if k in full.routes}
            routing = replace(routing, routes={**routing.routes, **kept},
                              infeasible={k: why for k, why in routing.infeasible.items()
                                          if k not in kept})
        self.routing = routing
        self.counters["recomputations"] += 1
        self._sync_keys(devices)
        self.store.set_published_version(self.version)
        for key, why in self.routing.infeasible.items():
            _log.warn("no feasible path for {source:x} -> {target:x}: {why}", source=key[0],
                      target=key[1], why=why)
        return self.routing

    def changed(self) -> int:
        """After a settings change: routes again, snapshots to the devices."""
        self.recompute()
        self.counters["publishes"] += 1
        return self.distribution.publish()

    def _sync_keys(self, devices) -> None:
        address = {d.id: d.log_address for d in devices}
        paths = [[Address.parse(address[hop]) for hop in r.path]
                 for r in self.routing.routes.values() if all(h in address for h in r.path)]
        groups: dict[int, set[str]] = {}
        for p in self.settings.list_pairs(OPERATOR):
            groups.setdefault(p["group"], set()).update((p["source_edge"], p["target_edge"]))
        self.keys.sync(paths, {a: i for i, a in address.items()}, groups)

    def _key_step(self) -> int:
        """A key was added, made to send or removed: a new version to every device."""
        self._reroutes += 1
        self.store.set_published_version(self.version)
        self.counters["publishes"] += 1
        self.distribution.publish()
        return self.version

    def _acked_version(self, device_id: str) -> int:
        record = self.distribution.records.get(device_id)
        return 0 if record is None else record.acked

    def _acked(self, device_id: str, version: int) -> None:
        self.keys.acknowledged(device_id, version)

    def snapshot_for(self, device_id: str) -> tuple[int, dict]:
        doc = self.settings.snapshot_for(device_id, self.routing.routes)
        doc["version"] = self.version
        device = doc["device"]
        doc["keys"] = self.keys.ring_for(device_id, device["role"],
                                         device["log_address"]).to_snapshot()
        return self.version, doc

    def check_health(self) -> bool:
        """Devices lost or back since the last look: reroute and publish. Returns whether
        the routes changed."""
        failed = frozenset(d["id"] for d in self.distribution.devices()
                           if d.get("status") in ("disconnected", "stale"))
        if failed == self.failed:
            return False
        _log.warn("devices down: {down}; routes computed again",
                  down=", ".join(sorted(failed)) or "none")
        self.failed = failed
        self.recompute()
        self.distribution.publish()
        return True

    def start(self) -> None:
        self.keys.running(True)
        self._health_call = LoopingCall(self.check_health)
        self._health_call.clock = self.clock
        self._health_call.start(self.health_interval, now=False)

    def stop(self) -> None:
        self.keys.running(False)
        if self._health_call is not None and self._health_call.running:
            self._health_call.stop()

    # -- collection -------------------------------------------------------------------------
    def _reported(self, device_id: str, figures: dict) -> None:
        self.counters["reports"] += 1
        problem = _figures_problem(figures)
        if problem is not None:
            self.counters["bad_figures"] += 1
            _log.warn("report from {device}: {problem}; those figures read as absent",
                      device=device_id, problem=problem)

    def pair_figures(self, pairs: list[dict]) -> list[dict]:
        """``pairs`` (Settings' JSON) with state, lag, residual entries and throughput."""
        out = []
        for p in pairs:
            source = self._latest(p["source_edge"])
            key = (p["source_wwn"], p["source_lun"], p["target_wwn"], p["target_lun"])
            row = next((r for r in _rows(source, "pairs") if tuple(
                r.get(k) for k in ("source_wwn", "source_lun", "target_wwn", "target_lun"))
                == key), {})
            state = row.get("state")
            target_group = _group(self._latest(p["target_edge"]), p["group"])
            source_group = _group(source, p["group"])
            out.append(dict(p, state=state if isinstance(state, str) else None,
                            lag_s=_number(target_group.get("lag_s")),
                            residual_entries=_number(source_group.get("log_retained_entries")),
                            throughput_bps=self._throughput(p["target_edge"], p["group"])))
        return out

    def _latest(self, device_id: str) -> dict | None:
        try:
            return self.distribution.latest(device_id)
        except LookupError:           # never registered: no figures yet
            return None

    def _series(self, device_id: str) -> list:
        try:
            return self.distribution.series(device_id)
        except LookupError:
            return []

    def _throughput(self, edge: str, group: int) -> float | None:
        series = self._series(edge)
        if len(series) < 2:
            return None
        (t0, a), (t1, b) = series[-2], series[-1]
        before = _number(_group(a, group).get("applied_bytes")) or 0
        after = _number(_group(b, group).get("applied_bytes"))
        if t1 <= t0 or after is None:
            return None
        return max(0.0, (after - before) / (t1 - t0))

    def lag_series(self, groups: dict[int, str], seconds: float) -> dict[str, list]:
        """Per group (-> its target edge): ``[(time, lag_s), ...]`` over the last ``seconds``."""
        now = self.clock.seconds()
        out = {}
        for group, edge in groups.items():
            points = []
            for t, figures in self._series(edge):
                lag = _number(_group(figures, group).get("lag_s"))
                if lag is not None and now - t <= seconds:
                    points.append((t, lag))
            out[str(group)] = points
        return out


def _group(figures: dict | None, group: int) -> dict:
    return next((g for g in _rows(figures, "groups") if g.get("group") == group), {})


def _rows(figures: dict | None, key: str) -> list[dict]:
    """``figures[key]``'s objects: anything else in a device's report is skipped."""
    rows = figures.get(key) if isinstance(figures, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _number(value) -> float | None:
    """A finite number from a device's report, else None (absent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:             # an integer beyond a double
        return None


_NUMBERS = {"pairs": (), "groups": ("lag_s", "log_retained_entries", "applied_bytes")}


def _figures_problem(figures: dict) -> str | None:
    """What is wrong with the shape of a report's ``pairs`` and ``groups`` (the parts
    the server reads), or None."""
    for key, numbers in _NUMBERS.items():
        rows = figures.get(key, [])
        if not isinstance(rows, list):
            return f"{key}: expected a list, got {type(rows).__name__}"
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                return f"{key}[{i}]: expected an object, got {type(row).__name__}"
            for name in numbers:
                if name in row and _number(row[name]) is None:
                    return f"{key}[{i}].{name}: expected a finite number"
    return None
