"""Benchmark route computation (issue 7): 1,000 demands on a 200-device topology.

``python -m tools.bench_routes [--edges 40] [--cores 160] [--demands 1000] [--runs 3] [--seed 1]``

The topology is generated from ``--seed``: the cores form a mesh-ish graph
(a connected Watts-Strogatz graph: a ring where each core links to its 4
nearest, 10% of links rewired to a random core), every edge is linked to 2
random cores; links have ``--capacity`` bytes/s (default 1.25e9, 10 Gb/s) and
0.1-5 ms latency, cores a ``--core-limit`` (default 80,000 entries/s, tight
enough that some demands find no room), and the cores fall into 8 failure
domains (each edge in one of them too). Each demand joins two different random
edges with a load of 50-2,000 entries/s of 8 KiB.

Rows, each the best of ``--runs`` runs:

``baseline``          plain networkx ``shortest_path`` (fewest hops, no limits, no
                      preferences) per demand, on the whole graph;
``compute_routes``    ``rcn.mgmt.routing.compute_routes``: fewest cores within every
                      limit, batching and latency preferences;
``... avoid domain``  the same with ``avoid_source_domain=True``.

Columns: devices, links, demands, routed, infeasible, mean cores per route
(the baseline's paths may pass through edges, which routes may not, so it can
need fewer), seconds, and the time as a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import random
import time

import networkx as nx

from rcn.mgmt.model import Device, Link
from rcn.mgmt.routing import Demand, compute_routes

DOMAINS = 8


def topology(edges: int, cores: int, demands: int, capacity: float, core_limit: float,
             seed: int):
    rng = random.Random(seed)
    mesh = nx.connected_watts_strogatz_graph(cores, 4, 0.1, seed=seed)
    core_ids = [f"c{i:03d}" for i in range(cores)]
    edge_ids = [f"e{i:02d}" for i in range(edges)]
    devices = [Device(c, "core", f"10.1.{i // 250}.{i % 250 + 1}:47001", core_limit,
                      f"site{i * DOMAINS // cores}") for i, c in enumerate(core_ids)]
    devices += [Device(e, "edge", f"10.2.0.{i + 1}:47001",
                       failure_domain=f"site{rng.randrange(DOMAINS)}")
                for i, e in enumerate(edge_ids)]
    links = [Link(core_ids[a], core_ids[b], capacity, round(rng.uniform(0.1, 5), 3))
             for a, b in mesh.edges()]
    for e in edge_ids:
        for c in rng.sample(core_ids, 2):
            links.append(Link(e, c, capacity, round(rng.uniform(0.1, 1), 3)))
    wanted = []
    for i in range(demands):
        source, target = rng.sample(edge_ids, 2)
        entries = rng.randint(50, 2000)
        wanted.append(Demand(0x5000000000000000 + 2 * i, 0x5000000000000001 + 2 * i,
                             source, target, float(entries), float(entries * 8192)))
    return devices, links, wanted


def best_of(runs: int, call):
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def baseline(devices, links, demands):
    graph = nx.Graph()
    graph.add_nodes_from(d.id for d in devices)
    graph.add_edges_from((link.a, link.b) for link in links)
    routes = {}
    for demand in demands:
        try:
            routes[demand.key] = nx.shortest_path(graph, demand.source_edge, demand.target_edge)
        except nx.NetworkXNoPath:
            pass
    return routes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=int, default=40)
    parser.add_argument("--cores", type=int, default=160)
    parser.add_argument("--demands", type=int, default=1000)
    parser.add_argument("--capacity", type=float, default=1.25e9, help="bytes/s per link")
    parser.add_argument("--core-limit", type=float, default=80000, help="entries/s per core")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    devices, links, demands = topology(args.edges, args.cores, args.demands, args.capacity,
                                       args.core_limit, args.seed)

    rows = []
    seconds, routes = best_of(args.runs, lambda: baseline(devices, links, demands))
    cores = [len([n for n in path[1:-1] if n.startswith("c")]) for path in routes.values()]
    rows.append(("baseline", len(routes), len(demands) - len(routes), cores, seconds))
    for label, avoid in (("compute_routes", False), ("... avoid domain", True)):
        seconds, result = best_of(args.runs, lambda: compute_routes(
            devices, links, demands, avoid_source_domain=avoid))
        cores = [len(route.path) - 2 for route in result.routes.values()]
        rows.append((label, len(result.routes), len(result.infeasible), cores, seconds))

    print(f"{'':18} {'devices':>7} {'links':>6} {'demands':>7} {'routed':>6} "
          f"{'infeasible':>10} {'cores':>5} {'seconds':>8} {'ratio':>6}")
    base = rows[0][-1]
    for label, routed, infeasible, cores, seconds in rows:
        mean = sum(cores) / len(cores) if cores else 0.0
        print(f"{label:18} {len(devices):7} {len(links):6} {len(demands):7} {routed:6} "
              f"{infeasible:10} {mean:5.2f} {seconds:8.3f} {seconds / base:6.1f}")


if __name__ == "__main__":
    main()
