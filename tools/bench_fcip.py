"""RIO channel throughput: FCIP write exchanges per second between an array and an edge.

The edge front end (a FabricPort whose virtual storage answers every command
GOOD at once) runs in a subprocess (``--serve``) on loopback TCP; this process
is the array (ArrayPort: FLOGI, GID_PN, PLOGI, PRLI, then WRITE(16) exchanges
of ``--size`` bytes, first burst: FCP_CMND + FCP_DATA frames -> FCP_RSP). For
each depth (exchanges kept in flight) it prints exchanges/s and MB/s of write
data, next to two baselines measured in the same run:

* ``tcp echo``: the same byte counts and write pattern over loopback TCP,
  Twisted on both sides, no FC at all (per exchange the client writes the
  frames' byte counts, the server answers an FCP_RSP-sized message once a
  whole exchange's bytes are in): the floor this machine's reactor and TCP
  allow;
* ``iosim``: both RIO ends in this one process joined in memory (no sockets):
  the protocol stack's own cost on one core.

Target: >= 20,000 exchanges/s of 4 KiB.

    python -m tools.bench_fcip [--depths 1,16,64] [--seconds 3] [--size 4096] [--profile P]
    python -m tools.bench_fcip --serve PORT      (the edge front end alone)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim

from rcn.rio.array import ArrayConfig
from rcn.rio.fabric import FabricConfig, VirtualStorageEntry, access_table
from rcn.rio.fcp import ScsiResult, ScsiTarget
from rcn.rio.protocol import FcipClientFactory, FcipServerFactory, encode_frame

TARGET_EXCHANGES = 20_000
ARRAY_WWN = 0x500A098000000001
PARTNER_WWN = 0x500A098000000002
_GOOD = ScsiResult()


class GoodTarget(ScsiTarget):
    """Answers every command GOOD at once (the edge acknowledging a WR)."""

    def execute(self, command):
        return _GOOD


def edge_config() -> FabricConfig:
    def attach(vs):
        vs.target = GoodTarget()
    return FabricConfig(
        virtual_storages=[VirtualStorageEntry(wwn=PARTNER_WWN, partner_wwn=PARTNER_WWN)],
        access=access_table([(PARTNER_WWN, ARRAY_WWN)]), attach=attach)


def array_config() -> ArrayConfig:
    return ArrayConfig(port_wwn=ARRAY_WWN)


def exchange_bytes(size: int) -> tuple[list[int], int]:
    """Byte counts of the frames the array writes per exchange, and of the FCP_RSP frame."""
    frames = [len(encode_frame(6, 0, 0, 8, 0, 0, 0, 0, 0, 0, bytes(32)))]
    for offset in range(0, size, 2048):
        frames.append(len(encode_frame(1, 0, 0, 8, 0, 0, 0, 0, 0, 0,
                                       bytes(min(2048, size - offset)))))
    return frames, len(encode_frame(7, 0, 0, 8, 0, 0, 0, 0, 0, 0, bytes(24)))


# -- the TCP echo baseline -------------------------------------------------------------

class EchoServer(protocol.Protocol):
    """Answers ``reply`` bytes for every ``request`` bytes received."""

    def __init__(self, request: int, reply: int):
        self.request, self.reply, self.pending = request, b"\x00" * reply, 0

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.pending += len(data)
        while self.pending >= self.request:
            self.pending -= self.request
            self.transport.write(self.reply)


class EchoClient(protocol.Protocol):
    """Keeps ``depth`` requests (written as the FC frames would be) in flight."""

    def __init__(self, writes: list[bytes], reply: int):
        self.writes, self.reply, self.pending = writes, reply, 0
        self.load = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def issue(self):
        for chunk in self.writes:
            self.transport.write(chunk)

    def dataReceived(self, data):
        self.pending += len(data)
        while self.pending >= self.reply:
            self.pending -= self.reply
            self.load.completed()


# -- load generation -------------------------------------------------------------------------

class Load:
    """Keeps ``depth`` operations in flight for ``seconds``; ``done`` fires with (count, s)."""

    def __init__(self, issue, depth: int, seconds: float, now=time.perf_counter):
        self.issue, self.depth, self.seconds, self.now = issue, depth, seconds, now
        self.count = 0
        self.inflight = 0
        self.done = Deferred()

    def start(self):
        self.started = self.now()
        self.deadline = self.started + self.seconds
        for _ in range(self.depth):
            self.inflight += 1
            self.issue()
        return self.done

    def completed(self, _=None):
        self.count += 1
        if self.now() < self.deadline:
            self.issue()
            return
        self.inflight -= 1
        if self.inflight == 0:
            self.done.callback((self.count, self.now() - self.started))

    def failed(self, failure):
        if not self.done.called:
            self.done.errback(failure)


def rio_issue(session, size: int):
    data = os.urandom(size)
    blocks = size // 512
    state = {"lba": 0}

    def issue(load):
        lba = state["lba"]
        state["lba"] = (lba + blocks) & 0xFFFFFF
        session.write(0, lba, data).addCallbacks(load.completed, load.failed)
    return issue


async def run_rio(port: int, depths: list[int], seconds: float, size: int) -> dict:
    client = FcipClientFactory(reactor, array_config())
    proto = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(client)
    session = await proto.endpoint.session(PARTNER_WWN)
    issue = rio_issue(session, size)
    out = {}
    for depth in [depths[-1]] + depths:                 # the first run warms up
        load = Load(None, depth, seconds)
        load.issue = lambda load=load: issue(load)
        out[depth] = await load.start()
    proto.transport.loseConnection()
    return out


async def run_echo(port: int, depths: list[int], seconds: float, size: int) -> dict:
    frames, reply = exchange_bytes(size)
    writes = [bytes(n) for n in frames]
    factory = protocol.Factory.forProtocol(lambda: EchoClient(writes, reply))
    proto = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    out = {}
    for depth in [depths[-1]] + depths:
        load = proto.load = Load(proto.issue, depth, seconds)
        out[depth] = await load.start()
    proto.transport.loseConnection()
    return out


def run_iosim(depths: list[int], seconds: float, size: int) -> dict:
    """Both ends in this process over iosim; pumped by hand, timed with the wall clock."""
    clock = Clock()
    server = FcipServerFactory(clock, edge_config())
    client = FcipClientFactory(clock, array_config())
    array_proto, _, pump = iosim.connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None))
    d = array_proto.endpoint.session(PARTNER_WWN)
    pump.flush()
    sessions = []
    d.addCallback(sessions.append)
    issue = rio_issue(sessions[0], size)
    out = {}
    for depth in depths:
        load = Load(None, depth, seconds)
        load.issue = lambda load=load: issue(load)
        results = []
        load.start().addCallback(results.append)
        while not results:
            pump.pump()
        out[depth] = results[0]
    return out


# -- the edge front end ----------------------------------------------------------------------

def _profiled(path: str | None, func):
    """Run ``func`` under cProfile when ``path`` is given; the stats go to ``path``."""
    if not path:
        return func()
    import cProfile
    profile = cProfile.Profile()
    try:
        return profile.runcall(func)
    finally:
        profile.dump_stats(path)


def _print_profile(path: str, title: str, rows: int = 15) -> None:
    import pstats
    print(f"\n-- {title}: {path}")
    pstats.Stats(path, stream=sys.stdout).sort_stats("tottime").print_stats(rows)


def serve(port: int, size: int, profile: str | None = None) -> int:
    fcip_port = reactor.listenTCP(port, FcipServerFactory(reactor, edge_config()),
                                  interface="127.0.0.1")
    frames, reply = exchange_bytes(size)
    echo = reactor.listenTCP(0, protocol.Factory.forProtocol(
        lambda: EchoServer(sum(frames), reply)), interface="127.0.0.1")
    print(f"listening {fcip_port.getHost().port} {echo.getHost().port}", flush=True)
    _profiled(profile, reactor.run)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure FCIP write exchanges/s between an "
                                     "ArrayPort and an edge front end over loopback TCP.")
    parser.add_argument("--depths", default="1,16,64",
                        help="exchanges in flight, comma-separated (default 1,16,64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per row (default 3)")
    parser.add_argument("--size", type=int, default=4096,
                        help="bytes per write, a multiple of 512 (default 4096)")
    parser.add_argument("--serve", type=int, metavar="PORT",
                        help="run the edge front end on 127.0.0.1:PORT (0: any) and an echo "
                             "server; print 'listening FCIP ECHO'")
    parser.add_argument("--no-iosim", action="store_true", help="skip the in-memory row")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="cProfile both processes into PREFIX-array.prof and "
                             "PREFIX-edge.prof and print their top functions")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.size % 512:
        parser.error("--size must be a positive multiple of 512")
    if args.serve is not None:
        return serve(args.serve, args.size, args.profile)
    depths = [int(d) for d in args.depths.split(",")]

    edge_profile = args.profile + "-edge.prof" if args.profile else None
    server = subprocess.Popen([sys.executable, "-m", "tools.bench_fcip", "--serve", "0",
                               "--size", str(args.size)]
                              + (["--profile", edge_profile] if edge_profile else []),
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().split()
        if len(line) != 3 or line[0] != "listening":
            raise SystemExit(f"edge front end did not start: {line}")
        fcip_port, echo_port = int(line[1]), int(line[2])
        results = {}

        async def measure():
            results["echo"] = await run_echo(echo_port, depths, args.seconds, args.size)
            results["rio"] = await run_rio(fcip_port, depths, args.seconds, args.size)

        def finish(result):
            reactor.stop()
            return result
        reactor.callWhenRunning(lambda: ensureDeferred(measure()).addBoth(finish))
        _profiled(args.profile and args.profile + "-array.prof", reactor.run)
    finally:
        server.terminate()
        server.wait(10)
    if "rio" not in results:
        raise SystemExit("the measurement failed (see the log above)")
    if not args.no_iosim:
        results["iosim"] = run_iosim(depths, args.seconds, args.size)

    print(f"{args.size}-byte WRITE(16) exchanges, {args.seconds:g} s per row, edge front end "
          f"in a subprocess, loopback TCP")
    print(f"{'mode':<44} {'depth':>5} {'exch/s':>9} {'MB/s':>8} {'vs echo':>8}")
    labels = {"echo": "tcp echo, same bytes (baseline)",
              "rio": "FCIP RIO (ArrayPort -> FabricPort)",
              "iosim": "FCIP RIO, iosim in one process"}
    for mode in ("echo", "rio", "iosim"):
        for depth in depths:
            if mode not in results:
                continue
            count, elapsed = results[mode][depth]
            rate = count / elapsed
            base = results["echo"][depth][0] / results["echo"][depth][1]
            print(f"{labels[mode]:<44} {depth:>5} {rate:>9.0f} {rate * args.size / 1e6:>8.1f} "
                  f"{rate / base:>8.2f}")
    best = max(count / elapsed for count, elapsed in results["rio"].values())
    verdict = "meets" if best >= TARGET_EXCHANGES else "MISSES"
    print(f"best FCIP rate {best:.0f} exchanges/s {verdict} the target of {TARGET_EXCHANGES}")
    if args.profile:
        _print_profile(args.profile + "-array.prof", "array side (this process, echo rows too)")
        _print_profile(edge_profile, "edge front end (subprocess, echo rows too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
