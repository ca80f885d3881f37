"""Sealed log transfer in the simulation: keys where they belong, rotation under load.

A rotation (issue 17) is three steps on every device: the new epoch accepted, then sent
with, then -- after an overlap -- the old one retired. Under a running workload over a
lossy network it must lose no write, keep every target volume a prefix of the source's
writes at every apply (the checker), and cost no retransmission storm: the same seed
without a rotation is the yardstick.

Two ways to drive it. :mod:`tests.rcn.sim.keys` applies each step to every device at
once, as if each had acknowledged the last at that instant -- the rules' ideal case, and
a way to botch a rotation on purpose. :class:`ManagedKeys` runs the management server's
own :class:`~rcn.mgmt.keys.KeyManager`: each device gets the snapshots over a management
channel with its own delay and acknowledges them, and a step happens only when the
server's rules say (a new epoch sends once every device that needs it acknowledged it; an
old one goes after its overlap once every device acknowledged the snapshot in which its
successor sends). A device cut off from the management server acknowledges nothing, so
the rotation of its keys waits -- it must not lose its paths.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from datapath.frames.logentry import Seal
from rcn.edge.receiver import ReceiverConfig
from rcn.edge.source import stored_entry
from rcn.mgmt.keys import GROUP as GROUP_KEY, LINK, KeyManager, KeyPolicy
from rcn.mgmt.store import SQLiteStore
from tests.rcn.sim.checker import PrefixViolation
from tests.rcn.sim.harness import GROUP, SOURCE_WWN as S, TARGET_WWN as T, SimRcn
from tests.rcn.sim.keys import ACCEPT, RETIRE, SEND
from tests.rcn.sim.lifecycle import TRACK, LifecycleSim
from tests.rcn.sim.network import LinkModel

LOSSY = LinkModel(loss=0.03, duplicate=0.02, min_delay=0.0001, max_delay=0.003)
WRITES = 1000
#: the target's reorder window: wide enough for the backlog 1000 writes at depth 8 build
#: (the harness's 256 strands some seeds without any rotation -- see the report of
#: issue 17's simulation work; the daemons' default is 16384)
RECEIVER = ReceiverConfig(window=2048, nak_delay=0.005, nak_interval=0.02, retry_delay=0.01)
#: one write every 0.5 ms: 1000 writes over 0.5 simulated seconds, a backlog of up to
#: ~300 unacknowledged entries at the source edge on the lossy network
STEP = 0.0005
#: two rotations while they run; each step reaches every device at once. The overlap
#: (send..retire) need not outlast the entries sealed under the old group key that the
#: source edge still retains: it holds that epoch for its log and re-seals what it sends
#: (RetiredWhileRetainedTests)
PLAN = ((0.05, ACCEPT), (0.08, SEND), (0.25, RETIRE),
        (0.27, ACCEPT), (0.30, SEND), (0.45, RETIRE))


def retained_epochs(sim: SimRcn) -> set[int]:
    """The group key epochs of the entries the source edge still retains."""
    store = sim.source.log_store
    return {stored_entry(store.get(GROUP, s))[0].key_epoch for s in store.retained(GROUP)}
#: the hop and end-to-end refusals a good rotation must not cause
REFUSALS = ("not_neighbour", "unsealed", "malformed", "unknown_key", "bad_tag", "no_link_key",
            "e2e_unsealed", "e2e_unknown_key", "e2e_retired_key", "e2e_bad_tag")


class SealedSimulationTests(TestCase):
    def test_every_device_runs_sealed_with_only_its_keys(self):
        sim = SimRcn(11, cores=2, model=LOSSY)
        sim.run(200)
        sim.assert_equal()
        for device, address in ((sim.source, "10.0.0.1"), (sim.target, "10.0.0.2")):
            hop = sim.net.endpoints[device.settings.me].hop
            self.assertGreater(hop.counts["opened"], 0, address)
            self.assertEqual(set(hop.ring.groups), {GROUP})
            self.assertEqual(len(hop.ring.links), 1)            # its one link, to a core
        self.assertGreaterEqual(sim.source.seal.counts["sealed"], 200)
        self.assertGreater(sim.target.seal.counts["opened"], 200)
        self.assertGreater(sim.source.seal.counts["opened"], 0)  # the target's WROKs
        for core in sim.cores:
            hop = sim.net.endpoints[core.me].hop
            self.assertEqual(hop.ring.groups, {})                 # a core holds no group key
            self.assertEqual(len(hop.ring.links), 2)
            self.assertGreater(hop.counts["opened"], 0)
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {})
        self.assertGreater(sim.net.stats["duplicated"], 0)
        self.assertGreater(sim.drops().get("replayed", 0), 0)      # the copies, at the hop

    def test_the_log_holds_ciphertext(self):
        sim = SimRcn(12, model=LinkModel())
        logged = []
        append = sim.source.log_store.append

        def keep(group, sequence, entry):
            logged.append(entry)
            return append(group, sequence, entry)
        sim.source.log_store.append = keep
        sim.run(20)
        self.assertEqual(len(logged), 20)
        for entry in logged:
            header, area = stored_entry(entry)
            self.assertEqual((header.seal, header.key_epoch), (Seal.AES_256_GCM, 1))
        volume = bytes(sim.source_volumes[next(iter(sim.source_volumes))])
        chunk = next(volume[i:i + 64] for i in range(0, len(volume), 512) if any(volume[i:i + 64]))
        self.assertFalse(any(chunk in entry for entry in logged))

    def test_unsealed_opt_out_still_runs(self):
        sim = SimRcn(13, model=LOSSY, sealed=False)
        sim.run(100)
        sim.assert_equal()
        self.assertIsNone(sim.net.endpoints[sim.source.settings.me].hop)


class RotationTests(TestCase):
    def run_plan(self, seed: int, plan=PLAN, model=LOSSY, cores: int = 1) -> tuple[SimRcn, list]:
        sim = SimRcn(seed, cores=cores, model=model, receiver=RECEIVER)
        seen = []

        def step(what, devices=None, push=False):
            epochs = retained_epochs(sim)
            if push:
                sim.keys.push()
            else:
                sim.keys.rotate(what, devices)
            seen.append((what, sim.issued, sim.acked, epochs))
        for at, what, *devices in plan:
            if what == "push":
                sim.clock.callLater(at, step, what, push=True)
            else:
                sim.clock.callLater(at, step, what, *devices)
        try:
            sim.run(WRITES, step=STEP)
            sim.assert_equal()
        except (AssertionError, PrefixViolation) as exc:
            self.fail(f"seed {seed}: {exc}\nsteps (what, issued, acked, retained epochs): "
                      f"{seen}")
        return sim, seen

    def baseline(self, seed: int, model=LOSSY, cores: int = 1) -> SimRcn:
        sim = SimRcn(seed, cores=cores, model=model, receiver=RECEIVER)
        sim.run(WRITES, step=STEP)
        return sim

    def test_rotation_under_load_loses_nothing_and_costs_no_storm(self):
        for seed in (21, 22, 23):
            sim, seen = self.run_plan(seed)
            base = self.baseline(seed)
            what = f"seed {seed}: {sim.describe()}"
            # every step happened while writes were still being issued and acknowledged,
            # with entries retained at the source; at a retirement none under the old key
            self.assertEqual([s[0] for s in seen], [w for _, w in PLAN], what)
            for step, issued, acked, epochs in seen:
                self.assertTrue(0 < acked <= issued < WRITES, what)
                self.assertTrue(epochs, what)
            self.assertEqual([epochs for step, *_, epochs in seen if step == RETIRE],
                             [{2}, {3}], what)
            # no write lost, every one applied once, the prefix held at every apply
            receiver = sim.target.target_side.receivers[GROUP]
            self.assertEqual((sim.acked, receiver.applied), (WRITES, WRITES), what)
            self.assertEqual(sim.checker.prefix(GROUP), WRITES, what)
            self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
            # no storm: the same network as without the rotation, the same retransmissions
            retransmits = sim.source.sender.counters["retransmits"]
            self.assertLessEqual(retransmits,
                                 base.source.sender.counters["retransmits"] * 1.1 + 5, what)
            self.assertEqual(receiver.stats.naks_sent,
                             base.target.target_side.receivers[GROUP].stats.naks_sent, what)
            # two rotations: epoch 3 only, everywhere
            for address in sim.keys.devices:
                epochs = sim.keys.epochs_of(address)
                self.assertEqual({tuple(e) for e in epochs["links"].values()}, {(3,)})
                self.assertEqual(list(epochs["groups"].values()), [] if address.host.startswith(
                    "10.0.1.") else [[3]])
            hop = sim.net.endpoints[sim.target.settings.me].hop
            self.assertEqual(sorted(hop.ring.link_keys(sim.target.settings.me,
                                                       sim.cores[0].me)), [3])

    def test_rotation_through_two_cores(self):
        sim, _ = self.run_plan(31, cores=2)
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {})
        self.assertEqual(sim.checker.prefix(GROUP), WRITES)

    def test_sending_a_new_epoch_before_the_peers_accept_it_is_refused_and_seen(self):
        # the yardstick must see a botched rotation: the source edge alone sends epoch 2
        # for 50 ms before the others learn it -- counted refusals and retransmissions
        seed = 21
        source = {SimRcn(seed).source.settings.me}
        plan = ((0.05, ACCEPT, source), (0.05, SEND, source), (0.10, "push"))
        sim, seen = self.run_plan(seed, plan=plan)
        base = self.baseline(seed)
        drops = sim.drops()
        self.assertGreater(drops.get("unknown_key", 0), 0, sim.describe())
        self.assertGreater(sim.source.sender.counters["retransmits"],
                           base.source.sender.counters["retransmits"] * 1.1 + 5)
        # and still nothing lost once every device has the keys
        self.assertEqual(sim.checker.prefix(GROUP), WRITES)
        self.assertEqual(sim.target.target_side.receivers[GROUP].applied, WRITES)


class RetiredWhileRetainedTests(TestCase):
    """A rotation that retires the old group key while the source edge's log still holds
    entries sealed under it (the target edge unreachable meanwhile). The source edge holds
    the old epoch for its own log (never for the wire), re-seals what it sends under the
    new one, and releases the old one once no retained entry uses it: the group settles,
    nothing is refused, nothing lost. (Before held epochs it stalled until the failure
    timeout: every retransmission was refused ``e2e_unknown_key``.)"""

    def test_retiring_a_group_key_still_in_the_log_loses_nothing_and_settles(self):
        sim = SimRcn(21, model=LOSSY, receiver=RECEIVER)
        # the target edge unreachable for 50 ms: entries sealed under epoch 1 pile up
        target = sim.target.settings.me
        sim.clock.callLater(0.05, sim.net.down.add, target)
        sim.clock.callLater(0.10, sim.net.down.discard, target)
        for at, what in ((0.06, ACCEPT), (0.07, SEND), (0.08, RETIRE)):
            sim.clock.callLater(at, sim.keys.rotate, what)
        seen = []
        sim.clock.callLater(0.09, lambda: seen.append(
            (retained_epochs(sim), sim.source.seal.ring.epochs().get("held"))))
        sim.run(WRITES, step=STEP, limit=1.5)
        sim.assert_equal()
        what = sim.describe()
        # while the target was away: epoch 1 retired everywhere, held at the source edge
        (epochs, held), = seen
        self.assertEqual((min(epochs), held), (1, {str(GROUP): [1]}), what)
        receiver = sim.target.target_side.receivers[GROUP]
        self.assertEqual((sim.acked, receiver.applied), (WRITES, WRITES), what)
        self.assertEqual(sim.checker.prefix(GROUP), WRITES, what)
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
        self.assertGreater(sim.source.seal.counts["resealed"], 0, what)
        self.assertEqual(sim.source.seal.ring.held, {}, what)          # released
        self.assertEqual(sim.source.log_store.epochs, {}, what)

    def test_the_same_outage_with_a_long_enough_overlap_settles(self):
        sim = SimRcn(21, model=LOSSY, receiver=RECEIVER)
        target = sim.target.settings.me
        sim.clock.callLater(0.05, sim.net.down.add, target)
        sim.clock.callLater(0.10, sim.net.down.discard, target)
        for at, what in ((0.06, ACCEPT), (0.07, SEND)):
            sim.clock.callLater(at, sim.keys.rotate, what)

        def retire():
            if retained_epochs(sim) & {1}:          # what a careful server would wait for
                sim.clock.callLater(0.01, retire)
            else:
                sim.keys.rotate(RETIRE)
        sim.clock.callLater(0.08, retire)
        sim.run(WRITES, step=STEP, limit=1.5)
        sim.assert_equal()
        self.assertEqual(sim.keys.rotations, [ACCEPT, SEND, RETIRE])
        self.assertEqual(sim.drops().get("e2e_unknown_key", 0), 0)


class LifecycleRotationTests(TestCase):
    """A rotation while both arrays' remote copy programs create a pair (its initial copy
    and host writes) and then replicate: Duplex everywhere, the volumes equal, no refusal."""

    def test_rotation_during_pair_create_and_replication(self):
        for seed in (61, 62):
            sim = LifecycleSim(seed, model=LOSSY)
            sim.fill()
            states = []

            def rotate(what, sim=sim, states=states):
                sim.keys.rotate(what)
                states.append((what, sim.state(S), sim.host_acked))
            for at, what in ((0.005, ACCEPT), (0.02, SEND), (0.5, RETIRE)):
                sim.clock.callLater(at, rotate, what)
            box = sim.command(sim.source_array.pair_create(0, T, 0, group=GROUP))
            sim.until("created", lambda: box)
            sim.until("duplex", lambda: sim.state(S) == "duplex", writes_per_ms=0.3)
            sim.step(0.6, writes_per_ms=0.3)                      # past the retirement
            sim.until("quiet", lambda: sim.host_outstanding == 0
                      and not sim.source.sender.outstanding and not sim.source.sender.queued)
            what = f"seed {seed}: {sim.describe_pairs()} drops {sim.drops()}"
            # accepted before the pair existed, sent with during its initial copy, the old
            # epoch retired while host writes replicated
            self.assertEqual([(w, state) for w, state, _ in states],
                             [(ACCEPT, "simplex"), (SEND, "initial-copying"), (RETIRE, "duplex")],
                             what)
            self.assertGreater(sim.host_acked, states[-1][2], what)
            self.assertEqual((sim.state(S), sim.state(T)), ("duplex", "duplex"), what)
            self.assertGreater(sim.host_acked, 0, what)
            self.assertTrue(sim.equal(), what)
            self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
            self.assertEqual(sim.keys.epochs_of(sim.source.settings.me)["groups"],
                             {str(GROUP): [2]}, what)


class ManagedKeys:
    """The management server's :class:`KeyManager` keying ``sim``: each snapshot reaches
    a device ``delays[id]`` seconds after it is published (its seals told, as a device
    applying a snapshot does), and its acknowledgement reaches the server as long again.
    A device in :attr:`cut` is off the management channel (still on the data plane): it
    gets nothing and acknowledges nothing until :meth:`reconnect`."""

    def __init__(self, sim: SimRcn, policy: KeyPolicy, delays: dict[str, float]):
        self.sim, self.delays = sim, delays
        self.version, self.acks, self.cut = 0, {}, set()
        self.role = {"edgeA": "edge", "edgeB": "edge"}
        self.address = {"edgeA": sim.source.settings.me, "edgeB": sim.target.settings.me}
        for i, core in enumerate(sim.cores):
            self.role[f"core{i + 1}"], self.address[f"core{i + 1}"] = "core", core.me
        self.store = SQLiteStore(":memory:")
        self.keys = KeyManager(sim.clock, self.store, policy, publish=self.publish,
                               acked=lambda d: self.acks.get(d, 0), current=lambda: self.version)
        path = [sim.source.settings.me, *(c.me for c in sim.cores), sim.target.settings.me]
        self.keys.sync([path], {str(a): d for d, a in self.address.items()},
                       {GROUP: {"edgeA", "edgeB"}})
        self.version = 1                                 # every device starts holding it
        for device in self.address:
            self._apply(device, self._ring(device))
            self.acks[device] = 1
        self.keys.running(True)

    def _ring(self, device: str):
        return self.keys.ring_for(device, self.role[device], str(self.address[device]))

    def _apply(self, device: str, ring) -> None:
        for seal in self.sim.keys.devices[self.address[device]]:
            seal.set_ring(ring)

    def publish(self) -> int:
        self.version += 1
        for device in self.address:
            self._send(device)
        return self.version

    def _send(self, device: str) -> None:
        if device in self.cut:
            return
        version, ring, delay = self.version, self._ring(device), self.delays[device]

        def arrive():
            if device not in self.cut:
                self._apply(device, ring)
                self.sim.clock.callLater(delay, ack)

        def ack():
            if device not in self.cut and version > self.acks.get(device, 0):
                self.acks[device] = version
                self.keys.acknowledged(device, version)
        self.sim.clock.callLater(delay, arrive)

    def reconnect(self, device: str) -> None:
        """Back on the management channel: it registers and gets the current snapshot."""
        self.cut.discard(device)
        self._send(device)

    def states(self, kind: str, *devices: str) -> dict[int, str]:
        """The epochs of the link between two devices, or of the group."""
        name = str(GROUP) if kind == GROUP_KEY else " ".join(
            sorted(str(self.address[d]) for d in devices))
        return {e.epoch: e.state for e in self.keys.keys[(kind, name)].values()}


#: the server's rules on the simulation's time scale: warned about after 50 ms; a link's
#: old epoch kept 50 ms, a group's 200 ms (the plan's retirement came 170 ms after the send)
MANAGED = KeyPolicy(rotate_every=0, overlap=0.05, group_overlap=0.2, warn_after=0.05)
#: the management channel: the target edge farthest -- without the acknowledgement rule the
#: source edge would seal under the new group epoch before the target could open it
DELAYS = {"edgeA": 0.001, "core1": 0.004, "edgeB": 0.012}


class ManagedRotationTests(TestCase):
    def managed(self, seed: int) -> tuple[SimRcn, ManagedKeys]:
        sim = SimRcn(seed, model=LOSSY, receiver=RECEIVER)
        managed = ManagedKeys(sim, MANAGED, DELAYS)
        self.addCleanup(managed.keys.running, False)
        self.addCleanup(managed.store.close)
        return sim, managed

    def test_the_servers_rotation_under_load_waits_for_every_device(self):
        sim, managed = self.managed(21)
        sim.clock.callLater(0.05, managed.keys.rotate, every=True)
        sim.run(WRITES, step=STEP)
        sim.assert_equal()
        what = sim.describe()
        self.assertEqual(sim.checker.prefix(GROUP), WRITES, what)
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
        counters = managed.keys.counters
        self.assertEqual((counters["activated"], counters["retired"]), (3, 3), what)
        self.assertEqual((counters["late_activations"], counters["late_retirements"]), (0, 0))
        for device, address in managed.address.items():             # what each holds
            epochs = sim.net.endpoints[address].hop.ring.epochs()
            self.assertEqual({tuple(e) for e in epochs["links"].values()}, {(2,)}, device)
        self.assertEqual(sim.target.seal.ring.epochs()["groups"], {str(GROUP): [2]})

    def test_a_device_cut_off_from_the_server_keeps_its_paths(self):
        sim, managed = self.managed(22)
        sim.clock.callLater(0.04, managed.cut.add, "edgeB")     # still on the data plane
        sim.clock.callLater(0.05, managed.keys.rotate, every=True)
        sim.run(WRITES, step=STEP)
        sim.assert_equal()
        what = sim.describe()
        # its neighbours never sealed under an epoch it lacks, nor refused one it uses
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
        self.assertEqual(sim.checker.prefix(GROUP), WRITES, what)
        self.assertEqual(managed.states(GROUP_KEY), {1: "send", 2: "pending"})
        self.assertEqual(managed.states(LINK, "core1", "edgeB"), {1: "send", 2: "pending"})
        self.assertEqual(managed.states(LINK, "edgeA", "core1"), {2: "send"})   # not its key
        listing = managed.keys.listing()
        self.assertEqual([e["waiting_for"] for e in listing["groups"][0]["epochs"]],
                         [[], ["edgeB"]])
        self.assertEqual(managed.keys.counters["late_activations"], 2)
        # back on the management channel: its keys rotate too, under load again
        managed.reconnect("edgeB")
        sim.run(WRITES + 500, step=STEP)
        sim.assert_equal()
        sim.clock.advance(MANAGED.group_overlap + 0.1)
        self.assertEqual(managed.states(GROUP_KEY), {2: "send"})
        self.assertEqual(managed.states(LINK, "core1", "edgeB"), {2: "send"})
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {},
                         sim.describe())
        self.assertEqual(sim.checker.prefix(GROUP), WRITES + 500)

    def test_a_device_cut_off_before_its_new_epoch_sends_keeps_the_old_one_accepted(self):
        # rotate at 50 ms; edgeB acknowledges the pending epochs at 74 ms, the last one:
        # they send; the snapshot saying so would reach it at 86 ms, but it is cut at 80
        sim, managed = self.managed(23)
        sim.clock.callLater(0.05, managed.keys.rotate, every=True)
        sim.clock.callLater(0.08, managed.cut.add, "edgeB")
        sim.run(WRITES, step=STEP)
        sim.assert_equal()
        what = sim.describe()
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
        self.assertEqual(sim.checker.prefix(GROUP), WRITES, what)
        target = sim.net.endpoints[sim.target.settings.me].hop.ring
        self.assertEqual({e: k.send for keys in target.links.values() for e, k in keys.items()},
                         {1: True, 2: False})                 # it still seals with epoch 1
        # long past both overlaps its neighbours still accept epoch 1 from it
        self.assertGreater(sim.clock.seconds(), 0.08 + MANAGED.group_overlap)
        self.assertEqual(managed.states(GROUP_KEY), {1: "retiring", 2: "send"})
        self.assertEqual(managed.states(LINK, "core1", "edgeB"), {1: "retiring", 2: "send"})
        self.assertEqual(managed.states(LINK, "edgeA", "core1"), {2: "send"})
        self.assertEqual([e["waiting_for"] for e in managed.keys.listing()["groups"][0]
                          ["epochs"]], [["edgeB"], []])
        self.assertEqual(managed.keys.counters["late_retirements"], 2)
        managed.reconnect("edgeB")
        sim.run(WRITES + 500, step=STEP)
        sim.assert_equal()
        sim.clock.advance(0.1)
        self.assertEqual(managed.states(GROUP_KEY), {2: "send"})
        self.assertEqual(managed.states(LINK, "core1", "edgeB"), {2: "send"})
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {},
                         sim.describe())

    def test_failure_suspend_with_the_old_key_retired_marks_only_the_logged_writes(self):
        # a partitioned core: the source edge retains entries under epoch 1 while a whole
        # rotation retires it; failure Suspend reads them back with the held key, so 727
        # has their tracks (not the whole volume) and the resync copies only those
        sim = LifecycleSim(63, model=LOSSY)
        sim.fill()
        box = sim.command(sim.source_array.pair_create(0, T, 0, group=GROUP))
        sim.until("created", lambda: box)
        sim.until("duplex", lambda: sim.state(S) == "duplex")
        sim.until("quiet", lambda: sim.host_outstanding == 0
                  and not sim.source.sender.outstanding and not sim.source.sender.queued)
        sim.net.down.add(sim.cores[0].me)
        sim.step(0.05, writes_per_ms=0.5)                 # acked by the source edge
        self.assertEqual(retained_epochs(sim), {1})
        for what in (ACCEPT, SEND, RETIRE):
            sim.keys.rotate(what)
        self.assertEqual(sim.source.seal.ring.epochs()["held"], {str(GROUP): [1]})
        sim.until("failure Suspend", lambda: sim.state(S) == "failure-suspend")
        row = sim.source.pairs.find(S, T, 0)
        what = f"{sim.describe_pairs()} drops {sim.drops()}"
        self.assertFalse(row.whole, what)
        self.assertGreater(row.dirty_tracks(), 0, what)
        self.assertLess(row.dirty_tracks(), row.bitmap.track_count, what)
        self.assertEqual(sim.source.seal.ring.held, {}, what)     # the log no longer uses it
        sim.until("host writes answered", lambda: sim.host_outstanding == 0)
        sim.net.down.discard(sim.cores[0].me)
        sim.until("failure Suspend at the target", lambda: sim.state(T) == "failure-suspend")
        marked, tracks = row.bitmap.popcount(), row.bitmap.track_count
        box = sim.command(sim.source_array.resync(0))
        sim.until("resynced", lambda: box)
        sim.until("duplex again", lambda: sim.state(S) == "duplex")
        sim.until("quiet again", lambda: sim.host_outstanding == 0
                  and not sim.source.sender.outstanding and not sim.source.sender.queued)
        self.assertTrue(sim.equal(), what)
        copied = sim.source_array.pairs.for_lun(0).copy.bytes_total
        self.assertLess(copied, tracks * TRACK, what)
        self.assertGreaterEqual(copied, marked * TRACK, what)
        self.assertEqual({r: n for r, n in sim.drops().items() if r in REFUSALS}, {}, what)
