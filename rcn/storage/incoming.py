"""The remote copy program's RIO target side: what the edge sends to this array.

:class:`IncomingRio` answers for :class:`rcn.storage.remotecopy.RemoteCopy`
(:class:`rcn.storage.array.ArrayTarget` calls these): ``admit_write(command)``
says whether a WRITE(16) from the edge may be applied (None) or refuses it;
``control_received(command)`` answers RCN CONTROL: a relayed source command
(PAIR_CREATE, DUPLEX, SUSPEND, RESYNC with the DPOK bitmap, DELETE) or an edge's
own failure notice to a source volume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from datapath.frames import fcp
from datapath.frames.fcp import RcnServiceAction as Action
from datapath.frames.names import format_wwn
from datapath.kernels.bitmap import geometry
from rcn.pairstate import (ASC_IN_PROGRESS, ASC_NO_PAIR, ASC_PAIR_PARAMS, TARGET_ACCEPTS, Event,
                           PairState, allows, refusal, state_refusal)
from rcn.rio.fcp import (INVALID_FIELD_IN_CDB, LU_NOT_SUPPORTED, ScsiCommand, ScsiResult, SenseKey,
                         check_condition)
from rcn.storage.pairs import Pair

if TYPE_CHECKING:
    from rcn.storage.remotecopy import RemoteCopy

S = PairState

_log = Logger(namespace="rcn.storage.remotecopy")   # one namespace for the whole program


def _pair_params_problem(params: dict, volume) -> str | None:
    """Why a PAIR_CREATE's parameters do not fit ``volume``, or None."""
    if not 0 < params["capacity"] <= volume.capacity:
        return (f"the source's {params['capacity']} bytes do not fit the target "
                f"volume's {volume.capacity}")
    if params["block_size"] != volume.block_size:
        return (f"block size {params['block_size']} differs from the target "
                f"volume's {volume.block_size}")
    if (params["track_size"] < volume.block_size
            or params["track_size"] & (params["track_size"] - 1)):
        return (f"track size {params['track_size']} is not a power of two of at "
                f"least the block size {volume.block_size}")
    if params["mode"] not in (0, 1):
        return f"mode {params['mode']} is neither 0 (sync) nor 1 (async)"
    geometry(params["capacity"], params["track_size"])
    return None


class IncomingRio:
    """RIOs from the edge to one array's volumes (see the module doc)."""

    def __init__(self, rc: RemoteCopy):
        self.rc = rc

    def admit_write(self, command: ScsiCommand) -> ScsiResult | None:
        """None if a WRITE(16) from the edge may be applied to ``command.lun``; else the refusal."""
        pair = self.rc.pairs.for_lun(command.lun)
        if (pair is None or pair.role != "target"
                or pair.partner_wwpn != command.initiator_wwn):
            _log.warn("RIO WR to LUN {lun} from {wwn} refused: no pair of that volume as its "
                      "target with that partner", lun=command.lun,
                      wwn=format_wwn(command.initiator_wwn))
            return refusal(ASC_NO_PAIR)
        if pair.state not in TARGET_ACCEPTS:
            _log.warn("RIO WR to {pair} refused: the pair is {state}", pair=pair.name,
                      state=pair.state.value)
            return state_refusal(pair.state)
        return None

    def control_received(self, command: ScsiCommand) -> ScsiResult:
        """RCN CONTROL from the edge (a relayed source command, or an edge's own notice)."""
        control = self.rc.control
        control["received"] += 1
        result = self._control_received(command)
        if not result.good:
            control["received_refused"] += 1
        return result

    def _control_received(self, command: ScsiCommand) -> ScsiResult:
        p = command.parsed
        try:
            action = Action(p["service_action"])
        except ValueError:
            return self._refuse_control(command, "?", INVALID_FIELD_IN_CDB,
                                        f"unknown service action {p['service_action']}")
        flags, source_lun, wwn = p["control_flags"], p["source_lun"], command.initiator_wwn
        failure = bool(flags & fcp.RCN_CONTROL_FAILURE)
        pairs = self.rc.pairs
        if action is Action.SUSPEND and failure:
            # an edge's failure notice to a source volume: source_lun = that volume; the FCP
            # LUN is the target's (docs/pairs.md's table) or, by the general rule, ours
            pair = pairs.for_lun(source_lun)
            if (pair is not None and pair.role == "source" and pair.partner_wwpn == wwn
                    and command.lun in (pair.partner_lun, pair.lun)):
                return self._incoming_event(pair, Event.FAILED, action)
        if action is Action.PAIR_CREATE:
            return self._incoming_create(command, source_lun)
        pair = pairs.for_lun(command.lun)
        if (pair is None or pair.role != "target" or pair.partner_wwpn != wwn
                or pair.partner_lun != source_lun):
            return self._refuse_control(command, action.name, None,
                                        "no pair of this volume as target with that source",
                                        refusal(ASC_NO_PAIR))
        if action is Action.DUPLEX:
            return self._incoming_event(pair, Event.DUPLEXED, action)
        if action is Action.SUSPEND:
            return self._incoming_event(pair, Event.FAILED if failure else Event.SUSPENDED, action)
        if action is Action.RESYNC:
            return self._incoming_resync(command, pair)
        if action is Action.DELETE:
            result = self._incoming_event(pair, Event.DELETED, action)
            self.rc._drop(pair)
            return result
        return self._refuse_control(command, action.name, INVALID_FIELD_IN_CDB,
                                    f"{action.name} is answered by the target edge, not an array")

    def _refuse_control(self, command: ScsiCommand, name: str, asc_ascq, why: str,
                        result: ScsiResult | None = None) -> ScsiResult:
        _log.warn("RCN CONTROL {name} to LUN {lun} from {wwn} refused: {why}", name=name,
                  lun=command.lun, wwn=format_wwn(command.initiator_wwn), why=why)
        return result or check_condition(SenseKey.ILLEGAL_REQUEST, asc_ascq)

    def _incoming_event(self, pair: Pair, event: Event, action: Action) -> ScsiResult:
        if not allows(pair.state, event):
            _log.warn("{pair}: {action} from the edge refused in state {state}", pair=pair.name,
                      action=action.name, state=pair.state.value)
            return state_refusal(pair.state)
        self.rc._event(pair, event)
        return ScsiResult()

    def _incoming_create(self, command: ScsiCommand, source_lun: int) -> ScsiResult:
        rc = self.rc
        lun, wwn = command.lun, command.initiator_wwn
        volume = rc.volumes.get(lun)
        if volume is None:
            return self._refuse_control(command, "PAIR_CREATE", LU_NOT_SUPPORTED, "no such LUN")
        try:
            params = fcp.parse_pair_params(bytes(command.data))
            problem = _pair_params_problem(params, volume)
        except ValueError as exc:       # DecodeError too
            problem = f"bad pair parameters: {exc}"
        if problem:
            return self._refuse_control(command, "PAIR_CREATE", None, problem,
                                        refusal(ASC_PAIR_PARAMS))
        old = rc.pairs.for_lun(lun)
        if old is not None:
            if old.state is not S.SIMPLEX:
                return self._refuse_control(command, "PAIR_CREATE", None,
                                            f"{old.name} is {old.state.value}",
                                            state_refusal(old.state))
            if old.busy:
                return self._refuse_control(command, "PAIR_CREATE", None,
                                            f"{old.name}: {old.busy} is running",
                                            refusal(ASC_IN_PROGRESS))
            rc.pairs.remove(lun)
        pair = Pair(lun, wwn, source_lun, command.parsed["group_id"], S.SIMPLEX,
                    "sync" if params["mode"] == 0 else "async", role="target",
                    capacity=params["capacity"], track_size=params["track_size"])
        rc.pairs.add(pair)
        rc.known_partners.add(wwn)
        rc._event(pair, Event.CREATED)
        _log.info("{pair}: created by the partner ({n} bytes, tracks of {t}); initial-copying",
                  pair=pair.name, n=pair.capacity, t=pair.track_size)
        return ScsiResult()

    def _incoming_resync(self, command: ScsiCommand, pair: Pair) -> ScsiResult:
        if not allows(pair.state, Event.RESYNCED):
            return self._incoming_event(pair, Event.RESYNCED, Action.RESYNC)
        data = pair.bitmap.serialize()
        room = command.parsed["allocation_length"]
        if command.data_in_length < room:
            room = command.data_in_length
        if len(data) > room:
            # refuse rather than cut the bitmap: it is cleared once sent
            return self._refuse_control(
                command, "RESYNC", INVALID_FIELD_IN_CDB,
                f"the DPOK bitmap is {len(data)} bytes; the allocation length "
                f"{command.parsed['allocation_length']} / FCP_DL {command.data_in_length} "
                f"has room for {room}")
        self.rc._event(pair, Event.RESYNCED)
        pair.bitmap.clear_range(0, pair.bitmap.track_count)
        return ScsiResult(data_in=data)
