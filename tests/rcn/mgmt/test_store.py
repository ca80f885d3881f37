"""The settings store: CRUD of every record, its refusals (each naming the field), the
configuration version, API tokens kept as digests, and schema migrations."""

from __future__ import annotations

import hashlib
import os
import sqlite3

from twisted.trial.unittest import TestCase

from rcn.mgmt import store as store_module
from rcn.mgmt.errors import Conflict, NotFound, SettingsError
from rcn.mgmt.model import (Customer, CustomerRecord, Device, Link, OrderedPair,
                            StorageConnection, StorageRecord)
from rcn.mgmt.store import MIGRATIONS, SCHEMA_VERSION, SQLiteStore, StoreVersionError

S1, T1 = 0x500A098000000001, 0x500A098000000002
S2, T2 = 0x500A098000000011, 0x500A098000000012
HIGH = 0xC00A098000000001          # a WWN above SQLite's signed 64-bit range


def topology(store) -> None:
    """Two edges and a core between them; customers acme and globex."""
    store.add_device(Device("edgeA", "edge", "10.0.0.1:47001", failure_domain="tokyo"))
    store.add_device(Device("edgeB", "edge", "10.0.0.2:47001"))
    store.add_device(Device("edgeC", "edge", "10.0.0.3:47001"))
    store.add_device(Device("core1", "core", "10.0.0.9:47001", processing_limit=5000.0))
    store.add_link(Link("edgeA", "core1", 1e9, 2.0))
    store.add_link(Link("core1", "edgeB", 1e9, 3.0))
    store.add_customer(Customer("acme", "Acme Corp"))
    store.add_customer(Customer("globex", "Globex"))


def connected(store) -> None:
    topology(store)
    store.add_storage(StorageConnection("edgeA", "acme", S1))
    store.add_storage(StorageConnection("edgeB", "acme", T1))
    store.add_storage(StorageConnection("edgeC", "globex", S2))
    store.add_storage(StorageConnection("edgeB", "globex", T2))


class Base(TestCase):
    def setUp(self):
        self.store = SQLiteStore(":memory:")
        self.addCleanup(self.store.close)

    def refused(self, kind, field, call, *args, text: str | None = None):
        """``call(*args)`` raises ``kind`` naming ``field``; the error is returned."""
        with self.assertRaises(kind) as caught:
            call(*args)
        self.assertEqual(caught.exception.field, field)
        self.assertIn(field.split("[")[0], str(caught.exception))   # the message names it too
        if text is not None:
            self.assertIn(text, str(caught.exception))
        return caught.exception


class CustomerTests(Base):
    def test_add_get_list_update_delete(self):
        topology(self.store)
        got = self.store.add_customer(Customer("initech", "Initech", ("edgeA",), 2, 3))
        self.assertEqual(got, CustomerRecord("initech", "Initech", ("edgeA",), 2, 3, 0))
        self.assertEqual(self.store.get_customer("initech"), got)
        self.assertEqual([c.id for c in self.store.list_customers()],
                         ["acme", "globex", "initech"])
        changed = self.store.update_customer(CustomerRecord("initech", "Initech KK", [], None,
                                                            1, 1 << 20))
        self.assertEqual(self.store.get_customer("initech"), changed)
        self.assertEqual(changed.allowed_edges, ())                 # a list became a tuple
        self.assertEqual(changed.bandwidth, 1 << 20)
        self.store.delete_customer("initech")
        self.refused(NotFound, "customer_id", self.store.get_customer, "initech")

    def test_duplicates_and_unknown_references_are_refused(self):
        topology(self.store)
        self.refused(Conflict, "id", self.store.add_customer, Customer("acme"))
        self.refused(Conflict, "name", self.store.add_customer, Customer("acme2", "Acme Corp"))
        self.store.add_customer(Customer("nameless1"))            # empty names may repeat
        self.store.add_customer(Customer("nameless2"))
        self.refused(SettingsError, "allowed_edges[1]", self.store.add_customer,
                     Customer("x", allowed_edges=("edgeA", "core1")), text="'core1'")
        self.refused(SettingsError, "allowed_edges[0]", self.store.add_customer,
                     Customer("x", allowed_edges=("nowhere",)))
        self.refused(SettingsError, "allowed_edges", self.store.add_customer,
                     Customer("x", allowed_edges=("edgeA", "edgeA")))
        self.refused(NotFound, "customer_id", self.store.update_customer, Customer("nobody"))
        self.refused(NotFound, "customer_id", self.store.delete_customer, "nobody")

    def test_wrong_types_are_refused_naming_the_field(self):
        for customer, field in ((Customer(7), "id"), (Customer("has space"), "id"),
                                (Customer(""), "id"), (Customer("x", name=3), "name"),
                                (Customer("x", allowed_edges="edgeA"), "allowed_edges"),
                                (Customer("x", allowed_edges=(1,)), "allowed_edges[0]"),
                                (Customer("x", max_storages="2"), "max_storages"),
                                (Customer("x", max_pairs=-1), "max_pairs"),
                                (Customer("x", max_pairs=True), "max_pairs"),
                                (CustomerRecord("x", bandwidth=1.5), "bandwidth"),
                                (CustomerRecord("x", bandwidth=-1), "bandwidth")):
            self.refused(SettingsError, field, self.store.add_customer, customer)
        self.assertEqual(self.store.list_customers(), [])

    def test_a_customer_with_storages_or_pairs_stays(self):
        connected(self.store)
        self.refused(Conflict, "customer_id", self.store.delete_customer, "acme",
                     text="2 storage(s) and 0 pair(s)")
        self.store.add_customer(Customer("initech"))
        self.store.set_token("initech", "initech-token-0123456789")
        self.store.delete_customer("initech")
        self.assertIsNone(self.store.token_owner("initech-token-0123456789"))


class DeviceLinkTests(Base):
    def test_devices_crud(self):
        d = self.store.add_device(Device("core1", "core", "10.0.0.9:47001", 100, "osaka"))
        self.assertEqual(d, Device("core1", "core", "10.0.0.9:47001", 100.0, "osaka"))
        self.assertIsInstance(d.processing_limit, float)
        self.assertEqual(self.store.get_device("core1"), d)
        self.store.add_device(Device("edge6", "edge", "[::1]:47001"))
        self.assertEqual(self.store.get_device("edge6").log_address, "[::1]:47001")
        self.assertEqual([x.id for x in self.store.list_devices()], ["core1", "edge6"])
        self.store.update_device(Device("core1", "core", "10.0.0.10:47001", 200.0))
        self.assertEqual(self.store.get_device("core1").log_address, "10.0.0.10:47001")
        self.store.delete_device("core1")
        self.refused(NotFound, "device_id", self.store.get_device, "core1")
        self.refused(NotFound, "device_id", self.store.delete_device, "core1")
        self.refused(NotFound, "device_id", self.store.update_device,
                     Device("core1", "core", "10.0.0.9:47001"))

    def test_device_refusals(self):
        self.store.add_device(Device("edgeA", "edge", "10.0.0.1:47001"))
        self.refused(Conflict, "id", self.store.add_device, Device("edgeA", "edge", "10.0.0.5:1"))
        self.refused(Conflict, "log_address", self.store.add_device,
                     Device("edgeB", "edge", "10.0.0.1:47001"), text="'edgeA'")
        for device, field in ((Device("x", "router", "10.0.0.7:1"), "role"),
                              (Device("x", "edge", "10.0.0.7"), "log_address"),
                              (Device("x", "edge", "10.0.0.7:99999"), "log_address"),
                              (Device("x", "edge", "example.com:47001"), "log_address"),
                              (Device("x", "edge", 47001), "log_address"),
                              (Device("x", "core", "10.0.0.7:1", "fast"), "processing_limit"),
                              (Device("x", "core", "10.0.0.7:1", -1), "processing_limit"),
                              (Device("x", "core", "10.0.0.7:1", float("inf")),
                               "processing_limit"),
                              (Device("x", "core", "10.0.0.7:1", 0, None), "failure_domain"),
                              (Device("x/y", "core", "10.0.0.7:1"), "id")):
            self.refused(SettingsError, field, self.store.add_device, device)
        self.assertEqual(len(self.store.list_devices()), 1)

    def test_links_crud_in_either_order(self):
        topology(self.store)
        self.assertEqual(self.store.get_link("core1", "edgeA"), Link("edgeA", "core1", 1e9, 2.0))
        self.store.update_link(Link("core1", "edgeA", 5e8, 4.0))
        self.assertEqual(self.store.get_link("edgeA", "core1"), Link("core1", "edgeA", 5e8, 4.0))
        self.assertEqual(len(self.store.list_links()), 2)
        self.store.delete_link("edgeA", "core1")
        self.refused(NotFound, "link", self.store.get_link, "edgeA", "core1")
        self.refused(NotFound, "link", self.store.delete_link, "edgeA", "core1")
        self.refused(NotFound, "link", self.store.update_link, Link("edgeA", "core1"))

    def test_link_refusals(self):
        topology(self.store)
        self.refused(Conflict, "b", self.store.add_link, Link("edgeB", "core1"))   # reversed
        self.refused(SettingsError, "a", self.store.add_link, Link("nowhere", "core1"),
                     text="'nowhere' is not a known device")
        self.refused(SettingsError, "b", self.store.add_link, Link("core1", "nowhere"))
        self.refused(SettingsError, "b", self.store.add_link, Link("core1", "core1"))
        self.refused(SettingsError, "capacity", self.store.add_link,
                     Link("edgeA", "edgeB", -5.0))
        self.refused(SettingsError, "latency_ms", self.store.add_link,
                     Link("edgeA", "edgeB", 0, "2ms"))
        self.assertEqual(len(self.store.list_links()), 2)

    def test_a_device_in_use_stays(self):
        connected(self.store)
        self.refused(Conflict, "device_id", self.store.delete_device, "core1", text="2 link(s)")
        self.store.delete_link("edgeA", "core1")
        self.refused(Conflict, "device_id", self.store.delete_device, "edgeA",
                     text="1 storage connection(s)")
        self.refused(Conflict, "role", self.store.update_device,
                     Device("edgeA", "core", "10.0.0.1:47001"))
        self.store.add_device(Device("edgeD", "edge", "10.0.0.4:47001"))
        self.store.update_customer(Customer("globex", "Globex", ("edgeD",)))
        self.refused(Conflict, "device_id", self.store.delete_device, "edgeD",
                     text="allowed_edges")


class StorageTests(Base):
    def test_storage_crud(self):
        topology(self.store)
        got = self.store.add_storage(StorageConnection("edgeA", "acme", S1))
        self.assertEqual(got, StorageRecord("edgeA", "acme", S1, None))
        self.store.add_storage(StorageRecord("edgeB", "acme", HIGH, T1 | 0x800000))
        self.store.add_storage(StorageRecord("edgeB", "globex", T2, T2))   # own WWN: same-WWN
        self.assertEqual(self.store.get_storage(HIGH).virtual_wwn, T1 | 0x800000)
        self.assertIsNone(self.store.get_storage(T2).virtual_wwn)
        self.assertEqual([s.storage_wwn for s in self.store.list_storages()], [S1, T2, HIGH])
        self.assertEqual([s.storage_wwn for s in self.store.list_storages("acme")], [S1, HIGH])
        moved = self.store.update_storage(StorageRecord("edgeC", "acme", S1, S1 | 0x800000))
        self.assertEqual(self.store.get_storage(S1), moved)
        self.store.delete_storage(S1)
        self.refused(NotFound, "storage_wwn", self.store.get_storage, S1)
        self.refused(NotFound, "storage_wwn", self.store.delete_storage, S1)
        self.refused(NotFound, "storage_wwn", self.store.get_storage, "50:0a")

    def test_storage_refusals(self):
        topology(self.store)
        self.store.add_storage(StorageRecord("edgeA", "acme", S1, 0x500A098000800001))
        self.refused(Conflict, "storage_wwn", self.store.add_storage,
                     StorageConnection("edgeB", "globex", S1), text="50:0a:09:80:00:00:00:01")
        self.refused(Conflict, "storage_wwn", self.store.add_storage,     # another's virtual
                     StorageConnection("edgeB", "globex", 0x500A098000800001))
        self.refused(Conflict, "virtual_wwn", self.store.add_storage,     # a real one
                     StorageRecord("edgeB", "globex", T2, S1))
        self.refused(SettingsError, "edge_id", self.store.add_storage,
                     StorageConnection("nowhere", "acme", T1))
        self.refused(SettingsError, "edge_id", self.store.add_storage,
                     StorageConnection("core1", "acme", T1), text="not a known edge")
        self.refused(SettingsError, "customer_id", self.store.add_storage,
                     StorageConnection("edgeB", "nobody", T1))
        for wrong, field in ((StorageConnection("edgeB", "acme", "50:0a:09:80:00:00:00:02"),
                              "storage_wwn"),
                             (StorageConnection("edgeB", "acme", 0), "storage_wwn"),
                             (StorageConnection("edgeB", "acme", 1 << 64), "storage_wwn"),
                             (StorageRecord("edgeB", "acme", T1, -3), "virtual_wwn"),
                             (StorageConnection(5, "acme", T1), "edge_id")):
            self.refused(SettingsError, field, self.store.add_storage, wrong)
        self.refused(Conflict, "customer_id", self.store.update_storage,
                     StorageConnection("edgeA", "globex", S1))
        self.assertEqual(len(self.store.list_storages()), 1)

    def test_a_storage_in_a_pair_stays_and_moves_only_off_its_partners_edge(self):
        connected(self.store)
        p = self.store.add_pair(OrderedPair("acme", S1, 0, T1, 0))
        self.refused(Conflict, "storage_wwn", self.store.delete_storage, S1,
                     text=f"pair(s) {p.id}")
        self.refused(Conflict, "edge_id", self.store.update_storage,
                     StorageConnection("edgeB", "acme", S1), text="other storage")
        self.store.update_storage(StorageConnection("edgeC", "acme", S1))
        self.assertEqual(self.store.get_storage(S1).edge_id, "edgeC")


class PairTests(Base):
    def setUp(self):
        super().setUp()
        connected(self.store)

    def test_pair_crud_and_ids_never_reused(self):
        a = self.store.add_pair(OrderedPair("acme", S1, 0, T1, 0, load_entries=10, load_bytes=4e6))
        b = self.store.add_pair(OrderedPair("globex", S2, 0, T2, 0, 7, "B"))
        self.assertEqual((a.id, b.id), (1, 2))
        self.assertEqual(self.store.get_pair(1), a)
        self.assertEqual(a.load_entries, 10.0)
        self.assertEqual(self.store.list_pairs(), [a, b])
        self.assertEqual(self.store.list_pairs("globex"), [b])
        changed = self.store.update_pair(OrderedPair("acme", S1, 0, T1, 0, load_bytes=9e6, id=1))
        self.assertEqual(self.store.get_pair(1), changed)
        self.store.delete_pair(2)
        c = self.store.add_pair(OrderedPair("globex", S2, 0, T2, 0, 7, "B"))
        self.assertEqual(c.id, 3)                      # 2 stays gone: a URL never means another
        self.refused(NotFound, "id", self.store.get_pair, 2)
        self.refused(NotFound, "id", self.store.delete_pair, 2)
        self.refused(NotFound, "id", self.store.get_pair, "1")
        self.refused(NotFound, "id", self.store.update_pair, OrderedPair("acme", S1, 0, T1, 0,
                                                                        id=99))

    def test_unknown_references_are_refused(self):
        self.store.add_customer(Customer("initech"))
        U = 0x500A0980000000FF
        for pair, field, text in (
                (OrderedPair("acme", U, 0, T1, 0), "source_wwn", "no storage with this WWN is "
                                                                 "connected for customer 'acme'"),
                (OrderedPair("acme", S1, 0, U, 0), "target_wwn", None),
                (OrderedPair("acme", S1, 0, T2, 0), "target_wwn", None),     # globex's
                (OrderedPair("initech", S1, 0, T1, 0), "source_wwn", None),
                (OrderedPair("nobody", S1, 0, T1, 0), "customer_id", "not a known customer"),
                (OrderedPair("acme", S1, 0, S1, 1), "target_wwn", "same storage")):
            self.refused(SettingsError, field, self.store.add_pair, pair, text=text)
        self.store.add_storage(StorageConnection("edgeA", "acme", T1 + 0x100))
        self.refused(SettingsError, "target_wwn", self.store.add_pair,
                     OrderedPair("acme", S1, 0, T1 + 0x100, 0), text="both storages are on edge")
        self.assertEqual(self.store.list_pairs(), [])

    def test_wrong_types_and_values_are_refused(self):
        for pair, field in ((OrderedPair("acme", str(S1), 0, T1, 0), "source_wwn"),
                            (OrderedPair("acme", S1, "0", T1, 0), "source_lun"),
                            (OrderedPair("acme", S1, 0, T1, False), "target_lun"),
                            (OrderedPair("acme", S1, 0x10000, T1, 0), "source_lun"),
                            (OrderedPair("acme", S1, 0, T1, 0, policy="A-3"), "policy"),
                            (OrderedPair("acme", S1, 0, T1, 0, 7, "A-1"), "group"),
                            (OrderedPair("acme", S1, 0, T1, 0, 0, "B"), "group"),
                            (OrderedPair("acme", S1, 0, T1, 0, 0x40000001, "B"), "group"),
                            (OrderedPair("acme", S1, 0, T1, 0, 1.5, "B"), "group"),
                            (OrderedPair("acme", S1, 0, T1, 0, load_entries=-1),
                             "load_entries"),
                            (OrderedPair("acme", S1, 0, T1, 0, load_bytes=float("nan")),
                             "load_bytes"),
                            (OrderedPair("acme", S1, 0, T1, 0, id=5), "id")):
            self.refused(SettingsError, field, self.store.add_pair, pair)
        self.assertEqual(self.store.list_pairs(), [])

    def test_a_volume_is_in_one_pair_at_most(self):
        self.store.add_pair(OrderedPair("acme", S1, 0, T1, 0))
        self.refused(Conflict, "source_lun", self.store.add_pair,
                     OrderedPair("acme", S1, 0, T1, 1), text="is in pair 1 already")
        self.refused(Conflict, "target_lun", self.store.add_pair,
                     OrderedPair("acme", S1, 1, T1, 0))
        self.refused(Conflict, "source_lun", self.store.add_pair,    # the target volume, as
                     OrderedPair("acme", T1, 0, S1, 5))              # the source of another
        self.store.add_pair(OrderedPair("acme", S1, 1, T1, 1))
        self.store.update_pair(OrderedPair("acme", S1, 0, T1, 0, load_entries=3.0, id=1))

    def test_policy_b_groups_run_between_two_edges_for_one_customer(self):
        self.store.add_pair(OrderedPair("acme", S1, 0, T1, 0, 7, "B"))
        self.refused(Conflict, "group", self.store.add_pair,
                     OrderedPair("globex", S2, 0, T2, 0, 7, "B"), text="taken")
        e = self.refused(Conflict, "group", self.store.add_pair,
                         OrderedPair("globex", S2, 0, T2, 0, 7, "B"))
        self.assertNotIn("acme", str(e))                          # not whose, nor where
        self.assertNotIn("edgeA", str(e))
        self.store.add_storage(StorageConnection("edgeC", "acme", S1 + 0x100))
        self.refused(Conflict, "group", self.store.add_pair,
                     OrderedPair("acme", S1 + 0x100, 0, T1, 1, 7, "B"),
                     text="runs edgeA -> edgeB, this one edgeC -> edgeB")
        self.store.add_pair(OrderedPair("acme", S1, 1, T1, 1, 7, "B"))     # same edges: fine
        self.store.add_storage(StorageConnection("edgeB", "acme", T1 + 0x100))
        self.store.add_pair(OrderedPair("acme", S1, 2, T1 + 0x100, 0, 7, "B"))
        self.refused(Conflict, "group", self.store.update_storage,      # one pair of 7 moves
                     StorageConnection("edgeC", "acme", T1 + 0x100), text="a group runs")
        self.assertEqual(self.store.get_storage(T1 + 0x100).edge_id, "edgeB")
        self.store.update_storage(StorageConnection("edgeC", "acme", S1))   # all of 7 moves
        self.assertEqual(self.store.get_storage(S1).edge_id, "edgeC")
        self.assertEqual(len(self.store.list_pairs()), 3)

    def test_a_pair_keeps_its_customer_and_storages(self):
        self.store.add_pair(OrderedPair("acme", S1, 0, T1, 0))
        self.store.add_storage(StorageConnection("edgeC", "acme", S1 + 0x100))
        self.refused(Conflict, "source_wwn", self.store.update_pair,
                     OrderedPair("acme", S1 + 0x100, 0, T1, 0, id=1))


class VersionAndTokenTests(Base):
    def test_every_change_of_settings_raises_the_version_by_one(self):
        self.assertEqual(self.store.version(), 0)
        topology(self.store)                                 # 4 devices, 2 links, 2 customers
        self.assertEqual(self.store.version(), 8)
        with self.assertRaises(Conflict):
            self.store.add_customer(Customer("acme"))
        self.assertEqual(self.store.version(), 8)              # refused: no change
        self.store.set_token("acme", "acme-token-0123456789")
        self.assertEqual(self.store.version(), 8)              # tokens are not distributed
        self.store.update_link(Link("edgeA", "core1", 1.0))
        self.store.delete_link("edgeA", "core1")
        self.assertEqual(self.store.version(), 10)

    def test_a_transaction_is_one_change_or_none(self):
        topology(self.store)
        before = self.store.version()
        with self.store.transaction():
            self.store.add_customer(Customer("initech"))
            with self.store.transaction():
                self.store.add_device(Device("edgeD", "edge", "10.0.0.4:47001"))
        self.assertEqual(self.store.version(), before + 1)
        with self.assertRaises(ZeroDivisionError):
            with self.store.transaction():
                self.store.add_customer(Customer("hooli"))
                1 / 0
        self.refused(NotFound, "customer_id", self.store.get_customer, "hooli")
        self.assertEqual(self.store.version(), before + 1)
        with self.store.transaction():                       # an inner failure undoes the inner
            self.store.add_customer(Customer("hooli"))
            with self.assertRaises(Conflict):
                with self.store.transaction():
                    self.store.add_customer(Customer("vandelay"))
                    self.store.add_customer(Customer("hooli"))
        self.assertEqual([c.id for c in self.store.list_customers()],
                         ["acme", "globex", "hooli", "initech"])

    def test_tokens_are_kept_as_digests(self):
        path = self.mktemp()
        store = SQLiteStore(path)
        self.addCleanup(store.close)
        store.add_customer(Customer("acme"))
        store.set_token("acme", "acme-secret-token-1")
        store.set_token(None, "operator-secret-token-1")
        self.assertEqual(store.token_owner("acme-secret-token-1"), ("customer", "acme"))
        self.assertEqual(store.token_owner("operator-secret-token-1"), ("operator", None))
        for unknown in ("nope", "", None, 5):
            self.assertIsNone(store.token_owner(unknown))
        store.set_token("acme", "acme-secret-token-2")               # replaces the first
        self.assertIsNone(store.token_owner("acme-secret-token-1"))
        self.assertEqual(store.token_owner("acme-secret-token-2"), ("customer", "acme"))
        self.refused(Conflict, "token", store.set_token, None, "acme-secret-token-2")
        self.refused(NotFound, "customer_id", store.set_token, "nobody", "whatever-token-3")
        store.close()
        with open(path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"secret-token", raw)
        self.assertIn(hashlib.sha256(b"acme-secret-token-2").hexdigest().encode(), raw)

    def test_settings_survive_a_restart(self):
        path = self.mktemp()
        store = SQLiteStore(path)
        connected(store)
        store.add_storage(StorageRecord("edgeC", "acme", HIGH, HIGH ^ 1))
        pair = store.add_pair(OrderedPair("acme", HIGH, 3, T1, 3, 9, "B", 1.0, 2.0))
        version = store.version()
        store.close()
        again = SQLiteStore(path)
        self.addCleanup(again.close)
        self.assertEqual(again.version(), version)
        self.assertEqual(again.get_pair(pair.id), pair)
        self.assertEqual(again.get_storage(HIGH), StorageRecord("edgeC", "acme", HIGH, HIGH ^ 1))
        self.assertEqual(again.get_device("edgeA").failure_domain, "tokyo")


class MigrationTests(TestCase):
    def test_a_new_database_is_at_the_latest_version(self):
        path = self.mktemp()
        SQLiteStore(path).close()
        with sqlite3.connect(path) as db:
            self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(),
                             [(SCHEMA_VERSION,)])
        self.assertEqual(SCHEMA_VERSION, len(MIGRATIONS))
        self.assertGreaterEqual(SCHEMA_VERSION, 2)

    def test_a_version_1_database_is_migrated_to_the_latest(self):
        path = self.mktemp()
        old = SQLiteStore(path, migrate_to=1)
        self.assertEqual(old.schema_version, 1)
        old.close()
        with sqlite3.connect(path) as db:              # what a version-1 server wrote
            db.execute("INSERT INTO customers VALUES ('acme', 'Acme', '[]', 2, NULL)")
            db.executemany("INSERT INTO devices VALUES (?, 'edge', ?, 0, '')",
                           [("edgeA", "10.0.0.1:47001"), ("edgeB", "10.0.0.2:47001")])
            db.executemany("INSERT INTO storages VALUES (?, ?, 'acme')",
                           [(f"{S1:016x}", "edgeA"), (f"{T1:016x}", "edgeB")])
            db.execute("INSERT INTO pairs (customer_id, source_wwn, source_lun, target_wwn, "
                       "target_lun, grp, policy, load_entries, load_bytes) VALUES "
                       "('acme', ?, 0, ?, 0, 0, 'A-1', 0, 0)", (f"{S1:016x}", f"{T1:016x}"))
            db.execute("UPDATE meta SET value = 5")
        store = SQLiteStore(path)
        self.addCleanup(store.close)
        self.assertEqual(store.schema_version, SCHEMA_VERSION)
        self.assertEqual(store.version(), 5)
        self.assertEqual(store.get_customer("acme"),
                         CustomerRecord("acme", "Acme", (), 2, None, 0))
        self.assertEqual(store.get_storage(T1), StorageRecord("edgeB", "acme", T1, None))
        self.assertEqual(store.get_pair(1), OrderedPair("acme", S1, 0, T1, 0, id=1))
        store.update_storage(StorageRecord("edgeB", "acme", T1, T1 ^ 0x800000))   # new column
        store.set_token("acme", "acme-token-0123456789")                           # new table
        self.assertEqual(store.token_owner("acme-token-0123456789"), ("customer", "acme"))

    def test_a_newer_database_is_refused(self):
        path = self.mktemp()
        SQLiteStore(path).close()
        with sqlite3.connect(path) as db:
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        with self.assertRaises(StoreVersionError) as caught:
            SQLiteStore(path)
        self.assertIn(f"schema version {SCHEMA_VERSION + 1} is newer than this rcn-mgmt's "
                      f"{SCHEMA_VERSION}", str(caught.exception))
        self.assertIn(path, str(caught.exception))

    def test_a_database_that_is_not_ours_is_refused(self):
        foreign = self.mktemp()
        with sqlite3.connect(foreign) as db:
            db.execute("CREATE TABLE photos (id INTEGER)")
        with self.assertRaises(StoreVersionError) as caught:
            SQLiteStore(foreign)
        self.assertIn("not an rcn-mgmt database", str(caught.exception))
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"this is not a database" * 100)
        with self.assertRaises(StoreVersionError) as caught:
            SQLiteStore(garbage)
        self.assertIn(garbage, str(caught.exception))

    def test_a_failed_migration_leaves_the_last_good_version(self):
        path = self.mktemp()
        SQLiteStore(path).close()
        broken = "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1)"
        self.patch(store_module, "MIGRATIONS", MIGRATIONS + (broken,))
        self.patch(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        with self.assertRaises(StoreVersionError) as caught:
            store_module.SQLiteStore(path, migrate_to=SCHEMA_VERSION + 1)
        self.assertIn("nowhere", str(caught.exception))
        with sqlite3.connect(path) as db:
            self.assertEqual(db.execute("SELECT version FROM schema_version").fetchone()[0],
                             SCHEMA_VERSION)
            self.assertEqual(db.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                                        "'extra'").fetchone()[0], 0)
        self.assertTrue(os.path.exists(path))
