"""Joining log entries split across datagrams (DESIGN.md 3.3, patent 【0078】).

An RIO area larger than one datagram travels as segments, each repeating the
entry's header with ``segment_index`` of ``segment_count``, ``segment_offset``
and ``total_length`` (``datapath.frames.logentry``). The target edge joins them
before the entry reaches its group's reorder buffer, and ``rcn-decode`` joins
them in captures, with this one class: bounded (entries and bytes held), a
segment seen twice ignored, segments that do not tile the area refused.

Two sealings of one entry. An entry sealed end to end and sent twice with the
same header (an answer sent again, each time under a fresh random nonce) gives
segments that look alike but do not go together; only the end-to-end open can tell
them apart (the nonce is in the first segment alone, the tag in the last). So an
edge hands :meth:`SegmentAssembler.add` its ``opener``: then a segment that differs
from the copy held at its index is kept beside it (up to ``max_copies`` per index),
and once every index holds a copy the joins that use the newest segment are opened
in turn (the k-th copy of every index first: the k-th sealing, when each arrived
in order) -- the first that opens is the entry, one that does not is never handed
on. Without an opener the first copy of each index is the one joined.
"""

from __future__ import annotations

import itertools
from typing import Callable

from datapath.frames.errors import DecodeError
from datapath.frames.logentry import LogHeader, e2e_aad
from rcn.logxfer.seal import SealRefused


class _Held:
    """An incomplete entry: its segment count, and the copies of each index (in order of
    arrival: ``(segment_offset, body)``)."""

    __slots__ = ("count", "parts")

    def __init__(self, count: int):
        self.count = count
        self.parts: dict[int, list[tuple[int, bytes]]] = {}


class SegmentAssembler:
    """Joins the segments of log entries split across datagrams.

    Entries are keyed by what their end-to-end seal binds of the header
    (``logentry.e2e_aad``: type, flags but RETRANSMIT, group, sequence, the WWNs and
    LUNs, the seal, the key epoch and the total length), so segments of two entries
    that differ in any of those never meet; a segment seen twice is ignored. At most
    ``max_entries`` incomplete entries and ``max_bytes`` of their data are held; beyond
    that the oldest is dropped and counted in ``evicted``. ``max_copies`` and
    ``max_trials`` bound the work on differing copies (see the module doc):
    ``copies_ignored`` counts the copies past the first ``max_copies`` of an index,
    ``joins_refused`` the times differing copies were all held and none of their joins
    opened (an entry with one copy of each segment that does not open is the opener's
    refusal, raised: a counted drop at the edge).
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 256 << 20,
                 max_copies: int = 4, max_trials: int = 16):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_copies = max_copies
        self.max_trials = max_trials
        self.held_bytes = 0
        self.evicted = 0
        self.copies_ignored = 0
        self.joins_refused = 0
        self._pending: dict[bytes, _Held] = {}

    def add(self, header: LogHeader, body: bytes, at: int = 0,
            opener: Callable[[bytes], bytes] | None = None) -> bytes | None:
        """The whole RIO area once its last missing segment arrives (with ``opener``: the
        area as ``opener`` returns it), else None.

        Segments that do not tile the area raise :class:`DecodeError` (``at``: the
        offset to report) and the entry is dropped. With ``opener`` (the end-to-end open
        of a whole area, raising :class:`SealRefused` on a body that does not open): when
        no join opens the segments stay held, for another copy, and the refusal is raised
        if each index holds one copy (else None: two sealings not matched yet).
        """
        key = e2e_aad(header.entry_type, header)
        count, index = header.segment_count, header.segment_index
        held = self._pending.get(key)
        if held is not None and held.count != count:
            self._drop(key)          # a different entry under the same name: start again
            held = None
        if held is None:
            held = self._pending[key] = _Held(count)
        copies = held.parts.setdefault(index, [])
        if any(kept == body for _, kept in copies):
            return None
        if copies and (opener is None or len(copies) >= self.max_copies):
            self.copies_ignored += 1
            return None
        copies.append((header.segment_offset, body))
        self.held_bytes += len(body)
        try:
            if len(held.parts) == count:
                return self._complete(key, held, index, header.total_length, at, opener)
            return None
        finally:
            while len(self._pending) > self.max_entries or self.held_bytes > self.max_bytes:
                self._drop(next(iter(self._pending)))
                self.evicted += 1

    def pending_count(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        self._pending.clear()
        self.held_bytes = 0

    def _complete(self, key: bytes, held: _Held, index: int, total: int, at: int,
                  opener) -> bytes | None:
        """Every index holds a copy: the joins that use the copy just added at ``index``."""
        refused = None
        tiled = False
        for choice in self._choices(held, index):
            area = self._join([held.parts[i][k] for i, k in enumerate(choice)], total)
            if area is None:
                continue
            tiled = True
            if opener is None:
                self._drop(key)
                return area
            try:
                opened = opener(area)
            except SealRefused as exc:      # raised when no join opens
                refused = exc
                continue
            self._drop(key)
            return opened
        if not tiled and len(held.parts[index]) == 1:
            self._drop(key)
            raise DecodeError("log", "segment_offset", at,
                              f"{held.count} segments do not tile the {total}-byte RIO area")
        if refused is not None and all(len(copies) == 1 for copies in held.parts.values()):
            raise refused       # one copy of each: this entry does not open
        self.joins_refused += 1     # copies of two sealings, no match yet: held on
        return None

    def _choices(self, held: _Held, index: int):
        """Which copy of each index to join (tuples of copy numbers, by index), each
        using the newest copy at ``index``: the k-th copy everywhere first, then the
        other mixtures; at most ``max_trials``."""
        depths = [len(held.parts[i]) for i in range(held.count)]
        newest = depths[index] - 1
        seen = set()
        generations = ([min(k, d - 1) for d in depths] for k in range(max(depths)))
        mixtures = itertools.product(*(range(d) if i != index else (newest,)
                                       for i, d in enumerate(depths)))
        for choice in itertools.chain(generations, mixtures):
            choice = tuple(choice)
            if choice[index] != newest or choice in seen:
                continue
            seen.add(choice)
            yield choice
            if len(seen) >= self.max_trials:
                return

    @staticmethod
    def _join(parts: list[tuple[int, bytes]], total: int) -> bytes | None:
        """The area if the segments follow each other without gap or overlap."""
        area, at = bytearray(), 0
        for offset, body in sorted(parts, key=lambda part: part[0]):
            if offset != at:
                return None
            area += body
            at += len(body)
        return bytes(area) if at == total else None

    def _drop(self, key) -> None:
        held = self._pending.pop(key)
        self.held_bytes -= sum(len(body) for copies in held.parts.values()
                               for _, body in copies)
