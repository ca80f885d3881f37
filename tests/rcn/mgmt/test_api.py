"""The REST layer: routing, authentication, body checks, errors as JSON, OpenAPI."""

from __future__ import annotations

import json

import jsonschema
from twisted.internet.defer import succeed
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from rcn.mgmt.api import OPERATOR, ApiError, ApiResource, Caller, Endpoint, openapi

THING = {"type": "object", "required": ["name", "size"], "additionalProperties": False,
         "properties": {"name": {"type": "string", "minLength": 1},
                        "size": {"type": "integer", "minimum": 0}}}


def request(method: str, path: str, body=None, token: str | None = "op") -> DummyRequest:
    req = DummyRequest([p.encode() for p in path.strip("/").split("/") if p])
    req.method = method.encode()
    if token is not None:
        req.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
    if body is not None:
        from io import BytesIO
        req.content = BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
    return req


class ApiTests(TestCase):
    def setUp(self):
        self.things = {1: {"name": "a", "size": 1, "owner": "acme"}}

        def get_thing(caller, params, body):
            thing = self.things.get(params["id"])
            if thing is None or not (caller.operator or thing["owner"] == caller.customer_id):
                raise ApiError(404, f"no thing {params['id']}", "id")
            return thing

        def add_thing(caller, params, body):
            if any(t["name"] == body["name"] for t in self.things.values()):
                raise ApiError(409, f"name {body['name']!r} is taken", "name")
            self.things[len(self.things) + 1] = dict(body, owner=caller.customer_id)
            return succeed((201, {"id": len(self.things)}))

        self.endpoints = [
            Endpoint("GET", "/things/{id:int}", get_thing, "one thing"),
            Endpoint("POST", "/things", add_thing, "add a thing", body=THING, status=201),
            Endpoint("DELETE", "/things/{id:int}", lambda c, p, b: {}, "remove", "operator"),
            Endpoint("GET", "/boom", lambda c, p, b: 1 / 0, "fails"),
        ]
        tokens = {"op": OPERATOR, "acme": Caller(customer_id="acme"),
                  "other": Caller(customer_id="other")}
        self.api = ApiResource(self.endpoints, tokens.get)

    def call(self, *args, **kw) -> tuple[int, dict]:
        req = request(*args, **kw)
        self.api.render(req)
        self.assertTrue(req.finished)
        return req.responseCode or 200, json.loads(b"".join(req.written))

    def test_get_and_post(self):
        self.assertEqual(self.call("GET", "/things/1")[1]["name"], "a")
        self.assertEqual(self.call("POST", "/things", {"name": "b", "size": 2}),
                         (201, {"id": 2}))

    def test_bad_bodies_name_the_field(self):
        for body, field in (({"name": "c"}, "size"), ({"name": "c", "size": "big"}, "size"),
                            ({"name": "", "size": 1}, "name"),
                            ({"name": "c", "size": 1, "colour": 3}, "colour")):
            status, answer = self.call("POST", "/things", body)
            self.assertEqual((status, answer["field"]), (400, field), body)
            self.assertIn(field, answer["error"])
        self.assertEqual(self.call("POST", "/things", b"{nope")[0], 400)
        self.assertIn("JSON body", self.call("POST", "/things", b"")[1]["error"])

    def test_auth_access_and_isolation(self):
        self.assertEqual(self.call("GET", "/things/1", token=None)[0], 401)
        self.assertEqual(self.call("GET", "/things/1", token="wrong")[0], 401)
        self.assertEqual(self.call("GET", "/things/1", token="acme")[0], 200)
        status, answer = self.call("GET", "/things/1", token="other")
        self.assertEqual(status, 404)                 # another customer's: not found
        self.assertNotIn("size", json.dumps(answer))
        self.assertEqual(self.call("DELETE", "/things/1", token="acme")[0], 403)

    def test_unknown_paths_methods_conflicts_and_crashes(self):
        self.assertEqual(self.call("GET", "/nothing")[0], 404)
        self.assertEqual(self.call("GET", "/things/x")[0], 404)
        req = request("PUT", "/things/1")
        self.api.render(req)
        self.assertEqual(req.responseCode, 405)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"allow"), [b"DELETE, GET"])
        self.call("POST", "/things", {"name": "b", "size": 2})
        self.assertEqual(self.call("POST", "/things", {"name": "b", "size": 3})[0], 409)
        status, answer = self.call("GET", "/boom")
        self.assertEqual((status, answer["error"]), (500, "internal error (logged by the server)"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_100000_deep_body_is_refused_400_before_parsing(self):
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                     b"[" * 33 + b"]" * 33):
            status, answer = self.call("POST", "/things", body)
            self.assertEqual(status, 400)
            self.assertIn("deeper than 32 levels", answer["error"])
        # brackets inside strings are text, not nesting
        status, answer = self.call("POST", "/things", {"name": "[" * 100 + '\\"{', "size": 1})
        self.assertEqual(status, 201, answer)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_numbers_a_body_cannot_hold_are_refused_400(self):
        for text, words in ((b"NaN", "NaN is not a JSON number"),
                            (b"-Infinity", "-Infinity is not a JSON number"),
                            (b"1e400", "overflows a double"),
                            (b"18446744073709551616", "outside"),           # 2^64
                            (b"-9223372036854775809", "outside"),           # -2^63 - 1
                            (b"9" * 5000, "outside")):
            status, answer = self.call("POST", "/things", b'{"name": "n", "size": %s}' % text)
            self.assertEqual(status, 400, text[:30])
            self.assertIn(words, answer["error"])
        biggest = b'{"name": "n", "size": 18446744073709551615}'              # 2^64 - 1
        self.assertEqual(self.call("POST", "/things", biggest)[0], 201)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_int_path_parameter_sqlite_cannot_hold_is_not_found(self):
        seen = []
        self.endpoints[0] = Endpoint("GET", "/things/{id:int}",
                                     lambda c, p, b: seen.append(p["id"]) or {}, "one thing")
        for text in ("9" * 26, "-" + "9" * 26, "9223372036854775808", "9" * 5000,
                     "\u0661\u0662", "\u00b2", "1.0"):
            status, answer = self.call("GET", f"/things/{text}")
            self.assertEqual((status, answer["field"]), (404, "id"), text[:30])
        for edge in (-(1 << 63), (1 << 63) - 1):
            self.assertEqual(self.call("GET", f"/things/{edge}")[0], 200)
        self.assertEqual(seen, [-(1 << 63), (1 << 63) - 1])

    def test_openapi_document(self):
        doc = openapi(self.endpoints, "test", "1")
        self.assertEqual(sorted(doc["paths"]), ["/boom", "/things", "/things/{id}"])
        op = doc["paths"]["/things"]["post"]
        self.assertEqual(op["requestBody"]["content"]["application/json"]["schema"], THING)
        self.assertEqual(doc["paths"]["/things/{id}"]["get"]["parameters"][0]["schema"],
                         {"type": "integer"})
        jsonschema.Draft202012Validator.check_schema(THING)
        json.dumps(doc)
