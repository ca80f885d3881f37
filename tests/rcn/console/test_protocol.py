"""The console protocol over a transport in memory and over a real pty pair with SerialPort."""

from __future__ import annotations

import os
import tty

from twisted.internet import reactor, task
from twisted.internet.serialport import SerialPort
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from rcn.console.commands import CommandTree
from rcn.console.protocol import MAX_LINE, ConsoleProtocol


def tree() -> CommandTree:
    t = CommandTree()
    t.add("show version", lambda a: "rcn 1.0\nbuilt today", "software version")
    t.add("show boom", lambda a: 1 / 0, "a broken handler")
    return t


class ProtocolTests(TestCase):
    def setUp(self):
        self.transport = StringTransport()
        self.console = ConsoleProtocol(tree(), "edgeA", banner="RCN edge edgeA")
        self.console.makeConnection(self.transport)

    def output(self) -> str:
        out = self.transport.value().decode()
        self.transport.clear()
        return out

    def test_prompt_answers_and_errors(self):
        self.assertEqual(self.output(), "RCN edge edgeA\r\nedgeA> ")
        self.console.dataReceived(b"sh ver\r")
        self.assertEqual(self.output(), "rcn 1.0\r\nbuilt today\r\nedgeA> ")
        self.console.dataReceived(b"show vresion\n")
        self.assertIn('% unknown word "vresion" after "show"', self.output())
        self.console.dataReceived(b"show ver")          # a line in two pieces
        self.assertEqual(self.output(), "")
        self.console.dataReceived(b"sion\r\n")
        self.assertTrue(self.output().startswith("rcn 1.0"))
        self.console.dataReceived(b"show boom\n")
        self.assertIn("% internal error (logged)", self.output())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.console.dataReceived(b"x" * (MAX_LINE + 1))
        self.assertIn("longer than", self.output())
        self.console.dataReceived(b"exit\n")
        self.assertTrue(self.transport.disconnecting)

    def test_lines_after_exit_in_the_same_read_are_not_run(self):
        ran = []
        t = tree()
        t.add("clear counters", lambda a: ran.append("clear") or "cleared", "")
        console = ConsoleProtocol(t, "edgeA")
        transport = StringTransport()
        console.makeConnection(transport)
        # fuzz input tools/fuzz console: a second exit raised from unregisterProducer
        console.dataReceived(b"exit\nclear counters\nexit\n")
        console.dataReceived(b"clear counters\n")
        self.assertEqual(ran, [])
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().endswith(b"bye\r\n"))


class PtyTests(TestCase):
    """The console on one end of a pty pair (SerialPort), the test typing on the other."""

    def test_over_a_serial_line(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        self.addCleanup(os.close, master)
        console = ConsoleProtocol(tree(), "edgeA", closable=False)
        port = SerialPort(console, os.ttyname(slave), reactor, baudrate=115200)
        os.close(slave)
        self.addCleanup(port.connectionLost, None)
        received = bytearray()

        def readable():
            try:
                received.extend(os.read(master, 4096))
            except BlockingIOError:
                pass
        os.set_blocking(master, False)
        os.write(master, b"show version\r")

        def poll():
            readable()
            if b"built today" in received and received.endswith(b"edgeA> "):
                loop.stop()
        loop = task.LoopingCall(poll)
        return loop.start(0.01).addCallback(
            lambda _: self.assertIn(b"rcn 1.0\r\nbuilt today\r\nedgeA> ", bytes(received)))
