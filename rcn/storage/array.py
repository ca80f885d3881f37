"""The emulated array: volumes, the host write path with remote copy, the RIO target.

Host writes (NBD) land on the local volume first. For a volume that is the
source of a pair in Duplex, the written blocks are then sent to the partner
as a RIO WR (WRITE(16) through the array's edge):

* ``sync`` mode: the host write completes after the WROK (the FCP_RSP GOOD);
* ``async`` mode: it completes after the local write; at most ``queue_limit``
  RIOs of the pair are outstanding, and a host write waits for a free place
  when the queue is full (back-pressure, never unbounded growth).

A write that is not block-aligned is sent as the aligned blocks around it,
read back from the volume after the local write. TRIM and WRITE_ZEROES are
sent as writes of zeroes, 1 MiB at a time.

When a RIO fails (the edge is down, LS_RJT, a timeout, CHECK CONDITION) the
pair goes to failure Suspend and its differential bitmap records the blocks;
from then on writes are only recorded in the bitmap. The host write still
completes: the array keeps serving its host, as 【0084】 describes, and
resync (a later issue) copies what the bitmap names.

As a RIO target (:class:`ArrayTarget`) the array applies WRITE(16) from its
edge to its volumes in the order received, and serves READ(16) and TEST UNIT
READY; anything else is CHECK CONDITION, ILLEGAL REQUEST.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from datapath.frames.fcp import TaskAttribute
from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.nbd.export import VolumeExport
from rcn.rio.fcp import (INVALID_FIELD_IN_CDB, LU_NOT_SUPPORTED, ScsiCommand, ScsiResult,
                         ScsiTarget, SenseKey, check_condition)
from rcn.storage.pairs import Pair, PairState, PairTable
from rcn.storage.volume import Volume, VolumeError

ZERO_CHUNK = 1 << 20
LBA_OUT_OF_RANGE = (0x21, 0x00)
INVALID_OPCODE = (0x20, 0x00)
_log = Logger()


@dataclass
class ReplicationCounters:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    bytes_sent: int = 0
    recorded_in_bitmap: int = 0
    waits_for_queue: int = 0


@dataclass
class PairLink:
    """What the host write path keeps per pair."""
    pair: Pair
    volume: Volume
    bitmap: DifferentialBitmap
    outstanding: int = 0
    waiting: deque = field(default_factory=deque)     # Deferreds of writes waiting for a place


class Replicator:
    """Sends a pair's host writes to its partner through ``session_for(wwn)``.

    ``session_for`` returns a Deferred firing with a session that has
    ``write(lun, lba, data, attribute, fua) -> Deferred[ScsiResult]`` (an
    :class:`rcn.rio.array.RioSession`), or failing when there is no link.
    """

    def __init__(self, session_for, volumes: dict[int, Volume], pairs: PairTable):
        self.session_for = session_for
        self.counters = ReplicationCounters()
        self.links: dict[int, PairLink] = {}
        for pair in pairs:
            if pair.role != "source":
                continue
            volume = volumes[pair.lun]
            self.links[pair.lun] = PairLink(pair, volume, DifferentialBitmap(volume.capacity))

    def written(self, lun: int, offset: int, length: int, fua: bool = False):
        """The host wrote ``length`` bytes at ``offset`` of LUN ``lun`` (already on disk).

        Returns None, or a Deferred that fires when the host write may complete.
        """
        link = self.links.get(lun)
        if link is None or length == 0:
            return None
        first, last = _blocks(link.volume, offset, length)
        if not link.pair.replicating:
            self._record(link, first, last - first)
            return None
        sends = []
        for start in range(first, last, ZERO_CHUNK // link.volume.block_size):
            count = min(last - start, ZERO_CHUNK // link.volume.block_size)
            sends.append((start, count))
        if link.pair.mode == "sync":
            return self._send_all(link, sends, fua)
        return self._admit(link).addCallback(lambda _: self._send_async(link, sends, fua))

    def _send_all(self, link: PairLink, sends, fua) -> Deferred:
        d = succeed(None)
        for start, count in sends:
            d.addCallback(lambda _, s=start, c=count: self._send(link, s, c, fua))
        return d

    def _send(self, link: PairLink, lba: int, blocks: int, fua: bool) -> Deferred:
        """One RIO WR of blocks already on the local volume; never fails."""
        if not link.pair.replicating:
            self._record(link, lba, blocks)
            return succeed(None)
        bs = link.volume.block_size
        data = link.volume.read(lba * bs, blocks * bs)
        self.counters.sent += 1
        self.counters.bytes_sent += len(data)
        d = self.session_for(link.pair.partner_wwpn)
        d.addCallback(lambda session: session.write(link.pair.partner_lun, lba, data,
                                                    TaskAttribute.ORDERED, fua))
        d.addCallback(self._answered, link)
        d.addErrback(self._failed, link, lba, blocks)
        return d

    def _answered(self, result: ScsiResult, link: PairLink) -> None:
        if not result.good:
            raise RuntimeError(f"the partner answered status 0x{result.status:02x}")
        self.counters.acknowledged += 1

    def _failed(self, failure, link: PairLink, lba: int, blocks: int) -> None:
        self.counters.failed += 1
        pair = link.pair
        if pair.replicating:
            _log.error("pair LUN {lun} -> {wwn} LUN {plun}: RIO WR failed ({why}); failure "
                       "Suspend, writes are recorded in the differential bitmap",
                       lun=pair.lun, wwn=format_wwn(pair.partner_wwpn), plun=pair.partner_lun,
                       why=failure.getErrorMessage())
            pair.state = PairState.FAILURE_SUSPEND
        self._record(link, lba, blocks)

    def _record(self, link: PairLink, lba: int, blocks: int) -> None:
        link.bitmap.mark_extents(np.array([lba], np.uint64), np.array([blocks], np.uint64),
                                 link.volume.block_size)
        self.counters.recorded_in_bitmap += 1

    # -- async mode: a bounded number of outstanding RIOs per pair ------
    def _admit(self, link: PairLink) -> Deferred:
        if link.outstanding < link.pair.queue_limit:
            link.outstanding += 1
            return succeed(None)
        self.counters.waits_for_queue += 1
        waiter = Deferred()
        link.waiting.append(waiter)
        return waiter

    def _release(self, _, link: PairLink) -> None:
        if link.waiting:
            link.waiting.popleft().callback(None)   # the place passes to the next writer
        else:
            link.outstanding -= 1

    def _send_async(self, link: PairLink, sends, fua) -> None:
        self._send_all(link, sends, fua).addBoth(self._release, link)


def _blocks(volume: Volume, offset: int, length: int) -> tuple[int, int]:
    """First block and one past the last block that bytes ``offset..offset+length`` touch."""
    bs = volume.block_size
    return offset // bs, -(-(offset + length) // bs)


class ReplicatedExport(VolumeExport):
    """A volume's NBD export whose writes also go to the pair's partner."""

    def __init__(self, volume: Volume, name: str, replicator: Replicator, description: str = ""):
        super().__init__(volume, name, description)
        self.replicator = replicator

    def write(self, offset: int, data, fua: bool):
        super().write(offset, data, fua)
        return self.replicator.written(self.volume.lun, offset, len(data), fua)

    def trim(self, offset: int, length: int):
        super().trim(offset, length)
        return self.replicator.written(self.volume.lun, offset, length)

    def write_zeroes(self, offset: int, length: int, may_trim: bool):
        super().write_zeroes(offset, length, may_trim)
        return self.replicator.written(self.volume.lun, offset, length)


class ArrayTarget(ScsiTarget):
    """Applies the RIOs the edge sends (a partner's writes) to this array's volumes."""

    def __init__(self, volumes: dict[int, Volume]):
        self.volumes = volumes
        self.applied = 0
        self.refused = 0

    def execute(self, command: ScsiCommand) -> ScsiResult:
        volume = self.volumes.get(command.lun)
        if volume is None:
            return self._refuse(command, LU_NOT_SUPPORTED, "no such LUN")
        name = command.parsed.get("opcode_name")
        if name == "TEST_UNIT_READY":
            return ScsiResult()
        if name not in ("WRITE_16", "READ_16"):
            return self._refuse(command, INVALID_OPCODE, f"{name} is not served")
        bs = volume.block_size
        offset, length = command.parsed["lba"] * bs, command.parsed["transfer_length"] * bs
        try:
            if name == "READ_16":
                return ScsiResult(data_in=volume.read(offset, length))
            if len(command.data) != length:
                return self._refuse(command, INVALID_FIELD_IN_CDB,
                                    f"{len(command.data)} data bytes for {length} in the CDB")
            volume.write(offset, command.data, fua=bool(command.parsed["cdb_flags"] & 0x08))
        except VolumeError as exc:
            return self._refuse(command, LBA_OUT_OF_RANGE, str(exc))
        self.applied += 1
        return ScsiResult()

    def _refuse(self, command: ScsiCommand, asc_ascq, why: str) -> ScsiResult:
        self.refused += 1
        _log.warn("RIO {op} to LUN {lun} from {wwn} refused: {why}",
                  op=command.parsed.get("opcode_name"), lun=command.lun,
                  wwn=format_wwn(command.initiator_wwn), why=why)
        return check_condition(SenseKey.ILLEGAL_REQUEST, asc_ascq)
