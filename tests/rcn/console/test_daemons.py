"""The issue's proof for device consoles: each daemon (rcn-edge, rcn-core, rcn-storage,
rcn-mgmt) runs as a real twistd process with its ``[console] serial`` on one end of a pty
pair the test made (so the daemon opens it with Twisted's SerialPort, the real serial code
path), and the test types on the other end: every command of the daemon's tree (taken
from its console module: a command without a check here fails the test), an
abbreviation, ``?``, ``help``, an unknown word, an ambiguous abbreviation, an over-long
line. The array answers whole tables while NBD writes keep it busy, and rcn-core serves
its console on a pty of its own (``serial = "pty"`` with ``pty_link``), opened with
pyserial.

Configuration files come from :mod:`rcn.lab` (``plan`` and ``device_configs``), with a
``[console]`` table added. Every read polls with a deadline until the prompt is back;
nothing sleeps.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
import tty

import serial
from twisted.internet import defer, error, reactor
from twisted.trial.unittest import TestCase

from rcn import lab
from rcn.console.commands import CommandTree
from rcn.console.protocol import MAX_LINE
from rcn.core.console import core_console
from rcn.edge.console import EdgeConsole
from rcn.mgmt.console import MgmtConsole
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.settings import Settings
from rcn.mgmt.store import SQLiteStore
from rcn.mgmtlink.client import MgmtClient, client_service
from rcn.nbd.client import connect_url
from rcn.storage.console import array_console
from tests.support import CollectOutput, poll, tcp_accepts

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
ANSWER_WITHIN = 2.0                        # seconds a command may take to answer
WWN_A, WWN_B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
HOST = "127.0.0.1"


# -- helpers ------------------------------------------------------------------------------------

def commands(tree: CommandTree) -> dict[str, tuple[str, ...] | None]:
    """The tree's commands (their words) and the argument words each takes, if any."""
    out = {}

    def walk(node, path):
        if node.handler is not None:
            out[" ".join(path)] = node.choices
        for name, child in node.children.items():
            walk(child, path + [name])
    walk(tree.root, [])
    return out


def leaves(tree: CommandTree) -> set[str]:
    """Every command line the tree runs (one per argument word of a command that takes one)."""
    return {f"{words} {choice}" if choice else words
            for words, choices in commands(tree).items() for choice in choices or [None]}


def ambiguous(tree: CommandTree) -> tuple[str, list[str]]:
    """A one-letter abbreviation after ``show`` that fits several words, and those words."""
    words = sorted(tree.root.children["show"].children)
    for letter in sorted({w[0] for w in words}):
        matches = [w for w in words if w.startswith(letter)]
        if len(matches) > 1:
            return letter, matches
    raise AssertionError(f"no two words after show share a first letter: {words}")


def table(text: str) -> dict[str, list[str]]:
    """A columns() table's rows by first cell (cells are separated by two spaces or more)."""
    rows = {}
    for line in text.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class Terminal:
    """The test's end of a console line: it writes lines and reads answers without
    blocking (``read()`` returns what is there, maybe nothing)."""

    def __init__(self, testcase: TestCase, prompt: str, read, write, log=lambda: ""):
        self.testcase, self.prompt = testcase, prompt.encode()
        self._read, self._write, self.log = read, write, log
        self.received = bytearray()

    def send(self, line: str) -> None:
        self._write(line.encode() + b"\r")

    def take(self) -> bytes:
        try:
            self.received.extend(self._read())
        except BlockingIOError:
            pass
        return bytes(self.received)

    @defer.inlineCallbacks
    def until(self, ending: bytes, limit: float = ANSWER_WITHIN):
        """Wait for output that ends with ``ending``; return it all and forget it."""
        if not (yield poll(lambda: self.take().endswith(ending), limit)):
            self.testcase.fail(f"no {ending!r} within {limit} s; got "
                               f"{bytes(self.received)[-400:]!r}\n--- daemon:\n{self.log()}")
        out = bytes(self.received)
        self.received.clear()
        return out

    @defer.inlineCallbacks
    def run(self, line: str, limit: float = ANSWER_WITHIN):
        """The answer to ``line`` (CRLF as LF, no trailing newline). Fails when the prompt
        is not back within ``limit`` seconds, or output came that no one asked for."""
        self.testcase.assertEqual(self.take(), b"", "output no one asked for")
        self.send(line)

        def answered():
            return self.prompt in self.take()
        if not (yield poll(answered, limit)):
            self.testcase.fail(f"{line[:40]!r}: no prompt within {limit} s; got "
                               f"{bytes(self.received)[-400:]!r}\n--- daemon:\n{self.log()}")
        text, _, rest = bytes(self.received).partition(self.prompt)
        self.received[:] = rest
        return text.decode("utf-8", "replace").replace("\r\n", "\n").removesuffix("\n")


class FakeServer:
    """Enough of a MgmtServer to build rcn-mgmt's command tree in the test."""

    class clock:
        @staticmethod
        def seconds():
            return 0.0


# -- the daemons ----------------------------------------------------------------------------------

class DaemonConsoleTests(TestCase):
    timeout = 60

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def plan(self, mgmt: bool = False) -> tuple[dict, dict]:
        """A lab record (ports, names) and every device's configuration, from rcn.lab."""
        record = lab.plan(lab.Topology(mgmt=mgmt, capacity=16 << 20), self.dir)
        lab.write_keys(record)              # sealed: the edges' and cores' key files
        return record, lab.device_configs(record)

    def start(self, plugin: str, name: str, doc: dict) -> tuple[object, CollectOutput]:
        """``twistd -n PLUGIN --config DIR/NAME.toml`` as a child process, stopped at cleanup."""
        for item in doc.values():
            if isinstance(item, dict) and "data_dir" in item:
                os.makedirs(os.path.join(self.dir, item["data_dir"]), exist_ok=True)
        path = os.path.join(self.dir, f"{name}.toml")
        with open(path, "w") as f:
            f.write(lab.render_device(plugin.removeprefix("rcn-"), doc))
        output = CollectOutput()
        process = reactor.spawnProcess(
            output, TWISTD, [TWISTD, "-n", "--pidfile", os.path.join(self.dir, f"{name}.pid"),
                             "--logfile", "-", plugin, "--config", path],
            env=dict(os.environ, PYTHONUNBUFFERED="1"), path=self.dir)
        self.addCleanup(self.stop, process, output)
        return process, output

    @defer.inlineCallbacks
    def stop(self, process, output: CollectOutput):
        if not output.ended.called:
            try:
                process.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass
            if not (yield poll(lambda: output.ended.called, 10.0)):
                process.signalProcess("KILL")
        text = yield output.ended
        return text

    @defer.inlineCallbacks
    def console(self, plugin: str, name: str, doc: dict, prompt: str):
        """The daemon with its console on a pty pair the test made: the terminal, once the
        banner is there (the daemon has opened the port)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        # the test keeps the slave open too: the master never reads EIO meanwhile
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        doc = dict(doc, console={"serial": os.ttyname(slave), "speed": 115200})
        _, output = self.start(plugin, name, doc)
        term = Terminal(self, prompt, lambda: os.read(master, 65536),
                        lambda data: os.write(master, data),
                        lambda: b"".join(output.output).decode(errors="replace")[-3000:])
        banner = yield term.until(prompt.encode(), 20.0)
        self.assertTrue(banner.startswith(b"RCN "), banner)
        return term

    @defer.inlineCallbacks
    def every_command(self, term: Terminal, tree: CommandTree, checks: list):
        """Run ``checks`` ([(command, check(answer))...], in order; a check may return a
        Deferred) once they are shown to be exactly the tree's commands; then help, ``?``,
        an abbreviation, an unknown word, an ambiguous abbreviation, an over-long line."""
        self.assertEqual({c for c, _ in checks}, leaves(tree),
                         "the console's commands and this test's checks differ")
        for command, check in checks:
            answer = yield term.run(command)
            self.assertFalse(answer.startswith("%"), f"{command!r}: {answer}")
            yield check(answer)
        listed = yield term.run("help")
        self.assertEqual({re.split(r"\s{2,}", line)[0] for line in listed.splitlines()},
                         {f"{words} {'|'.join(choices)}" if choices else words
                          for words, choices in commands(tree).items()})
        question = yield term.run("show ?")
        self.assertEqual([line.split()[0] for line in question.splitlines()],
                         sorted(tree.root.children["show"].children))
        def steady(text):                   # the uptime may tick between two answers
            return re.sub(r"uptime \d+h \d+m \d+s", "uptime", text)
        version = yield term.run("show version")
        self.assertEqual(steady((yield term.run("sh ver"))), steady(version))
        answer = yield term.run("show nonsense")
        self.assertTrue(answer.startswith('% unknown word "nonsense" after "show"; expected '
                                          'one of: '), answer)
        answer = yield term.run("frobnicate all")
        self.assertTrue(answer.startswith('% unknown word "frobnicate"; expected one of: '),
                        answer)
        letter, words = ambiguous(tree)
        answer = yield term.run(f"sh {letter}")
        self.assertEqual(answer, f'% ambiguous word "{letter}" after "show": '
                                 + ", ".join(words))
        answer = yield term.run("x" * (MAX_LINE + 1))
        self.assertEqual(answer, f"% line longer than {MAX_LINE} bytes: ignored")
        # the line's CR may have come in a read of its own: an empty line, a prompt more
        term.send("help")
        ending = listed.replace("\n", "\r\n").encode() + b"\r\n" + term.prompt
        before = yield term.until(ending)
        self.assertIn(before.removesuffix(ending), (b"", term.prompt))

    @defer.inlineCallbacks
    def test_core(self):
        record, docs = self.plan()
        ports = {d["name"]: d["ports"] for d in record["devices"]}
        log = ports["core1"]["log"]
        path = [f"{HOST}:{ports[n]['log']}" for n in ("edgeA", "core1", "edgeB")]
        term = yield self.console("rcn-core", "core1", docs["core1"], "core1> ")

        def interfaces(state):
            return lambda a: self.assertEqual(table(a)["log-transfer"],
                                              ["log-transfer", f"{HOST}:{log}", state])

        def counters(answer):
            rows = table(answer)
            self.assertEqual(answer.splitlines()[0].split(), ["counter", "value"])
            self.assertIn("forwarded", rows)
            self.assertEqual({r[1] for r in rows.values()}, {"0"})

        def routes(answer):
            self.assertEqual(table(answer)[WWN_A], [WWN_A, WWN_B, " > ".join(path)])
            self.assertEqual(table(answer)[WWN_B], [WWN_B, WWN_A, " > ".join(path[::-1])])
        yield self.every_command(term, core_console(None, None, None), [
            ("show version", lambda a: self.assertEqual(a, "rcn-core 0.1.0, device core1")),
            ("show interfaces", interfaces("up")),
            ("show routes", routes),
            ("show config", lambda a: self.assertEqual(
                table(a), {"id": ["id", "core1"], "listen": ["listen", f"{HOST}:{log}"],
                           "batching": ["batching", "1 ms / 65000 bytes / 256 entries"],
                           "management server": ["management server", "none"]})),
            ("clear counters", lambda a: self.assertEqual(
                a, "counters cleared (console only; /metrics keeps counting)")),
            ("show counters", counters),
            ("debug log-transfer on", lambda a: self.assertEqual(
                a, "log-transfer debugging is on")),
            ("debug log-transfer off", lambda a: self.assertEqual(
                a, "log-transfer debugging is off")),
            ("shutdown log-transfer", self.socket_closed(
                log, "log-transfer interface administratively down")),
            ("show interfaces", interfaces("administratively down")),
            ("no shutdown log-transfer", self.socket_open(log, "log-transfer interface up")),
            ("show interfaces", interfaces("up")),
        ])

    def socket_closed(self, port: int, expected: str):
        """A check: the answer is ``expected`` and the daemon's UDP ``port`` is let go."""
        def check(answer):
            self.assertEqual(answer, expected)
            return poll(lambda: udp_port_free(port), ANSWER_WITHIN).addCallback(
                self.assertTrue, f"the daemon still holds udp {port}")
        return check

    def socket_open(self, port: int, expected: str):
        def check(answer):
            self.assertEqual(answer, expected)
            self.assertFalse(udp_port_free(port), f"the daemon does not hold udp {port}")
        return check

    @defer.inlineCallbacks
    def test_edge(self):
        record, docs = self.plan()
        ports = {d["name"]: d["ports"] for d in record["devices"]}
        log, fcip = ports["edgeA"]["log"], ports["edgeA"]["fcip"]
        path = [f"{HOST}:{ports[n]['log']}" for n in ("edgeA", "core1", "edgeB")]
        term = yield self.console("rcn-edge", "edgeA", docs["edgeA"], "edgeA> ")

        def interfaces(state, received):
            def check(answer):      # no FCIP link rows: no array is attached
                self.assertEqual(table(answer), {"log-transfer": [
                    "log-transfer", f"{HOST}:{log}", state, f"{received} in"]})
            return check

        def a_datagram(answer):
            self.assertRegex(answer, r"^rcn-edge 0\.1\.0, device edgeA, uptime 0h 0m \d+s$")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"not a log datagram", (HOST, log))

        def counters(received):
            def check(answer):
                rows = table(answer)
                self.assertEqual(answer.splitlines()[0].split(), ["counter", "value"])
                self.assertEqual(rows["udp.received"][1], str(received))
                self.assertIn("sender.retransmits", rows)
                self.assertTrue(all(r[1].isdigit() for r in rows.values()), answer)
            return check

        def log_store(answer):
            mode, _, rest = answer.partition("\n")
            self.assertEqual(mode, "mode durable")
            self.assertEqual(table(rest)["retained_entries"], ["retained_entries", "0"])

        def config(answer):
            rows = table(answer)
            for key, value in (("id", "edgeA"), ("log", f"{HOST}:{log}"),
                               ("fcip", f"tcp:{fcip}:interface={HOST}"),
                               ("data_dir", os.path.join(self.dir, "edgeA")),
                               ("log mode", "durable"), ("group policy", "B"),
                               ("failure timeout", "60.0 s"), ("management server", "none")):
                self.assertEqual(rows[key], [key, value])

        def routes(answer):
            self.assertEqual(table(answer)[WWN_A], [WWN_A, WWN_B, " > ".join(path)])
            self.assertEqual(table(answer)[WWN_B], [WWN_B, WWN_A, " > ".join(path[::-1])])

        def equal(expected):
            return lambda answer: self.assertEqual(answer, expected)
        yield self.every_command(term, EdgeConsole(None, None).tree, [
            ("show version", a_datagram),
            ("show interfaces", interfaces("up", 1)),
            ("show counters", counters(1)),
            ("clear counters", equal("counters cleared (console only; /metrics keeps "
                                     "counting)")),
            ("show counters", counters(0)),
            ("show groups", lambda a: self.assertEqual(table(a)["7"],
                                                       ["7", "0", "0", "0", "-", "-"])),
            ("show pairs", lambda a: self.assertEqual(
                table(a)["source"], ["source", f"{WWN_A}:0", f"{WWN_B}:0", "7", "duplex",
                                     "0"])),
            ("show routes", routes),
            ("show log-store", log_store),
            ("show config", config),
            ("debug log-transfer on", equal("log-transfer debugging is on")),
            ("debug log-transfer off", equal("log-transfer debugging is off")),
            ("shutdown log-transfer", self.socket_closed(
                log, "log-transfer interface administratively down")),
            ("show interfaces", interfaces("administratively down", 1)),
            ("no shutdown log-transfer", self.socket_open(log, "log-transfer interface up")),
        ])

    @defer.inlineCallbacks
    def test_storage_also_while_nbd_writes_keep_it_busy(self):
        record, docs = self.plan()
        array = next(d for d in record["devices"] if d["name"] == "arrayA")
        edge = next(d for d in record["devices"] if d["name"] == "edgeA")
        doc = docs["arrayA"]
        for pair in doc["pair"]:          # no edge runs: host writes complete locally
            pair["state"] = "simplex"
        term = yield self.console("rcn-storage", "arrayA", doc, f"{WWN_A}> ")
        volume = ["0", "vol0", str(16 << 20), "512", os.path.join(self.dir, "arrayA",
                                                                  "vol0.img")]
        pair = ["0", "source", "simplex", WWN_B, "0", "7", "sync"]
        status = {"edge": ["edge", f"tcp:{HOST}:{edge['ports']['fcip']}"],
                  "edge_link": ["edge_link", "down"], "n_port_id": ["n_port_id", "None"],
                  "wwnn": ["wwnn", "50:0a:09:80:00:00:00:00"], "wwpn": ["wwpn", WWN_A]}

        def volumes(answer):
            self.assertEqual(answer.splitlines()[0].split(),
                             ["lun", "name", "capacity", "block", "file"])
            self.assertEqual(table(answer), {"0": volume})

        def pairs(answer):
            self.assertEqual(re.split(r"\s{2,}", answer.splitlines()[0]),
                             ["lun", "role", "state", "partner", "partner lun", "group",
                              "mode", "dirty tracks"])
            self.assertEqual([row[:7] for row in table(answer).values()], [pair])
            self.assertTrue(table(answer)["0"][7].isdigit(), answer)

        def show_status(answer):
            self.assertEqual(answer.splitlines()[0].split(), ["status", "value"])
            self.assertEqual(table(answer), status)
        checks = {"show version": lambda a: self.assertEqual(
                      a, f"rcn-storage 0.1.0, array {WWN_A}"),
                  "show volumes": volumes, "show pairs": pairs, "show status": show_status}
        yield self.every_command(term, array_console(None), list(checks.items()))

        # busy: writes keep coming (8 in flight) while the console answers, whole
        client = yield connect_url(reactor, array["volumes"][0]["nbd_url"], timeout=5.0)
        self.addCleanup(client.disconnect)
        chunk, capacity = 256 << 10, 16 << 20
        writes = {"issued": 0, "done": 0, "failed": []}
        running = [True]

        def write_more(_=None):
            while running[0] and writes["issued"] - writes["done"] < 8:
                offset = writes["issued"] * chunk % capacity
                writes["issued"] += 1
                data = bytes([writes["issued"] % 251]) * chunk
                client.write(offset, data).addCallbacks(done, writes["failed"].append)

        def done(_):
            writes["done"] += 1
            write_more()
        write_more()
        started = yield poll(lambda: writes["done"] >= 16, 5.0)
        self.assertTrue(started, writes)
        first = writes["done"]
        for _ in range(5):
            for command in ("show volumes", "show status", "show pairs"):
                self.assertEqual(writes["issued"] - writes["done"], 8)   # the array has work
                answer = yield term.run(command, ANSWER_WITHIN)
                checks[command](answer)
        self.assertGreater(writes["done"] - first, 15, writes)    # it kept writing meanwhile
        running[0] = False
        drained = yield poll(lambda: writes["done"] == writes["issued"], 5.0)
        self.assertTrue(drained and not writes["failed"], writes)

    @defer.inlineCallbacks
    def test_mgmt(self):
        record, docs = self.plan(mgmt=True)
        self.settings(record)
        ports = {d["name"]: d["ports"] for d in record["devices"]}
        http, amp = ports["mgmt"]["http"], ports["mgmt"]["amp"]
        term = yield self.console("rcn-mgmt", "mgmt", docs["mgmt"], "mgmt> ")
        # core1 registers (an in-process device): connected, its settings version acked
        held = []
        core_log = f"{HOST}:{ports['core1']['log']}"
        device = MgmtClient(reactor, "core1", "core", core_log,
                            lambda version, doc: held.append(version), lambda: {"groups": []},
                            lambda group: {})
        connection = client_service(device, reactor, f"tcp:{HOST}:{amp}")
        connection.startService()
        self.addCleanup(connection.stopService)
        self.assertTrue((yield poll(lambda: held, 10.0)), "core1 got no snapshot")
        version = held[-1]

        def interfaces(state):
            def check(answer):
                rows = table(answer)
                self.assertEqual(rows["http"], ["http", f"tcp:{http}:interface={HOST}", "up",
                                                "0 API requests"])
                shown = f"{HOST}:{amp}" if state == "up" else f"tcp:{amp}:interface={HOST}"
                self.assertEqual(rows["amp"], ["amp", shown, state,
                                               "1 of 1 registered devices connected"])
            return check

        def devices(answer):
            rows = table(answer)
            self.assertEqual(rows["core1"][:5], ["core1", "core", core_log, "up", str(version)])
            self.assertRegex(rows["core1"][5], r"^(-|\d+\.\d s ago)$")
            for edge in ("edgeA", "edgeB"):
                self.assertEqual(rows[edge][3:], ["never registered", "-", "-"])

        def routes(answer):
            rows = table(answer)
            self.assertEqual(rows[WWN_A], [WWN_A, WWN_B, "1", "edgeA > core1 > edgeB"])
            self.assertEqual(rows[WWN_B], [WWN_B, WWN_A, "(failback)",
                                           "edgeB > core1 > edgeA"])

        def config(answer):
            rows = table(answer)
            self.assertEqual(rows["id"], ["id", "mgmt"])
            self.assertEqual(rows["database"][1], os.path.join(self.dir, "mgmt", "mgmt.sqlite"))
            self.assertEqual(rows["amp"][1], f"tcp:{amp}:interface={HOST}")
            self.assertRegex(rows["console"][1], r"^serial /dev/pts/\d+$")

        def counters(answer):
            rows = table(answer)
            self.assertEqual(rows["api.requests"], ["api.requests", "0"])
            self.assertEqual(rows["amp.registrations"], ["amp.registrations", "0"])
            self.assertIn("server.recomputations", rows)

        def keys(answer):
            # the lab's two links and its group, by epoch and state; never a key
            self.assertIn("group 7", answer)
            self.assertEqual(len(re.findall(r"^\S+ - \S+ ", answer, re.M)), 2, answer)
            self.assertNotRegex(answer, r"[0-9a-fA-F]{32}")

        def amp_closed(answer):
            self.assertEqual(answer, "amp interface administratively down")
            return poll(lambda: not tcp_accepts(HOST, amp), ANSWER_WITHIN).addCallback(
                self.assertTrue, "the AMP port still accepts")

        def amp_open(answer):
            self.assertEqual(answer, "amp interface up")
            self.assertTrue(tcp_accepts(HOST, amp))
        yield self.every_command(term, MgmtConsole(None, FakeServer(), {}, None, None).tree, [
            ("show version", lambda a: self.assertRegex(
                a, rf"^rcn-mgmt 0\.1\.0, server mgmt, settings version {version // 10**6}, "
                   rf"0 reroutes since \(snapshot version {version}\), uptime 0h 0m \d+s$")),
            ("show interfaces", interfaces("up")),
            ("show devices", devices),
            ("show customers", lambda a: self.assertEqual(
                table(a)["lab"], ["lab", "the lab's customer", "2", "1", "any", "no limit"])),
            ("show pairs", lambda a: self.assertEqual(
                table(a)["1"], ["1", "lab", f"{WWN_A}:0", f"{WWN_B}:0", "7", "unknown", "-"])),
            ("show routes", routes),
            ("show keys", keys),
            ("show config", config),
            ("clear counters", lambda a: self.assertEqual(
                a, "counters cleared (console only; /metrics keeps counting)")),
            ("show counters", counters),
            ("shutdown amp", amp_closed),
            ("show interfaces", interfaces("administratively down")),
            ("no shutdown amp", amp_open),
        ])

    def settings(self, record: dict) -> None:
        """What ``rcn lab up`` tells the management server, written to its database before
        it starts: devices, links, the lab's customer, its storages, the pair."""
        os.makedirs(os.path.join(self.dir, "mgmt"), exist_ok=True)
        store = SQLiteStore(os.path.join(self.dir, "mgmt", "mgmt.sqlite"))
        settings = Settings(store)
        add = {"/devices": settings.add_device, "/links": settings.add_link,
               "/customers": settings.add_customer, "/storages": settings.add_storage,
               "/pairs": settings.add_pair}
        for method, path, body in lab.settings_requests(record):
            self.assertEqual(method, "POST")
            add[path](OPERATOR, body)
        store.close()

    @defer.inlineCallbacks
    def test_core_on_a_pty_of_its_own(self):
        """``serial = "pty"``: the daemon makes the pty, logs its name, links it; pyserial
        opens the link; the link goes when the daemon stops."""
        record, docs = self.plan()
        log = next(d for d in record["devices"] if d["name"] == "core1")["ports"]["log"]
        link = os.path.join(self.dir, "core1.tty")
        process, output = self.start("rcn-core", "core1",
                                     dict(docs["core1"], console={"serial": "pty",
                                                                  "pty_link": link}))

        def said():
            return b"".join(output.output).decode(errors="replace")
        linked = yield poll(lambda: os.path.islink(link), 20.0)
        self.assertTrue(linked, said())
        name = os.readlink(link)
        self.assertRegex(name, r"^/dev/pts/\d+$")
        logged = yield poll(lambda: f"console on {name} (link {link})" in said(), 5.0)
        self.assertTrue(logged, said())
        port = serial.serial_for_url(link, baudrate=115200, timeout=0)
        self.addCleanup(port.close)
        term = Terminal(self, "core1> ", lambda: port.read(65536), port.write, said)
        # pyserial drops what waited at open (the banner, unless it came after): sync first
        term.send("show version")
        yield term.until(b"rcn-core 0.1.0, device core1\r\ncore1> ")
        answer = yield term.run("sh int")
        self.assertEqual(table(answer)["log-transfer"], ["log-transfer", f"{HOST}:{log}", "up"])
        answer = yield term.run("show bogus")
        self.assertTrue(answer.startswith('% unknown word "bogus" after "show"'), answer)
        yield self.stop(process, output)
        self.assertFalse(os.path.lexists(link), "the link outlived the daemon")
