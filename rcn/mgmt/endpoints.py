"""The management server's REST endpoints (``/api/v1``), as :class:`~rcn.mgmt.api.Endpoint` rows.

Settings go to :class:`~rcn.mgmt.settings.Settings`, which checks bodies and
who may do what; its refusals (``SettingsError``: a status and the field) become
the API's JSON errors. A change of settings recomputes the routes and sends the
devices their snapshots (:meth:`MgmtServer.changed`). Reading endpoints show a
customer only its own storages, pairs, routes and figures.
"""

from __future__ import annotations

from datapath.frames.names import format_wwn
from rcn.mgmt.api import ApiError, Endpoint
from rcn.mgmt.server import MgmtServer
from rcn.mgmt.errors import SettingsError

OBJECT = {"type": "object"}


def endpoints(server: MgmtServer) -> list[Endpoint]:
    s = server.settings

    def call(fn, *args, change: bool = False):
        try:
            result = fn(*args)
        except SettingsError as exc:
            raise ApiError(exc.status, str(exc), exc.field) from None
        if change:
            server.changed()
        return result

    def whoami(caller, params, body):
        return {"operator": caller.operator, "customer": caller.customer_id}

    def own_pairs(caller) -> list[dict]:
        return call(s.list_pairs, caller)

    def status(caller, params, body):
        return {"version": server.version, "pairs": server.pair_figures(own_pairs(caller))}

    def lag(caller, params, body):
        seconds = 300.0
        groups = {p["group"]: p["target_edge"] for p in own_pairs(caller)}
        return {"now": server.clock.seconds(), "seconds": seconds,
                "series": server.lag_series(groups, seconds)}

    def visible_routes(caller) -> tuple[list[dict], list[dict]]:
        pairs = own_pairs(caller)
        keys = {(p["source_wwn"], p["target_wwn"]) for p in pairs}
        keys |= {(t, s_) for s_, t in keys}
        routes = [{"source_wwn": format_wwn(r.source_wwn), "target_wwn": format_wwn(r.target_wwn),
                   "path": list(r.path)} for r in server.routing.routes.values()]
        infeasible = [{"source_wwn": format_wwn(k[0]), "target_wwn": format_wwn(k[1]),
                       "reason": why} for k, why in server.routing.infeasible.items()]
        if not caller.operator:
            routes = [r for r in routes if (r["source_wwn"], r["target_wwn"]) in keys]
            infeasible = [r for r in infeasible if (r["source_wwn"], r["target_wwn"]) in keys]
        return routes, infeasible

    def routes(caller, params, body):
        found, infeasible = visible_routes(caller)
        return {"routes": found, "infeasible": infeasible}

    def recompute(caller, params, body):
        server.changed()
        return routes(caller, params, body)

    def topology(caller, params, body):
        found, _ = visible_routes(caller)
        used = {hop for r in found for hop in r["path"]}
        devices = [{"id": d.id, "role": d.role, "failure_domain": d.failure_domain}
                   for d in server.store.list_devices() if caller.operator or d.id in used]
        links = [{"a": link.a, "b": link.b} for link in server.store.list_links()
                 if caller.operator or (link.a in used and link.b in used)]
        return {"devices": devices, "links": links, "routes": found}

    def devices(caller, params, body):
        health = {d["id"]: d for d in server.distribution.devices()}
        if caller.operator:
            rows = call(s.list_devices, caller)
        else:                                  # a customer: the devices its routes use
            found, _ = visible_routes(caller)
            used = {hop for r in found for hop in r["path"]}
            rows = [{"id": d.id, "role": d.role} for d in server.store.list_devices()
                    if d.id in used]
        now = server.clock.seconds()
        for row in rows:
            h = health.get(row["id"], {})
            last = h.get("last_report")
            row.update(connected=bool(h.get("connected")), version=h.get("version", 0),
                       up_to_date=bool(h.get("up_to_date")), stale=bool(h.get("stale")),
                       last_report_age_s=None if last is None else now - last)
        return {"devices": rows}

    def residual(caller, params, body):
        pair = call(s.get_pair, caller, params["id"])
        d = server.distribution.query_residual(pair["source_edge"], pair["group"])

        def failed(failure):
            raise ApiError(503, f"edge {pair['source_edge']}: {failure.getErrorMessage()}")
        return d.addErrback(failed)

    def new_customer(caller, params, body):
        created = call(s.add_customer, caller, body, change=True)
        created["token"] = call(s.new_token, caller, created["id"])
        return 201, created

    rows = [
        Endpoint("GET", "/whoami", whoami, "who the token belongs to"),
        Endpoint("GET", "/status", status, "pairs with state, lag, residual entries, throughput"),
        Endpoint("GET", "/lag", lag, "lag over time per order guarantee group"),
        Endpoint("GET", "/topology", topology, "devices, links and routes (a customer's only)"),
        Endpoint("GET", "/routes", routes, "table 408 and the pairs without a feasible path"),
        Endpoint("POST", "/routes/recompute", recompute, "compute and distribute routes again",
                 "operator", OBJECT),
        Endpoint("GET", "/customers", lambda c, p, b: {"customers": call(s.list_customers, c)},
                 "customers and their contracts", "operator"),
        Endpoint("POST", "/customers", new_customer, "add a customer (answers its token once)",
                 "operator", OBJECT, status=201),
        Endpoint("GET", "/customers/{id}", lambda c, p, b: call(s.get_customer, c, p["id"]),
                 "one customer (a customer may read its own)"),
        Endpoint("PATCH", "/customers/{id}",
                 lambda c, p, b: call(s.update_customer, c, p["id"], b, change=True),
                 "change a contract", "operator", OBJECT),
        Endpoint("DELETE", "/customers/{id}",
                 lambda c, p, b: call(s.delete_customer, c, p["id"], change=True) or {},
                 "remove a customer", "operator"),
        Endpoint("POST", "/customers/{id}/token",
                 lambda c, p, b: {"token": call(s.new_token, c, p["id"])},
                 "a new token for a customer (the old one stops working)", "operator", OBJECT),
        Endpoint("GET", "/devices", devices, "devices, and whether each runs the current "
                 "settings"),
        Endpoint("POST", "/devices", lambda c, p, b: (201, call(s.add_device, c, b, change=True)),
                 "add an edge or core", "operator", OBJECT, status=201),
        Endpoint("GET", "/devices/{id}", lambda c, p, b: call(s.get_device, c, p["id"]),
                 "one device", "operator"),
        Endpoint("PATCH", "/devices/{id}",
                 lambda c, p, b: call(s.update_device, c, p["id"], b, change=True),
                 "change a device", "operator", OBJECT),
        Endpoint("DELETE", "/devices/{id}",
                 lambda c, p, b: call(s.delete_device, c, p["id"], change=True) or {},
                 "remove a device", "operator"),
        Endpoint("GET", "/links", lambda c, p, b: {"links": call(s.list_links, c)},
                 "links", "operator"),
        Endpoint("POST", "/links", lambda c, p, b: (201, call(s.add_link, c, b, change=True)),
                 "add a link", "operator", OBJECT, status=201),
        Endpoint("DELETE", "/links/{a}/{b}",
                 lambda c, p, b: call(s.delete_link, c, p["a"], p["b"], change=True) or {},
                 "remove a link", "operator"),
        Endpoint("GET", "/storages", lambda c, p, b: {"storages": call(s.list_storages, c)},
                 "storages attached to edges (table 503)"),
        Endpoint("POST", "/storages",
                 lambda c, p, b: (201, call(s.add_storage, c, b, change=True)),
                 "attach a storage to an edge", body=OBJECT, status=201),
        Endpoint("DELETE", "/storages/{wwn}",
                 lambda c, p, b: call(s.delete_storage, c, p["wwn"], change=True) or {},
                 "detach a storage"),
        Endpoint("GET", "/pairs", lambda c, p, b: {"pairs": server.pair_figures(own_pairs(c))},
                 "ordered pairs with their figures"),
        Endpoint("POST", "/pairs", lambda c, p, b: (201, call(s.add_pair, c, b, change=True)),
                 "add an ordered pair", body=OBJECT, status=201),
        Endpoint("GET", "/pairs/{id:int}",
                 lambda c, p, b: server.pair_figures([call(s.get_pair, c, p["id"])])[0],
                 "one pair with its figures"),
        Endpoint("PATCH", "/pairs/{id:int}",
                 lambda c, p, b: call(s.update_pair, c, p["id"], b, change=True),
                 "change a pair's expected load", body=OBJECT),
        Endpoint("DELETE", "/pairs/{id:int}",
                 lambda c, p, b: call(s.delete_pair, c, p["id"], change=True) or {},
                 "remove a pair"),
        Endpoint("GET", "/pairs/{id:int}/residual", residual,
                 "the residual-entry query of 【0087】 at the pair's source edge"),
    ]
    return rows
