"""The management server's REST endpoints (``/api/v1``), as :class:`~rcn.mgmt.api.Endpoint` rows.

:data:`ROUTES` is the table: method, path, handler, summary and the row's options;
:class:`Handlers` holds the handlers, each ``handler(caller, params, body)``.
Settings go to :class:`~rcn.mgmt.settings.Settings`, which checks bodies and
who may do what; its refusals (``SettingsError``: a status and the field) become
the API's JSON errors. A change of settings recomputes the routes and sends the
devices their snapshots (:meth:`MgmtServer.changed`). Reading endpoints show a
customer only its own storages, pairs, routes and figures.
"""

from __future__ import annotations

from functools import partial

from datapath.frames.names import format_wwn
from rcn.mgmt.api import ApiError, Endpoint
from rcn.mgmt.errors import SettingsError
from rcn.mgmt.server import MgmtServer

OBJECT = {"type": "object"}
_OPERATOR = {"access": "operator"}
_CHANGE = {"access": "operator", "body": OBJECT}            # the operator's, with a body
_ADD = {"access": "operator", "body": OBJECT, "status": 201}
ROTATE = {"type": "object", "additionalProperties": False, "properties": {
    "link": {"type": "array", "items": {"type": "string", "maxLength": 100},
             "minItems": 2, "maxItems": 2},
    "group": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF},
    "all": {"type": "boolean"}}}


class Handlers:
    """The handlers of one server. The settings ones (``listing``, ``read``, ``create``,
    ``change``, ``remove``) take the name of the :class:`Settings` method first."""

    def __init__(self, server: MgmtServer):
        self.server = server
        self.settings = server.settings

    def bind(self, name: str, *args):
        """The handler ``name``, its leading arguments given (the ``handler`` of a row)."""
        handler = getattr(self, name)
        return partial(handler, *args) if args else handler

    def call(self, fn, *args, change: bool = False):
        try:
            result = fn(*args)
        except SettingsError as exc:
            raise ApiError(exc.status, str(exc), exc.field) from None
        if change:
            self.server.changed()
        return result

    # -- settings, one table at a time -----------------------------------------------------------
    def listing(self, key: str, method: str, caller, params, body):
        return {key: self.call(getattr(self.settings, method), caller)}

    def read(self, method: str, caller, params, body):
        return self.call(getattr(self.settings, method), caller, params["id"])

    def create(self, method: str, caller, params, body):
        return 201, self.call(getattr(self.settings, method), caller, body, change=True)

    def change(self, method: str, caller, params, body):
        return self.call(getattr(self.settings, method), caller, params["id"], body, change=True)

    def remove(self, method: str, names: tuple[str, ...], caller, params, body):
        return self.call(getattr(self.settings, method), caller,
                         *(params[n] for n in names), change=True) or {}

    def new_customer(self, caller, params, body):
        created = self.call(self.settings.add_customer, caller, body, change=True)
        created["token"] = self.call(self.settings.new_token, caller, created["id"])
        return 201, created

    def new_token(self, caller, params, body):
        return {"token": self.call(self.settings.new_token, caller, params["id"])}

    # -- what the caller may see -----------------------------------------------------------------
    def whoami(self, caller, params, body):
        return {"operator": caller.operator, "customer": caller.customer_id}

    def own_pairs(self, caller) -> list[dict]:
        return self.call(self.settings.list_pairs, caller)

    def status(self, caller, params, body):
        return {"version": self.server.version,
                "pairs": self.server.pair_figures(self.own_pairs(caller))}

    def pairs(self, caller, params, body):
        return {"pairs": self.server.pair_figures(self.own_pairs(caller))}

    def pair(self, caller, params, body):
        return self.server.pair_figures([self.call(self.settings.get_pair, caller,
                                                   params["id"])])[0]

    def lag(self, caller, params, body):
        seconds = 300.0
        groups = {p["group"]: p["target_edge"] for p in self.own_pairs(caller)}
        return {"now": self.server.clock.seconds(), "seconds": seconds,
                "series": self.server.lag_series(groups, seconds)}

    def visible_routes(self, caller) -> tuple[list[dict], list[dict]]:
        keys = {(p["source_wwn"], p["target_wwn"]) for p in self.own_pairs(caller)}
        keys |= {(t, s) for s, t in keys}
        routing = self.server.routing
        routes = [{"source_wwn": format_wwn(r.source_wwn), "target_wwn": format_wwn(r.target_wwn),
                   "path": list(r.path)} for r in routing.routes.values()]
        infeasible = [{"source_wwn": format_wwn(k[0]), "target_wwn": format_wwn(k[1]),
                       "reason": why} for k, why in routing.infeasible.items()]
        if not caller.operator:
            routes = [r for r in routes if (r["source_wwn"], r["target_wwn"]) in keys]
            infeasible = [r for r in infeasible if (r["source_wwn"], r["target_wwn"]) in keys]
        return routes, infeasible

    def routes(self, caller, params, body):
        found, infeasible = self.visible_routes(caller)
        return {"routes": found, "infeasible": infeasible}

    def recompute(self, caller, params, body):
        self.server.changed()
        return self.routes(caller, params, body)

    def topology(self, caller, params, body):
        found, _ = self.visible_routes(caller)
        used = {hop for r in found for hop in r["path"]}
        store = self.server.store
        devices = [{"id": d.id, "role": d.role, "failure_domain": d.failure_domain}
                   for d in store.list_devices() if caller.operator or d.id in used]
        links = [{"a": link.a, "b": link.b} for link in store.list_links()
                 if caller.operator or (link.a in used and link.b in used)]
        return {"devices": devices, "links": links, "routes": found}

    def devices(self, caller, params, body):
        health = {d["id"]: d for d in self.server.distribution.devices()}
        if caller.operator:
            rows = self.call(self.settings.list_devices, caller)
        else:                                  # a customer: the devices its routes use
            found, _ = self.visible_routes(caller)
            used = {hop for r in found for hop in r["path"]}
            rows = [{"id": d.id, "role": d.role} for d in self.server.store.list_devices()
                    if d.id in used]
        now = self.server.clock.seconds()
        for row in rows:
            h = health.get(row["id"], {})
            last = h.get("last_report")
            row.update(connected=bool(h.get("connected")), version=h.get("version", 0),
                       up_to_date=bool(h.get("up_to_date")), stale=bool(h.get("stale")),
                       last_report_age_s=None if last is None else now - last)
        return {"devices": rows}

    # -- log-transfer keys (rcn.mgmt.keys): names, epochs and ages; never key material --------
    def keys(self, caller, params, body):
        return self.server.keys.listing()

    def rotate_keys(self, caller, params, body):
        given = [k for k in ("link", "group", "all") if k in body]
        if len(given) != 1:
            raise ApiError(400, 'give one of {"link": ["HOST:PORT", "HOST:PORT"]}, '
                                '{"group": N} or {"all": true}', given[1] if given else None)
        if given == ["all"] and body["all"] is not True:
            raise ApiError(400, 'all: must be true (to rotate every link and group)', "all")
        return self.call(partial(self.server.keys.rotate, link=body.get("link"),
                                 group=body.get("group"), every=given == ["all"]))

    def residual(self, caller, params, body):
        pair = self.call(self.settings.get_pair, caller, params["id"])
        d = self.server.distribution.query_residual(pair["source_edge"], pair["group"])

        def failed(failure):
            raise ApiError(503, f"edge {pair['source_edge']}: {failure.getErrorMessage()}")
        return d.addErrback(failed)


#: (method, path, (handler, its leading arguments), summary, the Endpoint's options)
ROUTES = (
    ("GET", "/whoami", ("whoami",), "who the token belongs to", {}),
    ("GET", "/status", ("status",), "pairs with state, lag, residual entries, throughput", {}),
    ("GET", "/lag", ("lag",), "lag over time per order guarantee group", {}),
    ("GET", "/topology", ("topology",), "devices, links and routes (a customer's only)", {}),
    ("GET", "/routes", ("routes",), "table 408 and the pairs without a feasible path", {}),
    ("POST", "/routes/recompute", ("recompute",), "compute and distribute routes again",
     _CHANGE),
    ("GET", "/customers", ("listing", "customers", "list_customers"),
     "customers and their contracts", _OPERATOR),
    ("POST", "/customers", ("new_customer",), "add a customer (answers its token once)", _ADD),
    ("GET", "/customers/{id}", ("read", "get_customer"),
     "one customer (a customer may read its own)", {}),
    ("PATCH", "/customers/{id}", ("change", "update_customer"), "change a contract", _CHANGE),
    ("DELETE", "/customers/{id}", ("remove", "delete_customer", ("id",)), "remove a customer",
     _OPERATOR),
    ("POST", "/customers/{id}/token", ("new_token",),
     "a new token for a customer (the old one stops working)", _CHANGE),
    ("GET", "/devices", ("devices",), "devices, and whether each runs the current settings", {}),
    ("POST", "/devices", ("create", "add_device"), "add an edge or core", _ADD),
    ("GET", "/devices/{id}", ("read", "get_device"), "one device", _OPERATOR),
    ("PATCH", "/devices/{id}", ("change", "update_device"), "change a device", _CHANGE),
    ("DELETE", "/devices/{id}", ("remove", "delete_device", ("id",)), "remove a device",
     _OPERATOR),
    ("GET", "/links", ("listing", "links", "list_links"), "links", _OPERATOR),
    ("POST", "/links", ("create", "add_link"), "add a link", _ADD),
    ("DELETE", "/links/{a}/{b}", ("remove", "delete_link", ("a", "b")), "remove a link",
     _OPERATOR),
    ("GET", "/storages", ("listing", "storages", "list_storages"),
     "storages attached to edges (table 503)", {}),
    ("POST", "/storages", ("create", "add_storage"), "attach a storage to an edge",
     {"body": OBJECT, "status": 201}),
    ("DELETE", "/storages/{wwn}", ("remove", "delete_storage", ("wwn",)), "detach a storage", {}),
    ("GET", "/pairs", ("pairs",), "ordered pairs with their figures", {}),
    ("POST", "/pairs", ("create", "add_pair"), "add an ordered pair",
     {"body": OBJECT, "status": 201}),
    ("GET", "/pairs/{id:int}", ("pair",), "one pair with its figures", {}),
    ("PATCH", "/pairs/{id:int}", ("change", "update_pair"), "change a pair's expected load",
     {"body": OBJECT}),
    ("DELETE", "/pairs/{id:int}", ("remove", "delete_pair", ("id",)), "remove a pair", {}),
    ("GET", "/keys", ("keys",), "log-transfer keys: links and groups with their epochs, "
     "send/accept state, ages and the devices each waits for (never the keys)", _OPERATOR),
    ("POST", "/keys/rotate", ("rotate_keys",), "rotate a link's key, a group's, or all "
     "(a new epoch, accept-only until every device has acknowledged it; the old one retires "
     "after the overlap, once every device sends with the new one)",
     {"access": "operator", "body": ROTATE}),
    ("GET", "/pairs/{id:int}/residual", ("residual",),
     "the residual-entry query of 【0087】 at the pair's source edge", {}),
)


def endpoints(server: MgmtServer) -> list[Endpoint]:
    handlers = Handlers(server)
    return [Endpoint(method, path, handlers.bind(*handler), summary, **options)
            for method, path, handler, summary, options in ROUTES]
