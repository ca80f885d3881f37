"""rcn.lab without processes: topology parsing and errors, and the device files it writes,
loaded by each daemon's own ``load_config`` and checked to agree with each other."""

from __future__ import annotations

import json
import os
import tomllib

from twisted.trial.unittest import TestCase

from datapath.frames.names import format_wwn
from rcn import lab
from rcn.config import ConfigError
from rcn.core.config import load_config as load_core
from rcn.edge.config import load_config as load_edge
from rcn.mgmt.config import load_config as load_mgmt
from rcn.storage.config import load_config as load_storage
from rcn.wanem.config import load_config as load_wanem

A, B = 0x500A098000000001, 0x500A098000000002


def parse(text: str) -> lab.Topology:
    return lab.parse_topology(tomllib.loads(text))


def listen_port(endpoint: str) -> int:
    """The port of a server endpoint string (``tcp:PORT:interface=HOST``)."""
    return int(endpoint.split(":")[1])


class TopologyTests(TestCase):
    def test_default(self):
        for topology in (lab.Topology(), parse(""), lab.load_topology(None)):
            self.assertEqual(topology.cores, 1)
            self.assertEqual(topology.capacity, 256 << 20)
            self.assertEqual(topology.log_mode, "durable")
            self.assertTrue(topology.batching)
            self.assertEqual((topology.source_wwn, topology.target_wwn), (A, B))
            self.assertEqual(topology.pairs, (lab.PairSpec(0, 0, 7, 256 << 20),))

    def test_every_key(self):
        t = parse('[lab]\ncores = 3\ncapacity = "16MiB"\nlog_mode = "memory"\nbatching = false\n'
                  'pair_mode = "async"\nsource_wwn = "50:0a:09:80:00:00:00:11"\n'
                  'target_wwn = "500a098000000012"\n'
                  '[[pair]]\nlun = 2\n[[pair]]\nlun = 4\ntarget_lun = 1\ngroup = 9\n'
                  'capacity = 1048576\n')
        self.assertEqual((t.cores, t.capacity, t.log_mode, t.batching, t.pair_mode),
                         (3, 16 << 20, "memory", False, "async"))
        self.assertEqual((t.source_wwn, t.target_wwn), (0x500A098000000011, 0x500A098000000012))
        self.assertEqual(t.pairs, (lab.PairSpec(2, 2, 7, 16 << 20), lab.PairSpec(4, 1, 9, 1 << 20)))

    def test_errors_name_the_key(self):
        cases = {
            "[lab]\ncores = 17\n": "lab.cores: 17 is outside 0..16",
            '[lab]\ncores = "1"\n': "lab.cores: expected int",
            '[lab]\ncapacity = "1000"\n': "lab.capacity: 1000 bytes is not a positive multiple",
            '[lab]\nlog_mode = "disk"\n': "lab.log_mode: 'disk' is not one of durable, memory",
            "[lab]\nbatch = true\n": "lab.batch: unknown key",
            "[labs]\n": "labs: unknown key",
            '[lab]\nsource_wwn = "nope"\n': "lab.source_wwn:",
            '[lab]\ntarget_wwn = "50:0a:09:80:00:00:00:01"\n': "lab.target_wwn: the same as",
            "[[pair]]\ngroup = 1\n": "pair[0].lun: missing",
            "[[pair]]\nlun = 0\n[[pair]]\nlun = 0\ntarget_lun = 1\n":
                "pair[1].lun: LUN 0 is in two",
            "[[pair]]\nlun = 0\n[[pair]]\nlun = 1\ntarget_lun = 0\n":
                "pair[1].target_lun: LUN 0 is in two",
            "[[pair]]\nlun = 0\nvolume = 1\n": "pair[0].volume: unknown key",
            "pair = 3\n": "pair: expected list",
            '[lab]\nseal = "chacha"\n': "lab.seal: 'chacha' is not one of aes-256-gcm, none",
        }
        for text, message in cases.items():
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse(text)
            self.assertIn(message, str(caught.exception), text)

    def test_load_topology_names_the_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[lab]\ncores = -1\n")
        with self.assertRaises(ConfigError) as caught:
            lab.load_topology(path)
        self.assertTrue(str(caught.exception).startswith(f"{path}: lab.cores:"))
        with open(path, "w") as f:
            f.write("[lab\n")
        self.assertIn("not valid TOML", str(self.assertRaises(ConfigError, lab.load_topology,
                                                               path)))
        self.assertIn("No such file", str(self.assertRaises(ConfigError, lab.load_topology,
                                                            path + ".missing")))

class GeneratedConfigTests(TestCase):
    """Each device's file loads with its daemon's own reader, and the files agree."""

    def write(self, topology: lab.Topology):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        tcp = list(range(20000, 20100))
        udp = list(range(30000, 30100))
        record = lab.plan(topology, directory, (tcp, udp))
        configs = lab.device_configs(record)
        for name, doc in configs.items():
            device = next(d for d in record["devices"] if d["name"] == name)
            with open(device["config"], "w") as f:
                f.write(lab.render_device(device["role"], doc))
        return record

    def loaded(self, record):
        loaders = {"storage": load_storage, "edge": load_edge, "core": load_core,
                   "mgmt": load_mgmt, "wanem": load_wanem}
        return {d["name"]: loaders[d["role"]](d["config"]) for d in record["devices"]}

    def test_default_lab(self):
        record = self.write(lab.Topology(capacity=16 << 20, mgmt=False))
        json.dumps(record)     # lab.json is plain JSON
        c = self.loaded(record)
        devices = {d["name"]: d for d in record["devices"]}
        self.assertEqual(sorted(c), ["arrayA", "arrayB", "core1", "edgeA", "edgeB"])
        array_a, array_b, edge_a, edge_b, core = (c[n] for n in ("arrayA", "arrayB", "edgeA",
                                                                 "edgeB", "core1"))
        # arrays
        self.assertEqual((array_a.wwpn, array_b.wwpn), (A, B))
        self.assertEqual(array_a.edge.connect, f"tcp:127.0.0.1:{listen_port(edge_a.fcip)}")
        self.assertEqual(array_b.edge.connect, f"tcp:127.0.0.1:{listen_port(edge_b.fcip)}")
        (pa,), (pb,) = array_a.pairs, array_b.pairs
        self.assertEqual((pa.lun, pa.partner_wwpn, pa.partner_lun, pa.group, pa.role, pa.mode),
                         (0, B, 0, 7, "source", "sync"))
        self.assertEqual((pb.lun, pb.partner_wwpn, pb.partner_lun, pb.group, pb.role),
                         (0, A, 0, 7, "target"))
        for name, cfg in (("arrayA", array_a), ("arrayB", array_b)):
            (volume,) = cfg.volumes
            self.assertEqual((volume.lun, volume.name, volume.capacity), (0, "vol0", 16 << 20))
            recorded = devices[name]["volumes"][0]
            self.assertEqual(os.path.join(cfg.data_dir, f"{volume.name}.img"), recorded["path"])
            self.assertEqual(recorded["nbd_url"], f"nbd://127.0.0.1:{listen_port(cfg.nbd)}/vol0")
        pair = record["pairs"][0]
        self.assertEqual(pair["source_volume"], devices["arrayA"]["volumes"][0]["path"])
        self.assertEqual(pair["target_volume"], devices["arrayB"]["volumes"][0]["path"])
        self.assertEqual(record["nbd_url"], devices["arrayA"]["volumes"][0]["nbd_url"])
        # edges: virtual storages with the partner's WWN, access for the attached array
        self.assertEqual([(v.wwn, v.partner_wwn) for v in edge_a.virtual_storages], [(B, B)])
        self.assertEqual([(v.wwn, v.partner_wwn) for v in edge_b.virtual_storages], [(A, A)])
        self.assertEqual(edge_a.access, {(A, B)})
        self.assertEqual(edge_b.access, {(B, A)})
        (pair,) = edge_a.settings.pairs
        self.assertEqual((pair.source_wwn, pair.source_lun, pair.target_wwn, pair.target_lun,
                          pair.group), (A, 0, B, 0, 7))
        self.assertEqual(edge_b.settings.pairs, [])
        self.assertEqual((edge_a.log_mode, edge_b.log_mode), ("durable", "durable"))
        self.assertNotEqual(edge_a.data_dir, edge_b.data_dir)
        # one path, the same everywhere: edgeA, core1, edgeB; and back for failback
        path = (edge_a.log, core.listen, edge_b.log)
        for routes in (edge_a.settings.routes, edge_b.settings.routes, core.routes):
            forward, back = list(routes)
            self.assertEqual((forward.source_wwn, forward.target_wwn, tuple(forward.path)),
                             (A, B, path))
            self.assertEqual((back.source_wwn, back.target_wwn, tuple(back.path)),
                             (B, A, path[::-1]))
        self.assertEqual(edge_a.settings.failure_timeout, 60.0)
        self.assertTrue(core.batch.enabled)
        self.assertEqual(devices["edgeA"]["urls"]["status"],
                         f"http://127.0.0.1:{listen_port(edge_a.metrics)}/status")
        self.assertEqual(devices["core1"]["urls"]["metrics"],
                         f"http://127.0.0.1:{listen_port(core.metrics)}/metrics")

    def test_pairs_created_at_run_time_with_virtual_wwns(self):
        topology = parse('[lab]\nmgmt = false\npair_setup = "create"\nvirtual_wwns = true\n'
                         'failure_timeout = 3\n')
        c = self.loaded(self.write(topology))
        va, vb = lab.virtual_wwn(format_wwn(A)), lab.virtual_wwn(format_wwn(B))
        self.assertNotIn(va, (format_wwn(A), format_wwn(B)))
        self.assertEqual((c["arrayA"].pairs, c["arrayB"].pairs, c["edgeA"].settings.pairs),
                         ((), (), []))
        self.assertEqual([format_wwn(w) for w in c["arrayA"].edge.partners], [vb])
        self.assertEqual([format_wwn(w) for w in c["arrayB"].edge.partners], [va])
        (vs,) = c["edgeA"].virtual_storages
        self.assertEqual((format_wwn(vs.wwn), vs.partner_wwn), (vb, B))
        self.assertEqual({(a, format_wwn(v)) for a, v in c["edgeA"].access}, {(A, vb)})
        self.assertEqual(c["edgeB"].settings.failure_timeout, 3.0)

    def test_a_managed_lab_leaves_the_tables_to_the_server(self):
        record = self.write(lab.Topology(capacity=16 << 20, virtual_wwns=True))
        c = self.loaded(record)
        amp = next(d for d in record["devices"] if d["name"] == "mgmt")["ports"]["amp"]
        for name in ("edgeA", "edgeB", "core1"):
            self.assertEqual(c[name].mgmt, f"tcp:127.0.0.1:{amp}", name)
        self.assertEqual((c["edgeA"].virtual_storages, c["edgeA"].settings.pairs,
                          len(c["edgeA"].settings.routes), len(c["core1"].routes)),
                         ([], [], 0, 0))
        self.assertEqual((c["arrayA"].pairs, c["arrayB"].pairs), ((), ()))   # pair-create
        self.assertEqual(c["mgmt"].amp, f"tcp:{amp}:interface=127.0.0.1")
        requests = lab.settings_requests(record)
        paths = [path for _, path, _ in requests]
        self.assertEqual(paths.count("/devices"), 3)
        self.assertEqual(paths.count("/links"), 2)
        storage = [body for _, path, body in requests if path == "/storages"]
        self.assertEqual([s["virtual_wwn"] for s in storage],
                         [lab.virtual_wwn(format_wwn(A)), lab.virtual_wwn(format_wwn(B))])
        (pair,) = [body for _, path, body in requests if path == "/pairs"]
        self.assertEqual((pair["policy"], pair["group"]), ("B", 7))
        # after the pairs were made, a restart gives the arrays their rows in Duplex
        record["pairs_created"] = True
        configs = lab.device_configs(record)
        self.assertEqual([p["state"] for p in configs["arrayA"]["pair"]], ["duplex"])

    def test_every_port_differs(self):
        record = lab.plan(lab.Topology(cores=3), self.mktemp())
        ports = [p for d in record["devices"] for p in d["ports"].values()]
        self.assertEqual(len(ports), len(set(ports)))
        self.assertEqual(len(ports), 4 + 6 + 6 + 2)          # and the management server's

    def test_cores_pairs_and_options(self):
        topology = parse('[lab]\nmgmt = false\ncores = 3\nbatching = false\nlog_mode = "memory"\n'
                         'pair_mode = "async"\ncapacity = "1MiB"\n'
                         '[[pair]]\nlun = 0\ngroup = 7\n'
                         '[[pair]]\nlun = 2\ntarget_lun = 5\ngroup = 9\ncapacity = "2MiB"\n')
        record = self.write(topology)
        c = self.loaded(record)
        self.assertEqual([n for n in c if n.startswith("core")], ["core1", "core2", "core3"])
        path = (c["edgeA"].log, c["core1"].listen, c["core2"].listen, c["core3"].listen,
                c["edgeB"].log)
        for name in ("edgeA", "edgeB", "core1", "core2", "core3"):
            routes = c[name].settings.routes if name.startswith("edge") else c[name].routes
            self.assertEqual(tuple(list(routes)[0].path), path, name)
        for name in ("core1", "core2", "core3"):
            self.assertFalse(c[name].batch.enabled)
        self.assertEqual(c["edgeA"].log_mode, "memory")
        self.assertEqual([(v.lun, v.name, v.capacity) for v in c["arrayA"].volumes],
                         [(0, "vol0", 1 << 20), (2, "vol2", 2 << 20)])
        self.assertEqual([(v.lun, v.name, v.capacity) for v in c["arrayB"].volumes],
                         [(0, "vol0", 1 << 20), (5, "vol5", 2 << 20)])
        self.assertEqual([(p.lun, p.partner_lun, p.group, p.mode) for p in c["arrayA"].pairs],
                         [(0, 0, 7, "async"), (2, 5, 9, "async")])
        self.assertEqual([(p.lun, p.partner_lun, p.group, p.role) for p in c["arrayB"].pairs],
                         [(0, 0, 7, "target"), (5, 2, 9, "target")])
        self.assertEqual([(p.source_lun, p.target_lun, p.group) for p in c["edgeA"].settings.pairs],
                         [(0, 0, 7), (2, 5, 9)])
        self.assertEqual([p["nbd_url"].rsplit("/", 1)[1] for p in record["pairs"]],
                         ["vol0", "vol2"])

    def test_zero_cores(self):
        c = self.loaded(self.write(lab.Topology(cores=0, mgmt=False)))
        self.assertNotIn("core1", c)
        self.assertEqual(tuple(list(c["edgeA"].settings.routes)[0].path),
                         (c["edgeA"].log, c["edgeB"].log))


class WanemLabTests(TestCase):
    """[[wanem]] links: each device addresses its neighbours through the emulator."""

    write, loaded = GeneratedConfigTests.write, GeneratedConfigTests.loaded

    def test_each_device_sees_its_neighbours_through_the_links(self):
        topology = parse('[lab]\ncores = 2\nconsoles = true\n'
                         '[[wanem]]\nbetween = ["edgeA", "core1"]\ndelay_ms = 20\nloss = 0.01\n'
                         'seed = 3\n'
                         '[[wanem]]\nbetween = ["core2", "edgeB"]\nrate = "10MiB"\n')
        self.assertFalse(topology.mgmt)               # static tables by default
        record = self.write(topology)
        c = self.loaded(record)
        w = c["wanem"]
        a1, b1 = [("127.0.0.1", record["devices"][0]["ports"][f"link1_{s}"]) for s in "ab"]
        a2, b2 = [("127.0.0.1", record["devices"][0]["ports"][f"link2_{s}"]) for s in "ab"]
        real = {n: tuple(c[n].log if n.startswith("edge") else c[n].listen)
                for n in ("edgeA", "core1", "core2", "edgeB")}

        def path(name):
            routes = c[name].settings.routes if name.startswith("edge") else c[name].routes
            return [tuple(a) for a in list(routes)[0].path]
        self.assertEqual(path("edgeA"), [real["edgeA"], a1, real["core2"], real["edgeB"]])
        self.assertEqual(path("core1"), [b1, real["core1"], real["core2"], real["edgeB"]])
        self.assertEqual(path("core2"), [real["edgeA"], real["core1"], real["core2"], a2])
        self.assertEqual(path("edgeB"), [real["edgeA"], real["core1"], b2, real["edgeB"]])
        # the failback route is the same path backwards, seen the same way
        routes = list(c["core1"].routes)
        self.assertEqual([tuple(a) for a in routes[1].path], path("core1")[::-1])
        # the emulator relays A port -> the downstream device, answers to the upstream one
        self.assertEqual([(k.a_port, k.b_address, k.b_port, k.a_address) for k in w.links],
                         [(a1[1], real["core1"], b1[1], real["edgeA"]),
                          (a2[1], real["edgeB"], b2[1], real["core2"])])
        self.assertEqual((w.links[0].seed, w.links[0].settings), (3, {"delay": 0.02,
                                                                      "loss": 0.01}))
        self.assertEqual(w.links[1].settings, {"rate": 10 << 20})
        wanem = record["devices"][0]
        self.assertEqual((wanem["name"], wanem["console"], w.console.serial, w.console.pty_link),
                         ("wanem", os.path.join(record["dir"], "wanem.tty"), "pty",
                          os.path.join(record["dir"], "wanem.tty")))
        self.assertEqual(wanem["urls"]["scpi"], f"socket://127.0.0.1:{listen_port(w.console.tcp)}")
        # consoles = true: every daemon on a pty of its own, linked as DIR/NAME.tty
        for name in ("arrayA", "arrayB", "edgeA", "edgeB", "core1", "core2"):
            self.assertEqual((c[name].console.serial, c[name].console.pty_link),
                             ("pty", os.path.join(record["dir"], f"{name}.tty")), name)
        ports = [p for d in record["devices"] for p in d["ports"].values()]
        self.assertEqual(len(ports), len(set(ports)))

    def test_wanem_errors_name_the_key(self):
        for text, message in [
            ('[lab]\nmgmt = true\n[[wanem]]\nbetween = ["edgeA", "core1"]\n',
             "lab.mgmt: a lab with [[wanem]] links needs static route tables"),
            ('[[wanem]]\nbetween = ["core1", "edgeA"]\n',
             "wanem[0].between: core1 and edgeA are not neighbours on the path in that order"),
            ('[[wanem]]\nbetween = ["edgeA", "core2"]\n',
             "wanem[0].between: no device 'core2' on the path (edgeA, core1, edgeB)"),
            ('[[wanem]]\nbetween = ["edgeA"]\n', "wanem[0].between: expected two device names"),
            ('[[wanem]]\nbetween = ["edgeA", "core1"]\n[[wanem]]\nbetween = ["edgeA", "core1"]\n',
             "wanem[1].between: edgeA - core1 has a link already (wanem[0])"),
            ('[[wanem]]\nbetween = ["edgeA", "core1"]\nloss = 1.5\n',
             "wanem[0].loss: loss 1.5 (fraction) is outside 0..1"),
            ('[[wanem]]\nbetween = ["edgeA", "core1"]\ndelay = 5\n', "wanem[0].delay"),
        ]:
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse(text)
            self.assertIn(message, str(caught.exception))


class ProcessHelperTests(TestCase):

    def test_the_lab_record_is_readable_by_its_owner_only(self):
        """lab.json holds the lab customer's API token."""
        from rcn.lab import processes
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        processes._save({"dir": directory, "customer_token": "t" * 32})
        self.assertEqual(os.stat(processes.lab_file(directory)).st_mode & 0o777, 0o600)
    def test_pid_alive(self):
        self.assertTrue(lab.pid_alive(os.getpid()))
        self.assertFalse(lab.pid_alive(None))
        self.assertFalse(lab.pid_alive(0))

    def test_down_without_lab(self):
        self.assertEqual(lab.down(self.mktemp()), [])

    def test_status_without_lab(self):
        with self.assertRaises(lab.LabError) as caught:
            lab.status(self.mktemp())
        self.assertEqual(caught.exception.status, 2)

    def test_down_leaves_a_recycled_pid_alone(self):
        """A pid in lab.json that now runs something else (here: this test) is not signalled."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        record = lab.plan(lab.Topology(), directory, (list(range(100)), list(range(100, 200))))
        for device in record["devices"]:
            device["pid"] = os.getpid()
        with open(os.path.join(directory, "lab.json"), "w") as f:
            json.dump(record, f)
        report = lab.down(directory)
        self.assertEqual(len(report), 6)
        self.assertTrue(all("left alone" in row["result"] for row in report), report)

    def test_applied_counter_prefers_the_durable_counter(self):
        self.assertEqual(lab.applied_counter({"applied": 1, "durable": 5}), 5)
        self.assertEqual(lab.applied_counter({"applied": 3}), 3)
        self.assertEqual(lab.applied_counter({}), 0)
