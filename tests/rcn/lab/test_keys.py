"""rcn.lab's sealing without processes: the key files a static lab writes (each device its
own keys only), what a restart keeps, the managed and unsealed labs' ``[seal]`` tables."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import TestCase

from rcn import lab
from rcn.cli.lab import describe_up
from rcn.core.config import load_config as load_core
from rcn.edge.config import load_config as load_edge
from rcn.logxfer.keys import KeyRing, new_key
from rcn.logxfer.routes import Address
from tests.rcn.lab.test_topology import parse

TWO_GROUPS = ('[lab]\nmgmt = false\ncores = 2\ncapacity = "1MiB"\n'
              '[[pair]]\nlun = 0\ngroup = 7\n[[pair]]\nlun = 1\ngroup = 9\n')


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class KeyFileTests(TestCase):
    def record(self, topology: lab.Topology, directory: str | None = None) -> dict:
        directory = directory or os.path.abspath(self.mktemp())
        os.makedirs(directory, exist_ok=True)
        return lab.plan(topology, directory, (list(range(20000, 20100)),
                                              list(range(30000, 30100))))

    def rings(self, record: dict) -> dict[str, KeyRing]:
        return {d["name"]: KeyRing.load(d["keys"]) for d in record["devices"]
                if d["role"] in ("edge", "core")}

    def test_each_device_holds_its_links_and_only_edges_hold_groups(self):
        record = self.record(parse(TWO_GROUPS))
        lab.write_keys(record)
        rings = self.rings(record)
        by_name = {d["name"]: d for d in record["devices"]}
        address = {n: Address("127.0.0.1", by_name[n]["ports"]["log"]) for n in rings}
        chain = ["edgeA", "core1", "core2", "edgeB"]
        links = list(zip(chain, chain[1:]))
        for name, ring in rings.items():
            mine = {tuple(sorted((a, b))) for a, b in links if name in (a, b)}
            self.assertEqual(ring.neighbours(address[name]),
                             {address[b if a == name else a] for a, b in mine}, name)
            self.assertEqual(len(ring.links), len(mine), name)
            self.assertEqual(sorted(ring.groups), [] if name.startswith("core") else [7, 9],
                             name)
            self.assertEqual(mode(by_name[name]["keys"]), 0o600, name)
        self.assertEqual(mode(os.path.join(record["dir"], lab.KEYS_DIR)), 0o700)
        # both ends of a link hold the same key; different links, different keys
        materials = []
        for a, b in links:
            ka = rings[a].link_send_key(address[a], address[b])
            kb = rings[b].link_send_key(address[b], address[a])
            self.assertEqual(ka.material, kb.material, (a, b))
            materials.append(ka.material)
        self.assertEqual(len(set(materials)), len(links))
        for group in (7, 9):
            self.assertEqual(rings["edgeA"].group_send_key(group).material,
                             rings["edgeB"].group_send_key(group).material)
        self.assertNotEqual(rings["edgeA"].group_send_key(7).material,
                            rings["edgeA"].group_send_key(9).material)

    def test_the_files_name_each_device_s_key_file(self):
        record = self.record(parse(TWO_GROUPS))
        for name, doc in lab.device_configs(record).items():
            device = next(d for d in record["devices"] if d["name"] == name)
            with open(device["config"], "w") as f:
                f.write(lab.render_device(device["role"], doc))
            if device["role"] in ("edge", "core"):
                self.assertEqual(doc["seal"], {"keys": f"keys/{name}.keys"})
        old = os.getcwd()
        os.chdir(record["dir"])                  # where the lab runs its daemons
        self.addCleanup(os.chdir, old)
        by_name = {d["name"]: d for d in record["devices"]}
        for name, load in (("edgeA", load_edge), ("core2", load_core)):
            seal = load(by_name[name]["config"]).seal
            self.assertTrue(seal.sealed)
            self.assertEqual(os.path.abspath(seal.keys), by_name[name]["keys"])

    def test_a_restart_keeps_the_group_keys_and_makes_new_link_keys(self):
        directory = os.path.abspath(self.mktemp())
        first = self.record(parse(TWO_GROUPS), directory)
        lab.write_keys(first)
        before = self.rings(first)["edgeB"]
        second = lab.plan(parse(TWO_GROUPS), directory, (list(range(21000, 21100)),
                                                         list(range(31000, 31100))))
        lab.write_keys(second)
        after = self.rings(second)
        for edge in ("edgeA", "edgeB"):
            self.assertEqual({g: {e: k.material for e, k in keys.items()}
                              for g, keys in after[edge].groups.items()},
                             {g: {e: k.material for e, k in keys.items()}
                              for g, keys in before.groups.items()}, edge)
        old_links = {k.material for keys in before.links.values() for k in keys.values()}
        new_links = {k.material for keys in after["edgeB"].links.values()
                     for k in keys.values()}
        self.assertFalse(old_links & new_links)

    def test_a_restart_keeps_an_edges_held_epochs(self):
        # a retired group epoch edgeA's log still retains entries under (held) stays held
        # for the next run, at edgeA only
        directory = os.path.abspath(self.mktemp())
        first = self.record(parse(TWO_GROUPS), directory)
        lab.write_keys(first)
        path = {d["name"]: d for d in first["devices"]}["edgeA"]["keys"]
        ring = KeyRing.load(path)
        group = sorted(ring.groups)[0]
        old = new_key(7, send=False)
        ring.add_held(group, old)
        ring.save(path)
        second = lab.plan(parse(TWO_GROUPS), directory, (list(range(21000, 21100)),
                                                         list(range(31000, 31100))))
        lab.write_keys(second)
        after = self.rings(second)
        self.assertEqual({e: k.material for e, k in after["edgeA"].held[group].items()},
                         {7: old.material})
        self.assertEqual(after["edgeB"].held, {})
        self.assertNotIn(7, after["edgeA"].groups[group])

    def test_an_unreadable_old_key_file_stops_the_restart(self):
        record = self.record(parse(TWO_GROUPS))
        lab.write_keys(record)
        path = next(d["keys"] for d in record["devices"] if d["name"] == "edgeA")
        os.chmod(path, 0o644)
        with self.assertRaises(lab.LabError) as caught:
            lab.write_keys(record)
        self.assertIn("other users may read it", str(caught.exception))
        self.assertEqual(caught.exception.status, 2)

    def test_a_managed_lab_gets_keys_from_the_server(self):
        record = self.record(lab.Topology(capacity=1 << 20))
        lab.write_keys(record)
        self.assertEqual(os.listdir(os.path.join(record["dir"], lab.KEYS_DIR)), [])
        configs = lab.device_configs(record)
        self.assertEqual(configs["edgeA"]["seal"], {})        # DATA_DIR/keys, the default
        # a core keeps the server's keys in the lab directory (a restart starts with them)
        self.assertEqual(configs["core1"]["seal"], {"keys": "keys/core1.keys"})
        edge = next(d for d in record["devices"] if d["name"] == "edgeA")
        self.assertEqual(edge["keys"], os.path.join(record["dir"], "edgeA", "keys"))
        self.assertIn("keys from the management server", describe_up(record))

    def test_an_unsealed_lab_says_so_and_writes_no_keys(self):
        record = self.record(parse('[lab]\nmgmt = false\nseal = "none"\n'))
        configs = lab.device_configs(record)
        for name in ("edgeA", "edgeB", "core1"):
            self.assertEqual(configs[name]["seal"], {"mode": "none"}, name)
            self.assertNotIn("keys", next(d for d in record["devices"] if d["name"] == name))
        self.assertIn("NOT sealed", describe_up(record))
        sealed = self.record(parse("[lab]\nmgmt = false\n"))
        self.assertIn("sealed (AES-256-GCM): key files in", describe_up(sealed))

    def test_through_a_wan_emulator_link_both_ends_agree_which_end_they_are(self):
        record = self.record(parse('[lab]\nmgmt = false\n[[wanem]]\nbetween = ["edgeA", "core1"]\n'))
        lab.write_keys(record)
        rings = self.rings(record)
        by_name = {d["name"]: d for d in record["devices"]}
        link = by_name["wanem"]["links"][0]
        edge_a = Address("127.0.0.1", by_name["edgeA"]["ports"]["log"])
        core1 = Address("127.0.0.1", by_name["core1"]["ports"]["log"])
        seen_by_a = Address("127.0.0.1", link["a_port"])         # core1, through the emulator
        seen_by_core = Address("127.0.0.1", link["b_port"])      # edgeA, through the emulator
        self.assertEqual(rings["edgeA"].neighbours(edge_a), {seen_by_a})
        self.assertIn(seen_by_core, rings["core1"].neighbours(core1))
        self.assertEqual((rings["edgeA"].link_end(edge_a, seen_by_a),
                          rings["core1"].link_end(core1, seen_by_core)), (0, 1))
        self.assertEqual(rings["edgeA"].link_send_key(edge_a, seen_by_a),
                         rings["core1"].link_send_key(core1, seen_by_core))
