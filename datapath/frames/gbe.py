"""GbE framing for captures: Ethernet II, IPv4, UDP and TCP.

Enough to write the packets our channels send (FCIP over TCP, log entries over
UDP) into Ethernet captures that tshark reads, and to read them back. Options
in IPv4 and TCP headers are skipped on parse and never built.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, raw, uint

ETHERTYPE_IPV4 = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17

ETHERNET = Layout("eth", [
    raw("dst", 6, "destination MAC"),
    raw("src", 6, "source MAC"),
    uint("ethertype", 2, "0x0800 IPv4"),
], doc="Ethernet II header")

IPV4 = Layout("ipv4", [
    uint("version_ihl", 1, "version (4) and header length in words",
         bits=(("version", 4), ("ihl", 4))),
    uint("tos", 1, "DSCP and ECN"),
    uint("total_length", 2, "header and payload bytes"),
    uint("ident", 2, "identification"),
    uint("flags_frag", 2, "flags (3 bits) and fragment offset (13 bits)",
         bits=(("ip_flags", 3), ("frag_offset", 13))),
    uint("ttl", 1, "time to live"),
    uint("proto", 1, "6 TCP, 17 UDP"),
    uint("checksum", 2, "header checksum"),
    uint("src", 4, "source address"),
    uint("dst", 4, "destination address"),
], doc="IPv4 header without options")

UDP = Layout("udp", [
    uint("sport", 2, "source port"),
    uint("dport", 2, "destination port"),
    uint("length", 2, "header and payload bytes"),
    uint("checksum", 2, "checksum over pseudo-header, header and payload"),
], doc="UDP header")

TCP = Layout("tcp", [
    uint("sport", 2, "source port"),
    uint("dport", 2, "destination port"),
    uint("seq", 4, "sequence number"),
    uint("ack", 4, "acknowledgement number"),
    uint("offset_flags", 2, "data offset in words (4 bits), reserved (3), flags (9)",
         bits=(("data_offset", 4), ("reserved", 3), ("flags", 9))),
    uint("window", 2, "receive window"),
    uint("checksum", 2, "checksum over pseudo-header, header and payload"),
    uint("urgent", 2, "urgent pointer"),
], doc="TCP header without options")

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(addr) -> int:
    return int(ipaddress.IPv4Address(addr))


def _transport_checksum(src: int, dst: int, proto: int, segment: bytes) -> int:
    pseudo = src.to_bytes(4, "big") + dst.to_bytes(4, "big") + bytes((0, proto)) + \
        len(segment).to_bytes(2, "big")
    return internet_checksum(pseudo + segment)


def build_ipv4(src, dst, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    src_i, dst_i = _ip(src), _ip(dst)
    fields = dict(version=4, ihl=5, total_length=IPV4.size + len(payload), ident=ident,
                  ip_flags=0b010, ttl=ttl, proto=proto, src=src_i, dst=dst_i)
    header = IPV4.build(fields)
    return IPV4.build(fields, checksum=internet_checksum(header)) + payload


def build_udp(src, dst, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 packet carrying one UDP datagram, checksums filled in."""
    length = UDP.size + len(payload)
    segment = UDP.build(sport=sport, dport=dport, length=length) + payload
    checksum = _transport_checksum(_ip(src), _ip(dst), IPPROTO_UDP, segment) or 0xFFFF
    return build_ipv4(src, dst, IPPROTO_UDP,
                      UDP.build(sport=sport, dport=dport, length=length, checksum=checksum) + payload)


def build_tcp(src, dst, sport: int, dport: int, seq: int, payload: bytes, ack: int = 0,
              flags: int = TCP_ACK | TCP_PSH, window: int = 65535) -> bytes:
    """An IPv4 packet carrying one TCP segment, checksums filled in."""
    fields = dict(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                  data_offset=5, flags=flags, window=window)
    checksum = _transport_checksum(_ip(src), _ip(dst), IPPROTO_TCP, TCP.build(fields) + payload)
    return build_ipv4(src, dst, IPPROTO_TCP, TCP.build(fields, checksum=checksum) + payload)


def build_ethernet(ip_packet: bytes, src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
                   dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02") -> bytes:
    return ETHERNET.build(dst=dst_mac, src=src_mac, ethertype=ETHERTYPE_IPV4) + ip_packet


@dataclass
class Packet:
    """An Ethernet frame decoded down to its transport payload."""
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    payload_offset: int        # of the payload in the Ethernet frame
    tcp_seq: int = 0
    tcp_flags: int = 0


def parse_ethernet(frame: bytes, fast: bool = False) -> Packet | None:
    """Decode Ethernet/IPv4/TCP|UDP; ``None`` for other traffic (ARP, IPv6, ICMP...)."""
    eth = ETHERNET.parse(frame, 0, 0, fast)
    if eth["ethertype"] != ETHERTYPE_IPV4:
        return None
    at = ETHERNET.size
    ip = IPV4.parse(frame, at, 0, fast)
    if ip["version"] != 4 or ip["ihl"] < 5:
        raise DecodeError("ipv4", "version_ihl", at, f"version {ip['version']} ihl {ip['ihl']}")
    if ip["frag_offset"] or ip["ip_flags"] & 0b001:
        raise DecodeError("ipv4", "flags_frag", at + 6, "fragmented packets are not reassembled")
    end = at + ip["total_length"]
    if ip["total_length"] < ip["ihl"] * 4 or end > len(frame):
        raise DecodeError("ipv4", "total_length", at + 2,
                          f"total length {ip['total_length']} does not fit {len(frame) - at} bytes")
    at += ip["ihl"] * 4
    src = str(ipaddress.IPv4Address(ip["src"]))
    dst = str(ipaddress.IPv4Address(ip["dst"]))
    if ip["proto"] == IPPROTO_UDP:
        udp = UDP.parse(frame[:end], at, 0, fast)
        if udp["length"] < UDP.size or at + udp["length"] > end:
            raise DecodeError("udp", "length", at + 4, f"length {udp['length']} does not fit")
        return Packet(src, dst, IPPROTO_UDP, udp["sport"], udp["dport"],
                      bytes(frame[at + UDP.size:at + udp["length"]]), at + UDP.size)
    if ip["proto"] == IPPROTO_TCP:
        tcp = TCP.parse(frame[:end], at, 0, fast)
        header_len = tcp["data_offset"] * 4
        if header_len < TCP.size or at + header_len > end:
            raise DecodeError("tcp", "offset_flags", at + 12, f"data offset {tcp['data_offset']}")
        return Packet(src, dst, IPPROTO_TCP, tcp["sport"], tcp["dport"],
                      bytes(frame[at + header_len:end]), at + header_len, tcp["seq"], tcp["flags"])
    return None
