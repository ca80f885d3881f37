"""rcn.web.BoundedSite: a request body over the bound is refused before it is stored."""

from __future__ import annotations

import json

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase
from twisted.web import resource

from rcn.web import BoundedSite


class Echo(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request):
        self.bodies.append(request.content.read())
        return b"{}"


class RawClient(protocol.Protocol):
    """Sends ``request`` bytes, collects the answer until the server closes."""

    def __init__(self, request: bytes):
        self.request = request
        self.received = b""
        self.closed = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(self.received)


class BoundedSiteTests(TestCase):
    def setUp(self):
        self.echo = Echo()
        self.site = BoundedSite(self.echo, max_body=1000)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def send(self, raw: bytes):
        client = RawClient(raw)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        return connectProtocol(endpoint, client).addCallback(lambda _: client.closed)

    @defer.inlineCallbacks
    def test_a_content_length_over_the_bound_is_413_at_the_headers(self):
        # 10 GB announced, none sent: the answer must not wait for (or store) the body
        answer = yield self.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000000"
                                 b"\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn("Content-Length 10000000000 is over 1000 bytes",
                      json.loads(body)["error"])
        self.assertEqual((self.echo.bodies, self.site.refused), ([], 1))

    @defer.inlineCallbacks
    def test_chunks_past_the_bound_are_413(self):
        chunk = b"400\r\n" + b"x" * 0x400 + b"\r\n"
        answer = yield self.send(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked"
                                 b"\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertEqual((self.echo.bodies, self.site.refused), ([], 1))

    @defer.inlineCallbacks
    def test_a_body_within_the_bound_reaches_the_resource(self):
        answer = yield self.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n"
                                 b"Connection: close\r\n\r\n" + b"y" * 1000)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual((self.echo.bodies, self.site.refused), ([b"y" * 1000], 0))
