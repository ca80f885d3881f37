"""Generate a capture of RCN traffic: what an array and its edge put on the wire.

For each write: the array's FCIP exchange with the source edge (FCP_CMND
WRITE(16), FCP_DATA frames of up to 2048 bytes, FCP_RSP GOOD back) and the
edge's log entry to the next hop (UDP WR with the exchange's frames as its RIO
area, the WROK coming back). Deterministic for a given seed.

With ``--sealed KEYFILE`` the log entries are sealed as a sealed network sends them
(DESIGN.md 9): bodies end to end under the group key, every datagram in a hop envelope
under the link key of the two log addresses. The keys (derived from the seed) are written
to KEYFILE, 0600, for ``rcn-decode --keys`` and the Wireshark dissector's "key file"
preference. The end-to-end nonces are random, so sealed captures differ from run to run.

    python -m tools.sample_traffic OUT.pcap [--writes N] [--pcapng] [--seed S] [--sealed KEYFILE]
"""

from __future__ import annotations

import argparse
import random
import sys

from datapath.frames import capture, fc, fcip, fcp, gbe, logentry
from rcn.logxfer.keys import Key, KeyRing
from rcn.logxfer.routes import Address
from rcn.logxfer.seal import GroupSeal, HopSeal

ARRAY = ("10.0.0.1", 40000)
EDGE = ("10.0.0.2", fcip.FCIP_PORT)
EDGE_LOG = ("10.0.1.2", logentry.LOG_PORT)
CORE_LOG = ("10.0.1.3", logentry.LOG_PORT)
SOURCE_WWN = 0x500A098000000001
TARGET_WWN = 0x500A098000000002
ARRAY_PORT_ID = 0x010100
VIRTUAL_PORT_ID = 0x010200
MAX_DATA = 2048
START_NS = 1_700_000_000 * 10**9


def write_exchange(ox_id: int, lun: int, lba: int, data: bytes) -> tuple[list, list]:
    """FC frames (header dict, payload) array -> edge, and edge -> array."""
    to_edge = dict(d_id=VIRTUAL_PORT_ID, s_id=ARRAY_PORT_ID, type=fc.FcType.FCP, ox_id=ox_id)
    to_array = dict(d_id=ARRAY_PORT_ID, s_id=VIRTUAL_PORT_ID, type=fc.FcType.FCP, ox_id=ox_id,
                    rx_id=ox_id, f_ctl=fc.FCtl.EXCHANGE_CONTEXT | fc.FCtl.LAST_SEQUENCE
                    | fc.FCtl.END_SEQUENCE)
    blocks = len(data) // fcp.BLOCK_SIZE
    cmnd = fcp.build_fcp_cmnd(lun, fcp.build_write16(lba, blocks), len(data), write=True)
    out = [(dict(to_edge, r_ctl=fc.RCtl.FCP_CMND,
                 f_ctl=fc.FCtl.FIRST_SEQUENCE | fc.FCtl.END_SEQUENCE | fc.FCtl.SEQUENCE_INITIATIVE),
            cmnd)]
    chunks = range(0, len(data), MAX_DATA)
    for i, offset in enumerate(chunks):
        last = i == len(chunks) - 1
        f_ctl = fc.FCtl.RELATIVE_OFFSET | (fc.FCtl.END_SEQUENCE | fc.FCtl.SEQUENCE_INITIATIVE
                                           if last else 0)
        out.append((dict(to_edge, r_ctl=fc.RCtl.FCP_DATA, f_ctl=f_ctl, seq_id=1, seq_cnt=i,
                         parameter=offset), data[offset:offset + MAX_DATA]))
    back = [(dict(to_array, r_ctl=fc.RCtl.FCP_RSP, seq_id=2), fcp.build_fcp_rsp())]
    return out, back


class TrafficWriter:
    """Writes Ethernet packets with TCP sequence numbers kept per direction."""

    def __init__(self, fileobj, pcapng: bool = False):
        self.writer = capture.CaptureWriter(fileobj, capture.LINKTYPE_ETHERNET, pcapng=pcapng)
        self.tcp_seq = {}
        self.ident = 0

    def tcp(self, src, dst, payload: bytes, time_ns: int) -> None:
        key = (src, dst)
        seq = self.tcp_seq.get(key, 1000)
        self.tcp_seq[key] = seq + len(payload)
        self.ident = (self.ident + 1) & 0xFFFF
        packet = gbe.build_tcp(src[0], dst[0], src[1], dst[1], seq, payload)
        self.writer.write(gbe.build_ethernet(packet), time_ns / 1e9)

    def udp(self, src, dst, payload: bytes, time_ns: int) -> None:
        self.ident = (self.ident + 1) & 0xFFFF
        self.writer.write(gbe.build_ethernet(gbe.build_udp(src[0], dst[0], src[1], dst[1], payload)),
                          time_ns / 1e9)

    def close(self) -> None:
        self.writer.close()


LINK_EPOCH = 3
GROUP_EPOCH = 9


def sample_keys(group: int = 7, seed: int = 1) -> KeyRing:
    """The keys of a sealed sample: the link EDGE_LOG - CORE_LOG (epoch ``LINK_EPOCH``) and
    ``group`` (epoch ``GROUP_EPOCH``), derived from ``seed`` (sample traffic only)."""
    rng = random.Random(f"rcn sample keys {seed}")
    ring = KeyRing()
    ring.add_link(Address(*EDGE_LOG), Address(*CORE_LOG), Key(LINK_EPOCH, rng.randbytes(32)))
    ring.add_group(group, Key(GROUP_EPOCH, rng.randbytes(32)))
    return ring


class _NoKey:
    """The drop counter of the sample's hop layers: a missing key is the caller's mistake."""

    def __init__(self):
        self.by_reason: dict[str, int] = {}

    def drop(self, reason: str, peer, detail: str = "") -> None:
        raise ValueError(f"sample traffic: {reason} for {peer}: {detail}")


class LogSender:
    """Log datagrams as they go on the wire: bare entries, or sealed with ``keys``."""

    def __init__(self, keys: KeyRing | None = None, counter: int = START_NS):
        self.keys = keys
        if keys is not None:
            self.groups = GroupSeal(keys)
            self.hops = {addr: HopSeal(Address(*addr), keys, _NoKey(), clock_ns=lambda: counter)
                         for addr in (EDGE_LOG, CORE_LOG)}

    def datagrams(self, src, dst, entry_type: int, body: bytes, max_body: int = 65000,
                  **fields) -> list[bytes]:
        if self.keys is None:
            return logentry.segment_entry(entry_type, body, max_body, **fields)
        return [self.hops[src].seal(d, Address(*dst))
                for d in self.groups.datagrams(entry_type, body, max_body, **fields)]


def generate(fileobj, writes: int = 10, group: int = 7, seed: int = 1, pcapng: bool = False,
             lag_ns: int = 400_000, packet_limit: int | None = None,
             keys: KeyRing | None = None) -> int:
    """Write the capture; return the number of packets written.

    ``packet_limit`` stops after the write exchange that reaches it. ``keys``: seal the
    log entries (``sample_keys``).
    """
    rng = random.Random(seed)
    out = TrafficWriter(fileobj, pcapng)
    log = LogSender(keys)
    packets, time = 0, START_NS
    for n in range(writes):
        if packet_limit is not None and packets >= packet_limit:
            break
        ox_id = n & 0xFFFF
        blocks = rng.choice((1, 4, 8))
        data = rng.randbytes(blocks * fcp.BLOCK_SIZE)
        lba = rng.randrange(0, 1 << 20)
        io_time = time
        to_edge, back = write_exchange(ox_id, 0, lba, data)
        units = []
        for header, payload in to_edge:
            out.tcp(ARRAY, EDGE, fcip.build_fcip_frame(header, payload), time)
            units.append(fc.build_sof_eof_unit(header, payload))
            packets += 1
            time += 10_000
        entry_fields = dict(group_id=group, sequence=n + 1, io_time_ns=io_time,
                            target_wwn=TARGET_WWN, source_wwn=SOURCE_WWN)
        time += lag_ns
        for datagram in log.datagrams(EDGE_LOG, CORE_LOG, logentry.EntryType.WR,
                                      logentry.build_rio_area(units), **entry_fields):
            out.udp(EDGE_LOG, CORE_LOG, datagram, time)
        time += 10_000
        for header, payload in back:
            out.tcp(EDGE, ARRAY, fcip.build_fcip_frame(header, payload), time)
            rsp_unit = fc.build_sof_eof_unit(header, payload)
        for datagram in log.datagrams(CORE_LOG, EDGE_LOG, logentry.EntryType.WROK,
                                      logentry.build_rio_area([rsp_unit]), **entry_fields):
            out.udp(CORE_LOG, EDGE_LOG, datagram, time)
        packets += len(back) + 2
        time += 100_000
    out.close()
    return packets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a deterministic capture of RCN write "
                                     "traffic (FCIP exchanges and log entries).")
    parser.add_argument("output", help="capture file to write")
    parser.add_argument("--writes", type=int, default=10, help="write exchanges (default 10)")
    parser.add_argument("--group", type=int, default=7, help="order guarantee group (default 7)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--pcapng", action="store_true", help="pcapng instead of pcap")
    parser.add_argument("--sealed", metavar="KEYFILE", help="seal the log entries (hop and "
                        "end to end) and write their keys to KEYFILE (0600)")
    args = parser.parse_args(argv)
    keys = None
    if args.sealed:
        keys = sample_keys(args.group, args.seed)
        keys.save(args.sealed)
    with open(args.output, "wb") as f:
        count = generate(f, args.writes, args.group, args.seed, args.pcapng, keys=keys)
    print(f"{args.output}: {count} packets, {args.writes} writes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
