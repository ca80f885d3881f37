"""The rules above the settings store (issue 7; 【0054】-【0067】): who may change what,
the contract limits, and the tables derived from the settings.

:class:`Settings` wraps a :class:`~rcn.mgmt.store.Store`. The REST layer calls it
with the caller -- anything with ``operator`` (bool) and ``customer_id``, such as
:class:`Caller` -- and a JSON body; answers are JSON-able dicts (WWNs as
``"50:0a:09:80:00:00:00:01"``; a WWN in a body may also be 16 hex digits or an
integer). Refusals are :class:`~rcn.mgmt.errors.SettingsError` and its subclasses,
whose ``field`` and ``status`` the REST layer answers with.

Who may do what
---------------
Customers, devices and links are the operator's: a customer gets
:class:`~rcn.mgmt.errors.Forbidden` (a customer may read its own customer record,
to see its limits). Storages and pairs: the operator sees and changes all; a
customer sees and changes its own only, and another customer's is "not found",
with the very message a missing one gets -- never its data (DESIGN.md 5.4).

Contract limits (【0056】)
------------------------
A storage connection on an edge outside the customer's ``allowed_edges``, more
storages than ``max_storages``, more ordered pairs than ``max_pairs``: refused
with :class:`~rcn.mgmt.errors.LimitExceeded`, whose message names the limit and
its value (``customer acme: max_pairs is 2; it has 2 already``). Lowering a
limit below what the customer has is refused too (delete first).

Order guarantee IDs (【0064】)
---------------------------
A-1: one per (source storage, target storage); A-2: one per (source edge, target
edge); B: the pair's given group. :func:`rcn.groups.group_id` computes them,
here and at an edge (``EdgePairs.group_for``) -- the edge passes the two ends of
the route, i.e. the edges' log-transfer addresses, so A-2 IDs here are keyed by
the edges' ``log_address`` too, and the server and the edges agree. Every group must run between one source edge and one target edge and
belong to one customer (its figures and its failure Suspend are the customer's
alone): a pair whose policy would put it in another customer's group (A-2 between
two edges another customer's A-2 pairs use, or an A-1 checksum collision) is
refused with :class:`~rcn.mgmt.errors.Conflict` on ``group``.

Derived tables
--------------
* :meth:`Settings.virtual_storages` (404): for each ordered pair the source edge
  shows the target storage, and the target edge the source storage; under the
  storage's own ``virtual_wwn`` when its connection has one (【0093】: the edge
  translates both ways), else under its real WWN (the same-WWN scheme).
* :meth:`Settings.access` (405): on each edge, a customer's storage may use the
  virtual storages of its own pairs only.
* :meth:`Settings.groups`: pair ID -> order guarantee ID.
* :meth:`Settings.demands`: route computation's input, one per (source storage,
  target storage) with the loads of its pairs summed.

The snapshot (:meth:`Settings.snapshot_for`)
--------------------------------------------
What one device needs, as a JSON object the distribution sends as it is. Its
tables use the keys of the devices' TOML files (``rcn.edge.config``,
``rcn.core.config``), so a device reads them as it reads its file::

    {"format": 1,                        # this layout
     "version": 12,                      # the settings version it was built from
     "device": {"id": "edgeA", "role": "edge", "log_address": "10.0.0.1:47001"},
     "route": [                          # table 408: routes whose path has this device
        {"source_wwn": "50:0a:09:80:00:00:00:01", "target_wwn": "50:0a:09:80:00:00:00:02",
         "path": ["10.0.0.1:47001", "10.0.0.9:47001", "10.0.0.2:47001"]}],
     # an edge's only:
     "storage": [                        # 503: storages attached here
        {"wwn": "50:0a:09:80:00:00:00:01", "customer": "acme"}],
     "virtual_storage": [                # 404: what the attached arrays see here
        {"wwn": "50:0a:09:80:00:00:00:02", "partner_wwn": "50:0a:09:80:00:00:00:02",
         "partner_edge": "edgeB"}],
     "access": [                         # 405: storage_wwn may use virtual_wwn
        {"virtual_wwn": "50:0a:09:80:00:00:00:02", "storage_wwn": "50:0a:09:80:00:00:00:01"}],
     "pair": [                           # 411: pairs whose source is attached here
        {"source_wwn": "...", "source_lun": 0, "target_wwn": "...", "target_lun": 0,
         "group": 1073741831, "customer": "acme"}],
     "customer": [                       # the pairs' customers; bandwidth in bytes/s, 0: none
        {"id": "acme", "bandwidth": 0}]}

A path lists devices by their log-transfer addresses, source edge first. Rows are
sorted, so the same settings and routes give the same document.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import fields, replace
from typing import Iterable, Mapping

from datapath.frames.names import format_wwn, parse_wwn
from rcn.groups import group_id
from rcn.logxfer.routes import Address
from rcn.mgmt.errors import (Conflict, Forbidden, LimitExceeded, NotFound, SettingsError,
                             Unauthorized)
from rcn.mgmt.model import (OPERATOR, Access, Caller, CustomerRecord, Device, Link, OrderedPair,
                            RouteEntry, StorageRecord, VirtualStorage)
from rcn.mgmt.store import Store

__all__ = ["Caller", "OPERATOR", "Settings", "SNAPSHOT_FORMAT", "SettingsError",
           "NotFound", "Conflict", "Forbidden", "LimitExceeded", "Unauthorized"]

SNAPSHOT_FORMAT = 1
MIN_TOKEN = 16                 # characters; shorter ones are guessable
_MISSING = object()


# -- bodies ---------------------------------------------------------------------------------------

class _Body:
    """A JSON object sent by a client: unknown keys refused, each error naming the key."""

    def __init__(self, doc, known: Iterable[str], what: str):
        if not isinstance(doc, dict):
            raise SettingsError("body", f"body: a {what} is a JSON object, got "
                                        f"{type(doc).__name__}")
        extra = sorted(set(doc) - set(known), key=str)
        if extra:
            raise SettingsError(str(extra[0]), f"{extra[0]}: not a field of a {what} (known: "
                                               f"{', '.join(sorted(known))})")
        self.doc = doc

    def get(self, key: str, default=_MISSING):
        if key in self.doc:
            return self.doc[key]
        if default is _MISSING:
            raise SettingsError(key, f"{key}: missing")
        return default

    def wwn(self, key: str, default=_MISSING):
        if key not in self.doc:
            return self.get(key, default)
        value = self.doc[key]
        return None if value is None else _wwn_value(key, value)

    def __contains__(self, key):
        return key in self.doc


def _wwn_value(field: str, value) -> int:
    if isinstance(value, str):
        try:
            return parse_wwn(value)
        except ValueError as exc:
            raise SettingsError(field, f"{field}: {exc}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return value              # the store checks the range
    raise SettingsError(field, f"{field}: expected a WWN (\"50:0a:09:80:00:00:00:01\"), got "
                               f"{type(value).__name__} {value!r}")


def _list(field: str, value) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise SettingsError(field, f"{field}: expected a list, got {type(value).__name__} "
                                   f"{value!r}")
    return tuple(value)


def _fmt(wwn: int | None) -> str | None:
    return None if wwn is None else format_wwn(wwn)


class Settings:
    """Settings as the REST layer and the distribution use them (see the module docstring)."""

    def __init__(self, store: Store):
        self.store = store

    def version(self) -> int:
        return self.store.version()

    # -- who is calling -----------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Caller:
        """The caller a bearer token stands for; :class:`Unauthorized` if none."""
        owner = self.store.token_owner(token) if token else None
        if owner is None:
            raise Unauthorized("token", "token: missing or unknown (send "
                                        "'Authorization: Bearer <token>')")
        kind, customer_id = owner
        return OPERATOR if kind == "operator" else Caller(customer_id=customer_id)

    def set_token(self, caller, customer_id: str | None, token: str) -> None:
        """Give ``customer_id`` (None: the operator) the API token ``token`` (kept as its
        sha256); its old token stops working."""
        self._operator_only(caller, "tokens")
        if not isinstance(token, str) or len(token) < MIN_TOKEN:
            raise SettingsError("token", f"token: at least {MIN_TOKEN} characters")
        self.store.set_token(customer_id, token)

    def new_token(self, caller, customer_id: str | None) -> str:
        """A fresh random token for ``customer_id`` (None: the operator), set and returned:
        the only time it is seen, since the store keeps its digest only."""
        token = secrets.token_urlsafe(32)
        self.set_token(caller, customer_id, token)
        return token

    def _operator_only(self, caller, what: str) -> None:
        if not _is_operator(caller):
            raise Forbidden(what, f"{what}: the operator's settings; "
                                  f"{_describe(caller)} may not see or change them")

    # -- customers ----------------------------------------------------------------------------

    _CUSTOMER = ("id", "name", "allowed_edges", "max_storages", "max_pairs", "bandwidth")

    def _customer_json(self, c: CustomerRecord) -> dict:
        return {"id": c.id, "name": c.name, "allowed_edges": list(c.allowed_edges),
                "max_storages": c.max_storages, "max_pairs": c.max_pairs,
                "bandwidth": c.bandwidth,
                "storages": len(self.store.list_storages(c.id)),
                "pairs": len(self.store.list_pairs(c.id))}

    def list_customers(self, caller) -> list[dict]:
        self._operator_only(caller, "customers")
        return [self._customer_json(c) for c in self.store.list_customers()]

    def get_customer(self, caller, customer_id: str) -> dict:
        if not _is_operator(caller) and customer_id != caller.customer_id:
            self._operator_only(caller, "customers")
        return self._customer_json(self.store.get_customer(customer_id))

    def add_customer(self, caller, doc: dict) -> dict:
        self._operator_only(caller, "customers")
        body = _Body(doc, self._CUSTOMER, "customer")
        c = CustomerRecord(body.get("id"), body.get("name", ""),
                           _list("allowed_edges", body.get("allowed_edges", [])),
                           body.get("max_storages", None), body.get("max_pairs", None),
                           body.get("bandwidth", 0))
        return self._customer_json(self.store.add_customer(c))

    def update_customer(self, caller, customer_id: str, doc: dict) -> dict:
        self._operator_only(caller, "customers")
        body = _Body(doc, self._CUSTOMER, "customer")
        with self.store.transaction():
            old = self.store.get_customer(customer_id)
            if body.get("id", customer_id) != customer_id:
                raise SettingsError("id", f"id: a customer's ID stays {customer_id!r}")
            c = CustomerRecord(customer_id, body.get("name", old.name),
                               _list("allowed_edges",
                                     body.get("allowed_edges", old.allowed_edges)),
                               body.get("max_storages", old.max_storages),
                               body.get("max_pairs", old.max_pairs),
                               body.get("bandwidth", old.bandwidth))
            c = self.store.update_customer(c)
            self._check_usage_within(c)
        return self._customer_json(c)

    def _check_usage_within(self, c: CustomerRecord) -> None:
        storages, pairs = self.store.list_storages(c.id), self.store.list_pairs(c.id)
        who = f"customer {c.id}"
        if c.max_storages is not None and len(storages) > c.max_storages:
            raise Conflict("max_storages", f"{who}: max_storages {c.max_storages} is below the "
                                           f"{len(storages)} storages it has; delete some first")
        if c.max_pairs is not None and len(pairs) > c.max_pairs:
            raise Conflict("max_pairs", f"{who}: max_pairs {c.max_pairs} is below the "
                                        f"{len(pairs)} pairs it has; delete some first")
        if c.allowed_edges:
            outside = sorted({s.edge_id for s in storages} - set(c.allowed_edges))
            if outside:
                raise Conflict("allowed_edges", f"{who}: allowed_edges leaves out "
                                                f"{', '.join(outside)}, where it has storages; "
                                                f"move or delete them first")

    def delete_customer(self, caller, customer_id: str) -> None:
        self._operator_only(caller, "customers")
        self.store.delete_customer(customer_id)

    # -- devices ------------------------------------------------------------------------------

    _DEVICE = tuple(f.name for f in fields(Device))

    def list_devices(self, caller) -> list[dict]:
        self._operator_only(caller, "devices")
        return [_record_json(d) for d in self.store.list_devices()]

    def get_device(self, caller, device_id: str) -> dict:
        self._operator_only(caller, "devices")
        return _record_json(self.store.get_device(device_id))

    def add_device(self, caller, doc: dict) -> dict:
        self._operator_only(caller, "devices")
        body = _Body(doc, self._DEVICE, "device")
        d = Device(body.get("id"), body.get("role"), body.get("log_address"),
                   body.get("processing_limit", 0.0), body.get("failure_domain", ""))
        return _record_json(self.store.add_device(d))

    def update_device(self, caller, device_id: str, doc: dict) -> dict:
        self._operator_only(caller, "devices")
        body = _Body(doc, self._DEVICE, "device")
        with self.store.transaction():
            old = self.store.get_device(device_id)
            if body.get("id", device_id) != device_id:
                raise SettingsError("id", f"id: a device's ID stays {device_id!r}")
            d = self.store.update_device(replace(old, **{k: body.doc[k] for k in body.doc
                                                          if k != "id"}))
            # an edge's address is part of its A-2 group IDs
            self._check_groups("log_address", None)
        return _record_json(d)

    def delete_device(self, caller, device_id: str) -> None:
        self._operator_only(caller, "devices")
        self.store.delete_device(device_id)

    # -- links --------------------------------------------------------------------------------

    _LINK = tuple(f.name for f in fields(Link))

    def list_links(self, caller) -> list[dict]:
        self._operator_only(caller, "links")
        return [_record_json(link) for link in self.store.list_links()]

    def get_link(self, caller, a: str, b: str) -> dict:
        self._operator_only(caller, "links")
        return _record_json(self.store.get_link(a, b))

    def add_link(self, caller, doc: dict) -> dict:
        self._operator_only(caller, "links")
        body = _Body(doc, self._LINK, "link")
        link = Link(body.get("a"), body.get("b"), body.get("capacity", 0.0),
                    body.get("latency_ms", 0.0))
        return _record_json(self.store.add_link(link))

    def update_link(self, caller, a: str, b: str, doc: dict) -> dict:
        self._operator_only(caller, "links")
        body = _Body(doc, ("capacity", "latency_ms"), "link change")
        with self.store.transaction():
            old = self.store.get_link(a, b)
            link = self.store.update_link(replace(old, **body.doc))
        return _record_json(link)

    def delete_link(self, caller, a: str, b: str) -> None:
        self._operator_only(caller, "links")
        self.store.delete_link(a, b)

    # -- storage connections ------------------------------------------------------------------

    _STORAGE = ("storage_wwn", "edge_id", "customer_id", "virtual_wwn")

    def _own_storage(self, caller, storage_wwn, field: str = "storage_wwn") -> StorageRecord:
        """The caller's storage; another customer's is "not found", word for word."""
        wwn = _wwn_arg(field, storage_wwn)
        try:
            s = self.store.get_storage(wwn)
        except NotFound:
            s = None
        if s is None or not _is_operator(caller) and s.customer_id != caller.customer_id:
            raise NotFound(field, f"{field} {format_wwn(wwn)}: no storage with this WWN is "
                                  f"connected")
        return s

    def _customer_or_none(self, customer_id) -> CustomerRecord | None:
        """The customer, or None (the store then refuses the reference, naming it)."""
        try:
            return self.store.get_customer(customer_id)
        except NotFound:
            return None

    def _customer_of_body(self, caller, body: _Body, what: str) -> str:
        if _is_operator(caller):
            return body.get("customer_id")
        customer_id = body.get("customer_id", caller.customer_id)
        if customer_id != caller.customer_id:
            raise Forbidden("customer_id", f"customer_id: {_describe(caller)} adds {what} for "
                                           f"itself only")
        return customer_id

    def _check_edge_allowed(self, c: CustomerRecord, edge_id: str) -> None:
        if c.allowed_edges and edge_id not in c.allowed_edges:
            raise LimitExceeded("allowed_edges", f"customer {c.id}: allowed_edges is "
                                                 f"{', '.join(c.allowed_edges)}; {edge_id} is "
                                                 f"not one of them")

    def list_storages(self, caller) -> list[dict]:
        return [_storage_json(s) for s in self.store.list_storages(_scope(caller))]

    def get_storage(self, caller, storage_wwn) -> dict:
        return _storage_json(self._own_storage(caller, storage_wwn))

    def add_storage(self, caller, doc: dict) -> dict:
        body = _Body(doc, self._STORAGE, "storage connection")
        customer_id = self._customer_of_body(caller, body, "storages")
        s = StorageRecord(body.get("edge_id"), customer_id, body.wwn("storage_wwn"),
                          body.wwn("virtual_wwn", None))
        with self.store.transaction():
            c = self._customer_or_none(customer_id)
            if c is not None:
                self._check_edge_allowed(c, s.edge_id)
                have = len(self.store.list_storages(c.id))
                if c.max_storages is not None and have >= c.max_storages:
                    raise LimitExceeded("max_storages", f"customer {c.id}: max_storages is "
                                                        f"{c.max_storages}; it has {have} already")
            s = self.store.add_storage(s)
        return _storage_json(s)

    def update_storage(self, caller, storage_wwn, doc: dict) -> dict:
        """Move a storage to another edge, or set or clear its virtual WWN."""
        body = _Body(doc, ("edge_id", "virtual_wwn"), "storage connection change")
        with self.store.transaction():
            old = self._own_storage(caller, storage_wwn)
            s = StorageRecord(body.get("edge_id", old.edge_id), old.customer_id,
                              old.storage_wwn, body.wwn("virtual_wwn", old.virtual_wwn))
            self._check_edge_allowed(self.store.get_customer(old.customer_id), s.edge_id)
            s = self.store.update_storage(s)
            self._check_groups("edge_id", {p.id for p in self.store.list_pairs(old.customer_id)
                                           if old.storage_wwn in (p.source_wwn, p.target_wwn)})
        return _storage_json(s)

    def delete_storage(self, caller, storage_wwn) -> None:
        with self.store.transaction():
            s = self._own_storage(caller, storage_wwn)
            self.store.delete_storage(s.storage_wwn)

    # -- ordered pairs ------------------------------------------------------------------------

    _PAIR = ("customer_id", "source_wwn", "source_lun", "target_wwn", "target_lun", "group",
             "policy", "load_entries", "load_bytes")

    def _own_pair(self, caller, pair_id) -> OrderedPair:
        if isinstance(pair_id, str) and pair_id.isdigit():
            pair_id = int(pair_id)
        p = self.store.get_pair(pair_id)
        if not _is_operator(caller) and p.customer_id != caller.customer_id:
            raise NotFound("id", f"id {pair_id!r}: no such pair")
        return p

    def _pair_json(self, p: OrderedPair, view: "_View | None" = None) -> dict:
        view = view or _View(self.store)
        source, target = view.storages[p.source_wwn], view.storages[p.target_wwn]
        return {"id": p.id, "customer_id": p.customer_id,
                "source_wwn": format_wwn(p.source_wwn), "source_lun": p.source_lun,
                "target_wwn": format_wwn(p.target_wwn), "target_lun": p.target_lun,
                "policy": p.policy, "group": view.group(p),
                "source_edge": source.edge_id, "target_edge": target.edge_id,
                "load_entries": p.load_entries, "load_bytes": p.load_bytes}

    def list_pairs(self, caller) -> list[dict]:
        view = _View(self.store)
        scope = _scope(caller)
        return [self._pair_json(p, view) for p in view.pairs
                if scope is None or p.customer_id == scope]

    def get_pair(self, caller, pair_id) -> dict:
        return self._pair_json(self._own_pair(caller, pair_id))

    def add_pair(self, caller, doc: dict) -> dict:
        """A pair between two of a customer's storages; ``customer_id`` defaults to the
        source storage's (operator) or the caller (customer)."""
        body = _Body(doc, self._PAIR, "pair")
        source_wwn, target_wwn = body.wwn("source_wwn"), body.wwn("target_wwn")
        with self.store.transaction():
            # another customer's storage reads as one that is not connected
            source = self._own_storage(caller, source_wwn, "source_wwn")
            self._own_storage(caller, target_wwn, "target_wwn")
            if _is_operator(caller) and "customer_id" not in body:
                customer_id = source.customer_id
            else:
                customer_id = self._customer_of_body(caller, body, "pairs")
            p = OrderedPair(customer_id, source_wwn, body.get("source_lun"), target_wwn,
                            body.get("target_lun"), body.get("group", 0),
                            body.get("policy", "A-1"), body.get("load_entries", 0.0),
                            body.get("load_bytes", 0.0))
            c = self._customer_or_none(customer_id)
            if c is not None:
                have = len(self.store.list_pairs(c.id))
                if c.max_pairs is not None and have >= c.max_pairs:
                    raise LimitExceeded("max_pairs", f"customer {c.id}: max_pairs is "
                                                     f"{c.max_pairs}; it has {have} already")
            p = self.store.add_pair(p)
            self._check_groups("group", {p.id})
        return self._pair_json(p)

    def update_pair(self, caller, pair_id, doc: dict) -> dict:
        """A pair's expected load (route computation's input); what a running pair is
        -- its volumes and group -- stays: delete it and add another to change that."""
        body = _Body(doc, ("load_entries", "load_bytes"), "pair change")
        with self.store.transaction():
            old = self._own_pair(caller, pair_id)
            p = self.store.update_pair(replace(old, **body.doc))
        return self._pair_json(p)

    def delete_pair(self, caller, pair_id) -> None:
        with self.store.transaction():
            self.store.delete_pair(self._own_pair(caller, pair_id).id)

    def _check_groups(self, field: str, subject: set[int] | None) -> None:
        """Every group runs between one source edge and one target edge, for one customer.
        ``subject``: the pairs just written (None: any pair), the ones to blame."""
        view = _View(self.store)
        members = defaultdict(list)
        for p in view.pairs:
            members[view.group(p)].append(p)
        for gid, ps in sorted(members.items()):
            kinds = {(p.customer_id,) + view.edges(p) for p in ps}
            if len(kinds) < 2 or subject is not None and not subject & {p.id for p in ps}:
                continue
            mine = max((p for p in ps if subject is None or p.id in subject),
                       key=lambda p: p.id)
            other = next(p for p in ps if (p.customer_id,) + view.edges(p) !=
                         (mine.customer_id,) + view.edges(mine))
            how = (f"group {gid:#x}: policy {mine.policy} gives pair {mine.id} "
                   f"({' -> '.join(view.edges(mine))}) the order guarantee ID of ")
            if other.customer_id != mine.customer_id:
                why = " (A-2 IDs name only the two edges)" if mine.policy == "A-2" else ""
                raise Conflict(field, how + f"another customer's pairs{why}; use policy "
                                            f"A-1, or B with a group of its own")
            raise Conflict(field, how + f"pair {other.id}, which runs "
                                        f"{' -> '.join(view.edges(other))}; a group runs "
                                        f"between one source edge and one target edge: use "
                                        f"policy B with a group of its own")

    # -- derived tables -----------------------------------------------------------------------

    def virtual_storages(self) -> list[VirtualStorage]:
        """Table 404 on every edge (see the module docstring)."""
        return _View(self.store).virtual_storages()

    def access(self) -> list[Access]:
        """Table 405 on every edge: each storage may use its own pairs' virtual storages."""
        return _View(self.store).access()

    def groups(self) -> dict[int, int]:
        """Pair ID -> order guarantee ID, by each pair's policy (【0064】)."""
        view = _View(self.store)
        return {p.id: view.group(p) for p in view.pairs}

    def demands(self, *, reverse: bool = False) -> list[dict]:
        """Route computation's input: one per (source storage, target storage), with
        ``source_wwn, target_wwn, source_edge, target_edge`` (device IDs) and the summed
        ``load_entries, load_bytes`` of its pairs, sorted by WWNs. ``reverse``: also the
        way back with no load (a pair turned round for failback needs that route)."""
        view = _View(self.store)
        out: dict[tuple[int, int], dict] = {}
        for p in view.pairs:
            source, target = view.edges(p)
            d = out.setdefault((p.source_wwn, p.target_wwn), {
                "source_wwn": p.source_wwn, "target_wwn": p.target_wwn,
                "source_edge": source, "target_edge": target,
                "load_entries": 0.0, "load_bytes": 0.0})
            d["load_entries"] += p.load_entries
            d["load_bytes"] += p.load_bytes
        if reverse:
            for (s, t), d in list(out.items()):
                out.setdefault((t, s), {"source_wwn": t, "target_wwn": s,
                                        "source_edge": d["target_edge"],
                                        "target_edge": d["source_edge"],
                                        "load_entries": 0.0, "load_bytes": 0.0})
        return [out[k] for k in sorted(out)]

    def snapshot_for(self, device_id: str,
                     routes: Mapping[object, RouteEntry] | Iterable[RouteEntry]) -> dict:
        """The JSON document ``device_id`` runs with (format: the module docstring).
        ``routes``: table 408 as route computation gives it (paths of device IDs); only
        those through the device go in. :class:`NotFound` (a ``LookupError``) for a
        device the settings do not name."""
        view = _View(self.store)
        device = view.devices.get(device_id)
        if device is None:
            raise NotFound("device_id", f"device_id {device_id!r}: no such device")
        if isinstance(routes, Mapping):
            routes = routes.values()
        rows = []
        for r in sorted(routes, key=lambda r: (r.source_wwn, r.target_wwn)):
            if device_id not in r.path:
                continue
            for hop in r.path:
                if hop not in view.devices:
                    raise SettingsError("routes", f"routes: {format_wwn(r.source_wwn)} -> "
                                                  f"{format_wwn(r.target_wwn)} goes through "
                                                  f"{hop!r}, which is not a device; compute "
                                                  f"the routes again")
            rows.append({"source_wwn": format_wwn(r.source_wwn),
                         "target_wwn": format_wwn(r.target_wwn),
                         "path": [view.devices[hop].log_address for hop in r.path]})
        doc = {"format": SNAPSHOT_FORMAT, "version": self.store.version(),
               "device": {"id": device.id, "role": device.role,
                          "log_address": device.log_address},
               "route": rows}
        if device.role != "edge":
            return doc
        pairs = [p for p in view.pairs if view.edges(p)[0] == device_id]
        pairs.sort(key=lambda p: (p.source_wwn, p.source_lun, p.target_wwn, p.target_lun))
        doc["storage"] = [{"wwn": format_wwn(s.storage_wwn), "customer": s.customer_id}
                          for s in sorted(view.storages.values(), key=lambda s: s.storage_wwn)
                          if s.edge_id == device_id]
        doc["virtual_storage"] = [{"wwn": format_wwn(v.virtual_wwn),
                                   "partner_wwn": format_wwn(v.partner_wwn),
                                   "partner_edge": v.partner_edge_id}
                                  for v in view.virtual_storages() if v.edge_id == device_id]
        doc["access"] = [{"virtual_wwn": format_wwn(a.virtual_wwn),
                          "storage_wwn": format_wwn(a.storage_wwn)}
                         for a in view.access() if a.edge_id == device_id]
        doc["pair"] = [{"source_wwn": format_wwn(p.source_wwn), "source_lun": p.source_lun,
                        "target_wwn": format_wwn(p.target_wwn), "target_lun": p.target_lun,
                        "group": view.group(p), "customer": p.customer_id} for p in pairs]
        doc["customer"] = [{"id": c.id, "bandwidth": c.bandwidth}
                           for c in view.customers(sorted({p.customer_id for p in pairs}))]
        return doc


class _View:
    """One read of the settings for derived tables (a few queries, then plain dicts)."""

    def __init__(self, store: Store):
        self.store = store
        self.devices = {d.id: d for d in store.list_devices()}
        self.storages = {s.storage_wwn: s for s in store.list_storages()}
        self.pairs = store.list_pairs()
        self._addresses = {d.id: Address.parse(d.log_address) for d in self.devices.values()}

    def edges(self, p: OrderedPair) -> tuple[str, str]:
        return self.storages[p.source_wwn].edge_id, self.storages[p.target_wwn].edge_id

    def group(self, p: OrderedPair) -> int:
        source, target = self.edges(p)
        return group_id(p.policy, p.group, p.source_wwn, p.target_wwn,
                        self._addresses[source], self._addresses[target])

    def shown_as(self, wwn: int) -> int:
        """The WWN edges show the storage under: its virtual WWN, else its own."""
        virtual = self.storages[wwn].virtual_wwn
        return wwn if virtual is None else virtual

    def virtual_storages(self) -> list[VirtualStorage]:
        rows = set()
        for p in self.pairs:
            source, target = self.edges(p)
            rows.add(VirtualStorage(source, self.shown_as(p.target_wwn), target, p.target_wwn))
            rows.add(VirtualStorage(target, self.shown_as(p.source_wwn), source, p.source_wwn))
        return sorted(rows, key=lambda v: (v.edge_id, v.virtual_wwn))

    def access(self) -> list[Access]:
        rows = set()
        for p in self.pairs:
            source, target = self.edges(p)
            rows.add(Access(source, self.shown_as(p.target_wwn), p.source_wwn))
            rows.add(Access(target, self.shown_as(p.source_wwn), p.target_wwn))
        return sorted(rows, key=lambda a: (a.edge_id, a.virtual_wwn, a.storage_wwn))

    def customers(self, ids: Iterable[str]) -> list[CustomerRecord]:
        return [self.store.get_customer(i) for i in ids]


def _is_operator(caller) -> bool:
    return bool(getattr(caller, "operator", False))


def _describe(caller) -> str:
    return "the operator" if _is_operator(caller) else \
        f"customer {getattr(caller, 'customer_id', None)}"


def _scope(caller) -> str | None:
    """The customer whose objects the caller sees (None: every one)."""
    if _is_operator(caller):
        return None
    if not getattr(caller, "customer_id", None):
        raise Unauthorized("token", "token: the caller is neither the operator nor a customer")
    return caller.customer_id


def _wwn_arg(field: str, value) -> int:
    """A WWN from a URL or a caller: anything that is not one is simply not found."""
    try:
        return _wwn_value(field, value)
    except SettingsError:
        raise NotFound(field, f"{field} {value!r}: no storage with this WWN is "
                              f"connected") from None


def _record_json(record) -> dict:
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _storage_json(s: StorageRecord) -> dict:
    return {"storage_wwn": format_wwn(s.storage_wwn), "edge_id": s.edge_id,
            "customer_id": s.customer_id, "virtual_wwn": _fmt(s.virtual_wwn)}

