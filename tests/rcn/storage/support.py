"""Test doubles for the remote copy program: an in-memory volume and a scripted session."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed

from datapath.frames import fcp
from rcn.pairstate import PairState, state_refusal
from rcn.rio.fcp import ScsiCommand, ScsiResult
from rcn.storage.pairs import Pair, PairTable
from rcn.storage.remotecopy import RemoteCopy

ARRAY = 0x500A098000000001
PARTNER = 0x500A098000000002
KiB, MiB = 1 << 10, 1 << 20
TRACK = 64 * KiB


class MemoryVolume:
    """What RemoteCopy needs of a volume; ``allocated_extents`` are the ranges written."""

    def __init__(self, lun: int, capacity: int, block_size: int = 512):
        self.lun, self.capacity, self.block_size = lun, capacity, block_size
        self.data = bytearray(capacity)
        self.written: list[tuple[int, int]] = []
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= self.capacity, (offset, length)
        self.reads += 1
        return bytes(self.data[offset:offset + length])

    def write(self, offset: int, data, fua: bool = False) -> None:
        assert 0 <= offset and offset + len(data) <= self.capacity, (offset, len(data))
        self.data[offset:offset + len(data)] = data
        self.written.append((offset, len(data)))

    def allocated_extents(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for offset, length in sorted(self.written):
            if out and offset <= out[-1][0] + out[-1][1]:
                start = out[-1][0]
                out[-1] = (start, max(start + out[-1][1], offset + length) - start)
            else:
                out.append((offset, length))
        return out


class FakeSession:
    """Records every RIO in order and answers it.

    By default everything is GOOD at once. ``hold = True`` keeps answers back
    (``release()`` fires them in order); ``control[name]`` scripts the answer
    to a service action (a ScsiResult, an exception, or a callable taking the
    record); ``write_answer(record)`` scripts WR answers the same way.
    """

    def __init__(self):
        self.log: list[dict] = []
        self.pending: list[tuple[dict, Deferred, object]] = []   # (record, answer to come, script)
        self.hold = False
        self.control: dict[str, object] = {}
        self.write_answer = None

    @property
    def writes(self) -> list[dict]:
        return [r for r in self.log if r["kind"] == "WR"]

    @property
    def controls(self) -> list[str]:
        return [r["action"] for r in self.log if r["kind"] == "CTRL"]

    def written_ranges(self, block_size: int = 512) -> list[tuple[int, int]]:
        return [(r["lba"] * block_size, len(r["data"])) for r in self.writes]

    def _answer(self, record: dict, answer) -> Deferred:
        if callable(answer) and not isinstance(answer, ScsiResult):
            answer = answer(record)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer if answer is not None else ScsiResult())

    def _reply(self, record: dict, answer) -> Deferred:
        self.log.append(record)
        if self.hold:
            d = Deferred()
            self.pending.append((record, d, answer))
            return d
        return self._answer(record, answer)

    def release(self, count: int | None = None) -> None:
        """Fire held answers in the order the RIOs came (all, or the first ``count``)."""
        n = len(self.pending) if count is None else count
        for _ in range(n):
            if not self.pending:
                return
            record, d, answer = self.pending.pop(0)
            self._answer(record, answer).chainDeferred(d)

    def write(self, lun, lba, data, attribute=fcp.TaskAttribute.SIMPLE, fua=False):
        record = {"kind": "WR", "lun": lun, "lba": lba, "data": bytes(data),
                  "attribute": attribute, "fua": fua}
        return self._reply(record, self.write_answer)

    def execute(self, lun, cdb, data_out=b"", data_in_length=0,
                attribute=fcp.TaskAttribute.SIMPLE):
        parsed = fcp.parse_cdb(cdb)
        record = {"kind": "CTRL", "lun": lun, "action": parsed["service_action_name"],
                  "cdb": parsed, "data_out": bytes(data_out), "data_in_length": data_in_length,
                  "attribute": attribute}
        return self._reply(record, self.control.get(record["action"]))


def refused_state(state: PairState) -> ScsiResult:
    return state_refusal(state)


class Rig:
    """A RemoteCopy over memory volumes and one FakeSession, on a task.Clock."""

    def __init__(self, volumes=((0, 4 * MiB),), pairs=(), window: int = 8, chunk: int = MiB):
        self.clock = task.Clock()
        self.session = FakeSession()
        self.session_error: Exception | None = None
        self.volumes = {lun: MemoryVolume(lun, cap) for lun, cap in volumes}
        self.sessions_asked: list[int] = []
        self.rc = RemoteCopy(self.clock, self.session_for, self.volumes, PairTable(pairs),
                             copy_chunk=chunk, copy_window=window)

    def session_for(self, wwn: int):
        self.sessions_asked.append(wwn)
        if self.session_error is not None:
            return fail(self.session_error)
        return succeed(self.session)

    def add_pair(self, lun: int = 0, role: str = "source", state: PairState = PairState.DUPLEX,
                 mode: str = "sync", partner_lun: int = 5, group: int = 7,
                 queue_limit: int = 4) -> Pair:
        pair = Pair(lun, PARTNER, partner_lun, group, state, mode, queue_limit, role,
                    self.volumes[lun].capacity, TRACK)
        self.rc.pairs.add(pair)
        return pair


def control_command(action, lun: int, source_lun: int, *, data: bytes = b"",
                    allocation_length: int = 0, data_in_length: int | None = None,
                    fast: bool = False, failure: bool = False, group: int = 7,
                    initiator: int = PARTNER) -> ScsiCommand:
    """An RCN CONTROL from the edge as ArrayTarget sees it."""
    cdb = fcp.build_rcn_control(action, group, source_lun, allocation_length, fast=fast,
                                failure=failure)
    return ScsiCommand(0x010100, initiator, 0x010200, ARRAY, lun, cdb, fcp.parse_cdb(cdb),
                       data=data, data_in_length=allocation_length if data_in_length is None
                       else data_in_length)


def write_command(lun: int, lba: int, data: bytes, initiator: int = PARTNER) -> ScsiCommand:
    cdb = fcp.build_write16(lba, len(data) // 512)
    return ScsiCommand(0x010100, initiator, 0x010200, ARRAY, lun, cdb, fcp.parse_cdb(cdb),
                       data=data)
