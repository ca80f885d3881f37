"""Helpers shared by the test modules."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from twisted.internet import defer, protocol, task

from twisted.trial.unittest import FailTest, SkipTest

from datapath.frames.errors import DecodeError

REQUIRE_EXTERNAL = os.environ.get("RCN_REQUIRE_EXTERNAL") == "1"


def require_tool(testcase, name: str) -> str:
    """Path of an external tool; skip without it, or fail when CI demands it."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed"
    if REQUIRE_EXTERNAL:
        testcase.fail(f"{reason} and RCN_REQUIRE_EXTERNAL=1")
    raise SkipTest(reason)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to HOST:PORT is accepted (within a second)."""
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect((host, port))
        except OSError:
            return False
    return True


class CollectOutput(protocol.ProcessProtocol):
    """A child process's stdout and stderr together; ``ended`` fires with them as text."""

    def __init__(self):
        self.output = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(b"".join(self.output).decode(errors="replace"))


def wait_connections_closed(factory) -> defer.Deferred:
    """Fire once an NBD server factory has seen every client connection close."""
    if not factory.connections:
        return defer.succeed(None)
    d = defer.Deferred()
    original = factory.connection_closed

    def closed(proto):
        original(proto)
        if not factory.connections and not d.called:
            d.callback(None)
    factory.connection_closed = closed
    return d


def tshark_fields(testcase, capture_path: str, fields: list[str], *extra: str) -> list[list[str]]:
    """Run ``tshark -T fields`` and return one row of field values per packet.

    stderr stays visible in the failure message: a misspelt field makes tshark
    print nothing and exit 1.
    """
    tshark = require_tool(testcase, "tshark")
    args = [tshark, "-n", "-r", capture_path, "-T", "fields", "-E", "separator=|"]
    for name in fields:
        args += ["-e", name]
    proc = subprocess.run(args + list(extra), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        testcase.fail(f"tshark exited {proc.returncode}: {proc.stderr.strip()}")
    return [line.split("|") for line in proc.stdout.splitlines()]


def check_layout_golden(testcase, layout, data: bytes, values: dict) -> None:
    """One golden vector both ways: parse (checked and compiled), build, size, numpy."""
    testcase.assertEqual(layout.size, len(data))
    for fast in (False, True):
        parsed = layout.parse(data, fast=fast)
        for name, value in values.items():
            testcase.assertEqual(parsed[name], value, f"{layout.layer}.{name} (fast={fast})")
    testcase.assertEqual(layout.build(values), data)
    array = layout.wire_to_array(data)
    for name, value in values.items():
        if name in layout.by_name and not layout.by_name[name].raw:
            testcase.assertEqual(int(array[name][0]), value, f"numpy {layout.layer}.{name}")
    testcase.assertEqual(layout.array_to_wire(array), data)


def assert_decode_error(testcase, func, *args, layer: str | None = None, **kw) -> DecodeError:
    """``func`` must raise DecodeError (and nothing else); return it."""
    try:
        func(*args, **kw)
    except DecodeError as exc:
        if layer is not None:
            testcase.assertEqual(exc.layer, layer, str(exc))
        return exc
    testcase.fail(f"{func.__name__} accepted bad input")


def poll(condition, limit: float, clock=None, interval: float = 0.01) -> defer.Deferred:
    """Fires with ``condition()`` once it holds, or after ``limit`` seconds."""
    if clock is None:
        from twisted.internet import reactor as clock
    start = clock.seconds()
    last = [None]

    def check():
        last[0] = condition()
        if last[0] or clock.seconds() - start > limit:
            loop.stop()
    loop = task.LoopingCall(check)
    loop.clock = clock
    return loop.start(interval).addCallback(lambda _: last[0])


def until(what: str, condition, limit: float, describe=None,
          interval: float = 0.05) -> defer.Deferred:
    """Fires once ``condition()`` holds; after ``limit`` seconds fails the test
    ("not WHAT after LIMIT s", with ``describe()`` appended when given)."""
    def judged(held):
        if not held:
            detail = f": {describe()}" if describe else ""
            raise FailTest(f"not {what} after {limit} s{detail}")
    return poll(condition, limit, interval=interval).addCallback(judged)


def start_as_twistd_would(testcase, top, umask: int = 0o077) -> None:
    """``privilegedStartService`` and ``startService`` under ``umask``, as ``twistd --umask``
    runs them (the umask is set before either); stopped at the test's end."""
    old = os.umask(umask)
    try:
        top.privilegedStartService()
        top.startService()
    finally:
        os.umask(old)
    testcase.addCleanup(top.stopService)


def key_ring(links=(), groups=()):
    """A ``KeyRing`` with a fresh epoch-1 key for each (address, address) link and group."""
    from rcn.logxfer.keys import KeyRing, new_key
    ring = KeyRing()
    for a, b in links:
        ring.add_link(a, b, new_key(1))
    for group in groups:
        ring.add_group(group, new_key(1))
    return ring


def seal_with(testcase, doc: dict, links=(), groups=()):
    """Give a device's config ``doc`` a key file (outside any data directory) holding a
    fresh key for each link and group; the ring, for the test's own sealing."""
    ring = key_ring(links, groups)
    path = os.path.abspath(testcase.mktemp())
    ring.save(path)
    doc["seal"] = {"keys": path}
    return ring
