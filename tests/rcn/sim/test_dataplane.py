"""The data plane end to end in simulation: ordering, loss, duplication, recovery.

Each run is one seed (network faults and workload both come from it); a
failing run's message names the seed, and
``python -m tests.rcn.sim.harness --seed N --cores C`` replays it exactly.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.rcn.sim.checker import PrefixViolation
from tests.rcn.sim.harness import GROUP, SimRcn
from tests.rcn.sim.network import LinkModel

LOSSY = LinkModel(loss=0.05, duplicate=0.03, min_delay=0.0001, max_delay=0.003)


class SimulatedRcnTests(TestCase):
    def run_seeds(self, seeds, writes: int = 200, **kw) -> list[SimRcn]:
        runs = []
        for seed in seeds:
            sim = SimRcn(seed, **kw)
            try:
                sim.run(writes)
                sim.assert_equal()
            except (AssertionError, PrefixViolation) as exc:
                self.fail(f"seed {seed} ({kw}): {exc}\nreplay: python -m tests.rcn.sim.harness "
                          f"--seed {seed} --cores {kw.get('cores', 1)} --writes {writes}")
            runs.append(sim)
        return runs

    def test_perfect_network_applies_every_write_in_order(self):
        # a fixed delay: nothing lost, duplicated or overtaken
        sim, = self.run_seeds([1], model=LinkModel(min_delay=0.0005, max_delay=0.0005))
        receiver = sim.target.target_side.receivers[GROUP]
        self.assertEqual(receiver.applied, 200)
        self.assertEqual(receiver.stats.duplicates_applied, 0)
        self.assertEqual(sim.source.sender.counters["retransmits"], 0)
        self.assertEqual(sim.checker.prefix(GROUP), 200)

    def test_lossy_network_through_one_core_many_seeds(self):
        runs = self.run_seeds(range(100, 130), model=LOSSY)
        self.assertTrue(any(r.net.stats["lost"] for r in runs))
        self.assertTrue(any(r.source.sender.counters["retransmits"] for r in runs))
        self.assertTrue(any(r.target.target_side.receivers[GROUP].stats.naks_sent for r in runs))

    def test_lossy_network_without_cores(self):
        self.run_seeds(range(200, 210), cores=0, model=LOSSY)

    def test_lossy_network_through_two_cores_without_batching(self):
        self.run_seeds(range(300, 310), cores=2, batching=False, model=LOSSY)

    def test_duplicated_datagrams_are_applied_once(self):
        sim, = self.run_seeds([400], model=LinkModel(duplicate=0.5))
        self.assertGreater(sim.net.stats["duplicated"], 0)
        self.assertEqual(sim.target_array.applied, 200)

    def test_checker_catches_an_out_of_order_apply(self):
        sim = SimRcn(500, model=LinkModel())
        original = sim.target_array.execute
        held = []

        def swap(command, lun):
            # hold the first write back and apply it after the second
            if not held and sim.target_array.applied == 0:
                held.append((command, lun))
                return _later(sim, original, held)
            return original(command, lun)
        sim.target_array.execute = swap
        with self.assertRaises(PrefixViolation):
            sim.run(50)
            sim.assert_equal()


def _later(sim, original, held):
    from twisted.internet.defer import Deferred
    d = Deferred()

    def go():
        command, lun = held[0]
        original(command, lun).chainDeferred(d)
    sim.clock.callLater(0.01, go)
    return d
