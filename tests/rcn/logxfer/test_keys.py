"""rcn.logxfer.keys: key rings, the key file (0600, lines named in errors), snapshots."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from rcn.logxfer import keys
from rcn.logxfer.keys import (KEY_SIZE, Key, KeyFileError, KeyRing, canonical_address,
                              link_name, new_key, ring_at_start)
from rcn.logxfer.routes import Address

A, B, C = Address("10.0.0.1", 47001), Address("10.0.0.2", 47001), Address("10.0.0.3", 47001)
HEX1, HEX2 = "11" * KEY_SIZE, "a2" * KEY_SIZE

TEXT = f"""# the lab's keys
link 1 {HEX1} {A} {B} send
link 2 {HEX2} {B} {A} accept   # the next epoch, not sent yet

group 7 3 {HEX2} send
"""


class KeyTests(TestCase):
    def test_repr_and_str_hide_the_material(self):
        key = Key(1, bytes.fromhex(HEX2))
        for shown in (repr(key), str(key), repr(KeyRing(groups={7: {1: key}}))):
            self.assertNotIn(HEX2, shown)
            self.assertNotIn(repr(key.material), shown)
        self.assertIn("epoch=1", repr(key))

    def test_a_key_is_32_bytes_and_its_epoch_1_to_2_32(self):
        with self.assertRaises(KeyFileError):
            Key(1, bytes(31))
        for epoch in (0, 1 << 32):
            with self.assertRaises(KeyFileError):
                Key(epoch, bytes(KEY_SIZE))
        self.assertEqual(Key((1 << 32) - 1, bytes(KEY_SIZE)).epoch, (1 << 32) - 1)

    def test_new_keys_differ(self):
        self.assertNotEqual(new_key(1).material, new_key(1).material)
        self.assertFalse(new_key(2, send=False).send)


class RingTests(TestCase):
    def test_a_link_is_named_the_same_from_both_ends(self):
        self.assertEqual(link_name(A, B), link_name(B, A))
        ring = KeyRing()
        ring.add_link(B, A, new_key(1))
        self.assertIs(ring.link_send_key(A, B), ring.link_send_key(B, A))
        self.assertEqual(ring.neighbours(A), {B})
        self.assertEqual(ring.neighbours(B), {A})
        self.assertEqual(ring.neighbours(C), set())

    def test_the_newest_send_epoch_seals_and_accept_only_never_does(self):
        ring = KeyRing()
        ring.add_link(A, B, new_key(1))
        ring.add_link(A, B, new_key(2, send=False))
        self.assertEqual(ring.link_send_key(A, B).epoch, 1)
        ring.add_link(A, B, new_key(2))
        self.assertEqual(ring.link_send_key(A, B).epoch, 2)
        ring.add_group(7, new_key(4, send=False))
        self.assertIsNone(ring.group_send_key(7))
        self.assertEqual(ring.group_key(7, 4).epoch, 4)
        self.assertIsNone(ring.group_key(7, 5))
        self.assertIsNone(ring.group_key(8, 4))

    def test_only_links_drops_the_group_keys(self):
        ring = KeyRing.parse(TEXT)
        core = ring.only_links()
        self.assertEqual(core.groups, {})
        self.assertEqual(core.links, ring.links)
        core.add_link(A, C, new_key(1))           # a copy: the edge's ring is not touched
        self.assertNotIn(link_name(A, C), ring.links)

    def test_epochs_show_no_material(self):
        ring = KeyRing.parse(TEXT)
        shown = ring.epochs()
        self.assertEqual(shown, {"links": {f"{A} {B}": [1, 2]}, "groups": {"7": [3]}})
        self.assertNotIn(HEX1, repr(shown))
        self.assertEqual(len(ring), 3)


class KeyFileTextTests(TestCase):
    def test_parse_reads_links_groups_use_and_comments(self):
        ring = KeyRing.parse(TEXT)
        link = ring.link_keys(A, B)
        self.assertEqual(sorted(link), [1, 2])
        self.assertEqual(link[1].material, bytes.fromhex(HEX1))
        self.assertTrue(link[1].send)
        self.assertFalse(link[2].send)
        self.assertEqual(ring.group_key(7, 3).material, bytes.fromhex(HEX2))

    def test_dump_parses_back_to_the_same_ring(self):
        ring = KeyRing.parse(TEXT)
        self.assertEqual(KeyRing.parse(ring.dump()), ring)
        self.assertTrue(ring.dump().startswith("# "))

    def test_bad_lines_name_the_line_and_what_is_wrong_but_echo_nothing(self):
        cases = [
            (f"link 1 {HEX1} {A} {B}", "line 1", "expected", str(B)),
            (f"# ok\n\ngroup x 1 {HEX1} send", "line 3", "the group id is not a number", "x"),
            (f"group 7 1 {HEX1[:-2]} send", "line 1", "64 hex digits", HEX1[:-2]),
            (f"group 7 1 {'zz' * KEY_SIZE} send", "line 1", "not hex", "zz"),
            (f"group 7 1 {HEX1} maybe", "line 1", "not 'send' or 'accept'", "maybe"),
            (f"group 7 0 {HEX1} send", "line 1", "outside 1..4294967295", HEX1),
            (f"group 7 4294967296 {HEX1} send", "line 1", "epoch is outside 0..4294967295",
             "4294967296"),
            (f"group -1 1 {HEX1} send", "line 1", "group id is outside", "-1"),
            (f"link 1 {HEX1} {A} nowhere send", "line 1", "not an address", "nowhere"),
            (f"link 1 {HEX1} {A} 10.0.0.2:0 send", "line 1", "not an address", "10.0.0.2:0"),
            ("key 1 2 3", "line 1", "(4 words)", "key"),
            # a key in the wrong column (as a group id, an address) must not reach a log
            (f"group {HEX1} 1 {HEX2} send", "line 1", "group id", HEX1),
            (f"link 1 {A} {HEX1} {B} send", "line 1", "not an address", HEX1),
            (f"{HEX1}", "line 1", "(1 words)", HEX1),
        ]
        for text, line, what, hidden in cases:
            with self.assertRaises(KeyFileError, msg=text) as caught:
                KeyRing.parse(text, "keys.txt")
            message = str(caught.exception)
            self.assertTrue(message.startswith(f"keys.txt {line}: "), message)
            self.assertIn(what, message)
            self.assertNotIn(hidden, message.split(": ", 1)[1].replace(
                "'link EPOCH KEY ADDRESS ADDRESS send|accept' or 'group ID EPOCH KEY "
                "send|accept'", ""))

    def test_an_empty_file_is_an_empty_ring(self):
        self.assertEqual(len(KeyRing.parse("# nothing\n\n")), 0)

    def test_held_group_keys_parse_apart_and_dump_back(self):
        ring = KeyRing.parse(TEXT + f"group 7 2 {HEX1} held\n")
        self.assertEqual(sorted(ring.groups[7]), [3])              # the wire's keys
        self.assertEqual(sorted(ring.held[7]), [2])
        self.assertIsNone(ring.group_key(7, 2))                     # never for the wire
        self.assertEqual(ring.stored_group_key(7, 2).material, bytes.fromhex(HEX1))
        self.assertIs(ring.stored_group_key(7, 3), ring.group_key(7, 3))
        self.assertFalse(ring.held[7][2].send)                      # never sent with
        self.assertEqual(ring.group_send_key(7).epoch, 3)
        self.assertEqual(ring.epochs()["held"], {"7": [2]})
        self.assertNotIn("held", KeyRing.parse(TEXT).epochs())
        self.assertEqual(len(ring), 4)                              # 2 links, 1 group, 1 held
        dumped = ring.dump()
        self.assertIn(f"group 7 2 {HEX1} held\n", dumped)
        self.assertEqual(KeyRing.parse(dumped), ring)
        self.assertEqual(KeyRing.from_snapshot(ring.to_snapshot()).held, {})   # not sent

    def test_held_is_for_group_keys_only(self):
        with self.assertRaises(KeyFileError) as caught:
            KeyRing.parse(f"link 1 {HEX1} {A} {B} held", "keys.txt")
        self.assertIn("keys.txt line 1: the last word is not", str(caught.exception))
        with self.assertRaises(KeyFileError):
            KeyRing.parse(f"group 7 2 {HEX1} kept")

    def test_addresses_are_kept_in_one_form(self):
        text = (f"link 1 {HEX1} [0:0::1]:047001 10.0.0.2:47001 send\n"
                f"link 1 {HEX2} [::ffff:10.0.0.3]:47001 edgeB.example:0047002 send\n")
        ring = KeyRing.parse(text)
        self.assertEqual(set(ring.links), {
            (Address("::1", 47001), Address("10.0.0.2", 47001)),
            (Address("10.0.0.3", 47001), Address("edgeB.example", 47002))})
        # what a socket reports finds the key
        self.assertIsNotNone(ring.link_send_key(Address("::1", 47001), B))
        self.assertIn("link 1 " + HEX1 + " [::1]:47001 10.0.0.2:47001 send", ring.dump())
        snapshot = {"link": [{"a": "[0::1]:47001", "b": "10.0.0.2:047001", "epoch": 1,
                              "key": HEX1, "send": True}]}
        self.assertEqual(set(KeyRing.from_snapshot(snapshot).links),
                         {(Address("::1", 47001), B)})
        # a name is kept as the configuration writes it (never resolved)
        self.assertEqual(canonical_address(Address("LocalHost", 1)), Address("LocalHost", 1))


class KeyFileTests(TestCase):
    def path(self) -> str:
        return os.path.abspath(self.mktemp())

    def test_save_writes_0600_and_load_reads_it_back(self):
        path = self.path()
        ring = KeyRing.parse(TEXT)
        old = os.umask(0)                # even a permissive umask gives 0600
        try:
            ring.save(path)
        finally:
            os.umask(old)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(KeyRing.load(path), ring)
        self.assertFalse(os.path.exists(path + ".tmp"))

    def test_save_creates_the_file_exclusively_0600_and_syncs_file_and_directory(self):
        path = self.path()
        opened, synced, chmods = [], [], []
        real_open, real_fsync = os.open, os.fsync

        def spy_open(name, flags, mode=0o777, **kw):
            fd = real_open(name, flags, mode, **kw)
            opened.append((name, flags, mode, fd))
            return fd

        def spy_fsync(fd):
            synced.append(fd)
            return real_fsync(fd)
        self.patch(keys.os, "open", spy_open)
        self.patch(keys.os, "fsync", spy_fsync)
        self.patch(keys.os, "fchmod", lambda *a: chmods.append(a))
        self.patch(keys.os, "chmod", lambda *a: chmods.append(a))
        KeyRing.parse(TEXT).save(path)
        (tmp, flags, mode, tmp_fd), (directory, _, _, dir_fd) = opened
        self.assertEqual((tmp, mode), (path + ".tmp", 0o600))
        self.assertEqual(flags & (os.O_CREAT | os.O_EXCL), os.O_CREAT | os.O_EXCL)
        self.assertEqual(directory, os.path.dirname(path))
        self.assertEqual(synced, [tmp_fd, dir_fd])       # the file, then the directory
        self.assertEqual(chmods, [])                      # 0600 at creation, not after

    def test_save_removes_a_stale_temporary_file_first(self):
        path = self.path()
        with open(path + ".tmp", "w") as f:                # a crash left it, readable
            f.write("half")
        os.chmod(path + ".tmp", 0o644)
        KeyRing.parse(TEXT).save(path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(KeyRing.load(path), KeyRing.parse(TEXT))
        self.assertFalse(os.path.exists(path + ".tmp"))

    def test_save_replaces_a_file_another_user_could_read(self):
        path = self.path()
        with open(path, "w") as f:
            f.write("old")
        os.chmod(path, 0o644)
        KeyRing.parse(TEXT).save(path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_group_or_world_readable_files_are_refused(self):
        path = self.path()
        KeyRing.parse(TEXT).save(path)
        for mode in (0o640, 0o604, 0o660, 0o610):
            os.chmod(path, mode)
            with self.assertRaises(KeyFileError) as caught:
                KeyRing.load(path)
            self.assertIn(f"mode {mode:04o}", str(caught.exception))
            self.assertIn(f"chmod 600 {path}", str(caught.exception))

    def test_load_names_the_file_and_line(self):
        path = self.path()
        KeyRing.parse(TEXT).save(path)
        with open(path, "a") as f:
            f.write("link 1 x\n")
        lines = len(KeyRing.parse(TEXT).dump().splitlines()) + 1
        with self.assertRaises(KeyFileError) as caught:
            KeyRing.load(path)
        self.assertTrue(str(caught.exception).startswith(f"key file {path} line {lines}: "),
                        str(caught.exception))

    def test_a_missing_or_binary_file_is_a_key_file_error(self):
        path = self.path()
        with self.assertRaises(KeyFileError) as caught:
            KeyRing.load(path)
        self.assertIn(path, str(caught.exception))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"\xff\xfe\x00link")
        os.close(fd)
        with self.assertRaises(KeyFileError) as caught:
            KeyRing.load(path)
        self.assertIn("not text", str(caught.exception))

    def test_at_start_a_missing_file_waits_for_a_management_server_only(self):
        path = self.path()
        self.assertEqual(len(ring_at_start(path, managed=True)), 0)
        with self.assertRaises(KeyFileError) as caught:
            ring_at_start(path, managed=False)
        self.assertIn("missing", str(caught.exception))
        KeyRing.parse(TEXT).save(path)
        self.assertEqual(ring_at_start(path, managed=False), KeyRing.parse(TEXT))


class SnapshotTests(TestCase):
    def test_snapshot_round_trip(self):
        ring = KeyRing.parse(TEXT)
        doc = ring.to_snapshot()
        self.assertEqual(KeyRing.from_snapshot(doc), ring)
        self.assertEqual({r["epoch"]: r["send"] for r in doc["link"]}, {1: True, 2: False})

    def test_bad_snapshot_rows_name_where(self):
        good = KeyRing.parse(TEXT).to_snapshot()
        cases = [
            ([], "snapshot keys: expected a table"),
            ({"link": {}}, "snapshot keys.link: expected a list of tables"),
            ({"group": [1]}, "snapshot keys.group: expected a list of tables"),
            ({"link": [dict(good["link"][0], a=7)]}, "snapshot keys.link[0]: not an address"),
            ({"group": [dict(good["group"][0], key="00")]}, "snapshot keys.group[0]: a key"),
            ({"group": [dict(good["group"][0], epoch=None)]},
             "snapshot keys.group[0]: the epoch is not a number"),
            ({"link": good["link"], "group": [dict(good["group"][0], group="g")]},
             "snapshot keys.group[0]: the group id is not a number"),
        ]
        for doc, what in cases:
            with self.assertRaises(KeyFileError, msg=what) as caught:
                KeyRing.from_snapshot(doc)
            self.assertIn(what, str(caught.exception))

    def test_only_true_means_send(self):
        doc = KeyRing.parse(TEXT).to_snapshot()
        for row in doc["group"]:
            row["send"] = "yes"
        self.assertFalse(KeyRing.from_snapshot(doc).group_key(7, 3).send)
