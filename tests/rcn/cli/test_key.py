"""`rcn key list|rotate` against a real management API (a server on a task.Clock)."""

from __future__ import annotations

import json

from twisted.internet import defer, task

from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import MgmtServer
from rcn.mgmt.store import SQLiteStore
from tests.rcn.cli.test_mgmt import TOKEN, CliCase

A, B, C = "127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003"
S, T = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"


class KeyCliTests(CliCase):
    def setUp(self):
        self.serve(MgmtServer(task.Clock(), SQLiteStore(":memory:")))
        settings = self.server.settings
        for name, role, address in (("edgeA", "edge", A), ("edgeB", "edge", B),
                                    ("core1", "core", C)):
            settings.add_device(OPERATOR, {"id": name, "role": role, "log_address": address,
                                           "processing_limit": 1000.0})
        for a, b in (("edgeA", "core1"), ("core1", "edgeB")):
            settings.add_link(OPERATOR, {"a": a, "b": b, "capacity": 1e9})
        settings.add_customer(OPERATOR, {"id": "acme"})
        self.customer = settings.new_token(OPERATOR, "acme")
        for wwn, edge in ((S, "edgeA"), (T, "edgeB")):
            settings.add_storage(OPERATOR, {"storage_wwn": wwn, "edge_id": edge,
                                            "customer_id": "acme"})
        self.group = settings.add_pair(OPERATOR, {
            "customer_id": "acme", "source_wwn": S, "source_lun": 0, "target_wwn": T,
            "target_lun": 0, "policy": "A-1"})["group"]
        self.server.changed()

    def rcn(self, *args, token=TOKEN):
        return super().rcn("key", *args, token=token)

    @defer.inlineCallbacks
    def test_list_shows_epochs_and_states_never_key_material(self):
        status, out, err = yield self.rcn("list")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["LINK_OR_GROUP", "HOLDERS", "EPOCH", "STATE", "AGE",
                                            "DEADLINE", "WAITING_FOR", "NEXT_ROTATION"])
        self.assertIn(f"{A} - {C}", out)
        self.assertIn(f"group {self.group}", out)
        self.assertEqual(len(lines), 4)                   # two links and a group, epoch 1
        status, out, _ = yield self.rcn("list", "--json")
        self.assertEqual(len(json.loads(out)["links"]), 2)
        for row in self.server.store.key_rows():
            self.assertNotIn(row[3], out)

    @defer.inlineCallbacks
    def test_rotate_a_link_a_group_or_all(self):
        status, out, err = yield self.rcn("rotate", "--link", C, A)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.strip(), f"link {A} {C}: epoch 2 distributed (accept-only until "
                                      f"every device has it)")
        status, out, _ = yield self.rcn("rotate", "--group", str(self.group))
        self.assertEqual((status, out.split(":")[0]), (0, f"group {self.group}"))
        status, out, _ = yield self.rcn("rotate", "--all")
        self.assertEqual(status, 0)
        self.assertIn(f"link {B} {C}: epoch 2 distributed", out)
        self.assertIn(f"link {A} {C}: not rotated: epoch 2 is still being distributed", out)
        status, out, _ = yield self.rcn("list")
        self.assertEqual(out.count("pending"), 3)
        pending = [line.split() for line in out.splitlines() if "pending" in line]
        self.assertEqual(sorted(cells[-2] for cells in pending),       # none acknowledged
                         ["core1,edgeA", "core1,edgeB", "edgeA,edgeB"])
        status, out, _ = yield self.rcn("list", "--json")
        self.assertEqual({e["state"]: e["waiting_for"] for e in json.loads(out)["groups"][0]
                          ["epochs"]}, {"send": [], "pending": ["edgeA", "edgeB"]})
        for row in self.server.store.key_rows():
            self.assertNotIn(row[3], out)

    @defer.inlineCallbacks
    def test_refusals(self):
        status, _, err = yield self.rcn("rotate")
        self.assertEqual(status, 2)
        self.assertIn("give --link A B, --group N or --all", err)
        status, _, err = yield self.rcn("list", "--all")
        self.assertEqual(status, 2)
        status, _, err = yield self.rcn("rotate", "--group", "7")
        self.assertEqual(status, 1)
        self.assertIn("group 7: no pair has this order guarantee group (HTTP 404", err)
        status, _, err = yield self.rcn("rotate", "--link", A, B)
        self.assertEqual(status, 1)
        self.assertIn("no route's path has these neighbours", err)
        status, _, err = yield self.rcn("rotate", "--all", token=self.customer)
        self.assertEqual(status, 1)
        self.assertIn("HTTP 403", err)
