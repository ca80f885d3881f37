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
