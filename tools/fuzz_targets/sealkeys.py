"""Sealed log transfer targets (issue 17), the keys' side: a management snapshot's keys,
and ``rcn-decode`` with a key file. (The hop layer, the end-to-end open and the key file
parser are :mod:`tools.fuzz_targets.seal`'s, whose fixed keys and builders these use.)

* ``key-snapshot`` -- a management snapshot's ``keys`` (JSON, decoded as the management
  link decodes it) into :meth:`rcn.logxfer.keys.KeyRing.from_snapshot`: only
  :class:`KeyFileError`, no key of the input in its message; a ring that reads goes to a
  snapshot and back to itself, and saved as the key file (what a device does with it) loads
  back to itself.
* ``decode-keys`` -- ``rcn-decode --keys`` (:mod:`rcn.decode.sealed`) on hostile captures
  of hop envelopes and sealed entries: only records, never an exception; no key material
  in the JSON or tree output.
"""

from __future__ import annotations

from datapath.frames import capture, gbe, logentry
from datapath.frames import hop as hopframe
from tools.fuzz_targets.frames import LOG_FIELDS, command_area, fix_log_crcs, response_area
from tools.fuzz_targets.kit import Finding, Target, register
from tools.fuzz_targets.seal import (_COUNTER_AT, _ENTRY, _EPOCH_AT, _GROUP, _GROUP_OLD,
                                     _HEX_KEY, _LINK, _LINK_NEXT, _ME, _NEIGHBOUR, _address,
                                     _group_seal, _ring)


# -- the keys of a management snapshot ---------------------------------------------------------

def run_key_snapshot(data: bytes):
    """What a device does with a snapshot's ``keys``: decoded as the management link decodes
    it, read by ``KeyRing.from_snapshot``, then kept in the key file (``KeyRing.save``) that
    the device loads at its next start."""
    from rcn.logxfer.keys import KeyFileError, KeyRing
    from rcn.mgmtlink.commands import BadJSON, decode_json
    try:
        doc = decode_json(data, "fuzz snapshot")
    except BadJSON:
        return ("json",)
    keys = doc.get("keys", doc)
    try:
        ring = KeyRing.from_snapshot(keys)
    except KeyFileError as exc:
        message = str(exc)
        for key in _HEX_KEY.findall(data.decode("utf-8", "replace")):
            if key in message:
                raise Finding(f"key material in a KeyFileError message: {message[:200]}")
        return ("error", message.split(":", 1)[-1].strip()[:16])
    if KeyRing.from_snapshot(ring.to_snapshot()) != ring:
        raise Finding("a snapshot's ring does not go to a snapshot and back to itself")
    try:
        again = KeyRing.parse(ring.dump(), "dump")
    except KeyFileError as exc:
        raise Finding(f"a snapshot's ring, saved as the key file, does not load: {exc}") \
            from None
    if again != ring:
        raise Finding("a snapshot's ring, saved as the key file, loads as another ring")
    return ("ring", min(len(ring.links), 3), min(len(ring.groups), 3))


def key_snapshot_seeds() -> list[bytes]:
    import json
    snapshot = _ring().to_snapshot()
    return [json.dumps({"keys": snapshot}).encode(), json.dumps(snapshot).encode(),
            json.dumps({"link": snapshot["link"][:1], "group": []}).encode(),
            json.dumps({"group": [dict(snapshot["group"][0], group="7", epoch=1.0,
                                       send="yes")]}).encode(),
            json.dumps({"group": [dict(snapshot["group"][0], key="ab" * 31)]}).encode(),
            b'{"keys": {"link": [{"a": "[::1]:47001", "b": "10.0.0.2:1", "epoch": 4294967295, '
            b'"key": "' + b"ab" * 32 + b'", "send": true}]}}']


_SNAPSHOT_TOKENS = (b'"link"', b'"group"', b'"a"', b'"b"', b'"epoch"', b'"key"', b'"send"',
                    b"true", b"false", b"null", b"[]", b"{}", b"1e309", b"-1", b"4294967296",
                    b'"ab"', b'"' + b"ab" * 32 + b'"', b'"10.0.0.1:47001"', b'"[::1]:1"',
                    b"\\u0000", b"\\n", b" ", b",", b":", b"1.5")

register(Target(
    "key-snapshot", "hostile JSON into what a device does with a management snapshot's keys "
    "(rcn.mgmtlink decode_json, rcn.logxfer.keys.KeyRing.from_snapshot): only KeyFileError, "
    "no key of the input in its message; a ring that reads goes to a snapshot and back, and "
    "saved as the key file loads back to itself",
    run_key_snapshot, key_snapshot_seeds, clean=(), tokens=_SNAPSHOT_TOKENS, max_len=1 << 14,
    test_runs=300, parser=True))


# -- rcn-decode with keys ---------------------------------------------------------------------

_KEY_HEXES = tuple(k.hex() for k in (_LINK, _LINK_NEXT, _GROUP, _GROUP_OLD))


def _keys():
    from rcn.decode.sealed import Keys
    return Keys(_ring())


def run_decode_keys(data: bytes):
    """rcn-decode --keys on a capture: records only (tags checked, bodies opened), never an
    exception; no key material anywhere in what it shows."""
    from tools.fuzz_targets.frames import _decode
    features, shown = _decode(data, "file", keys=_keys(), shown=True)
    for text in shown:
        for key in _KEY_HEXES:
            if key in text:
                raise Finding("key material in rcn-decode's output")
    return features


def _udp(payload: bytes, reverse: bool = False) -> bytes:
    src, dst = (_ME, _NEIGHBOUR) if reverse else (_NEIGHBOUR, _ME)
    return gbe.build_ethernet(gbe.build_udp(src[0], dst[0], src[1], dst[1], payload))


def decode_keys_seeds() -> list[bytes]:
    from tools.fuzz_targets.frames import capture_bytes
    from rcn.logxfer.seal import HopSeal
    from rcn.logxfer.protocol import Drops
    seal, E = _group_seal(), logentry.EntryType
    sender = HopSeal(_address(_NEIGHBOUR), _ring(), Drops(), clock_ns=lambda: 5000)
    me = _address(_ME)
    wr = seal.datagrams(E.WR, command_area(), 8000, **_ENTRY)
    segments = seal.datagrams(E.WR, command_area(4), 700, **dict(_ENTRY, sequence=2))
    nak = seal.datagrams(E.NAK, logentry.nak_body([(1, 3), (5, 5)]), 8000, **_ENTRY)
    wrok = seal.datagrams(E.WROK, response_area(), 8000, flags=logentry.EntryFlag.CUMULATIVE,
                          **_ENTRY)
    hop = [_udp(sender.seal(d, me)) for d in wr + segments + nak]
    bare = [_udp(d) for d in wrok]
    forged = bytearray(sender.seal(wr[0], me))
    forged[-1] ^= 1                                              # a bad hop tag
    late = _udp(sender.seal(wrok[0], me), reverse=True)          # the other direction
    return [capture_bytes(capture.LINKTYPE_ETHERNET, hop[:1] + bare),
            capture_bytes(capture.LINKTYPE_ETHERNET, hop[1:] + [late], pcapng=True),
            capture_bytes(capture.LINKTYPE_ETHERNET, [_udp(bytes(forged)), hop[0], hop[0]]),
            sender.seal(segments[0], me)]


def fix_decode_keys(data: bytes, rng) -> bytes:
    """Mostly: each hop envelope in a UDP datagram (its length from the UDP header before
    it) with its inner entry's CRC32C, and often its hop tag, made right again."""
    if rng.random() < 0.25:
        return data
    from rcn.logxfer.keys import Key
    from rcn.logxfer.seal import direction_key
    out = bytearray(fix_log_crcs(data, rng))
    at = out.find(hopframe.HOP_MAGIC_BYTES, 8)
    while at >= 0:
        length = int.from_bytes(out[at - 4:at - 2], "big") - gbe.UDP.size
        end = at + length - hopframe.HOP_TAG_SIZE
        if length >= hopframe.HOP_OVERHEAD and at + length <= len(out) and rng.random() < 0.8:
            epoch = int.from_bytes(out[at + _EPOCH_AT:at + _EPOCH_AT + 4], "big")
            key = {1: _LINK, 2: _LINK_NEXT}.get(epoch)
            if key is not None:
                counter = int.from_bytes(out[at + _COUNTER_AT:at + _COUNTER_AT + 8], "big")
                inner = bytes(out[at + hopframe.HOP_HEADER_SIZE:end])
                out[end:end + hopframe.HOP_TAG_SIZE] = direction_key(Key(epoch, key), 0).encrypt(
                    hopframe.hop_nonce(counter), b"", hopframe.hop_covered(inner))
        at = out.find(hopframe.HOP_MAGIC_BYTES, at + 4)
    return bytes(out)


register(Target(
    "decode-keys", "rcn-decode --keys (rcn.decode.sealed: hop tags checked with the link keys, "
    "sealed bodies opened with the group keys, segments joined) on hostile pcap/pcapng and "
    "bare envelopes: only ever records, every record rendered and summarised, no key "
    "material in the output",
    run_decode_keys, decode_keys_seeds,
    fields=((hopframe.HOP_MAGIC_BYTES, 0, hopframe.HOP_HEADER),
            *((m, o + hopframe.HOP_HEADER_SIZE, layout) for m, o, layout in LOG_FIELDS[:3]),
            (b"\xd4\xc3\xb2\xa1", 0, gbe.UDP)) + LOG_FIELDS[:2],
    fixup=fix_decode_keys, max_len=1 << 17, test_runs=150, parser=True))
