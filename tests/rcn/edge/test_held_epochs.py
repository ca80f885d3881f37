"""A group key epoch retired while the source edge's log still retains entries under it.

The source edge seals an entry before its durable append, and its log keeps that
ciphertext until the target applies it. A target unreachable for a while (a pair whose
entries wait, days in the field) and a rotation that retires the old group epoch in the
meantime must cost nothing: the source edge keeps the old epoch *held* -- it opens only
its own log, never a datagram from the wire -- re-seals what it sends under the current
epoch, and releases the held epoch (and rewrites its key file) once the last entry under
it is acknowledged. Across a restart the key file keeps it held.
"""

from __future__ import annotations

import os
import socket

import numpy as np

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from datapath.frames.logentry import EntryFlag, EntryType, LogHeader, build_entry
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.edge.config import parse_config
from rcn.edge.logstore import LogStore
from rcn.edge.service import Edge, make_service
from rcn.edge.source import split_datagrams, stored_entry
from rcn.logxfer.keys import Key, KeyRing, new_key
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import command_area, parse_command_area, response_area
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal, SealRefused
from rcn.rio.fcp import ScsiResult, build_write16_cdb
from tests.rcn.sim.harness import GROUP, SOURCE_WWN, TARGET_WWN, SimRcn
from tests.rcn.sim.keys import ACCEPT, RETIRE, SEND
from tests.rcn.sim.network import LinkModel
from tests.support import free_port, key_ring

FIXED = LinkModel(min_delay=0.0005, max_delay=0.0005)
VOLUME, TRACK = 256 * 512, 4096          # SimRcn's volumes, in tracks of 8 blocks
A, B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"


def epochs_of(datagrams) -> set[int]:
    return {LogHeader.parse(d, fast=True).key_epoch for d in datagrams}


class RetiredWhileRetainedTests(TestCase):
    """Two edges and a core (``SimRcn``); the target edge unreachable while writes are
    logged under epoch 1, then a whole rotation (accept 2, send 2, retire 1)."""

    def setUp(self):
        self.sim = sim = SimRcn(51, model=FIXED, batching=False)
        sim.run(10)
        self.target = sim.target.settings.me
        sim.net.down.add(self.target)
        self.retained = self.write(12)
        self.assertEqual(len(self.retained), 12)
        self.assertEqual(self.log_epochs(), {1})
        for step in (ACCEPT, SEND, RETIRE):
            sim.keys.rotate(step)

    def write(self, count: int) -> list[int]:
        """``count`` writes acknowledged by the source edge (logged, not applied)."""
        sim = self.sim
        for _ in range(count):
            sim._write()
        sim.clock.advance(0.001)
        self.assertEqual(sim.outstanding, 0)
        return sim.source.log_store.retained(GROUP)

    def log_epochs(self) -> set[int]:
        store = self.sim.source.log_store
        return {stored_entry(store.get(GROUP, s))[0].key_epoch for s in store.retained(GROUP)}

    def test_the_retired_epoch_is_held_and_what_is_sent_is_resealed(self):
        sim, seal = self.sim, self.sim.source.seal
        self.assertEqual(sim.keys.epochs_of(sim.source.settings.me)["groups"], {str(GROUP): [2]})
        self.assertEqual(seal.ring.epochs()["held"], {str(GROUP): [1]})
        self.assertEqual(seal.ring.epochs()["groups"], {str(GROUP): [2]})
        self.assertEqual(sim.source.log_store.epochs, {(GROUP, 1): 12})
        # nothing is re-sealed before it goes out again: a rotation alone costs nothing
        self.assertEqual(seal.counts["resealed"], 0)
        sim.clock.advance(0.5)          # the retransmission timer resends (the oldest first)
        resent = seal.counts["resealed"]
        self.assertGreaterEqual(resent, 1)
        # what went out again is under epoch 2, what did not is as logged; the log keeps
        # the originals
        held = [epochs_of(item.datagrams) for item in sim.source.sender.outstanding.values()]
        self.assertEqual(len(held), 12)
        self.assertEqual((held.count({2}), held.count({1})), (resent, 12 - resent))
        self.assertEqual(self.log_epochs(), {1})

    def test_resumed_every_retained_entry_arrives_and_the_epoch_is_released(self):
        sim = self.sim
        sim.net.down.discard(self.target)
        sim.run(10 + 12 + 20)                 # the retained ones first, then 20 more
        sim.assert_equal()
        receiver = sim.target.target_side.receivers[GROUP]
        self.assertEqual((receiver.applied, sim.checker.prefix(GROUP)), (42, 42))
        drops = sim.drops()
        for reason in ("e2e_unknown_key", "e2e_retired_key", "e2e_bad_tag"):
            self.assertEqual(drops.get(reason, 0), 0, reason)
        self.assertGreaterEqual(sim.source.seal.counts["resealed"], 12)
        self.assertEqual(sim.source.seal.ring.held, {})
        self.assertEqual(sim.source.log_store.epochs, {})
        self.assertFalse(any(row.whole for row in sim.source.pairs))
        self.assertEqual(sim.source.controls.counters["failure_suspends"], 0)

    def test_failure_suspend_meanwhile_reads_the_held_entries_back_not_the_whole_volume(self):
        sim = self.sim
        store, seal = sim.source.log_store, sim.source.seal
        expected: dict[int, DifferentialBitmap] = {}
        for sequence in store.retained(GROUP):                 # what the log holds, opened
            header, area = stored_entry(store.get(GROUP, sequence))
            command = parse_command_area(seal.open_stored(header, area))
            bitmap = expected.setdefault(header.target_lun, DifferentialBitmap(VOLUME, TRACK))
            bitmap.mark_extents(np.array([command.parsed["lba"]], np.uint64),
                                np.array([command.parsed["transfer_length"]], np.uint64), 512)
        sim.source.controls.group_failed(GROUP, "the test gives up")
        rows = {row.entry.target_lun: row for row in sim.source.pairs
                if row.entry.group == GROUP}
        self.assertFalse(any(row.whole for row in rows.values()))
        self.assertEqual(sim.source.controls.counters["entries_to_bitmap"], 12)
        for lun, bitmap in expected.items():
            got = rows[lun].bitmap_727(VOLUME, TRACK)
            self.assertEqual((got.popcount(), got.serialize()),
                             (bitmap.popcount(), bitmap.serialize()), lun)
            self.assertLess(got.popcount(), got.track_count)
        # the entries under epoch 1 are gone from the log: the epoch with them
        self.assertNotIn((GROUP, 1), store.epochs)
        self.assertEqual(seal.ring.held, {})

    def test_a_datagram_from_the_wire_under_the_held_epoch_is_refused_and_counted(self):
        sim = self.sim
        held = sim.source.seal.ring.held[GROUP][1]
        old = KeyRing()
        old.add_group(GROUP, Key(1, held.material, send=True))    # an attacker's copy
        wrok, = GroupSeal(old).datagrams(
            EntryType.WROK, response_area(0, 0, 0, 0, ScsiResult()), 8000, group_id=GROUP,
            sequence=self.retained[-1], source_wwn=SOURCE_WWN, target_wwn=TARGET_WWN,
            flags=int(EntryFlag.CUMULATIVE))
        self.assertEqual(LogHeader.parse(wrok, fast=True).key_epoch, 1)
        core = sim.cores[0].me
        hop = sim.net.endpoints[core].hop
        sim.net.inject(core, hop.seal(wrok, sim.source.settings.me), sim.source.settings.me)
        sim.clock.advance(0.01)
        self.assertEqual(sim.source.drops.by_reason.get("e2e_retired_key"), 1)
        self.assertEqual(sim.source.log_store.retained(GROUP), self.retained)   # not acked
        self.assertEqual(sorted(sim.source.seal.ring.held[GROUP]), [1])

    def test_a_new_send_epoch_alone_reseals_nothing_already_sent(self):
        sim = SimRcn(52, model=FIXED, batching=False)
        sim.run(5)
        sim.net.down.add(sim.target.settings.me)
        for _ in range(4):
            sim._write()
        sim.clock.advance(0.001)
        sim.keys.rotate(ACCEPT)
        self.assertEqual(sim.source.seal.counts["resealed"], 0)      # epoch 1 still sends
        sim.keys.rotate(SEND)
        self.assertEqual(sim.source.seal.counts["resealed"], 0)      # not until resent
        self.assertEqual(sim.source.seal.ring.held, {})               # 1 is still accepted
        sim.net.down.discard(sim.target.settings.me)
        sim.run(5 + 4)
        sim.assert_equal()
        # they went out once, under epoch 1, which the target still accepts: nothing to
        # re-seal (a rotation re-seals only what is sent after it)
        self.assertEqual(sim.source.seal.counts["resealed"], 0)
        self.assertEqual(sim.source.sender.counters["retransmits"], 0)


class GroupSealHeldTests(TestCase):
    """GroupSeal alone: what a held epoch opens, what it refuses, when it goes."""

    def setUp(self):
        self.ring = key_ring(groups=[GROUP])
        self.seal = GroupSeal(self.ring)
        self.uses = {}
        self.seal.track(self.uses)
        self.fields = dict(group_id=GROUP, sequence=3, io_time_ns=9, target_wwn=TARGET_WWN,
                           source_wwn=SOURCE_WWN, ttl=5)
        self.area = command_area(1, 2, 3, 0, build_write16_cdb(0, 24), bytes(range(256)) * 48)
        self.old = self.seal.datagrams(EntryType.WR, self.area, 4000, **self.fields)
        self.header = LogHeader.parse(self.old[0], fast=True)
        self.body = b"".join(d[88:] for d in self.old)

    def rotated(self) -> KeyRing:
        ring = KeyRing()
        ring.add_group(GROUP, new_key(2))
        return ring

    def test_an_epoch_the_log_no_longer_uses_is_not_held(self):
        self.seal.set_ring(self.rotated())
        self.assertEqual(self.seal.ring.held, {})
        with self.assertRaises(SealRefused) as caught:
            self.seal.open_stored(self.header, self.body)
        self.assertEqual(caught.exception.reason, "e2e_unknown_key")

    def test_held_opens_the_log_only_and_reseal_moves_it_to_the_send_epoch(self):
        self.uses[(GROUP, 1)] = 1
        self.seal.set_ring(self.rotated())
        self.assertEqual(self.seal.open_stored(self.header, self.body), self.area)
        with self.assertRaises(SealRefused) as caught:
            self.seal.open(self.header, self.body)
        self.assertEqual(caught.exception.reason, "e2e_retired_key")
        fresh = self.seal.reseal(self.old)
        self.assertEqual(len(fresh), len(self.old))                # the same segmentation
        self.assertEqual([len(d) for d in fresh], [len(d) for d in self.old])
        header = LogHeader.parse(fresh[0], fast=True)
        self.assertEqual((header.key_epoch, header.sequence, header.ttl), (2, 3, 5))
        self.assertNotEqual(fresh[0][88:100], self.old[0][88:100])  # a fresh nonce
        for datagram in fresh:                                      # CRC as build_entry's
            h = LogHeader.parse(datagram, fast=True)
            fields = {k: getattr(h, k) for k in (
                "flags", "group_id", "ttl", "seal", "sequence", "io_time_ns", "target_wwn",
                "target_lun", "source_wwn", "source_lun", "segment_index", "segment_count",
                "segment_offset", "total_length", "key_epoch")}
            self.assertEqual(build_entry(EntryType.WR, datagram[88:], **fields), datagram)
        self.assertEqual(self.seal.open(header, b"".join(d[88:] for d in fresh)), self.area)
        self.assertIsNone(self.seal.reseal(fresh))                  # already current
        self.assertEqual(self.seal.counts["resealed"], 1)

    def test_release_saves_first_and_only_when_unused(self):
        self.uses[(GROUP, 1)] = 1
        saved = []
        self.seal.on_held = lambda ring: saved.append((dict(ring.held), dict(self.seal.ring.held)))
        self.seal.set_ring(self.rotated())
        self.assertFalse(self.seal.release(GROUP, 1))               # still used
        del self.uses[(GROUP, 1)]
        self.assertTrue(self.seal.release(GROUP, 1))
        # the file was written without it while the seal still held it
        old = self.ring.groups[GROUP][1]
        self.assertEqual(saved, [({}, {GROUP: {1: Key(1, old.material, send=False)}})])
        self.assertEqual(self.seal.ring.held, {})
        self.assertFalse(self.seal.release(GROUP, 1))

    def test_a_held_epoch_from_the_key_file_stays_until_the_log_is_known(self):
        ring = self.rotated()
        ring.add_held(GROUP, self.ring.groups[GROUP][1])
        seal = GroupSeal(ring)                      # at start: before the log is read
        self.assertEqual(sorted(seal.ring.held[GROUP]), [1])
        self.assertEqual(seal.release_unused(), 0)  # no log tracked: nothing is known
        uses = {(GROUP, 1): 2}
        seal.track(uses)
        self.assertEqual(seal.release_unused(), 0)
        uses.clear()
        self.assertEqual(seal.release_unused(), 1)
        self.assertEqual(seal.ring.held, {})


class HeldAcrossRestartTests(TestCase):
    """The edge daemon (a durable log, a key file): held across a restart, released once
    the retained entries are acknowledged."""

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.keys = os.path.abspath(self.mktemp())
        log = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        self.me, self.peer = Address.parse(log), Address("127.0.0.1", 47902)
        self.ring = key_ring(links=[(self.me, self.peer)], groups=[7])
        self.ring.save(self.keys)
        self.doc = {"edge": {"id": "edgeA", "log": log, "data_dir": self.data},
                    "log": {"mode": "durable"}, "seal": {"keys": self.keys},
                    "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B,
                              "target_lun": 0, "group": 7}],
                    "route": [{"source_wwn": A, "target_wwn": B,
                               "path": [log, str(self.peer)]}]}

    def start(self):
        top, edge = make_service(parse_config(self.doc), reactor)
        edge.device.sender.transmit = lambda data, address: None
        old = os.umask(0o077)
        try:
            top.privilegedStartService()
            top.startService()
        finally:
            os.umask(old)
        return top, edge

    @inlineCallbacks
    def test_a_restart_keeps_the_epoch_held_and_the_acknowledgement_releases_it(self):
        top, edge = self.start()
        stopped = False
        try:
            pair = edge.device.settings.pairs[0]
            for lba in (0, 8):
                result = yield edge.device.source_side.write(pair, build_write16_cdb(lba, 8),
                                                             bytes(4096))
                self.assertTrue(result.good)
            rotated = KeyRing(links=self.ring.links)
            rotated.add_group(7, new_key(2))
            edge.apply_snapshot(2, {"pair": self.doc["pair"], "route": self.doc["route"],
                                    "keys": rotated.to_snapshot()}, persist=False)
            on_file = KeyRing.load(self.keys)
            self.assertEqual((sorted(on_file.groups[7]), sorted(on_file.held[7])), ([2], [1]))
            self.assertEqual(edge.status()["seal"]["epochs"]["held"], {"7": [1]})
            # re-sealed as they go out again (the sender's timer), not by the rotation
            self.assertEqual(edge.status()["seal"]["end_to_end"]["resealed"], 0)
            self.assertIn(b"rcn_seal_resealed_total", edge.metrics.render())
            yield top.stopService()
            stopped = True
        finally:
            if not stopped:
                yield top.stopService()
        top, edge = self.start()
        self.addCleanup(top.stopService)
        seal = edge.device.seal
        self.assertEqual(sorted(seal.ring.held[7]), [1])                # from the key file
        self.assertEqual(edge.log_store.epochs, {(7, 1): 2})           # from the log itself
        self.assertEqual(seal.counts["resealed"], 2)                    # the replay's
        sending = [item.datagrams for item in edge.device.sender.outstanding.values()]
        self.assertEqual(len(sending), 2)
        self.assertEqual(set().union(*map(epochs_of, sending)), {2})
        stored = edge.log_store.get(7, 1)
        self.assertEqual(epochs_of(split_datagrams(stored)), {1})      # the log's original
        wrok, = GroupSeal(KeyRing(groups={7: dict(seal.ring.groups[7])})).datagrams(
            EntryType.WROK, response_area(0, 0, 0, 0, ScsiResult()), 65000, group_id=7,
            sequence=2, source_wwn=0x500A098000000001, target_wwn=0x500A098000000002,
            flags=int(EntryFlag.CUMULATIVE))
        peer = HopSeal(self.peer, self.ring, Drops())
        edge.udp.datagramReceived(peer.seal(wrok, self.me), self.peer.pair)
        self.assertEqual(edge.log_store.retained(7), [])
        self.assertEqual(seal.ring.held, {})
        on_file = KeyRing.load(self.keys)
        self.assertEqual((sorted(on_file.groups[7]), on_file.held), ([2], {}))
        self.assertNotIn("held", edge.status()["seal"]["epochs"])


class SaveBeforeSwitchTests(TestCase):
    def test_keys_that_cannot_be_saved_are_not_put_in_force(self):
        me, peer = Address("127.0.0.1", 47911), Address("127.0.0.1", 47912)
        ring = key_ring(links=[(me, peer)], groups=[7])
        keys = os.path.abspath(self.mktemp())
        ring.save(keys)
        doc = {"edge": {"id": "edgeA", "log": str(me),
                        "data_dir": os.path.abspath(self.mktemp())},
               "log": {"mode": "memory"}, "seal": {"keys": keys},
               "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B, "target_lun": 0,
                         "group": 7}],
               "route": [{"source_wwn": A, "target_wwn": B, "path": [str(me), str(peer)]}]}
        edge = Edge(parse_config(doc), reactor)
        self.addCleanup(edge.close)
        rotated = KeyRing()
        rotated.add_link(me, peer, new_key(2))
        rotated.add_group(7, new_key(2))

        def full(self, path):
            raise OSError(28, "No space left on device")
        self.patch(KeyRing, "save", full)
        with self.assertRaises(OSError):
            edge.apply_snapshot(3, {"pair": doc["pair"], "route": doc["route"],
                                    "keys": rotated.to_snapshot()}, persist=False)
        # still the keys the file holds: a crash now restarts with what was running
        self.assertEqual(edge.device.seal.ring.group_send_key(7).epoch, 1)
        self.assertEqual(edge.udp.hop.ring.link_send_key(me, peer).epoch, 1)
        self.assertEqual(KeyRing.load(keys), ring)


class LogEpochCountTests(TestCase):
    """``LogStore.epochs``: retained (and waiting) entries per (group, key epoch)."""

    def entry(self, sequence: int, epoch: int, size: int = 600) -> bytes:
        sealed = {"seal": 1, "key_epoch": epoch} if epoch else {}
        return build_entry(EntryType.WR, bytes(size), group_id=7, sequence=sequence, **sealed)

    def test_counts_follow_appends_waits_deletes_and_failed_waits(self):
        store = LogStore(None, mode="memory", group_quota_bytes=1000)
        store.open()
        unused = []
        store.on_unused = lambda group, epoch: unused.append((group, epoch))

        def append(epoch):
            return store.append(7, store.next_sequence(7), self.entry(0, epoch))
        append(1)
        waiting = append(2)                        # over the quota: waits, counted already
        self.assertNoResult(waiting)
        self.assertEqual(store.epochs, {(7, 1): 1, (7, 2): 1})
        store.delete(7, 1)                         # the epoch-2 entry is admitted
        self.successResultOf(waiting)
        self.assertEqual((store.epochs, unused), ({(7, 2): 1}, [(7, 1)]))
        late = append(2)
        self.assertEqual(store.epochs, {(7, 2): 2})
        store.close()                              # the waiting append fails
        self.failureResultOf(late)
        self.assertEqual((store.epochs, unused), ({(7, 2): 1}, [(7, 1)]))

    def test_clear_entries_and_other_bytes_count_under_no_epoch(self):
        store = LogStore(None, mode="memory")
        store.open()
        store.append(7, store.next_sequence(7), self.entry(1, 0))
        store.append(7, store.next_sequence(7), b"not a log entry")
        self.assertEqual(store.epochs, {})
