"""``rcn-mgmt``'s services: the HTTP site (API, OpenAPI, metrics, dashboard) and AMP.

The site's tree::

    /                 the web dashboard (rcn/mgmt/web: plain HTML and JavaScript)
    /api/v1/...       the REST API (rcn.mgmt.endpoints)
    /openapi.json     the OpenAPI document of that API
    /metrics          Prometheus: per-pair lag and residual entries (labelled by customer),
                      devices up to date, API requests, reports, route recomputations
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web import resource, static
from twisted.web.server import Site

from rcn.console.service import serve_console
from rcn.logxfer.routes import Address
from rcn.metrics import MetricsRegistry, MetricsResource
from rcn.mgmt.api import ApiResource, openapi
from rcn.mgmt.config import ConfigError, MgmtConfig, loopback_endpoint
from rcn.mgmt.console import MgmtConsole
from rcn.mgmt.endpoints import endpoints as api_endpoints
from rcn.mgmt.errors import SettingsError
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import MgmtServer
from rcn.mgmt.store import SQLiteStore
from rcn.tap import OpenAtStart
from rcn.web import BoundedSite

_log = Logger()
WEB = os.path.join(os.path.dirname(__file__), "web")


def operator_token(server: MgmtServer, path: str) -> str:
    """The operator's token: the file's, set in the store; or a new one written there."""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
            server.settings.set_token(OPERATOR, None, token)
        except (OSError, ValueError) as exc:        # ValueError: not UTF-8, a short token
            raise ValueError(f"operator token file {path}: {exc}") from None
        return token
    token = secrets.token_urlsafe(32)
    server.settings.set_token(OPERATOR, None, token)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    _log.info("operator token written to {path}", path=path)
    return token


def build_metrics(server: MgmtServer, api: ApiResource) -> MetricsRegistry:
    m = MetricsRegistry()

    def pairs():
        return server.pair_figures(server.settings.list_pairs(OPERATOR))
    m.labelled("mgmt_pair_lag_seconds", "gauge", "apply lag of each pair's group",
               ("customer", "pair"), lambda: (((p["customer_id"], str(p["id"])), p["lag_s"])
                                              for p in pairs() if p["lag_s"] is not None))
    m.labelled("mgmt_pair_residual_entries", "gauge",
               "entries the source edge still holds for the pair's group",
               ("customer", "pair"),
               lambda: (((p["customer_id"], str(p["id"])), p["residual_entries"])
                        for p in pairs() if p["residual_entries"] is not None))
    m.labelled("mgmt_device_up_to_date", "gauge", "1 when the device runs the current settings",
               ("device",), lambda: (((d["id"],), int(bool(d.get("up_to_date"))))
                                     for d in server.distribution.devices()))
    m.counters("mgmt", lambda: server.counters, "management server events")
    m.counters("mgmt_api", lambda: api.counters, "REST API")
    m.counters("mgmt_amp", lambda: server.distribution.counters,
               "management channel (AMP); bad_messages: boxes answered or dropped as bad")
    m.counters("mgmt_keys", lambda: server.keys.counters,
               "log-transfer keys: made, rotations, activated (once every device has the "
               "new key), retired, late activations and retirements (warned: devices not "
               "acknowledging; never the keys)")
    m.gauge("mgmt_settings_version", lambda: server.version, "the distributed settings version")
    return m


class _Json(resource.Resource):
    isLeaf = True

    def __init__(self, body: dict):
        super().__init__()
        self.body = json.dumps(body, indent=1).encode()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return self.body


def site(server: MgmtServer) -> tuple[Site, ApiResource, MetricsRegistry]:
    root, api, registry = site_root(server)
    return QuietSite(root), api, registry


def site_root(server: MgmtServer) -> tuple[resource.Resource, ApiResource, MetricsRegistry]:
    def authenticate(token):
        try:
            return server.settings.authenticate(token)
        except SettingsError:
            return None
    rows = api_endpoints(server)
    api = ApiResource(rows, authenticate)
    registry = build_metrics(server, api)
    root = static.File(WEB)
    v1 = resource.Resource()
    v1.putChild(b"v1", api)
    root.putChild(b"api", v1)
    root.putChild(b"openapi.json", _Json(openapi(rows, "RCN management API", "1")))
    root.putChild(b"metrics", MetricsResource(registry))
    return root, api, registry


class QuietSite(BoundedSite):
    """No access-log line per request (the dashboard polls the API every second); bodies
    bounded (rcn.web)."""

    def log(self, request):
        if request.code >= 400:
            super().log(request)


class TcpListenService(service.Service):
    """Listens on ``description`` (a server endpoint string) while running: stopping closes
    the socket, starting opens it again (the console's ``shutdown amp`` / ``no shutdown
    amp``). A port that cannot be had is logged and kept in ``error``; the daemon runs on."""

    def __init__(self, reactor, factory, description: str):
        self.reactor, self.factory, self.description = reactor, factory, description
        self.port = None
        self.error: str | None = None

    @property
    def listening_on(self) -> str | None:
        if self.port is None:
            return None
        host = self.port.getHost()
        return str(Address(host.host, host.port))

    def startService(self):
        super().startService()
        # a TCP endpoint's listen() has fired when it returns: the error is known here
        endpoints.serverFromString(self.reactor, self.description).listen(
            self.factory).addCallbacks(self._listening, self._cannot_listen)

    def _listening(self, port) -> None:
        self.port, self.error = port, None

    def _cannot_listen(self, failure) -> None:
        failure.trap(CannotListenError)
        exc = failure.value
        self.error = f"cannot listen: {exc.socketError}"
        _log.error("cannot listen on {address}: {why}", address=self.description,
                   why=exc.socketError)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


class MgmtDaemon:
    """What ``make_service`` cannot build yet: the server over its settings database.

    :meth:`open` (at ``startService``, see :class:`rcn.tap.OpenAtStart`) opens the
    database and the operator's token file, builds the server and hands it to the
    sockets made before: the site's root, the AMP listener's factory, the console."""

    def __init__(self, config: MgmtConfig, reactor, http: Site, http_service, amp,
                 consoles: service.MultiService):
        self.config, self.reactor = config, reactor
        self.http, self.http_service, self.amp, self.consoles = http, http_service, amp, consoles
        self.server: MgmtServer | None = None

    def open(self) -> None:
        config = self.config
        try:
            store = SQLiteStore(config.database)
        except sqlite3.Error as exc:            # sqlite's message names no file
            raise sqlite3.OperationalError(f"settings database {config.database}: {exc}") from exc
        server = MgmtServer(self.reactor, store, history=config.history,
                            stale_after=config.stale_after, keys=config.keys)
        try:
            operator_token(server, config.operator_token_file)
        except BaseException:
            store.close()
            raise
        self.http.resource, api, _ = site_root(server)
        self.amp.factory = server.distribution.factory()
        if config.console is not None:
            console = MgmtConsole(config, server, api.counters, self.http_service, self.amp)
            serve_console(console.tree, config.id, f"RCN management server {config.id}",
                          config.console, self.reactor).setServiceParent(self.consoles)
        server.start()
        self.server = server
        _log.info("rcn-mgmt {id}: settings in {db} (version {version})", id=config.id,
                  db=config.database, version=server.version)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def make_service(config: MgmtConfig, reactor) -> tuple[service.MultiService, MgmtDaemon]:
    """The daemon's services; the second value's ``server`` is the :class:`MgmtServer`
    once started. The listening sockets are made at ``privilegedStartService`` (HTTP) and
    ``startService`` (AMP, after the server is built); the database at ``startService``.
    An AMP address that is not loopback is refused (:func:`loopback_endpoint`: keys travel
    on it in clear until issue 18)."""
    try:
        loopback_endpoint(config.amp)
    except ValueError as exc:
        raise ConfigError(f"[mgmt] amp: {exc}") from None
    top = service.MultiService()
    http = QuietSite(resource.Resource())          # its root is set when the server is built
    endpoint = endpoints.serverFromString(reactor, config.http)     # an endpoint string
    http_service = internet.StreamServerEndpointService(endpoint, http)
    amp = TcpListenService(reactor, None, config.amp)
    consoles = service.MultiService()
    opened = MgmtDaemon(config, reactor, http, http_service, amp, consoles)
    OpenAtStart(f"rcn-mgmt {config.id}", opened.open, opened.close).setServiceParent(top)
    http_service.setServiceParent(top)
    amp.setServiceParent(top)
    consoles.setServiceParent(top)
    _log.info("rcn-mgmt {id}: API and dashboard on {http}, devices on {amp}",
              id=config.id, http=config.http, amp=config.amp)
    return top, opened
