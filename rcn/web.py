"""HTTP plumbing the daemons share: request bodies bounded before they are stored.

twisted.web keeps a request's whole body before a resource sees it (in memory, or a
temporary file past 100 kB), whatever its size. :class:`BoundedSite` refuses a body over
``max_body`` bytes as soon as it can tell -- at the headers when ``Content-Length`` says
so, else when the chunks received pass the bound -- with ``413 Payload Too Large`` (a JSON
error like the APIs' others) and closes the connection; nothing past the bound is kept.
Each refusal is counted in ``BoundedSite.refused`` and logged once per request.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

_log = Logger()
MAX_BODY = 1 << 20          # bytes a request body may have (the JSON APIs read at most this)


class BoundedRequest(Request):
    """A request whose body may not pass ``site.max_body`` bytes (see the module doc)."""

    _refused = False
    _received = 0

    def gotLength(self, length):
        limit = self.channel.site.max_body
        if length is not None and length > limit:
            self._refuse(f"Content-Length {length} is over {limit} bytes")
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        limit = self.channel.site.max_body
        if self._received > limit:
            self._refuse(f"body over {limit} bytes")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self, why: str) -> None:
        self._refused = True
        self.content = io.BytesIO()
        site = self.channel.site
        site.refused += 1
        peer = self.channel.transport.getPeer()
        _log.warn("HTTP request from {peer} refused (413): {why}", peer=peer, why=why)
        body = json.dumps({"error": f"request body refused: {why}"}).encode() + b"\n"
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.channel.transport.loseConnection()


class BoundedChannel(HTTPChannel):
    """An HTTP channel that answers nothing more once a refusal closes it: the bytes
    after a refused body in the same read would otherwise get a second answer (400)."""

    def _respondToBadRequestAndDisconnect(self):
        if self.transport.disconnecting:
            return
        super()._respondToBadRequestAndDisconnect()


class BoundedSite(Site):
    """A Site of :class:`BoundedRequest` s; ``refused`` counts the bodies refused."""

    requestFactory = BoundedRequest
    protocol = BoundedChannel

    def __init__(self, resource, *args, max_body: int = MAX_BODY, **kw):
        super().__init__(resource, *args, **kw)
        self.max_body = max_body
        self.refused = 0
