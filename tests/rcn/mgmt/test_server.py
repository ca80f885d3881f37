"""The management server through its REST API: every endpoint, refusals, isolation,
routes recomputed and distributed, figures collected (in memory: DummyRequest, iosim)."""

from __future__ import annotations

import json
import re
from io import BytesIO

from twisted.internet import task
from twisted.test import iosim
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import REROUTE_STEP, MgmtServer
from rcn.mgmt.service import site
from rcn.mgmt.store import SQLiteStore
from rcn.mgmtlink.client import MgmtClient

S1, T1 = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
S2, T2 = "50:0a:09:80:00:00:00:11", "50:0a:09:80:00:00:00:12"


class ServerTestCase(TestCase):
    """A server with four devices, two customers and their storages; API calls."""

    def setUp(self):
        self.clock = task.Clock()
        self.server = MgmtServer(self.clock, SQLiteStore(":memory:"))
        self.server.settings.set_token(OPERATOR, None, "operator-token-0123456789")
        self.site, self.api, self.metrics = site(self.server)
        for name, role, port in (("edgeA", "edge", 1), ("edgeB", "edge", 2), ("core1", "core", 3),
                                 ("core2", "core", 4)):
            self.ok("POST", "/devices", {"id": name, "role": role,
                                         "log_address": f"127.0.0.1:4700{port}",
                                         "processing_limit": 1000 if role == "core" else 0})
        for a, b in (("edgeA", "core1"), ("core1", "edgeB"), ("edgeA", "core2"),
                     ("core2", "edgeB")):
            self.ok("POST", "/links", {"a": a, "b": b, "capacity": 1e9})
        self.acme = self.ok("POST", "/customers", {"id": "acme", "max_pairs": 1})["token"]
        self.globex = self.ok("POST", "/customers", {"id": "globex"})["token"]
        for wwn, edge, customer in ((S1, "edgeA", "acme"), (T1, "edgeB", "acme"),
                                    (S2, "edgeA", "globex"), (T2, "edgeB", "globex")):
            self.ok("POST", "/storages", {"storage_wwn": wwn, "edge_id": edge,
                                          "customer_id": customer})

    def call(self, method, path, body=None, token="operator-token-0123456789"):
        req = DummyRequest([p.encode() for p in ("api/v1" + path).strip("/").split("/")])
        req.method = method.encode()
        if token:
            req.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
        if body is not None:
            req.content = BytesIO(json.dumps(body).encode())
        resource = self.site.resource
        while not resource.isLeaf:
            resource = resource.getChildWithDefault(req.postpath.pop(0), req)
            req.prepath.append(b"")
        resource.render(req)
        return req.responseCode or 200, json.loads(b"".join(req.written))

    def ok(self, method, path, body=None, token="operator-token-0123456789"):
        status, answer = self.call(method, path, body, token)
        self.assertLess(status, 300, (method, path, answer))
        return answer

    def pair(self, token, source, target, **kw):
        return self.call("POST", "/pairs", dict({"source_wwn": source, "source_lun": 0,
                                                 "target_wwn": target, "target_lun": 0,
                                                 "policy": "A-1", "load_entries": 100}, **kw),
                         token)



class ServerApiTests(ServerTestCase):
    def test_pairs_get_routes_and_customers_see_only_their_own(self):
        status, mine = self.pair(self.acme, S1, T1)
        self.assertEqual(status, 201)
        status, theirs = self.pair(self.globex, S2, T2)
        self.assertEqual(status, 201)
        routes = self.ok("GET", "/routes")["routes"]
        self.assertEqual(len(routes), 4)                 # both pairs, each way (failback)
        for route in routes:
            self.assertEqual(len(route["path"]), 3)      # one core between the edges
        acme_view = self.ok("GET", "/pairs", token=self.acme)["pairs"]
        self.assertEqual([p["id"] for p in acme_view], [mine["id"]])
        status, answer = self.call("GET", f"/pairs/{theirs['id']}", token=self.acme)
        self.assertEqual(status, 404)
        self.assertNotIn("globex", json.dumps(answer))
        self.assertEqual(self.call("DELETE", f"/pairs/{theirs['id']}", token=self.acme)[0], 404)
        self.assertEqual(len(self.ok("GET", "/routes", token=self.acme)["routes"]), 2)
        self.assertEqual(self.call("GET", "/customers", token=self.acme)[0], 403)
        self.assertEqual(self.call("POST", "/devices", {"id": "x"}, token=self.acme)[0], 403)
        topo = self.ok("GET", "/topology", token=self.acme)
        self.assertEqual({d["id"] for d in topo["devices"]} - {"core1", "core2"},
                         {"edgeA", "edgeB"})

    def test_refusals_name_the_field_or_the_limit(self):
        self.assertEqual(self.pair(self.acme, S1, T1)[0], 201)
        status, answer = self.pair(self.acme, S1, T1, source_lun=1)
        self.assertEqual(status, 409)
        self.assertIn("max_pairs is 1", answer["error"])
        status, answer = self.pair(self.globex, S2, T2, source_lun="zero")
        self.assertEqual((status, answer["field"]), (400, "source_lun"))
        status, answer = self.call("POST", "/devices", {"id": "edgeA", "role": "edge",
                                                        "log_address": "127.0.0.1:47009"})
        self.assertEqual(status, 409)
        status, answer = self.call("POST", "/storages", {"storage_wwn": "nonsense",
                                                         "edge_id": "edgeA"}, token=self.acme)
        self.assertEqual((status, answer["field"]), (400, "storage_wwn"))
        self.assertEqual(self.call("GET", "/pairs", token="nobody-knows-this-token")[0], 401)
        self.assertEqual(self.call("GET", "/pairs/abc")[0], 404)

    def test_a_lost_core_is_routed_around_and_devices_get_the_new_snapshot(self):
        self.pair(self.acme, S1, T1)
        versions = {}
        pumps = {}
        for name, role, address in (("edgeA", "edge", "127.0.0.1:47001"),
                                    ("core1", "core", "127.0.0.1:47003"),
                                    ("core2", "core", "127.0.0.1:47004")):
            client = MgmtClient(self.clock, name, role, address,
                                lambda v, doc, name=name: versions.__setitem__(name, (v, doc)),
                                lambda: {"groups": []}, lambda g: {})
            _, _, pump = iosim.connectedServerAndClient(
                lambda: self.server.distribution.factory().buildProtocol(None),
                lambda client=client: client.buildProtocol(None))
            pumps[name] = pump
        self.clock.advance(0)
        for pump in pumps.values():
            pump.flush()
        path = versions["edgeA"][1]["route"][0]["path"]
        used = "core1" if "127.0.0.1:47003" in path else "core2"
        self.assertIn(used, versions)
        # the used core goes away: routes avoid it and the edge hears of it
        pumps[used].server.transport.loseConnection()
        pumps[used].flush()
        self.assertTrue(self.server.check_health())
        for pump in pumps.values():
            pump.flush()
        version, doc = versions["edgeA"]
        self.assertEqual(version, self.server.version)
        self.assertEqual(version % REROUTE_STEP, 1)
        other = "127.0.0.1:47004" if used == "core1" else "127.0.0.1:47003"
        self.assertIn(other, doc["route"][0]["path"])
        devices = {d["id"]: d for d in self.ok("GET", "/devices")["devices"]}
        self.assertFalse(devices[used]["connected"])
        self.assertTrue(devices["edgeA"]["up_to_date"])

    def test_with_no_way_around_a_lost_device_the_path_through_it_stays(self):
        self.pair(self.acme, S1, T1)
        before = dict(self.server.routing.routes)
        self.server.failed = frozenset({"core1", "core2"})
        routing = self.server.recompute()
        self.assertEqual(routing.routes, before)
        self.assertEqual(routing.infeasible, {})


    def connect_edges(self, figures: dict) -> list:
        """edgeA and edgeB as AMP clients of the server (iosim), reporting ``figures[name]``;
        their pumps."""
        pumps = []
        for name, address in (("edgeA", "127.0.0.1:47001"), ("edgeB", "127.0.0.1:47002")):
            client = MgmtClient(self.clock, name, "edge", address, lambda v, doc: None,
                                lambda name=name: figures[name], lambda g: {})
            pumps.append(iosim.connectedServerAndClient(
                lambda: self.server.distribution.factory().buildProtocol(None),
                lambda client=client: client.buildProtocol(None))[2])
        return pumps
    def test_status_lag_and_metrics_from_reports(self):
        pair = self.pair(self.acme, S1, T1)[1]
        group = pair["group"]
        row = {"source_wwn": S1, "source_lun": 0, "target_wwn": T1, "target_lun": 0,
               "state": "duplex"}
        figures = {"edgeA": {"pairs": [row], "groups": [{"group": group,
                                                         "log_retained_entries": 3}]},
                   "edgeB": {"pairs": [], "groups": [{"group": group, "lag_s": 0.0,
                                                      "applied_bytes": 0}]}}
        pumps = self.connect_edges(figures)
        for step in (1, 2):
            figures["edgeB"]["groups"][0].update(lag_s=0.02 * step, applied_bytes=4096 * step)
            self.clock.advance(1.0)
            for pump in pumps:
                pump.flush()
        (mine,) = self.ok("GET", "/status", token=self.acme)["pairs"]
        self.assertEqual((mine["state"], mine["residual_entries"]), ("duplex", 3))
        self.assertAlmostEqual(mine["lag_s"], 0.04)
        self.assertAlmostEqual(mine["throughput_bps"], 4096.0)
        series = self.ok("GET", "/lag", token=self.acme)["series"][str(group)]
        self.assertEqual([round(lag, 3) for _, lag in series][-2:], [0.02, 0.04])
        text = self.metrics.render().decode()
        self.assertIn('rcn_mgmt_pair_residual_entries{customer="acme",pair="%d"} 3.0'
                      % pair["id"], text)
        self.assertIn('rcn_mgmt_pair_lag_seconds{customer="acme",pair="%d"} 0.04'
                      % pair["id"], text)
        # the other customer sees none of it
        self.assertEqual(self.ok("GET", "/status", token=self.globex)["pairs"], [])

    def test_reports_of_the_wrong_shape_read_as_absent_and_are_counted(self):
        pair = self.pair(self.acme, S1, T1)[1]
        group = pair["group"]
        row = {"source_wwn": S1, "source_lun": 0, "target_wwn": T1, "target_lun": 0}
        reports = [{"pairs": [{}]}, {"pairs": "x"}, {"pairs": [1], "groups": 5},
                   {"pairs": [dict(row, state={"a": 1})],
                    "groups": [1, {"group": group, "lag_s": "slow", "applied_bytes": 10 ** 400,
                                   "log_retained_entries": [3]}]}]
        figures = {"edgeA": {}, "edgeB": {}}
        pumps = self.connect_edges(figures)
        for report in reports:
            figures["edgeA"] = figures["edgeB"] = report
            for _ in range(2):
                self.clock.advance(1.0)
                for pump in pumps:
                    pump.flush()
            for path in ("/pairs", "/status", "/lag", f"/pairs/{pair['id']}"):
                self.ok("GET", path)
            (shown,) = self.ok("GET", "/pairs")["pairs"]
            self.assertEqual((shown["state"], shown["lag_s"], shown["residual_entries"],
                              shown["throughput_bps"]), (None, None, None, None), report)
            self.assertIn("rcn_mgmt_bad_figures_total", self.metrics.render().decode())
        # two devices, two reports each, of the last three shapes (a row {} is an object)
        self.assertEqual(self.server.counters["bad_figures"], 2 * 2 * 3)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_openapi_lists_every_endpoint(self):
        from rcn.mgmt.api import openapi
        doc = openapi(self.api.endpoints, "t", "1")
        self.assertIn("/pairs/{id}/residual", doc["paths"])
        self.assertEqual(sorted(doc["paths"]["/pairs/{id}"]), ["delete", "get", "patch"])


class EveryEndpointTests(ServerTestCase):
    """The endpoints the other tests do not reach, each with its refusal."""

    def test_hostile_ids_on_every_route_answer_4xx_json_never_500(self):
        self.assertEqual(self.pair(self.acme, S1, T1)[0], 201)
        # the case: SQLite raised OverflowError, answered 500
        status, answer = self.call("PATCH", "/pairs/" + "9" * 26, {"load_bytes": 1.0})
        self.assertEqual((status, answer["field"]), (404, "id"))
        ids = ["9" * 26, "-" + "9" * 26, "9" * 5000, "\u0661", "\x00", "x" * 3000, "-1"]
        for endpoint in self.api.endpoints:
            for text in ids:
                path = re.sub(r"\{\w+(:int)?\}", lambda m: text, endpoint.path)
                if path == endpoint.path and text != ids[0]:
                    continue                 # no parameter: once is enough
                status, answer = self.call(endpoint.method, path,
                                           {} if endpoint.method in ("POST", "PATCH") else None)
                self.assertLess(status, 500, (endpoint.method, path[:60], answer))
                if status >= 400:
                    self.assertIn("error", answer)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_body_number_beyond_a_double_is_refused_400_not_500(self):
        status, answer = self.call("POST", "/links", {"a": "edgeA", "b": "edgeB",
                                                      "capacity": 10 ** 400})
        self.assertEqual(status, 400)
        self.assertIn("outside", answer["error"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_bad_amp_boxes_are_counted_in_metrics(self):
        from tests.rcn.mgmt.test_amp import BoxPeer
        peer, proto = BoxPeer(), self.server.distribution.factory().buildProtocol(None)
        pump = iosim.connect(proto, iosim.FakeTransport(proto, True), peer,
                             iosim.FakeTransport(peer, False))
        peer.send(pump, {})
        peer.send(pump, {b"_answer": b"1"})
        self.assertIn("rcn_mgmt_amp_bad_messages_total 2.0", self.metrics.render().decode())

    def test_customers_devices_links_storages_and_pairs_change_and_go(self):
        # customers: read own, change contract, new token, delete
        self.assertEqual(self.ok("GET", "/customers/acme", token=self.acme)["id"], "acme")
        self.assertEqual(self.call("GET", "/customers/globex", token=self.acme)[0], 403)
        self.assertEqual(self.ok("PATCH", "/customers/acme", {"max_pairs": 5})["max_pairs"], 5)
        new = self.ok("POST", "/customers/acme/token", {})["token"]
        self.assertEqual(self.call("GET", "/pairs", token=self.acme)[0], 401)   # old one: gone
        self.assertEqual(self.ok("GET", "/whoami", token=new)["customer"], "acme")
        self.assertEqual(len(self.ok("GET", "/customers")["customers"]), 2)
        # devices: one, change, refuse unknown
        self.assertEqual(self.ok("GET", "/devices/core1")["role"], "core")
        self.assertEqual(self.ok("PATCH", "/devices/core1", {"processing_limit": 5})
                         ["processing_limit"], 5)
        self.assertEqual(self.call("GET", "/devices/nope")[0], 404)
        # a pair: one, change its load, residual (no edge connected: 503), delete
        status, pair = self.pair(new, S1, T1)
        self.assertEqual(status, 201)
        self.assertEqual(self.ok("PATCH", f"/pairs/{pair['id']}", {"load_bytes": 1e6},
                                 token=new)["load_bytes"], 1e6)
        status, answer = self.call("GET", f"/pairs/{pair['id']}/residual", token=new)
        self.assertEqual(status, 503)
        self.assertIn("edgeA", answer["error"])
        self.assertEqual(self.call("PATCH", f"/pairs/{pair['id']}", {"load_bytes": "x"},
                                   token=new)[1]["field"], "load_bytes")
        self.ok("DELETE", f"/pairs/{pair['id']}", token=new)
        self.assertEqual(self.call("GET", f"/pairs/{pair['id']}", token=new)[0], 404)
        # storages and links go; a device still linked cannot
        self.ok("DELETE", f"/storages/{S2}")
        self.assertEqual(self.call("DELETE", f"/storages/{S2}")[0], 404)
        self.assertEqual(self.call("DELETE", "/devices/core2")[0], 409)
        self.ok("DELETE", "/links/edgeA/core2")
        self.ok("DELETE", "/links/core2/edgeB")
        self.ok("DELETE", "/devices/core2")
        self.assertNotIn("core2", [d["id"] for d in self.ok("GET", "/devices")["devices"]])
        self.assertEqual(self.ok("POST", "/routes/recompute", {})["infeasible"], [])
        self.ok("DELETE", f"/storages/{T2}")
        self.ok("DELETE", "/customers/globex")
        self.assertEqual(self.call("GET", "/customers/globex")[0], 404)
        self.assertEqual(self.call("PUT", "/customers")[0], 405)
