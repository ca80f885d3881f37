"""Sealed log transfer in the simulation: keys where they belong, rotation under load.

A rotation (issue 17) is three steps on every device: the new epoch accepted, then sent
with, then -- after an overlap -- the old one retired (:mod:`tests.rcn.sim.keys`). Under a
running workload over a lossy network it must lose no write, keep every target volume a
prefix of the source's writes at every apply (the checker), and cost no retransmission
storm: the same seed without a rotation is the yardstick.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from datapath.frames.logentry import Seal
from rcn.edge.receiver import ReceiverConfig
from rcn.edge.source import stored_entry
from tests.rcn.sim.checker import PrefixViolation
from tests.rcn.sim.harness import GROUP, SOURCE_WWN as S, TARGET_WWN as T, SimRcn
from tests.rcn.sim.keys import ACCEPT, RETIRE, SEND
from tests.rcn.sim.lifecycle import LifecycleSim
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
#: (send..retire) must outlast every entry sealed under the old group key that the
#: source edge still retains: its log holds the ciphertext, and a retransmission of an
#: entry sealed under a retired epoch can never open (RotationHazardTests)
PLAN = ((0.05, ACCEPT), (0.08, SEND), (0.25, RETIRE),
        (0.27, ACCEPT), (0.30, SEND), (0.45, RETIRE))


def retained_epochs(sim: SimRcn) -> set[int]:
    """The group key epochs of the entries the source edge still retains."""
    store = sim.source.log_store
    return {stored_entry(store.get(GROUP, s))[0].key_epoch for s in store.retained(GROUP)}
#: the hop and end-to-end refusals a good rotation must not cause
REFUSALS = ("not_neighbour", "unsealed", "malformed", "unknown_key", "bad_tag", "no_link_key",
            "e2e_unsealed", "e2e_unknown_key", "e2e_bad_tag")


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


class RotationHazardTests(TestCase):
    """What a rotation that retires the old group key too early does today (issue 17): the
    source edge's log holds entries sealed under it, so their retransmissions never open.
    They are refused and counted at the target, nothing after them is applied (the prefix
    holds) and they stay retained at the source (not lost) -- but the group stalls until
    the source edge's failure timeout. A management server must keep an epoch until no
    edge retains an entry under it (or the source edge re-seal what it retransmits)."""

    def test_retiring_a_group_key_still_in_the_log_stalls_but_loses_nothing(self):
        sim = SimRcn(21, model=LOSSY, receiver=RECEIVER)
        # the target edge unreachable for 50 ms: entries sealed under epoch 1 pile up
        target = sim.target.settings.me
        sim.clock.callLater(0.05, sim.net.down.add, target)
        sim.clock.callLater(0.10, sim.net.down.discard, target)
        for at, what in ((0.06, ACCEPT), (0.07, SEND), (0.08, RETIRE)):
            sim.clock.callLater(at, sim.keys.rotate, what)
        with self.assertRaises(AssertionError) as caught:
            sim.run(WRITES, step=STEP, limit=1.5)       # 1 s after the end of the writes
        self.assertNotIsInstance(caught.exception, PrefixViolation)
        self.assertIsNone(sim.checker.violation)
        self.assertIn("not settled", str(caught.exception))
        self.assertGreater(sim.drops().get("e2e_unknown_key", 0), 0)
        receiver = sim.target.target_side.receivers[GROUP]
        stuck = receiver.applied + 1
        self.assertIn(stuck, sim.source.log_store.retained(GROUP))     # still held: not lost
        self.assertEqual(retained_epochs(sim) & {1}, {1})
        self.assertEqual(sim.checker.prefix(GROUP), receiver.applied)

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
