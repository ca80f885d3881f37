"""The rules above the store: who may do what, contract limits (【0056】), isolation
between customers, the derived tables 404 / 405, order guarantee IDs (【0064】) as the
edges compute them, route computation's demands and the devices' snapshots."""

from __future__ import annotations

import json
import random
from functools import partial

from twisted.trial.unittest import TestCase

from datapath.frames.names import format_wwn
from rcn.core.config import parse_config as parse_core_config
from rcn.config import Reader
from rcn.edge.config import read_tables
from rcn.edge.service import SNAPSHOT_TABLES
from rcn.edge.pairs import EdgePairs, PairEntry
from rcn.logxfer.routes import Address
from rcn.mgmt.errors import (Conflict, Forbidden, LimitExceeded, NotFound, SettingsError,
                             Unauthorized)
from rcn.mgmt.model import Access, RouteEntry, VirtualStorage
from rcn.mgmt.routing import Demand, compute_routes
from rcn.mgmt.settings import OPERATOR, Caller, Settings
from rcn.mgmt.store import SQLiteStore

S1, T1 = 0x500A098000000001, 0x500A098000000002          # acme: edgeA -> edgeB
S2, T2 = 0x500A098000000011, 0x500A098000000012          # globex: edgeC -> edgeB
UNKNOWN = 0x500A0980000000FF
ADDRESS = {"edgeA": "10.0.0.1:47001", "edgeB": "10.0.0.2:47001", "edgeC": "10.0.0.3:47001",
           "core1": "10.0.0.9:47001"}
ACME, GLOBEX = Caller(customer_id="acme"), Caller(customer_id="globex")
W = format_wwn


class Base(TestCase):
    """Three edges around one core; acme may use edgeA and edgeB (3 storages, 2 pairs),
    globex has no limits. acme: S1 on edgeA, T1 on edgeB; globex: S2 on edgeC, T2 on edgeB."""

    def setUp(self):
        self.store = SQLiteStore(":memory:")
        self.addCleanup(self.store.close)
        self.s = Settings(self.store)
        for name, address in ADDRESS.items():
            self.s.add_device(OPERATOR, {"id": name, "role": name[:4], "log_address": address})
        for edge in ("edgeA", "edgeB", "edgeC"):
            self.s.add_link(OPERATOR, {"a": edge, "b": "core1", "capacity": 1e9})
        self.s.add_customer(OPERATOR, {"id": "acme", "name": "Acme Corp",
                                       "allowed_edges": ["edgeA", "edgeB"], "max_storages": 3,
                                       "max_pairs": 2, "bandwidth": 100 << 20})
        self.s.add_customer(OPERATOR, {"id": "globex"})
        self.s.add_storage(ACME, {"storage_wwn": W(S1), "edge_id": "edgeA"})
        self.s.add_storage(ACME, {"storage_wwn": W(T1), "edge_id": "edgeB"})
        self.s.add_storage(OPERATOR, {"storage_wwn": W(S2), "edge_id": "edgeC",
                                      "customer_id": "globex"})
        self.s.add_storage(GLOBEX, {"storage_wwn": W(T2), "edge_id": "edgeB"})

    def pair(self, caller, source, target, lun=0, **more) -> dict:
        return self.s.add_pair(caller, {"source_wwn": W(source), "source_lun": lun,
                                        "target_wwn": W(target), "target_lun": lun, **more})

    def refused(self, kind, field, call, *args, text: str | None = None):
        """``call(*args)`` raises ``kind`` naming ``field``, and changes nothing."""
        version = self.s.version()
        with self.assertRaises(kind) as caught:
            call(*args)
        self.assertEqual(caught.exception.field, field)
        self.assertIn(field, str(caught.exception))
        if text is not None:
            self.assertIn(text, str(caught.exception))
        self.assertEqual(self.s.version(), version)
        return caught.exception


class PermissionTests(Base):
    def test_devices_links_and_customers_are_the_operators(self):
        calls = [("devices", self.s.list_devices), ("devices", self.s.get_device, "edgeA"),
                 ("devices", self.s.add_device, {"id": "x", "role": "core",
                                                 "log_address": "10.0.0.7:1"}),
                 ("devices", self.s.update_device, "core1", {"processing_limit": 1}),
                 ("devices", self.s.delete_device, "core1"),
                 ("links", self.s.list_links), ("links", self.s.get_link, "edgeA", "core1"),
                 ("links", self.s.add_link, {"a": "edgeA", "b": "edgeB"}),
                 ("links", self.s.update_link, "edgeA", "core1", {"capacity": 1}),
                 ("links", self.s.delete_link, "edgeA", "core1"),
                 ("customers", self.s.list_customers),
                 ("customers", self.s.get_customer, "globex"),
                 ("customers", self.s.get_customer, "nobody"),       # same as an existing one
                 ("customers", self.s.add_customer, {"id": "x"}),
                 ("customers", self.s.update_customer, "acme", {"max_pairs": 100}),
                 ("customers", self.s.delete_customer, "globex"),
                 ("tokens", self.s.set_token, "acme", "a-token-of-my-own-choosing"),
                 ("tokens", self.s.new_token, None)]
        for field, call, *args in calls:
            e = self.refused(Forbidden, field, call, ACME, *args, text="customer acme may not")
            self.assertEqual(e.status, 403)
        self.assertEqual(self.s.get_customer(OPERATOR, "acme")["max_pairs"], 2)

    def test_a_customer_reads_its_own_contract(self):
        self.pair(ACME, S1, T1)
        self.assertEqual(self.s.get_customer(ACME, "acme"),
                         {"id": "acme", "name": "Acme Corp", "allowed_edges": ["edgeA", "edgeB"],
                          "max_storages": 3, "max_pairs": 2, "bandwidth": 100 << 20,
                          "storages": 2, "pairs": 1})

    def test_tokens_stand_for_their_callers(self):
        acme = self.s.new_token(OPERATOR, "acme")
        self.s.set_token(OPERATOR, None, "the-operators-own-token")
        self.assertEqual(self.s.authenticate(acme), ACME)
        self.assertEqual(self.s.authenticate("the-operators-own-token"), OPERATOR)
        for bad in ("nope", "", None):
            e = self.refused(Unauthorized, "token", self.s.authenticate, bad)
            self.assertEqual(e.status, 401)
        self.assertEqual(e.as_json(), {"error": "Unauthorized", "field": "token",
                                       "message": str(e)})
        self.refused(SettingsError, "token", self.s.set_token, OPERATOR, "acme", "short")
        again = self.s.new_token(OPERATOR, "acme")
        self.assertNotEqual(again, acme)
        self.refused(Unauthorized, "token", self.s.authenticate, acme)   # replaced
        self.refused(NotFound, "customer_id", self.s.new_token, OPERATOR, "nobody")

    def test_a_caller_that_is_nobody_sees_nothing(self):
        self.refused(Unauthorized, "token", self.s.list_storages, Caller())
        self.refused(Unauthorized, "token", self.s.list_pairs, Caller())


class LimitTests(Base):
    def test_a_storage_on_an_edge_outside_the_contract_is_refused(self):
        for caller in (ACME, OPERATOR):
            e = self.refused(LimitExceeded, "allowed_edges", self.s.add_storage, caller,
                             {"storage_wwn": W(UNKNOWN), "edge_id": "edgeC",
                              "customer_id": "acme"})
            self.assertEqual(str(e), "customer acme: allowed_edges is edgeA, edgeB; edgeC is "
                                     "not one of them")
            self.assertEqual(e.status, 409)
        self.refused(LimitExceeded, "allowed_edges", self.s.update_storage, ACME, W(S1),
                     {"edge_id": "edgeC"})
        self.assertEqual(self.s.get_storage(ACME, W(S1))["edge_id"], "edgeA")

    def test_max_storages(self):
        self.s.add_storage(ACME, {"storage_wwn": W(S1 + 0x100), "edge_id": "edgeA"})
        for caller in (ACME, OPERATOR):
            e = self.refused(LimitExceeded, "max_storages", self.s.add_storage, caller,
                             {"storage_wwn": W(S1 + 0x200), "edge_id": "edgeA",
                              "customer_id": "acme"})
            self.assertEqual(str(e), "customer acme: max_storages is 3; it has 3 already")
        self.assertEqual(len(self.s.list_storages(ACME)), 3)

    def test_max_pairs(self):
        self.pair(ACME, S1, T1, 0)
        self.pair(OPERATOR, S1, T1, 1)
        for caller in (ACME, OPERATOR):
            e = self.refused(LimitExceeded, "max_pairs", self.pair, caller, S1, T1, 2)
            self.assertEqual(str(e), "customer acme: max_pairs is 2; it has 2 already")
        self.s.delete_pair(ACME, self.s.list_pairs(ACME)[0]["id"])
        self.pair(ACME, S1, T1, 2)
        for _ in range(5):
            self.pair(GLOBEX, S2, T2, _)                               # no limit

    def test_a_limit_is_not_lowered_below_what_the_customer_has(self):
        self.pair(ACME, S1, T1, 0)
        self.pair(ACME, S1, T1, 1)
        self.refused(Conflict, "max_pairs", self.s.update_customer, OPERATOR, "acme",
                     {"max_pairs": 1}, text="max_pairs 1 is below the 2 pairs it has")
        self.refused(Conflict, "max_storages", self.s.update_customer, OPERATOR, "acme",
                     {"max_storages": 1})
        self.refused(Conflict, "allowed_edges", self.s.update_customer, OPERATOR, "acme",
                     {"allowed_edges": ["edgeA", "edgeC"]}, text="leaves out edgeB")
        self.assertEqual(self.s.get_customer(OPERATOR, "acme")["allowed_edges"],
                         ["edgeA", "edgeB"])
        changed = self.s.update_customer(OPERATOR, "acme", {"max_pairs": None, "name": "ACME"})
        self.assertEqual((changed["max_pairs"], changed["name"], changed["max_storages"]),
                         (None, "ACME", 3))


class IsolationTests(Base):
    def setUp(self):
        super().setUp()
        self.acme_pair = self.pair(ACME, S1, T1)
        self.globex_pair = self.pair(GLOBEX, S2, T2)

    def assertSameAsMissing(self, theirs: SettingsError, missing: SettingsError, old, new):
        self.assertEqual((type(theirs), theirs.field, theirs.status),
                         (type(missing), missing.field, missing.status))
        self.assertEqual(str(theirs).replace(old, new), str(missing))
        for secret in ("acme", "Acme", "edgeA", "edgeB"):     # whose, and where
            self.assertNotIn(secret, str(theirs))

    def test_a_customer_sees_its_own_storages_and_pairs_only(self):
        self.assertEqual([s["storage_wwn"] for s in self.s.list_storages(GLOBEX)],
                         [W(S2), W(T2)])
        self.assertEqual([p["id"] for p in self.s.list_pairs(GLOBEX)],
                         [self.globex_pair["id"]])
        self.assertEqual(len(self.s.list_storages(OPERATOR)), 4)
        self.assertEqual(len(self.s.list_pairs(OPERATOR)), 2)
        self.assertEqual(self.s.get_pair(GLOBEX, self.globex_pair["id"]), self.globex_pair)

    def test_another_customers_storage_is_not_found(self):
        missing = self.refused(NotFound, "storage_wwn", self.s.get_storage, GLOBEX, W(UNKNOWN))
        for call, *args in ((self.s.get_storage,), (self.s.delete_storage,),
                            (self.s.update_storage, {"edge_id": "edgeC"}),
                            (self.s.update_storage, {"virtual_wwn": W(UNKNOWN)})):
            theirs = self.refused(NotFound, "storage_wwn", call, GLOBEX, W(S1), *args)
            self.assertSameAsMissing(theirs, missing, W(S1), W(UNKNOWN))
        self.assertEqual(self.s.get_storage(ACME, W(S1)),
                         {"storage_wwn": W(S1), "edge_id": "edgeA", "customer_id": "acme",
                          "virtual_wwn": None})
        self.refused(NotFound, "storage_wwn", self.s.get_storage, GLOBEX, "not-a-wwn")

    def test_another_customers_pair_is_not_found(self):
        pid = self.acme_pair["id"]
        missing = self.refused(NotFound, "id", self.s.get_pair, GLOBEX, 999)
        for call, *args in ((self.s.get_pair,), (self.s.delete_pair,),
                            (self.s.update_pair, {"load_bytes": 1.0})):
            theirs = self.refused(NotFound, "id", call, GLOBEX, pid, *args)
            self.assertSameAsMissing(theirs, missing, str(pid), "999")
        self.assertEqual(self.s.get_pair(ACME, pid), self.acme_pair)

    def test_a_pair_with_another_customers_storage_is_not_found(self):
        self.s.add_storage(GLOBEX, {"storage_wwn": W(S2 + 0x100), "edge_id": "edgeA"})
        for field, source, target in (("source_wwn", S1, T2), ("target_wwn", S2, T1)):
            theirs = self.refused(NotFound, field, self.pair, GLOBEX, source, target, 3)
            wwn = S1 if field == "source_wwn" else T1
            missing = self.refused(NotFound, field, self.pair, GLOBEX,
                                   UNKNOWN if field == "source_wwn" else source,
                                   UNKNOWN if field == "target_wwn" else target, 3)
            self.assertSameAsMissing(theirs, missing, W(wwn), W(UNKNOWN))

    def test_a_customer_acts_for_itself_only(self):
        self.refused(Forbidden, "customer_id", self.s.add_storage, GLOBEX,
                     {"storage_wwn": W(UNKNOWN), "edge_id": "edgeB", "customer_id": "acme"})
        self.refused(Forbidden, "customer_id", partial(self.pair, customer_id="acme"), GLOBEX,
                     S2, T2, 5)
        e = self.refused(Conflict, "storage_wwn", self.s.add_storage, GLOBEX,
                         {"storage_wwn": W(S1), "edge_id": "edgeB"})   # a WWN is the world's
        self.assertNotIn("acme", str(e))
        self.assertNotIn("edgeA", str(e))

    def test_access_lets_each_storage_use_its_own_pairs_virtual_storages_only(self):
        on_b = {(a.storage_wwn, a.virtual_wwn) for a in self.s.access() if a.edge_id == "edgeB"}
        self.assertEqual(on_b, {(T1, S1), (T2, S2)})     # both customers' arrays on edgeB


class BodyTests(Base):
    def test_wrong_types_and_unknown_fields_name_the_field(self):
        good = {"source_wwn": W(S1), "source_lun": 0, "target_wwn": W(T1), "target_lun": 0}
        for change, field in (({"source_lun": "0"}, "source_lun"),
                              ({"source_wwn": "zz"}, "source_wwn"),
                              ({"target_wwn": True}, "target_wwn"),
                              ({"target_wwn": 1.5}, "target_wwn"),
                              ({"policy": "C"}, "policy"),
                              ({"policy": "B"}, "group"),
                              ({"load_bytes": "lots"}, "load_bytes"),
                              ({"colour": "red"}, "colour")):
            self.refused(SettingsError, field, self.s.add_pair, ACME, {**good, **change})
        self.refused(SettingsError, "target_lun", self.s.add_pair, ACME,
                     {k: v for k, v in good.items() if k != "target_lun"}, text="missing")
        self.refused(SettingsError, "body", self.s.add_pair, ACME, [good])
        self.refused(SettingsError, "processing_limit", self.s.add_device, OPERATOR,
                     {"id": "core2", "role": "core", "log_address": "10.0.0.8:1",
                      "processing_limit": "fast"})
        self.refused(SettingsError, "allowed_edges", self.s.add_customer, OPERATOR,
                     {"id": "x", "allowed_edges": "edgeA"})
        self.refused(SettingsError, "group", self.s.update_pair, ACME,
                     self.pair(ACME, S1, T1)["id"], {"group": 5}, text="not a field")
        self.refused(SettingsError, "id", self.s.update_device, OPERATOR, "core1",
                     {"id": "core9"})

    def test_wwns_come_as_text_or_integers(self):
        p = self.s.add_pair(ACME, {"source_wwn": f"{S1:016x}", "source_lun": 1,
                                   "target_wwn": T1, "target_lun": 1})
        self.assertEqual((p["source_wwn"], p["target_wwn"]), (W(S1), W(T1)))
        self.assertEqual(self.s.get_pair(ACME, str(p["id"])), p)

    def test_every_path_of_crud_through_settings(self):
        self.s.update_device(OPERATOR, "core1", {"processing_limit": 5000, "failure_domain": "x"})
        self.assertEqual(self.s.get_device(OPERATOR, "core1"),
                         {"id": "core1", "role": "core", "log_address": ADDRESS["core1"],
                          "processing_limit": 5000.0, "failure_domain": "x"})
        self.s.update_link(OPERATOR, "core1", "edgeA", {"latency_ms": 4})
        self.assertEqual(self.s.get_link(OPERATOR, "edgeA", "core1")["latency_ms"], 4.0)
        self.s.add_link(OPERATOR, {"a": "edgeA", "b": "edgeB"})
        self.assertEqual(len(self.s.list_links(OPERATOR)), 4)
        self.s.delete_link(OPERATOR, "edgeB", "edgeA")
        self.s.add_device(OPERATOR, {"id": "core2", "role": "core", "log_address": "10.0.0.8:1"})
        self.s.delete_device(OPERATOR, "core2")
        self.assertEqual([d["id"] for d in self.s.list_devices(OPERATOR)],
                         ["core1", "edgeA", "edgeB", "edgeC"])
        self.s.add_customer(OPERATOR, {"id": "initech"})
        self.assertEqual([c["id"] for c in self.s.list_customers(OPERATOR)],
                         ["acme", "globex", "initech"])
        self.s.delete_customer(OPERATOR, "initech")
        p = self.pair(ACME, S1, T1, load_entries=4)
        self.assertEqual(self.s.update_pair(ACME, p["id"], {"load_bytes": 8e6})["load_bytes"], 8e6)
        self.s.delete_pair(ACME, p["id"])
        self.s.update_storage(ACME, W(T1), {"virtual_wwn": W(T1 ^ 0x800000)})
        self.assertEqual(self.s.get_storage(ACME, W(T1))["virtual_wwn"], W(T1 ^ 0x800000))
        self.s.delete_storage(ACME, W(T1))
        self.assertEqual([s["storage_wwn"] for s in self.s.list_storages(ACME)], [W(S1)])


class DerivedTableTests(Base):
    def setUp(self):
        super().setUp()
        self.p1 = self.pair(ACME, S1, T1, 0, load_entries=10.0, load_bytes=1e6)
        self.p2 = self.pair(ACME, S1, T1, 1, load_entries=5.0, load_bytes=2e6)
        self.p3 = self.pair(GLOBEX, S2, T2, 0, policy="B", group=7, load_bytes=5.0)

    def test_same_wwn_scheme(self):
        self.assertEqual(self.s.virtual_storages(), [
            VirtualStorage("edgeA", T1, "edgeB", T1),
            VirtualStorage("edgeB", S1, "edgeA", S1),
            VirtualStorage("edgeB", S2, "edgeC", S2),
            VirtualStorage("edgeC", T2, "edgeB", T2)])
        self.assertEqual(self.s.access(), [
            Access("edgeA", T1, S1), Access("edgeB", S1, T1),
            Access("edgeB", S2, T2), Access("edgeC", T2, S2)])

    def test_virtual_wwn_variant(self):
        vs1, vt1 = S1 ^ 0x800000, T1 ^ 0x800000          # what rcn.lab.virtual_wwn gives
        self.s.update_storage(ACME, W(S1), {"virtual_wwn": W(vs1)})
        self.s.update_storage(ACME, W(T1), {"virtual_wwn": W(vt1)})
        self.assertEqual(self.s.virtual_storages(), [
            VirtualStorage("edgeA", vt1, "edgeB", T1),      # shown virtual, partner real
            VirtualStorage("edgeB", S2, "edgeC", S2),       # globex keeps the same-WWN scheme
            VirtualStorage("edgeB", vs1, "edgeA", S1),
            VirtualStorage("edgeC", T2, "edgeB", T2)])
        self.assertEqual(self.s.access(), [
            Access("edgeA", vt1, S1), Access("edgeB", S2, T2),
            Access("edgeB", vs1, T1), Access("edgeC", T2, S2)])
        self.refused(Conflict, "virtual_wwn", self.s.update_storage, GLOBEX, W(T2),
                     {"virtual_wwn": W(vs1)})

    def test_group_ids_by_policy_equal_the_edges(self):
        a = Address.parse(ADDRESS["edgeA"]), Address.parse(ADDRESS["edgeB"])
        a1 = EdgePairs("A-1").group_for(S1, T1, *a)
        groups = self.s.groups()
        self.assertEqual(groups, {self.p1["id"]: a1, self.p2["id"]: a1, self.p3["id"]: 7})
        self.assertEqual(self.p1["group"], a1)
        self.s.update_customer(OPERATOR, "acme", {"max_pairs": None})
        self.s.add_storage(ACME, {"storage_wwn": W(S1 + 0x100), "edge_id": "edgeA"})
        x = self.pair(ACME, S1, T1, 2, policy="A-2")
        y = self.pair(ACME, S1 + 0x100, T1, 3, policy="A-2")
        a2 = EdgePairs("A-2").group_for(S1, T1, *a)
        self.assertEqual((x["group"], y["group"]), (a2, a2))     # one per (edge, edge)
        self.assertNotEqual(a1, a2)
        self.assertEqual(self.s.groups()[y["id"]], a2)
        z = self.pair(ACME, S1 + 0x100, T1, 4)
        self.assertEqual(z["group"], EdgePairs("A-1").group_for(S1 + 0x100, T1, *a))

    def test_the_edge_computes_the_same_ids_from_the_routes_it_is_sent(self):
        self.s.update_customer(OPERATOR, "acme", {"max_pairs": None})
        a2 = self.pair(ACME, S1, T1, 2, policy="A-2")
        routes = [RouteEntry(S1, T1, ("edgeA", "core1", "edgeB"))]
        tables = edge_tables(self.s.snapshot_for("edgeA", routes))
        route = tables.routes.route(S1, T1)     # what PAIR_CREATE at the edge uses
        for policy, pair in (("A-1", self.p1), ("A-2", a2)):
            self.assertEqual(EdgePairs(policy).group_for(S1, T1, route.path[0], route.path[-1]),
                             pair["group"])

    def test_a_group_belongs_to_one_customer_and_one_pair_of_edges(self):
        self.s.update_customer(OPERATOR, "acme", {"max_pairs": None})
        self.pair(ACME, S1, T1, 2, policy="A-2")
        self.s.add_storage(GLOBEX, {"storage_wwn": W(S2 + 0x100), "edge_id": "edgeA"})
        e = self.refused(Conflict, "group", partial(self.pair, policy="A-2"), GLOBEX,
                         S2 + 0x100, T2, 1,
                         text="another customer's pairs (A-2 IDs name only the two edges)")
        self.assertNotIn("acme", str(e))
        self.pair(GLOBEX, S2 + 0x100, T2, 1, policy="A-1")
        # two storage pairs whose A-1 IDs collide (a 30-bit checksum), from two source edges
        first, second = a1_collision(T1)
        self.s.update_customer(OPERATOR, "acme", {"max_storages": None, "allowed_edges": []})
        self.s.add_storage(ACME, {"storage_wwn": W(first), "edge_id": "edgeA"})
        self.s.add_storage(ACME, {"storage_wwn": W(second), "edge_id": "edgeC"})
        self.pair(ACME, first, T1, 10)
        self.refused(Conflict, "group", self.pair, ACME, second, T1, 11,
                     text="a group runs between one source edge and one target edge")
        self.pair(ACME, second, T1, 11, policy="B", group=8)

    def test_demands_sum_the_loads_per_storage_pair(self):
        self.assertEqual(self.s.demands(), [
            {"source_wwn": S1, "target_wwn": T1, "source_edge": "edgeA", "target_edge": "edgeB",
             "load_entries": 15.0, "load_bytes": 3e6},
            {"source_wwn": S2, "target_wwn": T2, "source_edge": "edgeC", "target_edge": "edgeB",
             "load_entries": 0.0, "load_bytes": 5.0}])
        back = [d for d in self.s.demands(reverse=True) if d["source_wwn"] in (T1, T2)]
        self.assertEqual(back, [
            {"source_wwn": T1, "target_wwn": S1, "source_edge": "edgeB", "target_edge": "edgeA",
             "load_entries": 0.0, "load_bytes": 0.0},
            {"source_wwn": T2, "target_wwn": S2, "source_edge": "edgeB", "target_edge": "edgeC",
             "load_entries": 0.0, "load_bytes": 0.0}])


class SnapshotTests(Base):
    def setUp(self):
        super().setUp()
        self.s.update_storage(ACME, W(T1), {"virtual_wwn": W(T1 ^ 0x800000)})
        self.p1 = self.pair(ACME, S1, T1, 0)
        self.p2 = self.pair(GLOBEX, S2, T2, 0, policy="B", group=7)
        self.s.update_customer(OPERATOR, "globex", {"bandwidth": 1 << 20})
        self.routes = {(S1, T1): RouteEntry(S1, T1, ("edgeA", "core1", "edgeB")),
                       (S2, T2): RouteEntry(S2, T2, ("edgeC", "core1", "edgeB"))}

    def test_a_source_edge_gets_its_tables_pairs_and_routes(self):
        doc = self.s.snapshot_for("edgeA", self.routes)
        self.assertEqual(doc, {
            "format": 1, "version": self.s.version(),
            "device": {"id": "edgeA", "role": "edge", "log_address": ADDRESS["edgeA"]},
            "route": [{"source_wwn": W(S1), "target_wwn": W(T1),
                       "path": [ADDRESS["edgeA"], ADDRESS["core1"], ADDRESS["edgeB"]]}],
            "storage": [{"wwn": W(S1), "customer": "acme"}],
            "virtual_storage": [{"wwn": W(T1 ^ 0x800000), "partner_wwn": W(T1),
                                 "partner_edge": "edgeB"}],
            "access": [{"virtual_wwn": W(T1 ^ 0x800000), "storage_wwn": W(S1)}],
            "pair": [{"source_wwn": W(S1), "source_lun": 0, "target_wwn": W(T1),
                      "target_lun": 0, "group": self.p1["group"], "customer": "acme"}],
            "customer": [{"id": "acme", "bandwidth": 100 << 20}]})
        self.assertEqual(json.loads(json.dumps(doc, allow_nan=False)), doc)   # strict JSON

    def test_the_edge_reads_its_snapshot_as_it_reads_its_file(self):
        source = edge_tables(self.s.snapshot_for("edgeA", self.routes))
        self.assertEqual([(v.wwn, v.partner_wwn, v.partner_edge_id)
                          for v in source.virtual_storages], [(T1 ^ 0x800000, T1, "edgeB")])
        self.assertEqual(source.access, {(S1, T1 ^ 0x800000)})
        self.assertEqual(source.pairs, [PairEntry(S1, 0, T1, 0, self.p1["group"], "acme")])
        self.assertEqual(source.customers, {"acme": 100 << 20})
        self.assertEqual([str(a) for a in source.routes.route(S1, T1).path],
                         [ADDRESS["edgeA"], ADDRESS["core1"], ADDRESS["edgeB"]])
        target = edge_tables(self.s.snapshot_for("edgeB", self.routes))
        self.assertEqual(sorted((v.wwn, v.partner_edge_id) for v in target.virtual_storages),
                         [(S1, "edgeA"), (S2, "edgeC")])
        self.assertEqual(target.access, {(T1, S1), (T2, S2)})
        self.assertEqual(target.pairs, [])                   # no source is attached there
        self.assertEqual(len(target.routes), 2)

    def test_a_core_gets_the_routes_through_it(self):
        doc = self.s.snapshot_for("core1", list(self.routes.values()))
        self.assertEqual(set(doc), {"format", "version", "device", "route"})
        self.assertEqual([(r["source_wwn"], r["target_wwn"]) for r in doc["route"]],
                         [(W(S1), W(T1)), (W(S2), W(T2))])
        config = parse_core_config({"core": {"id": "core1", "listen": ADDRESS["core1"]},
                                    "seal": {"keys": "core1.keys"}, "route": doc["route"]})
        self.assertEqual(len(config.routes), 2)
        self.assertEqual(self.s.snapshot_for("edgeC", self.routes)["route"][0]["path"][0],
                         ADDRESS["edgeC"])

    def test_demands_feed_route_computation_whose_routes_feed_the_snapshots(self):
        result = compute_routes(self.store.list_devices(), self.store.list_links(),
                                [Demand(**d) for d in self.s.demands(reverse=True)])
        self.assertEqual(result.infeasible, {})
        self.assertEqual(len(result.routes), 4)
        doc = self.s.snapshot_for("core1", result.routes)
        self.assertEqual(len(doc["route"]), 4)
        self.assertEqual(edge_tables(self.s.snapshot_for("edgeA", result.routes))
                         .routes.route(T1, S1).path[0], Address.parse(ADDRESS["edgeB"]))

    def test_the_version_moves_with_the_settings(self):
        before = self.s.snapshot_for("core1", self.routes)
        self.assertEqual(self.s.snapshot_for("core1", self.routes), before)   # deterministic
        self.s.update_pair(ACME, self.p1["id"], {"load_entries": 3.0})
        self.assertEqual(self.s.snapshot_for("core1", self.routes)["version"],
                         before["version"] + 1)

    def test_unknown_devices_are_refused(self):
        e = self.refused(NotFound, "device_id", self.s.snapshot_for, "edgeZ", self.routes)
        self.assertIsInstance(e, LookupError)               # what the distribution expects
        stale = [RouteEntry(S1, T1, ("edgeA", "core7", "edgeB"))]
        self.refused(SettingsError, "routes", self.s.snapshot_for, "edgeA", stale,
                     text="'core7'")


def edge_tables(doc: dict):
    """The tables as an edge reads a snapshot: with its configuration file's own reader."""
    return read_tables(Reader({k: doc.get(k, []) for k in SNAPSHOT_TABLES}, "snapshot."))


def a1_collision(target: int) -> tuple[int, int]:
    """Two source WWNs whose A-1 IDs toward ``target`` are equal: a birthday search over
    the 30 bits the ID keeps (seeded: the same pair every run)."""
    rng, seen, a1 = random.Random(7), {}, EdgePairs("A-1")
    for _ in range(1 << 20):
        source = 0x5000000000000000 | rng.getrandbits(60)
        key = a1.group_for(source, target, "", "")
        if key in seen and seen[key] != source:
            return seen[key], source
        seen[key] = source
    raise AssertionError("no collision found")
