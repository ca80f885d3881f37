"""The management server's settings store (issue 7): records of :mod:`rcn.mgmt.model` kept
in SQLite, behind a small interface (:class:`Store`) a server database can replace later.

What it keeps
-------------
Customers and their contracts, devices, links, storage connections (503), ordered
pairs (given an integer ``id`` that is never reused), API tokens (their sha256 only:
a stolen database gives no token away) and a configuration ``version`` that goes up
by one on every change of settings, so the distribution can tell devices which
snapshot they run. Customers and storages come back as
:class:`~rcn.mgmt.model.CustomerRecord` and :class:`~rcn.mgmt.model.StorageRecord`
(a customer's ``bandwidth``, a storage's ``virtual_wwn``); the store takes the plain
records too (the options then take their defaults).

One create / get / list / update / delete serves every kind of record
(:class:`SQLiteStore`'s ``*_record`` methods; ``add_customer``, ``get_pair``... name
the table); what differs between the kinds -- columns, checks, the rules between
records -- is each one's :class:`~rcn.mgmt.tables.Table`.

What it refuses
---------------
Every write checks its record and raises a :class:`~rcn.mgmt.errors.SettingsError`
whose ``field`` names what was wrong (and whose message does too): a wrong type or
value (``SettingsError``, HTTP 400), a duplicate ID, name, address or WWN, or a
deletion that would strand other records (``Conflict``, 409), an unknown
reference -- a link to an unknown device, a storage on an unknown edge or for an
unknown customer, a pair whose storages are not connected (``NotFound`` when
the object asked for is missing, else ``SettingsError``). Pairs must also
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

Log-transfer keys (:mod:`rcn.mgmt.keys`) are kept here too, their material as hex
(:meth:`Store.save_keys` replaces them all; not a change of settings), with the
highest snapshot version published (:meth:`Store.published_version`), so a restarted
server never gives a device an old version number with other keys. The database file
is therefore created 0600, and an existing one is made 0600 when opened.
"""


from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import sqlite3
import stat
from typing import Iterator

from rcn.mgmt.errors import Conflict
from rcn.mgmt.model import (Customer, CustomerRecord, Device, Link, OrderedPair,
                            StorageConnection, StorageRecord)
from rcn.mgmt.tables import CUSTOMERS, DEVICES, LINKS, PAIRS, STORAGES, Table, check_text

__all__ = ["StoreVersionError", "Store", "SQLiteStore", "MIGRATIONS", "SCHEMA_VERSION",
           "token_digest"]


class StoreVersionError(RuntimeError):
    """The database's schema is newer than this code (or not ours at all)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- the interface --------------------------------------------------------------------------------

class Store(abc.ABC):
    """Settings storage. Reads return records (the ``*Record`` subclasses for customers and
    storages); writes raise :class:`~rcn.mgmt.errors.SettingsError` and its subclasses, and
    each successful write of settings (not of tokens) raises :meth:`version` by one."""

    @abc.abstractmethod
    def version(self) -> int:
        """The configuration version: 0 for empty settings, +1 per change."""

    @abc.abstractmethod
    def add_record(self, table: Table, record):
        """Check ``record`` and keep it as a new one of ``table``; the record kept."""

    @abc.abstractmethod
    def update_record(self, table: Table, record):
        """Check ``record`` and keep it in place of the one with its key."""

    @abc.abstractmethod
    def get_record(self, table: Table, *key):
        """The record of ``table`` with ``key``, or ``NotFound``."""

    @abc.abstractmethod
    def list_records(self, table: Table, customer_id: str | None = None) -> list:
        """Every record of ``table`` by key (of one customer: storages and pairs)."""

    @abc.abstractmethod
    def delete_record(self, table: Table, *key) -> None:
        """Drop the record with ``key``, unless others stand in the way."""

    # customers
    def add_customer(self, customer: Customer) -> CustomerRecord:
        return self.add_record(CUSTOMERS, customer)

    def update_customer(self, customer: Customer) -> CustomerRecord:
        return self.update_record(CUSTOMERS, customer)

    def get_customer(self, customer_id: str) -> CustomerRecord:
        return self.get_record(CUSTOMERS, customer_id)

    def list_customers(self) -> list[CustomerRecord]:
        return self.list_records(CUSTOMERS)

    def delete_customer(self, customer_id: str) -> None:
        self.delete_record(CUSTOMERS, customer_id)

    # devices
    def add_device(self, device: Device) -> Device:
        return self.add_record(DEVICES, device)

    def update_device(self, device: Device) -> Device:
        return self.update_record(DEVICES, device)

    def get_device(self, device_id: str) -> Device:
        return self.get_record(DEVICES, device_id)

    def list_devices(self) -> list[Device]:
        return self.list_records(DEVICES)

    def delete_device(self, device_id: str) -> None:
        self.delete_record(DEVICES, device_id)

    # links (undirected: (a, b) and (b, a) are the same link)
    def add_link(self, link: Link) -> Link:
        return self.add_record(LINKS, link)

    def update_link(self, link: Link) -> Link:
        return self.update_record(LINKS, link)

    def get_link(self, a: str, b: str) -> Link:
        return self.get_record(LINKS, a, b)

    def list_links(self) -> list[Link]:
        return self.list_records(LINKS)

    def delete_link(self, a: str, b: str) -> None:
        self.delete_record(LINKS, a, b)

    # storage connections (503), by storage WWN; a storage does not change hands
    def add_storage(self, storage: StorageConnection) -> StorageRecord:
        return self.add_record(STORAGES, storage)

    def update_storage(self, storage: StorageConnection) -> StorageRecord:
        return self.update_record(STORAGES, storage)

    def get_storage(self, storage_wwn: int) -> StorageRecord:
        return self.get_record(STORAGES, storage_wwn)

    def list_storages(self, customer_id: str | None = None) -> list[StorageRecord]:
        return self.list_records(STORAGES, customer_id)

    def delete_storage(self, storage_wwn: int) -> None:
        self.delete_record(STORAGES, storage_wwn)

    # ordered pairs, by the id the store gives
    def add_pair(self, pair: OrderedPair) -> OrderedPair:
        return self.add_record(PAIRS, pair)

    def update_pair(self, pair: OrderedPair) -> OrderedPair:
        return self.update_record(PAIRS, pair)

    def get_pair(self, pair_id: int) -> OrderedPair:
        return self.get_record(PAIRS, pair_id)

    def list_pairs(self, customer_id: str | None = None) -> list[OrderedPair]:
        return self.list_records(PAIRS, customer_id)

    def delete_pair(self, pair_id: int) -> None:
        self.delete_record(PAIRS, pair_id)

    # API tokens
    @abc.abstractmethod
    def set_token(self, customer_id: str | None, token: str) -> None:
        """Keep ``token``'s digest for ``customer_id`` (None: the operator), replacing the
        one it had."""
    @abc.abstractmethod
    def token_owner(self, token: str) -> tuple[str, str | None] | None:
        """``("operator", None)``, ``("customer", id)``, or None for an unknown token."""

    # log-transfer keys (rcn.mgmt.keys): rows of (kind, name, epoch, material hex, state,
    # created, deadline, version)
    @abc.abstractmethod
    def key_rows(self) -> list[tuple]:
        """Every key row, by kind, name and epoch."""

    @abc.abstractmethod
    def save_keys(self, rows: list[tuple]) -> None:
        """Keep ``rows`` in place of every key row (at once; no settings version step)."""

    @abc.abstractmethod
    def published_version(self) -> int:
        """The highest snapshot version :meth:`set_published_version` was given."""

    @abc.abstractmethod
    def set_published_version(self, version: int) -> None:
        """Remember ``version`` as published (kept only when higher than the last)."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager:
        """``with store.transaction():`` the writes inside are kept together or not at all
        (an exception undoes them); nests; the version goes up once, at the outer end."""

    def close(self) -> None:
        pass


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
    # 3: log-transfer keys (rcn.mgmt.keys) and the highest snapshot version published
    """
    CREATE TABLE keys (
        kind TEXT NOT NULL, name TEXT NOT NULL, epoch INTEGER NOT NULL,
        material TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL, deadline REAL,
        version INTEGER NOT NULL, PRIMARY KEY (kind, name, epoch));
    INSERT INTO meta VALUES ('published_version', 0);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SQLiteStore(Store):
    """The store in one SQLite file (``":memory:"`` for tests); migrates it on open.

    ``migrate_to`` stops at an older schema version (tests build old databases with it).
    """

    def __init__(self, path: str = ":memory:", *, migrate_to: int = SCHEMA_VERSION):
        self.path = path
        if path != ":memory:":
            _private(path)
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

    def one(self, sql: str, *args):
        """The first row ``sql`` gives (the tables' rules read with it), or None."""
        return self._db.execute(sql, args).fetchone()

    def execute(self, sql: str, *args) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def version(self) -> int:
        return self.one("SELECT value FROM meta WHERE key = 'config_version'")[0]

    # -- records, of any table --

    def _row(self, table: Table, key: tuple):
        args = table.lookup(*key)
        return None if args is None else self.one(table.sql_get, *args)

    def get_record(self, table: Table, *key):
        row = self._row(table, key)
        if row is None:
            raise table.missing(*key)
        return table.load(row)

    def list_records(self, table: Table, customer_id: str | None = None) -> list:
        if customer_id is None:
            rows = self._db.execute(table.sql_list)
        else:
            rows = self._db.execute(table.sql_list_of, (customer_id,))
        return [table.load(r) for r in rows]

    def add_record(self, table: Table, record):
        r = table.check(record)
        with self._tx():
            refusal = table.duplicate(r)
            if refusal is not None and self._row(table, table.key_of(r)) is not None:
                raise refusal
            table.admit(self, r, None)
            cursor = self._db.execute(table.sql_insert, table.insert_values(r))
            r = table.added(r, cursor.lastrowid)
            table.settle(self, r, None)
        return r

    def update_record(self, table: Table, record):
        r = table.check(record)
        with self._tx():
            old = self.get_record(table, *table.key_of(r))
            table.admit(self, r, old)
            self._db.execute(table.sql_update, table.update_values(r, old))
            table.settle(self, r, old)
        return r

    def delete_record(self, table: Table, *key) -> None:
        with self._tx():
            old = self.get_record(table, *key)
            table.release(self, old)
            self._db.execute(table.sql_delete, table.key_values(old))

    # -- tokens --

    def set_token(self, customer_id: str | None, token: str) -> None:
        check_text("token", token, empty=False)
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
        row = self.one("SELECT kind, customer_id FROM tokens WHERE digest = ?",
                       token_digest(token))
        return (row[0], row[1]) if row else None


    # -- keys --

    def key_rows(self) -> list[tuple]:
        return self._db.execute("SELECT kind, name, epoch, material, state, created, deadline, "
                                "version FROM keys ORDER BY kind, name, epoch").fetchall()

    def save_keys(self, rows: list[tuple]) -> None:
        with self._tx(bump=False):
            self._db.execute("DELETE FROM keys")
            self._db.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def published_version(self) -> int:
        return self.one("SELECT value FROM meta WHERE key = 'published_version'")[0]

    def set_published_version(self, version: int) -> None:
        with self._tx(bump=False):
            self._db.execute("UPDATE meta SET value = max(value, ?) "
                             "WHERE key = 'published_version'", (version,))


def _private(path: str) -> None:
    """Create the database file 0600, or make an existing one 0600: it holds key material."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return                  # sqlite3.connect says why, as it always has
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot make {path} mode 0600 (it holds log-transfer "
                                       f"keys): {exc.strerror}") from None
    finally:
        os.close(fd)


def _statements(script: str) -> list[str]:
    """A migration's statements (none of ours has a ';' inside a statement)."""
    return [s.strip() for s in script.split(";") if s.strip()]

