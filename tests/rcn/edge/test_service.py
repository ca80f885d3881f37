"""The edge daemon's parts: /metrics carries the table 413 counters, latency, drops, bytes."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from datapath.frames.logentry import EntryFlag, EntryType
from rcn.edge.config import parse_config
from rcn.edge.service import Edge, make_service
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import response_area
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal
from rcn.rio.fcp import ScsiResult, build_write16_cdb
from rcn.tap import StartError
from tests.support import free_port, seal_with, start_as_twistd_would

A, B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
WWN_A, WWN_B = 0x500A098000000001, 0x500A098000000002


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "device")
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


class EdgeMetricsTests(TestCase):
    def setUp(self):
        doc = {
            "edge": {"id": "edgeA", "log": "127.0.0.1:47901",
                     "data_dir": os.path.abspath(self.mktemp())},
            "log": {"mode": "memory"},
            "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B, "target_lun": 0,
                      "group": 7}],
            "route": [{"source_wwn": A, "target_wwn": B,
                       "path": ["127.0.0.1:47901", "127.0.0.1:47902"]}]}
        self.peer = Address("127.0.0.1", 47902)
        self.ring = seal_with(self, doc, links=[(Address("127.0.0.1", 47901), self.peer)],
                              groups=[7])
        self.edge = Edge(parse_config(doc), reactor)
        self.addCleanup(self.edge.close)
        self.sent = []
        self.edge.device.sender.transmit = lambda data, address: self.sent.append(data)

    def test_metrics_after_writes_an_answer_and_a_bad_datagram(self):
        device = self.edge.device
        pair = device.settings.pairs[0]
        for lba in (0, 8):
            self.assertTrue(self.successResultOf(
                device.source_side.write(pair, build_write16_cdb(lba, 8), bytes(4096))).good)
        wrok, = GroupSeal(self.ring).datagrams(
            EntryType.WROK, response_area(0, 0, 0, 0, ScsiResult()), 65000, group_id=7,
            sequence=1, source_wwn=WWN_A, target_wwn=WWN_B, flags=EntryFlag.CUMULATIVE)
        peer = HopSeal(self.peer, self.ring, Drops())
        self.edge.udp.datagramReceived(peer.seal(wrok, Address("127.0.0.1", 47901)),
                                       self.peer.pair)
        self.edge.udp.datagramReceived(b"garbage", self.peer.pair)
        self.edge.udp.datagramReceived(peer.seal(b"garbage", Address("127.0.0.1", 47901)),
                                       self.peer.pair)
        got = samples(self.edge.metrics.render().decode())
        self.assertEqual(got["rcn_group_generation_total{group=7}"], 2)
        self.assertEqual(got["rcn_group_log_delete_total{group=7}"], 1)
        self.assertEqual(got["rcn_edge_writes_total"], 2)
        self.assertEqual(got["rcn_edge_write_bytes_total"], 8192)
        self.assertEqual(got["rcn_edge_wroks_total"], 1)
        self.assertEqual(got["rcn_sender_acknowledged_total"], 1)
        self.assertEqual(got["rcn_drops_total{reason=unsealed}"], 1)
        self.assertEqual(got["rcn_drops_total{reason=malformed}"], 1)
        self.assertEqual(got["rcn_drops_total{reason=bad_tag}"], 0)      # shown before any
        self.assertEqual(got["rcn_edge_ack_latency_seconds_count"], 2)
        self.assertEqual(got["rcn_log_store_retained_entries"], 1)
        self.assertEqual(got["rcn_group_log_retained_entries{group=7}"], 1)
        self.assertIn("rcn_path_in_flight_bytes{path=127.0.0.1:47902}", got)
        for name in ("evicted", "copies_ignored", "joins_refused"):
            self.assertEqual(got[f"rcn_segments_{name}_total"], 0)

    def test_pair_states_and_727_in_metrics_and_status(self):
        got = samples(self.edge.metrics.render().decode())
        key = ("rcn_pair_state{side=source,source=50:0a:09:80:00:00:00:01/0,state=%s,"
               "target=50:0a:09:80:00:00:00:02/0}")
        self.assertEqual(got[key % "duplex"], 1)
        self.assertEqual(got[key % "suspend"], 0)
        self.assertEqual(got["rcn_pair_bitmap_727_tracks{source=50:0a:09:80:00:00:00:01/0,"
                             "target=50:0a:09:80:00:00:00:02/0}"], 0)
        self.assertEqual(got["rcn_pair_control_failure_suspends_total"], 0)
        row, = self.edge.status()["pairs"]
        self.assertEqual((row["state"], row["side"], row["group"]), ("duplex", "source", 7))
        json.dumps(self.edge.status())

    def test_status_and_metrics_show_epochs_and_counts_never_a_key(self):
        status = json.dumps(self.edge.status())
        text = self.edge.metrics.render().decode()
        materials = [k.material.hex() for keys in [*self.ring.links.values(),
                                                   *self.ring.groups.values()]
                     for k in keys.values()]
        self.assertEqual(len(materials), 2)
        for material in materials:
            for shown in (status, text):
                self.assertNotIn(material, shown)
                self.assertNotIn(material[:16], shown)
        seal = self.edge.status()["seal"]
        self.assertEqual((seal["mode"], seal["epochs"]["groups"]), ("aes-256-gcm", {"7": [1]}))

    def test_status_is_json_friendly_before_any_sample(self):
        status = self.edge.status()
        self.assertIsNone(status["lag_p99_s"])
        self.assertEqual(status["log_mode"], "memory")
        self.assertEqual(status["groups"][0]["group"], 7)


class OpenAtStartTests(TestCase):
    """make_service builds the edge without touching the disk or starting a thread (twistd
    applies --umask and --uid, and daemonises by fork, only after it); startService opens."""

    def config(self, data_dir: str, mgmt: bool = False):
        log = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        doc = {"edge": {"id": "edgeA", "log": log, "data_dir": data_dir},
               "log": {"mode": "durable"},
               "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B, "target_lun": 0,
                         "group": 7}],
               "route": [{"source_wwn": A, "target_wwn": B,
                          "path": [log, "127.0.0.1:47902"]}]}
        if mgmt:
            doc["mgmt"] = {"connect": "tcp:127.0.0.1:1"}
        else:
            seal_with(self, doc, links=[(Address.parse(log), Address("127.0.0.1", 47902))],
                      groups=[7])
        return parse_config(doc)

    def start(self, top):
        start_as_twistd_would(self, top)

    def test_make_service_touches_no_file_and_starts_no_thread_start_does_under_umask(self):
        data = os.path.abspath(self.mktemp())
        def fsync_threads():
            return sum(t.name == "rcn-fsync" for t in threading.enumerate())
        before = fsync_threads()
        top, edge = make_service(self.config(data), reactor)
        self.addCleanup(edge.close)
        self.assertFalse(os.path.exists(data))
        self.assertEqual(fsync_threads(), before)   # a daemonising fork would lose it
        self.start(top)
        self.assertEqual(fsync_threads(), before + 1)
        modes = {}
        for directory, _, files in os.walk(data):
            for path in [directory] + [os.path.join(directory, n) for n in files]:
                modes[os.path.relpath(path, data)] = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(modes, {".": 0o700, "log": 0o700, "log/LOCK": 0o600,
                                 "applied.json": 0o600, "keys.hop": 0o600})
        pair = edge.device.settings.pairs[0]
        d = edge.device.source_side.write(pair, build_write16_cdb(0, 8), bytes(4096))
        return d.addCallback(lambda result: self.assertTrue(result.good))

    def test_the_kept_snapshot_is_applied_at_start(self):
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        snapshot = {"route": [{"source_wwn": A, "target_wwn": B,
                               "path": ["127.0.0.1:47901", "127.0.0.1:47903"]}]}
        with open(os.path.join(data, "mgmt.json"), "w") as f:
            json.dump({"version": 5, "snapshot": snapshot}, f)
        top, edge = make_service(self.config(data, mgmt=True), reactor)
        self.addCleanup(edge.close)
        self.assertEqual((edge.mgmt.version, os.listdir(data)), (0, ["mgmt.json"]))
        self.start(top)
        self.assertEqual(edge.mgmt.version, 5)
        self.assertEqual(len(edge.device.routes), 1)

    @defer.inlineCallbacks
    def test_the_hop_state_is_written_at_start_in_the_data_directory(self):
        from rcn.logxfer.hopstate import HopStateFile
        data = os.path.abspath(self.mktemp())
        config = self.config(data)                  # its key file is elsewhere
        top, edge = make_service(config, reactor)
        hop = os.path.join(data, "keys.hop")
        self.assertNotEqual(os.path.dirname(config.seal.keys), data)
        self.assertEqual(edge.udp.hop.state.path, hop)
        self.assertFalse(os.path.exists(hop))
        self.start(top)
        self.assertEqual(stat.S_IMODE(os.stat(hop).st_mode), 0o600)
        reserved, _ = HopStateFile(hop).load()
        self.assertGreater(reserved, edge.udp.hop.counter)
        edge.udp.hop._dirty = True                      # as a datagram that opened would
        yield top.stopService()
        self.assertFalse(edge.udp.hop._dirty)           # the clean stop saved

    def test_start_that_cannot_open_the_log_raises_start_error_naming_it(self):
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        with open(os.path.join(data, "log"), "w"):     # a file where the log directory goes
            pass
        top, edge = make_service(self.config(data), reactor)
        self.addCleanup(edge.close)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        with self.assertRaises(StartError) as caught:
            top.startService()
        self.assertIn("rcn-edge edgeA: cannot open its files", str(caught.exception))
        self.assertIn(os.path.join(data, "log"), str(caught.exception))
