"""The WAN emulator driver by exact exchange (scripted port), and against the real SCPI
console through a port that hands each line to it."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import TestCase

from rcn.wanem.driver import ApplianceError, WanemDriver, open_port
from rcn.wanem.config import parse_config
from rcn.wanem.link import WanEmulator
from rcn.wanem.scpi import ScpiConsole


class ScriptedPort:
    """Records the bytes written; answers each readline with the next scripted line."""

    def __init__(self, replies: list[bytes]):
        self.written = bytearray()
        self.replies = list(replies)
        self.closed = False

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)

    def readline(self) -> bytes:
        return self.replies.pop(0) if self.replies else b""     # b"": the timeout

    def close(self) -> None:
        self.closed = True


class ConsolePort:
    """A port whose other end is an SCPI console (no device needed)."""

    def __init__(self, console: ScpiConsole):
        self.console = console
        self.answers: list[bytes] = []

    def write(self, data: bytes) -> int:
        for line in data.decode().splitlines():
            answer = self.console.handle(line)
            if answer is not None:
                self.answers.append(answer.encode() + b"\n")
        return len(data)

    def readline(self) -> bytes:
        return self.answers.pop(0) if self.answers else b""

    def close(self) -> None:
        pass


class ExactExchangeTests(TestCase):
    def test_settings_are_checked_with_the_error_queue(self):
        port = ScriptedPort([b'0,"No error"\n', b'0,"No error"\n'])
        driver = WanemDriver(port)
        driver.set_delay(1, 20)
        driver.set_up(2, False)
        self.assertEqual(bytes(port.written),
                         b"LINK1:DELAY 20\nSYST:ERR?\nLINK2:STATE DOWN\nSYST:ERR?\n")

    def test_a_refusal_raises_with_the_appliances_words(self):
        port = ScriptedPort([b'-222,"Data out of range;LINK1:LOSS 200 % is outside 0..100"\n'])
        with self.assertRaises(ApplianceError) as caught:
            WanemDriver(port).set_loss(1, 200)
        self.assertIn("-222", str(caught.exception))
        self.assertIn("LINK1:LOSS 200", str(caught.exception))

    def test_queries_and_silence(self):
        port = ScriptedPort([b"RCN,rcn-wanem,w1,0.1.0\n", b"3,2,0,1,0,0,0,0,0,0\n"])
        driver = WanemDriver(port)
        self.assertEqual(driver.identify(), "RCN,rcn-wanem,w1,0.1.0")
        stats = driver.stats(1)
        self.assertEqual((stats.packets_in, stats.packets_out, stats.dropped), (3, 2, 1))
        self.assertEqual(bytes(port.written), b"*IDN?\nLINK1:STAT?\n")
        with self.assertRaises(ApplianceError):
            driver.delay(1)                     # no line: the port timed out
        driver.close()
        self.assertTrue(port.closed)

    def test_open_port_from_a_url(self):
        port = open_port("loop://", timeout=0.1)
        port.write(b"*IDN?\n")
        self.assertEqual(port.readline(), b"*IDN?\n")       # loop:// echoes what is written
        port.close()


class AgainstTheConsoleTests(TestCase):
    def test_driver_drives_a_link(self):
        emulator = WanEmulator(task.Clock(), list(parse_config(
            {"wanem": {"id": "w1"}, "link": [{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}]}).links))
        driver = WanemDriver(ConsolePort(ScpiConsole(emulator, idn="RCN,rcn-wanem,w1,0.1.0")))
        driver.set_delay(1, 20)
        driver.set_loss(1, 1)
        driver.set_rate(1, 8e6)
        driver.set_up(1, False)
        self.assertEqual(driver.delay(1), 20.0)
        self.assertFalse(driver.is_up(1))
        link = emulator.link(1)
        self.assertEqual((link.setting("delay"), link.setting("loss"), link.setting("rate")),
                         (0.02, 0.01, 1e6))
        with self.assertRaises(ApplianceError):
            driver.set_delay(7, 1)                          # no such link
        driver.reset()
        self.assertTrue(driver.is_up(1))
