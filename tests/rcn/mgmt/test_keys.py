"""Log-transfer keys at the management server (rcn.mgmt.keys): made per link and group,
in each device's snapshot (what it needs only), rotated with an overlap, persisted,
shown without material; the AMP listener loopback only."""

from __future__ import annotations

import json
import os
import stat

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.test import iosim

from rcn.config import ConfigError
from rcn.logxfer.keys import KeyRing
from rcn.logxfer.routes import Address
from rcn.mgmt.config import MgmtConfig, parse_config
from rcn.mgmt.keys import MAX_EPOCHS, KeyPolicy
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import MgmtServer
from rcn.mgmt.service import make_service, site
from rcn.mgmt.store import SQLiteStore
from rcn.mgmtlink.client import MgmtClient
from tests.rcn.mgmt.test_server import S1, T1, ServerTestCase

A, B, C1, C2 = "127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003", "127.0.0.1:47004"
ADDRESS = {"edgeA": A, "edgeB": B, "core1": C1, "core2": C2}
ROLE = {"edgeA": "edge", "edgeB": "edge", "core1": "core", "core2": "core"}


class KeysTestCase(ServerTestCase):
    """The server of ServerTestCase with acme's pair S1 -> T1 (one core on its path)."""

    policy = KeyPolicy()

    def setUp(self):
        super().setUp()
        if self.policy != KeyPolicy():
            self.rebuild(SQLiteStore(":memory:"))
        self.assertEqual(self.pair(self.acme, S1, T1)[0], 201)
        self.group = self.ok("GET", "/pairs")["pairs"][0]["group"]
        path = self.ok("GET", "/routes")["routes"][0]["path"]
        self.core = path[1]
        self.spare = "core2" if self.core == "core1" else "core1"
        self.link_a = sorted([A, ADDRESS[self.core]])
        self.link_b = sorted([ADDRESS[self.core], B])

    def rebuild(self, store):
        """The same settings on a new server with ``self.policy`` (setUp's, made again)."""
        self.server = MgmtServer(self.clock, store, keys=self.policy)
        self.server.settings.set_token(OPERATOR, None, "operator-token-0123456789")
        self.site, self.api, self.metrics = site(self.server)
        for name in ADDRESS:
            self.ok("POST", "/devices", {"id": name, "role": ROLE[name],
                                         "log_address": ADDRESS[name],
                                         "processing_limit": 1000 if ROLE[name] == "core"
                                         else 0})
        for a, b in (("edgeA", "core1"), ("core1", "edgeB"), ("edgeA", "core2"),
                     ("core2", "edgeB")):
            self.ok("POST", "/links", {"a": a, "b": b, "capacity": 1e9})
        self.acme = self.ok("POST", "/customers", {"id": "acme", "max_pairs": 1})["token"]
        for wwn, edge in ((S1, "edgeA"), (T1, "edgeB")):
            self.ok("POST", "/storages", {"storage_wwn": wwn, "edge_id": edge,
                                          "customer_id": "acme"})

    def ring(self, device: str) -> KeyRing:
        return KeyRing.from_snapshot(self.server.snapshot_for(device)[1]["keys"])

    def epochs(self, kind: str, name: str) -> dict[int, str]:
        return {e.epoch: e.state for e in self.server.keys.keys[(kind, name)].values()}

    def materials(self) -> set[str]:
        return {row[3] for row in self.server.store.key_rows()}

    def connect(self, *names: str) -> dict:
        """Devices as AMP clients (iosim); ``self.docs[name]``: the last snapshot applied."""
        self.docs, self.pumps = {}, {}
        for name in names:
            client = MgmtClient(self.clock, name, ROLE[name], ADDRESS[name],
                                lambda v, doc, name=name: self.docs.__setitem__(name, (v, doc)),
                                lambda: {"groups": []}, lambda g: {})
            _, _, pump = iosim.connectedServerAndClient(
                lambda: self.server.distribution.factory().buildProtocol(None),
                lambda client=client: client.buildProtocol(None))
            self.pumps[name] = pump
        self.flush()
        return self.docs

    def flush(self):
        for _ in range(4):
            self.clock.advance(0)
            for pump in self.pumps.values():
                pump.flush()


class GenerationTests(KeysTestCase):
    def test_a_key_per_link_of_a_path_and_per_group_made_as_epoch_1_sending(self):
        listing = self.ok("GET", "/keys")
        links = {(r["a"], r["b"]): r for r in listing["links"]}
        self.assertEqual(set(links), {tuple(self.link_a), tuple(self.link_b)})
        for row in links.values():
            self.assertTrue(row["in_use"])
            self.assertEqual([(e["epoch"], e["state"], e["send"]) for e in row["epochs"]],
                             [(1, "send", True)])
        (group,) = listing["groups"]
        self.assertEqual((group["group"], group["holders"]), (self.group, ["edgeA", "edgeB"]))
        self.assertEqual(len(self.materials()), 3)
        for material in self.materials():
            self.assertRegex(material, r"^[0-9a-f]{64}$")

    def test_a_core_holds_its_links_keys_and_no_group_key_an_edge_its_groups_too(self):
        core = self.ring(self.core)
        self.assertEqual(core.groups, {})
        self.assertEqual(core.neighbours(Address.parse(ADDRESS[self.core])),
                         {Address.parse(A), Address.parse(B)})
        self.assertEqual(sorted(sorted(map(str, name)) for name in core.links),
                         sorted([self.link_a, self.link_b]))
        for edge, link in (("edgeA", self.link_a), ("edgeB", self.link_b)):
            ring = self.ring(edge)
            self.assertEqual([sorted(map(str, name)) for name in ring.links], [link])
            self.assertEqual(list(ring.groups), [self.group])
            self.assertTrue(ring.group_send_key(self.group).send)
        self.assertEqual(self.ring("edgeA").group_send_key(self.group).material,
                         self.ring("edgeB").group_send_key(self.group).material)
        self.assertEqual(len(self.ring(self.spare)), 0)      # on no path: no key

    def test_a_reroute_makes_keys_for_the_new_links_and_keeps_the_old_ones(self):
        before = self.server.store.key_rows()
        held = self.ring(self.core).to_snapshot()
        self.server.failed = frozenset({self.core})
        self.server.recompute()
        spare = ADDRESS[self.spare]
        self.assertEqual(len(self.ring(self.spare).links), 2)
        self.assertEqual(len(self.ring(self.core)), 0)
        rows = self.server.store.key_rows()
        self.assertTrue(set(before) <= set(rows))
        self.assertEqual({r[1] for r in rows if r[0] == "link"} - {r[1] for r in before},
                         {" ".join(sorted([A, spare])), " ".join(sorted([spare, B]))})
        self.server.failed = frozenset()
        self.server.recompute()                              # back: the same keys again
        self.assertEqual(self.ring(self.core).to_snapshot(), held)

    def test_a_groups_keys_go_with_its_last_pair(self):
        pair = self.ok("GET", "/pairs")["pairs"][0]["id"]
        self.ok("DELETE", f"/pairs/{pair}")
        self.assertEqual(self.ok("GET", "/keys")["groups"], [])
        self.assertEqual(self.ring("edgeA").groups, {})

    def test_the_snapshot_version_changes_when_keys_change(self):
        before = {d: self.server.snapshot_for(d)[0] for d in ADDRESS}
        self.ok("POST", "/keys/rotate", {"group": self.group})
        after = {d: self.server.snapshot_for(d)[0] for d in ADDRESS}
        for device in ADDRESS:
            self.assertGreater(after[device], before[device], device)


class StoreTests(KeysTestCase):
    def test_the_database_file_is_made_0600_and_an_open_one_made_0600(self):
        path = os.path.join(self.mktemp())
        SQLiteStore(path).close()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        os.chmod(path, 0o644)
        SQLiteStore(path).close()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_keys_deadlines_and_versions_survive_a_restart(self):
        path = self.mktemp()
        self.rebuild(SQLiteStore(path))
        self.pair(self.acme, S1, T1)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.ok("POST", "/keys/rotate", {"all": True})
        rings = {d: self.ring(d).to_snapshot() for d in ADDRESS}
        version = self.server.version
        held = {(n, e.epoch): (e.state, e.deadline, e.version)
                for n, epochs in self.server.keys.keys.items() for e in epochs.values()}
        self.server.stop()
        self.server.store.close()
        again = MgmtServer(self.clock, SQLiteStore(path))
        self.addCleanup(again.store.close)
        self.server = again
        self.assertGreater(again.version, version)           # never an old number again
        self.assertEqual({d: self.ring(d).to_snapshot() for d in ADDRESS}, rings)
        self.assertEqual({(n, e.epoch): (e.state, e.deadline, e.version)
                          for n, epochs in again.keys.keys.items() for e in epochs.values()},
                         held)
        again.start()
        self.addCleanup(again.stop)
        self.clock.advance(3600)                             # no device acknowledged: no send
        self.assertEqual(self.epochs("group", str(self.group)), {1: "send", 2: "pending"})
        again.keys.acked = lambda device: again.version      # now every device has it
        again.keys.acknowledged("edgeA", again.version)
        self.assertEqual(self.epochs("group", str(self.group)), {1: "retiring", 2: "send"})


class RotationTests(KeysTestCase):
    policy = KeyPolicy(rotate_every=0, overlap=60, group_overlap=600, warn_after=10)

    def setUp(self):
        super().setUp()
        self.server.start()
        self.addCleanup(self.server.stop)

    def test_a_link_rotates_accept_first_then_sends_once_both_ends_acknowledge(self):
        self.connect("edgeA", self.core, "edgeB")
        name = " ".join(self.link_a)
        answer = self.ok("POST", "/keys/rotate", {"link": self.link_a[::-1]})
        self.assertEqual(answer["rotated"], [{"kind": "link", "name": name, "epoch": 2}])
        self.assertEqual(self.epochs("link", name), {1: "send", 2: "pending"})
        held = KeyRing.from_snapshot(self.server.snapshot_for("edgeA")[1]["keys"])
        self.assertEqual({e: k.send for e, k in next(iter(held.links.values())).items()},
                         {1: True, 2: False})
        self.flush()                                         # snapshots out, acknowledged
        self.assertEqual(self.epochs("link", name), {1: "retiring", 2: "send"})
        self.assertEqual(self.server.keys.counters["activated"], 1)
        self.flush()
        version, doc = self.docs["edgeA"]
        ring = KeyRing.from_snapshot(doc["keys"])
        self.assertEqual(version, self.server.version)
        self.assertEqual({e: k.send for e, k in next(iter(ring.links.values())).items()},
                         {1: False, 2: True})
        self.clock.advance(59)
        self.assertEqual(self.epochs("link", name), {1: "retiring", 2: "send"})
        self.clock.advance(1)
        self.assertEqual(self.epochs("link", name), {2: "send"})
        self.flush()
        ring = KeyRing.from_snapshot(self.docs[self.core][1]["keys"])
        self.assertEqual(sorted(k for keys in ring.links.values() for k in keys), [1, 2])

    def test_a_device_that_never_acknowledges_holds_the_new_key_back_for_good(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.connect("edgeA")                                # edgeB never connects
        self.ok("POST", "/keys/rotate", {"group": self.group})
        self.flush()
        name = str(self.group)

        def warnings():
            return [formatEvent(e) for e in events if "still not sending" in formatEvent(e)]
        self.clock.advance(9.9)
        self.assertEqual((self.epochs("group", name), warnings()), ({1: "send", 2: "pending"}, []))
        self.clock.advance(0.1)
        (warning,) = warnings()
        self.assertIn(f"group {name}: key epoch 2 still not sending 10 s after it was made: "
                      f"edgeB have not acknowledged", warning)
        for _ in range(5):                                   # days: still never by time
            self.clock.advance(86400)
            self.flush()
        self.assertEqual(self.epochs("group", name), {1: "send", 2: "pending"})
        self.assertEqual(len(warnings()), 1)                 # once per epoch
        counters = self.server.keys.counters
        self.assertEqual((counters["activated"], counters["late_activations"]), (0, 1))
        (group,) = self.ok("GET", "/keys")["groups"]
        self.assertEqual([(e["epoch"], e["state"], e["waiting_for"]) for e in group["epochs"]],
                         [(1, "send", []), (2, "pending", ["edgeB"])])
        ring = KeyRing.from_snapshot(self.docs["edgeA"][1]["keys"])   # edgeA still sends 1
        self.assertEqual({e: k.send for e, k in ring.groups[self.group].items()},
                         {1: True, 2: False})
        status, answer = self.call("POST", "/keys/rotate", {"group": self.group})
        self.assertEqual(status, 409)
        self.assertIn("epoch 2 is still being distributed (not yet acknowledged by edgeB)",
                      answer["error"])
        self.assertEqual([c for c in self.clock.getDelayedCalls()       # no timer spinning
                          if c.func == self.server.keys.tick], [])

    def test_refusals_a_pending_epoch_and_too_many_epochs(self):
        name = str(self.group)
        self.ok("POST", "/keys/rotate", {"group": self.group})       # nobody has it yet
        status, answer = self.call("POST", "/keys/rotate", {"group": self.group})
        self.assertEqual(status, 409)
        self.assertIn("epoch 2 is still being distributed (not yet acknowledged by edgeA, "
                      "edgeB)", answer["error"])
        keys = self.server.keys
        keys.acked = lambda device: self.server.version     # every device has every version
        keys.acknowledged("edgeA", self.server.version)
        self.assertEqual(self.epochs("group", name), {1: "retiring", 2: "send"})
        for _ in range(MAX_EPOCHS - 2):
            self.ok("POST", "/keys/rotate", {"group": self.group})    # sends at once
        self.assertEqual(self.epochs("group", name),
                         {**dict.fromkeys(range(1, MAX_EPOCHS), "retiring"), MAX_EPOCHS: "send"})
        status, answer = self.call("POST", "/keys/rotate", {"group": self.group})
        self.assertEqual(status, 409)
        self.assertIn(f"at most {MAX_EPOCHS}", answer["error"])
        answer = self.ok("POST", "/keys/rotate", {"all": True})
        self.assertEqual([r["name"] for r in answer["skipped"]], [name])
        self.assertEqual(len(answer["rotated"]), 2)


class ScheduleTests(KeysTestCase):
    policy = KeyPolicy(rotate_every=1000, overlap=60, group_overlap=600, warn_after=10)

    def test_every_link_and_group_rotates_every_rotate_every_seconds(self):
        held = {"version": 0}                                # what every device acknowledged
        keys = self.server.keys
        keys.acked = lambda device: held["version"]
        self.server.start()
        self.addCleanup(self.server.stop)
        names = list(keys.keys)
        self.clock.advance(999)
        self.assertEqual({n: self.epochs(*n) for n in names}, dict.fromkeys(names, {1: "send"}))
        self.clock.advance(1)
        self.assertEqual({n: self.epochs(*n) for n in names},
                         dict.fromkeys(names, {1: "send", 2: "pending"}))
        self.clock.advance(500)                              # not acknowledged: not rotated on
        self.assertEqual({n: self.epochs(*n) for n in names},
                         dict.fromkeys(names, {1: "send", 2: "pending"}))
        held["version"] = self.server.version
        keys.acknowledged("edgeA", held["version"])
        self.assertEqual({n: self.epochs(*n)[2] for n in names}, dict.fromkeys(names, "send"))
        self.clock.advance(1000)                             # from epoch 2's making
        self.assertEqual({n: max(self.epochs(*n)) for n in names}, dict.fromkeys(names, 3))

    def test_rotate_every_0_never_rotates(self):
        self.policy = KeyPolicy(rotate_every=0)
        self.rebuild(SQLiteStore(":memory:"))
        self.pair(self.acme, S1, T1)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.clock.advance(10 * 86400)
        self.assertEqual({max(self.epochs(*n)) for n in self.server.keys.keys}, {1})
        self.assertEqual([c for c in self.clock.getDelayedCalls()
                          if c.func == self.server.keys.tick], [])     # no key timer at all


class ApiTests(KeysTestCase):
    def test_rotate_refusals_are_clear(self):
        for body, status, words in (
                ({}, 400, "give one of"), ({"all": True, "group": 1}, 400, "give one of"),
                ({"all": False}, 400, "all: must be true"),
                ({"link": ["nonsense", A]}, 400, "two log-transfer addresses"),
                ({"link": [A]}, 400, "link"), ({"group": "one"}, 400, "group"),
                ({"colour": 1}, 400, "colour"),
                ({"link": [A, B]}, 404, "no route's path has these neighbours"),
                ({"group": self.group + 1}, 404, "no pair has this order guarantee group")):
            got, answer = self.call("POST", "/keys/rotate", body)
            self.assertEqual(got, status, (body, answer))
            self.assertIn(words, answer["error"], body)
        self.assertEqual(self.call("POST", "/keys/rotate", {"all": True}, token=self.acme)[0],
                         403)
        self.assertEqual(self.call("GET", "/keys", token=self.acme)[0], 403)
        spec = json.dumps(json.loads(self.site.resource.children[b"openapi.json"].body))
        self.assertIn("/keys/rotate", spec)

    def test_no_key_material_in_logs_api_answers_or_metrics(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.connect("edgeA", self.core, "edgeB")
        made = set(self.materials())
        answers = [self.ok("POST", "/keys/rotate", {"all": True})]
        made |= self.materials()
        answers.append(self.ok("GET", "/keys"))
        self.flush()
        self.clock.advance(86400)
        self.flush()
        made |= self.materials()
        answers += [self.ok("GET", "/keys"), self.ok("GET", "/devices"), self.ok("GET", "/status")]
        self.assertGreaterEqual(len(made), 6)                # epochs 1 and 2 of each
        self.assertGreater(self.server.keys.counters["retired"], 0)
        text = "\n".join([json.dumps(a) for a in answers] + [self.metrics.render().decode()]
                         + [formatEvent(e) + repr(e) for e in events])
        self.assertRegex(text, r"\nrcn_mgmt_keys_rotations_total [1-9]")
        self.assertTrue(any("key epoch 2 sends" in formatEvent(e) for e in events))
        for material in made:
            self.assertNotIn(material, text)
            self.assertNotIn(material[:16], text)


class LoopbackTests(KeysTestCase):
    def test_an_amp_address_off_loopback_is_refused_saying_why(self):
        for amp in ("tcp:47100:interface=0.0.0.0", "tcp:47100:backlog=5", "tcp:47100:interface=10.0.0.1",
                    "tcp6:47100:interface=\\:\\:"):
            with self.assertRaises(ConfigError) as caught:
                parse_config({"mgmt": {"id": "m", "amp": amp}})
            self.assertIn("mgmt.amp", str(caught.exception))
            self.assertIn("log-transfer keys in clear", str(caught.exception))
            self.assertIn("issue 18", str(caught.exception))
        for amp in ("tcp:47100:interface=127.0.0.1", "tcp6:47100:interface=\\:\\:1",
                    "tcp:47100:interface=127.0.0.2"):
            self.assertEqual(parse_config({"mgmt": {"id": "m", "amp": amp}}).amp, amp)

    def test_make_service_refuses_a_config_built_with_an_open_amp_address(self):
        config = MgmtConfig("m", "db", "tcp:0:interface=127.0.0.1", "tcp:0:interface=0.0.0.0",
                            "token")
        with self.assertRaises(ConfigError) as caught:
            make_service(config, task.Clock())
        self.assertIn("[mgmt] amp", str(caught.exception))
        self.assertIn("issue 18", str(caught.exception))
