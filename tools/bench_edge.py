"""The edges' data-plane work per write, in one process: CPU µs per write.

``python -m tools.bench_edge [--writes N] [--profile]``

A source EdgeDevice and a target EdgeDevice (memory log, memory apply
counters) pass datagrams to each other through their LogTransferProtocols,
as the daemons do: an edge sends with ``LogTransferProtocol.send`` (sealed:
the hop layer's ``seal_parts``, and header, datagram and tag handed to the
socket's ``sendmsg`` apart, ``_send_sealed``), and receives with
``datagramReceived``. The socket is a stand-in for the kernel: it copies what
it is handed into one datagram, as the kernel does, in both rows (a ``write``
of the clear row as much as a gathered ``sendmsg`` of the sealed one).
The target applies to an in-memory volume that answers at once. No real
sockets, no FCIP, no fsync: what is left is the edges' own Python work per
write -- entry building, logging, sealing, sending, parsing, opening,
reordering, applying, answering -- which the whole-lab benchmark cannot show
apart from the noise of six processes sharing two cores.

Rows: 4 KiB and 64 KiB writes; baseline in the same run: building the same
log entries alone (``logentry.segment_entry`` of the RIO area), the least any
edge does per write. Prints µs per write and writes/s of one core.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import deque

from twisted.internet import task
from twisted.internet.defer import succeed

from datapath.frames import fcp
from datapath.frames.logentry import EntryType, segment_entry
from rcn.edge.applystate import ApplyState
from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
from rcn.edge.logstore import LogStore
from rcn.logxfer.keys import KeyRing, new_key
from rcn.logxfer.protocol import LogTransferProtocol
from rcn.logxfer.rioarea import command_area
from rcn.logxfer.routes import Address, Route, RouteTable
from rcn.logxfer.seal import GroupSeal, HopSeal
from rcn.rio.fcp import ScsiCommand, ScsiResult, build_write16_cdb

A_WWN, B_WWN = 0x500A098000000001, 0x500A098000000002
A, B = Address("10.0.0.1", 47001), Address("10.0.0.2", 47001)


class _Volume:
    def __init__(self, size: int):
        self.data = bytearray(size)

    def execute(self, command, lun):
        lba = command.parsed["lba"]
        self.data[lba * 512:lba * 512 + len(command.data_out)] = command.data_out
        return succeed(ScsiResult())


class _Kernel:
    """A protocol's transport and socket: what is sent is copied into one datagram and
    queued on ``wire``, as the kernel would deliver it."""

    def __init__(self, wire: deque, me: Address):
        self.wire = wire
        self.me = me
        self.socket = self          # LogTransferProtocol._send_sealed gathers through it
        self.sends = {"write": 0, "sendmsg": 0}

    def write(self, data: bytes, addr) -> None:
        self.sends["write"] += 1
        self.wire.append((self.me, bytes(memoryview(data)), Address(*addr)))   # the copy

    def sendmsg(self, buffers, ancdata, flags, addr) -> int:
        self.sends["sendmsg"] += 1
        data = b"".join(buffers)    # the gather: the same copy
        self.wire.append((self.me, data, Address(*addr)))
        return len(data)


def _pair_of_edges(clock, sealed: bool):
    routes = RouteTable([Route(A_WWN, B_WWN, (A, B))])
    wire: deque = deque()
    edges, protocols = [], []
    volume = _Volume(64 << 20)
    ring = KeyRing()
    ring.add_link(A, B, new_key(1))
    ring.add_group(7, new_key(1))
    for me, apply in ((A, None), (B, lambda header: volume)):
        store, state = LogStore(None, mode="memory"), ApplyState(None)
        store.open()
        state.open()
        proto = LogTransferProtocol(None)
        proto.hop = HopSeal(me, ring, proto.drops) if sealed else None
        proto.transport = _Kernel(wire, me)
        settings = EdgeSettings(me=me, pairs=[PairEntry(A_WWN, 0, B_WWN, 0, 7)], routes=routes)
        edge = EdgeDevice(clock, settings, store, state, proto.send, apply,
                          seal=GroupSeal(ring, sealed=sealed))
        proto.handler = edge
        edges.append(edge)
        protocols.append(proto)
    by_address = {A: protocols[0], B: protocols[1]}

    def deliver():
        while wire:
            sender, data, address = wire.popleft()
            by_address[address].datagramReceived(data, (sender.host, sender.port))
    deliver.kernels = [proto.transport for proto in protocols]
    return edges, deliver


def run_edges(size: int, writes: int, depth: int = 64, sealed: bool = True) -> float:
    """Seconds of this process's CPU for ``writes`` writes of ``size`` bytes through both edges
    (sealed: hop layer and end-to-end seal, as the daemons run by default)."""
    clock = task.Clock()
    (source, target), deliver = _pair_of_edges(clock, sealed)
    data = bytes(size)
    blocks = size // 512
    done = {"acked": 0}

    def acked(result):
        done["acked"] += 1

    started = time.process_time()
    issued = 0
    while done["acked"] < writes:
        while issued < writes and issued - done["acked"] < depth:
            lba = (issued * blocks) % ((64 << 20) // 512 - blocks)
            cdb = build_write16_cdb(lba, blocks)
            command = ScsiCommand(0x010100, A_WWN, 0x010200, B_WWN, 0, cdb,
                                  fcp.parse_cdb(cdb, fast=True),
                                  fcp.TaskAttribute.ORDERED, data, 0, issued & 0xFFFF)
            source.rio_command(command, B_WWN).addCallback(acked)
            issued += 1
        clock.advance(0)
        deliver()
    while source.sender.outstanding:
        clock.advance(0)
        deliver()
    elapsed = time.process_time() - started
    applied = target.target_side.receivers[7].durable
    if applied != writes:
        raise RuntimeError(f"target applied {applied} of {writes}")
    # what the daemons do: sealed datagrams gathered by sendmsg, clear ones written
    for kernel in deliver.kernels:
        if kernel.sends["sendmsg" if sealed else "write"] == 0 or \
                kernel.sends["write" if sealed else "sendmsg"]:
            raise RuntimeError(f"{kernel.me} sent {kernel.sends}, not as the daemons send")
    return elapsed


def run_baseline(size: int, writes: int) -> float:
    data = bytes(size)
    cdb = build_write16_cdb(0, size // 512)
    started = time.process_time()
    for n in range(writes):
        area = command_area(0x010100, 0x010200, n & 0xFFFF, 0, cdb, data)
        segment_entry(EntryType.WR, area, 64912, group_id=7, sequence=n + 1, target_wwn=B_WWN,
                      source_wwn=A_WWN)
    return time.process_time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20000, help="4 KiB writes (default 20000;"
                        " 64 KiB rows use a tenth)")
    parser.add_argument("--profile", action="store_true", help="cProfile the 4 KiB row")
    args = parser.parse_args(argv)
    print("both edges in one process, memory log, datagrams through LogTransferProtocol "
          "(sealed: seal_parts + sendmsg); CPU time")
    print(f"{'row':44} {'writes':>7} {'us/write':>9} {'writes/s':>10} {'vs entry build':>15}")
    for size, writes in ((4096, args.writes), (65536, max(1, args.writes // 10))):
        base = run_baseline(size, writes) / writes
        clear = run_edges(size, writes, sealed=False) / writes
        if args.profile and size == 4096:
            profile = cProfile.Profile()
            profile.enable()
        edges = run_edges(size, writes) / writes
        if args.profile and size == 4096:
            profile.disable()
        for name, cost in ((f"entry build alone, {size // 1024} KiB (baseline)", base),
                           (f"source + target edge, {size // 1024} KiB, seal = none", clear),
                           (f"source + target edge, {size // 1024} KiB, sealed", edges)):
            print(f"{name:44} {writes:7d} {cost * 1e6:9.1f} {1 / cost:10.0f} "
                  f"{cost / base:14.1f}x")
        print(f"{'  sealing adds':44} {'':7} {(edges - clear) * 1e6:9.1f} "
              f"{'':10} {(edges / clear - 1) * 100:13.1f}%")
    if args.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
