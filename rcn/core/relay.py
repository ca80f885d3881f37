"""The core device's relay: log entries in, log entries (or BATCHes of them) out.

:class:`CoreRelay` is the ``LogTransferProtocol``'s handler (DESIGN.md 3.3). It
is a plain object: the clock (``callLater``) and ``send(data, address)`` are
injected, so tests drive it with ``task.Clock`` and a list.

What happens to an entry
    * **BATCH**: unpacked with the datapath kernel (``batching.unpack``); every
      inner entry is handled as if it had arrived alone. The protocol checked
      the batch's CRC32C; each inner entry's own CRC32C is checked here, and an
      inner entry that fails is dropped alone (``bad_crc``). A batch the kernel
      cannot unpack (counts that do not add up, a truncated or unknown-version
      inner entry, a batch in a batch) is dropped whole (``malformed_batch``).
      A BATCH is a container from one device to the next: its own header
      (group 0, ttl 1, sequence) is not looked at again and never forwarded.
    * **TTL**: an entry that *arrives* with ttl 0 is dropped (``ttl_expired``);
      one that arrives with ttl n > 0 leaves with n - 1, so it may leave with
      0 -- the next relay drops it, an edge (the end of the path) takes it.
      Every entry that leaves gets its CRC32C recomputed.
    * **Direction**: WROK, CTRL_OK, NAK and a CTRL with flag REVERSE
      (``routes.goes_backward``) go to the address *before* this core in the path of their (source WWN, target WWN);
      everything else to the address after it. No route through this core, or
      no address in that direction: dropped (``no_route``).
    * **KEEPALIVE with target WWN 0** is a probe of this hop, addressed to
      whichever device receives it: it is answered at once by echoing it back to
      its sender -- the same body, ttl - 1 and a new CRC32C (so two relays that
      both echo a forged probe stop after at most 255 bounces). A KEEPALIVE with
      a target WWN travels its path like any forward entry.

Batching (per next-hop address, when ``BatchPolicy.enabled``)
    Entries for one next hop wait in that hop's queue: the first entry starts a
    ``max_delay`` timer; the queue is sent when the timer fires, when the next
    entry would take the BATCH datagram over ``max_bytes`` (it is sent first and
    the entry starts the next queue), or as soon as it holds ``max_entries`` or
    no further entry (88 bytes at least) could fit. A queue is sent as one BATCH
    datagram built by the kernels (``plan_batches`` + ``pack``), byte for byte
    ``logentry.build_batch(entries, group_id=0, ttl=1, sequence=n)`` where n
    counts the BATCHes this core has sent (1, 2, ... across all next hops; it
    tells batches apart in a capture and is not used by receivers). A queue of
    one entry is sent as that entry, without the 96 bytes of batch overhead. An
    entry too big to share a batch (96 + its padded length > ``max_bytes``) is
    sent alone at once, after what waits for the same hop, so the order per next
    hop is always the order of arrival.

    Bounds: a queue holds at most one batch, so at most ``max_bytes`` bytes
    (``max_bytes`` <= 65507, one UDP datagram) and ``max_entries`` entries per
    next hop; reaching the bound sends it at once -- nothing is ever dropped
    for lack of queue space. The number of queues is the number of neighbours
    in the route table.

Without batching every entry is sent at once, alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from crc32c import crc32c
from twisted.logger import Logger

from datapath.frames.errors import DecodeError
from datapath.frames.logentry import HEADER_SIZE, LOG_HEADER, MAX_BATCH, EntryType, LogEntry
from datapath.frames.names import format_wwn
from datapath.kernels.batching import BATCH_OVERHEAD, pack, plan_batches, unpack
from rcn.logxfer.protocol import MAX_ENTRY_DATAGRAM, Drops
from rcn.logxfer.routes import Address, RouteTable, goes_backward

_log = Logger()

_TYPE_AT = LOG_HEADER.offsets["entry_type"]
_TTL_AT = LOG_HEADER.offsets["ttl"]
_CRC_AT = LOG_HEADER.offsets["crc32c"]
_TARGET_AT = LOG_HEADER.offsets["target_wwn"]
_SOURCE_AT = LOG_HEADER.offsets["source_wwn"]
_SEQUENCE_AT = LOG_HEADER.offsets["sequence"]
_GROUP_AT = LOG_HEADER.offsets["group_id"]
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ZERO_CRC = bytes(4)
_BATCH = int(EntryType.BATCH)
_KEEPALIVE = int(EntryType.KEEPALIVE)
_FLAGS_AT = LOG_HEADER.offsets["flags"]
#: the smallest BATCH that can hold two entries (two bare 88-byte headers)
MIN_BATCH_BYTES = BATCH_OVERHEAD + 2 * HEADER_SIZE


@dataclass(frozen=True)
class BatchPolicy:
    """How a core batches: see the module docstring. ``max_delay`` is in seconds."""

    enabled: bool = True
    max_delay: float = 0.001
    max_bytes: int = 65000
    max_entries: int = 256

    def __post_init__(self):
        if not 0 <= self.max_delay <= 1.0:
            raise ValueError(f"max_delay {self.max_delay} s is outside 0..1 s")
        if not MIN_BATCH_BYTES <= self.max_bytes <= MAX_ENTRY_DATAGRAM:
            raise ValueError(f"max_bytes {self.max_bytes} is outside {MIN_BATCH_BYTES}.."
                             f"{MAX_ENTRY_DATAGRAM} (two bare entries .. one UDP datagram with its hop "
                             f"envelope)")
        if not 1 <= self.max_entries <= MAX_BATCH:
            raise ValueError(f"max_entries {self.max_entries} is outside 1..{MAX_BATCH}")


class _HopQueue:
    """Entries waiting for one next hop: back to back in ``stage``, already rewritten
    (ttl - 1, new CRC32C), as ``pack`` takes them."""

    __slots__ = ("address", "stage", "view", "used", "size", "offsets", "lengths", "count",
                 "timer")

    def __init__(self, address: Address, policy: BatchPolicy):
        self.address = address
        # the entries of one batch take at most max_bytes - 96 bytes unpadded
        self.stage = bytearray(policy.max_bytes)
        self.view = memoryview(self.stage)
        self.offsets = np.zeros(policy.max_entries, dtype=np.int64)
        self.lengths = np.zeros(policy.max_entries, dtype=np.int64)
        self.used = 0                   # bytes of stage in use
        self.size = BATCH_OVERHEAD      # the BATCH datagram's size if it were sent now
        self.count = 0
        self.timer = None


def crc_ok(entry) -> bool:
    """Whether the log entry in ``entry`` (bytes or a memoryview of exactly the entry)
    carries the right CRC32C; no copy of the entry is made."""
    stored = _U32.unpack_from(entry, _CRC_AT)[0]
    crc = crc32c(entry[:_CRC_AT])
    crc = crc32c(_ZERO_CRC, crc)
    return crc32c(entry[_CRC_AT + 4:], crc) == stored


class CoreRelay:
    """Forwards log entries along their paths; see the module docstring.

    ``routes``: the route table (table 408); ``me``: this core's log-transfer
    address as it appears in the paths; ``send(data, address)``: sends one
    datagram; ``clock``: ``callLater``; ``drops``: the drop counter shared with
    the protocol, so one place counts every reason.
    """

    def __init__(self, routes: RouteTable, me: Address, send, clock, *,
                 batch: BatchPolicy | None = None, drops: Drops | None = None):
        self.routes = routes
        self.me = me
        self.send = send
        self.clock = clock
        self.policy = batch if batch is not None else BatchPolicy(enabled=False)
        self.drops = drops if drops is not None else Drops()
        self._queues: dict[Address, _HopQueue] = {}
        self._batch_sequence = 0
        self.debug = False                # the console's debug log-transfer: a line per entry
        # enough for any split plan_batches could make of one queue
        self._out = np.empty(self.policy.max_bytes + BATCH_OVERHEAD * self.policy.max_entries,
                             dtype=np.uint8)
        self._counts = {"received": 0, "forwarded": 0, "forwarded_bytes": 0, "batches_sent": 0,
                        "batched_entries": 0, "batches_received": 0, "unpacked_entries": 0,
                        "keepalives_answered": 0}

    # -- the protocol's handler ----------------------------------------------------------
    def entry_received(self, entry: LogEntry, data: bytes, sender: Address) -> None:
        header = entry.header
        entry_type = header.entry_type
        if entry_type == _BATCH:
            self._batch_received(data, sender)
            return
        self._counts["received"] += 1
        self._route(memoryview(data), entry_type, header.ttl, header.source_wwn,
                    header.target_wwn, sender, header.flags)

    def _batch_received(self, data: bytes, sender: Address) -> None:
        counts = self._counts
        counts["batches_received"] += 1
        try:
            offsets, lengths = unpack(data)
        except DecodeError as exc:
            self.drops.drop("malformed_batch", sender, str(exc))
            return
        view = memoryview(data)
        n = len(offsets)
        counts["unpacked_entries"] += n
        counts["received"] += n
        for index, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
            entry = view[offset:offset + length]
            if not crc_ok(entry):
                self.drops.drop("bad_crc", sender, f"entry {index} of {n} in a BATCH (sequence "
                                f"{_U64.unpack_from(data, _SEQUENCE_AT)[0]})")
                continue
            self._route(entry, entry[_TYPE_AT], entry[_TTL_AT],
                        _U64.unpack_from(entry, _SOURCE_AT)[0],
                        _U64.unpack_from(entry, _TARGET_AT)[0], sender,
                        _U16.unpack_from(entry, _FLAGS_AT)[0])

    def _route(self, entry: memoryview, entry_type: int, ttl: int, source: int, target: int,
               sender: Address, flags: int = 0) -> None:
        if ttl == 0:
            self.drops.drop("ttl_expired", sender, self._describe(entry, entry_type, source, target))
            return
        if entry_type == _KEEPALIVE and target == 0:
            self._counts["keepalives_answered"] += 1
            self.send(_rewrite(entry, ttl), sender)
            return
        backward = goes_backward(entry_type, flags)
        hop = self.routes.next_hop(source, target, self.me, backward)
        if hop is None:
            why = (f"{self.me} ends its path going {'backward' if backward else 'forward'}"
                   if self.routes.on_path(source, target, self.me)
                   else f"no route through {self.me}")
            self.drops.drop("no_route", sender,
                            f"{self._describe(entry, entry_type, source, target)}: {why}")
            return
        if self.debug:
            _log.info("{me}: {entry} from {sender} to {hop}", me=str(self.me), hop=str(hop),
                      entry=self._describe(entry, entry_type, source, target), sender=str(sender))
        policy = self.policy
        if not policy.enabled:
            self._send_one(_rewrite(entry, ttl), hop)
            return
        length = len(entry)
        padded = (length + 7) & -8
        queue = self._queues.get(hop)
        if BATCH_OVERHEAD + padded > policy.max_bytes:
            # too big to share a batch: after what waits, alone
            if queue is not None and queue.count:
                self._flush(queue)
            self._send_one(_rewrite(entry, ttl), hop)
            return
        if queue is None:
            queue = self._queues[hop] = _HopQueue(hop, policy)
        elif queue.size + padded > policy.max_bytes:
            self._flush(queue)
        at, end = queue.used, queue.used + length
        view = queue.view
        view[at:end] = entry
        view[at + _TTL_AT] = ttl - 1
        view[at + _CRC_AT:at + _CRC_AT + 4] = _ZERO_CRC
        _U32.pack_into(queue.stage, at + _CRC_AT, crc32c(view[at:end]))
        queue.offsets[queue.count] = at
        queue.lengths[queue.count] = length
        queue.count += 1
        queue.used = end
        queue.size += padded
        if queue.count >= policy.max_entries or queue.size + HEADER_SIZE > policy.max_bytes:
            self._flush(queue)
        elif queue.count == 1:
            queue.timer = self.clock.callLater(policy.max_delay, self._timer_fired, queue)

    @staticmethod
    def _describe(entry, entry_type: int, source: int, target: int) -> str:
        try:
            name = EntryType(entry_type).name
        except ValueError:
            name = f"type {entry_type}"
        return (f"{name} group {_U32.unpack_from(entry, _GROUP_AT)[0]} sequence "
                f"{_U64.unpack_from(entry, _SEQUENCE_AT)[0]} {format_wwn(source)} -> "
                f"{format_wwn(target)}")

    # -- sending -------------------------------------------------------------------------
    def _send_one(self, data: bytes, hop: Address) -> None:
        self._counts["forwarded"] += 1
        self._counts["forwarded_bytes"] += len(data)
        self.send(data, hop)

    def _timer_fired(self, queue: _HopQueue) -> None:
        queue.timer = None
        self._flush(queue)

    def _flush(self, queue: _HopQueue) -> None:
        """Send what waits in ``queue`` (one BATCH, or the entry alone) and empty it."""
        if queue.timer is not None:
            if queue.timer.active():
                queue.timer.cancel()
            queue.timer = None
        n = queue.count
        if n == 0:
            return
        if n == 1:
            data = bytes(queue.view[:queue.used])
            datagrams = [(data, 1)]
        else:
            lengths, offsets = queue.lengths[:n], queue.offsets[:n]
            starts, ends = plan_batches(lengths, self.policy.max_bytes, self.policy.max_entries)
            first = self._batch_sequence + 1
            self._batch_sequence += len(starts)
            out, bounds = pack(queue.stage, offsets, lengths, starts, ends, out=self._out,
                               sequences=np.arange(first, first + len(starts), dtype=np.uint64),
                               group_id=0, ttl=1)
            datagrams = []
            for k, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
                if end - start == 1:      # never with the queue's own bound; kept for safety
                    at = int(offsets[start])
                    datagrams.append((bytes(queue.view[at:at + int(lengths[start])]), 1))
                else:
                    datagrams.append((out[bounds[k]:bounds[k + 1]].tobytes(), end - start))
        counts = self._counts
        counts["forwarded"] += n
        counts["forwarded_bytes"] += queue.used
        queue.count = 0
        queue.used = 0
        queue.size = BATCH_OVERHEAD
        for data, entries in datagrams:
            if entries > 1:
                counts["batches_sent"] += 1
                counts["batched_entries"] += entries
            self.send(data, queue.address)

    def flush_all(self) -> None:
        """Send everything that waits (on stop, so a graceful stop loses nothing)."""
        for queue in list(self._queues.values()):
            self._flush(queue)

    def set_routes(self, routes: RouteTable) -> None:
        """Replace the route table (entries already queued still go where they were headed)."""
        self.routes = routes

    # -- what it shows -------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Entries ``received`` (alone or inside a BATCH), ``forwarded`` (and their
        ``forwarded_bytes``, without batch overhead), ``batches_sent`` and the
        ``batched_entries`` in them, ``batches_received`` and the ``unpacked_entries``
        found in them, ``keepalives_answered``; ``queued_entries`` and ``queued_bytes``
        wait now. Drops by reason are in :attr:`drops` (shared with the protocol)."""
        out = dict(self._counts)
        out["queued_entries"] = sum(q.count for q in self._queues.values())
        out["queued_bytes"] = sum(q.used for q in self._queues.values())
        return out

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Next-hop address -> (entries, bytes) waiting for it."""
        return {str(address): (q.count, q.used) for address, q in self._queues.items()}


def _rewrite(entry, ttl: int) -> bytearray:
    """The entry as it leaves (a new buffer): ttl - 1 and its CRC32C recomputed."""
    out = bytearray(entry)
    out[_TTL_AT] = ttl - 1
    out[_CRC_AT:_CRC_AT + 4] = _ZERO_CRC
    _U32.pack_into(out, _CRC_AT, crc32c(out))
    return out
