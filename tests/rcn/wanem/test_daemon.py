"""``rcn-wanem``: its file, and SCPI over a pty pair (SerialPort) driving a link."""

from __future__ import annotations

import os
import tty

from twisted.internet import reactor, task
from twisted.internet.serialport import SerialPort
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from rcn.config import ConfigError
from rcn.wanem.config import parse_config
from rcn.wanem.link import WanEmulator
from rcn.wanem.scpi import ScpiConsole
from rcn.wanem.service import ScpiProtocol

DOC = {"wanem": {"id": "w1"},
       "link": [{"a": "127.0.0.1:47011", "b": "127.0.0.1:47002", "b_from": "127.0.0.1:47012",
                 "delay_ms": 20, "loss": 0.01, "rate": "1MiB"}]}


class ConfigTests(TestCase):
    def test_links_and_settings(self):
        config = parse_config(DOC)
        (spec,) = config.links
        self.assertEqual((spec.a_port, spec.b_address, spec.b_port), (47011, ("127.0.0.1", 47002),
                                                                      47012))
        self.assertEqual(spec.settings, {"delay": 0.02, "loss": 0.01, "rate": 1 << 20})

    def test_errors_name_the_key(self):
        bad = {"wanem": {"id": "w1"}, "link": [dict(DOC["link"][0], loss=2)]}
        with self.assertRaises(ConfigError) as caught:
            parse_config(bad)
        self.assertIn("link[0].loss", str(caught.exception))
        with self.assertRaises(ConfigError):
            parse_config({"wanem": {"id": "w1"}})


class ScpiLineTests(TestCase):
    def emulator(self):
        return WanEmulator(task.Clock(), list(parse_config(DOC).links))

    def test_queries_answer_and_settings_apply(self):
        emulator = self.emulator()
        protocol = ScpiProtocol(ScpiConsole(emulator))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"*IDN?\r\nLINK1:DELAY 50\r\nLINK1:DEL?\n")
        lines = transport.value().decode().splitlines()
        self.assertTrue(lines[0].startswith("RCN,rcn-wanem"))
        self.assertEqual(float(lines[1]), 50.0)
        protocol.dataReceived(b"LINK9:DELAY 1\nSYST:ERR?\n")
        self.assertTrue(transport.value().decode().splitlines()[-1].startswith("-"))

    def test_a_400_digit_queue_answers_222_and_the_session_stays(self):
        emulator = self.emulator()
        protocol = ScpiProtocol(ScpiConsole(emulator))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"LINK1:QUEue " + b"9" * 400 + b"\r\nSYST:ERR?\r\n*IDN?\r\n")
        lines = transport.value().decode().splitlines()
        self.assertTrue(lines[0].startswith('-222,"Data out of range;LINK1:QUEUE 999'), lines)
        self.assertTrue(lines[1].startswith("RCN,rcn-wanem"))
        self.assertFalse(transport.disconnecting)

    def test_over_a_pty(self):
        emulator = self.emulator()
        master, slave = os.openpty()
        tty.setraw(slave)
        self.addCleanup(os.close, master)
        port = SerialPort(ScpiProtocol(ScpiConsole(emulator)), os.ttyname(slave), reactor)
        os.close(slave)
        self.addCleanup(port.connectionLost, None)
        os.set_blocking(master, False)
        os.write(master, b"LINK1:STATE DOWN\rLINK1:STATE?\r")
        received = bytearray()

        def poll():
            try:
                received.extend(os.read(master, 4096))
            except BlockingIOError:
                pass
            if b"\n" in received:
                loop.stop()
        loop = task.LoopingCall(poll)
        return loop.start(0.01).addCallback(lambda _: (
            self.assertEqual(bytes(received).strip(), b"DOWN"),
            self.assertFalse(emulator.link(1).up)))
