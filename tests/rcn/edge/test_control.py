"""Pair control through two edges and a core on the simulated network (docs/pairs.md).

The arrays are stand-ins here (the storage emulator has its own tests): the
source array is the test calling ``rio_command`` with RCN CONTROL and WRITE(16)
commands, the target array a :class:`ControlArray` that applies writes and
answers control commands as a real one would.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.frames.logentry import EntryFlag, EntryType, LogHeader, parse_datagram
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.edge.applystate import ApplyState
from rcn.edge.device import EdgeDevice, EdgeSettings
from rcn.edge.logstore import LogStore
from rcn.edge.pairs import PairEntry
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.pairstate import PairState, explain
from rcn.rio.fcp import ScsiCommand, ScsiResult, build_write16_cdb
from tests.rcn.sim.harness import BLOCK, GROUP, SOURCE_WWN, TARGET_WWN, SimRcn, SimTargetArray

A = fcp.RcnServiceAction
CAPACITY = 256 * BLOCK
TRACK = 4096
CORE = Address("10.0.1.1", 47001)
OTHER_WWN = 0x500A098000000003


def set_routes(sim: SimRcn, routes) -> None:
    """One new route table for every device of the simulation."""
    from rcn.logxfer.routes import RouteTable
    table = RouteTable(routes)
    for device in (sim.source, sim.target):
        device.routes = table
    for core in sim.cores:
        core.set_routes(table)


def add_volumes(sim: SimRcn, luns=(5, 6)) -> None:
    """Volumes for the pairs the tests create (the harness has LUNs 0 and 1)."""
    for lun in luns:
        sim.source_volumes.setdefault((SOURCE_WWN, lun), bytearray(CAPACITY))
        sim.target_volumes.setdefault((TARGET_WWN, lun), bytearray(CAPACITY))


class ControlArray(SimTargetArray):
    """Applies WRs; answers RCN CONTROL, DPOK with a bitmap of tracks 1 and 3."""

    def __init__(self, sim: SimRcn):
        super().__init__(sim.clock, sim.rng, sim.target_volumes, sim.checker, max_delay=0)
        self.controls: list[tuple[str, int, int]] = []

    def execute(self, command, lun: int):
        if command.cdb[0] != fcp.Opcode.RCN_CONTROL:
            if lun < 2:                      # the checked volumes of the harness
                return super().execute(command, lun)
            lba = command.parsed["lba"]
            volume = self.volumes[(TARGET_WWN, lun)]
            volume[lba * BLOCK:lba * BLOCK + len(command.data_out)] = command.data_out
            return succeed(ScsiResult())
        parsed = command.parsed
        self.controls.append((parsed["service_action_name"], lun, parsed["control_flags"]))
        if parsed["service_action"] == A.RESYNC:
            bitmap = DifferentialBitmap(CAPACITY, TRACK)
            bitmap.set_range(1, 1)
            bitmap.set_range(3, 1)
            return succeed(ScsiResult(data_in=bitmap.serialize()))
        return succeed(ScsiResult())


class ControlFlowTests(TestCase):
    def setUp(self):
        self.sim = SimRcn(seed=5, volume_blocks=256)
        self.array = self.sim.target_array = ControlArray(self.sim)
        self.sim.source.pairs.policy = "A-1"
        add_volumes(self.sim)
        self.answers: list[ScsiResult] = []
        self.ox = 0

    def command(self, cdb: bytes, lun: int, data: bytes = b"", data_in: int = 0,
                initiator: int = SOURCE_WWN, partner: int = TARGET_WWN, edge=None):
        self.ox += 1
        cmd = ScsiCommand(0x010100, initiator, 0x010200, partner, lun, cdb, fcp.parse_cdb(cdb),
                          fcp.TaskAttribute.ORDERED, data, data_in, self.ox)
        result = (edge or self.sim.source).rio_command(cmd, partner)
        box: list[ScsiResult] = []
        if isinstance(result, ScsiResult):
            box.append(result)
        else:
            result.addCallback(box.append)
        return box

    def control(self, action: int, lun: int = 5, **kw):
        params = fcp.build_pair_params(CAPACITY, BLOCK, TRACK) if action == A.PAIR_CREATE else b""
        data_in = 44 + 8 * 4 if action == A.RESYNC else 0
        return self.command(fcp.build_rcn_control(action, 0, lun, data_in), lun, params, data_in,
                            **kw)

    def write(self, lun: int, lba: int, blocks: int = 1):
        data = bytes([lba & 0xFF]) * (blocks * BLOCK)
        self.sim.source_volumes.setdefault((SOURCE_WWN, lun), bytearray(CAPACITY))
        self.sim.source_volumes[(SOURCE_WWN, lun)][lba * BLOCK:(lba + blocks) * BLOCK] = data
        self.sim.target_volumes.setdefault((TARGET_WWN, lun), bytearray(CAPACITY))
        return self.command(build_write16_cdb(lba, blocks), lun, data)

    def settle(self, seconds: float = 1.0) -> None:
        self.sim.clock.pump([0.001] * int(seconds * 1000))

    def row(self, edge, lun: int = 5):
        return edge.pairs.find(SOURCE_WWN, TARGET_WWN, lun)

    def test_create_duplex_suspend_resync_move_every_party(self):
        box = self.control(A.PAIR_CREATE)
        self.assertEqual(self.row(self.sim.source).state, PairState.SIMPLEX)
        self.settle()
        self.assertTrue(box and box[0].good)
        source, target = self.row(self.sim.source), self.row(self.sim.target)
        self.assertEqual((source.state, target.state), (PairState.INITIAL_COPYING,) * 2)
        self.assertEqual(source.entry.group, target.entry.group)
        self.assertEqual(source.entry.group >> 30, 1)            # policy A-1
        self.assertEqual(source.geometry, (CAPACITY, BLOCK, TRACK))
        self.write(5, 10)                    # host writes go on during the initial copy
        self.control(A.DUPLEX)
        self.settle()
        self.assertEqual((source.state, target.state), (PairState.DUPLEX,) * 2)
        self.assertEqual(self.sim.target_volumes[(TARGET_WWN, 5)][10 * BLOCK], 10)
        self.control(A.SUSPEND)
        self.assertEqual(source.state, PairState.SUSPENDING)
        self.settle()
        self.assertEqual((source.state, target.state), (PairState.SUSPEND,) * 2)
        refused = self.write(5, 20)
        self.assertEqual(explain(refused[0]), "the partner's pair is suspend")
        box = self.control(A.RESYNC)
        self.settle()
        self.assertEqual((source.state, target.state), (PairState.DUPLEX_PENDING,) * 2)
        bitmap = DifferentialBitmap.deserialize(box[0].data_in)
        self.assertEqual(bitmap.popcount(), 2)
        self.assertEqual([a for a, _, _ in self.array.controls],
                         ["PAIR_CREATE", "DUPLEX", "SUSPEND", "RESYNC"])

    def test_refusals_name_the_state(self):
        box = self.control(A.RESYNC)
        self.assertEqual(explain(box[0]), "no such pair")
        self.control(A.PAIR_CREATE)
        self.settle()
        box = self.control(A.DUPLEX)
        self.settle()
        box = self.control(A.PAIR_CREATE)
        self.assertEqual(explain(box[0]), "the partner's pair is duplex")
        self.row(self.sim.source).state = PairState.SUSPENDING
        box = self.control(A.RESYNC)
        self.assertEqual(explain(box[0]), "the partner's pair is suspending")
        self.row(self.sim.source).state = PairState.INITIAL_COPYING
        box = self.control(A.PAIR_CREATE)
        self.assertEqual(explain(box[0]), "the partner's pair is initial-copying")

    def test_failure_suspend_turns_retained_writes_into_727_and_resync_brings_them(self):
        sim = self.sim
        sim.source.sender.failure_timeout = 1.0
        for lba in range(0, 8):
            self.write(0, lba * 8)
        self.settle(0.1)
        sim.net.down.add(CORE)
        for lba in (100, 140, 180):                 # 0x100..: tracks 12, 17, 22 at 4 KiB
            self.write(0, lba)
        self.settle(0.1)
        self.assertEqual(len(sim.source.log_store.retained(GROUP)), 3)
        self.settle(2.0)
        row = self.row(sim.source, 0)
        self.assertEqual(row.state, PairState.FAILURE_SUSPEND)
        # the notice waits in the log; the dropped writes do not
        self.assertEqual(len(sim.source.log_store.retained(GROUP)), 2)   # notices for LUN 0, 1
        refused = self.write(0, 200)
        self.assertEqual(explain(refused[0]), "the partner's pair is failure-suspend")
        sim.net.down.discard(CORE)
        self.settle(12.0)
        self.assertEqual(self.row(sim.target, 0).state, PairState.FAILURE_SUSPEND)
        self.assertIn(("SUSPEND", 0, fcp.RCN_CONTROL_FAILURE), self.array.controls)
        receiver = sim.target.target_side.receivers[GROUP]
        self.assertGreaterEqual(receiver.stats.voided + receiver.stats.duplicates_buffered, 0)
        self.assertEqual(sim.source.log_store.retained(GROUP), [])
        # resync: the target's tracks 1 and 3 plus ours (the three dropped writes)
        box = self.control(A.RESYNC, lun=0)
        self.settle()
        bitmap = DifferentialBitmap.deserialize(box[0].data_in)
        dirty = set()
        first, count, _ = bitmap.dirty_runs()
        for f, c in zip(first.tolist(), count.tolist()):
            dirty.update(range(f, f + c))
        self.assertEqual(dirty, {1, 3, 100 * BLOCK // TRACK, 140 * BLOCK // TRACK,
                                 180 * BLOCK // TRACK})
        self.assertEqual(row.state, PairState.DUPLEX_PENDING)

    def test_failover_applies_everything_before_the_sok(self):
        sim = self.sim
        for lba in range(0, 40, 2):
            self.write(0, lba)
        while sim.target.pairs.find(SOURCE_WWN, TARGET_WWN, 0) is None:
            sim.clock.advance(0.0001)
        for lba in range(40, 80, 2):
            self.write(0, lba)
        self.assertEqual(sim.target.target_side.receivers[GROUP].applied, 20)   # 20 more in flight
        # the target array's host fails over while writes are in flight
        box = self.control(A.SUSPEND, lun=0, initiator=TARGET_WWN, partner=SOURCE_WWN,
                           edge=sim.target)
        self.assertEqual(box, [])
        self.settle()
        self.assertTrue(box and box[0].good, box)
        self.assertEqual(sim.source_volumes[(SOURCE_WWN, 0)], sim.target_volumes[(TARGET_WWN, 0)])
        self.assertEqual(self.row(sim.source, 0).state, PairState.FAILURE_SUSPEND)
        self.assertEqual(self.row(sim.target, 0).state, PairState.FAILURE_SUSPEND)
        report = fcp.parse_residual_report(box[0].data_in)
        self.assertEqual(report["known_missing"], 0)
        refused = self.write(0, 50)
        self.assertEqual(explain(refused[0]), "the partner's pair is failure-suspend")

    def test_a_failover_suspend_already_acted_on_moves_nothing_after_a_resync(self):
        # the target edge's SUSPEND is sealed end to end, yet a copy of it (a late resend, or
        # a replay past a restarted hop) must not fail the group again once it is resynced
        sim = self.sim
        for lba in range(0, 8, 2):
            self.write(0, lba)
        self.settle()
        box = self.control(A.SUSPEND, lun=0, initiator=TARGET_WWN, partner=SOURCE_WWN,
                           edge=sim.target)
        self.settle()
        self.assertTrue(box and box[0].good, box)
        controls = sim.source.controls
        self.assertEqual(controls.counters["failovers"], 1)
        acted = sim.source.pairs.failover_seen[GROUP]
        row = self.row(sim.source, 0)
        controls.sok_sent.clear()                       # what a resync does ...
        row.state = PairState.DUPLEX                    # ... and where it ends
        e = row.entry
        old = LogHeader(entry_type=EntryType.CTRL, flags=int(EntryFlag.REVERSE),
                        group_id=GROUP, io_time_ns=acted, source_wwn=e.source_wwn,
                        target_wwn=e.target_wwn, target_lun=e.target_lun)
        controls.failover_request(old)
        self.assertEqual((controls.counters["failovers"], controls.counters["stale_failovers"],
                          row.state), (1, 1, PairState.DUPLEX))
        controls.failover_request(old._replace(io_time_ns=acted + 1))    # a new failover
        self.assertEqual((controls.counters["failovers"], row.state),
                         (2, PairState.FAILURE_SUSPEND))

    def test_takeover_stops_at_the_applied_prefix(self):
        sim = self.sim
        for lba in range(0, 10):
            self.write(0, lba)
        self.settle(0.2)
        sim.net.down.add(CORE)
        box = self.control(A.TAKEOVER, lun=0, initiator=TARGET_WWN, partner=SOURCE_WWN,
                           edge=sim.target)
        report = fcp.parse_residual_report(box[0].data_in)
        self.assertEqual(report["applied"], 10)
        self.assertEqual(self.row(sim.target, 0).state, PairState.FAILURE_SUSPEND)


class SeveralArraysTests(TestCase):
    """Claim 9: pairs of two source arrays (two customers) on the same edges stay apart."""

    def setUp(self):
        from rcn.logxfer.routes import Route
        self.sim = SimRcn(seed=9, volume_blocks=256)
        self.sim.target_array = ControlArray(self.sim)
        path = next(iter(self.sim.source.routes)).path
        set_routes(self.sim, [Route(SOURCE_WWN, TARGET_WWN, path),
                              Route(OTHER_WWN, TARGET_WWN, path)])
        self.sim.source.pairs.policy = "A-1"
        self.sim.source.sender.failure_timeout = 1.0
        add_volumes(self.sim)
        self.flows = ControlFlowTests("test_refusals_name_the_state")
        self.flows.sim, self.flows.array, self.flows.ox = self.sim, self.sim.target_array, 0

    def test_groups_counters_and_failures_stay_apart(self):
        f, sim = self.flows, self.sim
        f.control(A.PAIR_CREATE, lun=5)
        f.control(A.PAIR_CREATE, lun=6, initiator=OTHER_WWN)
        f.settle()
        mine = sim.source.pairs.find(SOURCE_WWN, TARGET_WWN, 5)
        other = sim.source.pairs.find(OTHER_WWN, TARGET_WWN, 6)
        self.assertNotEqual(mine.entry.group, other.entry.group)
        self.assertEqual(sim.target.pairs.find(OTHER_WWN, TARGET_WWN, 6).entry.group,
                         other.entry.group)
        # a failure of one group leaves the other's pairs and log alone
        sim.source.controls.group_failed(other.entry.group, "test")
        self.assertEqual(other.state, PairState.FAILURE_SUSPEND)
        self.assertEqual(mine.state, PairState.INITIAL_COPYING)
        f.control(A.DUPLEX, lun=5)
        f.settle()
        self.assertEqual(mine.state, PairState.DUPLEX)
        self.assertEqual(sim.source.log_store.group_stats(mine.entry.group)["deleted"], 2)
        # the other source cannot drive this source's pair: it is not its pair
        box = f.control(A.SUSPEND, lun=5, initiator=OTHER_WWN)
        self.assertEqual(explain(box[0]), "no such pair")
        self.assertEqual(mine.state, PairState.DUPLEX)


class FailbackTests(TestCase):
    """After failure Suspend the pair is resynced the other way round, with bitmaps."""

    def setUp(self):
        from rcn.logxfer.routes import Route
        self.sim = SimRcn(seed=11, volume_blocks=256)
        self.sim.target_array = ControlArray(self.sim)
        path = next(iter(self.sim.source.routes)).path
        set_routes(self.sim, [Route(SOURCE_WWN, TARGET_WWN, path),
                              Route(TARGET_WWN, SOURCE_WWN, tuple(reversed(path)))])
        self.sim.source.sender.failure_timeout = 1.0
        # the old source array, as the new target, answers like the stand-in array
        self.sim.source.target_side.apply_target_for = lambda header: self.sim.target_array
        self.flows = ControlFlowTests("test_refusals_name_the_state")
        self.flows.sim, self.flows.array, self.flows.ox = self.sim, self.sim.target_array, 0

    def test_reverse_resync_carries_the_old_source_edges_727(self):
        f, sim = self.flows, self.sim
        f.write(0, 0)
        f.settle(0.1)
        sim.net.down.add(CORE)
        f.write(0, 120)                          # never reaches the target: 727 track 15
        f.settle(2.0)
        sim.net.down.discard(CORE)
        f.settle(12.0)
        self.assertEqual(f.row(sim.target, 0).state, PairState.FAILURE_SUSPEND)
        # the old target array resyncs towards the old source: FCP LUN = the old source LUN
        box = f.command(fcp.build_rcn_control(A.RESYNC, 0, 0, 44 + 8 * 4), 0, b"", 44 + 8 * 4,
                        initiator=TARGET_WWN, partner=SOURCE_WWN, edge=sim.target)
        f.settle()
        self.assertTrue(box and box[0].good, box)
        bitmap = DifferentialBitmap.deserialize(box[0].data_in)
        first, count, _ = bitmap.dirty_runs()
        dirty = {t for a, c in zip(first.tolist(), count.tolist()) for t in range(a, a + c)}
        self.assertEqual(dirty, {1, 3, 120 * BLOCK // TRACK})
        new_source = sim.target.pairs.find(TARGET_WWN, SOURCE_WWN, 0)
        new_target = sim.source.pairs.find(TARGET_WWN, SOURCE_WWN, 0)
        self.assertEqual((new_source.side, new_source.state), ("source", PairState.DUPLEX_PENDING))
        self.assertEqual((new_target.side, new_target.state), ("target", PairState.DUPLEX_PENDING))
        self.assertIsNone(sim.source.pairs.find(SOURCE_WWN, TARGET_WWN, 0))
        self.assertEqual(new_target.dirty_tracks(), 0)


class EdgeStateMachineTests(TestCase):
    """Every control command from the source array in every state of the source edge's row:
    relayed as a CTRL entry, or refused with a sense code that names the state."""

    ALLOWED = {
        A.PAIR_CREATE: {PairState.SIMPLEX},
        A.DUPLEX: {PairState.INITIAL_COPYING, PairState.DUPLEX_PENDING},
        A.SUSPEND: {PairState.INITIAL_COPYING, PairState.DUPLEX, PairState.DUPLEX_PENDING},
        # in a replicating state too: the source array failed alone (its link dropped)
        A.RESYNC: {PairState.SUSPEND, PairState.FAILURE_SUSPEND, PairState.INITIAL_COPYING,
                   PairState.DUPLEX, PairState.DUPLEX_PENDING},
        A.DELETE: set(PairState),
    }

    def setUp(self):
        self.flows = ControlFlowTests("test_refusals_name_the_state")
        self.flows.setUp()

    def test_source_edge_commands_in_every_state(self):
        f = self.flows
        f.control(A.PAIR_CREATE)
        f.settle()
        row = f.row(f.sim.source)
        for action, allowed in self.ALLOWED.items():
            for state in PairState:
                row.state, row.busy = state, None
                mirror = f.row(f.sim.target)
                if mirror is not None:
                    mirror.state = state         # the target edge in step
                generation = f.sim.source.log_store.group_stats(row.entry.group)["generation"]
                box = f.control(action)
                relayed = f.sim.source.log_store.group_stats(row.entry.group)["generation"] \
                    > generation
                what = f"{A(action).name} in {state.value}"
                self.assertEqual(relayed, state in allowed, what)
                if relayed:
                    f.settle()
                    self.assertTrue(box and box[0].good, what)
                    if f.row(f.sim.source) is None:          # DELETE removed it: back again
                        row = f.sim.source.pairs.add(row)
                else:
                    self.assertEqual(explain(box[0]), f"the partner's pair is {state.value}",
                                     what)

    def test_writes_only_in_replicating_states(self):
        f = self.flows
        f.control(A.PAIR_CREATE)
        f.settle()
        row = f.row(f.sim.source)
        for state in PairState:
            row.state = state
            box = f.write(5, 1)
            if state in (PairState.INITIAL_COPYING, PairState.DUPLEX, PairState.DUPLEX_PENDING):
                f.settle(0.05)
                self.assertTrue(box and box[0].good, state)
            else:
                self.assertEqual(explain(box[0]), f"the partner's pair is {state.value}")

    def test_target_array_commands_at_the_target_edge(self):
        f = self.flows
        f.control(A.PAIR_CREATE)
        f.settle()
        row = f.row(f.sim.target)
        for state in PairState:
            row.state = state
            f.sim.target.controls.failovers.clear()
            box = f.control(A.SUSPEND, initiator=TARGET_WWN, partner=SOURCE_WWN,
                            edge=f.sim.target)
            if state in (PairState.SUSPEND, PairState.FAILURE_SUSPEND):
                self.assertTrue(box and box[0].good, state)     # already stopped: at once
                continue
            if state is PairState.SIMPLEX:
                self.assertEqual(explain(box[0]), "the partner's pair is simplex")
                continue
            f.settle()
            self.assertTrue(box and box[0].good, state)
            self.assertEqual(row.state, PairState.FAILURE_SUSPEND, state)
            f.sim.target.target_side.receivers[row.entry.group].closed_after = None
            f.sim.source.controls.sok_sent.clear()
        box = f.control(A.TAKEOVER, initiator=TARGET_WWN, partner=SOURCE_WWN, edge=f.sim.target)
        self.assertTrue(box[0].good)
        self.assertEqual(len(fcp.parse_residual_report(box[0].data_in)), 4)


class FailureTriggerTests(TestCase):
    """Failure Suspend also comes from a lost route and from a log quota overflow (【0084】)."""

    def setUp(self):
        self.flows = ControlFlowTests("test_refusals_name_the_state")
        self.flows.setUp()
        self.sim = self.flows.sim

    def test_quota_overflow(self):
        f, sim = self.flows, self.sim
        sim.source.log_store.group_quota_bytes = 16 * 1024
        sim.source.log_store.max_waiters = 0           # no back-pressure: overflow at once
        sim.net.down.add(CORE)
        boxes = [f.write(0, lba * 8, 8) for lba in range(8)]
        f.settle(0.01)
        row = f.row(sim.source, 0)
        self.assertEqual(row.state, PairState.FAILURE_SUSPEND)
        self.assertEqual(explain(boxes[-1][0]), "the partner's pair is failure-suspend")
        self.assertTrue(boxes[0][0].good)              # acknowledged before the overflow...
        self.assertGreater(len(row._extents), 0)       # ...and now in 727
        self.assertEqual(sim.source.controls.counters["failure_suspends"], 1)

    def test_route_gone(self):
        from rcn.logxfer.routes import RouteTable
        f, sim = self.flows, self.sim
        sim.source.routes = RouteTable([])
        box = f.write(0, 0, 8)
        f.settle(0.01)
        self.assertTrue(box[0].good)                   # durable in the log before it is sent
        row = f.row(sim.source, 0)
        self.assertEqual(row.state, PairState.FAILURE_SUSPEND)
        self.assertIn("no_route", sim.source.drops.by_reason)

    def test_group_policies(self):
        from rcn.edge.pairs import EdgePairs
        a1, a2, b = EdgePairs("A-1"), EdgePairs("A-2"), EdgePairs("B")
        one = a1.group_for(SOURCE_WWN, TARGET_WWN, "e1", "e2")
        self.assertEqual(one >> 30, 1)
        self.assertEqual(one, a1.group_for(SOURCE_WWN, TARGET_WWN, "e3", "e4"))   # per arrays
        self.assertNotEqual(one, a1.group_for(OTHER_WWN, TARGET_WWN, "e1", "e2"))
        two = a2.group_for(SOURCE_WWN, TARGET_WWN, "e1", "e2")
        self.assertEqual(two >> 30, 2)
        self.assertEqual(two, a2.group_for(OTHER_WWN, TARGET_WWN, "e1", "e2"))    # per edges
        self.assertEqual(b.group_for(SOURCE_WWN, TARGET_WWN, "e1", "e2"), 0)
        with self.assertRaises(ValueError):
            EdgePairs("C")
        # policy B without a group in the command: refused, naming no pair
        self.sim.source.pairs.policy = "B"
        self.assertEqual(explain(self.flows.control(A.PAIR_CREATE, lun=6)[0]), "no such pair")


class MemoryLogRestartTests(TestCase):
    """A source edge with a memory-mode log that restarts has lost what it acknowledged."""

    def edge(self, path: str, sent: list):
        me, far = Address("10.0.0.1", 1), Address("10.0.0.3", 1)
        store = LogStore(None, mode="memory")
        replayed = store.open()
        state = ApplyState(None)
        state.open()
        settings = EdgeSettings(me=me, pairs=[PairEntry(SOURCE_WWN, 0, TARGET_WWN, 0, 7)],
                                routes=RouteTable([Route(SOURCE_WWN, TARGET_WWN, (me, far))]))
        edge = EdgeDevice(Clock(), settings, store, state,
                          lambda d, addr: sent.append(parse_datagram(d).header),
                          apply_target_for=lambda header: None, pairs_path=path)
        edge.open()
        edge.replay(replayed)
        edge.clock.advance(0)
        return edge

    def test_restart_with_a_memory_log_fails_the_group_with_the_whole_volume_in_727(self):
        path = self.mktemp() + ".json"
        sent: list = []
        first = self.edge(path, sent)
        row = first.pairs.find(SOURCE_WWN, TARGET_WWN, 0)
        row.geometry = (1 << 20, 512, 65536)
        first.pairs.save()
        self.assertEqual((row.state, sent), (PairState.DUPLEX, []))   # a first start: nothing
        again = self.edge(path, sent)
        row = again.pairs.find(SOURCE_WWN, TARGET_WWN, 0)
        self.assertEqual(row.state, PairState.FAILURE_SUSPEND)
        self.assertEqual(row.dirty_tracks(), 16)                      # every track
        self.assertIn("memory-mode log lost", row.last_error)
        notice = [h for h in sent if h.entry_type == EntryType.CTRL]
        self.assertEqual(len(notice), 1)
        self.assertTrue(notice[0].flags & EntryFlag.RESTART)
        self.assertIn(7, again.pairs.restart_pending)      # kept until the notice is answered
