"""rcn.logxfer.seal: the hop layer (checks and their order, replay windows, restarts,
per-direction keys, rotation) and the end-to-end group seal (what its associated data
covers, what a relay may change, segments, retired epochs)."""

from __future__ import annotations

import os
import stat

from twisted.internet import task
from twisted.trial.unittest import TestCase

from datapath.frames.hop import HOP_HEADER, HOP_HEADER_SIZE, build_hop_header, hop_covered
from datapath.frames.logentry import (HEADER_SIZE, LOG_HEADER, SEALED_OVERHEAD, EntryFlag, EntryType, Seal,
                                      build_entry, parse_datagram)
from rcn.logxfer import seal as seal_module
from rcn.logxfer.hopstate import MAX_STATE_BYTES, HopStateError, HopStateFile, state_path
from rcn.logxfer.hopstate import dump as dump_state
from rcn.logxfer.hopstate import parse as parse_state
from rcn.logxfer.keys import Key, KeyFileError, KeyRing, new_key
from rcn.logxfer.protocol import Drops
from rcn.logxfer.reassembly import SegmentAssembler
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import (HOP_DROP_REASONS, REPLAY_WINDOW, GroupSeal, HopSeal,
                              ReplayWindow, SealRefused, hop_at_start)
from tests.support import key_ring

A, B, C = Address("10.0.0.1", 47001), Address("10.0.0.2", 47001), Address("10.0.0.3", 47001)
ENTRY = build_entry(EntryType.WR, b"customer data", group_id=7, sequence=1)
_COUNTER_AT = HOP_HEADER.offsets["counter"]
_EPOCH_AT = HOP_HEADER.offsets["key_epoch"]


def hop(me: Address, ring: KeyRing, start: int = 1000) -> HopSeal:
    return HopSeal(me, ring, Drops(), clock_ns=lambda: start)


def counter_of(datagram: bytes) -> int:
    return int.from_bytes(datagram[_COUNTER_AT:_COUNTER_AT + 8], "big")


def dropped(seal: HopSeal) -> dict[str, int]:
    """The drop counters that moved (every reason is registered at 0)."""
    return {k: v for k, v in seal.drops.by_reason.items() if v}


class ReplayWindowTests(TestCase):
    def see(self, window: ReplayWindow, counter: int) -> bool:
        fresh = window.fresh(counter)
        if fresh:
            window.mark(counter)
        return fresh

    def test_in_order_counters_are_fresh_once(self):
        w = ReplayWindow(64)
        self.assertEqual([self.see(w, c) for c in range(10, 20)], [True] * 10)
        self.assertEqual([self.see(w, c) for c in range(10, 20)], [False] * 10)

    def test_reordered_within_the_window_are_fresh(self):
        w = ReplayWindow(64)
        order = [5, 1, 3, 2, 60, 4, 30, 10]
        self.assertEqual([self.see(w, c) for c in order], [True] * len(order))
        self.assertEqual(w.top, 60)
        self.assertEqual([self.see(w, c) for c in order], [False] * len(order))
        self.assertTrue(self.see(w, 59))

    def test_older_than_the_window_is_refused_even_unseen(self):
        w = ReplayWindow(64)
        self.see(w, 100)
        self.assertTrue(w.fresh(100 - 63))
        self.assertFalse(w.fresh(100 - 64))
        self.see(w, 1000)                             # a jump past the whole window
        self.assertFalse(w.fresh(999 - 63))
        self.assertTrue(self.see(w, 999))
        self.assertFalse(self.see(w, 100))

    def test_fresh_changes_nothing(self):
        w = ReplayWindow(64)
        self.assertTrue(w.fresh(7))
        self.assertTrue(w.fresh(7))
        self.assertEqual((w.top, w.seen), (-1, 0))


class HopSealTests(TestCase):
    def setUp(self):
        self.ring = key_ring(links=[(A, B)])
        self.a, self.b = hop(A, self.ring, 1000), hop(B, self.ring, 5000)

    def test_sealed_datagrams_open_at_the_neighbour(self):
        sealed = self.a.seal(ENTRY, B)
        self.assertEqual(sealed[HOP_HEADER_SIZE:HOP_HEADER_SIZE + len(ENTRY)], ENTRY)  # in clear
        self.assertEqual(self.b.open(sealed, A), ENTRY)
        self.assertEqual((self.a.counts["sealed"], self.b.counts["opened"]), (1, 1))
        self.assertEqual(dropped(self.b), {})
        self.assertEqual(set(HOP_DROP_REASONS) - set(self.b.drops.by_reason), set())

    def test_a_stranger_is_refused_before_anything_else(self):
        # even a datagram a stranger sealed correctly under a key of its own
        stranger = hop(C, key_ring(links=[(C, B)]))
        for data in (stranger.seal(ENTRY, B), ENTRY, b"", b"RCNH"):
            self.assertIsNone(self.b.open(data, C))
        self.assertEqual(dropped(self.b), {"not_neighbour": 4})

    def test_a_bare_datagram_from_a_neighbour_is_unsealed(self):
        self.assertIsNone(self.b.open(ENTRY, A))
        self.assertIsNone(self.b.open(b"", A))
        self.assertEqual(dropped(self.b), {"unsealed": 2})

    def test_a_short_or_unknown_envelope_is_malformed(self):
        sealed = self.a.seal(ENTRY, B)
        version = HOP_HEADER.offsets["version"]
        suite = HOP_HEADER.offsets["suite"]
        for data in (sealed[:HOP_HEADER_SIZE + 15], build_hop_header(1, 5),
                     sealed[:version] + b"\x02" + sealed[version + 1:],
                     sealed[:suite] + b"\x09" + sealed[suite + 1:]):
            self.assertIsNone(self.b.open(data, A))
        self.assertEqual(dropped(self.b), {"malformed": 4})

    def test_an_epoch_not_held_is_unknown_key_before_the_tag_is_checked(self):
        sealed = bytearray(self.a.seal(ENTRY, B))
        sealed[_EPOCH_AT:_EPOCH_AT + 4] = (9).to_bytes(4, "big")
        self.assertIsNone(self.b.open(bytes(sealed), A))
        self.assertEqual(dropped(self.b), {"unknown_key": 1})

    def test_anything_changed_is_a_bad_tag(self):
        sealed = self.a.seal(ENTRY, B)
        changed = [sealed[:HOP_HEADER_SIZE + 20] + b"\x01" + sealed[HOP_HEADER_SIZE + 21:],
                   sealed[:-1] + bytes([sealed[-1] ^ 1]),
                   sealed[:-16] + bytes(16),
                   sealed[:HOP_HEADER_SIZE] + sealed[HOP_HEADER_SIZE + 1:]]
        counter = bytearray(sealed)
        counter[_COUNTER_AT + 7] ^= 0x40              # a fresh counter: the tag fails
        changed.append(bytes(counter))
        for data in changed:
            self.assertIsNone(self.b.open(data, A))
        self.assertEqual(dropped(self.b), {"bad_tag": len(changed)})
        self.assertEqual(self.b.open(sealed, A), ENTRY)   # the genuine one still opens

    def test_an_end_to_end_sealed_body_is_left_to_its_own_tag(self):
        # the hop tag covers such an entry's header only (hop_covered): a body altered on a
        # link passes the hop and is refused where its group key's tag is checked
        groups = GroupSeal(key_ring(groups=[7]))
        [entry] = groups.datagrams(EntryType.WR, b"customer data" * 20, 8000, group_id=7,
                                   sequence=1)
        self.assertEqual(bytes(hop_covered(entry)), entry[:HEADER_SIZE])
        sealed = self.a.seal(entry, B)
        flipped = bytearray(sealed)
        flipped[HOP_HEADER_SIZE + HEADER_SIZE + 30] ^= 1
        opened = self.b.open(bytes(flipped), A)
        self.assertIsNotNone(opened)
        parsed = parse_datagram(bytes(opened))
        with self.assertRaises(SealRefused) as caught:
            groups.open(parsed.header, parsed.payload)
        self.assertEqual(caught.exception.reason, "e2e_bad_tag")
        # a header change -- the seal byte, the type, the sequence -- fails the hop tag
        seal_at, type_at = LOG_HEADER.offsets["seal"], LOG_HEADER.offsets["entry_type"]
        sequence_at = LOG_HEADER.offsets["sequence"]
        for at, value in ((seal_at, 0), (type_at, int(EntryType.BATCH)), (sequence_at + 7, 2)):
            changed = bytearray(self.a.seal(entry, B))
            changed[HOP_HEADER_SIZE + at] = value
            self.assertIsNone(self.b.open(bytes(changed), A))
        self.assertEqual(dropped(self.b), {"bad_tag": 3})

    def test_a_clear_entry_or_a_batch_is_covered_whole(self):
        batch = build_entry(EntryType.BATCH, b"\x00" * 8 + ENTRY)
        for inner in (ENTRY, batch):
            self.assertEqual(hop_covered(inner), inner)
            changed = bytearray(self.a.seal(inner, B))
            changed[HOP_HEADER_SIZE + HEADER_SIZE + 3] ^= 1
            self.assertIsNone(self.b.open(bytes(changed), A))
        self.assertEqual(dropped(self.b), {"bad_tag": 2})

    def test_a_second_copy_is_replayed(self):
        sealed = self.a.seal(ENTRY, B)
        self.assertEqual(self.b.open(sealed, A), ENTRY)
        self.assertIsNone(self.b.open(sealed, A))
        self.assertEqual(dropped(self.b), {"replayed": 1})

    def test_the_tag_is_checked_before_the_window(self):
        # a forgery reusing a counter already seen is a bad tag, not a replay (DESIGN.md 9)
        sealed = self.a.seal(ENTRY, B)
        self.assertEqual(self.b.open(sealed, A), ENTRY)
        forged = sealed[:-1] + bytes([sealed[-1] ^ 1])
        self.assertIsNone(self.b.open(forged, A))
        self.assertEqual(dropped(self.b), {"bad_tag": 1})

    def test_a_forgery_does_not_move_the_window(self):
        # a forged datagram with a counter far ahead must not push the genuine ones out
        forged = bytearray(self.a.seal(ENTRY, B))
        forged[_COUNTER_AT:_COUNTER_AT + 8] = (1 << 62).to_bytes(8, "big")
        genuine = self.a.seal(ENTRY, B)
        self.assertIsNone(self.b.open(bytes(forged), A))
        self.assertEqual(self.b.open(genuine, A), ENTRY)
        self.assertEqual(self.b.windows[(A, 1)].top, counter_of(genuine))
        self.assertEqual(dropped(self.b), {"bad_tag": 1})

    def test_reordered_within_the_window_open_older_than_it_do_not(self):
        sent = [self.a.seal(ENTRY, B) for _ in range(REPLAY_WINDOW + 10)]
        order = [sent[5], sent[0], sent[3], sent[1], sent[2], sent[4]]
        self.assertEqual([self.b.open(d, A) for d in order], [ENTRY] * 6)
        self.assertEqual(self.b.open(sent[-1], A), ENTRY)
        # sent[9] is exactly REPLAY_WINDOW behind the newest: out of the window
        self.assertIsNone(self.b.open(sent[9], A))
        self.assertEqual(self.b.open(sent[10], A), ENTRY)
        self.assertEqual(dropped(self.b), {"replayed": 1})

    def test_the_counter_rises_across_a_restart_and_the_old_run_is_refused(self):
        first = [self.a.seal(ENTRY, B) for _ in range(3)]
        self.assertEqual(self.b.open(first[0], A), ENTRY)
        # a restart one second later: a new HopSeal, the same keys
        again = hop(A, self.ring, 1000 + 10 ** 9)
        second = again.seal(ENTRY, B)
        self.assertGreater(counter_of(second), max(map(counter_of, first)))
        self.assertEqual(self.b.open(second, A), ENTRY)
        # the old run's datagrams: one already seen, two never delivered -- all refused
        self.assertEqual([self.b.open(d, A) for d in first], [None] * 3)
        self.assertEqual(dropped(self.b), {"replayed": 3})

    def test_each_direction_has_its_own_key(self):
        a_to_b = self.a.seal(ENTRY, B)
        # the same bytes presented to A as if B sent them
        self.assertIsNone(self.a.open(a_to_b, B))
        self.assertEqual(dropped(self.a), {"bad_tag": 1})
        b_to_a = self.b.seal(ENTRY, A)
        self.assertNotEqual(a_to_b[-16:], b_to_a[-16:])
        self.assertEqual(self.a.open(b_to_a, B), ENTRY)

    def test_another_links_key_is_a_bad_tag(self):
        ring = key_ring(links=[(A, B)])                  # the same link, another key
        forger = hop(A, ring, 10 ** 12)
        self.assertIsNone(self.b.open(forger.seal(ENTRY, B), A))
        self.assertEqual(dropped(self.b), {"bad_tag": 1})

    def test_no_link_key_to_send_with_is_counted(self):
        self.assertIsNone(self.a.seal(ENTRY, C))
        self.assertEqual(dropped(self.a), {"no_link_key": 1})
        self.assertEqual(self.a.counts["sealed"], 0)

    def test_rotation_accept_then_send_then_retire(self):
        old = self.ring.link_send_key(A, B)
        new = new_key(2, send=False)

        def ring(*keys: Key) -> KeyRing:
            r = KeyRing()
            for k in keys:
                r.add_link(A, B, k)
            return r
        # 1. every end accepts epoch 2; both still send epoch 1
        for end in (self.a, self.b):
            end.set_ring(ring(old, new))
        in_flight = self.a.seal(ENTRY, B)
        self.assertEqual(int.from_bytes(in_flight[_EPOCH_AT:_EPOCH_AT + 4], "big"), 1)
        # 2. A sends epoch 2 (B not told yet: it accepts it already)
        self.a.set_ring(ring(old, Key(2, new.material, True)))
        rotated = self.a.seal(ENTRY, B)
        self.assertEqual(int.from_bytes(rotated[_EPOCH_AT:_EPOCH_AT + 4], "big"), 2)
        self.assertEqual(self.b.open(rotated, A), ENTRY)
        self.assertEqual(self.b.open(in_flight, A), ENTRY)   # the overlap: epoch 1 still opens
        # 3. epoch 1 retired: what was sealed under it is refused from now on
        stale = hop(A, ring(old), 10 ** 15).seal(ENTRY, B)     # fresh counter, epoch 1
        self.b.set_ring(ring(Key(2, new.material, True)))
        self.assertIsNone(self.b.open(stale, A))
        self.assertEqual(self.b.open(self.a.seal(ENTRY, B), A), ENTRY)
        self.assertEqual(dropped(self.b), {"unknown_key": 1})


class _Saves:
    """A ``HopStateFile`` that counts its saves and can be made to fail."""

    def __init__(self, path: str):
        self.file = HopStateFile(path)
        self.path, self.saves, self.fail = path, 0, False

    def load(self):
        return self.file.load()

    def save(self, reserved, marks):
        if self.fail:
            raise OSError(28, "No space left on device")
        self.saves += 1
        self.file.save(reserved, marks)


class HopStateTests(TestCase):
    """Counters and replay windows across restarts (``rcn.logxfer.hopstate``)."""

    def setUp(self):
        self.ring = key_ring(links=[(A, B)])
        self.clock = task.Clock()

    def stated(self, me: Address, path: str, start: int, ring: KeyRing | None = None,
               started: bool = True) -> HopSeal:
        seal = HopSeal(me, ring or self.ring, Drops(), clock_ns=lambda: start,
                       state=HopStateFile(path), reactor=self.clock)
        if started:
            seal.start()
        return seal

    def test_a_restart_with_the_clock_stepped_back_repeats_no_counter(self):
        self.patch(seal_module, "COUNTER_BLOCK", 4)      # a new block every 4 datagrams
        path, receiver = self.mktemp(), hop(B, self.ring)
        sender, used = self.stated(A, path, 10 ** 18), []
        for _ in range(10):
            datagram = sender.seal(ENTRY, B)
            used.append(counter_of(datagram))
            # no counter is used before a reservation at least as high is on disk
            self.assertGreaterEqual(HopStateFile(path).load()[0], used[-1])
        self.assertEqual(len(set(used)), 10)
        # a crash, then a restart an hour behind the old run's clock: the counters go on
        # above everything sent, and the receiver takes them (no lock-out as 'replayed')
        for d in (sender.seal(ENTRY, B) for _ in range(2)):
            self.assertEqual(receiver.open(d, A), ENTRY)
        again = self.stated(A, path, 10 ** 18 - 3600 * 10 ** 9)
        after = [counter_of(again.seal(ENTRY, B)) for _ in range(3)]
        self.assertGreater(min(after), max(used) + 2)
        self.assertEqual(receiver.open(again.seal(ENTRY, B), A), ENTRY)
        self.assertEqual(dropped(receiver), {})

    def test_a_clock_ahead_of_the_reservation_starts_the_counter(self):
        path = self.mktemp()
        self.stated(A, path, 5000).seal(ENTRY, B)
        later = self.stated(A, path, 10 ** 15)
        self.assertEqual(counter_of(later.seal(ENTRY, B)), 10 ** 15 + 1)

    def test_an_unwritable_state_file_fails_the_start_and_seals_nothing(self):
        path = os.path.join(self.mktemp(), "missing-directory", "a.keys.hop")
        sender = self.stated(A, path, 1000, started=False)
        self.assertRaises(OSError, sender.start)
        self.assertIsNone(sender.seal(ENTRY, B))
        self.assertEqual((dropped(sender), sender.counter, sender.counts["sealed"]),
                         ({"no_counter": 1}, 1000, 0))

    def test_a_receiver_restart_refuses_what_it_opened_before(self):
        path, sender = self.mktemp(), hop(A, self.ring, 10 ** 12)
        receiver = self.stated(B, path, 1)
        before = [sender.seal(ENTRY, B) for _ in range(3)]
        for d in before:
            self.assertEqual(receiver.open(d, A), ENTRY)
        self.clock.advance(seal_module.SAVE_INTERVAL)           # saved
        restarted = self.stated(B, path, 1)                     # after a crash
        self.assertEqual([restarted.open(d, A) for d in before], [None] * 3)
        self.assertEqual(dropped(restarted), {"replayed": 3})
        self.assertEqual(restarted.open(sender.seal(ENTRY, B), A), ENTRY)

    def test_a_clean_stop_saves_what_opened_since_the_last_save(self):
        path, sender = self.mktemp(), hop(A, self.ring, 10 ** 12)
        receiver = self.stated(B, path, 1)
        late = sender.seal(ENTRY, B)
        self.assertEqual(receiver.open(late, A), ENTRY)
        receiver.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])      # stop ended the saves
        self.assertIsNone(self.stated(B, path, 1).open(late, A))

    def test_after_a_crash_what_opened_since_the_last_save_opens_once_more(self):
        # the residual risk the module doc and the README name: the hop layer takes such a
        # datagram once more; the end-to-end sequence numbers refuse it
        path, sender = self.mktemp(), hop(A, self.ring, 10 ** 12)
        receiver = self.stated(B, path, 1)
        saved = sender.seal(ENTRY, B)
        self.assertEqual(receiver.open(saved, A), ENTRY)
        self.clock.advance(seal_module.SAVE_INTERVAL)
        unsaved = sender.seal(ENTRY, B)
        self.assertEqual(receiver.open(unsaved, A), ENTRY)
        restarted = self.stated(B, path, 1)                     # a crash: no stop
        self.assertEqual((restarted.open(saved, A), restarted.open(unsaved, A)), (None, ENTRY))
        self.assertIsNone(restarted.open(unsaved, A))

    def test_windows_are_saved_at_most_every_interval_and_only_when_moved(self):
        state, sender = _Saves(self.mktemp()), hop(A, self.ring, 10 ** 12)
        receiver = HopSeal(B, self.ring, Drops(), state=state, reactor=self.clock)
        receiver.start()
        self.assertEqual(state.saves, 1)                        # start: the reservation
        for _ in range(100):
            receiver.open(sender.seal(ENTRY, B), A)
        self.assertEqual(state.saves, 1)                        # nothing per datagram
        self.clock.advance(seal_module.SAVE_INTERVAL)
        self.assertEqual(state.saves, 2)
        self.clock.advance(seal_module.SAVE_INTERVAL * 5)       # nothing moved
        self.assertEqual(state.saves, 2)
        receiver.open(sender.seal(ENTRY, B), A)
        state.fail = True                                        # a failed save is retried
        self.clock.advance(seal_module.SAVE_INTERVAL)
        state.fail = False
        self.clock.advance(seal_module.SAVE_INTERVAL)
        self.assertEqual(state.saves, 3)

    def test_each_epoch_has_its_own_window(self):
        second = new_key(2)
        ring = key_ring(links=[(A, B)])
        ring.add_link(A, B, second)
        first_only = KeyRing()
        first_only.add_link(A, B, ring.link_keys(A, B)[1])
        receiver = hop(B, ring)
        under_1 = hop(A, first_only, 10 ** 15).seal(ENTRY, B)
        under_2 = hop(A, ring, 10 ** 12).seal(ENTRY, B)        # its counter is lower
        self.assertEqual(int.from_bytes(under_2[_EPOCH_AT:_EPOCH_AT + 4], "big"), 2)
        self.assertLess(counter_of(under_2), counter_of(under_1))
        self.assertEqual((receiver.open(under_1, A), receiver.open(under_2, A)), (ENTRY, ENTRY))
        self.assertEqual((receiver.open(under_1, A), receiver.open(under_2, A)), (None, None))
        self.assertEqual(dropped(receiver), {"replayed": 2})
        self.assertEqual({name: w.top for name, w in receiver.windows.items()},
                         {(A, 1): counter_of(under_1), (A, 2): counter_of(under_2)})

    def test_windows_of_retired_epochs_are_dropped_and_not_saved(self):
        path, ring = self.mktemp(), key_ring(links=[(A, B)])
        ring.add_link(A, B, new_key(2))
        receiver = self.stated(B, path, 1, ring)
        receiver.open(hop(A, ring, 10 ** 12).seal(ENTRY, B), A)         # epoch 2
        old = KeyRing()
        old.add_link(A, B, ring.link_keys(A, B)[1])
        receiver.open(hop(A, old, 10 ** 12).seal(ENTRY, B), A)          # epoch 1
        self.assertEqual(set(receiver.windows), {(A, 1), (A, 2)})
        receiver.stop()
        # a restart holding epoch 2 only (the rotation's overlap ended while it was down)
        retired = KeyRing()
        retired.add_link(A, B, ring.link_keys(A, B)[2])
        restarted = self.stated(B, path, 1, retired)
        self.assertEqual(set(restarted.windows), {(A, 2)})
        # new keys at run time: epoch 3 only
        rotated = KeyRing()
        rotated.add_link(A, B, new_key(3))
        restarted.set_ring(rotated)
        self.assertEqual(restarted.windows, {})
        restarted.stop()
        self.assertEqual(HopStateFile(path).load()[1], {})

    def test_a_bad_state_file_refuses_the_start_naming_file_and_line(self):
        # refused, not ignored: without the reservation a restart behind the clock would
        # reuse GCM nonces; the message says the way back (remove it, or new link keys)
        path = self.mktemp()
        for text, says in (
                ("reserved 5\nseen 10.0.0.1:47001 1 99999999999999999999999\n", "line 2"),
                ("reserved 12345678x\n", "line 1"),
                ("reserved 5\nreserved 6\n", "a second 'reserved'"),
                ("seen nowhere 1 5\n", "not an address"),
                ("seen 10.0.0.1:47001 0 5\n", "the key epoch is outside"),
                ("reserved 5\n\n# ok\nbogus 1 2 3\n", "line 4"),
                ("reserved 7\xe9\n", "not ASCII"),
                ("reserved 1\n" + "#" * MAX_STATE_BYTES, "larger than")):
            with open(path, "w", encoding="latin-1") as f:
                f.write(text)
            os.chmod(path, 0o600)
            with self.assertRaises(HopStateError) as caught:
                self.stated(B, path, 1, started=False)
            message = str(caught.exception)
            self.assertIn(path, message)
            self.assertIn(says, message)
            self.assertNotIn("99999", message)
            self.assertNotIn("12345678", message)
        self.assertTrue(issubclass(HopStateError, KeyFileError))   # a usage error at start

    def test_a_state_file_others_may_write_or_not_a_regular_file_is_refused(self):
        path = self.mktemp()
        self.stated(B, path, 1).stop()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        os.chmod(path, 0o620)
        with self.assertRaises(HopStateError) as caught:
            self.stated(B, path, 1, started=False)
        self.assertIn("chmod 600", str(caught.exception))
        fifo = self.mktemp()
        os.mkfifo(fifo, 0o600)                      # refused at once, not waited on
        with self.assertRaises(HopStateError) as caught:
            self.stated(B, fifo, 1, started=False)
        self.assertIn("not a regular file", str(caught.exception))

    def test_the_state_file_round_trips(self):
        marks = {(A, 1): 10, (Address("::1", 47001), 4294967295): (1 << 64) - 1}
        self.assertEqual(parse_state(dump_state(1 << 63, marks), "x"), (1 << 63, marks))
        self.assertEqual(parse_state("", "x"), (0, {}))
        self.assertEqual(HopStateFile(self.mktemp()).load(), (0, {}))     # none yet

    def test_where_a_daemon_keeps_its_hop_state(self):
        # an edge in its data directory (its user can write it), a core beside its key file
        self.assertEqual(state_path("k/core1.keys", data_dir=None), "k/core1.keys.hop")
        self.assertEqual(state_path("k/edgeA.keys", data_dir="edgeA"),
                         os.path.join("edgeA", "keys.hop"))
        self.assertIsNone(state_path(None))
        path = self.mktemp()
        self.assertEqual(hop_at_start(B, self.ring, Drops(), path, self.clock).state.path, path)
        self.assertIsNone(hop_at_start(B, self.ring, Drops(), None, self.clock).state)


class _Entries:
    """Entries sealed by one edge's GroupSeal, opened by the other's."""

    FIELDS = dict(group_id=7, sequence=42, io_time_ns=1234, target_wwn=0x500A098000000002,
                  target_lun=3, source_wwn=0x500A098000000001, source_lun=1, ttl=16)

    def setUp(self):
        self.ring = key_ring(groups=[7])
        self.source, self.target = GroupSeal(self.ring), GroupSeal(self.ring)

    def sealed(self, body: bytes = b"W" * 100, entry_type=EntryType.WR, max_body=8000,
               **fields) -> list[bytes]:
        return self.source.datagrams(entry_type, body, max_body, **{**self.FIELDS, **fields})

    def open(self, datagram: bytes, seal: GroupSeal | None = None) -> bytes:
        entry = parse_datagram(datagram)
        self.assertTrue(entry.crc_ok)
        return (seal or self.target).open(entry.header, entry.payload)

    def refused(self, datagram: bytes, reason: str, seal: GroupSeal | None = None) -> None:
        with self.assertRaises(SealRefused) as caught:
            self.open(datagram, seal)
        self.assertEqual(caught.exception.reason, reason)


def rebuild(datagram: bytes, **changes) -> bytes:
    """The datagram with header fields changed and a good CRC (what a relay could send)."""
    entry = parse_datagram(datagram)
    fields = {k: v for k, v in entry.header._asdict().items()
              if k not in ("magic", "entry_type", "rio_length", "crc32c")}
    body = changes.pop("body", entry.payload)
    entry_type = changes.pop("entry_type", entry.header.entry_type)
    fields.update(changes)
    return build_entry(entry_type, body, **fields)


class GroupSealTests(_Entries, TestCase):
    def test_seal_then_open(self):
        body = b"the customer's block" * 10
        datagram, = self.sealed(body)
        header = parse_datagram(datagram).header
        self.assertEqual((header.seal, header.key_epoch), (Seal.AES_256_GCM, 1))
        self.assertEqual(header.total_length, len(body) + SEALED_OVERHEAD)
        self.assertNotIn(b"the customer's block", datagram)
        self.assertEqual(self.open(datagram), body)
        self.assertEqual((self.source.counts["sealed"], self.target.counts["opened"]), (1, 1))

    def test_every_sealable_type_opens(self):
        for entry_type in (EntryType.WR, EntryType.WROK, EntryType.CTRL, EntryType.CTRL_OK,
                           EntryType.NAK):
            datagram, = self.sealed(b"x" * 30, entry_type=entry_type)
            self.assertEqual(parse_datagram(datagram).header.seal, Seal.AES_256_GCM)
            self.assertEqual(self.open(datagram), b"x" * 30)

    def test_a_keepalive_is_not_sealed(self):
        datagram, = self.source.datagrams(EntryType.KEEPALIVE, b"probe", 8000)
        self.assertEqual(parse_datagram(datagram).header.seal, Seal.CLEAR)
        self.assertEqual(parse_datagram(datagram).payload, b"probe")

    def test_the_associated_data_covers_the_header(self):
        datagram, = self.sealed()
        body = parse_datagram(datagram).payload
        changes = {
            "group": dict(group_id=8), "sequence": dict(sequence=43),
            "io time": dict(io_time_ns=1), "target wwn": dict(target_wwn=0x500A098000000009),
            "target lun": dict(target_lun=4), "source wwn": dict(source_wwn=0x500A098000000009),
            "source lun": dict(source_lun=2), "type": dict(entry_type=EntryType.CTRL),
            "cumulative flag": dict(flags=int(EntryFlag.CUMULATIVE)),
            "reverse flag": dict(flags=int(EntryFlag.REVERSE)),
            "resent flag": dict(flags=int(EntryFlag.RESENT_ACK)),
            "epoch": dict(key_epoch=2),
            "body (the LBA)": dict(body=body[:20] + bytes([body[20] ^ 1]) + body[21:]),
            "nonce": dict(body=bytes([body[0] ^ 1]) + body[1:]),
            "tag": dict(body=body[:-1] + bytes([body[-1] ^ 1])),
        }
        # group 8 and epoch 2 hold the same key as group 7 epoch 1: only the associated
        # data can tell them apart
        key = self.ring.group_key(7, 1)
        self.ring.add_group(8, key)
        self.ring.add_group(7, Key(2, key.material, False))
        self.target.set_ring(self.ring)
        for what, change in changes.items():
            with self.subTest(what):
                self.refused(rebuild(datagram, **change), "e2e_bad_tag")
        self.assertEqual(self.open(rebuild(datagram)), b"W" * 100)

    def test_a_relay_may_change_ttl_and_retransmit_flag(self):
        datagram, = self.sealed()
        for change in (dict(ttl=3), dict(flags=int(EntryFlag.RETRANSMIT)),
                       dict(ttl=1, flags=int(EntryFlag.RETRANSMIT))):
            self.assertEqual(self.open(rebuild(datagram, **change)), b"W" * 100, change)

    def test_a_retransmission_built_with_the_flag_opens(self):
        datagram, = self.sealed(flags=int(EntryFlag.RETRANSMIT), ttl=2)
        self.assertEqual(self.open(datagram), b"W" * 100)

    def test_segments_open_after_reassembly(self):
        body = bytes(range(256)) * 8
        datagrams = self.sealed(body, max_body=300)
        self.assertGreater(len(datagrams), 5)
        assembler = SegmentAssembler()
        area = None
        for datagram in reversed(datagrams):
            entry = parse_datagram(datagram)
            area = assembler.add(entry.header, entry.payload)
            self.assertEqual(entry.header.seal, Seal.AES_256_GCM)
        self.assertEqual(self.target.open(parse_datagram(datagrams[0]).header, area), body)
        # one segment alone does not open
        entry = parse_datagram(datagrams[0])
        with self.assertRaises(SealRefused):
            self.target.open(entry.header, entry.payload)

    def test_a_clear_entry_where_entries_are_sealed_is_refused(self):
        clear = build_entry(EntryType.WR, b"W" * 100, **self.FIELDS)
        self.refused(clear, "e2e_unsealed")

    def test_an_unknown_seal_or_a_short_body_is_a_bad_tag(self):
        datagram, = self.sealed()
        self.refused(rebuild(datagram, seal=2), "e2e_bad_tag")
        self.refused(rebuild(datagram, body=bytes(SEALED_OVERHEAD - 1)), "e2e_bad_tag")

    def test_a_group_or_epoch_not_held_is_unknown_key(self):
        datagram, = self.sealed()
        self.refused(datagram, "e2e_unknown_key", GroupSeal(key_ring(groups=[8])))
        self.refused(rebuild(datagram, key_epoch=5), "e2e_unknown_key")

    def test_another_key_of_the_group_is_a_bad_tag(self):
        datagram, = self.sealed()
        self.refused(datagram, "e2e_bad_tag", GroupSeal(key_ring(groups=[7])))

    def test_a_retired_epoch_is_unknown_key(self):
        old, = self.sealed()
        rotated = KeyRing()
        rotated.add_group(7, self.ring.group_key(7, 1))
        rotated.add_group(7, new_key(2))
        self.source.set_ring(rotated)
        self.target.set_ring(rotated)
        new, = self.sealed()
        self.assertEqual(parse_datagram(new).header.key_epoch, 2)
        self.assertEqual(self.open(old), b"W" * 100)            # the overlap
        retired = KeyRing(groups={7: {2: rotated.group_key(7, 2)}})
        self.target.set_ring(retired)
        self.refused(old, "e2e_unknown_key")
        self.assertEqual(self.open(new), b"W" * 100)

    def test_no_group_key_to_seal_with(self):
        with self.assertRaises(SealRefused) as caught:
            self.sealed(group_id=9)
        self.assertEqual(caught.exception.reason, "no_group_key")
        accept_only = GroupSeal(KeyRing(groups={7: {1: Key(1, bytes(32), False)}}))
        with self.assertRaises(SealRefused):
            accept_only.datagrams(EntryType.WR, b"x", 8000, **self.FIELDS)

    def test_unsealed_mode_sends_and_takes_clear_entries(self):
        clear = GroupSeal(sealed=False)
        datagram, = clear.datagrams(EntryType.WR, b"x" * 10, 8000, **self.FIELDS)
        self.assertEqual(parse_datagram(datagram).header.seal, Seal.CLEAR)
        self.assertEqual(self.open(datagram, clear), b"x" * 10)

    def test_the_header_layout_has_room_for_the_seal(self):
        self.assertEqual(LOG_HEADER.size, 88)
        self.assertIn("key_epoch", LOG_HEADER.offsets)
