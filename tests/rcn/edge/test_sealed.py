"""Attacks on sealed log transfer, one regression test each (issue 17).

Two edges and a core (``tests.rcn.sim.harness.SimRcn``: real ``EdgeDevice`` and
``CoreRelay`` objects behind real ``LogTransferProtocol`` objects with hop layers, the
edges with the group key, on a simulated network and one ``task.Clock``) replicate a few
writes; then an attacker puts datagrams on the wire: a stranger, someone at the core's
address without its link key, and a compromised core that holds its link keys but, as
every core, no group key. Each forgery must be refused and counted with its reason, and
leave the target volumes, the apply counters, the pair state at both edges and the source
edge's retained entries as they were; the writes after it must all arrive (no
acknowledged write lost).
"""

from __future__ import annotations

import random

from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.frames.hop import HOP_HEADER_SIZE, HOP_TAG_SIZE
from datapath.frames.logentry import (SEALED_OVERHEAD, EntryFlag, EntryType, LogHeader, Seal,
                                      build_entry, nak_body, parse_datagram)
from rcn.logxfer.keys import new_key
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import command_area, response_area
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.logxfer.seal import HopSeal
from rcn.rio.fcp import ScsiResult, build_write16_cdb
from tests.rcn.sim.harness import GROUP, SOURCE_WWN, TARGET_WWN, SimRcn
from tests.rcn.sim.keys import ACCEPT, RETIRE, SEND
from tests.rcn.logxfer.test_seal import rebuild
from tests.rcn.sim.network import LinkModel
from tests.support import key_ring

STRANGER = Address("10.0.9.9", 47001)
OTHER_SOURCE = 0x500A098000000003          # another array's pair to the same target array
OTHER_GROUP = 8                            # another group of the same two edges
FIXED = LinkModel(min_delay=0.0005, max_delay=0.0005)


def inner(datagram: bytes) -> bytes:
    """The log entry inside a hop envelope."""
    return datagram[HOP_HEADER_SIZE:-HOP_TAG_SIZE]


class SealedAttackTests(TestCase):
    def setUp(self):
        self.sim = sim = SimRcn(41, model=FIXED, batching=False)   # one entry a datagram
        self.a, self.b = sim.source.settings.me, sim.target.settings.me
        self.core = sim.cores[0].me
        # a second group of the same edges, and a second route to the target array: a
        # WR moved to either still reaches the end-to-end check (not a routing drop)
        sim.keys.groups[OTHER_GROUP] = {1: new_key(1)}
        sim.keys.group_holders[OTHER_GROUP] = (self.a, self.b)
        sim.keys.push()
        path = next(iter(sim.source.routes)).path
        routes = RouteTable([Route(SOURCE_WWN, TARGET_WWN, path),
                             Route(OTHER_SOURCE, TARGET_WWN, path)])
        for device in (sim.source, sim.target):
            device.routes = routes
        sim.cores[0].set_routes(routes)
        self.wire: list[tuple[Address, bytes, Address]] = []
        send = sim.net.send

        def record(source, data, destination):
            self.wire.append((source, data, destination))
            send(source, data, destination)
        sim.net.send = record
        sim.run(20)
        self.rng = random.Random(5)

    # -- the attacker's tools --------------------------------------------------------------
    def from_stranger(self, entry: bytes, to: Address, sealed: bool = True) -> None:
        """A stranger's datagram: under a link key of its own, or bare."""
        if sealed:
            hop = HopSeal(STRANGER, key_ring(links=[(STRANGER, to)]), Drops())
            entry = hop.seal(entry, to)
        self.sim.net.inject(STRANGER, entry, to)

    def at_core_address(self, data: bytes, to: Address) -> None:
        """From the core's address, but without its link key."""
        self.sim.net.inject(self.core, data, to)

    def from_core(self, entry: bytes, to: Address) -> None:
        """A compromised core: its own hop layer (link keys), no group key."""
        hop = self.sim.net.endpoints[self.core].hop
        self.sim.net.inject(self.core, hop.seal(entry, to), to)

    def genuine(self, entry_type: int, to: Address) -> list[bytes]:
        """The log entries of ``entry_type`` that reached ``to`` from the core so far."""
        out = []
        for source, data, destination in self.wire:
            if source == self.core and destination == to:
                entry = inner(data)
                if parse_datagram(entry).header.entry_type == entry_type:
                    out.append(entry)
        return out

    def fields(self, **kw) -> dict:
        receiver = self.sim.target.target_side.receivers[GROUP]
        return {"group_id": GROUP, "sequence": receiver.reorder.next_expected, "io_time_ns": 1,
                "target_wwn": TARGET_WWN, "target_lun": 0, "source_wwn": SOURCE_WWN,
                "source_lun": 0, **kw}

    def write_area(self, lba: int = 0, blocks: int = 2) -> bytes:
        return command_area(0x010100, 0x010200, 7, 0, build_write16_cdb(lba, blocks),
                            self.rng.randbytes(blocks * 512))

    def core_forgeries(self, entry_type: int, body: bytes, **fields) -> dict[str, bytes]:
        """What a core without the group key can make, by the reason each must be refused
        for: clear, 'sealed' with made-up bytes under a held epoch, under an unheld one."""
        junk = self.rng.randbytes(len(body) + SEALED_OVERHEAD)
        return {"e2e_unsealed": build_entry(entry_type, body, **fields),
                "e2e_bad_tag": build_entry(entry_type, junk, seal=int(Seal.AES_256_GCM),
                                           key_epoch=1, **fields),
                "e2e_unknown_key": build_entry(entry_type, junk, seal=int(Seal.AES_256_GCM),
                                               key_epoch=77, **fields)}

    # -- what must not change ----------------------------------------------------------------
    def state(self) -> dict:
        sim = self.sim
        receiver = sim.target.target_side.receivers[GROUP]
        return {"volumes": {k: bytes(v) for k, v in sim.target_volumes.items()},
                "applied": (receiver.applied, receiver.durable, receiver.reorder.next_expected,
                            sim.target_array.applied),
                "pairs": [(edge.name, row.entry.target_lun, row.side, row.state)
                          for edge in (sim.source, sim.target) for row in edge.pairs],
                "retained": list(sim.source.log_store.retained(GROUP)),
                "outstanding": list(sim.source.sender.outstanding),
                "acked": sim.source.sender.counters["acknowledged"],
                "nak_retransmits": sim.source.sender.counters["nak_retransmits"]}

    def drops(self, device) -> dict[str, int]:
        return {k: v for k, v in device.drops.by_reason.items() if v}

    def attacked(self, before: dict, device, expected: dict[str, int]) -> None:
        """Let the forgeries arrive; the drops they must cause, nothing else changed."""
        self.sim.clock.advance(0.5)
        self.assertEqual(self.drops(device), expected)
        self.assertEqual(self.state(), before)

    def still_replicates(self, writes: int = 40) -> None:
        """More writes, all applied in order, the volumes equal: nothing was lost."""
        self.sim.run(writes)
        self.sim.assert_equal()
        self.assertEqual(self.sim.checker.prefix(GROUP), writes)
        self.assertEqual(self.sim.target.target_side.receivers[GROUP].applied, writes)

    # -- forged WR ------------------------------------------------------------------------------
    def test_a_strangers_forged_wr_with_the_next_sequence(self):
        before = self.state()
        wr = build_entry(EntryType.WR, self.write_area(), **self.fields())
        self.from_stranger(wr, self.b)
        self.from_stranger(wr, self.b, sealed=False)
        self.attacked(before, self.sim.target, {"not_neighbour": 2})
        self.still_replicates()

    def test_a_wr_from_the_cores_address_without_its_link_key(self):
        before = self.state()
        wr = build_entry(EntryType.WR, self.write_area(), **self.fields())
        self.at_core_address(wr, self.b)                                       # bare
        forger = HopSeal(self.core, key_ring(links=[(self.core, self.b)]), Drops(),
                         clock_ns=lambda: 1 << 62)
        self.at_core_address(forger.seal(wr, self.b), self.b)                  # a wrong key
        self.attacked(before, self.sim.target, {"unsealed": 1, "bad_tag": 1})
        self.still_replicates()

    def test_a_compromised_core_cannot_forge_a_wr(self):
        before = self.state()
        forged = self.core_forgeries(EntryType.WR, self.write_area(), **self.fields())
        for entry in forged.values():
            self.from_core(entry, self.b)
        self.attacked(before, self.sim.target, dict.fromkeys(forged, 1))
        self.still_replicates()

    # -- forged answers and controls to the source edge -------------------------------------------
    def hold_writes(self, n: int = 5) -> None:
        """``n`` writes the source edge retains: the target edge cannot be reached."""
        self.sim.net.down.add(self.b)
        for _ in range(n):
            self.sim._write()
        self.sim.clock.advance(0.01)
        self.assertEqual(len(self.sim.source.log_store.retained(GROUP)), n)

    def release(self) -> None:
        self.sim.net.down.discard(self.b)

    def answers_from_core(self, entry_type: int, body: bytes, *variants: dict,
                          held: int = 5) -> None:
        """A core's forged answers (of each of ``variants``' extra fields) for the newest
        of ``held`` retained writes: all refused, nothing moved, nothing lost after."""
        self.hold_writes(held)
        before = self.state()
        expected: dict[str, int] = {}
        for extra in variants or ({},):
            fields = self.fields(sequence=max(before["retained"]), **extra)
            for reason, entry in self.core_forgeries(entry_type, body, **fields).items():
                self.from_core(entry, self.a)
                expected[reason] = expected.get(reason, 0) + 1
        self.attacked(before, self.sim.source, expected)
        self.release()
        self.still_replicates()

    def test_a_core_cannot_acknowledge_for_the_target(self):
        # the attack that lost acknowledged writes: a WROK for entries not yet applied
        self.answers_from_core(EntryType.WROK, response_area(0x010200, 0x010100, 7, 0,
                                                             ScsiResult()),
                               {"flags": 0}, {"flags": int(EntryFlag.CUMULATIVE)})

    def test_a_core_cannot_nak_for_the_target(self):
        self.answers_from_core(EntryType.NAK, nak_body([(21, 25)]))

    def test_a_core_cannot_answer_a_control_for_the_target(self):
        self.answers_from_core(EntryType.CTRL_OK, response_area(0x010200, 0x010100, 7, 0,
                                                                ScsiResult()), held=2)

    def test_a_forged_reverse_suspend_moves_no_pair(self):
        # the target edge's failover request (SUSPEND), and its failure notice naming a
        # retained entry: either would move the pair to (failure) Suspend
        self.hold_writes(2)
        before = self.state()
        expected: dict[str, int] = {}
        for failure in (False, True):
            cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, GROUP, 0,
                                        failure=failure)
            fields = self.fields(sequence=max(before["retained"]),
                                 flags=int(EntryFlag.REVERSE))
            forged = self.core_forgeries(EntryType.CTRL, command_area(0, 0, 0, 0, cdb),
                                         **fields)
            for reason, entry in forged.items():
                self.from_core(entry, self.a)
                expected[reason] = expected.get(reason, 0) + 1
            self.from_stranger(forged["e2e_unsealed"], self.a)
            expected["not_neighbour"] = expected.get("not_neighbour", 0) + 1
        self.attacked(before, self.sim.source, expected)
        self.assertEqual({row.state.value for row in self.sim.source.pairs}, {"duplex"})
        self.assertEqual({row.state.value for row in self.sim.target.pairs}, {"duplex"})
        self.assertEqual(self.sim.source.controls.counters["failovers"], 0)
        self.release()
        self.still_replicates()

    # -- replays ----------------------------------------------------------------------------------
    def test_a_replayed_datagram_is_refused_at_the_hop(self):
        before = self.state()
        sent = [(s, d, t) for s, d, t in self.wire if s == self.core and t == self.b]
        for source, data, destination in sent[:5]:
            self.sim.net.inject(source, data, destination)
        self.attacked(before, self.sim.target, {"replayed": 5})
        self.still_replicates()

    def test_an_old_wr_resealed_by_a_core_is_a_duplicate_not_a_second_apply(self):
        before = self.state()
        old = self.genuine(EntryType.WR, self.b)
        self.assertGreater(len(old), 3)
        receiver = self.sim.target.target_side.receivers[GROUP]
        duplicates = receiver.stats.duplicates_applied
        for entry in old[:3]:
            self.from_core(entry, self.b)            # passes the hop, opens end to end
        self.attacked(before, self.sim.target, {})
        self.assertGreater(receiver.stats.duplicates_applied, duplicates)
        self.still_replicates()

    def test_an_entry_sealed_under_a_retired_epoch(self):
        old = self.genuine(EntryType.WR, self.b)[0]
        for step in (ACCEPT, SEND, RETIRE):
            self.sim.keys.rotate(step)
        self.still_replicates(30)                    # the new epoch works
        before = self.state()
        # end to end: an old WR, re-sealed by the core under the new link key, given the
        # next sequence -- still sealed under group epoch 1
        header = parse_datagram(old).header
        self.assertEqual(header.key_epoch, 1)
        self.from_core(rebuild(old, sequence=before["applied"][2]), self.b)
        self.attacked(before, self.sim.target, {"e2e_unknown_key": 1})
        self.still_replicates(40)

    def test_a_datagram_under_a_retired_link_epoch(self):
        old_ring = self.sim.keys.ring_of(self.core)
        for step in (ACCEPT, SEND, RETIRE):
            self.sim.keys.rotate(step)
        before = self.state()
        entry = build_entry(EntryType.KEEPALIVE, bytes(16))
        stale = HopSeal(self.core, old_ring, Drops(), clock_ns=lambda: 1 << 62)
        self.at_core_address(stale.seal(entry, self.b), self.b)
        self.attacked(before, self.sim.target, {"unknown_key": 1})
        self.still_replicates()

    # -- a WR altered on the way ----------------------------------------------------------------
    def test_a_wr_altered_by_a_core_does_not_open(self):
        old = self.genuine(EntryType.WR, self.b)[-1]
        before = self.state()
        header: LogHeader = parse_datagram(old).header
        body = parse_datagram(old).payload
        self.assertEqual(header.seal, Seal.AES_256_GCM)
        nxt = before["applied"][2]
        at = len(body) // 3                      # inside the command: the CDB's LBA region
        altered = {
            "group": rebuild(old, group_id=OTHER_GROUP, sequence=1),
            "sequence": rebuild(old, sequence=nxt),
            "lba in the body": rebuild(old, sequence=nxt, body=body[:at] + bytes(
                [body[at] ^ 0x01]) + body[at + 1:]),
            "first bytes of the body": rebuild(old, sequence=nxt, body=bytes(
                [body[SEALED_OVERHEAD // 2] ^ 0x80]).join((body[:SEALED_OVERHEAD // 2],
                                                           body[SEALED_OVERHEAD // 2 + 1:]))),
            "source wwn": rebuild(old, source_wwn=OTHER_SOURCE, sequence=nxt),
            "target lun": rebuild(old, target_lun=1 - header.target_lun, sequence=nxt),
        }
        for entry in altered.values():
            self.from_core(entry, self.b)
        self.attacked(before, self.sim.target, {"e2e_bad_tag": len(altered)})
        self.still_replicates()
