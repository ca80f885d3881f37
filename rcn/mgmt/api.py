"""A small JSON REST layer over ``twisted.web``: routes, authentication, OpenAPI.

The management server declares its endpoints as :class:`Endpoint` rows (method,
path template such as ``/pairs/{id}``, handler, who may call it, JSON Schemas of
the body and the answer); :class:`ApiResource` serves them and
:func:`openapi` turns the same rows into the OpenAPI 3.1 document the daemon
serves at ``/openapi.json``, so the document cannot drift from the code.

Requests: a bearer token (``Authorization: Bearer TOKEN``) names the caller --
the operator or one customer -- through the injected ``authenticate``. A body
is JSON checked against the endpoint's schema (``jsonschema``); a path
parameter declared ``int`` is converted, and one that is not a number or is
outside SQLite's signed 64-bit range (:data:`ID_RANGE`) is simply not found
(404): no id beyond it can exist (``Endpoint.match``, the one place path ids
are parsed). Handlers are called as ``handler(caller, params, body)`` and
return ``(status, body)`` or a Deferred of it, or raise :class:`ApiError`.

Errors are always JSON ``{"error": message, "field": name-or-null}``: 400 bad
JSON or a body that breaks the schema (the message names the field), or a body
over :data:`MAX_BODY` bytes, nested deeper than :data:`MAX_DEPTH`, with ``NaN``,
``Infinity``, a number that overflows a double or an integer outside
:data:`INT_RANGE` (``_json_body``, the one place bodies are parsed), 401 no or
unknown token, 403 an operator-only endpoint called by a customer, 404 no such
path or object (also what a customer gets for another customer's object: never
its data), 405 method not allowed (with ``Allow``), 409 a conflict (duplicate,
contract limit), 500 an unexpected error (logged with its traceback, not
shown).

For fuzzers: ``ApiResource.render`` answers every request with a JSON error or the
handler's answer; a 500 or a ``Logger.failure`` is a finding.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import jsonschema
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web import resource, server

from rcn.mgmt.model import OPERATOR, Caller  # noqa: F401 (the API's callers)
from rcn.web import MAX_BODY

_log = Logger()
MAX_DEPTH = 32              # nesting of arrays and objects in a body (settings use 3)
#: an integer path parameter (an id) SQLite can hold; others are not found
ID_RANGE = range(-(1 << 63), 1 << 63)
#: integers a body may carry: 64 bits, signed or not (a WWN may be given as a number);
#: the settings check each field's own range
INT_RANGE = range(-(1 << 63), 1 << 64)


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str                                    # "/pairs/{id}"; {name} or {name:int}
    handler: Callable
    summary: str
    access: str = "any"                          # "any" authenticated caller, or "operator"
    body: dict | None = None                     # JSON Schema of the request body
    answer: dict = field(default_factory=lambda: {"type": "object"})
    status: int = 200                            # the success status

    def __post_init__(self):
        parts, params = [], []
        for piece in self.path.strip("/").split("/"):
            m = re.fullmatch(r"\{(\w+)(?::(int))?\}", piece)
            if m:
                params.append((m.group(1), m.group(2) or "str"))
                parts.append(r"([^/]+)")
            else:
                parts.append(re.escape(piece))
        object.__setattr__(self, "_regex", re.compile("^/" + "/".join(parts) + "$"))
        object.__setattr__(self, "_params", tuple(params))
        if self.access not in ("any", "operator"):
            raise ValueError(f"{self.method} {self.path}: access must be any or operator")

    def match(self, path: str) -> dict | None:
        m = self._regex.match(path)
        if m is None:
            return None
        out = {}
        for (name, kind), text in zip(self._params, m.groups()):
            if kind == "int":
                # [0-9], not \d (which takes other scripts' digits); 20 digits bound the
                # work before int()
                if not re.fullmatch(r"-?[0-9]{1,20}", text) or int(text) not in ID_RANGE:
                    raise ApiError(404, f"no such {name}: {text[:40]!r} is not a number "
                                        f"from {ID_RANGE.start} to {ID_RANGE.stop - 1}", name)
                out[name] = int(text)
            else:
                out[name] = text
        return out


def _field_of(error: jsonschema.ValidationError) -> str | None:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        path.append(missing.group(1) if missing else "?")
    elif error.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)'", error.message)
        path.append(extra[0] if extra else "?")
    return ".".join(path) or None


def check_body(schema: dict, body: Any) -> None:
    """``ApiError(400)`` naming the first field that breaks ``schema``."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        name = _field_of(error)
        raise ApiError(400, f"{name or 'body'}: {error.message}", name)


class ApiResource(resource.Resource):
    """Serves ``endpoints`` under this resource (see the module doc)."""

    isLeaf = True

    def __init__(self, endpoints: list[Endpoint], authenticate: Callable[[str | None],
                                                                          Caller | None]):
        super().__init__()
        self.endpoints = endpoints
        self.authenticate = authenticate
        self.counters = {"requests": 0, "errors": 0}

    def render(self, request):
        self.counters["requests"] += 1
        d = maybeDeferred(self._dispatch, request)
        d.addErrback(self._error)
        d.addCallback(self._write, request)
        return server.NOT_DONE_YET

    def _dispatch(self, request):
        path = "/" + "/".join(p.decode("utf-8", "replace") for p in request.postpath if p)
        method = request.method.decode("latin-1")
        allowed, found = [], None
        for endpoint in self.endpoints:
            params = endpoint.match(path)
            if params is None:
                continue
            allowed.append(endpoint.method)
            if endpoint.method == method:
                found = (endpoint, params)
                break
        if found is None:
            if allowed:
                request.setHeader(b"allow", ", ".join(sorted(set(allowed))).encode())
                raise ApiError(405, f"{method} is not allowed on {path}; allowed: "
                                    f"{', '.join(sorted(set(allowed)))}")
            raise ApiError(404, f"no such path {path}")
        endpoint, params = found
        caller = self.authenticate(_token(request))
        if caller is None:
            raise ApiError(401, "a valid token is needed (Authorization: Bearer TOKEN)")
        if endpoint.access == "operator" and not caller.operator:
            raise ApiError(403, f"{endpoint.method} {endpoint.path} is for the operator")
        body = None
        if endpoint.body is not None:
            body = _json_body(request)
            check_body(endpoint.body, body)
        d = maybeDeferred(endpoint.handler, caller, params, body)
        return d.addCallback(lambda answer: answer if isinstance(answer, tuple)
                             else (endpoint.status, answer))

    def _error(self, failure):
        if failure.check(ApiError):
            error = failure.value
            return error.status, {"error": error.message, "field": error.field}
        _log.failure("API handler failed", failure)
        return 500, {"error": "internal error (logged by the server)", "field": None}

    def _write(self, answer, request) -> None:
        status, body = answer
        if status >= 400:
            self.counters["errors"] += 1
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(json.dumps(body, sort_keys=True).encode() + b"\n")
            request.finish()


def _token(request) -> str | None:
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _json_body(request) -> Any:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise ApiError(400, f"body over {MAX_BODY} bytes")
    if not raw.strip():
        raise ApiError(400, "a JSON body is needed")
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise ApiError(400, f"the body nests arrays and objects deeper than {MAX_DEPTH} "
                            f"levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_int=_int,
                          parse_float=_float)
    except ValueError as exc:           # UnicodeDecodeError and JSONDecodeError too
        raise ApiError(400, f"the body is not JSON: {exc}") from None


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _depth(raw: bytes) -> int:
    """How deep ``raw``'s arrays and objects nest (brackets in strings do not count),
    counted only as far as :data:`MAX_DEPTH` + 1: ``json.loads`` recurses per level and
    fails with RecursionError at about 1,000."""
    depth = deepest = 0
    for c in _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if c in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return depth
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    # json.loads calls this for every integer literal; int() refuses over 4300 digits
    value = int(text) if len(text) <= 21 else None
    if value is None or not INT_RANGE.start <= value < INT_RANGE.stop:
        raise ValueError(f"the integer {text[:30]}{'...' if len(text) > 30 else ''} is "
                         f"outside {INT_RANGE.start}..{INT_RANGE.stop - 1}")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:30]} overflows a double")
    return value


def openapi(endpoints: list[Endpoint], title: str, version: str) -> dict:
    """The OpenAPI 3.1 document of ``endpoints``."""
    paths: dict = {}
    error = {"type": "object", "properties": {"error": {"type": "string"},
                                              "field": {"type": ["string", "null"]}}}
    for e in endpoints:
        params = [{"name": n, "in": "path", "required": True,
                   "schema": {"type": "integer" if k == "int" else "string"}}
                  for n, k in e._params]
        op = {"summary": e.summary, "security": [{"token": []}],
              "responses": {str(e.status): {"description": "done", "content": {
                  "application/json": {"schema": e.answer}}},
                  "default": {"description": "an error", "content": {
                      "application/json": {"schema": error}}}}}
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": e.body}}}
        if e.access == "operator":
            op["description"] = "Operator only."
        path = re.sub(r"\{(\w+):int\}", r"{\1}", e.path)
        paths.setdefault(path, {})[e.method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": title, "version": version},
            "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
            "paths": paths}
