"""Joining log entries split across datagrams (DESIGN.md 3.3, patent 【0078】).

An RIO area larger than one datagram travels as segments, each repeating the
entry's header with ``segment_index`` of ``segment_count``, ``segment_offset``
and ``total_length`` (``datapath.frames.logentry``). The target edge joins them
before the entry reaches its group's reorder buffer, and ``rcn-decode`` joins
them in captures, with this one class: bounded (entries and bytes held), a
segment seen twice ignored, segments that do not tile the area refused.
"""

from __future__ import annotations

from datapath.frames.errors import DecodeError
from datapath.frames.logentry import LogHeader


class SegmentAssembler:
    """Joins the segments of log entries split across datagrams.

    Entries are keyed by type, group, sequence and the two WWNs; a segment
    seen twice is ignored. At most ``max_entries`` incomplete entries and
    ``max_bytes`` of their data are held; beyond that the oldest is dropped and
    counted in ``evicted``.
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 256 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.evicted = 0
        self._pending: dict[tuple, tuple[int, int, dict[int, tuple[int, bytes]]]] = {}

    def add(self, header: LogHeader, body: bytes, at: int = 0) -> bytes | None:
        """The whole RIO area once its last missing segment arrives, else None.

        Segments that do not tile the area raise :class:`DecodeError` (``at``:
        the offset to report).
        """
        key = (header.entry_type, header.group_id, header.sequence, header.source_wwn,
               header.target_wwn)
        total, count = header.total_length, header.segment_count
        if key in self._pending and self._pending[key][:2] != (total, count):
            self._drop(key)          # a different entry under the same name: start again
        _, _, parts = self._pending.setdefault(key, (total, count, {}))
        if header.segment_index not in parts:
            parts[header.segment_index] = (header.segment_offset, body)
            self.held_bytes += len(body)
        if len(parts) == count:
            area = self._join(parts, total)
            self._drop(key)
            if area is None:
                raise DecodeError("log", "segment_offset", at,
                                  f"{count} segments do not tile the {total}-byte RIO area")
            return area
        while len(self._pending) > self.max_entries or self.held_bytes > self.max_bytes:
            self._drop(next(iter(self._pending)))
            self.evicted += 1
        return None

    def pending_count(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        self._pending.clear()
        self.held_bytes = 0

    @staticmethod
    def _join(parts: dict, total: int) -> bytes | None:
        """The area if the segments follow each other without gap or overlap."""
        area, at = bytearray(), 0
        for offset, body in sorted(parts.values(), key=lambda part: part[0]):
            if offset != at:
                return None
            area += body
            at += len(body)
        return bytes(area) if at == total else None

    def _drop(self, key) -> None:
        _, _, parts = self._pending.pop(key)
        self.held_bytes -= sum(len(body) for _, body in parts.values())
