"""The emulated array's two faces towards the outside: the host (NBD) and the edge (RIO target).

The remote copy program itself -- pair states, the host write path, copies,
control RIOs -- is :class:`rcn.storage.remotecopy.RemoteCopy`; the classes here
only connect it:

* :class:`ReplicatedExport` is a volume's NBD export: each write goes through
  ``around_host_write``, which checks it (a target volume of a replicating pair is
  read-only to its host: EPERM), writes the volume and replicates the range; its
  Deferred (sync mode: the WROK) the NBD reply waits for. TRIM and
  WRITE_ZEROES are replicated as the zeroes they leave.
* :class:`ArrayTarget` serves the RIOs the edge sends: RCN CONTROL goes to
  ``control_received``; WRITE(16) is applied in the order received once
  ``admit_write`` lets it (the volume must be the target of a pair with that
  partner, in a state that takes the partner's writes); READ(16) and TEST UNIT
  READY are always served; anything else is CHECK CONDITION, ILLEGAL REQUEST.
  RCN CONTROL is not checked against this array's LUNs: the failure notice an
  edge sends to a source volume carries the target's LUN as its FCP LUN.
"""

from __future__ import annotations

from twisted.logger import Logger

from datapath.frames.names import format_wwn
from rcn.nbd.export import VolumeExport
from rcn.rio.fcp import (INVALID_FIELD_IN_CDB, LU_NOT_SUPPORTED, ScsiCommand, ScsiResult,
                         ScsiTarget, SenseKey, check_condition)
from rcn.storage.remotecopy import RemoteCopy
from rcn.storage.volume import Volume, VolumeError

LBA_OUT_OF_RANGE = (0x21, 0x00)
INVALID_OPCODE = (0x20, 0x00)
_log = Logger()


class ReplicatedExport(VolumeExport):
    """A volume's NBD export whose writes go through the remote copy program."""

    def __init__(self, volume: Volume, name: str, remote_copy: RemoteCopy, description: str = ""):
        super().__init__(volume, name, description)
        self.remote_copy = remote_copy

    def write(self, offset: int, data, fua: bool):
        return self.remote_copy.around_host_write(self.volume.lun, offset, len(data), fua,
                                                  lambda: super(ReplicatedExport, self).write(
                                                      offset, data, fua))

    def flush(self):
        super().flush()
        self.remote_copy.flush()

    def trim(self, offset: int, length: int):
        return self.remote_copy.around_host_write(self.volume.lun, offset, length, False,
                                                  lambda: super(ReplicatedExport, self).trim(
                                                      offset, length))

    def write_zeroes(self, offset: int, length: int, may_trim: bool):
        return self.remote_copy.around_host_write(
            self.volume.lun, offset, length, False,
            lambda: super(ReplicatedExport, self).write_zeroes(offset, length, may_trim))


class ArrayTarget(ScsiTarget):
    """Serves the RIOs the edge sends to this array's volumes (see the module doc)."""

    def __init__(self, volumes: dict[int, Volume], remote_copy: RemoteCopy):
        self.volumes = volumes
        self.remote_copy = remote_copy
        self.applied = 0
        self.refused = 0
        self.controls = 0

    def execute(self, command: ScsiCommand) -> ScsiResult:
        name = command.parsed.get("opcode_name")
        if name == "RCN_CONTROL":
            # not by FCP LUN: an edge's failure notice names the partner's LUN there
            self.controls += 1
            result = self.remote_copy.control_received(command)
            if not result.good:
                self.refused += 1
            return result
        volume = self.volumes.get(command.lun)
        if volume is None:
            return self._refuse(command, check_condition(SenseKey.ILLEGAL_REQUEST,
                                                         LU_NOT_SUPPORTED), "no such LUN")
        if name == "TEST_UNIT_READY":
            return ScsiResult()
        if name not in ("WRITE_16", "READ_16"):
            return self._refuse(command, check_condition(SenseKey.ILLEGAL_REQUEST, INVALID_OPCODE),
                                f"{name} is not served")
        bs = volume.block_size
        offset, length = command.parsed["lba"] * bs, command.parsed["transfer_length"] * bs
        try:
            if name == "READ_16":
                return ScsiResult(data_in=volume.read(offset, length))
            refused = self.remote_copy.admit_write(command)
            if refused is not None:          # the remote copy program logged why
                self.refused += 1
                return refused
            if len(command.data) != length:
                return self._refuse(command, check_condition(SenseKey.ILLEGAL_REQUEST,
                                                             INVALID_FIELD_IN_CDB),
                                    f"{len(command.data)} data bytes for {length} in the CDB")
            volume.write(offset, command.data, fua=bool(command.parsed["cdb_flags"] & 0x08))
        except VolumeError as exc:
            return self._refuse(command, check_condition(SenseKey.ILLEGAL_REQUEST,
                                                         LBA_OUT_OF_RANGE), str(exc))
        self.applied += 1
        return ScsiResult()

    def _refuse(self, command: ScsiCommand, result: ScsiResult, why: str) -> ScsiResult:
        self.refused += 1
        _log.warn("RIO {op} to LUN {lun} from {wwn} refused: {why}",
                  op=command.parsed.get("opcode_name"), lun=command.lun,
                  wwn=format_wwn(command.initiator_wwn), why=why)
        return result
