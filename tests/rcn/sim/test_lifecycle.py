"""Pair lifecycle flows in the deterministic simulation, with the prefix checker (issue 6).

Both arrays run their remote copy programs; the network between the edges
loses and duplicates datagrams from the seed. A failing run names its seed.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from rcn.pairstate import PairState
from twisted.trial.unittest import TestCase

from tests.rcn.sim.harness import BLOCK, GROUP, SOURCE_WWN, TARGET_WWN
from tests.rcn.sim.lifecycle import TRACK, LifecycleSim
from tests.rcn.sim.network import Address, LinkModel

LOSSY = LinkModel(loss=0.03, duplicate=0.02, min_delay=0.0001, max_delay=0.003)
CORE = Address("10.0.1.1", 47001)
S, T = SOURCE_WWN, TARGET_WWN


def tracks_of(ranges) -> set[int]:
    out = set()
    for offset, length in ranges:
        out.update(range(offset // TRACK, (offset + length - 1) // TRACK + 1))
    return out


class LifecycleFlowTests(TestCase):
    def sim(self, seed: int, **kw) -> LifecycleSim:
        return LifecycleSim(seed, model=kw.pop("model", LOSSY), **kw)

    def done(self, sim: LifecycleSim, box: list):
        sim.until("answered", lambda: box)
        if isinstance(box[0], Failure):
            self.fail(f"seed {sim.seed}: {box[0].getErrorMessage()}")
        return box[0]

    def create(self, sim: LifecycleSim, writes_per_ms: float = 0.3) -> None:
        """pair-create with host writes going on until Duplex."""
        box = sim.command(sim.source_array.pair_create(0, T, 0, group=GROUP))
        sim.until("created", lambda: box)
        if isinstance(box[0], Failure):
            self.fail(f"seed {sim.seed}: pair-create: {box[0].getErrorMessage()}")
        sim.until("duplex", lambda: sim.state(S) == "duplex", writes_per_ms=writes_per_ms)
        self.settle(sim)

    def settle(self, sim: LifecycleSim) -> None:
        sim.until("quiet", lambda: sim.host_outstanding == 0 and not sim.source.sender.outstanding
                  and not sim.source.sender.queued)

    def test_creation_with_host_writes_during_the_initial_copy(self):
        for seed in range(1, 9):
            sim = self.sim(seed)
            allocated = sim.fill()
            self.create(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.bytes_total, allocated, f"seed {seed}")
            self.assertGreater(sim.host_acked, 0)
            self.assertEqual((sim.state(T), sim.source.pairs.find(S, T, 0).state.value,
                              sim.target.pairs.find(S, T, 0).state.value), ("duplex",) * 3)
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after Duplex")
            self.assertEqual(sim.checker.prefix(GROUP), len(sim.checker.groups[GROUP].writes))

    def test_suspend_and_resync_copy_only_what_changed(self):
        for seed in range(10, 16):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            self.done(sim, sim.command(sim.source_array.suspend(0)))
            self.assertEqual(sim.state(T), "suspend")
            before = bytes(sim.volumes[T][0].data)
            sim.step(0.05, writes_per_ms=0.5)
            self.settle(sim)
            self.assertEqual(bytes(sim.volumes[T][0].data), before)   # nothing sent
            dirty = sim.source_array.pairs.for_lun(0).bitmap.popcount()
            self.assertGreater(dirty, 0)
            self.done(sim, sim.command(sim.source_array.resync(0)))
            sim.until("duplex", lambda: sim.state(S) == "duplex")
            self.settle(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.bytes_total, dirty * TRACK, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed}")

    def test_failure_suspend_from_a_partitioned_core_then_resync(self):
        for seed in range(20, 26):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            sim.step(0.05, writes_per_ms=0.5)
            sim.net.down.add(CORE)
            sim.step(0.05, writes_per_ms=0.5)                 # acked by the source edge
            sim.until("failure Suspend", lambda: sim.state(S) == "failure-suspend")
            row = sim.source.pairs.find(S, T, 0)
            self.assertEqual(row.state.value, "failure-suspend")
            self.assertEqual(sim.source.log_store.retained(GROUP),
                             sim.source.sender.entries_of(GROUP))   # only the notice is left
            sim.step(0.05, writes_per_ms=0.5)                 # into the source's bitmap
            sim.until("host writes answered", lambda: sim.host_outstanding == 0)
            sim.net.down.discard(CORE)
            sim.until("failure Suspend at the target", lambda: sim.state(T) == "failure-suspend")
            expected = (tracks_of(_runs(row.bitmap))
                        | tracks_of(_runs(sim.source_array.pairs.for_lun(0).bitmap)))
            self.done(sim, sim.command(sim.source_array.resync(0)))
            sim.until("duplex", lambda: sim.state(S) == "duplex")
            self.settle(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.bytes_total, len(expected) * TRACK, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after resync")

    def _source_link_lost(self, sim: LifecycleSim) -> set[int]:
        """Cut the source array's link under host writes until the array alone is in failure
        Suspend (the edges and the target still duplex); more host writes go to 1211.
        Returns the tracks 1211 holds then."""
        sim.step(0.02, writes_per_ms=0.5)
        sim.cut_array_link()
        sim.until("failure Suspend at the source array",
                  lambda: sim.state(S) == "failure-suspend", writes_per_ms=0.5)
        sim.step(0.03, writes_per_ms=0.5)
        sim.until("host writes answered", lambda: sim.host_outstanding == 0)
        self.settle(sim)
        self.assertEqual((sim.source.pairs.find(S, T, 0).state.value, sim.state(T)),
                         ("duplex", "duplex"), f"seed {sim.seed}")
        return tracks_of(_runs(sim.source_array.pairs.for_lun(0).bitmap))

    def test_source_array_that_lost_its_link_resyncs_by_itself_when_it_is_back(self):
        for seed in range(50, 56):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            dirty = self._source_link_lost(sim)
            self.assertTrue(dirty, f"seed {seed}")
            self.assertTrue(sim.source_array.pairs.for_lun(0).link_lost)
            sim.restore_array_link()
            sim.until("duplex again", lambda: sim.state(S) == "duplex")
            self.settle(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.kind, "resync")
            self.assertEqual(pair.copy.bytes_total, len(dirty) * TRACK, f"seed {seed}")
            self.assertEqual((sim.source.pairs.find(S, T, 0).state.value,
                              sim.target.pairs.find(S, T, 0).state.value, sim.state(T)),
                             ("duplex",) * 3, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after the resync")

    def test_documented_resync_after_the_source_array_lost_its_link(self):
        for seed in range(56, 60):
            sim = self.sim(seed, auto_resync=False)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            dirty = self._source_link_lost(sim)
            sim.restore_array_link()
            sim.step(0.05)
            self.assertEqual(sim.state(S), "failure-suspend")    # nothing by itself
            self.done(sim, sim.command(sim.source_array.resync(0)))
            sim.until("duplex again", lambda: sim.state(S) == "duplex", writes_per_ms=0.3)
            self.settle(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.bytes_total, len(dirty) * TRACK, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after the resync")

    def test_failover_with_writes_in_flight_loses_no_acknowledged_write(self):
        for seed, fast in ((30, False), (31, True), (32, False), (33, True)):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            for _ in range(8):
                sim.host_write()
            sim.step(0.0015)
            acked_source = bytes(sim.volumes[S][0].data)
            outstanding = sim.host_outstanding
            answer = self.done(sim, sim.command(sim.target_array_rc.suspend(0, fast=fast)))
            self.assertEqual(answer["state"], "failure-suspend", f"seed {seed}")
            self.settle(sim)
            sim.step(0.2)
            # nothing the source host was told is done may be missing at the target
            if outstanding == 0:
                self.assertEqual(bytes(sim.volumes[T][0].data), acked_source)
            self.assertTrue(sim.equal(), f"seed {seed} fast={fast}: target differs")
            self.assertEqual(sim.state(S), "failure-suspend")
            sim.step(0.01, writes_per_ms=1.0, wwn=T)          # the target host writes now
            self.assertFalse(sim.equal())

    def test_resync_from_the_source_after_a_failover(self):
        for seed, fast in ((60, False), (61, True), (62, False)):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            self.done(sim, sim.command(sim.target_array_rc.suspend(0, fast=fast)))
            sim.checking = False                              # the target's host writes now
            sim.step(0.02, writes_per_ms=1.0, wwn=T)
            sim.step(0.02, writes_per_ms=1.0, wwn=S)          # refused by the edge: 1211
            self.settle(sim)
            sim.until("failure Suspend everywhere", lambda: sim.state(S) == "failure-suspend")
            union = (tracks_of(_runs(sim.target_array_rc.pairs.for_lun(0).bitmap))
                     | tracks_of(_runs(sim.source_array.pairs.for_lun(0).bitmap)))
            self.done(sim, sim.command(sim.source_array.resync(0)))
            sim.until("duplex again", lambda: sim.state(S) == "duplex" == sim.state(T))
            self.settle(sim)
            pair = sim.source_array.pairs.for_lun(0)
            self.assertEqual(pair.copy.bytes_total, len(union) * TRACK, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed} fast={fast}: volumes differ")

    def test_a_target_that_refuses_for_good_fails_the_group_instead_of_a_retry_storm(self):
        for seed in range(70, 74):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            sim.target_array_rc.pairs.for_lun(0).state = PairState.SUSPEND   # diverged state
            sim.step(0.05, writes_per_ms=0.5)
            sim.until("failure Suspend at the source array",
                      lambda: sim.state(S) == "failure-suspend", writes_per_ms=0.5)
            receiver = sim.target.target_side.receivers[GROUP]
            # the writes in flight when it refused, each once: no retry every retry_delay
            self.assertGreaterEqual(receiver.stats.refused, 1, f"seed {seed}")
            self.assertEqual(receiver.stats.apply_errors, receiver.stats.refused)
            rows = (sim.source.pairs.find(S, T, 0), sim.target.pairs.find(S, T, 0))
            self.assertEqual([r.state.value for r in rows], ["failure-suspend"] * 2)
            self.assertIn("the target refused sequence", rows[1].last_error)
            self.assertIn("the target edge could not apply sequence", rows[0].last_error)
            self.assertEqual(sim.target.controls.counters["target_failures"], 1)
            sim.until("host writes answered", lambda: sim.host_outstanding == 0)
            sim.rebase()                       # T never got the void entries: it is the base
            self.done(sim, sim.command(sim.source_array.resync(0)))
            sim.until("duplex again", lambda: sim.state(S) == "duplex" == sim.state(T))
            self.settle(sim)
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after the resync")

    def test_failback_in_reverse_copies_the_bitmaps_only(self):
        for seed in range(40, 44):
            sim = self.sim(seed)
            sim.fill()
            self.create(sim, writes_per_ms=0)
            self.done(sim, sim.command(sim.target_array_rc.suspend(0)))
            sim.checking = False                              # the target is the host's now
            sim.step(0.02, writes_per_ms=1.0, wwn=T)
            sim.step(0.02, writes_per_ms=1.0, wwn=S)          # refused by the edge: bitmap
            self.settle(sim)
            changed = (sim.target_array_rc.pairs.for_lun(0).bitmap.popcount(),
                       sim.source_array.pairs.for_lun(0).bitmap)
            union = tracks_of(_runs(sim.target_array_rc.pairs.for_lun(0).bitmap)) \
                | tracks_of(_runs(changed[1]))
            self.done(sim, sim.command(sim.target_array_rc.reverse(0)))
            self.done(sim, sim.command(sim.source_array.reverse(0)))
            self.done(sim, sim.command(sim.target_array_rc.resync(0)))
            sim.until("duplex the other way", lambda: sim.state(T) == "duplex")
            self.settle(sim)
            pair = sim.target_array_rc.pairs.for_lun(0)
            self.assertEqual(pair.role, "source")
            self.assertEqual(pair.copy.bytes_total, len(union) * TRACK, f"seed {seed}")
            self.assertTrue(sim.equal(), f"seed {seed}: volumes differ after failback")


def _runs(bitmap):
    """A bitmap's dirty tracks as byte ranges."""
    if bitmap is None:
        return []
    first, count, _ = bitmap.dirty_runs()
    return [(f * TRACK, c * TRACK) for f, c in zip(first.tolist(), count.tolist())]


__all__ = ["BLOCK"]
