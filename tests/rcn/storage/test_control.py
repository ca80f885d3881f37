"""The array control API over real HTTP, `rcn array` against it, and its /metrics."""

from __future__ import annotations

import io
import json
import os

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet import reactor, task, threads
from twisted.internet.defer import succeed
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from datapath.frames import fcp
from rcn.cli.main import main as rcn_main
from rcn.nbd import protocol as P
from rcn.rio.fcp import ScsiCommand
from rcn.storage.config import EdgeConfig, PairConfig, StorageConfig, VolumeConfig
from rcn.storage.control import ControlResource
from rcn.storage.service import StorageArray, control_site
from tests.rcn.nbd.helpers import Client
from tests.rcn.storage.support import FakeSession
from tests.rcn.test_metrics import parse_exposition


class FakeArray:
    def describe_status(self):
        return {"wwpn": "50:0a:09:80:00:00:00:01", "edge": "up"}

    def describe_volumes(self):
        return [{"lun": 0, "name": "vol0", "capacity": 1048576, "path": "/v/lun0"}]

    def describe_pairs(self):
        return [{"lun": 0, "partner_wwpn": "50:0a:09:80:00:00:00:02", "partner_lun": 1,
                 "group": 7, "state": "duplex", "mode": "sync", "queue_limit": 1024}]


class ControlApiTests(TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, Site(ControlResource(FakeArray())), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def rcn(self, *args):
        out = io.StringIO()

        def run():
            return rcn_main(list(args), out)
        return threads.deferToThread(run).addCallback(lambda status: (status, out.getvalue()))

    def test_pairs_table(self):
        def check(result):
            status, text = result
            self.assertEqual(status, 0)
            header, row = text.splitlines()
            self.assertEqual(header.split(), ["LUN", "PARTNER_WWPN", "PARTNER_LUN", "GROUP", "STATE",
                                              "MODE"])
            self.assertEqual(row.split(), ["0", "50:0a:09:80:00:00:00:02", "1", "7", "duplex", "sync"])
        return self.rcn("array", "pairs", "--url", self.url).addCallback(check)

    def test_one_pair_as_json(self):
        def check(result):
            status, text = result
            self.assertEqual((status, json.loads(text)["group"]), (0, 7))
        return self.rcn("array", "pairs", "0", "--json", "--url", self.url).addCallback(check)

    def test_missing_pair_is_an_error(self):
        def check(result):
            self.assertEqual(result, (1, ""))
        return self.rcn("array", "pairs", "5", "--url", self.url).addCallback(check)

    def test_volumes_and_status(self):
        def check_volumes(result):
            self.assertEqual(result[0], 0)
            self.assertIn("vol0", result[1])
            return self.rcn("array", "status", "--url", self.url)

        def check_status(result):
            self.assertEqual(result, (0, "edge: up\nwwpn: 50:0a:09:80:00:00:00:01\n"))
        return self.rcn("array", "volumes", "--url", self.url).addCallback(
            check_volumes).addCallback(check_status)

    def test_unreachable_array(self):
        port = self.port.getHost().port

        def check(result):
            self.assertEqual(result, (2, ""))
        d = self.port.stopListening()
        d.addCallback(lambda _: self.rcn("array", "status", "--url", f"http://127.0.0.1:{port}"))
        return d.addCallback(check)

    def test_unknown_path_and_method(self):
        from twisted.web.client import Agent, readBody
        agent = Agent(reactor)

        def check(response, code):
            self.assertEqual(response.code, code)
            return readBody(response).addCallback(lambda body: self.assertIn("error", json.loads(body)))
        d = agent.request(b"GET", f"{self.url}/nothing".encode())
        d.addCallback(check, 404)
        d.addCallback(lambda _: agent.request(b"POST", f"{self.url}/pairs".encode()))
        return d.addCallback(check, 405)


ARRAY_WWN = 0x500A098000000001
PARTNER_WWN = 0x500A098000000002
MiB = 1 << 20


class MetricsTests(TestCase):
    """GET /metrics of a real StorageArray (no edge process), served as make_service serves it."""

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        config = StorageConfig(
            wwpn=ARRAY_WWN, wwnn=ARRAY_WWN & ~1, data_dir=directory,
            nbd="tcp:0:interface=127.0.0.1", control="tcp:0:interface=127.0.0.1",
            edge=EdgeConfig("tcp:127.0.0.1:3225"),
            volumes=(VolumeConfig(0, "vol0", 4 * MiB), VolumeConfig(1, "vol1", MiB)),
            pairs=(PairConfig(0, PARTNER_WWN, 5, 7, "duplex", "sync"),
                   PairConfig(1, PARTNER_WWN, 3, 7, "duplex", role="target")))
        self.array = StorageArray(config, task.Clock())      # no link to an edge is made
        self.array.open()
        self.addCleanup(self.array.close)
        self.port = reactor.listenTCP(0, control_site(self.array), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def fetch(self, path: str = "/metrics", method: bytes = b"GET"):
        d = Agent(reactor).request(method, (self.url + path).encode())
        return d.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response, body)))

    def scrape(self):
        def parsed(result):
            response, body = result
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                             [CONTENT_TYPE_LATEST.encode()])
            return parse_exposition(body)
        return self.fetch().addCallback(parsed)

    def nbd_writes(self) -> Client:
        """Two host writes to vol0 over NBD; with no edge the first RIO WR fails (failure
        Suspend) and both writes are recorded in the differential bitmap."""
        client = Client(None, factory=self.array.nbd)
        client.start("vol0")
        client.take()
        client.request(P.CMD_WRITE, 1, 0, 65536, data=b"\xab" * 65536)
        client.request(P.CMD_WRITE, 2, MiB, 4096, data=b"\xcd" * 4096)
        self.assertEqual([(cookie, error) for cookie, error, _ in client.replies()],
                         [(1, 0), (2, 0)])
        return client

    def test_nbd_and_replication_counters(self):
        self.nbd_writes()

        def check(result):
            samples, types = result
            nbd = {k: v for k, v in samples.items() if k.startswith("rcn_nbd_") and v}
            self.assertEqual(nbd, {"rcn_nbd_connections_total": 1.0,
                                   "rcn_nbd_connections_active": 1.0,
                                   "rcn_nbd_handshakes_total": 1.0,
                                   "rcn_nbd_options_total": 1.0,
                                   "rcn_nbd_requests_write_total": 2.0,
                                   "rcn_nbd_bytes_written_total": 65536.0 + 4096.0})
            self.assertEqual(types["rcn_nbd_connections_active"], "gauge")
            self.assertEqual(types["rcn_nbd_requests_write"], "counter")
            replication = {k: v for k, v in samples.items() if k.startswith("rcn_replication_")}
            self.assertEqual(replication, {"rcn_replication_sent_total": 1.0,
                                           "rcn_replication_acknowledged_total": 0.0,
                                           "rcn_replication_failed_total": 1.0,
                                           "rcn_replication_bytes_sent_total": 65536.0,
                                           "rcn_replication_recorded_in_bitmap_total": 2.0,
                                           "rcn_replication_waits_for_queue_total": 0.0,
                                           "rcn_replication_host_writes_refused_total": 0.0})
            # the same figures as /status
            status = self.array.describe_status()
            self.assertEqual(samples["rcn_nbd_requests_write_total"],
                             status["nbd"]["requests_write"])
            self.assertEqual(samples["rcn_replication_failed_total"],
                             status["replication"]["failed"])
        return self.scrape().addCallback(check)

    def test_per_pair_figures_labelled_lun_role_partner(self):
        self.nbd_writes()                  # 64 KiB at 0 and 4 KiB at 1 MiB: tracks 0 and 16
        source = 'lun="0",partner="50:0a:09:80:00:00:00:02",role="source"'
        target = 'lun="1",partner="50:0a:09:80:00:00:00:02",role="target"'

        def check(result):
            samples, types = result
            self.assertEqual({k: v for k, v in samples.items() if "dirty" in k},
                             {f"rcn_pair_dirty_tracks{{{source}}}": 2.0,
                              f"rcn_pair_dirty_tracks{{{target}}}": 0.0})
            self.assertEqual(types["rcn_pair_dirty_tracks"], "gauge")
            states = {k: v for k, v in samples.items() if k.startswith("rcn_pair_state{")
                      and 'lun="0"' in k and v}
            self.assertEqual(states, {f'rcn_pair_state{{{source},state="failure-suspend"}}': 1.0})
            self.assertEqual(sum(v for k, v in samples.items() if k.startswith("rcn_pair_state{")),
                             2.0)
            for name in ("rcn_pair_copy_bytes_to_copy", "rcn_pair_copy_bytes_copied",
                         "rcn_pair_copy_tracks",
                         "rcn_pair_copied_bytes_total", "rcn_pair_copies_completed_total"):
                self.assertEqual(samples[f"{name}{{{source}}}"], 0.0, name)
            self.assertEqual(types["rcn_pair_copies_completed"], "counter")
        return self.scrape().addCallback(check)

    def test_copy_figures_after_a_pair_create(self):
        session = FakeSession()
        self.array.remote_copy.session_for = lambda wwn: succeed(session)
        self.successResultOf(self.array.remote_copy.pair_delete(0, local=True))
        self.array.volumes[0].write(MiB, b"\x01" * 131072)
        self.successResultOf(self.array.remote_copy.pair_create(0, PARTNER_WWN, 5))
        labels = 'lun="0",partner="50:0a:09:80:00:00:00:02",role="source"'

        def check(result):
            samples, _ = result
            self.assertEqual(
                [samples[f"rcn_pair_{name}{{{labels}}}"] for name in (
                    "copy_bytes_to_copy", "copy_bytes_copied", "copy_tracks",
                    "copied_bytes_total", "copies_completed_total", "dirty_tracks")],
                [131072.0, 131072.0, 2.0, 131072.0, 1.0, 0.0])
            self.assertEqual(samples[f'rcn_pair_state{{{labels},state="duplex"}}'], 1.0)
            self.assertEqual(samples["rcn_pair_control_sent_total"], 2.0)   # PAIR_CREATE, DUPLEX
        return self.scrape().addCallback(check)

    def test_rio_target_applied_and_refused(self):
        def command(lun: int, lba: int, data: bytes):
            cdb = fcp.build_write16(lba, len(data) // 512)
            return ScsiCommand(0x010100, PARTNER_WWN, 0x010200, ARRAY_WWN, lun, cdb,
                               fcp.parse_cdb(cdb), data=data)
        self.assertTrue(self.array.target.execute(command(1, 0, bytes(1024))).good)
        self.assertTrue(self.array.target.execute(command(1, 2, bytes(512))).good)
        self.assertFalse(self.array.target.execute(command(9, 0, bytes(512))).good)

        self.assertFalse(self.array.target.execute(command(0, 0, bytes(512))).good)  # a source

        def check(result):
            samples, _ = result
            self.assertEqual((samples["rcn_rio_target_applied_total"],
                              samples["rcn_rio_target_refused_total"]), (2.0, 2.0))
        return self.scrape().addCallback(check)

    def test_link_down_gauge_0_and_no_link_families(self):
        def check(result):
            samples, _ = result
            self.assertEqual(samples["rcn_rio_link_up"], 0.0)
            self.assertEqual(samples["rcn_rio_link_connections_total"], 0.0)
            self.assertEqual([k for k in samples if k.startswith(("rcn_fcip_", "rcn_rio_port_"))],
                             [])
        return self.scrape().addCallback(check)

    def test_link_up_gauge_1_with_fcip_and_port_counters(self):
        transport = StringTransport()
        protocol = self.array.rio.buildProtocol(None)
        protocol.makeConnection(transport)         # the array sends FLOGI at once
        port = self.array.rio.port

        def up(result):
            samples, types = result
            self.assertEqual(samples["rcn_rio_link_up"], 1.0)
            self.assertEqual(samples["rcn_rio_link_connections_total"], 1.0)
            self.assertGreater(protocol.frames_out, 0)
            self.assertEqual(samples["rcn_fcip_frames_out_total"], protocol.frames_out)
            self.assertEqual(samples["rcn_fcip_bytes_out_total"], len(transport.value()))
            self.assertEqual(samples["rcn_fcip_crc_errors_total"], 0.0)
            self.assertEqual(samples["rcn_rio_port_originated_total"],
                             port.table.counters["originated"])
            self.assertGreater(samples["rcn_rio_port_originated_total"], 0)
            self.assertNotIn("rcn_rio_port_frames_out_total", samples)   # only under fcip
            self.assertEqual(types["rcn_fcip_frames_out"], "counter")
            protocol.connectionLost(None)
            return self.scrape()

        def down(result):
            samples, _ = result
            self.assertEqual(samples["rcn_rio_link_up"], 0.0)
            self.assertNotIn("rcn_fcip_frames_out_total", samples)
        return self.scrape().addCallback(up).addCallback(down)

    def test_status_is_still_json_and_post_metrics_is_405(self):
        def status(result):
            response, body = result
            self.assertEqual(json.loads(body)["edge_link"], "down")
            return self.fetch("/metrics", b"POST")

        def post(result):
            response, body = result
            self.assertEqual(response.code, 405)
            self.assertIn("error", json.loads(body))
        return self.fetch("/status").addCallback(status).addCallback(post)


class NoMetricsTests(TestCase):
    def test_metrics_is_404_without_a_metrics_resource(self):
        request = DummyRequest([b"metrics"])
        body = ControlResource(FakeArray()).render(request)
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(json.loads(body)["error"],
                         "no resource /metrics; try /status, /volumes, /pairs")


class PartnerTests(TestCase):
    def test_partners_to_log_in_to(self):
        directory = self.mktemp()
        os.makedirs(directory)
        extra = 0x500A098000000009
        config = StorageConfig(
            wwpn=ARRAY_WWN, wwnn=ARRAY_WWN & ~1, data_dir=directory,
            nbd="tcp:0:interface=127.0.0.1", control="tcp:0:interface=127.0.0.1",
            edge=EdgeConfig("tcp:127.0.0.1:3225", partners=(extra,)),
            volumes=(VolumeConfig(0, "vol0", MiB), VolumeConfig(1, "vol1", MiB)),
            pairs=(PairConfig(0, PARTNER_WWN, 5, 7, "duplex", "sync"),))
        array = StorageArray(config, task.Clock())
        self.addCleanup(array.close)
        self.assertEqual(array.partners(), {PARTNER_WWN, extra})
        # a partner met by a pair stays one after the pair is gone
        array.remote_copy.known_partners.add(0x500A098000000003)
        self.successResultOf(array.remote_copy.pair_delete(0, local=True))
        self.assertEqual(array.partners(), {extra, 0x500A098000000003})
        # a pair-create names a new partner: logged in to on demand (fails here: no link)
        d = array.remote_copy.pair_create(1, 0x500A098000000004, 0)
        self.assertIn("no link to the edge", str(self.failureResultOf(d).value))
        self.assertNotIn(0x500A098000000004, array.partners())
        self.assertIs(array.rio.partners.__self__, array)
