"""The array's remote copy program: pair lifecycle, host write path, incoming RIOs.

One plain object, :class:`RemoteCopy`, with no sockets and no global reactor, so the
daemon (:mod:`rcn.storage.service`) and an in-process simulation drive it alike.
The contract it implements is ``docs/pairs.md``; states and events are
:mod:`rcn.pairstate`'s. It holds the pair table and what every part shares (an
event applied to a row, a control RIO sent, a WR that failed) and hands the rest
to its parts: :mod:`rcn.storage.copier` (initial copy and resync copy),
:mod:`rcn.storage.paircommands` (host commands, automatic resync),
:mod:`rcn.storage.hostwrite` (the host write path) and :mod:`rcn.storage.incoming`
(RIOs from the edge); :mod:`rcn.storage.copyerrors` holds the errors.

What it needs
-------------
``RemoteCopy(clock, session_for, volumes, pairs=None, *, track_size=65536,
copy_chunk=1 MiB, copy_window=8)``

* ``clock``: anything with ``seconds()`` (a reactor, ``task.Clock``); only for
  the timestamps of copy runs.
* ``session_for(partner_wwn) -> Deferred[session]``: a session to the partner's
  (virtual) storage through this array's edge, or a failure when there is no
  link. ``session.write(lun, lba, data, attribute, fua)`` and
  ``session.execute(lun, cdb, data_out, data_in_length, attribute)`` return
  ``Deferred[rcn.rio.fcp.ScsiResult]`` (:class:`rcn.rio.array.RioSession`).
* ``volumes``: ``{lun: volume}``; a volume has ``lun``, ``capacity``,
  ``block_size``, ``read(offset, length) -> bytes``, ``write(offset, data,
  fua=False)`` and, optionally, ``allocated_extents() -> [(offset, length)]``
  (without it the initial copy copies the whole volume).
* ``pairs``: a :class:`~rcn.storage.pairs.PairTable` (rows from the config).

What it offers
--------------
Host write path (the NBD export calls ``around_host_write`` with its local write):

* ``around_host_write(lun, offset, length, fua, apply)``: the three below in order,
  with the write's tracks marked in the pair's write-intent bitmap (``store``) from
  before ``apply()`` until the partner or 1211 has them;
* the check (``HostWrites._check``): ``HostWriteRefused`` (a ``VolumeError``
  with errno EPERM: NBD answers EPERM) for a target volume whose pair is not in
  simplex, suspend or failure-suspend;
* ``written(lun, offset, length, fua=False)``: after the local write; returns
  None, or a Deferred the host's reply must wait for (sync mode: the WROK;
  async mode: a place in the pair's bounded queue). Source pairs in
  initial-copying/duplex/duplex-pending send the written blocks as ORDERED RIO
  WRs (<= 1 MiB each); in suspending/suspend/failure-suspend they mark the
  bitmap (1211); a target in suspend/failure-suspend marks 1213. A failed or
  refused WR -> failure-suspend, and its blocks go into the bitmap.
* ``host_write(lun, offset, data, fua=False) -> Deferred``: ``around_host_write`` of a
  volume write.

Host commands, each ``-> Deferred[dict]`` (the pair as ``describe`` shows it);
a refusal fails it with :class:`rcn.pairstate.PairStateError` (this array's
state forbids it) or one of :mod:`rcn.storage.copyerrors`: ``PartnerRefused`` (the
answer's sense, explained), ``PartnerUnreachable`` (no link, timeout), ``NotFound``,
``BadRequest`` or ``Conflict`` (wrong role, another command running):

* ``pair_create(lun, partner_wwpn, partner_lun, mode="sync", group=0, queue_limit=1024)``:
  PAIR_CREATE; fires on ICOK, when the initial copy (every allocated extent,
  ``copy_window`` RIO WRs of <= ``copy_chunk`` in flight) has started; when the
  copy is done the pair sends DUPLEX and DOK makes it duplex;
* ``suspend(lun, fast=False)``: at a source, SUSPEND after suspending; at a
  target, failover (SUSPEND to its edge, FAST flag for the fast variant) -> a
  ``residual`` report in the answer when the edge sends one;
* ``resync(lun)``: RESYNC, merge DPOK's bitmap into 1211, copy only its tracks;
* ``takeover(lun)``: at a target, TAKEOVER -> failure-suspend and ``residual``;
* ``pair_delete(lun, local=False)``: DELETE (not with ``local``), drop the row;
* ``reverse(lun)``: local only: turn a suspended row round, keeping its bitmap.

Lookups: ``pairs`` (the table), ``describe_pairs()``, ``partners()`` (WWNs to log
in to).

RIO target side (:class:`rcn.storage.array.ArrayTarget` calls these):
``control_received(command) -> ScsiResult`` for RCN CONTROL, and
``admit_write(command) -> ScsiResult | None`` (None: apply the WRITE(16)).

Figures: ``counters`` (host write RIOs), ``control`` (control RIOs sent and
received), and per pair ``Pair.copy`` (the current or last copy run:
``bytes_total``, ``bytes_copied``, ``tracks``, ``outcome``), ``copies_completed``,
``bytes_copied_total``, ``last_error``, ``residual``. ``observers``: callables
``(pair, state_before, why)`` called after every event applied to a row.

How a copy keeps the bitmap right: :mod:`rcn.storage.copier`'s module doc.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.fcp import RcnServiceAction as Action
from datapath.frames.fcp import TaskAttribute
from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import DEFAULT_TRACK_SIZE
from rcn.pairstate import REPLICATING, Event, PairState, allows, explain
from rcn.rio.fcp import ScsiCommand, ScsiResult
from rcn.storage.copier import Copies
from rcn.storage.copyerrors import (NotFound, PartnerRefused, PartnerUnreachable,
                                    format_residual, residual_of)
from rcn.storage.hostwrite import HostWrites, ReplicationCounters
from rcn.storage.incoming import IncomingRio
from rcn.storage.paircommands import PairCommands
from rcn.storage.pairs import Pair, PairTable

__all__ = ["RemoteCopy"]

S = PairState
COPY_CHUNK = 1 << 20          # bytes per RIO WR (host writes and copies)
COPY_WINDOW = 8               # copy RIO WRs in flight per pair

_log = Logger()


def _control_counters() -> dict:
    return {"sent": 0, "good": 0, "refused": 0, "unreachable": 0, "received": 0,
            "received_refused": 0}


class RemoteCopy:
    """See the module docstring."""

    def __init__(self, clock, session_for, volumes: dict, pairs: PairTable | None = None, *,
                 track_size: int = DEFAULT_TRACK_SIZE, copy_chunk: int = COPY_CHUNK,
                 copy_window: int = COPY_WINDOW, auto_resync: bool = True, store=None):
        self.clock = clock
        self.auto_resync = auto_resync
        self.store = store            # a PairStore: rows and bitmaps on disk (None: memory)
        self.session_for = session_for
        self.volumes = volumes
        self.pairs = pairs if pairs is not None else PairTable()
        self.track_size = track_size
        self.copy_chunk = copy_chunk
        self.copy_window = copy_window
        self.counters = ReplicationCounters()
        self.control = _control_counters()
        self.known_partners: set[int] = set()
        #: callables ``(pair, state_before, why)`` told of every event applied (tests, sims)
        self.observers: list = []
        for pair in self.pairs:
            if pair.lun not in volumes:
                raise ValueError(f"{pair.name}: no volume has LUN {pair.lun}")
        # the parts, each given this object for what they share
        self.copies = Copies(self)
        self.commands = PairCommands(self)
        self.writes = HostWrites(self)
        self.incoming = IncomingRio(self)

    # -- lookups --------------------------------------------------------------------
    def partners(self) -> set[int]:
        """Every partner WWN to log in to: the rows', and those of every pair made since
        start (a target must still be reachable for a new PAIR_CREATE after a delete)."""
        return self.pairs.partners() | self.known_partners

    def describe(self, pair: Pair) -> dict:
        return pair.as_dict()

    def describe_pairs(self) -> list[dict]:
        return [self.describe(pair) for pair in self.pairs]

    def _volume(self, lun: int):
        volume = self.volumes.get(lun)
        if volume is None:
            raise NotFound(f"LUN {lun}: no such volume (LUNs: "
                           f"{', '.join(str(n) for n in sorted(self.volumes)) or 'none'})")
        return volume

    def _pair(self, lun: int) -> Pair:
        self._volume(lun)
        pair = self.pairs.for_lun(lun)
        if pair is None:
            raise NotFound(f"LUN {lun} has no pair")
        return pair

    def _present(self, pair: Pair) -> bool:
        return self.pairs.for_lun(pair.lun) is pair

    # -- host commands (rcn.storage.paircommands) ------------------------------------------
    def pair_create(self, lun: int, partner_wwpn: int, partner_lun: int, mode: str = "sync",
                    group: int = 0, queue_limit: int = 1024) -> Deferred:
        return self.commands.pair_create(lun, partner_wwpn, partner_lun, mode, group,
                                         queue_limit)

    def suspend(self, lun: int, fast: bool = False) -> Deferred:
        return self.commands.suspend(lun, fast)

    def takeover(self, lun: int) -> Deferred:
        return self.commands.takeover(lun)

    def resync(self, lun: int) -> Deferred:
        return self.commands.resync(lun)

    def pair_delete(self, lun: int, local: bool = False) -> Deferred:
        return self.commands.pair_delete(lun, local)

    def reverse(self, lun: int) -> Deferred:
        return self.commands.reverse(lun)

    def link_restored(self) -> list[Deferred]:
        """The RIO link to the edge is up again. With ``auto_resync``, every source pair in
        failure Suspend because its RIOs got no answer (``Pair.link_lost``: the link dropped,
        the edge crashed or stopped answering) resynchronises by itself: the edge answered
        GOOD only for writes it had made durable, so its log still carries every write this
        array was told was sent, and 1211 holds the rest. Returns the resyncs started.

        The link need not drop for RIOs to go unanswered (an edge that stops and goes on):
        such a pair also tries by itself ``AUTO_RESYNC_FIRST`` seconds after it failed, and
        again after each attempt that got no answer, the wait doubling up to
        ``AUTO_RESYNC_MAX``. A refusal ends the attempts: the operator decides."""
        return self.commands.link_restored()

    def stop(self) -> None:
        """Cancel the automatic resync attempts (the array is shutting down)."""
        self.commands.stop()

    # -- host write path (rcn.storage.hostwrite) -------------------------------------------
    def host_write(self, lun: int, offset: int, data, fua: bool = False) -> Deferred:
        """Check, write the volume, replicate: Deferred firing when the host may be answered."""
        return self.writes.host_write(lun, offset, data, fua)

    def around_host_write(self, lun: int, offset: int, length: int, fua: bool, apply):
        """A host's change of ``length`` bytes at ``offset``: check it, mark its write intent
        (``store``), ``apply()`` it to the volume, replicate it; returns what :meth:`written`
        does. The intent is cleared once the partner has the write or 1211 has it."""
        return self.writes.around_host_write(lun, offset, length, fua, apply)

    def written(self, lun: int, offset: int, length: int, fua: bool = False, sent=None):
        """The host wrote ``length`` bytes at ``offset`` of ``lun`` (already on the volume).
        ``sent()`` is called once the write is at the partner or in the bitmap."""
        return self.writes.written(lun, offset, length, fua, sent)

    def flush(self) -> None:
        """The host flushed: the bitmaps go to the disk with the volume's data."""
        if self.store is not None:
            self.store.flush()

    # -- RIOs from the edge (rcn.storage.incoming) -----------------------------------------
    def admit_write(self, command: ScsiCommand) -> ScsiResult | None:
        """None if a WRITE(16) from the edge may be applied to ``command.lun``; else the refusal."""
        return self.incoming.admit_write(command)

    def control_received(self, command: ScsiCommand) -> ScsiResult:
        """RCN CONTROL from the edge (a relayed source command, or an edge's own notice)."""
        return self.incoming.control_received(command)

    # -- what the parts share ------------------------------------------------------------
    def _event(self, pair: Pair, event: Event) -> bool:
        """Apply ``event`` if the state allows it (a late answer may find it moved on)."""
        if not allows(pair.state, event):
            _log.info("{pair}: {event} ignored in state {state}", pair=pair.name,
                      event=event.value, state=pair.state.value)
            return False
        before = pair.state
        pair.apply(event)
        self._changed(pair, before, event.value)
        self.copies.state_changed(pair, event)
        return True

    def _changed(self, pair: Pair, before: PairState, why: str) -> None:
        if pair.state is not before:
            _log.info("{pair}: {before} -> {after} ({why})", pair=pair.name,
                      before=before.value, after=pair.state.value, why=why)
        self._save()
        for observer in self.observers:
            observer(pair, before, why)

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.pairs)

    def _drop(self, pair: Pair) -> None:
        if self._present(pair):
            self._event(pair, Event.DELETED)
            self.pairs.remove(pair.lun)
            self._save()
            self.copies.forget(pair.lun)
            _log.info("{pair}: deleted", pair=pair.name)
        waiting, pair.waiting = pair.waiting, []
        for waiter in waiting:                      # queued host writes need not wait now
            waiter.callback(None)

    def _addressing(self, pair: Pair) -> tuple[int, int]:
        """(FCP LUN, source LUN) of a control RIO from this end (docs/pairs.md table)."""
        if pair.role == "source":
            return pair.partner_lun, pair.lun
        return pair.lun, pair.partner_lun

    def _send_control(self, pair: Pair, action: Action, data_out: bytes = b"",
                      data_in_length: int = 0, fast: bool = False) -> Deferred:
        """RCN CONTROL to the partner; Deferred[ScsiResult] (GOOD), else PartnerRefused or
        PartnerUnreachable."""
        fcp_lun, source_lun = self._addressing(pair)
        cdb = fcp.build_rcn_control(action, pair.group, source_lun, data_in_length, fast=fast)
        self.control["sent"] += 1
        d = self.session_for(pair.partner_wwpn)
        d.addCallback(lambda session: session.execute(fcp_lun, cdb, data_out, data_in_length,
                                                      TaskAttribute.ORDERED))

        def answered(result: ScsiResult) -> ScsiResult:
            if result.good:
                self.control["good"] += 1
                return result
            self.control["refused"] += 1
            residual = residual_of(result)
            text = f"{pair.name}: {action.name} refused: {explain(result)}"
            if residual is not None:
                text += f" ({format_residual(residual)})"
            raise PartnerRefused(text, result, residual)

        def unreachable(failure):
            self.control["unreachable"] += 1
            raise PartnerUnreachable(f"{pair.name}: {action.name} got no answer from "
                                     f"{format_wwn(pair.partner_wwpn)}: "
                                     f"{failure.getErrorMessage()}") from failure.value
        return d.addCallbacks(answered, unreachable)

    def _rio_write(self, pair: Pair, lba: int, data, fua: bool) -> Deferred:
        d = self.session_for(pair.partner_wwpn)
        return d.addCallback(lambda session: session.write(pair.partner_lun, lba, data,
                                                           TaskAttribute.ORDERED, fua))

    def _wr_failed(self, pair: Pair, offset: int, length: int, why: str,
                   unanswered: bool = False) -> None:
        """A WR (host or copy) did not land: mark it, and stop replicating (【0084】).
        ``unanswered``: no answer at all (the link or the edge went away), so the pair
        resynchronises by itself when the link is back (:meth:`link_restored`)."""
        if not self._present(pair):
            return
        pair.mark(offset, length)
        self.counters.recorded_in_bitmap += 1
        if pair.state in REPLICATING or pair.state is S.SUSPENDING:
            pair.last_error = why
            pair.link_lost = unanswered
            if unanswered:
                self.commands.auto_resync_later(pair)
            _log.error("{pair}: {why}; failure Suspend, writes are recorded in the "
                       "differential bitmap", pair=pair.name, why=why)
            self._event(pair, Event.FAILED)
