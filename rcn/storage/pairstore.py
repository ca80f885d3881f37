"""The array's pair table on disk, as a real array keeps it: rows and bitmaps survive a restart.

``DATA_DIR/pairs.json`` holds the rows (:class:`~rcn.storage.pairs.Pair`'s identity, state,
mode, geometry, ``link_lost``), rewritten atomically (write, fsync, rename) whenever a row
is added, removed or changes state -- pair changes are rare. Each row's differential
bitmap (1211 or 1213) lives in ``DATA_DIR/lun<N>.bitmap``, memory-mapped: a mark is a store
into the page cache, so it costs nothing on the write path and survives a crash of the
process exactly as the volume's own writes do (``flush`` syncs both to the disk).

A source row also has a *write-intent* bitmap, ``DATA_DIR/lun<N>.intent``: a replicated
host write marks its tracks there before it reaches the volume and clears them once the
partner has it (or 1211 has it, if it failed). A crash leaves marked exactly the tracks
whose writes may be on this volume and not at the partner; at the next start they go into
1211 and the row, if it was replicating, into failure Suspend with ``link_lost`` set, so
the pair resynchronises by itself when the link comes up (``RemoteCopy.link_restored``)
and copies only those tracks. A copy run that a crash stopped resumes the same way: its
bitmap still holds every track not yet copied.

File format of both bitmap files: the bitmap's words, ``uint64`` in this machine's byte
order, nothing else (the geometry is in ``pairs.json``). A file whose size does not match
its row, or a ``pairs.json`` that cannot be read, is an error naming the file at start-up:
the operator decides (move it away: the rows are then empty and the partner's commands
refuse what no longer fits).
"""

from __future__ import annotations

import json
import os

import numpy as np
from twisted.logger import Logger

from datapath.frames.fcp import FLAT_LUN_LIMIT
from datapath.frames.names import format_wwn, parse_wwn
from datapath.kernels.bitmap import DifferentialBitmap, geometry
from rcn.pairstate import REPLICATING, PairState
from rcn.storage.pairs import Pair, PairTable

_log = Logger()
ROWS_FILE = "pairs.json"
#: the integers of a row and their largest values
_ROW_INTEGERS = {"lun": FLAT_LUN_LIMIT - 1, "partner_lun": FLAT_LUN_LIMIT - 1,
                 "group": (1 << 32) - 1, "queue_limit": 1 << 20, "capacity": (1 << 63) - 1,
                 "track_size": 1 << 30, "copies_completed": (1 << 63) - 1}
VERSION = 1


class PairStoreError(Exception):
    """The pair file or a bitmap file is unusable; the message names the file."""


def _words_file(path: str, word_count: int, create: bool) -> np.ndarray:
    """A writable ``uint64`` array over ``path`` (created zeroed with ``create``)."""
    size = word_count * 8
    if create or not os.path.exists(path):
        # a new file, never the old one truncated: a row replaced at this LUN may still
        # have the old one mapped (mapped pages past a file's end fault)
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.truncate(size)
        os.replace(tmp, path)
    elif os.path.getsize(path) != size:
        raise PairStoreError(f"{path}: {os.path.getsize(path)} bytes, the pair's bitmap needs "
                             f"{size}; move the file away to start without it")
    return np.memmap(path, dtype=np.uint64, mode="r+", shape=(word_count,)).view(np.ndarray)


class PairStore:
    """See the module doc. ``directory`` exists; nothing is written before :meth:`load`."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, ROWS_FILE)
        self._intent: dict[int, np.ndarray] = {}          # lun -> intent words
        self._in_flight: dict[int, dict[int, int]] = {}   # lun -> track -> writes
        self._mapped: dict[int, np.ndarray] = {}          # lun -> bitmap words on disk

    # -- start-up -------------------------------------------------------------------------
    def load(self, table: PairTable, volumes: dict) -> int:
        """Rows from the file replace configured rows of the same LUN; returns how many.
        Interrupted replicated writes and copies become 1211 tracks (see the module doc)."""
        if not os.path.exists(self.path):
            for pair in table:
                self.attach(pair)
            self.save(table)
            return 0
        try:
            with open(self.path) as f:
                doc = json.load(f)
            rows = [self._row(item, volumes) for item in doc["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PairStoreError(f"{self.path}: unreadable pair table ({exc}); move it away "
                                 f"to start with the configured pairs only") from exc
        for pair in rows:
            if table.for_lun(pair.lun) is not None:
                table.remove(pair.lun)
            table.add(pair)
        for pair in table:
            self.attach(pair, fresh=False)
            self._recover(pair)
        self.save(table)
        return len(rows)

    def _row(self, item: dict, volumes: dict) -> Pair:
        """A row of the file, every value checked (the bitmap file's size follows from
        ``capacity``, so it is bounded by the volume's)."""
        for key, high in _ROW_INTEGERS.items():
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise ValueError(f"{key}: {value!r} is not an integer in 0..{high}")
        lun = item["lun"]
        if lun not in volumes:
            raise ValueError(f"row for LUN {lun}, which no volume has")
        if not 0 < item["capacity"] <= volumes[lun].capacity:
            raise ValueError(f"LUN {lun}: capacity {item['capacity']} does not fit its volume "
                             f"of {volumes[lun].capacity} bytes")
        geometry(item["capacity"], item["track_size"])
        pair = Pair(lun, parse_wwn(item["partner_wwpn"]), item["partner_lun"], item["group"],
                    PairState(item["state"]), item["mode"], item["queue_limit"], item["role"],
                    item["capacity"], item["track_size"])
        pair.link_lost = bool(item.get("link_lost", False))
        pair.copies_completed = item["copies_completed"]
        return pair

    def _recover(self, pair: Pair) -> None:
        intent = self._intent.get(pair.lun)
        interrupted = intent is not None and bool(intent.any())
        if interrupted:
            pair.bitmap.words |= intent
            intent[:] = 0
        copying = pair.state in (PairState.INITIAL_COPYING, PairState.DUPLEX_PENDING)
        if pair.role == "source" and pair.state in REPLICATING and (interrupted or copying):
            before = pair.state
            pair.state = PairState.FAILURE_SUSPEND
            pair.link_lost = True
            pair.last_error = (f"restarted in {before.value} with "
                               f"{'writes' if interrupted else 'a copy'} under way; "
                               f"{pair.bitmap.popcount()} tracks to resync")
            _log.warn("{pair}: {why}: failure Suspend until the link to the edge is up",
                      pair=pair.name, why=pair.last_error)

    # -- rows ------------------------------------------------------------------------------
    def attach(self, pair: Pair, fresh: bool = True) -> None:
        """Back ``pair``'s bitmap (and a source's intent bitmap) by its files; ``fresh``: the
        row is new, its files start from the bitmap it has now."""
        if self._mapped.get(pair.lun) is not None and pair.bitmap.words is self._mapped[pair.lun]:
            return
        _, word_count = geometry(pair.capacity, pair.track_size)
        words = _words_file(self._file(pair.lun, "bitmap"), word_count, fresh)
        if fresh:
            words[:] = pair.bitmap.words
        pair.bitmap = DifferentialBitmap(pair.capacity, pair.track_size, words)
        self._mapped[pair.lun] = words
        self._intent[pair.lun] = _words_file(self._file(pair.lun, "intent"), word_count, fresh)
        self._in_flight[pair.lun] = {}

    def save(self, table: PairTable) -> None:
        rows = [{"lun": p.lun, "role": p.role, "partner_wwpn": format_wwn(p.partner_wwpn),
                 "partner_lun": p.partner_lun, "group": p.group, "state": p.state.value,
                 "mode": p.mode, "queue_limit": p.queue_limit, "capacity": p.capacity,
                 "track_size": p.track_size, "link_lost": p.link_lost,
                 "copies_completed": p.copies_completed} for p in table]
        for pair in table:
            self.attach(pair)
        for lun in [lun for lun in self._mapped if table.for_lun(lun) is None]:
            self._forget(lun)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": VERSION, "rows": rows}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _forget(self, lun: int) -> None:
        for mapping in (self._mapped, self._intent, self._in_flight):
            mapping.pop(lun, None)
        for kind in ("bitmap", "intent"):
            try:
                os.unlink(self._file(lun, kind))
            except FileNotFoundError:
                pass

    def _file(self, lun: int, kind: str) -> str:
        return os.path.join(self.directory, f"lun{lun}.{kind}")

    # -- write intent ------------------------------------------------------------------------
    def intend(self, pair: Pair, offset: int, length: int) -> tuple[int, int] | None:
        """Mark the tracks a replicated write is about to change; the span to :meth:`done`."""
        intent = self._intent.get(pair.lun)
        end = min(offset + length, pair.capacity)
        if intent is None or length <= 0 or offset >= end:
            return None
        first, last = offset // pair.track_size, (end - 1) // pair.track_size
        counts = self._in_flight[pair.lun]
        for track in range(first, last + 1):
            if not counts.get(track):
                intent[track >> 6] |= np.uint64(1 << (track & 63))
            counts[track] = counts.get(track, 0) + 1
        return first, last

    def done(self, pair: Pair, span: tuple[int, int] | None) -> None:
        """The partner has the write (or 1211 has it): its tracks need no resync for it."""
        intent = self._intent.get(pair.lun)
        if span is None or intent is None:
            return
        counts = self._in_flight[pair.lun]
        for track in range(span[0], span[1] + 1):
            left = counts.get(track, 0) - 1
            if left > 0:
                counts[track] = left
                continue
            counts.pop(track, None)
            intent[track >> 6] &= np.uint64(~(1 << (track & 63)) & 0xFFFFFFFFFFFFFFFF)

    def flush(self) -> None:
        """Make every bitmap durable on the disk (the host asked for a flush)."""
        for words in (*self._mapped.values(), *self._intent.values()):
            base = words.base
            while base is not None and not isinstance(base, np.memmap):
                base = base.base
            if base is not None:
                base.flush()
