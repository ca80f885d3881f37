"""The array's control interface: JSON over HTTP (what ``rcn array`` talks to).

======  ========================  ==================================================
method  path                      answer
======  ========================  ==================================================
GET     /status                   array names, edge link, counters
GET     /volumes                  the volumes: LUN, export name, capacity, file
GET     /pairs                    the pair table
GET     /pairs/<lun>              one pair: state, role, dirty tracks, copy progress,
                                  last error, last residual report
POST    /pairs                    pair-create ``{"lun", "partner_wwpn", "partner_lun",
                                  "mode"?, "group"?}``: 201 with the pair once the
                                  partner took it (ICOK); the initial copy runs on
POST    /pairs/<lun>/suspend      ``{"fast"?}``: suspend (at a target: failover)
POST    /pairs/<lun>/resync       resync: 200 once the differential copy has started
POST    /pairs/<lun>/takeover     takeover (at a target)
POST    /pairs/<lun>/reverse      turn a suspended pair round (this array's row only)
DELETE  /pairs/<lun>[?local=1]    pair-delete (``local``: without telling the partner)
GET     /metrics                  Prometheus text format (the ``metrics`` resource)
======  ========================  ==================================================

Every answer but /metrics is a JSON object. Errors are ``{"error": "..."}``:
400 a bad request body (the message names the field), 404 no such path, volume
or pair, 405 method not allowed, 409 refused by a pair's state (named) or by the
partner (its answer explained), 503 no answer from the partner (no link to the
edge, a timeout). ``partner_wwpn`` is a WWN string (``"50:0a:09:80:00:00:00:02"``
or 16 hex digits). Pair commands need an array with a ``remote_copy``
(:class:`rcn.storage.remotecopy.RemoteCopy`); without one only GET is allowed.
"""

from __future__ import annotations

import json
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import resource, server

from datapath.frames.names import parse_wwn
from rcn.pairstate import PairStateError
from rcn.storage.copyerrors import BadRequest, NotFound, RemoteCopyError

_log = Logger()
_COMMANDS = ("suspend", "resync", "takeover", "reverse")


class Describable(Protocol):
    def describe_status(self) -> dict: ...
    def describe_volumes(self) -> list[dict]: ...
    def describe_pairs(self) -> list[dict]: ...


def _json(request, code: int, body) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: tuple[str, ...]):
        self.allowed = allowed


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, RemoteCopyError):
        return exc.http_status
    if isinstance(exc, PairStateError):
        return 409
    return None


def _integer(body: dict, key: str, default=..., low: int = 0, high: int = (1 << 32) - 1) -> int:
    if key not in body:
        if default is ...:
            raise BadRequest(f"{key}: missing")
        return default
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key}: expected an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise BadRequest(f"{key}: {value} is outside {low}..{high}")
    return value


def _wwn(body: dict, key: str) -> int:
    if key not in body:
        raise BadRequest(f"{key}: missing")
    value = body[key]
    if not isinstance(value, str):
        raise BadRequest(f"{key}: expected a WWN string, got {json.dumps(value)}")
    try:
        return parse_wwn(value)
    except ValueError as exc:
        raise BadRequest(f"{key}: {exc}") from None


def _only(body: dict, known: set[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise BadRequest(f"{extra[0]}: unknown field (known: {', '.join(sorted(known)) or 'none'})")


class ControlResource(resource.Resource):
    """Routes by path and method (see the module doc)."""

    isLeaf = True

    def __init__(self, array: Describable, metrics: resource.Resource | None = None):
        super().__init__()
        self.array = array
        self.metrics = metrics          # a rcn.metrics.MetricsResource; None: no /metrics

    @property
    def remote_copy(self):
        return getattr(self.array, "remote_copy", None)

    @property
    def _commands(self) -> bool:
        return self.remote_copy is not None

    def render(self, request):
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        method = request.method.decode("ascii", "replace")
        if parts == ["metrics"] and self.metrics is not None and method in ("GET", "HEAD"):
            return self.metrics.render(request)
        try:
            outcome = self._route(method, parts, request)
        except _MethodNotAllowed as exc:
            request.setHeader(b"allow", ", ".join(exc.allowed).encode())
            return _json(request, 405, {"error": f"{method} is not allowed on "
                                                 f"/{'/'.join(parts)} (allowed: "
                                                 f"{', '.join(exc.allowed)})"})
        except Exception as exc:
            return self._error(request, exc)
        if not isinstance(outcome, Deferred):
            return _json(request, *outcome)
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(result):
            if not gone:
                request.write(_json(request, *result))
                request.finish()

        def failed(failure):
            if not gone:
                request.write(self._error(request, failure.value, failure))
                request.finish()
        outcome.addCallbacks(answer, failed)
        return server.NOT_DONE_YET

    def _error(self, request, exc: BaseException, failure=None) -> bytes:
        code = _status_of(exc)
        if code is None:
            if failure is not None:
                _log.failure("control API: {method} {path} failed", failure,
                             method=request.method, path=request.path)
            else:
                _log.failure("control API: {method} {path} failed", method=request.method,
                             path=request.path)
            return _json(request, 500, {"error": f"internal error: {exc!r}; see the daemon's log"})
        return _json(request, code, {"error": str(exc)})

    def _route(self, method: str, parts: list[str], request):
        """(code, body), a Deferred of it, or an exception."""
        if parts == ["metrics"] and self.metrics is not None:
            self._allow(method, ("GET", "HEAD"))          # (GET was served in render)
        if parts == ["status"]:
            self._allow(method, ("GET", "HEAD"))
            return 200, self.array.describe_status()
        if parts == ["volumes"]:
            self._allow(method, ("GET", "HEAD"))
            return 200, {"volumes": self.array.describe_volumes()}
        if parts == ["pairs"]:
            self._allow(method, ("GET", "HEAD", "POST") if self._commands else ("GET", "HEAD"))
            if method == "POST":
                return self._create(self._body(request))
            return 200, {"pairs": self.array.describe_pairs()}
        if len(parts) == 2 and parts[0] == "pairs":
            self._allow(method, ("GET", "HEAD", "DELETE") if self._commands else ("GET", "HEAD"))
            lun = self._lun(parts[1])
            if method == "DELETE":
                local = request.args.get(b"local", [b"0"])[-1].decode("ascii", "replace").lower()
                if local not in ("0", "1", "true", "false", ""):
                    raise BadRequest(f"local: {local!r} is not 1, 0, true or false")
                return self._later(self.remote_copy.pair_delete(lun, local=local in ("1", "true")))
            for pair in self.array.describe_pairs():
                if pair["lun"] == lun:
                    return 200, pair
            raise NotFound(f"LUN {lun} has no pair")
        if len(parts) == 3 and parts[0] == "pairs" and parts[2] in _COMMANDS and self._commands:
            self._allow(method, ("POST",))
            lun = self._lun(parts[1])
            body = self._body(request)
            if parts[2] == "suspend":
                _only(body, {"fast"})
                fast = body.get("fast", False)
                if not isinstance(fast, bool):
                    raise BadRequest(f"fast: expected true or false, got {json.dumps(fast)}")
                return self._later(self.remote_copy.suspend(lun, fast=fast))
            _only(body, set())
            return self._later(getattr(self.remote_copy, parts[2])(lun))
        hint = "/status, /volumes, /pairs" + (", /metrics" if self.metrics is not None else "")
        raise NotFound(f"no resource /{'/'.join(parts)}; try {hint}")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise _MethodNotAllowed(allowed)

    @staticmethod
    def _lun(text: str) -> int:
        if not text.isdigit():
            raise BadRequest(f"lun: {text!r} in the path is not a LUN number")
        return int(text)

    @staticmethod
    def _body(request) -> dict:
        raw = request.content.read() if request.content is not None else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body: not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"body: expected a JSON object, got {type(body).__name__}")
        return body

    def _create(self, body: dict):
        _only(body, {"lun", "partner_wwpn", "partner_lun", "mode", "group"})
        lun = _integer(body, "lun", high=(1 << 14) - 1)
        partner = _wwn(body, "partner_wwpn")
        partner_lun = _integer(body, "partner_lun", high=(1 << 14) - 1)
        mode = body.get("mode", "sync")
        if mode not in ("sync", "async"):
            raise BadRequest(f"mode: {json.dumps(mode)} is not \"sync\" or \"async\"")
        group = _integer(body, "group", 0)
        d = self.remote_copy.pair_create(lun, partner, partner_lun, mode=mode, group=group)
        return d.addCallback(lambda pair: (201, pair))

    @staticmethod
    def _later(d: Deferred) -> Deferred:
        return d.addCallback(lambda pair: (200, pair))
