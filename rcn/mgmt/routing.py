"""Route computation for table 408 (【0062】; issue 7), on networkx.

A :class:`Demand` is the traffic of one (source storage, target storage): the
edges the two arrays are attached to and the load of all its ordered pairs
(:func:`demands_for` sums them). :func:`compute_routes` gives each demand a
path of device IDs, source edge first, target edge last, with only cores in
between (an edge never relays another edge's entries), or a reason why it has
none.

The objective for one demand, in order:

1. the fewest cores on the path, such that every core's summed
   ``load_entries`` stays within its ``processing_limit`` and every link's
   summed ``load_bytes`` within its ``capacity`` (0: no limit for either);
2. then the fewest cores that do not yet carry traffic toward the same target
   edge (a core batches entries per next hop, so batching is worth more there,
   【0053】);
3. then the lowest total link latency, compared to the microsecond;
4. then the path whose tuple of device IDs sorts first, so results are
   reproducible whatever the order of the inputs.

With ``avoid_source_domain``, no core in the source edge's failure domain is
used (an edge without a domain has none to avoid). Two storages on the same
edge get the path of that edge alone; an edge's ``processing_limit`` is not
used (only cores relay). A demand with no route gets a reason naming the
first thing that blocks it: the topology, failed devices, the failure domain,
or the cores and links without room on its fewest-core path.

Demands are placed one at a time in this order: larger ``load_entries``
first, then larger ``load_bytes``, then by (source WWN, target WWN). Each path
is optimal for its demand given the loads the earlier ones placed (limits
still met); the whole is a greedy placement, not a global multi-commodity
optimum: an earlier demand may take the last room on a core that a later one
needed, although another choice would have fitted both.

The search is one Dijkstra (from the target edge) per demand over integer
weights that encode the objective exactly, then a walk from the source that
takes the lowest device ID among the next hops still on a cheapest path;
cores and links without room are hidden by the weight function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from datapath.frames.names import format_wwn
from rcn.mgmt.model import Device, Link, OrderedPair, RouteEntry, StorageConnection
from rcn.mgmtlink.commands import ROLES

Key = tuple[int, int]                       # (source WWN, target WWN)
LinkKey = tuple[str, str]                   # the two device IDs, sorted

_MAX_WWN = (1 << 64) - 1
_NAMED = 5                                  # devices named in one reason, at most


def link_key(a: str, b: str) -> LinkKey:
    """The key of the link between ``a`` and ``b`` in :attr:`RoutingResult.link_load`."""
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class Demand:
    """The traffic from one source storage to one target storage (the sum of its pairs')."""
    source_wwn: int
    target_wwn: int
    source_edge: str
    target_edge: str
    load_entries: float = 0.0                  # entries/s
    load_bytes: float = 0.0                    # bytes/s

    @property
    def key(self) -> Key:
        return (self.source_wwn, self.target_wwn)

    def describe(self) -> str:
        return f"demand {format_wwn(self.source_wwn)} -> {format_wwn(self.target_wwn)}"


@dataclass(frozen=True)
class RoutingResult:
    """Routes (table 408), the demands left without one, and the loads placed.

    ``core_load`` has every core (0.0 when unused), in entries/s; ``link_load``
    every link, in bytes/s, keyed by :func:`link_key`; ``core_targets`` the
    target edges each core carries traffic toward; ``order`` the keys of the
    demands in the order they were placed.
    """
    routes: dict[Key, RouteEntry]
    infeasible: dict[Key, str]
    core_load: dict[str, float]
    link_load: dict[LinkKey, float]
    core_targets: dict[str, frozenset[str]]
    order: tuple[Key, ...]


def compute_routes(devices: Iterable[Device], links: Iterable[Link], demands: Iterable[Demand],
                   *, avoid_source_domain: bool = False) -> RoutingResult:
    """A route per demand as the module docstring says, or the reason it has none.

    ``ValueError`` names the item for duplicate device IDs or links, an unknown
    role or device ID, a demand whose ends are not edges, a repeated (source
    WWN, target WWN), or a negative or non-finite limit, capacity, latency or load.
    """
    return _place(_Network(devices, links), _check_demands(demands), frozenset(),
                  avoid_source_domain)


def reroute_without(devices: Iterable[Device], links: Iterable[Link],
                    demands: Iterable[Demand], failed: Iterable[str], *,
                    avoid_source_domain: bool = False) -> RoutingResult:
    """:func:`compute_routes` with the ``failed`` devices (and their links) taken out.

    A demand whose own edge failed is infeasible with that reason; one that
    loses its only path says the failed devices are why. Every demand is placed
    again (a route that avoided the failed devices may move too). ``ValueError``
    for a failed ID that is not a device.
    """
    network = _Network(devices, links)
    failed = frozenset(failed)
    unknown = sorted(failed - network.devices.keys())
    if unknown:
        raise ValueError(f"failed devices: unknown device ID(s) {', '.join(unknown)}")
    return _place(network, _check_demands(demands), failed, avoid_source_domain)


def demands_for(pairs: Iterable[OrderedPair],
                connections: Iterable[StorageConnection]) -> list[Demand]:
    """One :class:`Demand` per (source WWN, target WWN) of ``pairs``, with the summed load
    of its pairs, the edges taken from the storage connections (table 503)."""
    edge_of: dict[int, str] = {}
    for connection in connections:
        known = edge_of.setdefault(connection.storage_wwn, connection.edge_id)
        if known != connection.edge_id:
            raise ValueError(f"storage {format_wwn(connection.storage_wwn)} is connected to "
                             f"both edge {known} and edge {connection.edge_id}")
    loads: dict[Key, list[float]] = {}
    for pair in pairs:
        for field_name in ("source_wwn", "target_wwn"):
            wwn = getattr(pair, field_name)
            if wwn not in edge_of:
                number = "" if pair.id is None else f" {pair.id}"
                raise ValueError(f"pair{number} ({format_wwn(pair.source_wwn)} LUN "
                                 f"{pair.source_lun} -> "
                                 f"{format_wwn(pair.target_wwn)} LUN {pair.target_lun}): "
                                 f"{field_name} {format_wwn(wwn)} is not connected to any edge")
        load = loads.setdefault((pair.source_wwn, pair.target_wwn), [0.0, 0.0])
        load[0] += pair.load_entries
        load[1] += pair.load_bytes
    return [Demand(s, t, edge_of[s], edge_of[t], entries, bytes_)
            for (s, t), (entries, bytes_) in sorted(loads.items())]


# -- checks -------------------------------------------------------------------------

def _is_amount(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value >= 0)


def _amount(value: float, what: str) -> float:
    if not _is_amount(value):
        raise ValueError(f"{what} must be a finite number >= 0, not {value!r}")
    return float(value)


def _check_demands(demands: Iterable[Demand]) -> list[Demand]:
    checked: dict[Key, Demand] = {}
    for demand in demands:
        for field_name in ("source_wwn", "target_wwn"):
            wwn = getattr(demand, field_name)
            if isinstance(wwn, bool) or not isinstance(wwn, int) or not 0 <= wwn <= _MAX_WWN:
                raise ValueError(f"demand {demand!r}: {field_name} must be a 64-bit WWN, "
                                 f"not {wwn!r}")
        for field_name in ("load_entries", "load_bytes"):
            value = getattr(demand, field_name)
            if not _is_amount(value):
                raise ValueError(f"{demand.describe()}: {field_name} must be a finite number "
                                 f">= 0, not {value!r}")
        if demand.key in checked:
            raise ValueError(f"{demand.describe()} is given twice (one demand per source and "
                             f"target storage: sum the pairs' loads)")
        checked[demand.key] = demand
    return list(checked.values())


def _placement_order(demand: Demand):
    return (-demand.load_entries, -demand.load_bytes, demand.source_wwn, demand.target_wwn)


# -- the graph ----------------------------------------------------------------------

class _Network:
    """The devices and links as a networkx graph, checked, with the weights' scale."""

    def __init__(self, devices: Iterable[Device], links: Iterable[Link]):
        self.devices: dict[str, Device] = {}
        for device in devices:
            if device.id in self.devices:
                raise ValueError(f"device {device.id!r} is given twice")
            if device.role not in ROLES:
                raise ValueError(f"device {device.id!r}: role must be one of "
                                 f"{', '.join(ROLES)}, not {device.role!r}")
            _amount(device.processing_limit, f"device {device.id!r}: processing_limit")
            self.devices[device.id] = device
        self.cores = sorted(d.id for d in self.devices.values() if d.role == "core")
        self.graph = nx.Graph()
        self.graph.add_nodes_from(sorted(self.devices))
        total_latency = 0
        for link in links:
            name = f"link {link.a}-{link.b}"
            for end in (link.a, link.b):
                if end not in self.devices:
                    raise ValueError(f"{name}: unknown device ID {end!r}")
            if link.a == link.b:
                raise ValueError(f"{name} joins a device to itself")
            if self.graph.has_edge(link.a, link.b):
                raise ValueError(f"{name} is given twice")
            capacity = _amount(link.capacity, f"{name}: capacity")
            latency_us = round(_amount(link.latency_ms, f"{name}: latency_ms") * 1000)
            total_latency += latency_us
            self.graph.add_edge(link.a, link.b, key=link_key(link.a, link.b),
                                capacity=capacity, latency_us=latency_us)
        # Path cost / 2 = cores * _core + cores not batching * _cold + latency (us), and each
        # term outweighs everything after it, so one integer sum orders paths as the
        # objective does (module docstring) with no rounding.
        self._cold = total_latency + 1
        self._core = (len(self.cores) + 1) * self._cold

    def check_ends(self, demand: Demand) -> None:
        """``ValueError`` unless both ends of ``demand`` are edges."""
        for field_name in ("source_edge", "target_edge"):
            device_id = getattr(demand, field_name)
            device = self.devices.get(device_id)
            if device is None:
                raise ValueError(f"{demand.describe()}: {field_name}: unknown device ID "
                                 f"{device_id!r}")
            if device.role != "edge":
                raise ValueError(f"{demand.describe()}: {field_name}: device {device_id!r} "
                                 f"is a {device.role}, not an edge")

    def search(self, source: str, target: str, cores: Iterable[str], warm: set[str],
               link_ok=None) -> tuple[str, ...] | None:
        """The best path from ``source`` to ``target`` through ``cores`` only, over links
        ``link_ok`` accepts (all when None); ``warm`` cores already carry traffic toward
        ``target``. None when there is no such path."""
        if source == target:
            return (source,)
        cost: dict[str, int] = {source: 0, target: 0}
        for core in cores:
            cost[core] = self._core if core in warm else self._core + self._cold

        def weight(u, v, data):
            cu, cv = cost.get(u), cost.get(v)
            if cu is None or cv is None or (link_ok is not None and not link_ok(data)):
                return None                     # networkx: a hidden edge
            return 2 * data["latency_us"] + cu + cv

        distance = nx.single_source_dijkstra_path_length(self.graph, target, weight=weight)
        if source not in distance:
            return None
        path, here = [source], source
        while here != target:
            # The lowest ID among the next hops still on a cheapest path: weights are
            # positive except a direct edge-to-edge link, so this never turns back.
            here = min(v for v, data in self.graph[here].items() if v in distance
                       and (w := weight(here, v, data)) is not None
                       and w + distance[v] == distance[here])
            path.append(here)
        return tuple(path)


# -- placement ----------------------------------------------------------------------

def _place(network: _Network, demands: list[Demand], failed: frozenset[str],
           avoid_source_domain: bool) -> RoutingResult:
    for demand in demands:
        network.check_ends(demand)
    core_load = {core: 0.0 for core in network.cores}
    link_load = {data["key"]: 0.0 for _, _, data in network.graph.edges(data=True)}
    targets: dict[str, set[str]] = {core: set() for core in network.cores}
    routes: dict[Key, RouteEntry] = {}
    infeasible: dict[Key, str] = {}
    order = sorted(demands, key=_placement_order)
    for demand in order:
        entries, bytes_ = demand.load_entries, demand.load_bytes
        usable = [core for core in _allowed_cores(network, demand, failed, avoid_source_domain)
                  if _core_room(network.devices[core], core_load[core], entries)]
        path = None
        if not {demand.source_edge, demand.target_edge} & failed:
            warm = {core for core in usable if demand.target_edge in targets[core]}
            path = network.search(
                demand.source_edge, demand.target_edge, usable, warm,
                lambda data: _link_room(data, link_load[data["key"]], bytes_))
        if path is None:
            infeasible[demand.key] = _why(network, demand, failed, avoid_source_domain,
                                          core_load, link_load)
            continue
        routes[demand.key] = RouteEntry(demand.source_wwn, demand.target_wwn, path)
        for core in path[1:-1]:
            core_load[core] += entries
            targets[core].add(demand.target_edge)
        for a, b in zip(path, path[1:]):
            link_load[link_key(a, b)] += bytes_
    return RoutingResult(routes, infeasible, core_load, link_load,
                         {core: frozenset(t) for core, t in targets.items()},
                         tuple(demand.key for demand in order))


def _allowed_cores(network: _Network, demand: Demand, failed: frozenset[str],
                   avoid_source_domain: bool) -> list[str]:
    domain = network.devices[demand.source_edge].failure_domain if avoid_source_domain else ""
    return [core for core in network.cores if core not in failed
            and not (domain and network.devices[core].failure_domain == domain)]


def _core_room(core: Device, used: float, entries: float) -> bool:
    return core.processing_limit == 0 or used + entries <= core.processing_limit


def _link_room(data: dict, used: float, bytes_: float) -> bool:
    return data["capacity"] == 0 or used + bytes_ <= data["capacity"]


def _why(network: _Network, demand: Demand, failed: frozenset[str], avoid_source_domain: bool,
         core_load: dict[str, float], link_load: dict[LinkKey, float]) -> str:
    """What blocks ``demand``: the first of these that leaves no path -- the topology
    itself, the failed devices, the failure domain -- or else the limits on the best
    path without them."""
    source, target = demand.source_edge, demand.target_edge
    for end, name in ((source, "source"), (target, "target")):
        if end in failed:
            return f"its {name} edge {end} failed"
    ends = f"from edge {source} to edge {target}"
    if network.search(source, target, network.cores, set()) is None:
        return f"no path {ends}: no chain of links through cores joins them (edges do not relay)"
    alive = [core for core in network.cores if core not in failed]
    if network.search(source, target, alive, set()) is None:
        return f"no path {ends} without the failed device(s) {_names(sorted(failed))}"
    allowed = _allowed_cores(network, demand, failed, avoid_source_domain)
    path = network.search(source, target, allowed, set())
    if path is None:
        domain = network.devices[source].failure_domain
        avoided = [core for core in alive if core not in allowed]
        return (f"no path {ends} avoids the source's failure domain {domain!r} "
                f"(its cores: {_names(avoided)})")
    blocks = []
    for core in path[1:-1]:
        device = network.devices[core]
        if not _core_room(device, core_load[core], demand.load_entries):
            blocks.append(f"core {core}'s processing limit ({core_load[core]:g} of "
                          f"{device.processing_limit:g} entries/s in use)")
    for a, b in zip(path, path[1:]):
        data = network.graph[a][b]
        if not _link_room(data, link_load[data["key"]], demand.load_bytes):
            blocks.append(f"link {a}-{b}'s capacity ({link_load[data['key']]:g} of "
                          f"{data['capacity']:g} bytes/s in use)")
    return (f"no path {ends} has room for {demand.load_entries:g} entries/s and "
            f"{demand.load_bytes:g} bytes/s: the fewest-core path {' > '.join(path)} is "
            f"blocked by {' and '.join(blocks)}")


def _names(ids: list[str]) -> str:
    shown = ", ".join(ids[:_NAMED])
    return shown + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
