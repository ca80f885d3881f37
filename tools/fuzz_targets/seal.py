"""Sealed log transfer targets (issue 17): the hop layer's open, the end-to-end open, the
key file parser, the hop state file parser.

* ``hop-open`` -- datagrams from a neighbour and from a stranger into one
  :class:`rcn.logxfer.seal.HopSeal` (its replay window carried from one datagram of the
  input to the next): it never raises, every refusal is exactly one counted drop, what
  opens is the datagram inside the envelope, nothing from a stranger opens, no counter
  opens twice, and each opened datagram, sent again, is ``replayed``.
* ``e2e-open`` -- log entries (segments joined as the edge joins them) into
  :meth:`rcn.logxfer.seal.GroupSeal.open`: only :class:`SealRefused` with an ``e2e_*``
  reason, and what opens was sealed under a held key with the header it carries.
* ``key-file`` -- :meth:`rcn.logxfer.keys.KeyRing.parse` on hostile text: only
  :class:`KeyFileError`; a ring that parses dumps and parses back to itself; and no key
  (64 hex digits of the input) appears in an error message.
* ``hop-state`` -- :func:`rcn.logxfer.hopstate.parse` on hostile text (a device's
  ``<keys>.hop``: counter reservation, replay high-water marks): only
  :class:`HopStateError`, naming the line and echoing no number of the input; what
  parses dumps and parses back to itself, within the file's bounds.

The keys are fixed (the fuzzer must replay an input exactly); the seeds are genuine
envelopes and entries sealed with them. The fixups re-seal some mutants, so that mutated
counters, epochs and header fields get past the tag to the checks behind it.
"""

from __future__ import annotations

import re

from datapath.frames import hop as hopframe
from datapath.frames import logentry
from datapath.frames.errors import DecodeError
from tools.fuzz_targets.frames import LOG_FIELDS, command_area, fix_log_crcs, response_area
from tools.fuzz_targets.kit import Finding, Target, register

_NEIGHBOUR, _ME, _STRANGER = ("10.0.0.1", 47001), ("10.0.0.2", 47001), ("10.0.9.9", 47001)
_LINK = bytes(range(32))
_LINK_NEXT = bytes(range(32, 64))
_GROUP = bytes(range(64, 96))
_GROUP_OLD = bytes(range(96, 128))
_ENTRY = dict(group_id=7, sequence=1, io_time_ns=1_700_000_000 * 10**9,
              target_wwn=0x500A098000000002, source_wwn=0x500A098000000001, target_lun=4)
_EPOCH_AT = hopframe.HOP_HEADER.offsets["key_epoch"]
_COUNTER_AT = hopframe.HOP_HEADER.offsets["counter"]
_HOP_FIELDS = ((hopframe.HOP_MAGIC_BYTES, 0, hopframe.HOP_HEADER),
               *((m, o + hopframe.HOP_HEADER_SIZE, layout) for m, o, layout in LOG_FIELDS[:1]))


def _address(pair):
    from rcn.logxfer.routes import Address
    return Address(*pair)


def _ring():
    """The fixed keys: the link to the neighbour (epoch 1 send, 2 accept-only), group 7
    (epoch 1 accept-only, 2 send)."""
    from rcn.logxfer.keys import Key, KeyRing
    ring = KeyRing()
    ring.add_link(_address(_NEIGHBOUR), _address(_ME), Key(1, _LINK, True))
    ring.add_link(_address(_NEIGHBOUR), _address(_ME), Key(2, _LINK_NEXT, False))
    ring.add_group(7, Key(1, _GROUP_OLD, False))
    ring.add_group(7, Key(2, _GROUP, True))
    return ring


_STATE: dict = {}


def _hops():
    """(receiver, neighbour's sender): built once; the receiver's window is reset per input."""
    if "hop" not in _STATE:
        from rcn.logxfer.protocol import Drops
        from rcn.logxfer.seal import HopSeal
        ring = _ring()
        _STATE["hop"] = (HopSeal(_address(_ME), ring, Drops(), clock_ns=lambda: 0),
                         HopSeal(_address(_NEIGHBOUR), ring, Drops(), clock_ns=lambda: 1000))
    return _STATE["hop"]


def _frames(data: bytes):
    """The input's datagrams: a flag byte (bit 0: from the stranger), a 2-byte length."""
    at = 0
    while at + 3 <= len(data):
        flags, n = data[at], int.from_bytes(data[at + 1:at + 3], "big")
        yield bool(flags & 1), data[at + 3:at + 3 + n]
        at += 3 + n


def _pack(frames) -> bytes:
    return b"".join(bytes([stranger]) + len(d).to_bytes(2, "big") + d for stranger, d in frames)


def run_hop_open(data: bytes):
    receiver, _ = _hops()
    receiver.windows.clear()
    drops = receiver.drops.by_reason
    features, opened = [], set()
    for stranger, datagram in _frames(data):
        sender = _address(_STRANGER if stranger else _NEIGHBOUR)
        before = dict(drops)
        inner = receiver.open(datagram, sender)
        moved = {k: v - before.get(k, 0) for k, v in drops.items() if v != before.get(k, 0)}
        if inner is None:
            if list(moved.values()) != [1]:
                raise Finding(f"hop refusal not counted once: {moved}")
            features.append((stranger, next(iter(moved))))
            continue
        counter = int.from_bytes(datagram[_COUNTER_AT:_COUNTER_AT + 8], "big")
        if moved or stranger:
            raise Finding(f"hop opened a datagram {'from a stranger' if stranger else ''} "
                          f"with drops {moved}")
        if inner != datagram[hopframe.HOP_HEADER_SIZE:-hopframe.HOP_TAG_SIZE]:
            raise Finding("hop opened to something other than the envelope's inside")
        if counter in opened:
            raise Finding(f"hop counter {counter} opened twice")
        opened.add(counter)
        if receiver.open(datagram, sender) is not None or drops["replayed"] != \
                before.get("replayed", 0) + 1:
            raise Finding("hop: an opened datagram, sent again, was not 'replayed'")
        features.append((stranger, "opened"))
    return tuple(sorted(set(features)))


def hop_seeds() -> list[bytes]:
    _, sender = _hops()
    me = _address(_ME)
    sender.counter = 1000
    wr = logentry.build_entry(logentry.EntryType.WR, command_area(), **_ENTRY)
    keepalive = logentry.build_keepalive(5, 123)
    sealed = [sender.seal(d, me) for d in (wr, keepalive, wr, b"", wr)]
    late = sealed[0]                                        # reordered after later ones
    return [_pack([(0, sealed[0])]), _pack([(0, s) for s in sealed[1:]] + [(0, late)]),
            _pack([(1, sealed[2]), (0, sealed[2]), (0, sealed[2])]),
            _pack([(0, wr), (0, sealed[3][:30]), (0, sealed[4][:-1] + b"\x00")])]


def fix_hop_tags(data: bytes, rng) -> bytes:
    """Often: each envelope's tag made right for its (maybe mutated) header and inside,
    under the neighbour's key of the epoch it names (when held)."""
    if rng.random() < 0.4:
        return data
    from rcn.logxfer.seal import direction_key
    from rcn.logxfer.keys import Key
    frames = []
    for stranger, datagram in _frames(data):
        if (datagram[:4] == hopframe.HOP_MAGIC_BYTES
                and len(datagram) >= hopframe.HOP_OVERHEAD and rng.random() < 0.8):
            epoch = int.from_bytes(datagram[_EPOCH_AT:_EPOCH_AT + 4], "big")
            key = {1: _LINK, 2: _LINK_NEXT}.get(epoch)
            if key is not None:
                end = len(datagram) - hopframe.HOP_TAG_SIZE
                # the neighbour is the link's end 0 (written first in the ring), and sends
                aead = direction_key(Key(epoch, key), 0)
                counter = int.from_bytes(datagram[_COUNTER_AT:_COUNTER_AT + 8], "big")
                datagram = datagram[:end] + aead.encrypt(
                    hopframe.hop_nonce(counter), b"",
                    hopframe.hop_covered(datagram[hopframe.HOP_HEADER_SIZE:end]))
        frames.append((stranger, datagram))
    return _pack(frames)


register(Target(
    "hop-open", "hostile datagrams from a neighbour and a stranger into the hop layer "
    "(rcn.logxfer.seal.HopSeal.open, its replay window kept across the input's datagrams): "
    "never raises, every refusal one counted drop, nothing a stranger sends opens, no counter "
    "twice, an opened datagram sent again is 'replayed'",
    run_hop_open, hop_seeds, fields=_HOP_FIELDS, fixup=fix_hop_tags, test_runs=300))


# -- the end-to-end seal -------------------------------------------------------------------------

def _group_seal():
    if "e2e" not in _STATE:
        from rcn.logxfer.seal import GroupSeal
        _STATE["e2e"] = GroupSeal(_ring())
    return _STATE["e2e"]


def _entries(data: bytes):
    at = 0
    while at + 2 <= len(data):
        n = int.from_bytes(data[at:at + 2], "big")
        yield data[at + 2:at + 2 + n]
        at += 2 + n


def run_e2e_open(data: bytes):
    from rcn.logxfer.reassembly import SegmentAssembler
    from rcn.logxfer.seal import E2E_DROP_REASONS, SealRefused
    seal = _group_seal()
    assembler = SegmentAssembler(max_entries=16, max_bytes=1 << 20)
    features = []
    for datagram in _entries(data):
        try:
            entry = logentry.parse_datagram(datagram, fast=True)
            header, body = entry.header, entry.payload
            if header.segment_count > 1:
                body = assembler.add(header, body)
                if body is None:
                    continue
        except DecodeError as exc:
            features.append(("decode", exc.field))
            continue
        opened = seal.counts["opened"]
        try:
            clear = seal.open(header, body)
        except SealRefused as exc:
            if exc.reason not in E2E_DROP_REASONS:
                raise Finding(f"e2e refusal with an unknown reason {exc.reason!r}") from None
            features.append((header.entry_type, exc.reason))
            continue
        if header.seal != logentry.Seal.AES_256_GCM or header.key_epoch not in (1, 2) \
                or header.group_id != 7:
            raise Finding(f"e2e opened seal {header.seal} group {header.group_id} epoch "
                          f"{header.key_epoch}")
        if len(clear) != len(body) - logentry.SEALED_OVERHEAD or \
                seal.counts["opened"] != opened + 1:
            raise Finding("e2e opened to the wrong length or uncounted")
        features.append((header.entry_type, "opened"))
    return tuple(sorted(set(features), key=repr))


def _pack_entries(datagrams) -> bytes:
    return b"".join(len(d).to_bytes(2, "big") + d for d in datagrams)


def e2e_seeds() -> list[bytes]:
    seal, E = _group_seal(), logentry.EntryType
    wr = seal.datagrams(E.WR, command_area(), 8000, **_ENTRY)
    segments = seal.datagrams(E.WR, command_area(4), 700, **dict(_ENTRY, sequence=2))
    wrok = seal.datagrams(E.WROK, response_area(), 8000, flags=logentry.EntryFlag.CUMULATIVE,
                          **_ENTRY)
    nak = seal.datagrams(E.NAK, logentry.nak_body([(1, 3)]), 8000, **_ENTRY)
    clear = logentry.build_entry(E.WR, command_area(), **_ENTRY)
    return [_pack_entries(wr), _pack_entries(list(reversed(segments))),
            _pack_entries(wrok + nak + [clear]), _pack_entries(segments[:2] + wr)]


def fix_e2e_seals(data: bytes, rng) -> bytes:
    """Sometimes: each whole sealed entry re-sealed for its (maybe mutated) header, so
    mutated header fields get past the tag; then the CRCs made right."""
    from rcn.logxfer.seal import SealRefused
    if rng.random() < 0.3:
        out = []
        seal = _group_seal()
        for datagram in _entries(data):
            try:
                header = logentry.LogHeader.parse(datagram, fast=True)
            except DecodeError:
                out.append(datagram)
                continue
            if header.segment_count == 1 and header.entry_type in logentry.SEALABLE_TYPES \
                    and header.seal == 1 and header.key_epoch in (1, 2) \
                    and len(datagram) >= logentry.HEADER_SIZE + logentry.SEALED_OVERHEAD:
                fields = {k: v for k, v in header._asdict().items()
                          if k not in ("magic", "entry_type", "rio_length", "crc32c", "seal",
                                       "key_epoch", "total_length", "segment_index",
                                       "segment_count", "segment_offset")}
                inside = datagram[logentry.HEADER_SIZE + logentry.SEAL_NONCE_SIZE:
                                  -logentry.SEAL_TAG_SIZE]
                try:
                    out += seal.datagrams(header.entry_type, inside, 1 << 16, **fields)
                    continue
                except (ValueError, KeyError, SealRefused):
                    pass
            out.append(datagram)
        data = _pack_entries(out)
    return fix_log_crcs(data, rng)


register(Target(
    "e2e-open", "hostile log entries (segments joined as the edge joins them) into the "
    "end-to-end open (rcn.logxfer.seal.GroupSeal.open): only SealRefused with an e2e_* "
    "reason; what opens was sealed under a held group key",
    run_e2e_open, e2e_seeds, clean=(), fields=LOG_FIELDS, fixup=fix_e2e_seals, test_runs=300))


# -- the key file ------------------------------------------------------------------------------

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def run_key_file(data: bytes):
    from rcn.logxfer.keys import KeyFileError, KeyRing
    text = data.decode("utf-8", "replace")
    try:
        ring = KeyRing.parse(text, "fuzz.keys")
    except KeyFileError as exc:
        message = str(exc)
        for key in _HEX_KEY.findall(text):
            if key in message:
                raise Finding(f"key material in a KeyFileError message: {message[:200]}")
        return ("error", message.split(":", 2)[1].strip()[:12] if ":" in message else "")
    try:
        again = KeyRing.parse(ring.dump(), "dump")
    except KeyFileError as exc:
        raise Finding(f"a parsed key ring does not dump and parse back: {exc}") from None
    if again != ring:
        raise Finding("a parsed key ring does not dump and parse back to itself")
    return ("ring", min(len(ring.links), 3), min(len(ring.groups), 3))


def key_file_seeds() -> list[bytes]:
    ring = _ring()
    text = ring.dump()
    return [text.encode(), b"# nothing\n\n", text.replace("send", "accept").encode(),
            (text + "link 1 " + "ab" * 32 + " [::1]:47001 [::2]:47001 send # v6\n").encode(),
            b"group 7 1 " + b"00" * 32 + b" send\ngroup 7 1 " + b"11" * 32 + b" accept\n"]


_KEY_TOKENS = (b"link", b"group", b"send", b"accept", b"#", b"\n", b" ", b"127.0.0.1:47001",
               b"[::1]:1", b"4294967295", b"4294967296", b"0", b"-1", b"ab" * 32, b"\t",
               b"\r\n", b"\x00", b"\xff")

register(Target(
    "key-file", "hostile text into the key file parser (rcn.logxfer.keys.KeyRing.parse): "
    "only KeyFileError, naming the line; a ring that parses round-trips through dump; no "
    "key of the input in an error message",
    run_key_file, key_file_seeds, clean=(), tokens=_KEY_TOKENS, max_len=1 << 13,
    test_runs=300, parser=True))


# -- the hop state file --------------------------------------------------------------------------

_LONG_NUMBER = re.compile(r"[0-9]{5,}")


def run_hop_state(data: bytes):
    from rcn.logxfer.hopstate import MAX_RESERVED, MAX_WINDOWS, HopStateError, dump, parse
    text = data.decode("ascii", "replace")
    try:
        reserved, marks = parse(text, "fuzz.hop")
    except HopStateError as exc:
        message = str(exc)
        if not message.startswith("fuzz.hop line "):
            raise Finding(f"a hop state error that names no line: {message[:200]}") from None
        own = re.sub(r"[0-9]+\.\.[0-9]+|than [0-9]+", "", message)    # the bounds it quotes
        for number in _LONG_NUMBER.findall(text):
            if number in own:
                raise Finding(f"a number of the input in a HopStateError: {message[:200]}")
        return ("error", message.split(":", 1)[1].split(";")[0].strip()[:24])
    if not 0 <= reserved <= MAX_RESERVED or len(marks) > MAX_WINDOWS or any(
            not 0 <= top < 1 << 64 or not 0 < epoch < 1 << 32 for (_, epoch), top in marks.items()):
        raise Finding("a hop state file parsed to values outside its bounds")
    try:
        again = parse(dump(reserved, marks), "dump")
    except HopStateError as exc:
        raise Finding(f"a parsed hop state does not dump and parse back: {exc}") from None
    if again != (reserved, marks):
        raise Finding("a parsed hop state does not dump and parse back to itself")
    return ("state", reserved > 0, min(len(marks), 3))


def hop_state_seeds() -> list[bytes]:
    from rcn.logxfer.hopstate import dump
    me, neighbour = _address(_ME), _address(_NEIGHBOUR)
    return [dump(1_700_000_000_000_000_000, {(neighbour, 1): 1_700_000_000_000_000_005,
                                             (neighbour, 2): 1_700_000_000_016_777_216,
                                             (me, 3): 0}).encode(),
            dump(0, {}).encode(), b"reserved 5\nseen [::1]:47001 4294967295 18446744073709551615\n",
            b"# only a comment\n\n", b"reserved 5\nreserved 6\n"]


_STATE_TOKENS = (b"reserved", b"seen", b"#", b"\n", b" ", b"\t", b"10.0.0.1:47001",
                 b"[::1]:1", b"0", b"4294967295", b"4294967296", b"9223372036854775808",
                 b"18446744073709551615", b"18446744073709551616", b"-1", b"\r\n", b"\x00",
                 b"\xff")

register(Target(
    "hop-state", "hostile text into the hop state file parser (rcn.logxfer.hopstate.parse: "
    "a device's counter reservation and replay high-water marks): only HopStateError, "
    "naming the line, no number of the input echoed; what parses is within bounds and "
    "round-trips through dump",
    run_hop_state, hop_state_seeds, clean=(), tokens=_STATE_TOKENS, max_len=1 << 13,
    test_runs=300, parser=True))
