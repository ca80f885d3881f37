"""Sealing log transfer: the hop layer and the end-to-end seal (DESIGN.md 9, invariant 7).

:class:`HopSeal` is one device's hop layer. Every datagram it sends to a neighbour gets
the hop envelope (``datapath/frames/hop.py``): the newest ``send`` epoch of the link's
key, this device's next counter, and an AES-256-GCM tag over the datagram -- over only the
header of an entry whose body is sealed end to end (``datapath/frames/hop.py``
``hop_covered``; the hop header's bytes bound through the key, the nonce and fixed values).
Every datagram it receives is checked in this order, each failure a counted drop with
its reason, before anything in it is parsed:

1. ``not_neighbour`` -- the sender's address shares no link key with this device;
2. ``unsealed`` / ``malformed`` -- not a hop envelope, or one too short to hold a tag;
3. ``unknown_key`` -- no key of the envelope's epoch for this link (never held, or
   retired after a rotation's overlap);
4. ``bad_tag`` -- the tag does not verify (forged, altered, or another link's key);
5. ``replayed`` -- the counter was seen already or is older than the replay window (a
   window moves only for a datagram whose tag verified).

The key of each direction of a link is derived from the link key (HKDF-SHA256, info
``rcn hop v1 end S > end R`` with the sender's and receiver's end numbers, 0 or 1, from the
key file's order: ``KeyRing.link_end``), so the two ends' counters never share a nonce --
also when a WAN emulator relays the link and each end sees the other at another address.

Counters and windows across restarts (``rcn.logxfer.hopstate``: a daemon's state file,
an edge's in its data directory, a core's beside its key file). A device's counter is one
64-bit number for all its links and epochs and never repeats: it starts at the higher of
the wall clock's nanoseconds and the reservation in the state file, and a block of
:data:`COUNTER_BLOCK` counters is reserved (the state file written and fsync'ed) before
the first counter beyond the last reservation is used -- so a clock that stepped back
cannot make a restarted device reuse a GCM nonce under a key (which would give away the
tag's hash key), nor have its neighbours refuse it as ``replayed``. Without a state file
(tools, tests) the counter starts at the clock and nothing is reserved.
The receiver keeps one :class:`ReplayWindow` per sender address and link key epoch (each
epoch's direction key has its own nonce space); the windows' highest counters are saved
when they moved, at most every ``save_interval`` seconds of the injected clock and at a
clean stop, and each loaded one is its window's floor: counters up to it are ``replayed``.
Windows of epochs no longer held are dropped (at start and with new keys). What is left:
datagrams that opened in the last save interval before a crash (or a ``kill -9``) can pass
the hop layer once more after the restart; the end-to-end layer's sequence numbers and
apply counter refuse them as the duplicates they are. :meth:`HopSeal.open` and
:meth:`HopSeal.seal_parts` do no file I/O but once per counter block.

:class:`GroupSeal` is an edge's end-to-end seal of entry bodies under the group keys
(``logentry`` "End-to-end seal"): :meth:`GroupSeal.datagrams` seals and segments what
an edge sends, :meth:`GroupSeal.open` checks and opens what ends here
(``e2e_unsealed``, ``e2e_unknown_key``, ``e2e_retired_key``, ``e2e_bad_tag``);
:meth:`GroupSeal.open_stored` and :meth:`GroupSeal.reseal` open the edge's own log, also
under an epoch it holds only for that (retired while entries under it were retained). A
core holds no group key.

``mode = "none"`` (an explicit, logged opt-out for debugging): no envelope on sending,
and only bare datagrams accepted -- a sealed network refuses such a device's datagrams.
"""

from __future__ import annotations

import copy
import os
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from datapath.frames.hop import (HOP_HEADER, HOP_HEADER_SIZE, HOP_MAGIC_BYTES, HOP_OVERHEAD,
                                 HOP_TAG_SIZE, HOP_VERSION, SUITE_AES_256_GCM, build_hop_header,
                                 hop_covered)
from datapath.frames.logentry import (HEADER_SIZE, LOG_HEADER, SEAL_NONCE_SIZE,
                                      SEALABLE_TYPES, SEALED_OVERHEAD, LogHeader, Seal,
                                      e2e_aad, segment_entry)
from rcn.logxfer.hopstate import MAX_WINDOWS, HopStateFile, Marks
from rcn.logxfer.keys import Key, KeyRing, ring_at_start
from rcn.logxfer.routes import Address

_log = Logger()
_AES_256_GCM = int(Seal.AES_256_GCM)
_NONCES_PER_READ = 256
REPLAY_WINDOW = 4096
#: hop counters reserved in the state file at a time (a write and two fsyncs per block)
COUNTER_BLOCK = 1 << 24
#: how often (seconds) moved replay windows are saved, at most
SAVE_INTERVAL = 1.0
_UNRESERVED = 1 << 64          # without a state file: no reservation to keep
_EPOCH_AT = HOP_HEADER.offsets["key_epoch"]
_COUNTER_AT = HOP_HEADER.offsets["counter"]
_NONCE_AT = HOP_HEADER.offsets["reserved2"]
#: version, suite and the reserved bytes: the header bytes the tag does not bind (the
#: epoch chooses the key, reserved2 and the counter are the nonce) must be exactly these
_FIXED = bytes((HOP_VERSION, SUITE_AES_256_GCM, 0, 0))
_VERSION_AT = HOP_HEADER.offsets["version"]
#: version, suite, reserved | key_epoch | reserved2 | counter: one unpack on the receive path
_FIXED_EPOCH_COUNTER = struct.Struct(">4sI4xQ")
_NONCE_PREFIX = bytes(_COUNTER_AT - _NONCE_AT)      # reserved2: zero
if (_VERSION_AT + 4, _EPOCH_AT + 8, _NONCE_AT + 4) != (_EPOCH_AT, _COUNTER_AT, _COUNTER_AT):
    raise ImportError("rcn.logxfer.seal: the hop header's layout moved; update the unpack")
HOP_DROP_REASONS = ("not_neighbour", "unsealed", "unknown_key", "bad_tag", "replayed",
                    "no_link_key", "no_counter")
_SEAL_AT = LOG_HEADER.offsets["seal"]
_GROUP_AT = LOG_HEADER.offsets["group_id"]
_KEY_EPOCH_AT = LOG_HEADER.offsets["key_epoch"]
E2E_DROP_REASONS = ("e2e_unsealed", "e2e_unknown_key", "e2e_retired_key", "e2e_bad_tag")


class SealRefused(Exception):
    """An entry body that did not open; ``reason`` is the drop counter's name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class ReplayWindow:
    """A sliding window over one sender's counters (RFC 6479's idea, as one integer bitmap):
    the highest counter seen, and which of the ``size`` below it were seen."""

    __slots__ = ("size", "top", "seen", "_mask")

    def __init__(self, size: int = REPLAY_WINDOW):
        self.size = size
        self.top = -1
        self.seen = 0          # bit i: counter top - i was seen
        self._mask = (1 << size) - 1

    @classmethod
    def floor(cls, top: int, size: int = REPLAY_WINDOW) -> "ReplayWindow":
        """A window that refuses every counter up to ``top`` (a restarted receiver's, from
        the high-water mark it saved)."""
        window = cls(size)
        window.top, window.seen = top, (1 << size) - 1
        return window

    def fresh(self, counter: int) -> bool:
        """Whether ``counter`` is new (not seen, not older than the window); no change."""
        if counter > self.top:
            return True
        behind = self.top - counter
        return behind < self.size and not (self.seen >> behind) & 1

    def mark(self, counter: int) -> None:
        """Record ``counter`` (only after its datagram's tag verified)."""
        if counter > self.top:
            shift = counter - self.top
            self.seen = ((self.seen << shift) | 1) & self._mask if shift < self.size else 1
            self.top = counter
        else:
            self.seen |= 1 << (self.top - counter)

    def accept(self, counter: int) -> bool:
        """:meth:`fresh`, and if so :meth:`mark`, in one call (the receive path's)."""
        top = self.top
        if counter > top:
            shift = counter - top
            self.seen = ((self.seen << shift) | 1) & self._mask if shift < self.size else 1
            self.top = counter
            return True
        behind = top - counter
        if behind >= self.size or (self.seen >> behind) & 1:
            return False
        self.seen |= 1 << behind
        return True


def direction_key(key: Key, sender_end: int) -> AESGCM:
    info = f"rcn hop v{HOP_VERSION} end {sender_end} > end {1 - sender_end}".encode()
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        key.material)
    return AESGCM(material)


class HopSeal:
    """One device's hop layer (see the module doc). ``drops``: the device's drop counter
    (``rcn.logxfer.protocol.Drops``); ``clock_ns``: where the counter starts at the
    earliest. ``state``: a daemon's state file (None: counters and windows in memory only,
    as tools and tests use it); ``reactor``: the IReactorTime that paces the saves of the
    windows (:meth:`start` .. :meth:`stop`). A state file that does not parse raises
    ``HopStateError`` here."""

    def __init__(self, me: Address, ring: KeyRing, drops, clock_ns=time.time_ns,
                 state: HopStateFile | None = None, reactor=None,
                 save_interval: float = SAVE_INTERVAL):
        self.me = me
        self.drops = drops
        for reason in HOP_DROP_REASONS:       # shown as 0 in /metrics until one happens
            drops.by_reason.setdefault(reason, 0)
        self.windows: dict[tuple[Address, int], ReplayWindow] = {}
        self.counts = {"sealed": 0, "opened": 0}
        self.state, self._reactor, self._interval = state, reactor, save_interval
        self._saver: LoopingCall | None = None
        self._dirty = False
        if state is None:
            self.counter, self._reserved = clock_ns(), _UNRESERVED
        else:
            reserved, marks = state.load()
            # nothing beyond it is reserved yet: the first datagram (or start) reserves
            self.counter = self._reserved = max(clock_ns(), reserved)
            self.windows = {name: ReplayWindow.floor(top) for name, top in marks.items()}
        self._aead: dict[tuple[Address, int, bool], AESGCM] = {}
        self.set_ring(ring)

    # -- the state file ------------------------------------------------------------------
    def start(self) -> None:
        """With a state file: reserve the first block of counters now (a file that cannot
        be written fails the start, OSError, not the first datagram), and save the moved
        windows every ``save_interval`` seconds of ``reactor``."""
        if self.state is None:
            return
        self._reserve()
        if self._reactor is not None and self._saver is None:
            self._saver = LoopingCall(self._save_moved)
            self._saver.clock = self._reactor
            self._saver.start(self._interval, now=False)

    def stop(self) -> None:
        """A clean stop: the windows saved (a failure is logged)."""
        saver, self._saver = self._saver, None
        if saver is not None and saver.running:
            saver.stop()
        self._save_moved()

    def _marks(self) -> Marks:
        marks = {name: w.top for name, w in self.windows.items() if w.top >= 0}
        if len(marks) > MAX_WINDOWS:        # more senders x epochs than the file holds
            _log.warn("hop layer {me}: {n} replay windows, {m} saved", me=str(self.me),
                      n=len(marks), m=MAX_WINDOWS)
            marks = dict(sorted(marks.items(), key=lambda kv: -kv[0][1])[:MAX_WINDOWS])
        return marks

    def _reserve(self) -> None:
        """The next block of counters, written (durably) before any of it is used."""
        reserved = self.counter + COUNTER_BLOCK
        self.state.save(reserved, self._marks())
        self._reserved, self._dirty = reserved, False

    def _save_moved(self) -> None:
        if self.state is None or not self._dirty:
            return
        try:
            self.state.save(self._reserved, self._marks())
            self._dirty = False
        except OSError as exc:
            _log.error("hop layer {me}: cannot save {path}: {why} (retried)", me=str(self.me),
                       path=self.state.path, why=exc.strerror or str(exc))

    def _counter_refused(self, peer: Address) -> bool:
        """Past the reservation: reserve more; True (a counted ``no_counter`` drop) when
        the state file cannot be written -- no counter is used unreserved."""
        try:
            self._reserve()
            return False
        except OSError as exc:
            self.drops.drop("no_counter", peer, f"hop counters not reserved: {self.state.path}:"
                                                f" {exc.strerror or exc}")
            return True

    def set_ring(self, ring: KeyRing) -> None:
        """New keys (a snapshot, a rotation): epochs no longer held are refused from now."""
        self.ring = ring
        self._neighbours = ring.neighbours(self.me)
        self._aead = {}
        self._sending: dict[Address, tuple[bytes, AESGCM]] = {}
        self._opening: dict[tuple[Address, int], AESGCM] = {}
        held = {(peer, epoch) for peer in self._neighbours
                for epoch in ring.link_keys(self.me, peer)}
        retired = [name for name in self.windows if name not in held]
        for name in retired:
            del self.windows[name]
        self._dirty = self._dirty or bool(retired)

    def _cipher(self, peer: Address, key: Key, sending: bool) -> AESGCM:
        name = (peer, key.epoch, sending)
        aead = self._aead.get(name)
        if aead is None:
            mine = self.ring.link_end(self.me, peer)
            aead = self._aead[name] = direction_key(key, mine if sending else 1 - mine)
        return aead

    def seal(self, data: bytes, peer: Address) -> bytes | None:
        """The envelope for ``peer`` as one buffer; None (counted ``no_link_key``) with no key
        to send with."""
        parts = self.seal_parts(data, peer)
        return None if parts is None else b"".join((parts[0], data, parts[1]))

    def seal_parts(self, data, peer: Address) -> tuple[bytes, bytes] | None:
        """The envelope's hop header and tag for ``data`` (a gathering send puts them around
        it, so a 64 KiB datagram is not copied to be sealed); None as :meth:`seal`."""
        sending = self._sending.get(peer)
        if sending is None:
            key = self.ring.link_send_key(self.me, peer)
            if key is None:
                self.drops.drop("no_link_key", peer, "no link key to seal a datagram for it")
                return None
            # the header's first 16 bytes are the same for every datagram to ``peer``
            sending = self._sending[peer] = (build_hop_header(key.epoch, 0)[:_COUNTER_AT],
                                             self._cipher(peer, key, True))
        prefix, aead = sending
        if self.counter >= self._reserved and self._counter_refused(peer):
            return None                 # the next counter is not reserved: none is used
        self.counter += 1
        counter = self.counter.to_bytes(8, "big")
        header = prefix + counter
        tag = aead.encrypt(_NONCE_PREFIX + counter, b"", hop_covered(data))
        self.counts["sealed"] += 1
        return header, tag

    def open(self, data: bytes, sender: Address) -> memoryview | None:
        """The datagram inside the envelope (a view of ``data``), or None (a counted drop)."""
        if sender not in self._neighbours:
            self.drops.drop("not_neighbour", sender, "no link key with this address")
            return None
        if data[:4] != HOP_MAGIC_BYTES:
            self.drops.drop("unsealed", sender, "not a hop envelope")
            return None
        if len(data) < HOP_OVERHEAD:
            self.drops.drop("malformed", sender, "hop envelope: short")
            return None
        fixed, epoch, counter = _FIXED_EPOCH_COUNTER.unpack_from(data, _VERSION_AT)
        if fixed != _FIXED:
            self.drops.drop("malformed", sender, "hop envelope: unknown version or suite")
            return None
        name = (sender, epoch)
        aead = self._opening.get(name)
        if aead is None:
            key = self.ring.link_keys(self.me, sender).get(epoch)
            if key is None:
                self.drops.drop("unknown_key", sender, f"link key epoch {epoch} is not held")
                return None
            aead = self._opening[name] = self._cipher(sender, key, False)
        end = len(data) - HOP_TAG_SIZE
        view = memoryview(data)
        inner = view[HOP_HEADER_SIZE:end]
        try:
            # the nonce is the header's last 12 bytes: reserved2 (zero) and the counter
            aead.decrypt(view[_NONCE_AT:HOP_HEADER_SIZE], view[end:], hop_covered(inner))
        except InvalidTag:
            self.drops.drop("bad_tag", sender, f"hop tag, link key epoch {epoch}")
            return None
        # only a verified counter may move the window (a forged one must not slide it)
        window = self.windows.get(name)
        if window is None:
            window = self.windows[name] = ReplayWindow()
        if not window.accept(counter):
            self.drops.drop("replayed", sender, f"counter {counter} (highest {window.top})")
            return None
        self._dirty = True
        self.counts["opened"] += 1
        # a view: what the receiver keeps of it, it copies (parsing does, once)
        return inner


class GroupSeal:
    """An edge's end-to-end seal (see the module doc). ``ring``: its group keys (its held
    epochs, :attr:`KeyRing.held`, kept as given); ``sealed``: False for ``mode = "none"``.

    **Held epochs.** A source edge seals an entry before its durable append, and its log
    keeps that ciphertext until the target acknowledges it -- maybe for days, across a
    rotation that retires the epoch. :meth:`track` gives the seal the log's count of
    retained entries per (group, epoch) (``LogStore.epochs``); :meth:`set_ring` then keeps
    every group epoch the new ring lacks but the log still uses as *held*
    (:meth:`with_held`): it opens the edge's own stored entries (:meth:`open_stored`,
    :meth:`reseal`), never an entry from the wire (:meth:`open` refuses it,
    ``e2e_retired_key``), and is never sealed with. :meth:`release` drops it when the
    log's last entry under it goes; ``on_held(ring)`` (the service: rewrite the key file)
    is called with the ring before a release takes effect."""

    def __init__(self, ring: KeyRing | None = None, sealed: bool = True):
        self.sealed = sealed
        self.uses = None          # (group, epoch) -> retained entries: :meth:`track`
        self.on_held = None
        self.counts = {"sealed": 0, "opened": 0, "resealed": 0, "reseal_refused": 0}
        self._adopt(ring if ring is not None else KeyRing())

    def track(self, uses) -> None:
        """The log's retained entries per (group, epoch), a mapping kept up to date by the
        log (``rcn.edge.logstore.LogStore.epochs``)."""
        self.uses = uses

    def _in_use(self, group: int, epoch: int) -> bool:
        return self.uses is not None and self.uses.get((group, epoch), 0) > 0

    def with_held(self, ring: KeyRing) -> KeyRing:
        """``ring`` (a copy) with, as held, every group epoch this seal knows -- sends,
        accepts or holds now, or ``ring`` names as held -- that ``ring`` does not hold and
        the log still retains entries under. Without :meth:`track`, only the epochs
        ``ring`` itself names as held."""
        known = {}
        if self.uses is not None:
            for source in (self.ring.held, self.ring.groups):
                for group, keys in source.items():
                    for epoch, key in keys.items():
                        known[(group, epoch)] = key
        for group, keys in ring.held.items():
            for epoch, key in keys.items():
                known[(group, epoch)] = key
        out = copy.copy(ring)            # the same class: a ring may be a subclass
        out.held = {}
        for (group, epoch), key in sorted(known.items()):
            if ring.group_key(group, epoch) is None and (
                    self.uses is None or self._in_use(group, epoch)):
                out.add_held(group, key)
        return out

    def set_ring(self, ring: KeyRing) -> None:
        """New keys: :meth:`with_held` of ``ring`` in force from now."""
        before = self.ring.held
        self._adopt(self.with_held(ring))
        for group, keys in self.ring.held.items():
            for epoch in keys:
                if epoch not in before.get(group, {}):
                    _log.info("group {group} key epoch {epoch} retired but still held: the "
                              "log retains entries sealed under it", group=group, epoch=epoch)

    def _adopt(self, ring: KeyRing) -> None:
        self.ring = ring
        self._aead: dict[tuple[int, int], AESGCM] = {}
        self._sending: dict[int, tuple[int, AESGCM]] = {}
        self._nonces = memoryview(b"")

    def release(self, group: int, epoch: int) -> bool:
        """The log retains no more entries under ``group``'s ``epoch``: stop holding it (if
        held). True if it was."""
        if (self.uses is None or epoch not in self.ring.held.get(group, {})
                or self._in_use(group, epoch)):
            return False
        ring = copy.copy(self.ring)
        ring.held = {g: {e: k for e, k in keys.items() if (g, e) != (group, epoch)}
                     for g, keys in self.ring.held.items()}
        ring.held = {g: keys for g, keys in ring.held.items() if keys}
        if self.on_held is not None:
            self.on_held(ring)              # the key file first: never ahead of it
        self._adopt(ring)
        _log.info("group {group} key epoch {epoch} released: no retained entry uses it",
                  group=group, epoch=epoch)
        return True

    def release_unused(self) -> int:
        """Release every held epoch the log no longer uses (after the log was read back
        at a restart); how many."""
        return sum(self.release(group, epoch) for group, keys in list(self.ring.held.items())
                   for epoch in list(keys))

    def _cipher(self, group: int, key: Key) -> AESGCM:
        aead = self._aead.get((group, key.epoch))
        if aead is None:
            aead = self._aead[(group, key.epoch)] = AESGCM(key.material)
        return aead

    def _nonce(self) -> bytes:
        """12 random bytes: the kernel's randomness read 256 nonces at a time (one system
        call per entry cost as much as the rest of the seal)."""
        if not self._nonces:
            self._nonces = memoryview(os.urandom(SEAL_NONCE_SIZE * _NONCES_PER_READ))
        nonce, self._nonces = self._nonces[:SEAL_NONCE_SIZE], self._nonces[SEAL_NONCE_SIZE:]
        return nonce.tobytes()

    def _send_key(self, group: int) -> tuple[int, AESGCM]:
        sending = self._sending.get(group)
        if sending is None:
            key = self.ring.group_send_key(group)
            if key is None:
                raise SealRefused("no_group_key", f"no key to seal group {group}'s entries with")
            sending = self._sending[group] = (key.epoch, self._cipher(group, key))
        return sending

    def datagrams(self, entry_type: int, body: bytes, max_body: int, **fields) -> list[bytes]:
        """``segment_entry`` of ``body`` sealed under the group's newest key. Raises
        :class:`SealRefused` (``no_group_key``) when the group has none."""
        if not self.sealed or entry_type not in SEALABLE_TYPES:
            return segment_entry(entry_type, body, max_body, **fields)
        out = self._seal(entry_type, body, max_body, fields)
        self.counts["sealed"] += 1
        return out

    def _seal(self, entry_type: int, body: bytes, max_body: int, fields: dict) -> list[bytes]:
        epoch, aead = self._send_key(fields.get("group_id", 0))
        fields["seal"] = _AES_256_GCM
        fields["key_epoch"] = epoch
        fields["total_length"] = len(body) + SEALED_OVERHEAD
        nonce = self._nonce()
        sealed = aead.encrypt(nonce, body, e2e_aad(entry_type, **fields))
        del fields["total_length"]
        return segment_entry(entry_type, sealed, max_body, head=nonce, **fields)

    def open(self, header: LogHeader, body: bytes) -> bytes:
        """The clear body of a whole (joined) entry from the wire that ends here;
        :class:`SealRefused` -- also for a held epoch (``e2e_retired_key``)."""
        clear = self._open(header, body, stored=False)
        self.counts["opened"] += 1
        return clear

    def open_stored(self, header: LogHeader, body: bytes) -> bytes:
        """The clear body of an entry of this edge's own log: a held epoch opens it."""
        return self._open(header, body, stored=True)

    def _open(self, header: LogHeader, body: bytes, stored: bool) -> bytes:
        if header.seal == Seal.CLEAR:
            if self.sealed:
                raise SealRefused("e2e_unsealed", "a clear entry where entries are sealed")
            return body
        if header.seal != Seal.AES_256_GCM or len(body) < SEALED_OVERHEAD:
            raise SealRefused("e2e_bad_tag", f"seal {header.seal} over {len(body)} bytes")
        group, epoch = header.group_id, header.key_epoch
        key = self.ring.group_key(group, epoch)
        if key is None:
            key = self.ring.stored_group_key(group, epoch)
            if key is None:
                raise SealRefused("e2e_unknown_key", f"group {group} key epoch {epoch} is "
                                                     f"not held")
            if not stored:
                raise SealRefused("e2e_retired_key", f"group {group} key epoch {epoch} is "
                                                     f"retired (held for this edge's log only)")
        view = memoryview(body)
        try:
            return self._cipher(group, key).decrypt(
                view[:SEAL_NONCE_SIZE], view[SEAL_NONCE_SIZE:], e2e_aad(header.entry_type, header))
        except InvalidTag:
            raise SealRefused("e2e_bad_tag", f"group {group} key epoch {epoch}") from None

    def reseal(self, datagrams: list[bytes]) -> list[bytes] | None:
        """A stored entry's datagrams sealed again under its group's current send epoch
        (a fresh nonce, ``key_epoch`` and CRC as :meth:`datagrams` makes them, the same
        segmentation), or None when they already are (or are not sealed). The log keeps
        the original. :class:`SealRefused` when it does not open or the group has no key
        to send with."""
        first = datagrams[0]
        if not self.sealed or first[_SEAL_AT] != _AES_256_GCM:
            return None
        # every first send passes here: the epoch is compared before anything is parsed
        epoch, _ = self._send_key(int.from_bytes(first[_GROUP_AT:_GROUP_AT + 4], "big"))
        if int.from_bytes(first[_KEY_EPOCH_AT:_KEY_EPOCH_AT + 4], "big") == epoch:
            return None
        header = LogHeader.parse(first, fast=True)
        body = b"".join(d[HEADER_SIZE:] for d in datagrams)
        clear = self.open_stored(header, body)
        out = self._seal(header.entry_type, clear, header.rio_length, dict(
            flags=header.flags, group_id=header.group_id, ttl=header.ttl,
            sequence=header.sequence, io_time_ns=header.io_time_ns,
            target_wwn=header.target_wwn, target_lun=header.target_lun,
            source_wwn=header.source_wwn, source_lun=header.source_lun))
        self.counts["resealed"] += 1
        return out


def keys_at_start(device: str, seal, managed: bool) -> KeyRing | None:
    """A device's keys at start (``seal``: its ``[seal]`` table, ``rcn.config.SealConfig``),
    None when it runs unsealed -- said loudly, once. :class:`KeyFileError` when sealed and
    the key file is missing (and no management server will send keys) or unusable."""
    if not seal.sealed:
        _log.warn("{device}: seal.mode = \"none\": log transfer is NOT sealed -- anyone "
                  "on the network can forge, alter and replay entries; for debugging only",
                  device=device)
        return None
    ring = ring_at_start(seal.keys, managed)
    epochs = ring.epochs()
    _log.info("{device}: log transfer sealed (AES-256-GCM): keys of {links} links and {groups} "
              "groups{source}", device=device, links=len(epochs["links"]),
              groups=len(epochs["groups"]),
              source=f" from {seal.keys}" if len(ring) else ", waiting for the management "
                                                             "server's")
    return ring


def hop_at_start(me: Address, ring: KeyRing, drops, path: str | None, reactor) -> HopSeal:
    """A daemon's hop layer: counters and replay windows kept in the state file ``path``
    (``rcn.logxfer.hopstate``: an edge's ``DATA_DIR/keys.hop``, a core's beside its key
    file; None: in memory only), the windows' saves paced by ``reactor``. Call
    :meth:`HopSeal.start` in ``startService`` (the file is written as the user the daemon
    runs as) and :meth:`HopSeal.stop` at stop. ``HopStateError`` when the state file does
    not parse."""
    return HopSeal(me, ring, drops, state=None if path is None else HopStateFile(path),
                   reactor=reactor)
