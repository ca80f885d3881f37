"""Route computation (【0062】): hand-made topologies for each rule, generated ones against a
brute-force reference, rerouting around failed devices, and refusals of bad input."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import networkx as nx
from twisted.trial.unittest import TestCase

from rcn.mgmt.model import Device, Link, OrderedPair, RouteEntry, StorageConnection
from rcn.mgmt.routing import (Demand, compute_routes, demands_for, link_key,
                              reroute_without)

W1, W2, W3, W4, W5 = (0x5000000000000001 + i for i in range(5))


def edge(id_, domain=""):
    return Device(id_, "edge", f"{id_}:47001", failure_domain=domain)


def core(id_, limit=0.0, domain=""):
    return Device(id_, "core", f"{id_}:47001", processing_limit=limit, failure_domain=domain)


def demand(source_wwn, target_wwn, source_edge, target_edge, entries=0.0, bytes_=0.0):
    return Demand(source_wwn, target_wwn, source_edge, target_edge, entries, bytes_)


def paths(result):
    return {key: route.path for key, route in result.routes.items()}


# -- a brute-force reference, written from the objective, not from the module ----------

def reference(devices, links, demands, failed=frozenset(), avoid=False):
    """Every simple path of every demand, placed in the documented order; the best feasible
    one by (cores, cores not yet carrying toward the target edge, latency in us, IDs)."""
    by_id = {d.id: d for d in devices}
    graph = nx.Graph()
    graph.add_nodes_from(by_id)
    for link in links:
        graph.add_edge(link.a, link.b, capacity=link.capacity,
                       latency=round(link.latency_ms * 1000))
    core_used, link_used = defaultdict(float), defaultdict(float)
    targets = defaultdict(set)
    routes, infeasible = {}, set()
    for d in sorted(demands, key=lambda d: (-d.load_entries, -d.load_bytes,
                                            d.source_wwn, d.target_wwn)):
        s, t = d.source_edge, d.target_edge
        if s in failed or t in failed:
            infeasible.add((d.source_wwn, d.target_wwn))
            continue
        if s == t:
            routes[(d.source_wwn, d.target_wwn)] = (s,)
            continue
        domain = by_id[s].failure_domain if avoid else ""
        allowed = {c for c, dev in by_id.items() if dev.role == "core" and c not in failed
                   and not (domain and dev.failure_domain == domain)}
        sub = graph.subgraph(allowed | {s, t})
        best = None
        for path in nx.all_simple_paths(sub, s, t):
            cores, hops = path[1:-1], list(zip(path, path[1:]))
            if any(by_id[c].processing_limit and core_used[c] + d.load_entries
                   > by_id[c].processing_limit for c in cores):
                continue
            if any(graph[a][b]["capacity"] and link_used[frozenset((a, b))] + d.load_bytes
                   > graph[a][b]["capacity"] for a, b in hops):
                continue
            rank = (len(cores), sum(t not in targets[c] for c in cores),
                    sum(graph[a][b]["latency"] for a, b in hops), tuple(path))
            best = rank if best is None else min(best, rank)
        if best is None:
            infeasible.add((d.source_wwn, d.target_wwn))
            continue
        path = best[-1]
        routes[(d.source_wwn, d.target_wwn)] = path
        for c in path[1:-1]:
            core_used[c] += d.load_entries
            targets[c].add(t)
        for a, b in zip(path, path[1:]):
            link_used[frozenset((a, b))] += d.load_bytes
    return routes, infeasible


def generated(seed):
    """A small random topology: 2-4 edges, 1-6 cores, random limits, capacities,
    latencies and failure domains, and up to 8 demands with integer loads."""
    rng = random.Random(seed)
    domains = ["x", "y", ""]
    edges = [edge(f"e{i}", rng.choice(domains)) for i in range(rng.randint(2, 4))]
    cores = [core(f"c{i}", rng.choice([0, rng.randint(1, 30)]), rng.choice(domains))
             for i in range(rng.randint(1, 6))]
    devices = edges + cores
    density = rng.uniform(0.3, 0.8)
    links = []
    for a, b in itertools.combinations(devices, 2):
        # Edges sparsely attached and cores densely linked, for paths of several cores.
        roles = {a.role, b.role}
        chance = 0.1 if roles == {"edge"} else density if roles == {"core"} else density * 0.7
        if rng.random() < chance:
            links.append(Link(a.id, b.id, rng.choice([0, rng.randint(1, 40)]),
                              rng.choice([0, 1, 1, 2, 2.5])))
    demands = []
    for _ in range(rng.randint(1, 8)):
        s, t = rng.sample(edges, 2) if rng.random() < 0.9 else [rng.choice(edges)] * 2
        demands.append(demand(rng.randrange(1, 1 << 64), rng.randrange(1, 1 << 64), s.id, t.id,
                              float(rng.choice([0, 5, 5, rng.randint(0, 15)])),
                              float(rng.choice([0, 10, rng.randint(0, 20)]))))
    return devices, links, demands, rng


class GeneratedTopologyTests(TestCase):
    SEEDS = range(600)

    def check_against_reference(self, devices, links, demands, failed, avoid, seed):
        label = f"seed {seed}, failed {sorted(failed)}, avoid {avoid}"
        if failed:
            result = reroute_without(devices, links, demands, failed, avoid_source_domain=avoid)
        else:
            result = compute_routes(devices, links, demands, avoid_source_domain=avoid)
        routes, infeasible = reference(devices, links, demands, failed, avoid)
        self.assertEqual(set(result.infeasible), infeasible, label)
        self.assertEqual({key: len(path) for key, path in paths(result).items()},
                         {key: len(path) for key, path in routes.items()}, label)
        self.assertEqual(paths(result), routes, label)
        self.check_limits(devices, links, demands, result, failed, avoid, label)
        return result

    def check_limits(self, devices, links, demands, result, failed, avoid, label):
        by_id = {d.id: d for d in devices}
        linked = {link_key(link.a, link.b): link for link in links}
        core_load, link_load = defaultdict(float), defaultdict(float)
        for d in demands:
            route = result.routes.get(d.key)
            if route is None:
                self.assertTrue(result.infeasible[d.key], label)
                continue
            path = route.path
            self.assertEqual((route.source_wwn, route.target_wwn), d.key, label)
            self.assertEqual((path[0], path[-1]), (d.source_edge, d.target_edge), label)
            self.assertFalse(set(path) & failed, label)
            for c in path[1:-1]:
                self.assertEqual(by_id[c].role, "core", label)
                if avoid and by_id[d.source_edge].failure_domain:
                    self.assertNotEqual(by_id[c].failure_domain,
                                        by_id[d.source_edge].failure_domain, label)
                core_load[c] += d.load_entries
            for a, b in zip(path, path[1:]):
                self.assertIn(link_key(a, b), linked, label)
                link_load[link_key(a, b)] += d.load_bytes
        for c, load in core_load.items():
            limit = by_id[c].processing_limit
            self.assertTrue(limit == 0 or load <= limit, (label, c, load, limit))
        for key, load in link_load.items():
            capacity = linked[key].capacity
            self.assertTrue(capacity == 0 or load <= capacity, (label, key, load, capacity))
        self.assertEqual({c: v for c, v in result.core_load.items() if v},
                         {c: v for c, v in core_load.items() if v}, label)
        self.assertEqual({k: v for k, v in result.link_load.items() if v},
                         {k: v for k, v in link_load.items() if v}, label)

    def test_same_routes_core_counts_and_feasibility_as_brute_force(self):
        infeasible = routed = 0
        for seed in self.SEEDS:
            devices, links, demands, _ = generated(seed)
            for avoid in (False, True):
                result = self.check_against_reference(devices, links, demands, frozenset(),
                                                      avoid, seed)
                infeasible += len(result.infeasible)
                routed += len(result.routes)
        # The generator must produce both outcomes often, or the comparison proves little.
        self.assertGreater(routed, 1000)
        self.assertGreater(infeasible, 500)

    def test_failed_cores_reroute_as_brute_force_does(self):
        for seed in self.SEEDS:
            devices, links, demands, rng = generated(seed)
            cores = [d.id for d in devices if d.role == "core"]
            if not cores:
                continue
            failed = frozenset(rng.sample(cores, rng.randint(1, min(2, len(cores)))))
            self.check_against_reference(devices, links, demands, failed, rng.random() < 0.5,
                                         seed)

    def test_results_do_not_depend_on_the_order_of_the_inputs(self):
        for seed in range(100):
            devices, links, demands, rng = generated(seed)
            first = compute_routes(devices, links, demands)
            for items in (devices, links, demands):
                rng.shuffle(items)
            self.assertEqual(compute_routes(devices, links, demands), first, seed)


class HandMadeTopologyTests(TestCase):
    def test_straight_line(self):
        devices = [edge("e1"), core("c1"), core("c2"), edge("e2")]
        links = [Link("e1", "c1", latency_ms=1), Link("c1", "c2", latency_ms=5),
                 Link("c2", "e2", latency_ms=1)]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2", 40, 4000)])
        self.assertEqual(result.routes, {(W1, W2): RouteEntry(W1, W2, ("e1", "c1", "c2", "e2"))})
        self.assertEqual(result.infeasible, {})
        self.assertEqual(result.core_load, {"c1": 40, "c2": 40})
        self.assertEqual(result.link_load, {("c1", "e1"): 4000, ("c1", "c2"): 4000,
                                            ("c2", "e2"): 4000})
        self.assertEqual(result.core_targets, {"c1": {"e2"}, "c2": {"e2"}})

    def test_two_parallel_cores_one_at_its_limit(self):
        devices = [edge("e1"), edge("e2"), core("cA", limit=100), core("cB", limit=100)]
        links = [Link("e1", "cA"), Link("cA", "e2"), Link("e1", "cB"), Link("cB", "e2")]
        demands = [demand(W3, W4, "e1", "e2", 50), demand(W1, W2, "e1", "e2", 100)]
        result = compute_routes(devices, links, demands)
        # The larger demand goes first and fills cA (lower ID); cA carries toward e2, but
        # has no room left, so the second takes cB.
        self.assertEqual(result.order, ((W1, W2), (W3, W4)))
        self.assertEqual(paths(result), {(W1, W2): ("e1", "cA", "e2"),
                                         (W3, W4): ("e1", "cB", "e2")})
        self.assertEqual(result.core_load, {"cA": 100, "cB": 50})

    def test_a_full_core_sends_a_demand_the_longer_way(self):
        devices = [edge("e1"), edge("e2"), core("c1", limit=10), core("c2"), core("c3")]
        links = [Link("e1", "c1"), Link("c1", "e2"), Link("e1", "c2"), Link("c2", "c3"),
                 Link("c3", "e2")]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2", 10),
                                                 demand(W3, W4, "e1", "e2", 1)])
        self.assertEqual(paths(result), {(W1, W2): ("e1", "c1", "e2"),
                                         (W3, W4): ("e1", "c2", "c3", "e2")})

    def test_a_core_at_its_limit_is_named(self):
        devices = [edge("e1"), edge("e2"), core("c1", limit=100)]
        links = [Link("e1", "c1"), Link("c1", "e2")]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2", 80),
                                                 demand(W3, W4, "e1", "e2", 30)])
        self.assertEqual(paths(result), {(W1, W2): ("e1", "c1", "e2")})
        self.assertEqual(result.infeasible[(W3, W4)],
                         "no path from edge e1 to edge e2 has room for 30 entries/s and "
                         "0 bytes/s: the fewest-core path e1 > c1 > e2 is blocked by core "
                         "c1's processing limit (80 of 100 entries/s in use)")

    def test_a_link_at_capacity(self):
        devices = [edge("e1"), edge("e2"), core("c1"), core("c2")]
        links = [Link("e1", "c1"), Link("c1", "e2", capacity=1000), Link("e1", "c2"),
                 Link("c2", "e2", latency_ms=3)]
        demands = [demand(W1, W2, "e1", "e2", 0, 800), demand(W3, W4, "e1", "e2", 0, 400)]
        result = compute_routes(devices, links, demands)
        self.assertEqual(paths(result), {(W1, W2): ("e1", "c1", "e2"),
                                         (W3, W4): ("e1", "c2", "e2")})
        self.assertEqual(result.link_load[("c1", "e2")], 800)
        # Without the second core the link is what blocks, and the reason says so.
        result = compute_routes(devices[:3], links[:2], demands)
        self.assertEqual(paths(result), {(W1, W2): ("e1", "c1", "e2")})
        self.assertEqual(result.infeasible[(W3, W4)],
                         "no path from edge e1 to edge e2 has room for 0 entries/s and "
                         "400 bytes/s: the fewest-core path e1 > c1 > e2 is blocked by link "
                         "c1-e2's capacity (800 of 1000 bytes/s in use)")

    def test_failure_domain_avoidance(self):
        devices = [edge("e1", "tokyo"), edge("e2", "osaka"), core("cA", domain="tokyo"),
                   core("cB", domain="nagoya")]
        links = [Link("e1", "cA", latency_ms=1), Link("cA", "e2", latency_ms=1),
                 Link("e1", "cB", latency_ms=9), Link("cB", "e2", latency_ms=9)]
        demands = [demand(W1, W2, "e1", "e2", 1)]
        self.assertEqual(paths(compute_routes(devices, links, demands)),
                         {(W1, W2): ("e1", "cA", "e2")})
        self.assertEqual(paths(compute_routes(devices, links, demands, avoid_source_domain=True)),
                         {(W1, W2): ("e1", "cB", "e2")})
        # Only the core in the source's domain left: infeasible, naming the domain.
        result = compute_routes(devices[:3], links[:2], demands, avoid_source_domain=True)
        self.assertEqual(result.routes, {})
        self.assertEqual(result.infeasible[(W1, W2)],
                         "no path from edge e1 to edge e2 avoids the source's failure domain "
                         "'tokyo' (its cores: cA)")

    def test_an_edge_without_a_domain_avoids_nothing(self):
        devices = [edge("e1"), edge("e2"), core("c1")]
        links = [Link("e1", "c1"), Link("c1", "e2")]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2")],
                                avoid_source_domain=True)
        self.assertEqual(paths(result), {(W1, W2): ("e1", "c1", "e2")})

    def test_no_path(self):
        devices = [edge("e1"), edge("e2"), edge("e3"), core("c1"), core("c2")]
        links = [Link("e1", "c1"), Link("c2", "e2"), Link("c1", "e3"), Link("e3", "c2")]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2", 1, 1)])
        # e1 > c1 > e3 > c2 > e2 exists, but an edge does not relay another edge's entries.
        self.assertEqual(result.routes, {})
        self.assertEqual(result.infeasible, {
            (W1, W2): "no path from edge e1 to edge e2: no chain of links through cores joins "
                      "them (edges do not relay)"})
        self.assertEqual(result.core_load, {"c1": 0, "c2": 0})

    def test_ties_go_to_the_core_already_carrying_traffic_to_the_same_target_edge(self):
        devices = [edge("e1"), edge("e2"), edge("e3"), edge("e4"), core("cA"), core("cB")]
        links = [Link("e1", "cA", latency_ms=1), Link("cA", "e2", latency_ms=1),
                 Link("e1", "cB", latency_ms=2), Link("cB", "e2", latency_ms=2),
                 Link("e3", "cB"), Link("cB", "e4")]
        # e3's traffic can only take cB. Placed first (larger), it makes cB carry toward e2;
        # then e1 -> e2 takes cB too, although cA has the lower latency and ID.
        to_e2 = [demand(W3, W2, "e3", "e2", 10), demand(W1, W2, "e1", "e2", 5)]
        result = compute_routes(devices, links, to_e2)
        self.assertEqual(paths(result), {(W3, W2): ("e3", "cB", "e2"),
                                         (W1, W2): ("e1", "cB", "e2")})
        self.assertEqual(result.core_targets["cB"], {"e2"})
        # Traffic toward another target edge (e4) earns cB no preference.
        to_e4 = [demand(W3, W4, "e3", "e4", 10), demand(W1, W2, "e1", "e2", 5)]
        self.assertEqual(paths(compute_routes(devices, links, to_e4)),
                         {(W3, W4): ("e3", "cB", "e4"), (W1, W2): ("e1", "cA", "e2")})

    def test_fewest_cores_then_latency_then_ids(self):
        devices = [edge("e1"), edge("e2"), core("c1"), core("c2"), core("c3"), core("c4")]
        short = [Link("e1", "c3", latency_ms=100), Link("c3", "e2", latency_ms=100)]
        long = [Link("e1", "c1", latency_ms=1), Link("c1", "c2", latency_ms=1),
                Link("c2", "e2", latency_ms=1)]
        one = [demand(W1, W2, "e1", "e2")]
        self.assertEqual(paths(compute_routes(devices, short + long, one))[(W1, W2)],
                         ("e1", "c3", "e2"))                   # fewer cores beat latency
        slow = [Link("e1", "c4", latency_ms=100.001), Link("c4", "e2", latency_ms=100)]
        self.assertEqual(paths(compute_routes(devices, slow + short, one))[(W1, W2)],
                         ("e1", "c3", "e2"))                   # a microsecond decides
        same = [Link("e1", "c4", latency_ms=100), Link("c4", "e2", latency_ms=100)]
        self.assertEqual(paths(compute_routes(devices, same + short, one))[(W1, W2)],
                         ("e1", "c3", "e2"))                   # then the lower ID

    def test_a_direct_link_and_a_shared_edge_need_no_core(self):
        devices = [edge("e1"), edge("e2"), core("c1")]
        links = [Link("e1", "c1"), Link("c1", "e2"), Link("e1", "e2", latency_ms=50)]
        result = compute_routes(devices, links, [demand(W1, W2, "e1", "e2", 1, 1),
                                                 demand(W3, W4, "e1", "e1", 1, 1)])
        self.assertEqual(paths(result), {(W1, W2): ("e1", "e2"), (W3, W4): ("e1",)})
        self.assertEqual(result.core_load, {"c1": 0})

    def test_placement_order_is_larger_load_first_then_wwns(self):
        devices = [edge("e1"), edge("e2"), core("c1", limit=10)]
        links = [Link("e1", "c1"), Link("c1", "e2")]
        demands = [demand(W5, W1, "e1", "e2", 4, 1), demand(W2, W1, "e1", "e2", 6, 0),
                   demand(W3, W1, "e1", "e2", 6, 9), demand(W1, W1, "e1", "e2", 4, 1)]
        result = compute_routes(devices, links, demands)
        self.assertEqual(result.order, ((W3, W1), (W2, W1), (W1, W1), (W5, W1)))
        self.assertEqual(set(result.routes), {(W3, W1), (W1, W1)})
        self.assertEqual(set(result.infeasible), {(W2, W1), (W5, W1)})


class RerouteTests(TestCase):
    DEVICES = [edge("e1"), edge("e2"), edge("e3"), edge("e4"), core("cA"), core("cB"),
               core("cC"), core("cD", limit=5)]
    LINKS = [Link("e1", "cA"), Link("cA", "e2"), Link("e1", "cB"), Link("cB", "cC"),
             Link("cC", "e2"), Link("e3", "cD"), Link("cD", "e4")]
    DEMANDS = [demand(W1, W2, "e1", "e2", 3), demand(W3, W4, "e3", "e4", 5)]

    def test_a_failed_cores_demands_go_around_it(self):
        before = compute_routes(self.DEVICES, self.LINKS, self.DEMANDS)
        self.assertEqual(paths(before), {(W1, W2): ("e1", "cA", "e2"),
                                         (W3, W4): ("e3", "cD", "e4")})
        after = reroute_without(self.DEVICES, self.LINKS, self.DEMANDS, {"cA"})
        self.assertEqual(paths(after), {(W1, W2): ("e1", "cB", "cC", "e2"),
                                        (W3, W4): ("e3", "cD", "e4")})
        self.assertEqual(after.core_load, {"cA": 0, "cB": 3, "cC": 3, "cD": 5})
        self.assertEqual(after.link_load[("cA", "e1")], 0)

    def test_no_way_around_is_infeasible_naming_the_failed_devices(self):
        after = reroute_without(self.DEVICES, self.LINKS, self.DEMANDS, {"cA", "cC"})
        self.assertEqual(paths(after), {(W3, W4): ("e3", "cD", "e4")})
        self.assertEqual(after.infeasible, {
            (W1, W2): "no path from edge e1 to edge e2 without the failed device(s) cA, cC"})

    def test_a_failed_edge_makes_its_demands_infeasible(self):
        after = reroute_without(self.DEVICES, self.LINKS, self.DEMANDS, ["e4"])
        self.assertEqual(paths(after), {(W1, W2): ("e1", "cA", "e2")})
        self.assertEqual(after.infeasible, {(W3, W4): "its target edge e4 failed"})
        self.assertEqual(after.core_load["cD"], 0)

    def test_limits_still_hold_after_a_failure(self):
        devices = [edge("e1"), edge("e2"), core("cA"), core("cB", limit=4)]
        links = [Link("e1", "cA"), Link("cA", "e2"), Link("e1", "cB"), Link("cB", "e2")]
        after = reroute_without(devices, links, [demand(W1, W2, "e1", "e2", 5)], {"cA"})
        self.assertEqual(after.routes, {})
        self.assertIn("core cB's processing limit (0 of 4 entries/s in use)",
                      after.infeasible[(W1, W2)])

    def test_an_unknown_failed_device_is_refused(self):
        with self.assertRaises(ValueError) as caught:
            reroute_without(self.DEVICES, self.LINKS, self.DEMANDS, {"cZ", "cA"})
        self.assertEqual(str(caught.exception), "failed devices: unknown device ID(s) cZ")


class BadInputTests(TestCase):
    DEVICES = [edge("e1"), edge("e2"), core("c1")]
    LINKS = [Link("e1", "c1"), Link("c1", "e2")]

    def refused(self, devices, links, demands, message):
        with self.assertRaises(ValueError) as caught:
            compute_routes(devices, links, demands)
        self.assertIn(message, str(caught.exception))

    def test_duplicate_device_ids(self):
        self.refused(self.DEVICES + [core("e1")], self.LINKS, [], "device 'e1' is given twice")

    def test_unknown_role(self):
        self.refused([Device("x", "router", "x:1")], [], [],
                     "device 'x': role must be one of edge, core, not 'router'")

    def test_unknown_devices_in_links(self):
        self.refused(self.DEVICES, self.LINKS + [Link("c1", "c9")], [],
                     "link c1-c9: unknown device ID 'c9'")

    def test_bad_links(self):
        self.refused(self.DEVICES, [Link("c1", "c1")], [], "link c1-c1 joins a device to itself")
        self.refused(self.DEVICES, self.LINKS + [Link("c1", "e1")], [],
                     "link c1-e1 is given twice")
        self.refused(self.DEVICES, [Link("c1", "e1", capacity=-1)], [],
                     "link c1-e1: capacity must be a finite number >= 0, not -1")
        self.refused(self.DEVICES, [Link("c1", "e1", latency_ms=float("nan"))], [],
                     "link c1-e1: latency_ms must be a finite number >= 0, not nan")

    def test_bad_limits_and_loads(self):
        self.refused([core("c1", limit=-5)], [], [],
                     "device 'c1': processing_limit must be a finite number >= 0, not -5")
        self.refused(self.DEVICES, self.LINKS, [demand(W1, W2, "e1", "e2", bytes_=float("inf"))],
                     "demand 50:00:00:00:00:00:00:01 -> 50:00:00:00:00:00:00:02: load_bytes "
                     "must be a finite number >= 0, not inf")

    def test_unknown_devices_and_non_edges_in_demands(self):
        self.refused(self.DEVICES, self.LINKS, [demand(W1, W2, "e9", "e2")],
                     "demand 50:00:00:00:00:00:00:01 -> 50:00:00:00:00:00:00:02: source_edge: "
                     "unknown device ID 'e9'")
        self.refused(self.DEVICES, self.LINKS, [demand(W1, W2, "e1", "c1")],
                     "demand 50:00:00:00:00:00:00:01 -> 50:00:00:00:00:00:00:02: target_edge: "
                     "device 'c1' is a core, not an edge")

    def test_a_demand_given_twice_or_with_a_bad_wwn(self):
        self.refused(self.DEVICES, self.LINKS,
                     [demand(W1, W2, "e1", "e2"), demand(W1, W2, "e2", "e1")],
                     "demand 50:00:00:00:00:00:00:01 -> 50:00:00:00:00:00:00:02 is given twice")
        self.refused(self.DEVICES, self.LINKS, [demand(1 << 64, W2, "e1", "e2")],
                     "source_wwn must be a 64-bit WWN, not 18446744073709551616")


class DemandsForTests(TestCase):
    CONNECTIONS = [StorageConnection("e1", "acme", W1), StorageConnection("e2", "acme", W2),
                   StorageConnection("e2", "acme", W3)]

    def test_one_demand_per_storage_pair_with_the_summed_load(self):
        pairs = [OrderedPair("acme", W1, 0, W2, 0, load_entries=10, load_bytes=100),
                 OrderedPair("acme", W1, 1, W2, 1, load_entries=5, load_bytes=50),
                 OrderedPair("acme", W3, 0, W1, 0, load_entries=1)]
        self.assertEqual(demands_for(pairs, self.CONNECTIONS),
                         [Demand(W1, W2, "e1", "e2", 15, 150), Demand(W3, W1, "e2", "e1", 1, 0)])

    def test_an_unconnected_storage_or_one_on_two_edges_is_refused(self):
        with self.assertRaises(ValueError) as caught:
            demands_for([OrderedPair("acme", W1, 0, W4, 2, id=7)], self.CONNECTIONS)
        self.assertEqual(str(caught.exception),
                         "pair 7 (50:00:00:00:00:00:00:01 LUN 0 -> 50:00:00:00:00:00:00:04 "
                         "LUN 2): target_wwn 50:00:00:00:00:00:00:04 is not connected to any "
                         "edge")
        with self.assertRaises(ValueError) as caught:
            demands_for([], self.CONNECTIONS + [StorageConnection("e1", "acme", W3)])
        self.assertEqual(str(caught.exception),
                         "storage 50:00:00:00:00:00:00:03 is connected to both edge e2 and "
                         "edge e1")
