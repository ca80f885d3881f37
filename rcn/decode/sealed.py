"""Sealed log transfer in ``rcn-decode``: the hop envelope and end-to-end seals (DESIGN.md 9).

A log-transfer datagram that starts with "RCNH" is a hop envelope
(``datapath/frames/hop.py``): its record gets a ``hop`` part (the envelope's header, the tag,
and ``check``: what became of the tag) and then the inner entry's parts as for a bare entry.
A body sealed end to end (``log.seal`` 1) gets a ``seal`` line instead of its FC units.

Without keys nothing is verified: ``check`` is "sealed (hop tag not checked)" and a sealed
body shows as "sealed end to end: N bytes, group key epoch E". With ``--keys FILE`` (the
device key file, ``rcn.logxfer.keys``; loaded by ``KeyRing.load``, so it must be 0600) the
hop tag is checked with the link key of the UDP source and destination addresses, exactly as
the receiving device checks it (``rcn.logxfer.seal.HopSeal``, so a counter seen twice in one
capture shows as replayed), and sealed bodies are opened with the group keys
(``GroupSeal.open_stored``: the file's ``held`` group epochs too -- those a source edge
keeps for its own log after a rotation retired them) and decoded as clear ones; their
units' offsets then count from the start of the opened body, as for a reassembled entry. A
tag that does not verify is a decode error (``hop.tag`` / ``seal.tag``); a key the file
does not hold is a note, not an error. No key material is ever part of the output.
"""

from __future__ import annotations

from datapath.frames.errors import DecodeError
from datapath.frames.hop import (HOP_HEADER, HOP_HEADER_SIZE, HOP_OVERHEAD, HOP_TAG_SIZE,
                                 HOP_VERSION, SUITE_AES_256_GCM)
from datapath.frames.logentry import HEADER_SIZE, SEAL_TAG_SIZE, LogHeader
from rcn.logxfer.keys import KeyRing, canonical_address
from rcn.logxfer.routes import Address, RouteError
from rcn.logxfer.seal import GroupSeal, HopSeal, SealRefused

HOP_NOT_CHECKED = "sealed (hop tag not checked)"
HOP_NO_ADDRESSES = "sealed (hop tag not checked: no UDP addresses)"
HOP_GOOD = "hop tag good"


def sealed_note(header: LogHeader) -> str:
    return (f"sealed end to end: {header.total_length} bytes, group key epoch "
            f"{header.key_epoch}")


class _LastDrop:
    """What ``HopSeal.open`` reports through its drop counter: the last reason.
    (``by_reason``: what a device's ``Drops`` has, for a hop layer that fills it in.)"""

    def __init__(self):
        self.reason = self.detail = None
        self.by_reason: dict[str, int] = {}

    def drop(self, reason: str, peer, detail: str = "") -> None:
        self.reason, self.detail = reason, detail


class Keys:
    """The keys of ``--keys``: one hop layer per receiving address (its replay windows are
    that receiver's), and the group seal."""

    def __init__(self, ring: KeyRing):
        self.ring = ring
        self.groups = GroupSeal(ring, sealed=True)
        self._hops: dict[Address, tuple[HopSeal, _LastDrop]] = {}
        # only the ring's addresses get a hop layer (and replay windows): a capture with
        # many other addresses costs nothing
        self._addresses = {address for pair in ring.links for address in pair}

    def check_hop(self, data: bytes, src: Address, dst: Address) -> tuple[str, bool]:
        """What the receiver ``dst`` makes of the envelope from ``src``: the ``check`` text,
        and whether it is an error (a tag that does not verify, a replay) rather than a key
        the file does not hold."""
        if dst not in self._addresses or src not in self._addresses:
            return f"hop tag not checked: no link key for {src} and {dst}", False
        if dst not in self._hops:
            last = _LastDrop()
            self._hops[dst] = (HopSeal(dst, self.ring, last, clock_ns=lambda: 0), last)
        hop, last = self._hops[dst]
        last.reason = None
        if hop.open(data, src) is not None:
            return HOP_GOOD, False
        if last.reason == "not_neighbour":
            return f"hop tag not checked: no link key for {src} and {dst}", False
        if last.reason == "unknown_key":
            return f"hop tag not checked: no key for link epoch {_epoch(data)}", False
        if last.reason == "bad_tag":
            return f"hop: bad tag (link key epoch {_epoch(data)})", True
        return f"hop: {last.reason}: {last.detail}", True

    def open_body(self, header: LogHeader, body: bytes, out: dict, tag_at: int) -> bytes | None:
        """The clear body, or None; sets ``out["seal"]`` and adds a bad tag to its errors."""
        where = f"group {header.group_id} epoch {header.key_epoch}"
        try:
            clear = self.groups.open_stored(header, body)
        except SealRefused as exc:
            if exc.reason == "e2e_unknown_key":
                out["seal"] = f"{sealed_note(header)}; no key for {where}"
            else:
                out["seal"] = f"seal: bad tag ({where})"
                out["errors"].append({"layer": "seal", "field": "tag", "offset": tag_at,
                                      "reason": f"bad tag: the body does not open with the "
                                                f"key of {where}"})
            return None
        held = self.ring.group_key(header.group_id, header.key_epoch) is None
        out["seal"] = (f"opened: {where}{' (held)' if held else ''}, {len(clear)} bytes "
                       f"clear")
        return clear


def _epoch(data: bytes) -> int:
    at = HOP_HEADER.offsets["key_epoch"]
    return int.from_bytes(data[at:at + 4], "big")


def _address(text: str | None) -> Address | None:
    try:
        # the key file's form: an address as a capture writes it finds its link key
        return canonical_address(Address.parse(text)) if text else None
    except RouteError:
        return None


def hop_layers(data: bytes, base: int, context: dict, keys: Keys | None, inner_layers) -> dict:
    """The parts of a record for a hop envelope at ``data`` (``base``: its offset in the
    packet); ``inner_layers(inner, inner_base)`` decodes the entry inside it."""
    out: dict = {"errors": []}
    try:
        header = HOP_HEADER.parse(data, 0, base, fast=True)
        if header["version"] != HOP_VERSION:
            raise DecodeError("hop", "version", base + HOP_HEADER.offsets["version"],
                              f"unknown hop envelope version {header['version']}")
        if header["suite"] != SUITE_AES_256_GCM:
            raise DecodeError("hop", "suite", base + HOP_HEADER.offsets["suite"],
                              f"unknown suite {header['suite']}")
        if len(data) < HOP_OVERHEAD:
            raise DecodeError("hop", "tag", base + len(data),
                              f"truncated: need {HOP_OVERHEAD} bytes, have {len(data)}")
    except DecodeError as exc:
        out["kind"] = "error"
        out["errors"].append(exc.as_dict())
        return out
    end = len(data) - HOP_TAG_SIZE
    hop = {k: v for k, v in header.items() if not k.startswith("reserved")}
    hop["suite_name"] = HOP_HEADER.by_name["suite"].values.get(header["suite"], "")
    hop["tag"] = data[end:].hex()
    src, dst = _address(context.get("src")), _address(context.get("dst"))
    if keys is None:
        hop["check"] = HOP_NOT_CHECKED
    elif src is None or dst is None:
        hop["check"] = HOP_NO_ADDRESSES
    else:
        hop["check"], bad = keys.check_hop(data, src, dst)
        if bad:
            out["errors"].append({"layer": "hop", "field": "tag", "offset": base + end,
                                  "reason": hop["check"]})
    out["hop"] = hop
    inner = inner_layers(data[HOP_HEADER_SIZE:end], base + HOP_HEADER_SIZE)
    out["errors"].extend(inner.pop("errors"))
    out.update(inner)
    return out


def tag_offset(base: int, body: bytes, segmented: bool) -> int:
    """Where a sealed body's tag is: in the datagram, or in the joined area (from 0)."""
    start = 0 if segmented else base + HEADER_SIZE
    return start + max(len(body) - SEAL_TAG_SIZE, 0)
