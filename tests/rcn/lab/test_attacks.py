"""Issue 17's attacks on a sealed lab of real daemons: one datagram from a plain socket.

A static lab (`rcn lab up`: arrayA -> edgeA -> core1 -> edgeB -> arrayB, one pair in
group 7, 1 MiB volumes, key files written by the lab) and, as the attacker, a UDP
socket of the test's own with datagrams built by the project's frame builders
(``datapath.frames.logentry``, ``rcn.logxfer.rioarea``). Where the attack needs a
neighbour's address (a datagram "from core1"), the test spoofs it with a raw IP socket,
as anyone on the operator's network could; and it captures a real sealed datagram off
the loopback interface with a packet socket. Both need CAP_NET_RAW: without it those
parts are skipped (and say so).

The attacks: a forged WR with the next sequence (read from the target edge's
``/status``), a forged WROK for a retained entry, a forged REVERSE CTRL with SUSPEND --
each from the attacker's socket (``not_neighbour``) and from core1's address under a key
the lab never made (``bad_tag``; another epoch: ``unknown_key``) --, a captured sealed WR
sent again (``replayed``; also after the receiver was killed and started again: its
replay window's saved high-water mark, ``rcn.logxfer.hopstate``), and a WROK under core1's own link key, which passes the hop
layer and is refused end to end (``e2e_unsealed``, ``e2e_bad_tag``): a core cannot
acknowledge for the target edge.

Each test asserts what the attack may change: one drop counter of the device attacked,
by reason, and nothing else -- the target volume equal to the source, the pair Duplex
at both arrays and both edges, every acknowledged write applied.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from datapath.frames import fcp, gbe
from datapath.frames.hop import HOP_HEADER, HOP_HEADER_SIZE
from datapath.frames.logentry import HEADER_SIZE, EntryFlag, EntryType, build_entry
from rcn import lab as lablib
from rcn.lab import get_json
from rcn.logxfer.keys import Key, KeyRing
from rcn.logxfer.protocol import Drops
from rcn.logxfer.rioarea import command_area, response_area
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import HopSeal
from rcn.nbd.client import connect
from rcn.rio.fcp import ScsiResult
from tests.rcn.lab.test_process import RCN, lab_up, run, volume
from tests.support import until

TOPOLOGY = '[lab]\nmgmt = false\ncapacity = "1MiB"\n'
GROUP, LUN = 7, 0
SOURCE_WWN, TARGET_WWN = lablib.DEFAULT_SOURCE_WWN, lablib.DEFAULT_TARGET_WWN
HOST = "127.0.0.1"
ETH_P_IP = 0x0800
UDP_HEADER = 8


def ip_udp(packet: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an IPv4 UDP packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    at = (packet[0] & 0x0F) * 4
    udp = packet[at:]
    return (int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big"),
            udp[UDP_HEADER:int.from_bytes(udp[4:6], "big")])


def raw_socket(family: int, kind: int, proto: int) -> socket.socket:
    try:
        return socket.socket(family, kind, proto)
    except PermissionError:
        raise SkipTest("spoofing a neighbour's address or capturing needs CAP_NET_RAW") from None


def spoof(source: Address, to: Address, payload: bytes) -> None:
    """``payload`` to ``to`` as a UDP datagram whose source address is ``source``."""
    with raw_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.sendto(gbe.build_udp(source.host, to.host, source.port, to.port, payload), (to.host, 0))


def forged(entry_type: int, area: bytes, sequence: int, flags: int = 0) -> bytes:
    """A clear entry of the lab's pair (group 7, LUN 0 to LUN 0)."""
    return build_entry(entry_type, area, flags=flags, group_id=GROUP, sequence=sequence,
                       io_time_ns=time.time_ns(), target_wwn=TARGET_WWN, target_lun=LUN,
                       source_wwn=SOURCE_WWN, source_lun=LUN, ttl=16)


def forged_wr(sequence: int, data: bytes, lba: int = 0) -> bytes:
    """A WR writing ``data`` at ``lba`` of the target LUN."""
    cdb = fcp.build_write16(lba, len(data) // fcp.BLOCK_SIZE)
    return forged(EntryType.WR, command_area(0, 0, 0x77, LUN, cdb, data), sequence)


def wrong_key_hop(me: Address, peer: Address, datagram: bytes, epoch: int = 1) -> bytes:
    """``datagram`` in a hop envelope from ``me`` to ``peer`` under a key the lab never made."""
    ring = KeyRing()
    ring.add_link(me, peer, Key(epoch, os.urandom(32)))
    return HopSeal(me, ring, Drops("attacker")).seal(datagram, peer)


class AttackTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(run, RCN, "lab", "down", "--dir", self.dir)
        self.lab = yield lab_up(self, self.dir, TOPOLOGY)
        self.devices = {d["name"]: d for d in self.lab["devices"]}
        self.address = {n: Address(HOST, self.devices[n]["ports"]["log"])
                        for n in ("edgeA", "core1", "edgeB")}
        self.attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.attacker.bind((HOST, 0))
        self.addCleanup(self.attacker.close)
        self.written = bytearray(self.lab["pairs"][0]["capacity"])
        yield self.write(0, b"\x11" * 8192)          # the pair has carried a write

    # -- the host, the figures --------------------------------------------------------------
    @defer.inlineCallbacks
    def write(self, offset: int, data: bytes, applied: bool = True):
        """One acknowledged host write to arrayA's volume; ``applied``: wait until the
        target applied everything and the volumes are equal."""
        url = self.lab["nbd_url"]
        host, port = url.removeprefix("nbd://").split("/")[0].split(":")
        client = yield connect(reactor, host, int(port), url.rsplit("/", 1)[1])
        try:
            yield client.write(offset, data, fua=True)
        finally:
            yield client.disconnect()
        self.written[offset:offset + len(data)] = data
        if applied:
            yield self.until_applied()

    def status(self, name: str) -> dict:
        return get_json(self.devices[name]["urls"]["status"])

    def group(self, name: str) -> dict:
        return next((g for g in self.status(name)["groups"] if g["group"] == GROUP), {})

    def drops(self, name: str) -> dict:
        return dict(self.status(name)["drops"])

    def pair_states(self) -> dict:
        out = {}
        for array in ("arrayA", "arrayB"):
            out[array] = get_json(f"{self.devices[array]['urls']['control']}/pairs/{LUN}")["state"]
        for edge in ("edgeA", "edgeB"):
            out[edge] = [p["state"] for p in self.status(edge)["pairs"]]
        return out

    def until_applied(self, limit: float = 30.0):
        seen = {}

        def done():
            source, target = self.group("edgeA"), self.group("edgeB")
            seen.update(generation=source.get("log_generation", 0),
                        retained=source.get("log_retained_entries", 0),
                        applied=lablib.applied_counter(target))
            return seen["retained"] == 0 and seen["applied"] == seen["generation"] > 0
        return until("applied at the target", done, limit, lambda: str(seen))

    def until_dropped(self, name: str, before: dict, reason: str):
        """Exactly one more ``reason`` drop at ``name``, and no other drop."""
        def counted():
            return self.drops(name).get(reason, 0) > before.get(reason, 0)
        d = until(f"a {reason} drop at {name}", counted, 10.0, lambda: str(self.drops(name)))

        def exactly(_):
            after = self.drops(name)
            self.assertEqual(after, dict(before, **{reason: before.get(reason, 0) + 1}))
        return d.addCallback(exactly)

    def assert_volumes(self):
        pair = self.lab["pairs"][0]
        source, target = volume(pair["source_volume"]), volume(pair["target_volume"])
        self.assertEqual(source, bytes(self.written))
        self.assertTrue(target == source, "the target volume differs from the source")

    def next_sequence(self) -> int:
        """What an attacker reads from the target edge's unauthenticated /status."""
        return lablib.applied_counter(self.group("edgeB")) + 1

    def stop_target(self):
        """SIGSTOP edgeB (its socket keeps what arrives); the function that resumes it
        (also called at cleanup)."""
        lablib.signal_device(self.dir, "edgeB", signal.SIGSTOP)
        resumed = []

        def resume():
            if not resumed:
                resumed.append(lablib.signal_device(self.dir, "edgeB", signal.SIGCONT))
        self.addCleanup(resume)
        return resume

    @defer.inlineCallbacks
    def attack(self, name: str, datagram: bytes, epochs=(1,)):
        """``datagram`` to device ``name`` from the attacker's socket (``not_neighbour``),
        then from core1's address in a hop envelope under a key the lab never made, of each
        of ``epochs`` (1: the link's epoch, ``bad_tag``; another: ``unknown_key``)."""
        before = self.drops(name)
        self.attacker.sendto(datagram, (HOST, self.address[name].port))
        yield self.until_dropped(name, before, "not_neighbour")
        for epoch in epochs:
            before = self.drops(name)
            spoof(self.address["core1"], self.address[name],
                  wrong_key_hop(self.address["core1"], self.address[name], datagram, epoch))
            yield self.until_dropped(name, before, "bad_tag" if epoch == 1 else "unknown_key")

    # -- the attacks ------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_forged_wr_with_the_next_sequence_is_refused_and_the_next_write_applies(self):
        states = self.pair_states()
        sequence = self.next_sequence()
        yield self.attack("edgeB", forged_wr(sequence, b"\xee" * 4096), epochs=(1, 9))
        self.assertEqual(lablib.applied_counter(self.group("edgeB")), sequence - 1)
        # the next real write takes that sequence and is applied
        yield self.write(0, b"\x22" * 4096)
        self.assertEqual(self.group("edgeA")["log_generation"], sequence)
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)

    @defer.inlineCallbacks
    def test_forged_wrok_for_a_retained_entry_is_refused_and_the_entry_applies_later(self):
        states = self.pair_states()
        resume = self.stop_target()                  # entries stay retained at edgeA
        yield self.write(65536, b"\x33" * 4096, applied=False)         # acknowledged
        source = self.group("edgeA")
        sequence = source["log_generation"]
        self.assertEqual(source["log_retained_entries"], 1)
        wrok = forged(EntryType.WROK, response_area(0, 0, 0x77, 0x77, ScsiResult()), sequence,
                      int(EntryFlag.CUMULATIVE))
        yield self.attack("edgeA", wrok)
        self.assertEqual(self.group("edgeA")["log_retained_entries"], 1)  # still held
        resume()
        yield self.until_applied()
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)

    @defer.inlineCallbacks
    def test_forged_reverse_suspend_is_refused_and_both_arrays_stay_duplex(self):
        states = self.pair_states()
        self.assertEqual(states["arrayA"], "duplex")
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, GROUP, LUN)
        ctrl = forged(EntryType.CTRL, command_area(0, 0, 0, LUN, cdb), 0,
                      int(EntryFlag.REVERSE))
        yield self.attack("edgeA", ctrl)
        self.assertEqual(self.pair_states(), states)
        self.assertEqual(self.status("edgeA")["pair_control"].get("failovers", 0), 0)
        yield self.write(4096, b"\x44" * 4096)             # still replicating
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)

    def sniffer(self, sender: Address, receiver: Address, count: int, wanted=lambda d: True):
        """Capture off the loopback interface: a condition that holds once ``count``
        different datagrams ``sender`` -> ``receiver`` that ``wanted`` accepts were seen;
        the list they are put in."""
        sniffer = raw_socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.addCleanup(sniffer.close)
        sniffer.bind(("lo", 0))
        sniffer.setblocking(False)
        captured: list[bytes] = []

        def capture():
            while len(captured) < count:
                try:
                    packet = sniffer.recv(1 << 16)
                except BlockingIOError:
                    return False
                udp = ip_udp(packet)       # (a packet on lo shows twice: kept once)
                if (udp and udp[:2] == (sender.port, receiver.port) and wanted(udp[2])
                        and udp[2] not in captured):
                    captured.append(udp[2])
            return True
        return capture, captured

    @defer.inlineCallbacks
    def captured_wr(self, offset: int, data: bytes):
        """A host write; the sealed WR core1 sent edgeB for it, captured off the wire."""
        core, edge = self.address["core1"], self.address["edgeB"]
        # a whole WR (not a keepalive): its log header's entry type, inside the envelope
        capture, captured = self.sniffer(core, edge, 1, lambda d: (
            len(d) > HOP_HEADER_SIZE + HEADER_SIZE and d[HOP_HEADER_SIZE + 5] == EntryType.WR))
        yield self.write(offset, data)
        yield until("a WR captured from core1 to edgeB", capture, 10.0)
        return captured[0]

    @defer.inlineCallbacks
    def replayed_at_edge_b(self, datagram: bytes):
        """``datagram`` sent again from core1's address: one ``replayed`` drop at edgeB,
        nothing applied."""
        applied = lablib.applied_counter(self.group("edgeB"))
        before = self.drops("edgeB")
        spoof(self.address["core1"], self.address["edgeB"], datagram)
        yield self.until_dropped("edgeB", before, "replayed")
        self.assertEqual(lablib.applied_counter(self.group("edgeB")), applied)

    @defer.inlineCallbacks
    def test_a_replayed_sealed_datagram_is_refused(self):
        """A WR as core1 sent it to edgeB, captured off the wire and sent again."""
        states = self.pair_states()
        captured = yield self.captured_wr(8192, b"\x55" * 4096)
        yield self.replayed_at_edge_b(captured)
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)

    @defer.inlineCallbacks
    def test_a_core_s_link_key_cannot_acknowledge_for_the_target_edge(self):
        """A WROK from core1's address under core1's own link key (what a core, or anyone
        who took its key file, holds) passes the hop layer and is refused end to end: a
        clear one (``e2e_unsealed``) and one claiming a seal (``e2e_bad_tag``)."""
        states = self.pair_states()
        core, source = self.address["core1"], self.address["edgeA"]
        ring = KeyRing.load(self.devices["core1"]["keys"])
        self.assertEqual(ring.groups, {})                  # the lab gave the core no group key
        resume = self.stop_target()                  # entries stay retained at edgeA
        # counters core1 used toward edgeB: fresh in edgeA's window for core1, and close
        # below core1's own, so its next datagrams to edgeA stay fresh as well
        capture, captured = self.sniffer(core, self.address["edgeB"], 2)
        yield self.write(65536, b"\x66" * 4096, applied=False)         # acknowledged
        yield until("two datagrams from core1 to edgeB", capture, 10.0)
        at = HOP_HEADER.offsets["counter"]
        counters = [int.from_bytes(d[at:at + 8], "big") for d in captured]
        sequence = self.group("edgeA")["log_generation"]
        area = response_area(0, 0, 0x77, 0x77, ScsiResult())
        for counter, (seal, reason) in zip(counters, ((0, "e2e_unsealed"), (1, "e2e_bad_tag"))):
            wrok = build_entry(EntryType.WROK, area + bytes(28 * seal), group_id=GROUP,
                               sequence=sequence, io_time_ns=time.time_ns(),
                               target_wwn=TARGET_WWN, target_lun=LUN, source_wwn=SOURCE_WWN,
                               source_lun=LUN, ttl=16, seal=seal, key_epoch=seal)
            hop = HopSeal(core, ring, Drops("attacker"), clock_ns=lambda c=counter: c - 1)
            before = self.drops("edgeA")
            spoof(core, source, hop.seal(wrok, source))
            yield self.until_dropped("edgeA", before, reason)
            self.assertEqual(self.group("edgeA")["log_retained_entries"], 1)  # still held
        resume()
        yield self.until_applied()
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)

    @defer.inlineCallbacks
    def test_a_datagram_captured_before_the_receiver_crashed_is_refused_after(self):
        """A WR core1 sent to edgeB, captured; edgeB killed (SIGKILL, no clean stop) once
        its replay window was saved (every second), started again: the captured WR is
        ``replayed`` at the hop layer (its saved high-water mark is the window's floor)."""
        states = self.pair_states()
        captured = yield self.captured_wr(12288, b"\x77" * 4096)
        saved = os.path.join(self.devices["edgeB"]["data_dir"], "keys.hop")
        at = HOP_HEADER.offsets["counter"]
        counter, core = int.from_bytes(captured[at:at + 8], "big"), str(self.address["core1"])

        def window_saved():
            with open(saved) as f:
                rows = [line.split() for line in f if line.startswith("seen ")]
            return any(row[1:3] == [core, "1"] and int(row[3]) >= counter for row in rows)
        yield until("edgeB's window saved", window_saved, 10.0)
        pid = lablib.signal_device(self.dir, "edgeB", signal.SIGKILL)
        # gone, not a zombie: a new twistd refuses to start while its pidfile's pid exists
        yield until("edgeB's process gone", lambda: not os.path.exists(f"/proc/{pid}"), 10.0)
        lablib.restart(self.dir, "edgeB")
        yield self.replayed_at_edge_b(captured)
        yield self.write(16384, b"\x78" * 4096)          # core1's new datagrams still open
        self.assert_volumes()
        self.assertEqual(self.pair_states(), states)
