"""The whole RCN with both arrays' remote copy programs, on one ``task.Clock`` (issue 6).

:class:`LifecycleSim` extends :class:`~tests.rcn.sim.harness.SimRcn`: instead of
a host writing straight into the source edge and a bare target volume, the
source and target arrays are :class:`rcn.storage.remotecopy.RemoteCopy` objects
over in-memory volumes, talking to their edges through direct-call sessions
(the FCIP links have their own tests). Pair creation, the initial copy,
suspend, failure Suspend, resync, failover and failback then run exactly as in
the daemons, over the simulated lossy network.

The prefix checker sees every write the source edge logs and every change to a
target volume. When failure Suspend's notice reaches the target array (the
entries the source edge dropped are void from then on), the checker is rebased
on the target volume as it is: what follows -- the resync copy and new host
writes -- must again apply as a prefix of what the source edge logs next.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed

from datapath.frames import fcp
from rcn.logxfer.routes import Route, RouteTable
from rcn.rio.errors import LinkDown
from rcn.rio.fcp import ScsiCommand, ScsiResult, build_write16_cdb
from rcn.storage.array import ArrayTarget
from rcn.storage.pairs import PairTable
from rcn.storage.remotecopy import RemoteCopy
from tests.rcn.sim.checker import PrefixChecker
from tests.rcn.sim.harness import BLOCK, GROUP, SOURCE_WWN, TARGET_WWN, SimRcn
from tests.rcn.storage.support import MemoryVolume

TRACK = 4096
_CONTROL = int(fcp.Opcode.RCN_CONTROL)


class EdgeSession:
    """An array's session to its edge's virtual storage for ``partner``: direct calls.

    ``link_down()`` is the FCIP link dropping: every command in flight fails with
    ``LinkDown`` at the array (what the edge already took, it keeps), and new ones fail
    at once until ``link_up()``."""

    def __init__(self, sim: "LifecycleSim", edge, initiator: int, partner: int):
        self.sim, self.edge, self.initiator, self.partner = sim, edge, initiator, partner
        self.up = True
        self.in_flight: set[Deferred] = set()

    def link_down(self) -> None:
        self.up = False
        for d in list(self.in_flight):
            self.in_flight.discard(d)
            d.errback(LinkDown("the simulated link was cut"))

    def link_up(self) -> None:
        self.up = True

    def write(self, lun: int, lba: int, data, attribute=fcp.TaskAttribute.SIMPLE, fua=False):
        cdb = build_write16_cdb(lba, len(data) // BLOCK)
        return self.execute(lun, cdb, bytes(data), 0, attribute)

    def execute(self, lun: int, cdb: bytes, data_out=b"", data_in_length: int = 0,
                attribute=fcp.TaskAttribute.SIMPLE):
        self.sim.ox += 1
        command = ScsiCommand(0x010100, self.initiator, 0x010200, self.partner, lun, cdb,
                              fcp.parse_cdb(cdb), attribute, bytes(data_out), data_in_length,
                              self.sim.ox & 0xFFFF)
        if not self.up:
            return fail(LinkDown("the simulated link is cut"))
        answer = Deferred()
        self.in_flight.add(answer)

        def done(result):
            if answer in self.in_flight:        # not already failed by link_down
                self.in_flight.discard(answer)
                answer.callback(result)
        maybeDeferred(self.edge.rio_command, command, self.partner).addBoth(done)
        return answer


class ArrayPort:
    """What an edge applies through: the array's RIO target, answering after a random delay."""

    def __init__(self, sim: "LifecycleSim", wwn: int, partner: int, target: ArrayTarget):
        self.sim, self.wwn, self.partner, self.target = sim, wwn, partner, target

    def execute(self, command, lun: int):
        scsi = ScsiCommand(0x010200, self.partner, 0x010100, self.wwn, lun, command.cdb,
                           command.parsed, command.attribute, command.data_out,
                           command.data_in_length, 0)
        result = self.target.execute(scsi)
        if command.cdb[0] == _CONTROL:
            self.sim.control_applied(self.wwn, command, result)
        elif result.good and command.cdb[0] == fcp.Opcode.WRITE_16:
            self.sim.target_changed(self.wwn, lun)
        d = Deferred()
        self.sim.clock.callLater(self.sim.rng.uniform(0, 0.001), d.callback, result)
        return d


class LifecycleSim(SimRcn):
    def __init__(self, seed: int, luns: int = 1, volume_blocks: int = 1024,
                 auto_resync: bool = True, **kw):
        super().__init__(seed, luns=luns, volume_blocks=volume_blocks, **kw)
        self.ox = 0
        size = volume_blocks * BLOCK
        self.source.pairs.rows.clear()          # no configured pairs: pair-create makes them
        path = next(iter(self.source.routes)).path
        routes = RouteTable([Route(SOURCE_WWN, TARGET_WWN, path),       # and back, for failback
                             Route(TARGET_WWN, SOURCE_WWN, tuple(reversed(path)))])
        for edge in (self.source, self.target):
            edge.routes = routes
        for core in self.cores:
            core.set_routes(routes)
        self.volumes = {SOURCE_WWN: {lun: MemoryVolume(lun, size) for lun in range(luns)},
                        TARGET_WWN: {lun: MemoryVolume(lun, size) for lun in range(luns)}}
        self.source_volumes = {(SOURCE_WWN, lun): v.data
                               for lun, v in self.volumes[SOURCE_WWN].items()}
        self.target_volumes = {(TARGET_WWN, lun): v.data
                               for lun, v in self.volumes[TARGET_WWN].items()}
        self.checker = PrefixChecker(self.target_volumes)
        self.source.log_store.checker = self.checker
        self.checking = True
        self.arrays: dict[int, RemoteCopy] = {}
        self.sessions: dict[int, EdgeSession] = {}
        ports = {}
        for wwn, partner, edge in ((SOURCE_WWN, TARGET_WWN, self.source),
                                   (TARGET_WWN, SOURCE_WWN, self.target)):
            session = self.sessions[wwn] = EdgeSession(self, edge, wwn, partner)
            rc = RemoteCopy(self.clock, lambda _wwn, s=session: succeed(s) if s.up else
                            fail(LinkDown("the simulated link is cut")), self.volumes[wwn],
                            PairTable(), track_size=TRACK, copy_chunk=16 * BLOCK,
                            auto_resync=auto_resync)
            self.arrays[wwn] = rc
            ports[wwn] = ArrayPort(self, wwn, partner, ArrayTarget(self.volumes[wwn], rc))
        for edge in (self.source, self.target):
            edge.target_side.apply_target_for = lambda header: ports[header.target_wwn]
        self.source.sender.failure_timeout = 2.0
        self.host_acked = 0
        self.host_outstanding = 0

    @property
    def source_array(self) -> RemoteCopy:
        return self.arrays[SOURCE_WWN]

    @property
    def target_array_rc(self) -> RemoteCopy:
        return self.arrays[TARGET_WWN]

    def cut_array_link(self, wwn: int = SOURCE_WWN) -> None:
        """The array's FCIP link to its edge drops (the edge crashed, a cable was pulled)."""
        self.sessions[wwn].link_down()

    def restore_array_link(self, wwn: int = SOURCE_WWN) -> None:
        """The link is back: the array's service calls ``link_restored`` at link-up."""
        self.sessions[wwn].link_up()
        self.arrays[wwn].link_restored()

    # -- what the checker sees -------------------------------------------------------
    def target_changed(self, wwn: int, lun: int) -> None:
        if self.checking and wwn == TARGET_WWN:
            self.checker.check((wwn, lun))

    def control_applied(self, wwn: int, command, result: ScsiResult) -> None:
        """A failure notice reached the target array: the dropped entries are void."""
        if (wwn == TARGET_WWN and result.good
                and command.parsed["service_action"] == fcp.RcnServiceAction.SUSPEND
                and command.parsed["control_flags"] & fcp.RCN_CONTROL_FAILURE):
            self.rebase()

    def rebase(self) -> None:
        receiver = self.target.target_side.receivers.get(GROUP)
        through = receiver.applied if receiver is not None else 0
        g = self.checker.groups.get(GROUP)
        if g is None:
            return
        for volume in g.shadow:
            g.shadow[volume] = bytearray(self.target_volumes[volume])
        for sequence in [s for s in g.writes if s <= through]:
            del g.writes[sequence]
        g.k = through

    # -- the hosts ----------------------------------------------------------------------
    def host_write(self, wwn: int = SOURCE_WWN, lun: int = 0, blocks: int | None = None) -> None:
        """A random write by the host of array ``wwn`` (its ack is counted)."""
        volume = self.volumes[wwn][lun]
        blocks = blocks or self.rng.randint(1, 16)
        lba = self.rng.randrange(volume.capacity // BLOCK - blocks + 1)
        data = self.rng.randbytes(blocks * BLOCK)
        self.host_outstanding += 1

        def acked(_):
            self.host_outstanding -= 1
            self.host_acked += 1
        self.arrays[wwn].host_write(lun, lba * BLOCK, data).addCallback(acked)

    def fill(self, lun: int = 0, extents=((0, 64), (600, 40))) -> int:
        """Data on the source volume before the pair exists; returns the bytes written."""
        volume = self.volumes[SOURCE_WWN][lun]
        for lba, blocks in extents:
            volume.write(lba * BLOCK, self.rng.randbytes(blocks * BLOCK))
        return sum(blocks for _, blocks in extents) * BLOCK

    def command(self, deferred: Deferred) -> list:
        """Collect a host command's outcome (a dict, or the Failure)."""
        box: list = []
        deferred.addBoth(box.append)
        return box

    def step(self, seconds: float, writes_per_ms: float = 0.0, wwn: int = SOURCE_WWN,
             lun: int = 0, depth: int = 8) -> None:
        """Advance ``seconds`` in 1 ms steps, issuing host writes at the given rate."""
        for _ in range(int(seconds * 1000)):
            if writes_per_ms and self.rng.random() < writes_per_ms \
                    and self.host_outstanding < depth:
                self.host_write(wwn, lun)
            if self.checker.violation is not None:
                raise self.checker.violation
            self.clock.advance(0.001)

    def until(self, what: str, predicate, limit: float = 30.0, **write_kw) -> None:
        start = self.clock.seconds()
        while not predicate():
            if self.clock.seconds() - start > limit:
                raise AssertionError(f"seed {self.seed}: not {what} after {limit} simulated "
                                     f"seconds: {self.describe_pairs()}")
            self.step(0.001, **write_kw)

    def state(self, wwn: int, lun: int = 0) -> str | None:
        pair = self.arrays[wwn].pairs.for_lun(lun)
        return None if pair is None else pair.state.value

    def describe_pairs(self) -> str:
        return (f"source {self.source_array.describe_pairs()} target "
                f"{self.target_array_rc.describe_pairs()} edges "
                f"{[r.describe() for r in self.source.pairs]} "
                f"{[r.describe() for r in self.target.pairs]}")

    def equal(self, lun: int = 0) -> bool:
        return self.volumes[SOURCE_WWN][lun].data == self.volumes[TARGET_WWN][lun].data
