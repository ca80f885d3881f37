"""FCP initiator and target on top of the exchange table (FCP-4 over FC-FS class 3).

Target (:class:`FcpTarget`, one per port object): an FCP_CMND that opens a new
exchange is accepted only from a logged-in initiator (PLOGI + PRLI with the
initiator function) to a port that serves SCSI; otherwise the port sends a
LOGO to the sender and counts ``rejected_not_logged_in``. Then:

* data-out (WRDATA): if the command transferred the sequence initiative (the
  initiator waits for XFER_RDY) we send XFER_RDY for the first burst (all of
  FCP_DL, or ``max_burst``); if it kept it (write XFER_RDY disabled by PRLI),
  the data follows at once. Whenever a data sequence hands the initiative
  back before FCP_DL is reached, the next XFER_RDY asks for the rest. Data
  must arrive at continuously increasing relative offsets inside the current
  burst: a gap, overlap or overrun ends the command with CHECK CONDITION
  (ABORTED COMMAND, DATA OFFSET ERROR) and counts ``data_errors``;
* then the task waits for its turn in the task set of its (port, LUN): a
  SIMPLE task starts when no older ORDERED task is still there, an ORDERED
  one when no older task is, HEAD OF QUEUE at once;
* ``ScsiTarget.execute(command)`` returns a :class:`ScsiResult` or a Deferred
  of one; data-in (RDDATA) goes back in FCP_DATA frames of up to 2048 bytes
  (at most FCP_DL; the rest is an overrun residual), then FCP_RSP with status,
  residual and sense (``fcp.build_fcp_rsp``).

Commands that cannot run get one FCP_RSP frame and no exchange entry: a CDB
that does not decode or an FCP_DL over ``max_transfer`` (CHECK CONDITION,
ILLEGAL REQUEST), a full exchange table (TASK SET FULL), write data beyond
``max_buffered`` bytes held by the commands in the task sets (BUSY). An exchange that is
aborted (ABTS, LOGO, timeout, link down) leaves the task set at once; a result
that comes in later is dropped (``results_discarded``).

Initiator (:class:`FcpInitiator`, one per local port): ``execute`` and
``write`` send FCP_CMND; with write data and a target whose PRLI accept
disabled write XFER_RDY the data sequence follows immediately, otherwise each
XFER_RDY gets exactly the burst it asks for. Data-in must arrive in order
within ``data_in_length``; FCP_RSP completes the Deferred with a
:class:`ScsiResult`. Cancelling the Deferred aborts the exchange (ABTS).

The FC header fields are set as :mod:`rcn.rio.exchange` describes; the CDB of
RCN CONTROL (opcode 0xC1) is just another CDB here: targets dispatch on
``command.parsed["opcode_name"]``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FcType, RCtl
from datapath.frames.fcp import ScsiStatus, TaskAttribute
from datapath.frames.names import format_port_id
from rcn.rio.errors import (ExchangeAborted, ExchangeLimitReached, LinkDown, NotLoggedIn,
                            ProtocolError)
from rcn.rio.exchange import (FIRST_SEQUENCE, LAST_SEQUENCE, MAX_DATA_FRAME, OPEN,
                              SEQUENCE_INITIATIVE)

R_DATA, R_XFER_RDY = int(RCtl.FCP_DATA), int(RCtl.FCP_XFER_RDY)
R_CMND, R_RSP = int(RCtl.FCP_CMND), int(RCtl.FCP_RSP)
TYPE_FCP = int(FcType.FCP)
SIMPLE, HEAD_OF_QUEUE, ORDERED = (int(TaskAttribute.SIMPLE), int(TaskAttribute.HEAD_OF_QUEUE),
                                  int(TaskAttribute.ORDERED))
DEFAULT_MAX_TRANSFER = 16 << 20
DEFAULT_MAX_BUFFERED = 256 << 20

_CDB_AT = fcp.FCP_CMND.offsets["cdb"]
_CDB_END = _CDB_AT + fcp.FCP_CMND.by_name["cdb"].width
_XFER_RDY_NEEDS = fcp.FCP_XFER_RDY.offsets["reserved"]     # offset and burst; reserved may lack
_XFER_RDY_UNPACK = fcp.FCP_XFER_RDY.packer.unpack_from
_XFER_RDY_SIZE = fcp.FCP_XFER_RDY.size
_RSP_GOOD = fcp.build_fcp_rsp()
#: bytes of fixed-format sense data after its additional length byte
_SENSE_ADDITIONAL = fcp.SENSE_FIXED.size - fcp.SENSE_FIXED.offsets["additional_length"] - 1
_OPCODE_NAMES = {op.value: op.name for op in fcp.Opcode}


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    ABORTED_COMMAND = 0xB


#: (ASC, ASCQ) pairs we answer with
LU_NOT_READY = (0x04, 0x00)
INVALID_FIELD_IN_CDB = (0x24, 0x00)
LU_NOT_SUPPORTED = (0x25, 0x00)
INTERNAL_TARGET_FAILURE = (0x44, 0x00)
DATA_OFFSET_ERROR = (0x4B, 0x05)


def sense_data(key: int, asc: int, ascq: int = 0) -> bytes:
    """Fixed-format sense data of a current error (``fcp.SENSE_FIXED``), 18 bytes."""
    return fcp.SENSE_FIXED.build(response_code=fcp.SENSE_FIXED_CODE, sense_key=key,
                                 additional_length=_SENSE_ADDITIONAL, asc=asc, ascq=ascq)


def parse_sense(sense: bytes) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of fixed or descriptor format sense data; zeros when the bytes
    holding them are missing (4 of descriptor format, 14 of fixed format)."""
    size = len(sense)
    padded = bytes(sense[:fcp.SENSE_FIXED.size]).ljust(fcp.SENSE_FIXED.size, b"\x00")
    if size > fcp.SENSE_DESCRIPTOR.offsets["ascq"]:
        head = fcp.SENSE_DESCRIPTOR.parse(padded, fast=True)
        if head["response_code"] in fcp.SENSE_DESCRIPTOR_CODES:
            return head["sense_key"], head["asc"], head["ascq"]
    if size > fcp.SENSE_FIXED.offsets["ascq"]:
        fixed = fcp.SENSE_FIXED.parse(padded, fast=True)
        return fixed["sense_key"], fixed["asc"], fixed["ascq"]
    return 0, 0, 0


@dataclass(slots=True)
class ScsiCommand:
    """A command as a target sees it (``parsed`` is ``fcp.parse_cdb`` of ``cdb``)."""
    initiator_port_id: int
    initiator_wwn: int
    target_port_id: int
    target_wwn: int
    lun: int
    cdb: bytes
    parsed: dict
    attribute: int = SIMPLE
    data: bytes = field(default=b"", repr=False)   # write data (all of FCP_DL)
    data_in_length: int = 0            # FCP_DL of a data-in command
    ox_id: int = 0


@dataclass(slots=True)
class ScsiResult:
    """A command's outcome. ``residual``: bytes not transferred (> 0, underrun) or not
    accepted (< 0, overrun)."""
    status: int = ScsiStatus.GOOD
    sense: bytes = b""
    data_in: bytes = field(default=b"", repr=False)
    residual: int = 0

    @property
    def good(self) -> bool:
        return self.status == ScsiStatus.GOOD


def check_condition(key: int, asc_ascq: tuple[int, int]) -> ScsiResult:
    return ScsiResult(ScsiStatus.CHECK_CONDITION, sense_data(key, *asc_ascq))


class ScsiTarget:
    """What a port serves: subclass and override :meth:`execute`.

    The default answers every command with CHECK CONDITION, NOT READY
    (LOGICAL UNIT NOT READY): nothing is plugged in yet.
    """

    #: True for a target that fixes the order of a command's effects when ``execute`` is
    #: called (the edge: a sequence number is taken at once). The task set then starts
    #: ORDERED tasks in order without waiting for the older ones to *complete*: the SAM
    #: rule is met, and commands pipeline instead of waiting a log commit each.
    orders_by_dispatch = False

    def execute(self, command: ScsiCommand):
        """Run ``command``; return a :class:`ScsiResult` or a Deferred firing with one."""
        return check_condition(SenseKey.NOT_READY, LU_NOT_READY)


def command_name(cdb: bytes) -> str:
    return _OPCODE_NAMES.get(cdb[0], f"SCSI 0x{cdb[0]:02x}") if cdb else "SCSI"


def build_write16_cdb(lba: int, blocks: int, fua: bool = False) -> bytes:
    """WRITE(16) of ``blocks`` at ``lba`` (``fcp.build_write16``, group 0)."""
    return fcp.build_write16(lba, blocks, fua)


def _status(value: int):
    try:
        return ScsiStatus(value)
    except ValueError:
        return value


def response_payload(result: ScsiResult, residual: int) -> bytes:
    """FCP_RSP for ``result`` with a signed ``residual`` (> 0 under, < 0 over)."""
    if result.status == ScsiStatus.GOOD and not residual and not result.sense:
        return _RSP_GOOD
    return fcp.build_fcp_rsp(result.status, abs(residual), residual > 0, result.sense)


def parse_response(payload: bytes) -> ScsiResult:
    """FCP_RSP payload -> ScsiResult (without data-in); raises DecodeError."""
    if payload == _RSP_GOOD:
        return ScsiResult()
    rsp = fcp.parse_fcp_rsp(payload, fast=True)
    residual = rsp["residual"]
    if rsp["flags"] & fcp.RSP_RESID_UNDER:
        signed = residual
    elif rsp["flags"] & fcp.RSP_RESID_OVER:
        signed = -residual
    else:
        signed = 0
    return ScsiResult(_status(rsp["scsi_status"]), bytes.fromhex(rsp["sense"]), b"", signed)


# -- target ---------------------------------------------------------------------------

class _Task:
    """A command in a target's task set; also the handler of its exchange."""

    __slots__ = ("target", "exchange", "command", "scsi", "task_set", "fcp_dl", "write", "read",
                 "chunks", "received", "window_end", "ready", "started", "attribute")

    def __init__(self, target, scsi, attribute, fcp_dl, write, read):
        self.target = target
        self.scsi = scsi
        self.attribute = attribute
        self.fcp_dl = fcp_dl
        self.write = write
        self.read = read
        self.chunks: list | None = [] if write else None
        self.received = 0
        self.window_end = 0
        self.ready = self.started = False
        self.exchange = self.command = self.task_set = None

    # exchange handler
    def frame_received(self, exchange, frame) -> None:
        h = frame.header
        if h["r_ctl"] != R_DATA or not self.write or self.ready:
            self.target.unexpected(exchange, frame, "target")
            return
        self.data_received(h["parameter"], frame.payload, h["f_ctl"])

    @property
    def wants_data(self) -> bool:
        return self.write and not self.ready

    def data_received(self, offset: int, payload: bytes, f_ctl: int) -> None:
        """One FCP_DATA frame's payload (also the FCIP protocol's fast path)."""
        size = len(payload)
        if offset != self.received or offset + size > self.window_end:
            self.target.data_error(self, f"FCP_DATA at relative offset {offset} ({size} bytes) "
                                         f"where {self.received} was next and the burst ends at "
                                         f"{self.window_end}")
            return
        self.chunks.append(payload)
        self.received += size
        if self.received == self.fcp_dl:
            self.command.data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = None
            self.task_set.ready(self)
        elif f_ctl & SEQUENCE_INITIATIVE:
            self.target.request_data(self)

    def exchange_ended(self, exchange, error) -> None:
        self.target.dropped(self, error)


class _TaskSet:
    """The tasks of one (port, LUN) in arrival order, with SAM task-attribute rules."""

    __slots__ = ("key", "owner", "tasks", "ordered", "_busy", "_again")

    def __init__(self, key, owner):
        self.key = key
        self.owner = owner
        self.tasks: dict[_Task, None] = {}
        self.ordered = 0
        self._busy = self._again = False

    def add(self, task: _Task) -> None:
        self.tasks[task] = None
        task.task_set = self
        if task.attribute == ORDERED:
            self.ordered += 1

    def ready(self, task: _Task) -> None:
        task.ready = True
        if not self.ordered or task.attribute == HEAD_OF_QUEUE:
            self.owner.start(task)
        else:
            self.dispatch()

    def remove(self, task: _Task) -> None:
        if task not in self.tasks:
            return
        del self.tasks[task]
        self.owner.task_removed(task)
        if task.attribute == ORDERED:
            self.ordered -= 1
        if not self.tasks:
            self.owner.task_set_empty(self)
        elif self.ordered or task.attribute == ORDERED:
            self.dispatch()

    def dispatch(self) -> None:
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            while True:
                self._again = False
                seen_any = seen_ordered = False
                for task in list(self.tasks):
                    if task.ready and not task.started and task in self.tasks:
                        if task.attribute == HEAD_OF_QUEUE or (
                                not seen_ordered and (task.attribute != ORDERED or not seen_any)):
                            self.owner.start(task)
                    if task.started and task.scsi.orders_by_dispatch:
                        continue        # its place in the order is fixed: as good as done
                    seen_any = True
                    if task.attribute == ORDERED:
                        seen_ordered = True
                if not self._again:
                    return
        finally:
            self._busy = False


class FcpTarget:
    """The FCP target function of a port object (see the module doc).

    ``port`` provides ``table`` (ExchangeTable), ``login(local_id, remote_id)``
    (a PortLogin or None), ``scsi_target(local_id)`` (``(ScsiTarget, wwn)``
    or None) and ``reject_not_logged_in(frame, what)``.
    """

    _log = Logger()

    def __init__(self, port, max_transfer: int = DEFAULT_MAX_TRANSFER,
                 max_burst: int | None = None, max_frame: int = MAX_DATA_FRAME,
                 max_buffered: int = DEFAULT_MAX_BUFFERED):
        if max_burst is not None and max_burst <= 0:
            raise ValueError(f"max_burst: {max_burst} is not a positive byte count")
        self.port = port
        self.max_transfer = max_transfer
        self.max_buffered = max_buffered
        self.buffered = 0                  # FCP_DL of the write commands in the task sets
        self.max_burst = max_burst
        self.max_frame = max_frame
        self._task_sets: dict[tuple[int, int], _TaskSet] = {}
        self.counters = dict.fromkeys((
            "commands", "completed", "bad_commands", "data_errors",
            "task_set_full", "busy", "aborted", "results_discarded", "target_errors",
            "unexpected_frames", "xfer_rdy_sent"), 0)

    def command_received(self, frame) -> None:
        """An FCP_CMND that opens a new exchange."""
        h = frame.header
        s_id, d_id = h["s_id"], h["d_id"]
        port = self.port
        login = port.login(d_id, s_id)
        if login is None or not login.prli or not login.initiator:
            port.reject_not_logged_in(frame, "FCP_CMND")       # counted by the port
            return
        self.counters["commands"] += 1
        try:
            cmnd = fcp.parse_fcp_cmnd(frame.payload, fast=True)
        except DecodeError as exc:
            self._refuse(frame, f"undecodable FCP_CMND: {exc}", "bad_commands",
                         check_condition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB))
            return
        served = port.scsi_target(d_id)
        if served is None:
            self._refuse(frame, "the port serves no SCSI target", "bad_commands",
                         check_condition(SenseKey.ILLEGAL_REQUEST, LU_NOT_SUPPORTED))
            return
        fcp_dl, write, read = cmnd["fcp_dl"], cmnd["wrdata"], cmnd["rddata"]
        if (write and read) or fcp_dl > self.max_transfer:
            self._refuse(frame, f"FCP_DL {fcp_dl} (max_transfer {self.max_transfer}) with "
                                f"WRDATA={write} RDDATA={read} is not supported", "bad_commands",
                         check_condition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB))
            return
        write = bool(write and fcp_dl)
        if write and self.buffered + fcp_dl > self.max_buffered:
            self._refuse(frame, f"{self.buffered} bytes of write data already held "
                                f"(max_buffered {self.max_buffered})", "busy",
                         ScsiResult(ScsiStatus.BUSY))
            return
        scsi, target_wwn = served
        attribute = cmnd["attribute"]
        task = _Task(self, scsi, attribute, fcp_dl, write, bool(read))
        cdb = frame.payload[_CDB_AT:_CDB_END]
        what = cmnd["cdb"]["opcode_name"]
        try:
            exchange = port.table.respond(d_id, s_id, h["ox_id"], task, what)
        except ExchangeLimitReached:
            self._refuse(frame, "exchange table full", "task_set_full",
                         ScsiResult(ScsiStatus.TASK_SET_FULL))
            return
        task.exchange = exchange
        task.command = ScsiCommand(s_id, login.remote_port_name, d_id, target_wwn, cmnd["lun"],
                                   cdb, cmnd["cdb"], attribute, b"",
                                   fcp_dl if read else 0, h["ox_id"])
        key = (d_id, cmnd["lun"])
        task_set = self._task_sets.get(key)
        if task_set is None:
            task_set = self._task_sets[key] = _TaskSet(key, self)
        task_set.add(task)
        if write:
            self.buffered += fcp_dl
            if h["f_ctl"] & SEQUENCE_INITIATIVE:
                self.request_data(task)          # the initiator waits for XFER_RDY
            else:
                task.window_end = fcp_dl         # first burst: the data follows at once
        else:
            task_set.ready(task)

    def _refuse(self, frame, why: str, counter: str, result: ScsiResult) -> None:
        self.counters[counter] += 1
        h = frame.header
        self._log.warn("FCP_CMND from {s_id} to {d_id} OX_ID 0x{ox:04x}: {why}; answered with "
                       "status 0x{status:02x}", s_id=format_port_id(h["s_id"]),
                       d_id=format_port_id(h["d_id"]), ox=h["ox_id"], why=why,
                       status=int(result.status))
        self.port.table.reply(frame, R_RSP, TYPE_FCP, response_payload(result, 0))

    def request_data(self, task: _Task) -> None:
        """XFER_RDY for the next burst of data-out."""
        burst = task.fcp_dl - task.received
        if self.max_burst is not None and burst > self.max_burst:
            burst = self.max_burst
        task.window_end = task.received + burst
        self.counters["xfer_rdy_sent"] += 1
        task.exchange.send(R_XFER_RDY, TYPE_FCP, fcp.build_xfer_rdy(task.received, burst),
                           SEQUENCE_INITIATIVE)

    def data_error(self, task: _Task, why: str) -> None:
        self.counters["data_errors"] += 1
        exchange = task.exchange
        self._log.warn("{exchange}: {why}; command ended with CHECK CONDITION", exchange=exchange,
                       why=why)
        result = check_condition(SenseKey.ABORTED_COMMAND, DATA_OFFSET_ERROR)
        exchange.send(R_RSP, TYPE_FCP, response_payload(result, 0), LAST_SEQUENCE)
        exchange.close()
        task.task_set.remove(task)

    def unexpected(self, exchange, frame, side: str) -> None:
        self.counters["unexpected_frames"] += 1
        self._log.warn("{exchange}: unexpected frame R_CTL 0x{r_ctl:02x} on the {side} side; "
                       "dropped", exchange=exchange, r_ctl=frame.header["r_ctl"], side=side)

    def dropped(self, task: _Task, error: Exception) -> None:
        """The exchange ended under the task (ABTS, LOGO, timeout, link down)."""
        self.counters["aborted"] += 1
        if task.task_set is not None:
            task.task_set.remove(task)

    def task_removed(self, task: _Task) -> None:
        if task.write:
            self.buffered -= task.fcp_dl

    def task_set_empty(self, task_set: _TaskSet) -> None:
        if self._task_sets.get(task_set.key) is task_set:
            del self._task_sets[task_set.key]

    def start(self, task: _Task) -> None:
        task.started = True
        try:
            result = task.scsi.execute(task.command)
        except Exception:
            self._log.failure("SCSI target {target!r} raised on {exchange}", target=task.scsi,
                              exchange=task.exchange)
            result = None
        if isinstance(result, Deferred):
            result.addCallbacks(self.finish, self._execute_failed, callbackArgs=(task,),
                                errbackArgs=(task,))
        else:
            self.finish(result, task)

    def _execute_failed(self, failure, task: _Task) -> None:
        self._log.failure("SCSI target {target!r} failed on {exchange}", failure,
                          target=task.scsi, exchange=task.exchange)
        self.finish(None, task)

    def finish(self, result, task: _Task) -> None:
        """Send data-in and FCP_RSP for ``result`` (None: the target failed)."""
        exchange = task.exchange
        if not isinstance(result, ScsiResult):
            self.counters["target_errors"] += 1
            if result is not None:
                self._log.error("SCSI target {target!r} returned {result!r}, not a ScsiResult, for "
                                "{exchange}", target=task.scsi, result=result, exchange=exchange)
            result = check_condition(SenseKey.HARDWARE_ERROR, INTERNAL_TARGET_FAILURE)
        if exchange.state != OPEN:
            self.counters["results_discarded"] += 1
            self._log.info("{exchange} ended before its result came; result dropped",
                           exchange=exchange)
            return
        residual = result.residual
        try:
            if task.read:
                data_in = result.data_in
                residual = task.fcp_dl - len(data_in)
                sent = min(len(data_in), task.fcp_dl)
                if sent:
                    exchange.send_data(R_DATA, TYPE_FCP, data_in, 0, sent, 0, self.max_frame)
            exchange.send(R_RSP, TYPE_FCP, response_payload(result, residual), LAST_SEQUENCE)
        except LinkDown:
            pass
        else:
            self.counters["completed"] += 1
        exchange.close()
        task.task_set.remove(task)


# -- initiator ---------------------------------------------------------------------------

class _Command:
    """An exchange we originated for one SCSI command: its handler."""

    __slots__ = ("initiator", "exchange", "deferred", "data", "data_in_length", "chunks",
                 "received", "cancelled")

    def __init__(self, initiator, data, data_in_length):
        self.initiator = initiator
        self.data = data
        self.data_in_length = data_in_length
        self.chunks: list | None = [] if data_in_length else None
        self.received = 0
        self.cancelled = False
        self.exchange = None
        self.deferred = Deferred(self._cancel)

    def _cancel(self, deferred) -> None:
        self.cancelled = True
        exchange = self.exchange
        if exchange is not None and exchange.state == OPEN:
            exchange.abort(ExchangeAborted(exchange.what, exchange.remote_id,
                                           "cancelled by the initiator"))

    def _protocol_error(self, exchange, why: str) -> None:
        self.initiator.counters["protocol_errors"] += 1
        self.initiator._log.warn("{exchange}: {why}; aborting the exchange", exchange=exchange,
                                 why=why)
        exchange.abort(ProtocolError(f"rio: {exchange.what} with "
                                     f"{format_port_id(exchange.remote_id)}: {why}"))

    def frame_received(self, exchange, frame) -> None:
        h = frame.header
        r_ctl = h["r_ctl"]
        if r_ctl == R_RSP:
            try:
                result = parse_response(frame.payload)
            except DecodeError as exc:
                exchange.close()
                self.initiator.counters["protocol_errors"] += 1
                self.deferred.errback(ProtocolError(f"rio: {exchange.what}: bad FCP_RSP: {exc}"))
                return
            if self.chunks:
                result.data_in = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            exchange.close()
            self.deferred.callback(result)
        elif r_ctl == R_XFER_RDY:
            data = self.data
            if len(frame.payload) < _XFER_RDY_NEEDS:
                self._protocol_error(exchange, f"XFER_RDY of {len(frame.payload)} bytes")
                return
            offset, burst, _ = _XFER_RDY_UNPACK(frame.payload.ljust(_XFER_RDY_SIZE, b"\x00"))
            if not data or burst == 0 or offset + burst > len(data):
                self._protocol_error(exchange, f"XFER_RDY for {burst} bytes at offset {offset} "
                                               f"of a {len(data)}-byte data-out")
                return
            exchange.send_data(R_DATA, TYPE_FCP, data, offset, offset + burst,
                               SEQUENCE_INITIATIVE, self.initiator.max_frame)
        elif r_ctl == R_DATA and self.chunks is not None:
            offset, size = h["parameter"], len(frame.payload)
            if offset != self.received or offset + size > self.data_in_length:
                self._protocol_error(exchange, f"data-in at relative offset {offset} ({size} bytes)"
                                               f" where {self.received} was next of "
                                               f"{self.data_in_length}")
                return
            self.chunks.append(frame.payload)
            self.received += size
        else:
            self.initiator.counters["unexpected_frames"] += 1
            self.initiator._log.warn("{exchange}: unexpected frame R_CTL 0x{r_ctl:02x}; dropped",
                                     exchange=exchange, r_ctl=r_ctl)

    def exchange_ended(self, exchange, error) -> None:
        if not self.cancelled:
            self.deferred.errback(error)


class FcpInitiator:
    """Sends SCSI commands from the local port ``local_id`` (see the module doc).

    ``port`` provides ``table`` and ``login(local_id, remote_id)``; a target
    must be logged in (PLOGI + PRLI, target function) before commands go to it.
    """

    _log = Logger()

    def __init__(self, port, local_id: int, max_frame: int = MAX_DATA_FRAME,
                 max_transfer: int = DEFAULT_MAX_TRANSFER):
        self.port = port
        self.local_id = local_id
        self.max_frame = max_frame
        self.max_transfer = max_transfer
        self.counters = dict.fromkeys(("commands", "protocol_errors", "unexpected_frames"), 0)

    def execute(self, target_port_id: int, lun: int, cdb: bytes, data_out=b"",
                data_in_length: int = 0, attribute: int = SIMPLE) -> Deferred:
        """Send one command; the Deferred fires with its ScsiResult (or a RioError)."""
        login = self.port.login(self.local_id, target_port_id)
        if login is None or not login.prli or not login.target:
            return fail(NotLoggedIn(
                f"rio: {command_name(cdb)} from {format_port_id(self.local_id)} to "
                f"{format_port_id(target_port_id)}: no PLOGI + PRLI with an FCP target there"))
        size = len(data_out)
        if size and data_in_length:
            return fail(ValueError("rio: bidirectional commands (data-out and data-in) are not "
                                   "supported"))
        if size > self.max_transfer or data_in_length > self.max_transfer or data_in_length < 0:
            return fail(ValueError(f"rio: transfer of {max(size, data_in_length)} bytes exceeds "
                                   f"max_transfer {self.max_transfer}"))
        handler = _Command(self, data_out, data_in_length)
        try:
            payload = fcp.build_fcp_cmnd(lun, cdb, size or data_in_length, bool(size),
                                         bool(data_in_length), attribute)
            exchange = self.port.table.originate(self.local_id, target_port_id, handler,
                                                 command_name(cdb))
        except (ExchangeLimitReached, ValueError) as exc:
            return fail(exc)
        handler.exchange = exchange
        first_burst = size and login.write_xfer_rdy_disabled
        try:
            if first_burst:
                exchange.send(R_CMND, TYPE_FCP, payload, FIRST_SEQUENCE)
                exchange.send_data(R_DATA, TYPE_FCP, data_out, 0, size, SEQUENCE_INITIATIVE,
                                   self.max_frame)
            else:
                exchange.send(R_CMND, TYPE_FCP, payload, FIRST_SEQUENCE | SEQUENCE_INITIATIVE)
        except LinkDown as exc:
            exchange.close()
            return fail(exc)
        self.counters["commands"] += 1
        return handler.deferred

    def write(self, target_port_id: int, lun: int, lba: int, data, attribute: int = SIMPLE,
              fua: bool = False) -> Deferred:
        """WRITE(16) of ``data`` (whole 512-byte blocks) at ``lba``."""
        if not data or len(data) % fcp.BLOCK_SIZE:
            return fail(ValueError(f"rio: write of {len(data)} bytes is not a positive number of "
                                   f"{fcp.BLOCK_SIZE}-byte blocks"))
        try:
            cdb = build_write16_cdb(lba, len(data) // fcp.BLOCK_SIZE, fua)
        except ValueError as exc:
            return fail(ValueError(f"rio: WRITE(16) at LBA {lba}: {exc}"))
        return self.execute(target_port_id, lun, cdb, data, 0, attribute)
