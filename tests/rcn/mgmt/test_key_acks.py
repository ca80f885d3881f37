"""Key rotation waits for the devices, never for the clock (rcn.mgmt.keys, issue 17's
review): a new epoch sends only once every device that needs it acknowledged a snapshot
holding it; an old one goes only once its overlap has passed *and* every device
acknowledged the snapshot in which its successor sends. The clock only makes the server
warn, once, naming the devices. A device cut off from the management server but still
on the data plane keeps its paths.

:class:`Host` is the management server as :class:`KeyManager` sees it: a snapshot
version per publish and the version each device acknowledged.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from rcn.config import ConfigError
from rcn.logxfer.routes import Address
from rcn.mgmt.config import parse_config
from rcn.mgmt.errors import Conflict
from rcn.mgmt.keys import GROUP, KeyManager, KeyPolicy
from rcn.mgmt.store import SQLiteStore

A, B, C, E = "127.0.0.1:47001", "127.0.0.1:47002", "127.0.0.1:47003", "127.0.0.1:47005"
DEVICES = {A: "edgeA", B: "edgeB", C: "core1", E: "edgeC"}
POLICY = KeyPolicy(rotate_every=0, overlap=60, group_overlap=600, warn_after=10)
G = "7"


class Host:
    """Publishes (a version each time) and records what each device acknowledged."""

    def __init__(self, clock, store, version: int = 0, acks: dict | None = None):
        self.version, self.acks = version, dict(acks or {})
        self.keys = KeyManager(clock, store, POLICY, publish=self.publish,
                               acked=lambda d: self.acks.get(d, 0),
                               current=lambda: self.version)

    def publish(self) -> int:
        self.version += 1
        return self.version

    def ack(self, *devices: str) -> None:
        """``devices`` acknowledge the newest snapshot."""
        for d in devices:
            self.acks[d] = self.version
            self.keys.acknowledged(d, self.version)

    def sync(self, devices=DEVICES, edges=("edgeA", "edgeB", "edgeC")) -> None:
        path = [Address.parse(A), Address.parse(C), Address.parse(B)]
        self.keys.sync([path], dict(devices), {int(G): set(edges)})


class AckRuleTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = SQLiteStore(":memory:")
        self.addCleanup(self.store.close)
        self.host = Host(self.clock, self.store)
        self.keys = self.host.keys
        self.host.sync()
        self.keys.running(True)
        self.addCleanup(self.keys.running, False)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def states(self) -> dict[int, str]:
        return {e.epoch: e.state for e in self.keys.keys[(GROUP, G)].values()}

    def warnings(self, words: str) -> list[str]:
        return [formatEvent(e) for e in self.events if words in formatEvent(e)]

    def waiting(self) -> list[tuple[int, str, list[str]]]:
        (group,) = self.keys.listing()["groups"]
        return [(e["epoch"], e["state"], e["waiting_for"]) for e in group["epochs"]]

    def rotated_and_sending(self) -> int:
        """Rotate the group, every edge acknowledges: epoch 2 sends. The stamp of epoch 1."""
        self.keys.rotate(group=int(G))
        self.host.ack("edgeA", "edgeB", "edgeC")
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})
        return self.keys.keys[(GROUP, G)][1].version

    def test_a_needer_that_never_acknowledges_keeps_the_old_epoch_sending_for_good(self):
        self.keys.rotate(group=int(G))
        self.host.ack("edgeA", "edgeB")
        self.clock.advance(9.9)
        self.assertEqual(self.states(), {1: "send", 2: "pending"})
        self.assertEqual(self.warnings("still not sending"), [])
        for _ in range(10):
            self.clock.advance(10)
            self.host.ack("edgeA", "edgeB")
        self.clock.advance(365 * 86400)
        self.assertEqual(self.states(), {1: "send", 2: "pending"})
        (warning,) = self.warnings("still not sending")
        self.assertIn(f"group {G}: key epoch 2 still not sending 10 s after it was made: "
                      f"edgeC have not acknowledged snapshot version 1", warning)
        self.assertEqual(self.waiting(), [(1, "send", []), (2, "pending", ["edgeC"])])
        self.assertEqual((self.keys.counters["activated"],
                          self.keys.counters["late_activations"]), (0, 1))
        with self.assertRaises(Conflict) as caught:
            self.keys.rotate(group=int(G))
        self.assertIn("not yet acknowledged by edgeC", str(caught.exception))
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.func == self.keys.tick],
                         [])                                 # nothing left to time
        self.host.ack("edgeC")                               # back at last: it sends now
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})

    def test_an_acknowledgement_beyond_the_servers_version_counts_for_nothing(self):
        self.keys.rotate(group=int(G))
        self.host.ack("edgeA", "edgeB")
        self.host.acks["edgeC"] = self.host.version + 5
        self.keys.acknowledged("edgeC", self.host.version + 5)
        self.assertEqual(self.states(), {1: "send", 2: "pending"})

    def test_the_old_epoch_is_stamped_with_the_version_in_which_its_successor_sends(self):
        stamp = self.rotated_and_sending()
        pending = self.keys.keys[(GROUP, G)][2].version
        self.assertEqual(stamp, self.host.version)
        self.assertGreater(stamp, pending)
        self.assertEqual(self.waiting(), [(1, "retiring", ["edgeA", "edgeB", "edgeC"]),
                                          (2, "send", [])])

    def test_a_needer_that_acked_the_pending_epoch_but_not_its_activation_keeps_the_old(self):
        stamp = self.rotated_and_sending()
        self.host.ack("edgeA", "edgeB")                      # edgeC stays at stamp - 1
        self.clock.advance(599)
        self.assertEqual(self.warnings("kept past its overlap"), [])
        self.clock.advance(1)
        self.clock.advance(30 * 86400)
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})
        (warning,) = self.warnings("kept past its overlap")
        self.assertIn(f"group {G}: key epoch 1 kept past its overlap: edgeC have not "
                      f"acknowledged snapshot version {stamp}", warning)
        self.assertEqual(self.waiting(), [(1, "retiring", ["edgeC"]), (2, "send", [])])
        self.assertEqual((self.keys.counters["retired"],
                          self.keys.counters["late_retirements"]), (0, 1))
        self.host.ack("edgeC")                               # it sends with 2 now: 1 goes
        self.assertEqual(self.states(), {2: "send"})
        self.assertEqual(self.keys.counters["retired"], 1)

    def test_every_acknowledgement_in_time_still_waits_for_the_overlap(self):
        self.rotated_and_sending()
        self.host.ack("edgeA", "edgeB", "edgeC")
        self.clock.advance(599)
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})
        self.clock.advance(1)
        self.assertEqual(self.states(), {2: "send"})
        self.assertEqual(self.warnings("kept past its overlap"), [])

    def test_deleting_the_late_device_unblocks_the_activation(self):
        self.keys.rotate(group=int(G))
        self.host.ack("edgeA", "edgeB")
        self.clock.advance(100)
        self.assertEqual(self.states(), {1: "send", 2: "pending"})
        gone = {a: d for a, d in DEVICES.items() if d != "edgeC"}
        self.host.sync(gone, ("edgeA", "edgeB"))             # edgeC deleted, its pairs first
        self.clock.advance(0)
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})

    def test_deleting_the_late_device_unblocks_the_retirement(self):
        self.rotated_and_sending()
        self.host.ack("edgeA", "edgeB")
        self.clock.advance(600)
        self.assertEqual(self.states(), {1: "retiring", 2: "send"})
        gone = {a: d for a, d in DEVICES.items() if d != "edgeC"}
        self.host.sync(gone, ("edgeA", "edgeB"))
        self.clock.advance(0)
        self.assertEqual(self.states(), {2: "send"})

    def test_a_restarted_manager_keeps_the_stamps_and_still_waits(self):
        stamp = self.rotated_and_sending()
        self.host.ack("edgeA", "edgeB")
        self.keys.running(False)
        again = Host(self.clock, self.store, self.host.version, self.host.acks)
        again.sync()
        again.keys.running(True)
        self.addCleanup(again.keys.running, False)
        old = again.keys.keys[(GROUP, G)][1]
        self.assertEqual((old.state, old.version), ("retiring", stamp))
        self.clock.advance(3600)
        self.assertEqual({e.epoch: e.state for e in again.keys.keys[(GROUP, G)].values()},
                         {1: "retiring", 2: "send"})
        again.ack("edgeC")
        self.assertEqual({e.epoch: e.state for e in again.keys.keys[(GROUP, G)].values()},
                         {2: "send"})


class WarnAfterConfigTests(TestCase):
    def test_the_old_name_activate_after_is_read_as_warn_after_with_a_warning(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = parse_config({"mgmt": {"id": "m"}, "keys": {"activate_after": 30.0}})
        self.assertEqual(config.keys.warn_after, 30.0)
        self.assertTrue(any("activate_after is deprecated" in formatEvent(e) for e in events))
        self.assertEqual(parse_config({"mgmt": {"id": "m"},
                                       "keys": {"warn_after": 5.0}}).keys.warn_after, 5.0)
        with self.assertRaises(ConfigError) as caught:
            parse_config({"mgmt": {"id": "m"},
                          "keys": {"activate_after": 30.0, "warn_after": 5.0}})
        self.assertIn("keys.activate_after", str(caught.exception))
