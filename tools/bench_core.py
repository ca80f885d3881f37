"""Benchmark the core relay: 4 KiB WR entries through ``twistd rcn-core`` on loopback.

``python -m tools.bench_core [--seconds S] [--window N] [--size BYTES]``

This process plays both edges on one reactor: a source socket sends WR entries
(one per datagram) to the relay under test, a sink socket counts the entries
that come out (a BATCH counts as its entries). The source keeps ``--window``
entries in flight: every entry the sink sees lets one more go, so the relay
runs as fast as it can without the sender overrunning socket buffers (a stall
with nothing arriving for 0.2 s counts the window as lost and refills it).

Rows, each with the relay in its own process:

``baseline``      a plain Twisted UDP relay that forwards every datagram to the sink
                  without parsing it (same socket buffers, ``maxPacketSize`` 65536);
``core, batching off``   ``twistd -n rcn-core``, ``[batch] enabled = false``;
``core, batching on``    ``twistd -n rcn-core``, 1 ms / 65000 bytes / 256 entries.
``sealed, batching on``  the same, sealed (DESIGN.md 9) as a source edge sends: the WR
                  body sealed end to end under a group key (the core holds none) and
                  every datagram at hop level (``HopSeal``, a key file of the two links);
                  the core opens, batches and re-seals; the sink reads the entry type
                  through the envelope (it counts, it does not verify).

The unsealed core rows set ``[seal] mode = "none"`` (the relay's own cost); the
sealed row's extra relay microseconds per entry are the hop layer's.

Each row reports entries/s and MB/s (entry bytes, header included) at the sink,
datagrams the sink received per second, the relay's CPU use (user + system time
over the window, from /proc) and its CPU microseconds per entry, this process's
CPU use (the edges), stalls, and the ratio of entries/s to the baseline's. The
relay and the edges compete for the same CPUs: on a machine with one CPU's
worth of capacity, entries/s is bounded by the sum of both costs, and the
relay's microseconds per entry is the figure to compare.
The core runs the *installed* copy: ``make venv`` after changing rcn/.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, reactor as _reactor, task
from twisted.internet.protocol import DatagramProtocol

from datapath.frames.hop import HOP_HEADER_SIZE
from datapath.frames.logentry import HEADER_SIZE, EntryType, build_entry
from rcn.logxfer.keys import KeyRing, new_key
from rcn.logxfer.protocol import Drops
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal

SRC = 0x500A098000000001
DST = 0x500A098000000002
_BATCH = int(EntryType.BATCH)
_TYPE_AT = 5
_BUFFER = 16 << 20
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_buffers(sock) -> None:
    for force, plain, size in ((33, socket.SO_RCVBUF, _BUFFER), (32, socket.SO_SNDBUF, 4 << 20)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


# -- the baseline relay (run in its own process) -----------------------------------------
class PlainRelay(DatagramProtocol):
    def __init__(self, to: tuple[str, int]):
        self.to = to

    def startProtocol(self):
        _set_buffers(self.transport.socket)

    def datagramReceived(self, data, addr):
        self.transport.write(data, self.to)


def run_plain_relay(port: int, sink_port: int) -> None:
    _reactor.listenUDP(port, PlainRelay(("127.0.0.1", sink_port)), interface="127.0.0.1",
                       maxPacketSize=65536)
    _reactor.run()


# -- the edges (this process) ------------------------------------------------------------
class Source(DatagramProtocol):
    def startProtocol(self):
        _set_buffers(self.transport.socket)

    def datagramReceived(self, data, addr):
        pass                                    # keepalive echoes, if any


class Sink(DatagramProtocol):
    """Counts entries; every entry seen lets the pump send another."""

    def __init__(self, pump, envelope: int = 0):
        self.pump = pump
        self.entries = 0
        self.datagrams = 0
        self.at = envelope          # the hop header's bytes before the entry (sealed)

    def startProtocol(self):
        _set_buffers(self.transport.socket)

    def datagramReceived(self, data, addr):
        at = self.at
        if data[at + _TYPE_AT] == _BATCH:
            n = int.from_bytes(data[at + HEADER_SIZE:at + HEADER_SIZE + 4], "big")
        else:
            n = 1
        self.entries += n
        self.datagrams += 1
        self.pump.arrived(n)


class Pump:
    """Keeps ``window`` entries in flight; ``seal(entry)``: the datagram to send (sealed
    anew every time: a hop envelope's counter is never reused)."""

    def __init__(self, window: int, entry: bytes, seal=None):
        self.window = window
        self.entry = entry
        self.seal = seal
        self.in_flight = 0
        self.sent = 0
        self.lost_windows = 0
        self.source = None
        self.to = None
        self.running = False

    def arrived(self, n: int) -> None:
        self.in_flight = max(0, self.in_flight - n)
        self.fill()

    def fill(self) -> None:
        if not self.running:
            return
        write, entry, to, seal = self.source.transport.write, self.entry, self.to, self.seal
        while self.in_flight < self.window:
            try:
                write(entry if seal is None else seal(entry), to)
            except OSError:
                break
            self.in_flight += 1
            self.sent += 1


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_config(path: str, core_port: int, source_port: int, sink_port: int,
                 batch: bool, keys: str | None = None) -> None:
    seal = f'keys = "{keys}"' if keys else 'mode = "none"'
    with open(path, "w") as f:
        f.write(f"""
[seal]
{seal}
[core]
id = "bench-core"
listen = "127.0.0.1:{core_port}"
receive_buffer = "16MiB"
[batch]
enabled = {"true" if batch else "false"}
max_delay_ms = 1.0
max_bytes = 65000
max_entries = 256
[[route]]
source_wwn = "50:0a:09:80:00:00:00:01"
target_wwn = "50:0a:09:80:00:00:00:02"
path = ["127.0.0.1:{source_port}", "127.0.0.1:{core_port}", "127.0.0.1:{sink_port}"]
""")


MODES = ("baseline", "batching off", "batching on", "sealed, batching on")


def _seal_links(path: str, source: int, core: int, sink: int):
    """A key file of the links source - core - sink for the core; the source's sealing."""
    at = {name: Address("127.0.0.1", port) for name, port in
          (("source", source), ("core", core), ("sink", sink))}
    ring = KeyRing()
    ring.add_link(at["source"], at["core"], new_key(1))
    ring.add_link(at["core"], at["sink"], new_key(1))
    ring.save(path)
    hop = HopSeal(at["source"], ring, Drops("bench source"))
    return lambda entry: hop.seal(entry, at["core"])


def key_ring_of_group(group: int) -> KeyRing:
    ring = KeyRing()
    ring.add_group(group, new_key(1))
    return ring


@defer.inlineCallbacks
def measure(reactor, mode: str, workdir: str, seconds: float, window: int, size: int):
    sealed = mode.startswith("sealed")
    body = bytes(i & 0xFF for i in range(size))
    fields = dict(group_id=7, sequence=1, source_wwn=SRC, target_wwn=DST, ttl=16)
    if sealed:
        # what a source edge sends: the body sealed end to end under a group key the core
        # does not hold (its hop tag then covers the header only)
        [entry] = GroupSeal(key_ring_of_group(7)).datagrams(EntryType.WR, body, 65000,
                                                            **fields)
    else:
        entry = build_entry(EntryType.WR, body, **fields)
    pump = Pump(window, entry)
    source, sink = Source(), Sink(pump, HOP_HEADER_SIZE if sealed else 0)
    source_port = reactor.listenUDP(0, source, interface="127.0.0.1", maxPacketSize=65536)
    sink_port = reactor.listenUDP(0, sink, interface="127.0.0.1", maxPacketSize=65536)
    pump.source = source
    relay_port = _free_udp_port()
    pump.to = ("127.0.0.1", relay_port)
    keys = None
    if sealed:
        keys = os.path.join(workdir, "core.keys")
        pump.seal = _seal_links(keys, source_port.getHost().port, relay_port,
                                sink_port.getHost().port)
    log = open(os.path.join(workdir, f"{mode}.log"), "wb")
    if mode == "baseline":
        args = [sys.executable, "-m", "tools.bench_core", "--plain-relay",
                str(relay_port), str(sink_port.getHost().port)]
    else:
        config = os.path.join(workdir, f"{mode}.toml")
        _core_config(config, relay_port, source_port.getHost().port, sink_port.getHost().port,
                     mode.endswith("batching on"), keys)
        args = [TWISTD, "-n", "--pidfile=", "--logfile=-", "rcn-core", "--config", config]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        # ready: a probe entry comes out at the sink
        deadline = time.monotonic() + 30
        while sink.entries == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: relay did not come up (see {log.name})")
            source.transport.write(entry if pump.seal is None else pump.seal(entry), pump.to)
            yield task.deferLater(reactor, 0.05, lambda: None)
        pump.running = True
        last = [sink.entries]

        def watchdog():
            if sink.entries == last[0] and pump.in_flight:
                pump.lost_windows += 1
                pump.in_flight = 0
                pump.fill()
            last[0] = sink.entries
        dog = task.LoopingCall(watchdog)
        dog.start(0.2, now=False)
        pump.fill()
        yield task.deferLater(reactor, min(1.0, seconds / 3), lambda: None)   # warm up
        entries0, datagrams0, cpu0 = sink.entries, sink.datagrams, _cpu_seconds(proc.pid)
        own0 = _cpu_seconds(os.getpid())
        lost0, t0 = pump.lost_windows, time.perf_counter()
        yield task.deferLater(reactor, seconds, lambda: None)
        elapsed = time.perf_counter() - t0
        entries, datagrams = sink.entries - entries0, sink.datagrams - datagrams0
        cpu = _cpu_seconds(proc.pid) - cpu0
        own = _cpu_seconds(os.getpid()) - own0
        pump.running = False
        dog.stop()
    finally:
        proc.terminate()
        proc.wait()
        log.close()
        yield source_port.stopListening()
        yield sink_port.stopListening()
    return {"entries_s": entries / elapsed, "mb_s": entries * len(entry) / elapsed / 1e6,
            "datagrams_s": datagrams / elapsed, "cpu": cpu / elapsed, "edges_cpu": own / elapsed,
            "lost": pump.lost_windows - lost0}


@defer.inlineCallbacks
def main(reactor, args):
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_core.") as workdir:
        for mode in MODES:
            rows[mode] = yield measure(reactor, mode, workdir, args.seconds, args.window,
                                       args.size)
    base = rows["baseline"]["entries_s"]
    print(f"\n{args.size}-byte WR entries ({args.size + HEADER_SIZE} bytes with the header), "
          f"{args.window} in flight, {args.seconds:g} s per row, loopback, "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'relay':<26} {'entries/s':>10} {'MB/s':>8} {'datagrams/s':>12} {'relay CPU':>10} "
          f"{'us/entry':>9} {'edges CPU':>10} {'stalls':>7} {'vs baseline':>12}")
    for mode, label in zip(MODES, ("plain UDP relay", "core, batching off", "core, batching on",
                                   "core, sealed, batching on")):
        r = rows[mode]
        print(f"{label:<26} {r['entries_s']:>10,.0f} {r['mb_s']:>8.1f} {r['datagrams_s']:>12,.0f} "
              f"{r['cpu'] * 100:>9.0f}% {r['cpu'] / r['entries_s'] * 1e6:>9.1f} "
              f"{r['edges_cpu'] * 100:>9.0f}% {r['lost']:>7} "
              f"{r['entries_s'] / base:>11.2f}x")


def cli(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--window", type=int, default=256, help="entries in flight")
    parser.add_argument("--size", type=int, default=4096, help="WR body bytes")
    parser.add_argument("--plain-relay", nargs=2, type=int, metavar=("PORT", "SINK_PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_relay:
        run_plain_relay(*args.plain_relay)
        return
    task.react(main, [args])


if __name__ == "__main__":
    cli()
