"""The edge's NBD front end (DESIGN.md 3.2): a virtual volume replicated through the RCN.

An edge may export virtual volumes over NBD (fixed newstyle, served by
:class:`rcn.nbd.server.NbdServerFactory`), so any NBD-speaking storage or
virtualisation layer replicates through the RCN with no FC stack. Each
:class:`VirtualVolumeExport` is bound to an edge's :class:`~rcn.edge.source.SourceSide`
and a :class:`~rcn.edge.pairs.PairEntry` whose ``source_wwn`` names the NBD
volume as the source storage. There is no local copy: the volume lives on the
target storage, and the edge's log storage area holds what is on its way there.

* **WRITE** takes exactly the log path of an FCIP array's WR (3.1): it is cut
  into WRITE(16) entries of at most 1 MiB (:data:`MAX_ENTRY_BYTES`), each
  logged with :meth:`SourceSide.write` (the group's next sequence), and the NBD
  request completes when every entry is GOOD -- durable in the log storage
  area. FUA needs nothing more (GOOD already means durable); the FUA bit is
  passed on in the CDB so the target storage writes through as well.
* **TRIM** and **WRITE_ZEROES** are written as zeroes through the same path
  (as the storage emulator sends them), at most :data:`ZERO_WINDOW` entries
  of one request in flight at a time, so a whole-disk discard cannot flood
  the log storage area's queue of appends waiting for quota.
* **FLUSH** completes when every write, TRIM and WRITE_ZEROES in progress on
  this export when the FLUSH arrived has completed. (A write already answered
  is durable, so nothing else is needed; a write that failed reported its own
  error, and the FLUSH does not repeat it.) One FLUSH covers the writes of
  every connection to the export, so the export advertises
  ``NBD_FLAG_CAN_MULTI_CONN``.
* **READ** is a CTRL entry carrying READ(16) (:meth:`SourceSide.control`): it
  takes the group's next sequence, so the target edge runs it only after every
  earlier write of the group is applied -- the answer is a prefix-consistent
  view that includes every write issued before the read. Reads longer than
  1 MiB are split. No answer within ``read_timeout`` seconds for the whole
  request: NBD_EIO ("target not reachable through the RCN"); the CTRL entry
  stays in the log and runs when the target answers, the late answer is
  dropped.

Block sizes: requests must be whole 512-byte blocks (the edge logs WRITE(16)
of whole blocks). The export advertises minimum 512 and preferred 4096 through
``NBD_INFO_BLOCK_SIZE`` (``min_block_size``; the server refuses misaligned
requests with NBD_EINVAL before they reach the export, and the export checks
again for any other caller). Clients such as qemu do read-modify-write for
unaligned requests, which works because reads are served.

Errors the client sees (each logged with its reason, the first
:data:`LOG_FIRST` of an export and then one in :data:`LOG_EVERY`, and counted):

======================================  ============================
what happened                           NBD error
======================================  ============================
not whole 512-byte blocks, past the end NBD_EINVAL (past the end of
                                        a write: NBD_ENOSPC)
log storage area full (the edge         NBD_ENOSPC for writes, TRIM
answered BUSY: quota full and too many  and WRITE_ZEROES; NBD_EIO for
appends already waiting)                reads
any other non-GOOD answer, or the       NBD_EIO
edge failed to log the entry
read: no answer in ``read_timeout``     NBD_EIO
read: CHECK CONDITION from the target   NBD_EIO (sense in the log)
======================================  ============================

Why ENOSPC for a full log: it is the one error NBD clients treat as "try
again later" rather than as a broken disk. qemu's default ``werror=enospc``
pauses the guest on ENOSPC and lets the operator resume it once the log has
drained; any other error would be reported to the guest as a failed write.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from datapath.frames import fcp
from datapath.frames.names import format_wwn
from rcn.edge.pairs import PairEntry
from rcn.nbd import protocol as P
from rcn.nbd.export import Export, NbdError
from rcn.rio.fcp import ScsiResult, build_write16_cdb, parse_sense

__all__ = ["BLOCK_SIZE", "MAX_ENTRY_BYTES", "PREFERRED_BLOCK_SIZE", "VirtualVolumeExport",
           "COUNTER_NAMES"]

_log = Logger()

BLOCK_SIZE = fcp.BLOCK_SIZE            # 512: requests must be whole blocks
PREFERRED_BLOCK_SIZE = 4096
MAX_ENTRY_BYTES = 1 << 20              # the largest WRITE(16) / READ(16) one entry carries
ZERO_WINDOW = 16                       # zero-writing entries of one request in flight
LOG_FIRST = 10
LOG_EVERY = 1000

_ORDERED = int(fcp.TaskAttribute.ORDERED)
_BUSY = int(fcp.ScsiStatus.BUSY)
_ZEROES = memoryview(bytes(MAX_ENTRY_BYTES))

#: the per-export figures (``counters``), all monotonic
COUNTER_NAMES = ("reads", "read_bytes", "writes", "write_bytes", "flushes", "trims",
                 "write_zeroes", "zeroed_bytes", "entries_logged", "read_entries", "errors",
                 "unaligned", "log_full", "read_timeouts", "late_answers")


def _status_text(result: ScsiResult) -> str:
    try:
        status = fcp.ScsiStatus(result.status).name
    except ValueError:
        status = f"0x{result.status:02x}"
    if result.sense:
        key, asc, ascq = parse_sense(result.sense)
        return f"status {status}, sense key 0x{key:x} ASC/ASCQ 0x{asc:02x}/0x{ascq:02x}"
    return f"status {status}"


class VirtualVolumeExport(Export):
    """One NBD volume of an edge; see the module doc.

    ``source``: the edge's :class:`~rcn.edge.source.SourceSide` (``write`` and ``control``);
    ``pair``: the volume's row of the pair table (source = this volume);
    ``clock``: ``callLater`` for the read timeout.
    """

    read_only = False
    block_size = BLOCK_SIZE
    min_block_size = BLOCK_SIZE
    can_multi_conn = True      # FLUSH waits for the writes of every connection

    def __init__(self, source, pair: PairEntry, name: str, capacity: int, clock,
                 read_timeout: float = 10.0, description: str = ""):
        if capacity <= 0 or capacity % BLOCK_SIZE:
            raise ValueError(f"NBD volume {name!r}: capacity {capacity} is not a positive "
                             f"multiple of {BLOCK_SIZE} bytes")
        if not read_timeout > 0:
            raise ValueError(f"NBD volume {name!r}: read_timeout {read_timeout} must be positive")
        self.source = source
        self.pair = pair
        self.name = name
        self.size = capacity
        self.clock = clock
        self.read_timeout = read_timeout
        self.description = description or (
            f"RCN volume: {format_wwn(pair.source_wwn)} LUN {pair.source_lun} -> "
            f"{format_wwn(pair.target_wwn)} LUN {pair.target_lun}, group {pair.group}")
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._writing: set[Deferred] = set()   # one per write-type request in progress
        self._ox_id = 0

    # -- the Export interface --------------------------------------------------------
    def write(self, offset: int, data, fua: bool):
        length = len(data)
        self._check("WRITE", offset, length, P.ENOSPC)
        self.counters["writes"] += 1
        self.counters["write_bytes"] += length
        if not length:
            return None
        view = memoryview(data)
        entries = [self._log_write(offset + at, view[at:at + MAX_ENTRY_BYTES], fua)
                   for at in range(0, length, MAX_ENTRY_BYTES)]
        done = DeferredList(entries, consumeErrors=True).addCallback(_first_failure)
        return self._track(done, "WRITE", offset, length)

    def trim(self, offset: int, length: int):
        self._check("TRIM", offset, length, P.EINVAL)
        self.counters["trims"] += 1
        return self._zeroes("TRIM", offset, length)

    def write_zeroes(self, offset: int, length: int, may_trim: bool):
        self._check("WRITE_ZEROES", offset, length, P.ENOSPC)
        self.counters["write_zeroes"] += 1
        return self._zeroes("WRITE_ZEROES", offset, length)

    def flush(self):
        self.counters["flushes"] += 1
        pending = list(self._writing)
        if not pending:
            return None
        return DeferredList(pending).addCallback(lambda _: None)

    def read(self, offset: int, length: int):
        self._check("READ", offset, length, P.EINVAL)
        self.counters["reads"] += 1
        self.counters["read_bytes"] += length
        if not length:
            return b""
        return _Read(self, offset, length).start()

    # -- writes ----------------------------------------------------------------------
    def _log_write(self, offset: int, data, fua: bool) -> Deferred:
        """One WRITE(16) entry; fires None once GOOD (durable), fails with NbdError."""
        lba, blocks = offset // BLOCK_SIZE, len(data) // BLOCK_SIZE
        cdb = build_write16_cdb(lba, blocks, fua)
        self.counters["entries_logged"] += 1
        d = maybeDeferred(self.source.write, self.pair, cdb, data, _ORDERED, self._ids())
        return d.addCallbacks(self._written, self._not_logged, (offset, len(data)), None,
                              ("WRITE(16)", offset, len(data)), None)

    def _written(self, result: ScsiResult, offset: int, length: int) -> None:
        if result.good:
            return None
        if result.status == _BUSY:
            self.counters["log_full"] += 1
            raise self._error(P.ENOSPC, f"WRITE(16) of {length} bytes at offset {offset}: the "
                                        f"edge's log storage area is full for group "
                                        f"{self.pair.group} (BUSY); retry once it drains")
        raise self._error(P.EIO, f"WRITE(16) of {length} bytes at offset {offset}: the edge "
                                 f"answered {_status_text(result)}")

    def _not_logged(self, failure: Failure, what: str, offset: int, length: int):
        if failure.check(NbdError):
            return failure
        raise self._error(P.EIO, f"{what} of {length} bytes at offset {offset} could not be "
                                 f"logged: {failure.getErrorMessage()}")

    def _zeroes(self, what: str, offset: int, length: int):
        self.counters["zeroed_bytes"] += length
        if not length:
            return None
        return self._track(_Zeroing(self, offset, length).start(), what, offset, length)

    def _track(self, done: Deferred, what: str, offset: int, length: int) -> Deferred:
        """Remember a write-type request until it completes (FLUSH waits for it)."""
        settled = Deferred()
        self._writing.add(settled)

        def finished(result):
            self._writing.discard(settled)
            settled.callback(None)
            return result
        return done.addBoth(finished)

    # -- helpers -------------------------------------------------------------------
    def _check(self, what: str, offset: int, length: int, past_end: int) -> None:
        if offset % BLOCK_SIZE or length % BLOCK_SIZE:
            self.counters["unaligned"] += 1
            raise self._error(P.EINVAL, f"{what} at offset {offset} length {length} is not "
                                        f"whole {BLOCK_SIZE}-byte blocks; the edge logs whole "
                                        f"blocks (NBD_INFO_BLOCK_SIZE minimum {BLOCK_SIZE})")
        if offset < 0 or offset + length > self.size:
            raise self._error(past_end, f"{what} at offset {offset} length {length} ends past "
                                        f"the volume's {self.size} bytes")

    def _error(self, code: int, reason: str) -> NbdError:
        """Count and log an error the client will see; the NbdError to raise."""
        self.counters["errors"] += 1
        n = self.counters["errors"]
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            _log.warn("NBD volume {name!r} (group {group}): {code}: {reason} ({n} errors so far)",
                      name=self.name, group=self.pair.group, code=P.ERROR_NAMES.get(code, code),
                      reason=reason, n=n)
        return NbdError(code, f"volume {self.name!r}: {reason}")

    def _ids(self) -> tuple[int, int, int]:
        self._ox_id = (self._ox_id + 1) & 0xFFFF
        return 0, 0, self._ox_id

    @property
    def pending_writes(self) -> int:
        return len(self._writing)

    def describe(self) -> dict:
        pair = self.pair
        return {"name": self.name, "size": self.size, "group": pair.group,
                "customer": pair.customer, "source_wwn": format_wwn(pair.source_wwn),
                "source_lun": pair.source_lun, "target_wwn": format_wwn(pair.target_wwn),
                "target_lun": pair.target_lun, "read_timeout_s": self.read_timeout,
                "pending_writes": self.pending_writes, **self.counters}

    def __repr__(self) -> str:
        return (f"<VirtualVolumeExport {self.name!r} {self.size} bytes -> "
                f"{format_wwn(self.pair.target_wwn)} LUN {self.pair.target_lun}>")


def _first_failure(results):
    """DeferredList results -> None, or the first failure (re-raised)."""
    for ok, value in results:
        if not ok:
            return value
    return None


class _Zeroing:
    """Zeroes for a TRIM or WRITE_ZEROES: 1 MiB entries, ``ZERO_WINDOW`` in flight.
    The first failure stops new entries; the request ends when none is in flight."""

    def __init__(self, export: VirtualVolumeExport, offset: int, length: int):
        self.export = export
        self.next = offset
        self.end = offset + length
        self.in_flight = 0
        self.failure: Failure | None = None
        self.done = Deferred()
        self._issuing = False

    def start(self) -> Deferred:
        self._issue()
        return self.done

    def _issue(self) -> None:
        if self._issuing:
            return                 # an entry answered at once: the loop below goes on
        self._issuing = True
        try:
            while self.failure is None and self.next < self.end and self.in_flight < ZERO_WINDOW:
                size = min(MAX_ENTRY_BYTES, self.end - self.next)
                offset, self.next = self.next, self.next + size
                self.in_flight += 1
                self.export._log_write(offset, _ZEROES[:size], False).addBoth(self._answered)
        finally:
            self._issuing = False
        if self.in_flight == 0 and not self.done.called:
            if self.failure is not None:
                self.done.errback(self.failure)
            else:
                self.done.callback(None)

    def _answered(self, result) -> None:
        self.in_flight -= 1
        if isinstance(result, Failure) and self.failure is None:
            self.failure = result
        self._issue()


class _Read:
    """One NBD READ: READ(16) CTRL entries of at most 1 MiB, one timeout for all."""

    def __init__(self, export: VirtualVolumeExport, offset: int, length: int):
        self.export = export
        self.offset = offset
        self.length = length
        self.parts: list[bytes | None] = []
        self.waiting = 0
        self.answer = Deferred()
        self.timer = None

    def start(self) -> Deferred:
        export = self.export
        pair = export.pair
        at = 0
        chunks = []
        while at < self.length:
            size = min(MAX_ENTRY_BYTES, self.length - at)
            chunks.append((self.offset + at, size))
            at += size
        self.parts = [None] * len(chunks)
        self.waiting = len(chunks)
        self.timer = export.clock.callLater(export.read_timeout, self._timed_out)
        for index, (offset, size) in enumerate(chunks):
            if self.answer.called:
                break              # an earlier piece failed at once: do not log more
            cdb = fcp.build_read16(offset // BLOCK_SIZE, size // BLOCK_SIZE)
            export.counters["read_entries"] += 1
            d = maybeDeferred(export.source.control, pair, pair.group, cdb, b"", size, _ORDERED,
                              export._ids())
            d.addCallbacks(self._answered, self._failed, (index, offset, size), None,
                           (offset, size), None)
        return self.answer

    def _answered(self, result: ScsiResult, index: int, offset: int, size: int) -> None:
        export = self.export
        if self.answer.called:
            export.counters["late_answers"] += 1
            return
        if not result.good:
            if result.status == _BUSY:
                export.counters["log_full"] += 1
                why = (f"the edge's log storage area is full for group {export.pair.group} "
                       f"(BUSY): the read could not be queued behind the group's writes")
            else:
                why = f"the target answered {_status_text(result)}"
            self._fail(P.EIO, f"READ(16) of {size} bytes at offset {offset}: {why}")
            return
        if len(result.data_in) != size:
            self._fail(P.EIO, f"READ(16) of {size} bytes at offset {offset}: the target "
                              f"returned {len(result.data_in)} bytes")
            return
        self.parts[index] = result.data_in
        self.waiting -= 1
        if self.waiting == 0:
            self._cancel_timer()
            self.answer.callback(self.parts[0] if len(self.parts) == 1 else b"".join(self.parts))

    def _failed(self, failure: Failure, offset: int, size: int) -> None:
        if self.answer.called:
            self.export.counters["late_answers"] += 1
            return
        self._fail(P.EIO, f"READ(16) of {size} bytes at offset {offset} could not be sent: "
                          f"{failure.getErrorMessage()}")

    def _timed_out(self) -> None:
        self.timer = None
        if self.answer.called:
            return
        export = self.export
        export.counters["read_timeouts"] += 1
        self._fail(P.EIO, f"READ of {self.length} bytes at offset {self.offset}: no answer "
                          f"within {export.read_timeout} s: target not reachable through the "
                          f"RCN (the path to {format_wwn(export.pair.target_wwn)}, its edge or "
                          f"the storage behind it); the read stays queued in group "
                          f"{export.pair.group} and runs when the target answers")

    def _fail(self, code: int, reason: str) -> None:
        self._cancel_timer()
        self.answer.errback(self.export._error(code, reason))

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
