"""The array's side of a RIO link: an N_Port that logs in and sends RIOs.

:class:`ArrayPort` performs, as the link comes up (``auto_login``), FLOGI to
0xFFFFFE and learns its N_Port ID from the LS_ACC's D_ID. ``session(wwn)``
then (once per partner, concurrent callers share the work):

1. PLOGI to the name server (0xFFFFFC), once per link;
2. GID_PN(wwn) -> the partner's port ID on this link (CT reject:
   :class:`~rcn.rio.errors.NameNotFound`);
3. PLOGI to that port (LS_RJT: :class:`~rcn.rio.errors.LoginRejected`) and
   PRLI offering the FCP initiator function, the target function when the
   array serves RIOs (``config.target``), and "write XFER_RDY disabled" when
   ``first_burst``. The accept tells whether our writes may send data at once.

A :class:`RioSession` sends ``write`` and ``execute`` to the partner port;
every failure (LS_RJT, CT reject, timeout, link down) fails the Deferred with
a RioError that says what and where. As a target, the array serves RIOs from
the edge (RIO WR when the edge applies a partner's writes) through
``config.target``, in the order received, honouring ORDERED task attributes
(:class:`rcn.rio.fcp.FcpTarget`). The edge uses the array's own login for that
direction (see :mod:`rcn.rio.fabric`); PLOGI and PRLI from other ports get
LS_RJT. ``logout()`` sends LOGO to every session's port and to the fabric;
``shutdown()`` also closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from datapath.frames import ct, els, fcp
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FABRIC_LOGIN_SERVER, NAME_SERVER
from datapath.frames.names import format_port_id, format_wwn
from rcn.rio.errors import NameNotFound, NotLoggedIn, ProtocolError, RioError
from rcn.rio.fcp import FcpInitiator, ScsiTarget
from rcn.rio.port import (R_CT_REPLY, R_CT_REQUEST, R_ELS_REQUEST, TYPE_CT, TYPE_ELS, FcEndpoint,
                          PortConfig, check_ls_acc)

_WELL_KNOWN = 0xFFFFF0


@dataclass(kw_only=True)
class ArrayConfig(PortConfig):
    """What an ArrayPort needs."""

    port_wwn: int                        # the array's WWPN
    node_wwn: int | None = None          # WWNN (default: the WWPN)
    target: ScsiTarget | None = None     # serves RIOs from the edge; None: initiator only
    first_burst: bool = True             # offer to send write data without XFER_RDY
    auto_login: bool = True              # FLOGI as soon as the link is up
    max_logins: int = 64                 # sessions (port logins) at a time


class _Shared:
    """One outcome, any number of waiters (each gets its own Deferred)."""

    def __init__(self, deferred: Deferred):
        self._waiters: list[Deferred] = []
        self.done = False
        self.result = None
        deferred.addBoth(self._fire)

    @property
    def failed(self) -> bool:
        return self.done and isinstance(self.result, Failure)

    def _fire(self, result) -> None:
        self.done, self.result = True, result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def wait(self) -> Deferred:
        if self.done:
            return fail(self.result) if self.failed else succeed(self.result)
        waiter = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter


class RioSession:
    """Logged in to one partner port (PLOGI + PRLI done): send RIOs to it."""

    def __init__(self, port: "ArrayPort", partner_wwn: int, login):
        self.port = port
        self.partner_wwn = partner_wwn
        self.login = login
        self.remote_id = login.remote_id

    def __repr__(self):
        return (f"<RioSession {format_wwn(self.partner_wwn)} at {format_port_id(self.remote_id)} "
                f"active={self.active}>")

    @property
    def active(self) -> bool:
        return self.port.login(self.port.port_id, self.remote_id) is self.login

    @property
    def write_xfer_rdy_disabled(self) -> bool:
        return self.login.write_xfer_rdy_disabled

    def write(self, lun: int, lba: int, data, attribute: int = fcp.TaskAttribute.SIMPLE,
              fua: bool = False) -> Deferred:
        """RIO WR: WRITE(16) of ``data`` at ``lba``; Deferred[ScsiResult] (GOOD = WROK)."""
        return self.port.initiator.write(self.remote_id, lun, lba, data, attribute, fua)

    def execute(self, lun: int, cdb: bytes, data_out=b"", data_in_length: int = 0,
                attribute: int = fcp.TaskAttribute.SIMPLE) -> Deferred:
        """Any CDB (RCN CONTROL with its data-in...); Deferred[ScsiResult]."""
        return self.port.initiator.execute(self.remote_id, lun, cdb, data_out, data_in_length,
                                           attribute)

    def logout(self) -> Deferred:
        """LOGO to the partner port; the session ends either way."""
        return ensureDeferred(self.port._logo(self.remote_id))


class ArrayPort(FcEndpoint):
    """The array's end of one FCIP link (see the module doc)."""

    _log = Logger()

    def __init__(self, clock, config: ArrayConfig):
        super().__init__(clock, config, f"array {format_wwn(config.port_wwn)}")
        self.config = config
        self.node_wwn = config.node_wwn if config.node_wwn is not None else config.port_wwn
        self.port_id: int | None = None
        self.fabric_name: int | None = None
        self.initiator = FcpInitiator(self, 0, max_transfer=config.max_transfer)
        self.sessions: dict[int, RioSession] = {}
        self._fabric: _Shared | None = None
        self._name_server: _Shared | None = None
        self._opening: dict[int, _Shared] = {}

    def initiators(self) -> list:
        return [self.initiator]

    # -- link ------------------------------------------------------------------------------
    def link_up(self, link) -> None:
        super().link_up(link)
        if self.config.auto_login:
            self.fabric_login().addErrback(self._login_failed)

    def _login_failed(self, failure: Failure) -> None:
        self._log.warn("{name}: fabric login failed: {why}", name=self.name,
                       why=failure.getErrorMessage())

    def link_down(self, reason: str) -> None:
        self.sessions.clear()
        self._fabric = self._name_server = None
        self.port_id = None
        super().link_down(reason)

    # -- hooks -------------------------------------------------------------------------------
    def port_name(self, local_id: int) -> int | None:
        return self.config.port_wwn if local_id == self.port_id and local_id is not None else None

    def scsi_target(self, local_id: int):
        if local_id != self.port_id or self.config.target is None:
            return None
        return self.config.target, self.config.port_wwn

    def els_request(self, frame, command: int, parsed: dict) -> None:
        self.ls_rjt(frame, els.LsRjtReason.NOT_SUPPORTED, els.EXPLAIN_NONE,
                    f"the array accepts no {parsed['command_name']}: the edge uses the array's "
                    f"own login for both directions")

    def logged_out(self, local_id: int, remote_id: int) -> None:
        for wwn, session in list(self.sessions.items()):
            if session.remote_id == remote_id:
                del self.sessions[wwn]

    # -- logins ------------------------------------------------------------------------------
    def fabric_login(self) -> Deferred:
        """FLOGI (once per link); Deferred[our N_Port ID]."""
        if self._fabric is None or self._fabric.failed:
            self._fabric = _Shared(ensureDeferred(self._flogi()))
        return self._fabric.wait()

    async def _flogi(self) -> int:
        reply = await self.request(0, FABRIC_LOGIN_SERVER, R_ELS_REQUEST, TYPE_ELS,
                                   els.build_login(els.ElsCommand.FLOGI, self.config.port_wwn,
                                                   self.node_wwn), "FLOGI")
        accept = check_ls_acc(reply, "FLOGI", FABRIC_LOGIN_SERVER)
        port_id = reply.header["d_id"]
        if not 0 < port_id < _WELL_KNOWN:
            raise ProtocolError(f"rio: FLOGI LS_ACC assigned N_Port ID {format_port_id(port_id)}")
        self.port_id = port_id
        self.initiator.local_id = port_id
        self.fabric_name = accept.get("node_name")
        self._log.info("{name}: fabric login done, N_Port ID {port_id}", name=self.name,
                       port_id=format_port_id(port_id))
        return port_id

    def _name_server_login(self) -> Deferred:
        if self._name_server is None or self._name_server.failed:
            self._name_server = _Shared(ensureDeferred(self._plogi_name_server()))
        return self._name_server.wait()

    async def _plogi_name_server(self) -> None:
        await self.fabric_login()
        reply = await self.request(self.port_id, NAME_SERVER, R_ELS_REQUEST, TYPE_ELS,
                                   els.build_login(els.ElsCommand.PLOGI, self.config.port_wwn,
                                                   self.node_wwn), "PLOGI")
        check_ls_acc(reply, "PLOGI", NAME_SERVER)

    def lookup(self, wwn: int) -> Deferred:
        """GID_PN at the name server; Deferred[port ID] or NameNotFound."""
        return ensureDeferred(self._gid_pn(wwn))

    async def _gid_pn(self, wwn: int) -> int:
        await self._name_server_login()
        reply = await self.request(self.port_id, NAME_SERVER, R_CT_REQUEST, TYPE_CT,
                                   ct.build_gid_pn(wwn), "GID_PN")
        if reply.header["r_ctl"] != R_CT_REPLY:
            raise ProtocolError(f"rio: GID_PN answered with R_CTL 0x{reply.header['r_ctl']:02x}")
        try:
            answer = ct.parse_ct(reply.payload, request=False)
        except DecodeError as exc:
            raise ProtocolError(f"rio: GID_PN {format_wwn(wwn)}: bad reply: {exc}") from None
        if answer["command"] != ct.CtCommand.ACCEPT or "port_id" not in answer:
            raise NameNotFound(wwn, answer.get("reason", 0), answer.get("explanation", 0))
        return answer["port_id"]

    def session(self, partner_wwn: int) -> Deferred:
        """Deferred[RioSession] with the partner storage ``partner_wwn`` (see the module doc)."""
        session = self.sessions.get(partner_wwn)
        if session is not None and session.active:
            return succeed(session)
        shared = self._opening.get(partner_wwn)
        if shared is None or shared.done:
            d = ensureDeferred(self._open_session(partner_wwn))
            shared = self._opening[partner_wwn] = _Shared(d)
            d.addBoth(self._opened, partner_wwn, shared)
        return shared.wait()

    def _opened(self, result, wwn: int, shared: _Shared) -> None:
        if self._opening.get(wwn) is shared:
            del self._opening[wwn]

    async def _open_session(self, wwn: int) -> RioSession:
        await self.fabric_login()
        remote_id = await self.lookup(wwn)
        local_id = self.port_id
        reply = await self.request(local_id, remote_id, R_ELS_REQUEST, TYPE_ELS,
                                   els.build_login(els.ElsCommand.PLOGI, self.config.port_wwn,
                                                   self.node_wwn), "PLOGI")
        accept = check_ls_acc(reply, "PLOGI", remote_id)
        if accept.get("port_name") != wwn:
            raise ProtocolError(f"rio: PLOGI to {format_port_id(remote_id)} answered by port "
                                f"{format_wwn(accept.get('port_name', 0))}, not {format_wwn(wwn)}")
        login = self.add_login(local_id, remote_id, accept["port_name"], accept["node_name"])
        if login is None:
            raise NotLoggedIn(f"rio: cannot log in to {format_wwn(wwn)}: {self.max_logins} "
                              f"sessions open (max_logins)")
        offer = els.FCP_INITIATOR_FUNCTION
        if self.config.target is not None:
            offer |= els.FCP_TARGET_FUNCTION
        if self.config.first_burst:
            offer |= els.FCP_WRITE_XFER_RDY_DISABLED
        reply = await self.request(local_id, remote_id, R_ELS_REQUEST, TYPE_ELS,
                                   els.build_prli(offer), "PRLI")
        accept = check_ls_acc(reply, "PRLI", remote_id)
        if accept.get("response_code") != els.PRLI_REQUEST_EXECUTED:
            raise ProtocolError(f"rio: PRLI to {format_port_id(remote_id)} not executed "
                                f"(response code {accept.get('response_code')})")
        if self.login(local_id, remote_id) is not login:
            raise NotLoggedIn(f"rio: login to {format_wwn(wwn)} ended during PRLI")
        params = accept["service_params"]
        login.prli = True
        login.remote_params = params
        login.target = bool(params & els.FCP_TARGET_FUNCTION)
        login.initiator = bool(params & els.FCP_INITIATOR_FUNCTION)
        login.write_xfer_rdy_disabled = (self.config.first_burst
                                         and bool(params & els.FCP_WRITE_XFER_RDY_DISABLED))
        if not login.target:
            raise NotLoggedIn(f"rio: {format_wwn(wwn)} at {format_port_id(remote_id)} offers no "
                              f"FCP target function")
        session = self.sessions[wwn] = RioSession(self, wwn, login)
        self._log.info("{name}: session with {wwn} at {remote} (write XFER_RDY {xfer})",
                       name=self.name, wwn=format_wwn(wwn), remote=format_port_id(remote_id),
                       xfer="disabled" if login.write_xfer_rdy_disabled else "used")
        return session

    # -- logging out -------------------------------------------------------------------------
    async def _logo(self, remote_id: int) -> None:
        local_id = self.port_id
        if local_id is None:
            return
        try:
            reply = await self.request(local_id, remote_id, R_ELS_REQUEST, TYPE_ELS,
                                       els.build_logo(local_id, self.config.port_wwn), "LOGO")
            check_ls_acc(reply, "LOGO", remote_id)
        finally:
            if remote_id == FABRIC_LOGIN_SERVER:          # out of the fabric: every login ends
                for local, remote in list(self.logins):
                    self.forget_login(local, remote, "we logged out of the fabric (LOGO)")
                self.sessions.clear()
                self._fabric = self._name_server = None
            else:
                self.forget_login(local_id, remote_id, "we logged out (LOGO)")
                self.logged_out(local_id, remote_id)

    def logout(self) -> Deferred:
        """LOGO to every session's port, then to the fabric; failures are logged, not raised."""
        return ensureDeferred(self._logout_all())

    async def _logout_all(self) -> None:
        for session in list(self.sessions.values()):
            try:
                await self._logo(session.remote_id)
            except RioError as exc:
                self._log.warn("{name}: {why}", name=self.name, why=str(exc))
        if self.port_id is not None and self.link is not None:
            try:
                await self._logo(FABRIC_LOGIN_SERVER)
            except RioError as exc:
                self._log.warn("{name}: {why}", name=self.name, why=str(exc))

    def shutdown(self) -> Deferred:
        """Log out, then close the connection."""
        d = self.logout()

        def close(_):
            if self.link is not None:
                self.link.close("array shut down")
        return d.addCallback(close)
