"""What both ends of a RIO link share: frame dispatch, logins, ELS/CT requests and replies.

:class:`FcEndpoint` is the base of the edge's :class:`~rcn.rio.fabric.FabricPort`
and the array's :class:`~rcn.rio.array.ArrayPort`. It owns the link's
:class:`~rcn.rio.exchange.ExchangeTable`, the login table (:class:`PortLogin`
per local/remote N_Port pair, at most ``max_logins``) and the FCP target
function, and routes every received frame:

* BLS (ABTS, BA_ACC, BA_RJT) to the exchange table;
* a frame of an open exchange to that exchange's handler (the first frame
  from a responder also fixes the exchange's RX_ID); a frame of an exchange
  being aborted is dropped (``frames_after_abort``);
* a frame that opens an exchange: FCP_CMND to the FCP target, an ELS request
  to :meth:`FcEndpoint.els_request` (LOGO is handled here: LS_ACC, the login
  is forgotten and the pair's open exchanges end with ExchangeAborted), a CT
  request to :meth:`FcEndpoint.ct_request`;
* anything else is counted (``unmatched_frames``), logged and dropped.

A frame from a port that is not logged in (an FCP_CMND without PLOGI + PRLI)
is answered with a LOGO from the addressed port, at most one outstanding per
port pair (``rejected_not_logged_in``).

Requests we originate (FLOGI, PLOGI, PRLI, LOGO, GID_PN) go through
:meth:`FcEndpoint.request`: a Deferred of the reply frame, failing with
ExchangeTimeout (ABTS sent), ExchangeAborted or LinkDown.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from datapath.frames import ct, els
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FcType, RCtl
from datapath.frames.names import format_port_id
from rcn.rio.errors import (ExchangeAborted, ExchangeLimitReached, LinkDown, LoginRejected,
                            ProtocolError)
from rcn.rio.exchange import (EXCHANGE_CONTEXT, NO_LINK, OPEN, SEQUENCE_INITIATIVE, UNASSIGNED,
                              FIRST_SEQUENCE, ExchangeTable)
from rcn.rio.fcp import DEFAULT_MAX_BUFFERED, DEFAULT_MAX_TRANSFER, FcpTarget

TYPE_BLS, TYPE_ELS = int(FcType.BLS), int(FcType.ELS)
TYPE_FCP, TYPE_CT = int(FcType.FCP), int(FcType.CT)
R_ELS_REQUEST, R_ELS_REPLY = int(RCtl.ELS_REQUEST), int(RCtl.ELS_REPLY)
R_CT_REQUEST, R_CT_REPLY = int(RCtl.CT_REQUEST), int(RCtl.CT_REPLY)
R_FCP_CMND = int(RCtl.FCP_CMND)
CT_REASON_INVALID_COMMAND = 0x01
CT_REASON_NOT_SUPPORTED = 0x0B


class IFcEndpoint(Interface):
    """What an :class:`rcn.rio.protocol.FcipProtocol` drives."""

    def link_up(link):
        """The connection is up; ``link.send_fc(...)`` sends frames."""

    def frame_received(frame):
        """A good frame (CRC checked, usable EOF): a ``datapath.frames.fc.FcFrame``."""

    def link_down(reason):
        """The connection is gone (``reason``: text); called once."""


@dataclass(kw_only=True)
class PortConfig:
    """Limits and timers every port takes (both FabricConfig and ArrayConfig have them)."""

    max_exchanges: int = 4096            # originated, and again responded, exchanges open
    exchange_timeout: float = 30.0       # seconds from an exchange's start to its timeout
    abort_timeout: float = 10.0          # seconds an ABTS may wait for BA_ACC
    timeout_tick: float = 1.0            # sweep interval of the timeout timer
    max_logins: int = 256                # N_Port logins (PLOGI) held at once
    max_transfer: int = DEFAULT_MAX_TRANSFER   # largest FCP_DL accepted or sent
    max_buffered: int = DEFAULT_MAX_BUFFERED   # write data the FCP target holds at once
    max_burst: int | None = None         # our XFER_RDY bursts (None: all of FCP_DL at once)


class PortLogin:
    """A PLOGI between a local and a remote N_Port, and what PRLI said.

    ``initiator``/``target``: the remote port's FCP roles towards us;
    ``write_xfer_rdy_disabled``: our writes to it send data without waiting
    for XFER_RDY.
    """

    __slots__ = ("local_id", "remote_id", "remote_port_name", "remote_node_name", "prli",
                 "remote_params", "initiator", "target", "write_xfer_rdy_disabled")

    def __init__(self, local_id: int, remote_id: int, remote_port_name: int,
                 remote_node_name: int):
        self.local_id = local_id
        self.remote_id = remote_id
        self.remote_port_name = remote_port_name
        self.remote_node_name = remote_node_name
        self.prli = False
        self.remote_params = 0
        self.initiator = self.target = self.write_xfer_rdy_disabled = False

    def __repr__(self):
        return (f"<PortLogin {format_port_id(self.local_id)}<->{format_port_id(self.remote_id)} "
                f"prli={self.prli} initiator={self.initiator} target={self.target}>")


class _Reply:
    """Handler of an exchange we originated for a one-frame request (ELS, CT)."""

    __slots__ = ("deferred", "exchange", "cancelled")

    def __init__(self):
        self.exchange = None
        self.cancelled = False
        self.deferred = Deferred(self._cancel)

    def _cancel(self, deferred) -> None:
        self.cancelled = True
        if self.exchange is not None and self.exchange.state == OPEN:
            self.exchange.abort(ExchangeAborted(self.exchange.what, self.exchange.remote_id,
                                                "cancelled"))

    def frame_received(self, exchange, frame) -> None:
        exchange.close()
        self.deferred.callback(frame)

    def exchange_ended(self, exchange, error) -> None:
        if not self.cancelled:
            self.deferred.errback(error)


def check_ls_acc(reply, what: str, peer: int) -> dict:
    """The parsed LS_ACC answering ``what``; LoginRejected for LS_RJT, ProtocolError else."""
    h = reply.header
    if h["r_ctl"] != R_ELS_REPLY or h["type"] != TYPE_ELS:
        raise ProtocolError(f"rio: {what} to {format_port_id(peer)} answered with R_CTL "
                            f"0x{h['r_ctl']:02x} TYPE 0x{h['type']:02x}, not an ELS reply")
    try:
        parsed = els.parse_els(reply.payload)
    except DecodeError as exc:
        raise ProtocolError(f"rio: {what} to {format_port_id(peer)}: bad reply: {exc}") from None
    if parsed["command"] == els.ElsCommand.LS_RJT:
        raise LoginRejected(what, peer, parsed["reason"], parsed["explanation"])
    if parsed["command"] != els.ElsCommand.LS_ACC:
        raise ProtocolError(f"rio: {what} to {format_port_id(peer)} answered with ELS "
                            f"{parsed['command_name']}")
    return parsed


@implementer(IFcEndpoint)
class FcEndpoint:
    """Base of FabricPort and ArrayPort (see the module doc)."""

    _log = Logger()

    def __init__(self, clock, config: PortConfig, name: str):
        self.clock = clock
        self.name = name
        self.table = ExchangeTable(clock, config.max_exchanges, config.exchange_timeout,
                                   config.abort_timeout, config.timeout_tick, name)
        self.link = None
        self.logins: dict[tuple[int, int], PortLogin] = {}
        self.max_logins = config.max_logins
        self.fcp_target = FcpTarget(self, config.max_transfer, config.max_burst,
                                    max_buffered=config.max_buffered)
        self.on_link_down = None          # called with the reason after link_down
        self._logo_pending: set[tuple[int, int]] = set()
        self._counters = dict.fromkeys((
            "unmatched_frames", "frames_after_abort", "ls_rjt_sent", "ct_rejects_sent",
            "rejected_not_logged_in", "logo_received", "bad_requests"), 0)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    # -- counters ----------------------------------------------------------------------
    def initiators(self) -> list:
        """The FcpInitiator objects of this port (their counters are summed in ``counters``)."""
        return []

    @property
    def counters(self) -> dict:
        out = dict(self._counters)
        out.update(self.table.counters)
        out.update(self.fcp_target.counters)
        for initiator in self.initiators():
            for key, value in initiator.counters.items():
                out["initiator_" + key] = out.get("initiator_" + key, 0) + value
        if self.link is not None:
            out.update(self.link.counters)
        return out

    # -- hooks for the subclasses ------------------------------------------------------
    def port_name(self, local_id: int) -> int | None:
        """The WWPN of our port ``local_id`` (None: not ours)."""
        return None

    def scsi_target(self, local_id: int):
        """``(ScsiTarget, wwn)`` served at ``local_id``, or None."""
        return None

    def els_request(self, frame, command: int, parsed: dict) -> None:
        self.ls_rjt(frame, els.LsRjtReason.NOT_SUPPORTED, els.EXPLAIN_NONE,
                    f"ELS {parsed.get('command_name')} is not supported here")

    def ct_request(self, frame) -> None:
        self.ct_reject(frame, CT_REASON_NOT_SUPPORTED, 0, "no name server at this port")

    def logged_out(self, local_id: int, remote_id: int) -> None:
        """The remote port logged out of ``local_id`` (LOGO received)."""

    # -- logins ------------------------------------------------------------------------
    def login(self, local_id: int, remote_id: int) -> PortLogin | None:
        return self.logins.get((local_id, remote_id))

    def add_login(self, local_id: int, remote_id: int, port_name: int,
                  node_name: int) -> PortLogin | None:
        """A fresh login (a re-login replaces the old one and ends its exchanges); None when
        the table is full."""
        key = (local_id, remote_id)
        if key in self.logins:
            self.forget_login(local_id, remote_id, "implicit logout by a new PLOGI")
        elif len(self.logins) >= self.max_logins:
            return None
        login = self.logins[key] = PortLogin(local_id, remote_id, port_name, node_name)
        return login

    def forget_login(self, local_id: int, remote_id: int, why: str) -> None:
        self.logins.pop((local_id, remote_id), None)
        self.table.end_all(ExchangeAborted("open exchanges", remote_id, why),
                           local_id=local_id, remote_id=remote_id)

    # -- IFcEndpoint -------------------------------------------------------------------
    def link_up(self, link) -> None:
        self.link = link
        self.table.link = link
        self._log.info("{name}: FCIP link up", name=self.name)

    def link_down(self, reason: str) -> None:
        self._log.info("{name}: FCIP link down: {reason}", name=self.name, reason=reason)
        self.link = None
        self.table.link = NO_LINK
        self.logins.clear()
        self.table.end_all(LinkDown(reason))
        self.table.stop()
        if self.on_link_down is not None:
            self.on_link_down(reason)

    def frame_received(self, frame) -> None:
        h = frame.header
        fc_type = h["type"]
        if fc_type == TYPE_BLS:
            self.table.handle_bls(frame)
            return
        exchange = self.table.lookup(h)
        if exchange is not None:
            if exchange.state == OPEN:
                if exchange.rx_id == UNASSIGNED:           # the responder's first frame
                    exchange.rx_id = h["rx_id"]
                exchange.handler.frame_received(exchange, frame)
            else:                                          # being aborted: ABTS is on its way
                self._counters["frames_after_abort"] += 1
            return
        if not h["f_ctl"] & EXCHANGE_CONTEXT:              # from an originator: a new exchange?
            r_ctl = h["r_ctl"]
            if fc_type == TYPE_FCP and r_ctl == R_FCP_CMND:
                self.fcp_target.command_received(frame)
                return
            if fc_type == TYPE_ELS and r_ctl == R_ELS_REQUEST:
                self._els_request(frame)
                return
            if fc_type == TYPE_CT and r_ctl == R_CT_REQUEST:
                self.ct_request(frame)
                return
        self._counters["unmatched_frames"] += 1
        self._log.warn("{name}: frame R_CTL 0x{r_ctl:02x} TYPE 0x{type:02x} from {s_id} to {d_id} "
                       "OX_ID 0x{ox:04x} belongs to no open exchange; dropped", name=self.name,
                       r_ctl=h["r_ctl"], type=fc_type, s_id=format_port_id(h["s_id"]),
                       d_id=format_port_id(h["d_id"]), ox=h["ox_id"])

    def data_frame(self, s_id: int, ox_id: int, parameter: int, payload: bytes,
                   f_ctl: int) -> bool:
        """Fast path for FCP_DATA from an originator to a task that waits for data: no header
        dict, no frame object. False: not such a frame; take :meth:`frame_received`."""
        exchange = self.table.responded(s_id, ox_id)
        if exchange is None or exchange.state != OPEN:
            return False
        handler = exchange.handler
        if not getattr(handler, "wants_data", False):
            return False
        handler.data_received(parameter, payload, f_ctl)
        return True

    def _els_request(self, frame) -> None:
        payload = frame.payload
        try:
            parsed = els.parse_els(payload)
        except DecodeError as exc:
            self._counters["bad_requests"] += 1
            known = bool(payload) and payload[0] in els.ElsCommand._value2member_map_
            reason = els.LsRjtReason.LOGICAL_ERROR if known else els.LsRjtReason.INVALID_COMMAND
            self.ls_rjt(frame, reason, els.EXPLAIN_NONE, f"bad ELS request: {exc}")
            return
        command = parsed["command"]
        if command == els.ElsCommand.LOGO:
            self.logo_received(frame, parsed)
        else:
            self.els_request(frame, command, parsed)

    def logo_received(self, frame, parsed: dict) -> None:
        """LOGO to one of our ports: LS_ACC, forget the login, end the pair's exchanges."""
        h = frame.header
        local_id, remote_id = h["d_id"], h["s_id"]
        self._counters["logo_received"] += 1
        self._log.info("{name}: LOGO from {remote} to {local}", name=self.name,
                       remote=format_port_id(remote_id), local=format_port_id(local_id))
        self.ls_acc(frame)
        self.forget_login(local_id, remote_id, "the peer logged out (LOGO)")
        self.logged_out(local_id, remote_id)

    # -- replies -----------------------------------------------------------------------
    def ls_acc(self, frame, payload: bytes | None = None, d_id: int | None = None) -> None:
        self.table.reply(frame, R_ELS_REPLY, TYPE_ELS,
                         els.build_ls_acc() if payload is None else payload, d_id)

    def ls_rjt(self, frame, reason: int, explanation: int, why: str) -> None:
        self._counters["ls_rjt_sent"] += 1
        h = frame.header
        self._log.warn("{name}: ELS 0x{command:02x} from {s_id} to {d_id} rejected (LS_RJT reason "
                       "0x{reason:02x} explanation 0x{explanation:02x}): {why}", name=self.name,
                       command=frame.payload[0] if frame.payload else 0,
                       s_id=format_port_id(h["s_id"]), d_id=format_port_id(h["d_id"]),
                       reason=int(reason), explanation=explanation, why=why)
        self.table.reply(frame, R_ELS_REPLY, TYPE_ELS, els.build_ls_rjt(reason, explanation))

    def ct_reply(self, frame, payload: bytes) -> None:
        self.table.reply(frame, R_CT_REPLY, TYPE_CT, payload)

    def ct_reject(self, frame, reason: int, explanation: int, why: str) -> None:
        self._counters["ct_rejects_sent"] += 1
        h = frame.header
        self._log.warn("{name}: CT request from {s_id} to {d_id} rejected (reason 0x{reason:02x} "
                       "explanation 0x{explanation:02x}): {why}", name=self.name,
                       s_id=format_port_id(h["s_id"]), d_id=format_port_id(h["d_id"]),
                       reason=reason, explanation=explanation, why=why)
        self.ct_reply(frame, ct.build_ct_reject(reason, explanation))

    def reject_not_logged_in(self, frame, what: str) -> None:
        """``what`` came from a port without PLOGI (+ PRLI): count, log, LOGO to it."""
        h = frame.header
        local_id, remote_id = h["d_id"], h["s_id"]
        self._counters["rejected_not_logged_in"] += 1
        self._log.warn("{name}: {what} from {remote} to {local}, which it is not logged in to; "
                       "answered with LOGO", name=self.name, what=what,
                       remote=format_port_id(remote_id), local=format_port_id(local_id))
        name = self.port_name(local_id)
        key = (local_id, remote_id)
        if name is None or key in self._logo_pending:
            return
        self._logo_pending.add(key)
        d = self.request(local_id, remote_id, R_ELS_REQUEST, TYPE_ELS,
                         els.build_logo(local_id, name), "LOGO")

        def done(result):
            self._logo_pending.discard(key)
            if isinstance(result, Failure):
                self._log.info("{name}: LOGO to {remote} got no LS_ACC: {why}", name=self.name,
                               remote=format_port_id(remote_id),
                               why=result.getErrorMessage())
        d.addBoth(done)

    # -- requests we originate ---------------------------------------------------------------
    def request(self, local_id: int, remote_id: int, r_ctl: int, fc_type: int, payload: bytes,
                what: str, timeout: float | None = None) -> Deferred:
        """Send a one-frame request on a new exchange; the Deferred fires with the reply frame."""
        handler = _Reply()
        try:
            exchange = self.table.originate(local_id, remote_id, handler, what, timeout)
        except ExchangeLimitReached as exc:
            return fail(exc)
        handler.exchange = exchange
        try:
            exchange.send(r_ctl, fc_type, payload, FIRST_SEQUENCE | SEQUENCE_INITIATIVE)
        except LinkDown as exc:
            exchange.close()
            return fail(exc)
        return handler.deferred
