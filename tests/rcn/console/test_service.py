"""The console service in pty mode (``serial = "pty"``): the daemon's own pseudo-terminal,
opened by a client through its link with pyserial; flow control when no one reads; the
``[console]`` keys that go with it."""

from __future__ import annotations

import errno
import os

import serial
from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from rcn.config import ConfigError, ConsoleConfig, Reader, read_console
from rcn.console.commands import CommandTree
from rcn.console.protocol import MAX_LINE, ConsoleProtocol
from rcn.console.service import SerialService, serve_console

ANSWER = "x" * 198                       # one answer: 200 bytes with its CRLF


def tree() -> CommandTree:
    t = CommandTree()
    t.add("show version", lambda a: "box 1.0", "software version")
    t.add("show big", lambda a: ANSWER, "a long answer")
    return t


def poll(condition, limit: float = 5.0):
    """A Deferred that fires (with True) once ``condition()`` holds, checked every 10 ms;
    with False after ``limit`` seconds."""
    start = reactor.seconds()

    def check():
        if condition() or reactor.seconds() - start > limit:
            loop.stop()
    loop = task.LoopingCall(check)
    return loop.start(0.01).addCallback(lambda _: bool(condition()))


class Client:
    """A pyserial client on the pty's link; reads without blocking (timeout=0)."""

    def __init__(self, path: str):
        self.port = serial.serial_for_url(path, baudrate=115200, timeout=0)
        self.received = bytearray()

    def read(self) -> bytes:
        self.received.extend(self.port.read(65536))
        return bytes(self.received)

    def until(self, ending: bytes, limit: float = 5.0):
        return poll(lambda: self.read().endswith(ending), limit)

    def close(self):
        self.port.close()


def console_config(**table) -> ConsoleConfig:
    return read_console(Reader({"console": table}, ""))


class PtyServiceTests(TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.link = os.path.join(self.dir, "box.console")

    def serve(self, config: ConsoleConfig) -> SerialService:
        top = serve_console(tree(), "box", "RCN box", config, reactor)
        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())
        (service,) = list(top)
        return service

    @defer.inlineCallbacks
    def test_a_client_on_the_link_gets_prompt_and_answers(self):
        service = self.serve(console_config(serial="pty", pty_link=self.link))
        self.assertRegex(service.pty_name, r"^/dev/pts/\d+$")
        self.assertEqual(os.readlink(self.link), service.pty_name)
        client = Client(self.link)
        self.addCleanup(client.close)
        client.port.write(b"sh ver\r")
        answered = yield client.until(b"box 1.0\r\nbox> ")
        self.assertTrue(answered, client.received)
        # pyserial flushes the input it finds at open: the banner, unless it came later
        self.assertIn(bytes(client.received), (b"box 1.0\r\nbox> ",
                                               b"RCN box\r\nbox> box 1.0\r\nbox> "))
        # the client goes; the daemon holds the slave, so a second one finds it answering
        client.close()
        again = Client(service.pty_name)
        self.addCleanup(again.close)
        again.port.write(b"show vresion\r")
        answered = yield again.until(b"box> ")
        self.assertEqual(bytes(again.received),
                         b'% unknown word "vresion" after "show"; expected one of: big, '
                         b'version\r\nbox> ')
        # stopped: the link is gone and so is the pty
        master = service.pty.master
        service.stopService()
        self.assertFalse(os.path.lexists(self.link))
        self.assertIsNone(service.pty_name)
        with self.assertRaises(OSError) as caught:
            os.fstat(master)
        self.assertEqual(caught.exception.errno, errno.EBADF)

    def test_an_old_link_is_replaced_and_anything_else_is_left_alone(self):
        os.symlink("/dev/pts/nonexistent", self.link)
        service = self.serve(console_config(serial="pty", pty_link=self.link))
        self.assertEqual(os.readlink(self.link), service.pty_name)
        service.stopService()
        with open(self.link, "w") as f:
            f.write("operator's notes\n")
        other = SerialService(lambda: ConsoleProtocol(tree(), "box"), "pty", 115200, reactor,
                              pty_link=self.link)
        other.startService()
        self.addCleanup(other.stopService)
        self.assertIsNone(other.pty_name)                  # refused, logged, daemon runs on
        with open(self.link) as f:
            self.assertEqual(f.read(), "operator's notes\n")

    @defer.inlineCallbacks
    def test_output_no_one_reads_stops_the_input_and_nothing_is_lost(self):
        protocols = []

        def make():
            protocols.append(ConsoleProtocol(tree(), "box", closable=False))
            return protocols[-1]
        service = SerialService(make, "pty", 115200, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (console,) = protocols
        slave = os.open(service.pty_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.addCleanup(os.close, slave)
        line, limit = b"show big\r", 100_000
        typed = {"lines": 0, "rest": b""}

        def type_until_refused():
            # type whole lines without reading until the kernel takes no more
            try:
                while typed["lines"] < limit:
                    typed["rest"] = typed["rest"] or line
                    typed["rest"] = typed["rest"][os.write(slave, typed["rest"]):]
                    typed["lines"] += not typed["rest"]
            except BlockingIOError:
                pass
            return console.paused
        paused = yield poll(type_until_refused, 10.0)
        self.assertTrue(paused, (typed, console.lines))
        sent = typed["lines"]
        self.assertLess(sent, limit)                      # the input stopped: flow control
        self.assertLess(console.lines, sent)
        self.assertLess(console.lines * len(ANSWER), 1 << 20)   # answers waiting: bounded
        # now read: every whole line is answered, none lost
        received = bytearray()

        def drain():
            try:
                while True:
                    received.extend(os.read(slave, 1 << 16))
            except BlockingIOError:
                pass
            return received.count(b"box> ") >= sent + 1     # and the first prompt
        drained = yield poll(drain, 20.0)
        self.assertTrue(drained, (received.count(b"box> "), sent))
        self.assertEqual(received.count(b"box> "), sent + 1)
        self.assertEqual(received.count(ANSWER.encode() + b"\r\n"), sent)
        self.assertFalse(console.paused)


class ProducerTests(TestCase):
    def test_the_protocol_is_its_transports_producer_until_exit(self):
        transport = StringTransport()
        console = ConsoleProtocol(tree(), "box")
        console.makeConnection(transport)
        self.assertIs(transport.producer, console)
        self.assertTrue(transport.streaming)
        console.pauseProducing()                      # the transport's buffer is full
        console.dataReceived(b"show version\rshow version\r")
        self.assertEqual(transport.value(), b"box> ")  # lines wait, nothing answered
        self.assertEqual(transport.producerState, "paused")
        console.resumeProducing()
        self.assertEqual(transport.value(), b"box> " + b"box 1.0\r\nbox> " * 2)
        console.dataReceived(b"exit\r")
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)


class LongLineTests(TestCase):
    def test_a_long_line_is_refused_whole_or_in_pieces(self):
        transport = StringTransport()
        console = ConsoleProtocol(tree(), "box")
        console.makeConnection(transport)
        transport.clear()
        console.dataReceived(b"x" * (MAX_LINE + 1) + b"\r")          # in one read
        self.assertEqual(transport.value(),
                         f"% line longer than {MAX_LINE} bytes: ignored\r\nbox> ".encode())
        transport.clear()
        console.dataReceived(b"show version " + b" " * (MAX_LINE - 13) + b"\r")   # the limit
        self.assertEqual(transport.value(), b"box 1.0\r\nbox> ")


class ConfigTests(TestCase):
    def test_pty_and_its_link(self):
        config = console_config(serial="pty", pty_link="run/box.console")
        self.assertEqual((config.serial, config.pty_link), ("pty", "run/box.console"))
        self.assertIsNone(console_config(serial="/dev/ttyS1").pty_link)

    def test_errors_name_the_key(self):
        for table, words in (
                ({"serial": "/dev/ttyS1", "pty_link": "x"}, ["console.pty_link", "pty",
                                                             "/dev/ttyS1"]),
                ({"tcp": "tcp:2301:interface=127.0.0.1", "pty_link": "x"}, ["console.pty_link"]),
                ({"tcp": "127.0.0.1:2301"}, ["console.tcp", "HOST:PORT",
                                             "tcp:2301:interface=127.0.0.1"]),
                ({"serial": "pty", "pty_link": ""}, ["console.pty_link: empty"]),
                ({"serial": ""}, ["console.serial: empty"]),
                ({"serial": "pty", "pty_lnik": "x"}, ["console.pty_lnik: unknown key"]),
                ({"serial": "pty", "pty_link": 3}, ["console.pty_link: expected str"])):
            with self.assertRaises(ConfigError) as caught:
                console_config(**table)
            for word in words:
                self.assertIn(word, str(caught.exception), table)

    def test_a_link_needs_pty_mode_in_the_service_too(self):
        with self.assertRaises(ValueError) as caught:
            SerialService(lambda: None, "/dev/ttyS1", 115200, reactor, pty_link="x")
        self.assertIn("pty_link", str(caught.exception))
