"""The control API's pair commands (POST/DELETE) over a RemoteCopy with a fake session:
status codes, and messages that name the field or the state."""

from __future__ import annotations

import io
import json

from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from datapath.kernels.bitmap import DifferentialBitmap
from rcn.pairstate import PairState
from rcn.rio.fcp import ScsiResult
from rcn.storage.control import ControlResource
from rcn.storage.copyerrors import PartnerUnreachable
from tests.rcn.storage.support import TRACK, MiB, Rig, refused_state

S = PairState


class CommandArray:
    """What ControlResource needs: describe_* and a remote_copy."""

    def __init__(self, rig: Rig):
        self.remote_copy = rig.rc

    def describe_status(self):
        return {}

    def describe_volumes(self):
        return []

    def describe_pairs(self):
        return self.remote_copy.describe_pairs()


class ControlCommandTests(TestCase):
    def setUp(self):
        self.rig = Rig(volumes=((0, 4 * MiB), (1, MiB)))
        self.resource = ControlResource(CommandArray(self.rig))

    def call(self, method: bytes, path: str, body=None, raw: bytes | None = None, args=None):
        request = DummyRequest([p.encode() for p in path.strip("/").split("/")])
        request.method = method
        request.content = io.BytesIO(raw if raw is not None else
                                     json.dumps(body).encode() if body is not None else b"")
        if args:
            request.args = args
        result = self.resource.render(request)
        if result is NOT_DONE_YET:
            if not request.finished:
                return request, None
            result = b"".join(request.written)
        return request.responseCode, json.loads(result)

    def create(self, **overrides):
        body = {"lun": 0, "partner_wwpn": "50:0a:09:80:00:00:00:02", "partner_lun": 5}
        body.update(overrides)
        return self.call(b"POST", "/pairs", {k: v for k, v in body.items() if v is not None})

    def test_create_answers_201_with_the_pair(self):
        self.rig.volumes[0].write(0, b"\x01" * MiB)
        code, pair = self.create(mode="async", group=3)
        self.assertEqual(code, 201)
        self.assertEqual((pair["lun"], pair["partner_wwpn"], pair["partner_lun"], pair["mode"],
                          pair["group"], pair["state"], pair["role"]),
                         (0, "50:0a:09:80:00:00:00:02", 5, "async", 3, "duplex", "source"))
        code, pair = self.call(b"GET", "/pairs/0")
        self.assertEqual(code, 200)
        for key in ("state", "role", "dirty_tracks", "bytes_to_copy", "bytes_copied",
                    "copy_progress", "last_error"):
            self.assertIn(key, pair)
        self.assertEqual((pair["bytes_to_copy"], pair["bytes_copied"], pair["copy_progress"]),
                         (MiB, MiB, 1.0))

    def test_bad_bodies_are_400_naming_the_field(self):
        cases = [
            ({"partner_lun": None}, "partner_lun: missing"),
            ({"partner_wwpn": "nope"}, "partner_wwpn: not a WWN"),
            ({"partner_wwpn": 5}, "partner_wwpn: expected a WWN string"),
            ({"lun": "0"}, 'lun: expected an integer, got "0"'),
            ({"partner_lun": 70000}, "partner_lun: 70000 is outside"),
            ({"mode": "fast"}, 'mode: "fast" is not "sync" or "async"'),
            ({"group": -1}, "group: -1 is outside"),
            ({"colour": "red"}, "colour: unknown field"),
        ]
        for overrides, fragment in cases:
            code, body = self.create(**overrides)
            self.assertEqual(code, 400, overrides)
            self.assertIn(fragment, body["error"])
        code, body = self.call(b"POST", "/pairs", raw=b"{nope")
        self.assertEqual((code, body["error"][:25]), (400, "body: not valid JSON: Exp"))
        code, body = self.call(b"POST", "/pairs", raw=b"[1]")
        self.assertEqual((code, body["error"]), (400, "body: expected a JSON object, got list"))
        code, body = self.call(b"POST", "/pairs/0/suspend", {"fast": "yes"})
        self.assertEqual((code, body["error"]), (400, 'fast: expected true or false, got "yes"'))
        code, body = self.call(b"POST", "/pairs/0/resync", {"now": True})
        self.assertEqual((code, body["error"]), (400, "now: unknown field (known: none)"))
        code, body = self.call(b"GET", "/pairs/zero")
        self.assertEqual((code, body["error"]),
                         (400, "lun: 'zero' in the path is not a LUN number"))
        self.assertEqual(self.rig.session.log, [])

    def test_not_found(self):
        code, body = self.create(lun=9)
        self.assertEqual((code, body["error"][:25]), (404, "LUN 9: no such volume (LU"))
        for method, path in ((b"POST", "/pairs/1/resync"), (b"GET", "/pairs/1"),
                             (b"DELETE", "/pairs/1")):
            code, body = self.call(method, path)
            self.assertEqual((code, body["error"]), (404, "LUN 1 has no pair"))

    def test_state_refusals_are_409_naming_the_state(self):
        self.rig.add_pair(state=S.SIMPLEX)
        code, body = self.call(b"POST", "/pairs/0/resync")
        self.assertEqual(code, 409)
        self.assertIn("is simplex: resync needs suspend or failure-suspend", body["error"])
        code, body = self.call(b"POST", "/pairs/0/takeover")
        self.assertEqual(code, 409)
        self.assertIn("is simplex: takeover is for the target", body["error"])

    def test_partner_refusal_is_409_naming_the_partners_state(self):
        self.rig.add_pair(state=S.SUSPEND)
        self.rig.session.control["RESYNC"] = refused_state(S.DUPLEX)
        code, body = self.call(b"POST", "/pairs/0/resync")
        self.assertEqual(code, 409)
        self.assertIn("RESYNC refused: the partner's pair is duplex", body["error"])
        code, pair = self.call(b"GET", "/pairs/0")
        self.assertIn("the partner's pair is duplex", pair["last_error"])

    def test_no_link_is_503(self):
        self.rig.add_pair(state=S.DUPLEX)
        self.rig.session_error = PartnerUnreachable("rio: no link to the edge")
        code, body = self.call(b"POST", "/pairs/0/suspend")
        self.assertEqual(code, 503)
        self.assertIn("no link to the edge", body["error"])

    def test_commands_answer_when_the_partner_has(self):
        pair = self.rig.add_pair(state=S.SUSPEND)
        pair.bitmap.set_range(0, 4)
        self.rig.session.control["RESYNC"] = ScsiResult(
            data_in=DifferentialBitmap(4 * MiB, TRACK).serialize())
        self.rig.session.hold = True
        request, _ = self.call(b"POST", "/pairs/0/resync")
        self.assertFalse(request.finished)
        self.rig.session.release(1)                     # DPOK; the copy starts
        self.assertTrue(request.finished)
        self.assertEqual(request.responseCode, 200)
        answer = json.loads(b"".join(request.written))
        self.assertEqual((answer["state"], answer["bytes_to_copy"]),
                         ("duplex-pending", 4 * TRACK))

    def test_suspend_reverse_takeover_delete(self):
        self.rig.add_pair(state=S.DUPLEX)
        self.assertEqual(self.call(b"POST", "/pairs/0/suspend", {})[1]["state"], "suspend")
        code, pair = self.call(b"POST", "/pairs/0/reverse")
        self.assertEqual((code, pair["role"], pair["state"]), (200, "target", "suspend"))
        code, body = self.call(b"POST", "/pairs/0/takeover")
        self.assertEqual(code, 409)
        self.assertIn("is suspend: takeover needs", body["error"])
        code, pair = self.call(b"DELETE", "/pairs/0", args={b"local": [b"1"]})
        self.assertEqual((code, pair["state"]), (200, "simplex"))
        self.assertEqual(self.rig.session.controls, ["SUSPEND"])
        self.assertEqual(self.call(b"GET", "/pairs")[1], {"pairs": []})

    def test_delete_bad_local(self):
        self.rig.add_pair(state=S.DUPLEX)
        code, body = self.call(b"DELETE", "/pairs/0", args={b"local": [b"maybe"]})
        self.assertEqual((code, body["error"]), (400, "local: 'maybe' is not 1, 0, true or false"))

    def test_method_not_allowed_names_the_allowed(self):
        request = DummyRequest([b"pairs"])
        request.method = b"PUT"
        body = json.loads(self.resource.render(request))
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"allow"), [b"GET, HEAD, POST"])
        self.assertIn("PUT is not allowed on /pairs", body["error"])
        code, body = self.call(b"GET", "/pairs/0/resync")
        self.assertEqual(code, 405)

    def test_a_closed_connection_does_not_break_the_command(self):
        self.rig.add_pair(state=S.DUPLEX)
        self.rig.session.hold = True
        request, _ = self.call(b"POST", "/pairs/0/suspend")
        request.processingFailed(Failure(ConnectionError("client went away")))
        self.rig.session.release()
        self.assertEqual(self.rig.rc.pairs.for_lun(0).state, S.SUSPEND)
        self.assertEqual((request.written, request.finished), ([], 0))   # nothing written
