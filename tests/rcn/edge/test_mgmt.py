"""An edge under a management server: snapshots replace its tables, survive a restart,
and the server gets its figures and residual entries (over AMP, in memory with iosim)."""

from __future__ import annotations

import os

from twisted.internet import reactor, task
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from rcn.edge.config import parse_config
from rcn.edge.service import Edge
from rcn.mgmt.distribution import DistributionServer
from rcn.logxfer.keys import KeyRing
from rcn.logxfer.routes import Address
from rcn.pairstate import PairState
from tests.support import key_ring

A, B, V = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02", "50:0a:09:80:00:80:00:02"
SNAPSHOT = {
    "format": 1, "version": 3,
    "device": {"id": "edgeA", "role": "edge", "log_address": "127.0.0.1:47911"},
    "route": [{"source_wwn": A, "target_wwn": B,
               "path": ["127.0.0.1:47911", "127.0.0.1:47912"]}],
    "storage": [{"wwn": A, "customer": "acme"}],
    "virtual_storage": [{"wwn": V, "partner_wwn": B, "partner_edge": "edgeB"}],
    "access": [{"virtual_wwn": V, "storage_wwn": A}],
    "pair": [{"source_wwn": A, "source_lun": 0, "target_wwn": B, "target_lun": 0,
              "group": 1073741831, "customer": "acme"}],
    "customer": [{"id": "acme", "bandwidth": 1000000}],
    "keys": key_ring(links=[(Address("127.0.0.1", 47911), Address("127.0.0.1", 47912))],
                     groups=[1073741831]).to_snapshot()}


class EdgeUnderMgmtTests(TestCase):
    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        self.clock = task.Clock()
        self.reports = []
        self.server = DistributionServer(self.clock, lambda device: (3, SNAPSHOT),
                                         lambda device, figures: self.reports.append(figures))

    def edge(self) -> Edge:
        config = parse_config({"edge": {"id": "edgeA", "log": "127.0.0.1:47911",
                                        "data_dir": self.data_dir},
                               "log": {"mode": "memory"},
                               "mgmt": {"connect": "tcp:127.0.0.1:47100"}})
        edge = Edge(config, reactor)
        edge.mgmt.clock = self.clock            # reports on the test's clock
        edge.start()
        self.addCleanup(edge.close)
        return edge

    def connect(self, edge: Edge):
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.factory().buildProtocol(None),
            lambda: edge.mgmt.buildProtocol(None))
        self.clock.advance(0)
        pump.flush()
        return client, server, pump

    def test_snapshot_replaces_the_tables_and_is_kept_for_a_restart(self):
        edge = self.edge()
        self.assertEqual(len(edge.device.routes), 0)
        _, _, pump = self.connect(edge)
        self.assertEqual(edge.mgmt.version, 3)
        row = edge.device.pairs.find(0x500A098000000001, 0x500A098000000002, 0)
        self.assertEqual((row.state, row.entry.group, row.entry.customer),
                         (PairState.SIMPLEX, 1073741831, "acme"))
        self.assertEqual(len(edge.device.routes), 1)
        self.assertEqual([hex(e.wwn) for e in edge.fabric.config.virtual_storages],
                         ["0x500a098000800002"])
        self.assertTrue(edge.fabric.config.access(0x500A098000000001, 0x500A098000800002))
        self.assertEqual(list(edge.device.sender.buckets), ["acme"])
        self.assertTrue(self.server.device("edgeA")["up_to_date"])
        # reports carry the edge's status; the residual query reads its log
        self.clock.advance(1.0)
        pump.flush()
        self.assertEqual(self.reports[-1]["pairs"][0]["state"], "simplex")
        d = self.server.query_residual("edgeA", 7)
        pump.flush()
        self.failureResultOf(d)                  # no such group in the log
        # the keys are in force, kept in the key file (0600), not in mgmt.json
        keys = os.path.join(self.data_dir, "keys")
        self.assertEqual(KeyRing.load(keys).to_snapshot(), SNAPSHOT["keys"])
        self.assertEqual(os.stat(keys).st_mode & 0o777, 0o600)
        with open(os.path.join(self.data_dir, "mgmt.json")) as f:
            self.assertNotIn(SNAPSHOT["keys"]["group"][0]["key"], f.read())
        self.assertEqual(edge.udp.hop.ring.neighbours(Address("127.0.0.1", 47911)),
                         {Address("127.0.0.1", 47912)})
        # a restart applies the kept snapshot and keys before it can reach the server
        again = self.edge()
        self.assertEqual(again.mgmt.version, 3)
        self.assertEqual(again.device.seal.ring.to_snapshot(), SNAPSHOT["keys"])
        self.assertEqual(len(again.device.routes), 1)
        self.assertEqual(again.fabric.config.virtual_storages[0].partner_wwn,
                         0x500A098000000002)

    def test_residual_entries_of_a_group(self):
        edge = self.edge()
        _, _, pump = self.connect(edge)
        from rcn.rio.fcp import build_write16_cdb
        row = edge.device.pairs.find(0x500A098000000001, 0x500A098000000002, 0)
        row.state = PairState.DUPLEX
        edge.device.sender.transmit = lambda data, address: None
        for lba in (0, 8):
            edge.device.source_side.write(row.entry, build_write16_cdb(lba, 8), bytes(4096))
        d = self.server.query_residual("edgeA", 1073741831)
        pump.flush()
        answer = self.successResultOf(d)
        self.assertEqual((answer["retained_entries"], answer["first"], answer["last"]), (2, 1, 2))
