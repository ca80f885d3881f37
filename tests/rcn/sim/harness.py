"""The whole RCN in one process on one ``task.Clock`` (DESIGN.md 2: roles take their clock).

Source host -> source edge -> cores -> target edge -> target array, over a
:class:`~tests.rcn.sim.network.SimNetwork` that loses, duplicates, delays and
reorders datagrams from a seed. It runs sealed, as the daemons do: every
device has a hop layer with the link keys of its routes' links, and both edges
the group keys (:class:`~tests.rcn.sim.keys.SimKeys`, which also rotates them);
``sealed=False`` is the ``seal = "none"`` opt-out. The FCIP links at both ends
are replaced by direct calls (the RIO channel has its own tests): the host hands SCSI
commands to the source edge's virtual-storage target, and the target edge
applies to in-memory volumes through an ``apply_target_for`` hook that
answers after a random delay. Every change to a target volume is checked by
the :class:`~tests.rcn.sim.checker.PrefixChecker`.

Replay one seed: ``python -m tests.rcn.sim.harness --seed N [--cores C] [--writes W]
[--unsealed]``.
"""

from __future__ import annotations

import argparse
import random
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from datapath.frames import fcp
from rcn.core.relay import BatchPolicy, CoreRelay
from rcn.edge.applystate import ApplyState
from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
from rcn.edge.logstore import LogStore
from rcn.edge.receiver import ReceiverConfig
from rcn.edge.source import stored_entry
from rcn.logxfer.rioarea import parse_command_area
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.logxfer.seal import GroupSeal, HopSeal
from rcn.rio.fcp import ScsiCommand, ScsiResult, build_write16_cdb
from tests.rcn.sim.checker import PrefixChecker
from tests.rcn.sim.keys import SimKeys
from tests.rcn.sim.network import LinkModel, SimNetwork

SOURCE_WWN = 0x500A098000000001
TARGET_WWN = 0x500A098000000002
GROUP = 7
BLOCK = 512


class RecordingStore(LogStore):
    """A memory-mode LogStore that tells the checker what was logged, in sequence order
    (``seal``: the edge's, to open what it logs sealed)."""

    def __init__(self, checker: PrefixChecker):
        super().__init__(None, mode="memory")
        self.checker = checker
        self.seal = GroupSeal(sealed=False)

    def append(self, group, sequence, entry):
        stored = super().append(group, sequence, entry)     # a refused append logs nothing
        header, area = stored_entry(entry)
        command = parse_command_area(self.seal.open(header, area))
        # every entry takes a place in the group's order; a CTRL changes no block
        write = command.cdb[0] == fcp.Opcode.WRITE_16
        self.checker.logged(group, sequence, (header.target_wwn, header.target_lun),
                            command.parsed["lba"] if write else 0,
                            command.data_out if write else b"")
        return stored


class SimTargetArray:
    """Target volumes; writes land at once, the answer comes after a random delay."""

    def __init__(self, clock, rng: random.Random, volumes, checker: PrefixChecker,
                 max_delay: float = 0.001):
        self.clock = clock
        self.rng = rng
        self.volumes = volumes
        self.checker = checker
        self.max_delay = max_delay
        self.applied = 0

    def execute(self, command, lun: int):
        key = (TARGET_WWN, lun)
        lba = command.parsed["lba"]
        self.volumes[key][lba * BLOCK:lba * BLOCK + len(command.data_out)] = command.data_out
        self.applied += 1
        self.checker.check(key)
        d = Deferred()
        self.clock.callLater(self.rng.uniform(0, self.max_delay), d.callback, ScsiResult())
        return d


class SimRcn:
    def __init__(self, seed: int, cores: int = 1, model: LinkModel | None = None,
                 luns: int = 2, volume_blocks: int = 256, batching: bool = True,
                 receiver: ReceiverConfig | None = None, sealed: bool = True):
        self.seed = seed
        self.clock = task.Clock()
        self.rng = random.Random(seed)
        self.net = SimNetwork(self.clock, seed + 1, model)
        self.luns = luns
        size = volume_blocks * BLOCK
        self.source_volumes = {(SOURCE_WWN, lun): bytearray(size) for lun in range(luns)}
        self.target_volumes = {(TARGET_WWN, lun): bytearray(size) for lun in range(luns)}
        self.checker = PrefixChecker(self.target_volumes)
        a, b = Address("10.0.0.1", 47001), Address("10.0.0.2", 47001)
        core_addresses = [Address(f"10.0.1.{i + 1}", 47001) for i in range(cores)]
        routes = RouteTable([Route(SOURCE_WWN, TARGET_WWN, (a, *core_addresses, b))])
        self.keys = (SimKeys.for_paths([(a, *core_addresses, b)], {GROUP: (a, b)}) if sealed
                     else None)
        pairs = [PairEntry(SOURCE_WWN, lun, TARGET_WWN, lun, GROUP) for lun in range(luns)]
        rcfg = receiver or ReceiverConfig(window=256, nak_delay=0.005, nak_interval=0.02,
                                          retry_delay=0.01)
        self.target_array = SimTargetArray(self.clock, self.rng, self.target_volumes,
                                           self.checker)
        self.source = self._edge("source", a, EdgeSettings(me=a, pairs=pairs, routes=routes,
                                                           rto=0.05, rto_max=0.4, receiver=rcfg,
                                                           max_datagram_body=8000),
                                 RecordingStore(self.checker))
        self.source.log_store.seal = self.source.seal
        self.target = self._edge("target", b, EdgeSettings(me=b, routes=routes, receiver=rcfg,
                                                           max_datagram_body=8000),
                                 LogStore(None, mode="memory"),
                                 apply_target_for=lambda header: self.target_array)
        self.cores = []
        for address in core_addresses:
            holder = {}
            relay = CoreRelay(routes, address, lambda d, addr, h=holder: h["p"].send(d, addr),
                              self.clock, batch=BatchPolicy(enabled=batching, max_delay=0.0005))
            holder["p"] = self.net.attach(address, relay, relay.drops)
            self._seal_hop(address, holder["p"], relay.drops)
            self.cores.append(relay)
        self.issued = 0
        self.acked = 0
        self.outstanding = 0

    def _edge(self, name, address, settings, store, apply_target_for=None) -> EdgeDevice:
        store.open()
        state = ApplyState(None)
        state.open()
        holder = {}
        seal = (GroupSeal(self.keys.ring_of(address)) if self.keys is not None
                else GroupSeal(sealed=False))
        edge = EdgeDevice(self.clock, settings, store, state,
                          lambda d, addr: holder["p"].send(d, addr), apply_target_for, name,
                          seal=seal)
        holder["p"] = self.net.attach(address, edge, edge.drops)
        self._seal_hop(address, holder["p"], edge.drops, seal)
        return edge

    def _seal_hop(self, address, protocol, drops, *more) -> None:
        """Give the device at ``address`` its hop layer (its counter from the clock)."""
        if self.keys is None:
            return
        protocol.hop = HopSeal(address, self.keys.ring_of(address), drops,
                               clock_ns=lambda: int(self.clock.seconds() * 1e9))
        self.keys.attach(address, protocol.hop, *more)

    def drops(self) -> dict[str, int]:
        """Every device's drops that moved, by reason (summed)."""
        out: dict[str, int] = {}
        for device in (self.source, self.target, *self.cores):
            for reason, n in device.drops.by_reason.items():
                if n:
                    out[reason] = out.get(reason, 0) + n
        return out

    # -- the host's workload -------------------------------------------------------
    def _write(self) -> None:
        lun = self.rng.randrange(self.luns)
        volume = self.source_volumes[(SOURCE_WWN, lun)]
        blocks = self.rng.randint(1, 24)
        lba = self.rng.randrange(len(volume) // BLOCK - blocks + 1)
        data = self.rng.randbytes(blocks * BLOCK)
        volume[lba * BLOCK:(lba + blocks) * BLOCK] = data
        cdb = build_write16_cdb(lba, blocks)
        command = ScsiCommand(0x010100, SOURCE_WWN, 0x010200, TARGET_WWN, lun, cdb,
                              fcp.parse_cdb(cdb), fcp.TaskAttribute.ORDERED, data, 0,
                              self.issued & 0xFFFF)
        self.issued += 1
        self.outstanding += 1
        result = self.source.rio_command(command, TARGET_WWN)
        if isinstance(result, ScsiResult):
            self._acked(result)
        else:
            result.addCallback(self._acked)

    def _acked(self, result: ScsiResult) -> None:
        if not result.good:
            raise AssertionError(f"seed {self.seed}: source edge answered {result}")
        self.acked += 1
        self.outstanding -= 1

    def run(self, writes: int, depth: int = 8, per_step: int = 1, step: float = 0.0002,
            limit: float = 30.0) -> None:
        """Issue ``writes`` writes, at most ``depth`` unacknowledged and ``per_step`` per
        ``step`` of simulated time, then run until all are applied."""
        while self.clock.seconds() < limit:
            for _ in range(per_step):
                if self.issued < writes and self.outstanding < depth:
                    self._write()
            if self.checker.violation is not None:
                raise self.checker.violation
            if self.acked == writes and self.settled():
                return
            self.clock.advance(step)
        raise AssertionError(f"seed {self.seed}: not settled after {limit} simulated seconds: "
                             f"{self.describe()}")

    def settled(self) -> bool:
        receiver = self.target.target_side.receivers.get(GROUP)
        return (receiver is not None and receiver.durable == self.issued
                and not self.source.sender.outstanding and not self.source.sender.queued
                and not self.source.log_store.retained(GROUP))

    def describe(self) -> str:
        receiver = self.target.target_side.receivers.get(GROUP)
        return (f"issued {self.issued} acked {self.acked} target "
                f"{receiver.describe() if receiver else None} sender "
                f"{self.source.sender.counters} outstanding {len(self.source.sender.outstanding)} "
                f"net {self.net.stats} drops {self.drops()}")

    def assert_equal(self) -> None:
        for lun in range(self.luns):
            if self.source_volumes[(SOURCE_WWN, lun)] != self.target_volumes[(TARGET_WWN, lun)]:
                raise AssertionError(f"seed {self.seed}: LUN {lun} differs at the end")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Replay one simulated RCN run.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--duplicate", type=float, default=0.02)
    parser.add_argument("--unsealed", action="store_true", help='seal = "none" everywhere')
    args = parser.parse_args(argv)
    sim = SimRcn(args.seed, args.cores, LinkModel(args.loss, args.duplicate),
                 sealed=not args.unsealed)
    sim.run(args.writes)
    sim.assert_equal()
    print(f"seed {args.seed}: {args.writes} writes applied in order; {sim.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
