"""The settings tables (issue 7; DESIGN.md 4): each kind of record as the store keeps it.

One :class:`Table` per kind -- :data:`CUSTOMERS`, :data:`DEVICES`, :data:`LINKS`,
:data:`STORAGES` (503) and :data:`PAIRS` -- says only what differs between them:
its SQL table and columns, how a record becomes a row and back, how a key finds
one, the checks of a record's own values (:meth:`Table.check`, no database), and
the rules between records (:meth:`Table.admit` before a write, :meth:`Table.settle`
after it, :meth:`Table.release` before a delete), each refusal a
:class:`~rcn.mgmt.errors.SettingsError` naming the field. The one create / get /
list / update / delete is :class:`rcn.mgmt.store.SQLiteStore`'s; what is refused is
in that module's doc.

The rules read the database through ``db``, the store: ``db.one(sql, *args)`` (the
first row) and ``db.execute(sql, *args)``, plus its public getters.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields, replace

from datapath.frames.names import format_wwn
from rcn.config import ip_address
from rcn.groups import MAX_B_GROUP, POLICIES
from rcn.mgmt.errors import Conflict, NotFound, SettingsError
from rcn.mgmt.model import CustomerRecord, Device, Link, OrderedPair, StorageRecord
from rcn.mgmtlink.commands import ROLES

__all__ = ["Table", "CUSTOMERS", "DEVICES", "LINKS", "STORAGES", "PAIRS", "MAX_LUN", "check_text"]

MAX_LUN = 0xFFFF            # PAIR_CREATE carries the source LUN in two bytes (RCN CONTROL CDB)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_TEXT = 200


# -- checks of one value --------------------------------------------------------------------------

def check_text(field: str, value, *, ident: bool = False, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise SettingsError(field, f"{field}: expected a string, got "
                                   f"{type(value).__name__} {value!r}")
    if ident and not _ID.match(value):
        raise SettingsError(field, f"{field} {value!r}: an ID is 1-64 letters, digits, '.', "
                                   f"'_' or '-', starting with a letter or digit")
    if not empty and not value:
        raise SettingsError(field, f"{field}: must not be empty")
    if len(value) > _MAX_TEXT:
        raise SettingsError(field, f"{field}: longer than {_MAX_TEXT} characters")
    return value


def _int(field: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(field, f"{field}: expected an integer, got "
                                   f"{type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise SettingsError(field, f"{field} {value}: outside {low}..{high:#x}"
                            if high > 0xFFFF else f"{field} {value}: outside {low}..{high}")
    return value


def _amount(field: str, value) -> float:
    """A non-negative finite number (ints too; not bools)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SettingsError(field, f"{field}: expected a number, got "
                                   f"{type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise SettingsError(field, f"{field} {value}: must be a finite number >= 0")
    return float(value)


def _wwn(field: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(field, f"{field}: expected a WWN (integer), got "
                                   f"{type(value).__name__} {value!r}")
    if not 0 < value < 1 << 64:
        raise SettingsError(field, f"{field} {value:#x}: a WWN is 64 bits and not zero")
    return value


def _limit(field: str, value) -> int | None:
    return None if value is None else _int(field, value, 0, 1 << 31)


def _hex(wwn: int) -> str:
    """WWNs are kept as 16 hex digits: SQLite's integers are signed 64-bit."""
    return f"{wwn:016x}"


def _upgrade(record, cls):
    """A plain model record as the store's subclass (its extra options at their defaults)."""
    if isinstance(record, cls):
        return record
    return cls(**{f.name: getattr(record, f.name) for f in fields(record)})


# -- the mechanism's side of a table --------------------------------------------------------------

class Table:
    """One kind of record. A subclass sets the class attributes and overrides the hooks
    that differ; the SQL the store runs is made here, once."""

    name = ""                               # the SQL table
    noun = ""                               # a record, in messages: "customer"
    key_name = "id"                         # its key, in messages: "customer_id"
    columns: tuple[str, ...] = ()           # in the order row() gives and load() takes them
    key: tuple[str, ...] = ()               # the columns that name one stored row
    where = ""                              # finds one by lookup()'s values; "" : key = ?
    order = ""                              # ORDER BY of a listing
    updates: tuple[str, ...] = ()           # what an update sets; () : the non-key columns
    generated_key = False                   # the database gives the key (on insert)

    def __init__(self):
        where = self.where or " AND ".join(f"{c} = ?" for c in self.key)
        at_key = " AND ".join(f"{c} = ?" for c in self.key)
        inserted = [c for c in self.columns if not (self.generated_key and c in self.key)]
        updated = self.updates or tuple(c for c in self.columns if c not in self.key)
        select = self.sql_select = f"SELECT {', '.join(self.columns)} FROM {self.name}"
        self.sql_get = f"{select} WHERE {where}"
        self.sql_list = f"{select} ORDER BY {self.order}"
        self.sql_list_of = f"{select} WHERE customer_id = ? ORDER BY {self.order}"
        self.sql_insert = (f"INSERT INTO {self.name} ({', '.join(inserted)}) VALUES "
                           f"({', '.join('?' * len(inserted))})")
        self.sql_update = (f"UPDATE {self.name} SET {', '.join(f'{c} = ?' for c in updated)} "
                           f"WHERE {at_key}")
        self.sql_delete = f"DELETE FROM {self.name} WHERE {at_key}"
        self._inserted = [self.columns.index(c) for c in inserted]
        self._updated = [self.columns.index(c) for c in updated]
        self._keyed = [self.columns.index(c) for c in self.key]

    def insert_values(self, record) -> tuple:
        row = self.row(record)
        return tuple(row[i] for i in self._inserted)

    def update_values(self, record, old) -> tuple:
        """SET values from ``record``, then the stored key of ``old``."""
        row = self.row(record)
        return tuple(row[i] for i in self._updated) + self.key_values(old)

    def key_values(self, record) -> tuple:
        row = self.row(record)
        return tuple(row[i] for i in self._keyed)

    # -- per table ---------------------------------------------------------------------------
    def check(self, record):
        """The record to keep, its values checked and normalised (no database)."""
        raise NotImplementedError

    def row(self, record) -> tuple:
        raise NotImplementedError

    def load(self, row):
        raise NotImplementedError

    def key_of(self, record) -> tuple:
        """The key get() takes for ``record``."""
        return (record.id,)

    def lookup(self, *key) -> tuple | None:
        """The values ``where`` takes for ``key``; None: no record can have it."""
        return key

    def missing(self, *key) -> NotFound:
        return NotFound(self.key_name, f"{self.key_name} {key[0]!r}: no such {self.noun}")

    def duplicate(self, record) -> SettingsError | None:
        """The refusal of a new record whose key is taken (None: admit sees to it)."""
        if self.generated_key:
            return None
        return Conflict("id", f"id {record.id!r}: a {self.noun} with this ID exists")

    def added(self, record, rowid: int):
        """The record as kept, once inserted as ``rowid``."""
        return record

    def admit(self, db, record, old) -> None:
        """Its references, before it is written (``old``: None for a new record)."""

    def settle(self, db, record, old) -> None:
        """Rules that read the written record (a refusal undoes the write)."""

    def release(self, db, old) -> None:
        """Before ``old`` is deleted: what stands in the way, what goes with it."""


# -- customers --------------------------------------------------------------------------------------

class _Customers(Table):
    name = "customers"
    noun, key_name = "customer", "customer_id"
    columns = ("id", "name", "allowed_edges", "max_storages", "max_pairs", "bandwidth")
    key = ("id",)
    order = "id"

    def check(self, customer) -> CustomerRecord:
        c = _upgrade(customer, CustomerRecord)
        check_text("id", c.id, ident=True)
        check_text("name", c.name)
        if not isinstance(c.allowed_edges, (tuple, list)):
            raise SettingsError("allowed_edges", f"allowed_edges: expected a list of edge IDs, "
                                                 f"got {type(c.allowed_edges).__name__}")
        for i, edge in enumerate(c.allowed_edges):
            check_text(f"allowed_edges[{i}]", edge, ident=True)
        if len(set(c.allowed_edges)) != len(c.allowed_edges):
            raise SettingsError("allowed_edges", "allowed_edges: an edge is listed twice")
        _limit("max_storages", c.max_storages)
        _limit("max_pairs", c.max_pairs)
        bandwidth = _int("bandwidth", c.bandwidth, 0, 1 << 62)   # whole bytes/s, as edges take it
        return CustomerRecord(c.id, c.name, tuple(c.allowed_edges), c.max_storages, c.max_pairs,
                              bandwidth)

    def row(self, c: CustomerRecord) -> tuple:
        return (c.id, c.name, json.dumps(list(c.allowed_edges)), c.max_storages, c.max_pairs,
                c.bandwidth)

    def load(self, row) -> CustomerRecord:
        cid, name, edges, max_storages, max_pairs, bandwidth = row
        return CustomerRecord(cid, name, tuple(json.loads(edges)), max_storages, max_pairs,
                              bandwidth)

    def admit(self, db, c, old) -> None:
        if c.name and db.one("SELECT 1 FROM customers WHERE name = ? AND id != ?", c.name, c.id):
            raise Conflict("name", f"name {c.name!r}: another customer has this name")
        for i, edge in enumerate(c.allowed_edges):
            row = db.one("SELECT role FROM devices WHERE id = ?", edge)
            if row is None or row[0] != "edge":
                raise SettingsError(f"allowed_edges[{i}]",
                                    f"allowed_edges[{i}]: {edge!r} is not a known edge device")

    def release(self, db, old) -> None:
        storages = db.one("SELECT count(*) FROM storages WHERE customer_id = ?", old.id)[0]
        pairs = db.one("SELECT count(*) FROM pairs WHERE customer_id = ?", old.id)[0]
        if storages or pairs:
            raise Conflict("customer_id", f"customer_id {old.id!r}: has {storages} "
                                          f"storage(s) and {pairs} pair(s): delete them first")
        db.execute("DELETE FROM tokens WHERE customer_id = ?", old.id)


# -- devices and links ----------------------------------------------------------------------------

class _Devices(Table):
    name = "devices"
    noun, key_name = "device", "device_id"
    columns = ("id", "role", "log_address", "processing_limit", "failure_domain")
    key = ("id",)
    order = "id"

    def check(self, d) -> Device:
        check_text("id", d.id, ident=True)
        if d.role not in ROLES:
            raise SettingsError("role", f"role {d.role!r}: must be one of {', '.join(ROLES)}")
        check_text("log_address", d.log_address, empty=False)
        try:
            address = str(ip_address(d.log_address))   # devices send to it as written
        except ValueError as exc:
            raise SettingsError("log_address", f"log_address: {exc}") from None
        return Device(d.id, d.role, address, _amount("processing_limit", d.processing_limit),
                      check_text("failure_domain", d.failure_domain))

    def row(self, d: Device) -> tuple:
        return (d.id, d.role, d.log_address, d.processing_limit, d.failure_domain)

    def load(self, row) -> Device:
        return Device(*row)

    def admit(self, db, d, old) -> None:
        row = db.one("SELECT id FROM devices WHERE log_address = ? AND id != ?",
                     d.log_address, d.id)
        if row:
            raise Conflict("log_address", f"log_address {d.log_address}: device {row[0]!r} "
                                          f"has this address (paths name devices by it)")
        if old is not None and old.role == "edge" and d.role != "edge":
            _check_edge_unused(db, d.id, "role", f"role {d.role!r}: edge {d.id!r}")

    def release(self, db, old) -> None:
        what = f"device_id {old.id!r}:"
        links = db.one("SELECT count(*) FROM links WHERE a = ? OR b = ?", old.id, old.id)[0]
        if links:
            raise Conflict("device_id", f"{what} has {links} link(s): delete them first")
        _check_edge_unused(db, old.id, "device_id", what)


def _check_edge_unused(db, edge_id: str, field: str, what: str) -> None:
    storages = db.one("SELECT count(*) FROM storages WHERE edge_id = ?", edge_id)[0]
    if storages:
        raise Conflict(field, f"{what} has {storages} storage connection(s): "
                              f"move or delete them first")
    for c in db.list_customers():
        if edge_id in c.allowed_edges:
            raise Conflict(field, f"{what} is in customer {c.id!r}'s allowed_edges: "
                                  f"take it out first")


class _Links(Table):
    """Undirected: (a, b) and (b, a) are the same link; an update may turn it around."""
    name = "links"
    noun, key_name = "link", "link"
    columns = ("a", "b", "capacity", "latency_ms")
    key = ("a", "b")
    where = "(a = ? AND b = ?) OR (a = ? AND b = ?)"
    order = "a, b"
    updates = columns

    def check(self, link) -> Link:
        check_text("a", link.a, ident=True)
        check_text("b", link.b, ident=True)
        if link.a == link.b:
            raise SettingsError("b", f"b: a link joins two devices; both ends are {link.a!r}")
        return Link(link.a, link.b, _amount("capacity", link.capacity),
                    _amount("latency_ms", link.latency_ms))

    def row(self, link: Link) -> tuple:
        return (link.a, link.b, link.capacity, link.latency_ms)

    def load(self, row) -> Link:
        return Link(*row)

    def key_of(self, link):
        return (link.a, link.b)

    def lookup(self, a, b):
        return (a, b, b, a)

    def missing(self, a, b) -> NotFound:
        return NotFound("link", f"link {a!r} - {b!r}: no such link")

    def duplicate(self, link):
        return Conflict("b", f"b: a link between {link.a!r} and {link.b!r} exists")

    def admit(self, db, link, old) -> None:
        for field in ("a", "b"):
            device = getattr(link, field)
            if not db.one("SELECT 1 FROM devices WHERE id = ?", device):
                raise SettingsError(field, f"{field}: {device!r} is not a known device")


# -- storage connections (503) --------------------------------------------------------------------

class _Storages(Table):
    name = "storages"
    noun, key_name = "storage", "storage_wwn"
    columns = ("wwn", "edge_id", "customer_id", "virtual_wwn")
    key = ("wwn",)
    order = "wwn"

    def check(self, storage) -> StorageRecord:
        s = _upgrade(storage, StorageRecord)
        check_text("edge_id", s.edge_id, ident=True)
        check_text("customer_id", s.customer_id, ident=True)
        wwn = _wwn("storage_wwn", s.storage_wwn)
        virtual = None if s.virtual_wwn is None else _wwn("virtual_wwn", s.virtual_wwn)
        if virtual == wwn:
            virtual = None               # its own WWN: the same-WWN scheme
        return StorageRecord(s.edge_id, s.customer_id, wwn, virtual)

    def row(self, s: StorageRecord) -> tuple:
        return (_hex(s.storage_wwn), s.edge_id, s.customer_id,
                None if s.virtual_wwn is None else _hex(s.virtual_wwn))

    def load(self, row) -> StorageRecord:
        wwn, edge_id, customer_id, virtual = row
        return StorageRecord(edge_id, customer_id, int(wwn, 16),
                             None if virtual is None else int(virtual, 16))

    def key_of(self, s):
        return (s.storage_wwn,)

    def lookup(self, storage_wwn):
        if _is_wwn_key(storage_wwn):
            return (_hex(storage_wwn),)
        return None

    def missing(self, storage_wwn) -> NotFound:
        shown = format_wwn(storage_wwn) if isinstance(storage_wwn, int) and \
            0 <= storage_wwn < 1 << 64 else repr(storage_wwn)       # True shows as ...:01
        return NotFound("storage_wwn", f"storage_wwn {shown}: no storage with this WWN "
                                       f"is connected")

    def duplicate(self, s):
        return None                  # admit's WWN checks refuse it, naming virtual WWNs too

    def admit(self, db, s, old) -> None:
        # a storage does not change hands (delete and add)
        if old is not None and old.customer_id != s.customer_id:
            raise Conflict("customer_id", f"customer_id: storage {format_wwn(s.storage_wwn)} is "
                                          f"another customer's connection; delete it and add "
                                          f"it anew")
        row = db.one("SELECT role FROM devices WHERE id = ?", s.edge_id)
        if row is None or row[0] != "edge":
            raise SettingsError("edge_id", f"edge_id: {s.edge_id!r} is not a known edge device")
        if not db.one("SELECT 1 FROM customers WHERE id = ?", s.customer_id):
            raise SettingsError("customer_id",
                                f"customer_id: {s.customer_id!r} is not a known customer")
        if old is None:
            _check_wwn_free(db, "storage_wwn", s.storage_wwn, 0)
        _check_wwn_free(db, "virtual_wwn", s.virtual_wwn, s.storage_wwn)

    def settle(self, db, s, old) -> None:
        if old is None:
            return
        # its pairs move with it: check them where they are now
        for p in _pairs_of(db, s.storage_wwn):
            ends = (db.get_storage(p.source_wwn).edge_id, db.get_storage(p.target_wwn).edge_id)
            if ends[0] == ends[1]:
                raise Conflict("edge_id", f"edge_id {s.edge_id!r}: pair {p.id}'s other "
                                          f"storage is on that edge too")
            if p.policy == "B":
                _check_b_group(db, p, ends, exclude=p.id)

    def release(self, db, old) -> None:
        pairs = _pairs_of(db, old.storage_wwn)
        if pairs:
            raise Conflict("storage_wwn", f"storage_wwn {format_wwn(old.storage_wwn)}: in "
                                          f"pair(s) {', '.join(str(p.id) for p in pairs)}: "
                                          f"delete them first")


def _is_wwn_key(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def _check_wwn_free(db, field: str, wwn: int | None, own: int) -> None:
    """A WWN an edge shows or an array logs in with is unique across both kinds."""
    if wwn is None:
        return
    if db.one("SELECT 1 FROM storages WHERE (wwn = ? OR virtual_wwn = ?) AND wwn != ?",
              _hex(wwn), _hex(wwn), _hex(own)):
        raise Conflict(field, f"{field} {format_wwn(wwn)}: already used by a connected "
                              f"storage (as its WWN or virtual WWN)")


# -- ordered pairs ---------------------------------------------------------------------------------

class _Pairs(Table):
    name = "pairs"
    noun = "pair"
    columns = ("id", "customer_id", "source_wwn", "source_lun", "target_wwn", "target_lun",
               "grp", "policy", "load_entries", "load_bytes")
    key = ("id",)
    order = "id"
    # the pair's customer and storages stay (admit): the rest may change
    updates = ("source_lun", "target_lun", "grp", "policy", "load_entries", "load_bytes")
    generated_key = True

    def check(self, p) -> OrderedPair:
        check_text("customer_id", p.customer_id, ident=True)
        _wwn("source_wwn", p.source_wwn)
        _wwn("target_wwn", p.target_wwn)
        _int("source_lun", p.source_lun, 0, MAX_LUN)
        _int("target_lun", p.target_lun, 0, MAX_LUN)
        if p.policy not in POLICIES:
            raise SettingsError("policy", f"policy {p.policy!r}: must be one of "
                                          f"{', '.join(POLICIES)} (【0064】)")
        _int("group", p.group, 0, 0xFFFFFFFF)
        if p.policy == "B" and not 0 < p.group <= MAX_B_GROUP:
            raise SettingsError("group", f"group {p.group}: policy B needs the order guarantee "
                                         f"ID, 1..{MAX_B_GROUP:#x}")
        if p.policy != "B" and p.group:
            raise SettingsError("group", f"group {p.group}: policy {p.policy} gives the order "
                                         f"guarantee ID itself; leave group 0 or use policy B")
        return OrderedPair(p.customer_id, p.source_wwn, p.source_lun, p.target_wwn,
                           p.target_lun, p.group, p.policy,
                           _amount("load_entries", p.load_entries),
                           _amount("load_bytes", p.load_bytes), p.id)

    def row(self, p: OrderedPair) -> tuple:
        return (p.id, p.customer_id, _hex(p.source_wwn), p.source_lun, _hex(p.target_wwn),
                p.target_lun, p.group, p.policy, p.load_entries, p.load_bytes)

    def load(self, row) -> OrderedPair:
        pid, customer, source, source_lun, target, target_lun, group, policy, entries, nbytes = row
        return OrderedPair(customer, int(source, 16), source_lun, int(target, 16), target_lun,
                           group, policy, entries, nbytes, pid)

    def lookup(self, pair_id):
        return (pair_id,) if isinstance(pair_id, int) and not isinstance(pair_id, bool) else None

    def added(self, p, rowid: int) -> OrderedPair:
        return replace(p, id=rowid)

    def admit(self, db, p, old) -> None:
        if old is None and p.id is not None:
            raise SettingsError("id", f"id {p.id!r}: the store gives a new pair its ID; "
                                      f"leave it None")
        if old is not None and (old.customer_id, old.source_wwn, old.target_wwn) != \
                (p.customer_id, p.source_wwn, p.target_wwn):
            raise Conflict("source_wwn", f"source_wwn, target_wwn, customer_id: pair {p.id} "
                                         f"keeps them; delete it and add a new one")
        exclude = None if old is None else p.id
        if not db.one("SELECT 1 FROM customers WHERE id = ?", p.customer_id):
            raise SettingsError("customer_id",
                                f"customer_id: {p.customer_id!r} is not a known customer")
        edges = {}
        for field in ("source_wwn", "target_wwn"):
            wwn = getattr(p, field)
            row = db.one("SELECT edge_id FROM storages WHERE wwn = ? AND customer_id = ?",
                         _hex(wwn), p.customer_id)
            if row is None:
                raise SettingsError(field, f"{field} {format_wwn(wwn)}: no storage with this "
                                           f"WWN is connected for customer {p.customer_id!r}")
            edges[field] = row[0]
        if p.source_wwn == p.target_wwn:
            raise SettingsError("target_wwn", "target_wwn: the same storage as source_wwn; "
                                              "a pair joins two storages")
        if edges["source_wwn"] == edges["target_wwn"]:
            raise SettingsError("target_wwn", f"target_wwn: both storages are on edge "
                                              f"{edges['source_wwn']!r}; a pair crosses the "
                                              f"RCN between two edges")
        for field, wwn, lun in (("source_lun", p.source_wwn, p.source_lun),
                                ("target_lun", p.target_wwn, p.target_lun)):
            row = db.one("SELECT id FROM pairs WHERE id IS NOT ? AND ((source_wwn = ? AND "
                         "source_lun = ?) OR (target_wwn = ? AND target_lun = ?))",
                         exclude, _hex(wwn), lun, _hex(wwn), lun)
            if row:
                raise Conflict(field, f"{field} {lun}: {format_wwn(wwn)} LUN {lun} is in pair "
                                      f"{row[0]} already (a volume is in one pair at most)")
        if p.policy == "B":
            _check_b_group(db, p, (edges["source_wwn"], edges["target_wwn"]), exclude)


def _pairs_of(db, wwn: int) -> list[OrderedPair]:
    rows = db.execute(f"{PAIRS.sql_select} WHERE source_wwn = ? OR target_wwn = ? ORDER BY id",
                      _hex(wwn), _hex(wwn))
    return [PAIRS.load(r) for r in rows]


def _check_b_group(db, p: OrderedPair, ends: tuple[str, str], exclude: int | None) -> None:
    """A B group runs between one source edge and one target edge, and is one customer's."""
    for row in db.execute(f"{PAIRS.sql_select} WHERE policy = 'B' AND grp = ? AND id IS NOT ?",
                          p.group, exclude):
        other = PAIRS.load(row)
        if other.customer_id != p.customer_id:
            # another customer's: say so without naming it or its edges
            raise Conflict("group", f"group {p.group}: this order guarantee ID is taken; "
                                    f"choose another")
        theirs = (db.get_storage(other.source_wwn).edge_id,
                  db.get_storage(other.target_wwn).edge_id)
        if theirs != ends:
            raise Conflict("group", f"group {p.group}: pair {other.id} of this group runs "
                                    f"{theirs[0]} -> {theirs[1]}, this one {ends[0]} -> "
                                    f"{ends[1]}; a group runs between one source edge and "
                                    f"one target edge")


CUSTOMERS = _Customers()
DEVICES = _Devices()
LINKS = _Links()
STORAGES = _Storages()
PAIRS = _Pairs()
