"""The management server's settings store (issue 7): records of :mod:`rcn.mgmt.model` kept
in SQLite, behind a small interface (:class:`Store`) a server database can replace later.

What it keeps
-------------
Customers and their contracts, devices, links, storage connections (503), ordered
pairs (given an integer ``id`` that is never reused), API tokens (their sha256 only:
a stolen database gives no token away) and a configuration ``version`` that goes up
by one on every change of settings, so the distribution can tell devices which
snapshot they run. Two options :mod:`rcn.mgmt.model` has no field for are kept in
subclasses of its records: a customer's ``bandwidth`` (bytes/s on the log-transfer
channel, 0: no limit; :class:`CustomerRecord`) and a storage's own ``virtual_wwn``
for the virtual-WWN variant (【0093】; None: the same-WWN scheme; :class:`StorageRecord`).
The store takes the plain records too (the options then take their defaults) and
always returns the subclasses.

What it refuses
---------------
Every write checks its record and raises a :class:`SettingsError` whose ``field``
names what was wrong (and whose message does too): a wrong type or value
(:class:`SettingsError`, HTTP 400), a duplicate ID, name, address or WWN, or a
deletion that would strand other records (:class:`Conflict`, 409), an unknown
reference -- a link to an unknown device, a storage on an unknown edge or for an
unknown customer, a pair whose storages are not connected (:class:`NotFound` when
the object asked for is missing, else :class:`SettingsError`). Pairs must also
make sense to the edges: the two storages are the pair's customer's and on two
different edges; a volume (WWN, LUN) is in one pair at most (an array keeps one
pair row per LUN); policy B needs its group ID (1..0x3FFFFFFF: IDs with bit 30 or
31 set are what policies A-1 and A-2 give) and a group runs between one source
edge and one target edge (the source edge numbers the group's entries, the target
edge applies them in that order) and belongs to one customer; A-1 and A-2 pairs
take their ID from the policy, so they give none. The contract limits and who
may do what are :mod:`rcn.mgmt.settings`'s.

Schema
------
A ``schema_version`` table holds the version; :data:`MIGRATIONS` are applied in
order when a database is opened (each in one transaction, so a failed one leaves
the last good version). A database newer than this code is refused with
:class:`StoreVersionError` rather than misread. WWNs are kept as 16 hex digits
(text): SQLite's integers are signed 64-bit, and text of one width sorts like the
numbers. The store is synchronous: the server calls it from the reactor thread,
and every call is a few small statements.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass, fields
from typing import Iterator

from datapath.frames.names import format_wwn
from rcn.config import ip_address
from rcn.mgmt.model import POLICIES, Customer, Device, Link, OrderedPair, StorageConnection
from rcn.mgmtlink.commands import ROLES

__all__ = ["SettingsError", "NotFound", "Conflict", "Forbidden", "Unauthorized",
           "LimitExceeded", "StoreVersionError", "CustomerRecord", "StorageRecord", "Store",
           "SQLiteStore", "MIGRATIONS", "SCHEMA_VERSION", "token_digest", "MAX_LUN",
           "MAX_B_GROUP"]

MAX_LUN = 0xFFFF            # PAIR_CREATE carries the source LUN in two bytes (RCN CONTROL CDB)
MAX_B_GROUP = 0x3FFFFFFF    # bits 30 and 31 mark the IDs policies give
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_TEXT = 200


# -- errors ---------------------------------------------------------------------------------------

class SettingsError(ValueError):
    """A setting that cannot be taken; ``field`` names it, and so does the message.
    ``status`` is the HTTP status the REST API answers with."""

    status = 400

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def as_json(self) -> dict:
        return {"error": type(self).__name__, "field": self.field, "message": self.message}


class NotFound(SettingsError, LookupError):
    """The object asked for does not exist -- or is another customer's (never its data).
    A ``LookupError`` too, for callers that only ask "is it there"."""
    status = 404


class Conflict(SettingsError):
    """A duplicate, or a change other records stand in the way of."""
    status = 409


class Forbidden(SettingsError):
    """The caller may not do this at all (a customer asking for operator settings)."""
    status = 403


class Unauthorized(SettingsError):
    """No token, or a token the store does not know."""
    status = 401


class LimitExceeded(SettingsError):
    """A contract limit of 【0056】; the message names the limit and its value."""
    status = 409


class StoreVersionError(RuntimeError):
    """The database's schema is newer than this code (or not ours at all)."""


# -- records with the options the model has no field for -------------------------------------------

@dataclass(frozen=True)
class CustomerRecord(Customer):
    bandwidth: int = 0                         # bytes/s on the log-transfer channel; 0: no limit


@dataclass(frozen=True)
class StorageRecord(StorageConnection):
    virtual_wwn: int | None = None             # shown under this WWN at partner edges (【0093】)


def _upgrade(record, cls):
    if isinstance(record, cls):
        return record
    return cls(**{f.name: getattr(record, f.name) for f in fields(record)})


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- the interface --------------------------------------------------------------------------------

class Store(abc.ABC):
    """Settings storage. Reads return records (the ``*Record`` subclasses for customers and
    storages); writes raise :class:`SettingsError` and its subclasses, and each successful
    write of settings (not of tokens) raises :meth:`version` by one."""

    @abc.abstractmethod
    def version(self) -> int:
        """The configuration version: 0 for empty settings, +1 per change."""

    # customers
    @abc.abstractmethod
    def add_customer(self, customer: Customer) -> CustomerRecord: ...
    @abc.abstractmethod
    def update_customer(self, customer: Customer) -> CustomerRecord: ...
    @abc.abstractmethod
    def get_customer(self, customer_id: str) -> CustomerRecord: ...
    @abc.abstractmethod
    def list_customers(self) -> list[CustomerRecord]: ...
    @abc.abstractmethod
    def delete_customer(self, customer_id: str) -> None: ...

    # devices
    @abc.abstractmethod
    def add_device(self, device: Device) -> Device: ...
    @abc.abstractmethod
    def update_device(self, device: Device) -> Device: ...
    @abc.abstractmethod
    def get_device(self, device_id: str) -> Device: ...
    @abc.abstractmethod
    def list_devices(self) -> list[Device]: ...
    @abc.abstractmethod
    def delete_device(self, device_id: str) -> None: ...

    # links (undirected: (a, b) and (b, a) are the same link)
    @abc.abstractmethod
    def add_link(self, link: Link) -> Link: ...
    @abc.abstractmethod
    def update_link(self, link: Link) -> Link: ...
    @abc.abstractmethod
    def get_link(self, a: str, b: str) -> Link: ...
    @abc.abstractmethod
    def list_links(self) -> list[Link]: ...
    @abc.abstractmethod
    def delete_link(self, a: str, b: str) -> None: ...

    # storage connections (503), by storage WWN
    @abc.abstractmethod
    def add_storage(self, storage: StorageConnection) -> StorageRecord: ...
    @abc.abstractmethod
    def update_storage(self, storage: StorageConnection) -> StorageRecord: ...
    @abc.abstractmethod
    def get_storage(self, storage_wwn: int) -> StorageRecord: ...
    @abc.abstractmethod
    def list_storages(self, customer_id: str | None = None) -> list[StorageRecord]: ...
    @abc.abstractmethod
    def delete_storage(self, storage_wwn: int) -> None: ...

    # ordered pairs, by the id the store gives
    @abc.abstractmethod
    def add_pair(self, pair: OrderedPair) -> OrderedPair: ...
    @abc.abstractmethod
    def update_pair(self, pair: OrderedPair) -> OrderedPair: ...
    @abc.abstractmethod
    def get_pair(self, pair_id: int) -> OrderedPair: ...
    @abc.abstractmethod
    def list_pairs(self, customer_id: str | None = None) -> list[OrderedPair]: ...
    @abc.abstractmethod
    def delete_pair(self, pair_id: int) -> None: ...

    # API tokens
    @abc.abstractmethod
    def set_token(self, customer_id: str | None, token: str) -> None:
        """Keep ``token``'s digest for ``customer_id`` (None: the operator), replacing the
        one it had."""
    @abc.abstractmethod
    def token_owner(self, token: str) -> tuple[str, str | None] | None:
        """``("operator", None)``, ``("customer", id)``, or None for an unknown token."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager:
        """``with store.transaction():`` the writes inside are kept together or not at all
        (an exception undoes them); nests; the version goes up once, at the outer end."""

    def close(self) -> None:
        pass


# -- checks ---------------------------------------------------------------------------------------

def _text(field: str, value, *, ident: bool = False, empty: bool = True) -> str:
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
    return f"{wwn:016x}"


def _check_customer(c: CustomerRecord) -> CustomerRecord:
    _text("id", c.id, ident=True)
    _text("name", c.name)
    if not isinstance(c.allowed_edges, (tuple, list)):
        raise SettingsError("allowed_edges", f"allowed_edges: expected a list of edge IDs, got "
                                             f"{type(c.allowed_edges).__name__}")
    for i, edge in enumerate(c.allowed_edges):
        _text(f"allowed_edges[{i}]", edge, ident=True)
    if len(set(c.allowed_edges)) != len(c.allowed_edges):
        raise SettingsError("allowed_edges", "allowed_edges: an edge is listed twice")
    _limit("max_storages", c.max_storages)
    _limit("max_pairs", c.max_pairs)
    bandwidth = _int("bandwidth", c.bandwidth, 0, 1 << 62)    # whole bytes/s, as edges take it
    return CustomerRecord(c.id, c.name, tuple(c.allowed_edges), c.max_storages, c.max_pairs,
                          bandwidth)


def _check_device(d: Device) -> Device:
    _text("id", d.id, ident=True)
    if d.role not in ROLES:
        raise SettingsError("role", f"role {d.role!r}: must be one of {', '.join(ROLES)}")
    _text("log_address", d.log_address, empty=False)
    try:
        address = str(ip_address(d.log_address))   # devices send to it as written
    except ValueError as exc:
        raise SettingsError("log_address", f"log_address: {exc}") from None
    return Device(d.id, d.role, address, _amount("processing_limit", d.processing_limit),
                  _text("failure_domain", d.failure_domain))


def _check_link(link: Link) -> Link:
    _text("a", link.a, ident=True)
    _text("b", link.b, ident=True)
    if link.a == link.b:
        raise SettingsError("b", f"b: a link joins two devices; both ends are {link.a!r}")
    return Link(link.a, link.b, _amount("capacity", link.capacity),
                _amount("latency_ms", link.latency_ms))


def _check_storage(s: StorageRecord) -> StorageRecord:
    _text("edge_id", s.edge_id, ident=True)
    _text("customer_id", s.customer_id, ident=True)
    wwn = _wwn("storage_wwn", s.storage_wwn)
    virtual = None if s.virtual_wwn is None else _wwn("virtual_wwn", s.virtual_wwn)
    if virtual == wwn:
        virtual = None               # its own WWN: the same-WWN scheme
    return StorageRecord(s.edge_id, s.customer_id, wwn, virtual)


def _check_pair(p: OrderedPair) -> OrderedPair:
    _text("customer_id", p.customer_id, ident=True)
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
    return OrderedPair(p.customer_id, p.source_wwn, p.source_lun, p.target_wwn, p.target_lun,
                       p.group, p.policy, _amount("load_entries", p.load_entries),
                       _amount("load_bytes", p.load_bytes), p.id)


# -- the schema -----------------------------------------------------------------------------------

#: Schema migrations, in order: migration ``i`` takes a database from version ``i`` to
#: ``i + 1``. Append; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    # 1: customers, devices, links, storage connections, ordered pairs, the config version
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('config_version', 0);
    CREATE TABLE customers (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, allowed_edges TEXT NOT NULL,
        max_storages INTEGER, max_pairs INTEGER);
    CREATE UNIQUE INDEX customers_name ON customers (name) WHERE name != '';
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, role TEXT NOT NULL, log_address TEXT NOT NULL UNIQUE,
        processing_limit REAL NOT NULL, failure_domain TEXT NOT NULL);
    CREATE TABLE links (
        a TEXT NOT NULL REFERENCES devices (id), b TEXT NOT NULL REFERENCES devices (id),
        capacity REAL NOT NULL, latency_ms REAL NOT NULL, PRIMARY KEY (a, b));
    CREATE TABLE storages (
        wwn TEXT PRIMARY KEY, edge_id TEXT NOT NULL REFERENCES devices (id),
        customer_id TEXT NOT NULL REFERENCES customers (id));
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        source_wwn TEXT NOT NULL REFERENCES storages (wwn), source_lun INTEGER NOT NULL,
        target_wwn TEXT NOT NULL REFERENCES storages (wwn), target_lun INTEGER NOT NULL,
        grp INTEGER NOT NULL, policy TEXT NOT NULL,
        load_entries REAL NOT NULL, load_bytes REAL NOT NULL);
    """,
    # 2: the virtual-WWN variant (【0093】), customers' bandwidth, API tokens
    """
    ALTER TABLE storages ADD COLUMN virtual_wwn TEXT;
    CREATE UNIQUE INDEX storages_virtual_wwn ON storages (virtual_wwn);
    ALTER TABLE customers ADD COLUMN bandwidth INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE tokens (
        digest TEXT PRIMARY KEY, kind TEXT NOT NULL,
        customer_id TEXT UNIQUE REFERENCES customers (id) ON DELETE CASCADE);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SQLiteStore(Store):
    """The store in one SQLite file (``":memory:"`` for tests); migrates it on open.

    ``migrate_to`` stops at an older schema version (tests build old databases with it).
    """

    def __init__(self, path: str = ":memory:", *, migrate_to: int = SCHEMA_VERSION):
        self.path = path
        # autocommit mode: transactions are ours (_tx), not the module's implicit ones
        self._db = sqlite3.connect(path, isolation_level=None)
        self._depth, self._changed = 0, False
        self._db.execute("PRAGMA foreign_keys = ON")
        try:
            self.schema_version = self._migrate(migrate_to)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # -- schema --

    def _migrate(self, target: int) -> int:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")     # another process opening it waits for us
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                if db.execute("SELECT count(*) FROM sqlite_master WHERE name != "
                              "'schema_version'").fetchone()[0]:
                    raise StoreVersionError(
                        f"settings database {self.path}: has tables but no schema_version: "
                        f"not an rcn-mgmt database (give another file)")
                db.execute("INSERT INTO schema_version VALUES (0)")
                current = 0
            else:
                current = row[0]
            if current > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"settings database {self.path}: schema version {current} is newer than "
                    f"this rcn-mgmt's {SCHEMA_VERSION}; run the newer rcn-mgmt, or restore a "
                    f"backup made by this one")
            for version in range(current, min(target, SCHEMA_VERSION)):
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (version + 1,))
                current = version + 1
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise StoreVersionError(f"settings database {self.path}: {exc} (while opening it "
                                    f"at schema version {SCHEMA_VERSION})") from exc
        except BaseException:
            self._rollback()
            raise
        return current

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        depth = self._depth
        self._db.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if depth == 0:
                self._changed = False
                self._rollback()
            else:
                self._db.execute(f"ROLLBACK TO sp{depth}")
                self._db.execute(f"RELEASE sp{depth}")
            raise
        self._depth -= 1
        if depth:
            self._db.execute(f"RELEASE sp{depth}")
            return
        try:
            if self._changed:         # one step per committed change, however many writes
                self._db.execute("UPDATE meta SET value = value + 1 "
                                 "WHERE key = 'config_version'")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._changed = False

    @contextlib.contextmanager
    def _tx(self, bump: bool = True) -> Iterator[None]:
        """One write; ``bump``: it changes settings, so the version goes up at commit."""
        with self.transaction():
            yield
            self._changed = self._changed or bump

    def _one(self, sql: str, *args):
        return self._db.execute(sql, args).fetchone()

    def version(self) -> int:
        return self._one("SELECT value FROM meta WHERE key = 'config_version'")[0]

    # -- customers --

    def _check_edges_known(self, c: CustomerRecord) -> None:
        for i, edge in enumerate(c.allowed_edges):
            row = self._one("SELECT role FROM devices WHERE id = ?", edge)
            if row is None or row[0] != "edge":
                raise SettingsError(f"allowed_edges[{i}]",
                                    f"allowed_edges[{i}]: {edge!r} is not a known edge device")

    def _check_name_free(self, c: CustomerRecord) -> None:
        if c.name and self._one("SELECT 1 FROM customers WHERE name = ? AND id != ?",
                                c.name, c.id):
            raise Conflict("name", f"name {c.name!r}: another customer has this name")

    def add_customer(self, customer: Customer) -> CustomerRecord:
        c = _check_customer(_upgrade(customer, CustomerRecord))
        with self._tx():
            if self._one("SELECT 1 FROM customers WHERE id = ?", c.id):
                raise Conflict("id", f"id {c.id!r}: a customer with this ID exists")
            self._check_name_free(c)
            self._check_edges_known(c)
            self._db.execute("INSERT INTO customers (id, name, allowed_edges, max_storages, "
                             "max_pairs, bandwidth) VALUES (?, ?, ?, ?, ?, ?)", _customer_row(c))
        return c

    def update_customer(self, customer: Customer) -> CustomerRecord:
        c = _check_customer(_upgrade(customer, CustomerRecord))
        with self._tx():
            self.get_customer(c.id)
            self._check_name_free(c)
            self._check_edges_known(c)
            self._db.execute("UPDATE customers SET name = ?, allowed_edges = ?, "
                             "max_storages = ?, max_pairs = ?, bandwidth = ? WHERE id = ?",
                             _customer_row(c)[1:] + (c.id,))
        return c

    def get_customer(self, customer_id: str) -> CustomerRecord:
        row = self._one("SELECT * FROM customers WHERE id = ?", customer_id)
        if row is None:
            raise NotFound("customer_id", f"customer_id {customer_id!r}: no such customer")
        return _customer(row)

    def list_customers(self) -> list[CustomerRecord]:
        return [_customer(r) for r in self._db.execute("SELECT * FROM customers ORDER BY id")]

    def delete_customer(self, customer_id: str) -> None:
        with self._tx():
            self.get_customer(customer_id)
            storages = self._one("SELECT count(*) FROM storages WHERE customer_id = ?",
                                 customer_id)[0]
            pairs = self._one("SELECT count(*) FROM pairs WHERE customer_id = ?",
                              customer_id)[0]
            if storages or pairs:
                raise Conflict("customer_id", f"customer_id {customer_id!r}: has {storages} "
                                              f"storage(s) and {pairs} pair(s): delete them first")
            self._db.execute("DELETE FROM tokens WHERE customer_id = ?", (customer_id,))
            self._db.execute("DELETE FROM customers WHERE id = ?", (customer_id,))

    # -- devices --

    def _check_address_free(self, d: Device) -> None:
        row = self._one("SELECT id FROM devices WHERE log_address = ? AND id != ?",
                        d.log_address, d.id)
        if row:
            raise Conflict("log_address", f"log_address {d.log_address}: device {row[0]!r} "
                                          f"has this address (paths name devices by it)")

    def add_device(self, device: Device) -> Device:
        d = _check_device(device)
        with self._tx():
            if self._one("SELECT 1 FROM devices WHERE id = ?", d.id):
                raise Conflict("id", f"id {d.id!r}: a device with this ID exists")
            self._check_address_free(d)
            self._db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, ?)", _device_row(d))
        return d

    def update_device(self, device: Device) -> Device:
        d = _check_device(device)
        with self._tx():
            old = self.get_device(d.id)
            self._check_address_free(d)
            if old.role == "edge" and d.role != "edge":
                self._check_edge_unused(d.id, "role", f"role {d.role!r}: edge {d.id!r}")
            self._db.execute("UPDATE devices SET role = ?, log_address = ?, "
                             "processing_limit = ?, failure_domain = ? WHERE id = ?",
                             _device_row(d)[1:] + (d.id,))
        return d

    def _check_edge_unused(self, edge_id: str, field: str, what: str) -> None:
        storages = self._one("SELECT count(*) FROM storages WHERE edge_id = ?", edge_id)[0]
        if storages:
            raise Conflict(field, f"{what} has {storages} storage connection(s): "
                                  f"move or delete them first")
        for c in self.list_customers():
            if edge_id in c.allowed_edges:
                raise Conflict(field, f"{what} is in customer {c.id!r}'s allowed_edges: "
                                      f"take it out first")

    def get_device(self, device_id: str) -> Device:
        row = self._one("SELECT * FROM devices WHERE id = ?", device_id)
        if row is None:
            raise NotFound("device_id", f"device_id {device_id!r}: no such device")
        return Device(*row)

    def list_devices(self) -> list[Device]:
        return [Device(*r) for r in self._db.execute("SELECT * FROM devices ORDER BY id")]

    def delete_device(self, device_id: str) -> None:
        with self._tx():
            self.get_device(device_id)
            what = f"device_id {device_id!r}:"
            links = self._one("SELECT count(*) FROM links WHERE a = ? OR b = ?",
                              device_id, device_id)[0]
            if links:
                raise Conflict("device_id", f"{what} has {links} link(s): delete them first")
            self._check_edge_unused(device_id, "device_id", what)
            self._db.execute("DELETE FROM devices WHERE id = ?", (device_id,))

    # -- links --

    def _link_key(self, a: str, b: str) -> tuple[str, str] | None:
        row = self._one("SELECT a, b FROM links WHERE (a = ? AND b = ?) OR (a = ? AND b = ?)",
                        a, b, b, a)
        return tuple(row) if row else None

    def _check_link_ends(self, link: Link) -> None:
        for field in ("a", "b"):
            device = getattr(link, field)
            if not self._one("SELECT 1 FROM devices WHERE id = ?", device):
                raise SettingsError(field, f"{field}: {device!r} is not a known device")

    def add_link(self, link: Link) -> Link:
        link = _check_link(link)
        with self._tx():
            self._check_link_ends(link)
            if self._link_key(link.a, link.b):
                raise Conflict("b", f"b: a link between {link.a!r} and {link.b!r} exists")
            self._db.execute("INSERT INTO links VALUES (?, ?, ?, ?)",
                             (link.a, link.b, link.capacity, link.latency_ms))
        return link

    def update_link(self, link: Link) -> Link:
        link = _check_link(link)
        with self._tx():
            key = self._link_key(link.a, link.b)
            if key is None:
                raise NotFound("link", f"link {link.a!r} - {link.b!r}: no such link")
            self._db.execute("UPDATE links SET a = ?, b = ?, capacity = ?, latency_ms = ? "
                             "WHERE a = ? AND b = ?",
                             (link.a, link.b, link.capacity, link.latency_ms) + key)
        return link

    def get_link(self, a: str, b: str) -> Link:
        key = self._link_key(a, b)
        if key is None:
            raise NotFound("link", f"link {a!r} - {b!r}: no such link")
        return Link(*self._one("SELECT * FROM links WHERE a = ? AND b = ?", *key))

    def list_links(self) -> list[Link]:
        return [Link(*r) for r in self._db.execute("SELECT * FROM links ORDER BY a, b")]

    def delete_link(self, a: str, b: str) -> None:
        with self._tx():
            key = self._link_key(a, b)
            if key is None:
                raise NotFound("link", f"link {a!r} - {b!r}: no such link")
            self._db.execute("DELETE FROM links WHERE a = ? AND b = ?", key)

    # -- storage connections --

    def _check_storage_refs(self, s: StorageRecord) -> None:
        row = self._one("SELECT role FROM devices WHERE id = ?", s.edge_id)
        if row is None or row[0] != "edge":
            raise SettingsError("edge_id", f"edge_id: {s.edge_id!r} is not a known edge device")
        if not self._one("SELECT 1 FROM customers WHERE id = ?", s.customer_id):
            raise SettingsError("customer_id",
                                f"customer_id: {s.customer_id!r} is not a known customer")

    def _check_wwn_free(self, field: str, wwn: int | None, own: int) -> None:
        """A WWN an edge shows or an array logs in with is unique across both kinds."""
        if wwn is None:
            return
        if self._one("SELECT 1 FROM storages WHERE (wwn = ? OR virtual_wwn = ?) AND wwn != ?",
                     _hex(wwn), _hex(wwn), _hex(own)):
            raise Conflict(field, f"{field} {format_wwn(wwn)}: already used by a connected "
                                  f"storage (as its WWN or virtual WWN)")

    def add_storage(self, storage: StorageConnection) -> StorageRecord:
        s = _check_storage(_upgrade(storage, StorageRecord))
        with self._tx():
            self._check_storage_refs(s)
            self._check_wwn_free("storage_wwn", s.storage_wwn, 0)
            self._check_wwn_free("virtual_wwn", s.virtual_wwn, s.storage_wwn)
            self._db.execute("INSERT INTO storages (wwn, edge_id, customer_id, virtual_wwn) "
                             "VALUES (?, ?, ?, ?)", _storage_row(s))
        return s

    def update_storage(self, storage: StorageConnection) -> StorageRecord:
        """A new edge or virtual WWN; a storage does not change hands (delete and add)."""
        s = _check_storage(_upgrade(storage, StorageRecord))
        with self._tx():
            old = self.get_storage(s.storage_wwn)
            if old.customer_id != s.customer_id:
                raise Conflict("customer_id", f"customer_id: storage "
                                              f"{format_wwn(s.storage_wwn)} is another "
                                              f"customer's connection; delete it and add it anew")
            self._check_storage_refs(s)
            self._check_wwn_free("virtual_wwn", s.virtual_wwn, s.storage_wwn)
            self._db.execute("UPDATE storages SET edge_id = ?, customer_id = ?, "
                             "virtual_wwn = ? WHERE wwn = ?", _storage_row(s)[1:] + (
                                 _hex(s.storage_wwn),))
            # its pairs move with it: check them where they are now (a refusal undoes it)
            for p in self._pairs_of(s.storage_wwn):
                ends = (self.get_storage(p.source_wwn).edge_id,
                        self.get_storage(p.target_wwn).edge_id)
                if ends[0] == ends[1]:
                    raise Conflict("edge_id", f"edge_id {s.edge_id!r}: pair {p.id}'s other "
                                              f"storage is on that edge too")
                if p.policy == "B":
                    self._check_b_group(p, ends, exclude=p.id)
        return s

    def get_storage(self, storage_wwn: int) -> StorageRecord:
        row = None
        if isinstance(storage_wwn, int) and not isinstance(storage_wwn, bool) \
                and 0 <= storage_wwn < 1 << 64:
            row = self._one("SELECT wwn, edge_id, customer_id, virtual_wwn FROM storages "
                            "WHERE wwn = ?", _hex(storage_wwn))
        if row is None:
            shown = format_wwn(storage_wwn) if isinstance(storage_wwn, int) and \
                0 <= storage_wwn < 1 << 64 else repr(storage_wwn)
            raise NotFound("storage_wwn", f"storage_wwn {shown}: no storage with this WWN "
                                          f"is connected")
        return _storage(row)

    def list_storages(self, customer_id: str | None = None) -> list[StorageRecord]:
        sql = "SELECT wwn, edge_id, customer_id, virtual_wwn FROM storages"
        args: tuple = ()
        if customer_id is not None:
            sql, args = sql + " WHERE customer_id = ?", (customer_id,)
        return [_storage(r) for r in self._db.execute(sql + " ORDER BY wwn", args)]

    def delete_storage(self, storage_wwn: int) -> None:
        with self._tx():
            s = self.get_storage(storage_wwn)
            pairs = self._pairs_of(s.storage_wwn)
            if pairs:
                raise Conflict("storage_wwn", f"storage_wwn {format_wwn(s.storage_wwn)}: in "
                                              f"pair(s) {', '.join(str(p.id) for p in pairs)}: "
                                              f"delete them first")
            self._db.execute("DELETE FROM storages WHERE wwn = ?", (_hex(s.storage_wwn),))

    # -- pairs --

    def _pairs_of(self, wwn: int) -> list[OrderedPair]:
        rows = self._db.execute("SELECT * FROM pairs WHERE source_wwn = ? OR target_wwn = ? "
                                "ORDER BY id", (_hex(wwn), _hex(wwn)))
        return [_pair(r) for r in rows]

    def _check_pair_refs(self, p: OrderedPair, exclude: int | None) -> None:
        if not self._one("SELECT 1 FROM customers WHERE id = ?", p.customer_id):
            raise SettingsError("customer_id",
                                f"customer_id: {p.customer_id!r} is not a known customer")
        edges = {}
        for field in ("source_wwn", "target_wwn"):
            wwn = getattr(p, field)
            row = self._one("SELECT edge_id FROM storages WHERE wwn = ? AND customer_id = ?",
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
            row = self._one("SELECT id FROM pairs WHERE id IS NOT ? AND ((source_wwn = ? AND "
                            "source_lun = ?) OR (target_wwn = ? AND target_lun = ?))",
                            exclude, _hex(wwn), lun, _hex(wwn), lun)
            if row:
                raise Conflict(field, f"{field} {lun}: {format_wwn(wwn)} LUN {lun} is in pair "
                                      f"{row[0]} already (a volume is in one pair at most)")
        if p.policy == "B":
            self._check_b_group(p, (edges["source_wwn"], edges["target_wwn"]), exclude)

    def _check_b_group(self, p: OrderedPair, ends: tuple[str, str], exclude: int | None) -> None:
        for row in self._db.execute("SELECT * FROM pairs WHERE policy = 'B' AND grp = ? "
                                    "AND id IS NOT ?", (p.group, exclude)):
            other = _pair(row)
            if other.customer_id != p.customer_id:
                # another customer's: say so without naming it or its edges
                raise Conflict("group", f"group {p.group}: this order guarantee ID is taken; "
                                        f"choose another")
            theirs = (self.get_storage(other.source_wwn).edge_id,
                      self.get_storage(other.target_wwn).edge_id)
            if theirs != ends:
                raise Conflict("group", f"group {p.group}: pair {other.id} of this group runs "
                                        f"{theirs[0]} -> {theirs[1]}, this one {ends[0]} -> "
                                        f"{ends[1]}; a group runs between one source edge and "
                                        f"one target edge")

    def add_pair(self, pair: OrderedPair) -> OrderedPair:
        p = _check_pair(pair)
        if p.id is not None:
            raise SettingsError("id", f"id {p.id!r}: the store gives a new pair its ID; "
                                      f"leave it None")
        with self._tx():
            self._check_pair_refs(p, None)
            cursor = self._db.execute(
                "INSERT INTO pairs (customer_id, source_wwn, source_lun, target_wwn, "
                "target_lun, grp, policy, load_entries, load_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _pair_row(p))
            pair_id = cursor.lastrowid
        return OrderedPair(**{**{f.name: getattr(p, f.name) for f in fields(p)}, "id": pair_id})

    def update_pair(self, pair: OrderedPair) -> OrderedPair:
        p = _check_pair(pair)
        with self._tx():
            old = self.get_pair(p.id)
            if (old.customer_id, old.source_wwn, old.target_wwn) != \
                    (p.customer_id, p.source_wwn, p.target_wwn):
                raise Conflict("source_wwn", f"source_wwn, target_wwn, customer_id: pair {p.id} "
                                             f"keeps them; delete it and add a new one")
            self._check_pair_refs(p, p.id)
            self._db.execute("UPDATE pairs SET source_lun = ?, target_lun = ?, grp = ?, "
                             "policy = ?, load_entries = ?, load_bytes = ? WHERE id = ?",
                             (p.source_lun, p.target_lun, p.group, p.policy, p.load_entries,
                              p.load_bytes, p.id))
        return p

    def get_pair(self, pair_id: int) -> OrderedPair:
        row = None
        if isinstance(pair_id, int) and not isinstance(pair_id, bool):
            row = self._one("SELECT * FROM pairs WHERE id = ?", pair_id)
        if row is None:
            raise NotFound("id", f"id {pair_id!r}: no such pair")
        return _pair(row)

    def list_pairs(self, customer_id: str | None = None) -> list[OrderedPair]:
        sql, args = "SELECT * FROM pairs", ()
        if customer_id is not None:
            sql, args = sql + " WHERE customer_id = ?", (customer_id,)
        return [_pair(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def delete_pair(self, pair_id: int) -> None:
        with self._tx():
            self.get_pair(pair_id)
            self._db.execute("DELETE FROM pairs WHERE id = ?", (pair_id,))

    # -- tokens --

    def set_token(self, customer_id: str | None, token: str) -> None:
        _text("token", token, empty=False)
        with self._tx(bump=False):
            if customer_id is None:
                self._db.execute("DELETE FROM tokens WHERE kind = 'operator'")
                kind = "operator"
            else:
                self.get_customer(customer_id)
                self._db.execute("DELETE FROM tokens WHERE customer_id = ?", (customer_id,))
                kind = "customer"
            try:
                self._db.execute("INSERT INTO tokens VALUES (?, ?, ?)",
                                 (token_digest(token), kind, customer_id))
            except sqlite3.IntegrityError:
                raise Conflict("token", "token: already in use; make a new one") from None

    def token_owner(self, token: str) -> tuple[str, str | None] | None:
        if not isinstance(token, str) or not token:
            return None
        row = self._one("SELECT kind, customer_id FROM tokens WHERE digest = ?",
                        token_digest(token))
        return (row[0], row[1]) if row else None


def _statements(script: str) -> list[str]:
    """A migration's statements (none of ours has a ';' inside a statement)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _customer_row(c: CustomerRecord) -> tuple:
    return (c.id, c.name, json.dumps(list(c.allowed_edges)), c.max_storages, c.max_pairs,
            c.bandwidth)


def _customer(row) -> CustomerRecord:
    cid, name, edges, max_storages, max_pairs, bandwidth = row
    return CustomerRecord(cid, name, tuple(json.loads(edges)), max_storages, max_pairs,
                          bandwidth)


def _device_row(d: Device) -> tuple:
    return (d.id, d.role, d.log_address, d.processing_limit, d.failure_domain)


def _storage_row(s: StorageRecord) -> tuple:
    return (_hex(s.storage_wwn), s.edge_id, s.customer_id,
            None if s.virtual_wwn is None else _hex(s.virtual_wwn))


def _storage(row) -> StorageRecord:
    wwn, edge_id, customer_id, virtual = row
    return StorageRecord(edge_id, customer_id, int(wwn, 16),
                         None if virtual is None else int(virtual, 16))


def _pair_row(p: OrderedPair) -> tuple:
    return (p.customer_id, _hex(p.source_wwn), p.source_lun, _hex(p.target_wwn), p.target_lun,
            p.group, p.policy, p.load_entries, p.load_bytes)


def _pair(row) -> OrderedPair:
    pid, customer, source, source_lun, target, target_lun, group, policy, entries, nbytes = row
    return OrderedPair(customer, int(source, 16), source_lun, int(target, 16), target_lun, group,
                       policy, entries, nbytes, pid)
