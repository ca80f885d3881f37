"""Stamped blocks, the workload's journal, and the checks of DESIGN.md's invariant 1.

A bench workload (:mod:`rcn.bench.workload`) writes whole *stamped blocks*: each says
which run and which write it is, where it belongs and when it was issued, so the
target volume can be read back and judged without a copy of the source:

* a 40-byte header ``STAMP_HEADER`` = magic ``b"RCNSTAMP"``, run id (u64), write index
  (u64, 1-based in issue order), byte offset (u64), issued_at (f64, the workload's
  ``time.monotonic()``, system-wide on Linux);
* the rest of the block: one 8-byte value, ``splitmix64(run_id ^ index)``, repeated.

The workload also keeps a journal, one ``JOURNAL_RECORD`` per completed write (index,
offset, issued_at, completed_at, ok) after a ``JOURNAL_HEADER``.

:func:`check_prefix` (mid-run) and :func:`check_final` (after drain) read the target's
volume file with plain reads and decode it with numpy, a region of 256 MiB of 4 KiB
blocks in a fraction of a second.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"RCNSTAMP"
STAMP_HEADER = struct.Struct("<8sQQQd")         # magic, run_id, index, offset, issued_at
FILL = struct.Struct("<Q")
JOURNAL_MAGIC = b"RCNJRNL1"
JOURNAL_VERSION = 1
JOURNAL_HEADER = struct.Struct("<8sQII8x")      # magic, run_id, block, version
JOURNAL_RECORD = struct.Struct("<QQddB")        # index, offset, issued_at, completed_at, ok
JOURNAL_DTYPE = np.dtype([("index", "<u8"), ("offset", "<u8"), ("issued_at", "<f8"),
                          ("completed_at", "<f8"), ("ok", "u1")])
assert JOURNAL_DTYPE.itemsize == JOURNAL_RECORD.size

# decoded block states
INITIAL, STAMPED, TORN = 0, 1, 2

MAX_VIOLATIONS = 20          # kept in a CheckResult; the rest are only counted
PHANTOM_AGE = 30.0           # seconds: an unknown stamp older than this is not in flight
READ_CHUNK = 32 << 20        # bytes per file read while scanning
REREADS = 3                  # a torn block is read again this often (the target may be
                             # writing it while we read) before it counts as torn

_MASK = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MAGIC_WORD = np.frombuffer(MAGIC, "<u8")[0]


class ConsistencyError(ValueError):
    """The check cannot run: a bad region, a short file, a journal that is not one."""


# -- stamps ----------------------------------------------------------------------------------

def splitmix64(x: int) -> int:
    z = (x + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype("<u8") + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def check_block_size(block: int) -> int:
    if not isinstance(block, int) or block < 512 or block % 512:
        raise ConsistencyError(f"block {block!r}: must be a multiple of 512, at least 512")
    return block


def stamp(run_id: int, index: int, offset: int, issued_at: float, block: int) -> bytes:
    """The ``block`` bytes of write ``index`` of run ``run_id`` at ``offset``."""
    header = STAMP_HEADER.pack(MAGIC, run_id, index, offset, issued_at)
    return header + FILL.pack(splitmix64(run_id ^ index)) * ((block - STAMP_HEADER.size) // 8)


@dataclass
class Decoded:
    """Per block of a region: ``state`` (INITIAL/STAMPED/TORN), and for STAMPED blocks the
    write ``index`` and its ``issued_at`` (0 and NaN otherwise)."""
    state: np.ndarray
    index: np.ndarray
    issued_at: np.ndarray


def decode_blocks(data, block: int, run_id: int, first_offset: int) -> Decoded:
    """Decode a bytes-like holding whole blocks, the first at byte ``first_offset``."""
    check_block_size(block)
    words = np.frombuffer(data, dtype="<u8")
    if words.size * 8 % block:
        raise ConsistencyError(f"{words.size * 8} bytes is not a whole number of "
                               f"{block}-byte blocks")
    words = words.reshape(-1, block // 8)
    n = words.shape[0]
    ours = (words[:, 0] == _MAGIC_WORD) & (words[:, 1] == np.uint64(run_id))
    index = words[:, 2]
    expected_offset = np.uint64(first_offset) + np.arange(n, dtype="<u8") * np.uint64(block)
    body_ok = (words[:, 5:] == _splitmix64_array(np.uint64(run_id) ^ index)[:, None]).all(axis=1)
    stamped = ours & body_ok & (words[:, 3] == expected_offset) & (index >= 1)
    state = np.where(ours, np.where(stamped, STAMPED, TORN), INITIAL).astype(np.uint8)
    return Decoded(state=state, index=np.where(stamped, index, 0).astype("<u8"),
                   issued_at=np.where(stamped, words[:, 4].view("<f8"), np.nan))


def scan_file(path, run_id: int, block: int, region_offset: int, region_length: int
              ) -> tuple[Decoded, np.ndarray]:
    """Decode a region of a volume file in ascending order, in bounded chunks.

    Returns the decoded blocks and a mask of the blocks that were read again because they
    looked torn: the target may have been writing them as we read (a live volume is no
    snapshot), so a torn look is read up to ``REREADS`` more times before it stands.
    """
    check_block_size(block)
    if region_offset < 0 or region_offset % block or region_length <= 0 or region_length % block:
        raise ConsistencyError(f"region {region_offset}:{region_length}: offset and length "
                               f"must be multiples of the {block}-byte block, length positive")
    n = region_length // block
    state = np.empty(n, np.uint8)
    index = np.empty(n, "<u8")
    issued = np.empty(n, "<f8")
    per_chunk = max(1, READ_CHUNK // block)
    buffer = bytearray(min(n, per_chunk) * block)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < region_offset + region_length:
            raise ConsistencyError(f"{path}: {size} bytes, the region ends at byte "
                                   f"{region_offset + region_length}")
        for first in range(0, n, per_chunk):
            count = min(per_chunk, n - first)
            view = memoryview(buffer)[:count * block]
            offset = region_offset + first * block
            f.seek(offset)
            if f.readinto(view) != len(view):
                raise ConsistencyError(f"{path}: short read at byte {offset}")
            part = decode_blocks(view, block, run_id, offset)
            state[first:first + count] = part.state
            index[first:first + count] = part.index
            issued[first:first + count] = part.issued_at
            view.release()
        reread = state == TORN
        for k in np.flatnonzero(reread):
            offset = region_offset + int(k) * block
            for _ in range(REREADS):
                again = decode_blocks(os.pread(f.fileno(), block, offset), block, run_id, offset)
                state[k], index[k], issued[k] = again.state[0], again.index[0], again.issued_at[0]
                if state[k] != TORN:
                    break
    return Decoded(state, index, issued), reread


# -- the journal ---------------------------------------------------------------------------

@dataclass
class Journal:
    """A workload's journal: one entry per completed write, in completion order."""
    run_id: int
    block: int
    index: np.ndarray
    offset: np.ndarray
    issued_at: np.ndarray
    completed_at: np.ndarray
    ok: np.ndarray                # bool: acknowledged


def journal_header(run_id: int, block: int) -> bytes:
    return JOURNAL_HEADER.pack(JOURNAL_MAGIC, run_id, block, JOURNAL_VERSION)


def read_journal(path) -> Journal:
    """Read a journal; a truncated final record (the writer may be mid-write) is ignored."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < JOURNAL_HEADER.size:
        raise ConsistencyError(f"{path}: {len(data)} bytes, shorter than a journal header")
    magic, run_id, block, version = JOURNAL_HEADER.unpack_from(data)
    if magic != JOURNAL_MAGIC:
        raise ConsistencyError(f"{path}: magic {magic!r} is not {JOURNAL_MAGIC!r}")
    if version != JOURNAL_VERSION:
        raise ConsistencyError(f"{path}: journal version {version}, only "
                               f"{JOURNAL_VERSION} is known")
    check_block_size(block)
    body = memoryview(data)[JOURNAL_HEADER.size:]
    whole = len(body) // JOURNAL_RECORD.size * JOURNAL_RECORD.size
    records = np.frombuffer(body[:whole], dtype=JOURNAL_DTYPE)
    return Journal(run_id=run_id, block=block, index=records["index"].copy(),
                   offset=records["offset"].copy(), issued_at=records["issued_at"].copy(),
                   completed_at=records["completed_at"].copy(), ok=records["ok"] == 1)


# -- the checks ----------------------------------------------------------------------------

@dataclass
class CheckResult:
    ok: bool
    summary: str                              # one line for a table
    violations: list[str] = field(default_factory=list)   # the first MAX_VIOLATIONS
    violation_count: int = 0
    figures: dict = field(default_factory=dict)   # blocks, stamped, torn, missing, cut_time


class _Violations:
    def __init__(self):
        self.kept: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_VIOLATIONS:
            self.kept.append(text)


def _region_writes(journal: Journal, region_offset: int, region_length: int):
    """The journal's writes inside the region, with their block numbers."""
    inside = ((journal.offset >= region_offset)
              & (journal.offset < region_offset + region_length))
    blocks = ((journal.offset[inside] - np.uint64(region_offset)) // np.uint64(journal.block)
              ).astype(np.int64)
    return inside, blocks


def _torn(decoded: Decoded, region_offset: int, block: int, violations: _Violations) -> int:
    torn = np.flatnonzero(decoded.state == TORN)
    for k in torn[:MAX_VIOLATIONS]:
        violations.add(f"block at offset {region_offset + int(k) * block} is torn: this run's "
                       f"stamp header, but its body, offset or index is wrong")
    violations.count += max(0, len(torn) - MAX_VIOLATIONS)
    return len(torn)


def _result(violations: _Violations, summary: str, figures: dict) -> CheckResult:
    if violations.count:
        summary += f"; {violations.count:,} violation{'s' if violations.count != 1 else ''}"
    return CheckResult(ok=violations.count == 0, summary=summary, violations=violations.kept,
                       violation_count=violations.count, figures=figures)


def check_prefix(journal, target_path, region_offset: int, region_length: int,
                 live: bool = True) -> CheckResult:
    """Dependent-write consistency of the target's region at one moment (mid-run).

    Let t* be the latest issue time among the region's STAMPED blocks (read from the
    blocks: a write still in flight at the workload can already be on the target). Every
    write the journal shows acknowledged before t* must be visible or overwritten (its
    block STAMPED with an index >= its own): nothing a host could have made depend on a
    write the target lacks may be applied without it. TORN blocks, and stamps the journal
    does not know that were issued more than PHANTOM_AGE before its last completion
    (phantoms), are violations too.

    With ``live`` (the default) the target file is taken to change while it is read, so
    blocks read later may show a later state: a write is then only required by the
    stamps read no later than its own block (a running maximum of issued_at in ascending
    offset order), which keeps the check sound on a live volume; blocks read again after
    looking torn (so later) require nothing. ``live=False`` is for a file that holds
    still (a copy, a stopped target): every stamp requires, t* is the global maximum.

    ``journal`` is a :class:`Journal` or a path; a path is read after the target scan, so
    every write acknowledged before t* is in it (the strongest check mid-run).
    """
    run_id, block = _run_and_block(journal)
    decoded, reread = scan_file(target_path, run_id, block, region_offset, region_length)
    if not isinstance(journal, Journal):
        journal = read_journal(journal)
    violations = _Violations()
    n = len(decoded.state)
    stamped = decoded.state == STAMPED
    torn = _torn(decoded, region_offset, block, violations)
    running, holder = _latest_issue(decoded, stamped, reread, live)
    cut_time = float(decoded.issued_at[stamped].max()) if stamped.any() else None
    required, missing_count = _missing(journal, decoded, stamped, running, holder,
                                       region_offset, region_length, violations)
    phantoms = _phantoms(journal, decoded, stamped, region_offset, block, violations)

    figures = {"blocks": n, "stamped": int(stamped.sum()), "torn": torn,
               "missing": missing_count, "phantoms": phantoms, "cut_time": cut_time,
               "required": required, "reread": int(reread.sum())}
    cut = "-" if cut_time is None else f"{cut_time:.3f}"
    summary = (f"{n:,} blocks, {figures['required'] - missing_count:,} of "
               f"{figures['required']:,} writes acked before issue time {cut} visible; "
               f"{missing_count:,} missing, {torn:,} torn")
    return _result(violations, summary, figures)


def _run_and_block(journal) -> tuple[int, int]:
    """A journal's run id and block size; from a path, only its header is read (the rest is
    read after the target scan)."""
    if isinstance(journal, Journal):
        return journal.run_id, journal.block
    with open(journal, "rb") as f:
        head = f.read(JOURNAL_HEADER.size)
    if len(head) < JOURNAL_HEADER.size or head[:8] != JOURNAL_MAGIC:
        raise ConsistencyError(f"{journal}: not a workload journal")
    _, run_id, block, _ = JOURNAL_HEADER.unpack(head)
    return run_id, block


def _latest_issue(decoded: Decoded, stamped, reread, live: bool):
    """Per block: the latest issue time a write must precede to be required (running in
    read order when ``live``, else the global maximum), and the block holding it."""
    n = len(decoded.state)
    issued = np.where(stamped & ~reread, decoded.issued_at, -np.inf)
    if live:
        running = np.maximum.accumulate(issued)
        holder = np.maximum.accumulate(np.where(issued == running, np.arange(n), 0))
    else:
        issued = np.where(stamped, decoded.issued_at, -np.inf)
        running = np.full(n, issued.max())
        holder = np.full(n, int(issued.argmax()))
    return running, holder


def _missing(journal: Journal, decoded: Decoded, stamped, running, holder,
             region_offset: int, region_length: int,
             violations: _Violations) -> tuple[int, int]:
    """Acknowledged writes required by a later stamp yet not visible: (required, missing)."""
    block = journal.block
    inside, blocks = _region_writes(journal, region_offset, region_length)
    acked = journal.ok[inside]
    w_index, w_done = journal.index[inside][acked], journal.completed_at[inside][acked]
    w_block = blocks[acked]
    # (the write's own block never needs to count: a stamp there issued after write i
    # was acked is a later write to that block, which overwrote it)
    required = w_done < running[w_block]
    shown = decoded.index[w_block]
    missing = required & ~(stamped[w_block] & (shown >= w_index))
    for i in np.flatnonzero(missing)[:MAX_VIOLATIONS]:
        k = int(w_block[i])
        j = int(holder[k])
        violations.add(
            f"write {int(w_index[i])} (offset {region_offset + k * block}, acked at "
            f"{w_done[i]:.6f}) is missing from the target, yet write {int(decoded.index[j])} "
            f"(offset {region_offset + j * block}, issued at {decoded.issued_at[j]:.6f}) "
            f"is there")
    missing_count = int(missing.sum())
    violations.count += max(0, missing_count - MAX_VIOLATIONS)
    return int(required.sum()), missing_count


def _phantoms(journal: Journal, decoded: Decoded, stamped, region_offset: int, block: int,
              violations: _Violations) -> int:
    """Stamps the journal does not know, issued long before its last completion."""
    if not stamped.any():
        return 0
    known = np.isin(decoded.index, journal.index)
    last_completion = float(journal.completed_at.max()) if journal.completed_at.size else None
    if last_completion is None:
        return 0
    phantom = stamped & ~known & (decoded.issued_at < last_completion - PHANTOM_AGE)
    phantoms = int(phantom.sum())
    for k in np.flatnonzero(phantom)[:MAX_VIOLATIONS]:
        violations.add(
            f"block at offset {region_offset + int(k) * block} holds write "
            f"{int(decoded.index[k])} issued at {decoded.issued_at[k]:.6f}, which the "
            f"journal does not know although it ends at {last_completion:.6f} (a "
            f"phantom)")
    violations.count += max(0, phantoms - MAX_VIOLATIONS)
    return phantoms


def check_final(journal, target_path, region_offset: int, region_length: int) -> CheckResult:
    """After drain: each block shows the last acknowledged write to it (by index), or a
    failed write issued after it (a failed write may or may not have landed); blocks no
    acknowledged write touched are INITIAL or show one of their failed writes."""
    if not isinstance(journal, Journal):
        journal = read_journal(journal)
    block = journal.block
    decoded, _ = scan_file(target_path, journal.run_id, block, region_offset, region_length)
    violations = _Violations()
    n = len(decoded.state)
    stamped = decoded.state == STAMPED
    torn = _torn(decoded, region_offset, block, violations)

    inside, blocks = _region_writes(journal, region_offset, region_length)
    index, ok = journal.index[inside], journal.ok[inside]
    expected = np.zeros(n, "<u8")
    np.maximum.at(expected, blocks[ok], index[ok])
    good = ((stamped & (decoded.index == expected))
            | ((decoded.state == INITIAL) & (expected == 0)))
    failed = {int(i): int(b) for i, b in zip(index[~ok], blocks[~ok])}
    missing = 0
    for k in np.flatnonzero(~good & (decoded.state != TORN)):
        want, shown = int(expected[k]), int(decoded.index[k])
        if stamped[k] and failed.get(shown) == k and shown > want:
            continue            # a failed write that landed after the last acked one
        where = f"block at offset {region_offset + int(k) * block}"
        if want:
            missing += 1
            found = f"write {shown}" if stamped[k] else "no stamp of this run"
            violations.add(f"{where} shows {found}, but write {want} was the last acked to it")
        else:
            violations.add(f"{where} shows write {shown}, which no acked or failed write "
                           f"to it explains (it should be unwritten)")
    figures = {"blocks": n, "stamped": int(stamped.sum()), "torn": torn, "missing": missing,
               "cut_time": float(decoded.issued_at[stamped].max()) if stamped.any() else None,
               "written": int((expected > 0).sum())}
    summary = (f"{n:,} blocks, {figures['written'] - missing:,} of {figures['written']:,} "
               f"written blocks show their last acked write; {torn:,} torn")
    return _result(violations, summary, figures)


__all__ = ["MAGIC", "STAMP_HEADER", "JOURNAL_HEADER", "JOURNAL_RECORD", "INITIAL", "STAMPED",
           "TORN", "ConsistencyError", "Decoded", "Journal", "CheckResult", "stamp",
           "splitmix64", "decode_blocks", "scan_file", "journal_header", "read_journal",
           "check_prefix", "check_final"]
