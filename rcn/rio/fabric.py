"""The edge's side of a RIO link: F_Port, name server and virtual storage ports.

A :class:`FabricPort` is what an attached array sees as its fabric (one per
FCIP connection):

* **FLOGI** (to 0xFFFFFE): LS_ACC with the fabric's names and the F_Port bit,
  sent to the N_Port ID the edge assigns the array (``array_id_base`` + the
  link number); the array's WWPN is recorded. An array that may use no
  virtual storage at all (access table 405) gets LS_RJT instead.
* **Name server** (0xFFFFFC): PLOGI is accepted; GID_PN(wwpn) answers the
  port ID of a virtual storage on this edge that the array may use, or the
  array's own, and a CT reject (unable to perform, port ID not registered)
  for anything else: a virtual storage the array may not use is not revealed.
* **PLOGI to a virtual storage port**: LS_ACC with the virtual storage's
  names, or LS_RJT (unable to perform, invalid port name) when table 405 does
  not allow the pair (logged, ``access_denied``).
* **PRLI**: LS_ACC establishing the image pair with the FCP target and
  initiator functions, and "write XFER_RDY disabled" when ``first_burst``.
* **LOGO**: LS_ACC; a LOGO to a virtual storage port forgets that login and
  aborts the pair's open exchanges, a LOGO to the fabric forgets them all.
* Every other ELS, and anything before FLOGI, gets LS_RJT (counted, logged).
* Access is checked at FLOGI, GID_PN and PLOGI; after a change of the table,
  :meth:`FabricPort.recheck_access` (or the factory's) logs out the pairs it
  no longer allows.

A :class:`VirtualStorage` (a table 404 row bound to this link, with the port
ID it has here) serves SCSI through its ``target`` (:class:`rcn.rio.fcp.ScsiTarget`;
the data plane sets it, e.g. from ``FabricConfig.attach``): RIO WR write
exchanges and pair control RIOs (RCN CONTROL) arrive there as
:class:`~rcn.rio.fcp.ScsiCommand`.

Edge -> array RIOs (the target edge applying writes): ``send_write`` and
``send_command`` originate exchanges from the virtual storage's port to the
array's N_Port on the same link. **Choice:** the array's own PLOGI + PRLI to
the virtual storage port establishes both directions, as an FC N_Port login
does: the edge's PRLI accept offers the initiator function too, and the edge
sends commands to the array only if the array's PRLI offered the target
function (otherwise :class:`~rcn.rio.errors.NotLoggedIn`). The edge does not
log in to the array itself. In this direction the edge sends write data at once
when the PRLI disabled write XFER_RDY (the array asked for it and the edge's
``first_burst`` granted it: one agreement for both directions of the image
pair), and otherwise waits for the array's XFER_RDY.

Virtual WWN variant (DESIGN 3.1, 【0093】-【0098】): a virtual storage whose
``wwn`` differs from its ``partner_wwn`` is what the array sees under its own
name; commands carry ``target_wwn`` = the virtual WWN, and the data plane
translates with :attr:`VirtualStorage.partner_wwn` (``is_virtual_wwn``) in
both directions. Nothing on the FC side changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from twisted.logger import Logger

from datapath.frames import ct, els, fcp
from datapath.frames.errors import DecodeError
from datapath.frames.fc import FABRIC_LOGIN_SERVER, NAME_SERVER
from datapath.frames.names import format_port_id, format_wwn
from rcn.rio.errors import ExchangeAborted
from rcn.rio.fcp import FcpInitiator, ScsiTarget
from rcn.rio.port import (CT_REASON_INVALID_COMMAND, CT_REASON_NOT_SUPPORTED, R_ELS_REQUEST,
                          TYPE_ELS, FcEndpoint, PortConfig)

ACCEPT_PARAMS = els.FCP_TARGET_FUNCTION | els.FCP_INITIATOR_FUNCTION
_WELL_KNOWN = 0xFFFFF0


@dataclass(kw_only=True)
class VirtualStorageEntry:
    """One row of the virtual storage table 404 (the edge ID is this edge's)."""

    wwn: int                          # the WWPN the array sees
    partner_wwn: int                  # the real partner storage's WWPN
    partner_edge_id: str = ""         # the edge the partner is attached to
    node_wwn: int | None = None       # WWNN to show (default: the WWPN)


def access_table(rows: Iterable[tuple[int, int]]) -> Callable[[int, int], bool]:
    """``access(array_wwn, virtual_wwn)`` from table 405 rows
    ``(virtual_wwn, allowed_array_wwn)``."""
    allowed = frozenset((array, virtual) for virtual, array in rows)

    def access(array_wwn: int, virtual_wwn: int) -> bool:
        return (array_wwn, virtual_wwn) in allowed
    return access


@dataclass(kw_only=True)
class FabricConfig(PortConfig):
    """What a FabricPort needs; every link of an edge shares one."""

    virtual_storages: Sequence[VirtualStorageEntry]
    access: Callable[[int, int], bool]          # table 405: access(array_wwn, virtual_wwn)
    first_burst: bool = True                    # PRLI accept disables write XFER_RDY
    array_id_base: int = 0x010100               # N_Port ID of the array on link n: base + n
    virtual_id_base: int = 0x010200             # port ID of virtual storage i: base + i
    max_links: int = 64                         # FCIP connections at a time
    fabric_name: int = 0x10000000C9E00000       # switch WWNN
    fabric_port_name: int = 0x20000000C9E00000  # F_Port WWPN
    name_server_name: int = 0x20FC0000C9E00000  # name server WWPN
    attach: Callable[["VirtualStorage"], None] | None = field(default=None)

    def __post_init__(self):
        wwns = [entry.wwn for entry in self.virtual_storages]
        if len(set(wwns)) != len(wwns):
            raise ValueError("fabric: virtual storage WWNs are not unique")
        arrays = range(self.array_id_base, self.array_id_base + self.max_links)
        virtuals = range(self.virtual_id_base, self.virtual_id_base + len(wwns))
        for label, ids in (("array_id_base", arrays), ("virtual_id_base", virtuals)):
            if ids and not (0 < ids[0] and ids[-1] < _WELL_KNOWN):
                raise ValueError(f"fabric: {label} gives port IDs outside 0x000001..0xffffef")
        if set(arrays) & set(virtuals):
            raise ValueError("fabric: array and virtual storage port IDs overlap; move "
                             "array_id_base or virtual_id_base")


class VirtualStorage:
    """A virtual storage (table 404 row) on one link (see the module doc)."""

    def __init__(self, port: "FabricPort", entry: VirtualStorageEntry, port_id: int):
        self.port = port
        self.entry = entry
        self.port_id = port_id
        self.wwn = entry.wwn
        self.node_wwn = entry.node_wwn if entry.node_wwn is not None else entry.wwn
        self.partner_wwn = entry.partner_wwn
        self.partner_edge_id = entry.partner_edge_id
        self.target: ScsiTarget = ScsiTarget()
        self.initiator = FcpInitiator(port, port_id, max_transfer=port.config.max_transfer)

    def __repr__(self):
        return f"<VirtualStorage {format_wwn(self.wwn)} at {format_port_id(self.port_id)}>"

    @property
    def is_virtual_wwn(self) -> bool:
        """True when the array sees a WWN of its own, not the partner's (translation needed)."""
        return self.wwn != self.partner_wwn

    @property
    def array_logged_in(self) -> bool:
        login = self.port.login(self.port_id, self.port.array_id)
        return login is not None and login.prli

    def send_write(self, lun: int, lba: int, data, attribute: int = fcp.TaskAttribute.ORDERED,
                   fua: bool = False):
        """RIO WR to the array: WRITE(16) from this port; Deferred[ScsiResult]."""
        return self.initiator.write(self.port.array_id, lun, lba, data, attribute, fua)

    def send_command(self, lun: int, cdb: bytes, data_out=b"", data_in_length: int = 0,
                     attribute: int = fcp.TaskAttribute.SIMPLE):
        """Any CDB (RCN CONTROL...) to the array from this port; Deferred[ScsiResult]."""
        return self.initiator.execute(self.port.array_id, lun, cdb, data_out, data_in_length,
                                      attribute)


class FabricPort(FcEndpoint):
    """The edge's end of one FCIP link (see the module doc)."""

    _log = Logger()

    def __init__(self, clock, config: FabricConfig, index: int = 0):
        super().__init__(clock, config, f"edge link {index}")
        self.config = config
        self.index = index
        self.array_id = config.array_id_base + index
        self.array_wwn: int | None = None
        self.array_node_wwn: int | None = None
        self.fabric_logged_in = False
        self.name_server_logged_in = False
        self.virtual_storages = [VirtualStorage(self, entry, config.virtual_id_base + i)
                                 for i, entry in enumerate(config.virtual_storages)]
        self._by_id = {vs.port_id: vs for vs in self.virtual_storages}
        self._by_wwn = {vs.wwn: vs for vs in self.virtual_storages}
        self._counters.update(access_denied=0, access_revoked=0, not_logged_in=0,
                              unknown_destination=0, names_not_found=0)
        if config.attach is not None:
            for vs in self.virtual_storages:
                config.attach(vs)

    def initiators(self) -> list:
        return [vs.initiator for vs in self.virtual_storages]

    def virtual_storage(self, wwn: int) -> VirtualStorage | None:
        return self._by_wwn.get(wwn)

    # -- hooks -------------------------------------------------------------------------------
    def port_name(self, local_id: int) -> int | None:
        vs = self._by_id.get(local_id)
        if vs is not None:
            return vs.wwn
        return {NAME_SERVER: self.config.name_server_name,
                FABRIC_LOGIN_SERVER: self.config.fabric_port_name}.get(local_id)

    def scsi_target(self, local_id: int):
        vs = self._by_id.get(local_id)
        return None if vs is None else (vs.target, vs.wwn)

    def _allowed(self, vs: VirtualStorage) -> bool:
        return bool(self.config.access(self.array_wwn, vs.wwn))

    def _deny(self, frame, why: str) -> None:
        self._counters["access_denied"] += 1
        self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_INVALID_PORT_NAME, why)

    # -- extended link services --------------------------------------------------------------
    def els_request(self, frame, command: int, parsed: dict) -> None:
        s_id = frame.header["s_id"]
        if command == els.ElsCommand.FLOGI:
            self._flogi(frame, parsed)
            return
        if not self.fabric_logged_in or s_id != self.array_id:
            self._counters["not_logged_in"] += 1
            self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_NOT_LOGGED_IN,
                        f"{parsed['command_name']} before FLOGI (S_ID {format_port_id(s_id)})")
            return
        if command == els.ElsCommand.PLOGI:
            self._plogi(frame, parsed)
        elif command == els.ElsCommand.PRLI:
            self._prli(frame, parsed)
        else:
            super().els_request(frame, command, parsed)

    def _flogi(self, frame, parsed: dict) -> None:
        h = frame.header
        wwn = parsed["port_name"]
        if h["d_id"] != FABRIC_LOGIN_SERVER:
            self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_NONE,
                        f"FLOGI addressed to {format_port_id(h['d_id'])}")
            return
        if not any(self.config.access(wwn, vs.wwn) for vs in self.virtual_storages):
            self._deny(frame, f"FLOGI from {format_wwn(wwn)}, which may use no virtual storage "
                              f"on this edge (access control table)")
            return
        if self.fabric_logged_in:
            self._fabric_logout("implicit logout by a new FLOGI")
        self.array_wwn = wwn
        self.array_node_wwn = parsed["node_name"]
        self.fabric_logged_in = True
        self._log.info("{name}: FLOGI from {wwn}: N_Port ID {port_id}", name=self.name,
                       wwn=format_wwn(wwn), port_id=format_port_id(self.array_id))
        self.ls_acc(frame, els.build_login(els.ElsCommand.LS_ACC, self.config.fabric_port_name,
                                           self.config.fabric_name, fabric=True),
                    d_id=self.array_id)

    def _plogi(self, frame, parsed: dict) -> None:
        d_id = frame.header["d_id"]
        if parsed["port_name"] != self.array_wwn:
            self._deny(frame, f"PLOGI names port {format_wwn(parsed['port_name'])}, FLOGI named "
                              f"{format_wwn(self.array_wwn)}")
            return
        if d_id == NAME_SERVER:
            self.name_server_logged_in = True
            self.ls_acc(frame, els.build_login(els.ElsCommand.LS_ACC, self.config.name_server_name,
                                               self.config.fabric_name))
            return
        vs = self._by_id.get(d_id)
        if vs is None:
            self._counters["unknown_destination"] += 1
            self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_NONE,
                        f"no port {format_port_id(d_id)} on this edge")
            return
        if not self._allowed(vs):
            self._deny(frame, f"array {format_wwn(self.array_wwn)} may not use virtual storage "
                              f"{format_wwn(vs.wwn)} (access control table)")
            return
        if self.add_login(d_id, self.array_id, self.array_wwn, parsed["node_name"]) is None:
            self.ls_rjt(frame, els.LsRjtReason.LOGICAL_BUSY, els.EXPLAIN_NONE,
                        f"login table full ({self.max_logins})")
            return
        self.ls_acc(frame, els.build_login(els.ElsCommand.LS_ACC, vs.wwn, vs.node_wwn))

    def _prli(self, frame, parsed: dict) -> None:
        d_id = frame.header["d_id"]
        login = self.login(d_id, self.array_id)
        if login is None:
            self._counters["not_logged_in"] += 1
            self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_NOT_LOGGED_IN,
                        f"PRLI to {format_port_id(d_id)} without PLOGI")
            return
        if parsed.get("type_code") != els.FC4_TYPE_FCP:
            self.ls_rjt(frame, els.LsRjtReason.UNABLE_TO_PERFORM, els.EXPLAIN_NONE,
                        f"PRLI for FC-4 type 0x{parsed.get('type_code', 0):02x}, not FCP")
            return
        params = parsed["service_params"]
        login.prli = True
        login.remote_params = params
        login.initiator = bool(params & els.FCP_INITIATOR_FUNCTION)
        login.target = bool(params & els.FCP_TARGET_FUNCTION)
        # The image pair serves both directions: when both sides agreed to disable write
        # XFER_RDY, the edge's writes to the array send their data at once as well.
        agreed = self.config.first_burst and bool(params & els.FCP_WRITE_XFER_RDY_DISABLED)
        login.write_xfer_rdy_disabled = agreed
        accept = ACCEPT_PARAMS | (els.FCP_WRITE_XFER_RDY_DISABLED if self.config.first_burst else 0)
        self.ls_acc(frame, els.build_prli(accept, accept=True))

    def logo_received(self, frame, parsed: dict) -> None:
        h = frame.header
        if h["s_id"] == self.array_id and h["d_id"] in (FABRIC_LOGIN_SERVER, NAME_SERVER):
            self._counters["logo_received"] += 1
            self.ls_acc(frame)
            if h["d_id"] == NAME_SERVER:
                self.name_server_logged_in = False
            else:
                self._fabric_logout("the array logged out of the fabric (LOGO)")
            return
        super().logo_received(frame, parsed)

    def recheck_access(self) -> int:
        """Apply a changed access table (``config.access``) to the logins in place.

        A virtual storage the array may no longer use logs the array out: its
        login and open exchanges end and a LOGO goes to the array. Returns the
        number of logins withdrawn (``access_revoked``).
        """
        revoked = 0
        for vs in self.virtual_storages:
            if self.login(vs.port_id, self.array_id) is None or self._allowed(vs):
                continue
            revoked += 1
            self._counters["access_revoked"] += 1
            self._log.warn("{name}: array {array} may no longer use virtual storage {vs}: LOGO",
                           name=self.name, array=format_wwn(self.array_wwn), vs=format_wwn(vs.wwn))
            self.forget_login(vs.port_id, self.array_id, "access withdrawn (access control table)")
            d = self.request(vs.port_id, self.array_id, R_ELS_REQUEST, TYPE_ELS,
                             els.build_logo(vs.port_id, vs.wwn), "LOGO")
            d.addErrback(lambda failure: self._log.info("{name}: LOGO not answered: {why}",
                                                        name=self.name,
                                                        why=failure.getErrorMessage()))
        return revoked

    def reconfigure(self, config: FabricConfig) -> tuple[int, int]:
        """New tables 404 and 405 (from the management server) for this live link.

        Virtual storages that are gone, or now stand for another partner, log the
        array out and disappear; new ones get free port IDs (existing ones keep
        theirs) and the name server finds them; then ``recheck_access`` withdraws
        logins the new access table refuses. Returns (added, removed).
        """
        self.config = config
        wanted = {entry.wwn: entry for entry in config.virtual_storages}
        removed = 0
        for vs in list(self.virtual_storages):
            if wanted.get(vs.wwn) != vs.entry:
                self._withdraw(vs, "virtual storage removed (table 404)")
                removed += 1
        used = {vs.port_id for vs in self.virtual_storages}
        free = (config.virtual_id_base + i for i in range(len(used) + len(wanted)))
        added = 0
        for entry in config.virtual_storages:
            if entry.wwn in self._by_wwn:
                continue
            port_id = next(i for i in free if i not in used)
            vs = VirtualStorage(self, entry, port_id)
            self.virtual_storages.append(vs)
            self._by_id[port_id] = vs
            self._by_wwn[vs.wwn] = vs
            if config.attach is not None:
                config.attach(vs)
            added += 1
        self.recheck_access()
        return added, removed

    def _withdraw(self, vs: VirtualStorage, why: str) -> None:
        if self.login(vs.port_id, self.array_id) is not None:
            self.forget_login(vs.port_id, self.array_id, why)
            d = self.request(vs.port_id, self.array_id, R_ELS_REQUEST, TYPE_ELS,
                             els.build_logo(vs.port_id, vs.wwn), "LOGO")
            d.addErrback(lambda failure: self._log.info("{name}: LOGO not answered: {why}",
                                                        name=self.name,
                                                        why=failure.getErrorMessage()))
        self.virtual_storages.remove(vs)
        del self._by_id[vs.port_id]
        del self._by_wwn[vs.wwn]

    def _fabric_logout(self, why: str) -> None:
        self.logins.clear()
        self.table.end_all(ExchangeAborted("open exchanges", self.array_id, why))
        self.fabric_logged_in = self.name_server_logged_in = False

    # -- name server -------------------------------------------------------------------------
    def ct_request(self, frame) -> None:
        h = frame.header
        if h["d_id"] != NAME_SERVER:
            self.ct_reject(frame, CT_REASON_NOT_SUPPORTED, 0,
                           f"no CT server at {format_port_id(h['d_id'])}")
            return
        if not (self.fabric_logged_in and self.name_server_logged_in
                and h["s_id"] == self.array_id):
            self._counters["not_logged_in"] += 1
            self.ct_reject(frame, ct.REASON_UNABLE, 0, "query before FLOGI and name server PLOGI")
            return
        try:
            query = ct.parse_ct(frame.payload, request=True)
        except DecodeError as exc:
            self._counters["bad_requests"] += 1
            self.ct_reject(frame, CT_REASON_INVALID_COMMAND, 0, f"bad CT request: {exc}")
            return
        if query["command"] != ct.CtCommand.GID_PN or "port_name" not in query:
            self.ct_reject(frame, CT_REASON_NOT_SUPPORTED, 0,
                           f"name server command {query['command_name']} is not supported")
            return
        wwn = query["port_name"]
        vs = self._by_wwn.get(wwn)
        if vs is not None and self._allowed(vs):
            self.ct_reply(frame, ct.build_gid_pn_accept(vs.port_id))
        elif wwn == self.array_wwn:
            self.ct_reply(frame, ct.build_gid_pn_accept(self.array_id))
        else:
            if vs is not None:
                self._counters["access_denied"] += 1
            else:
                self._counters["names_not_found"] += 1
            self.ct_reject(frame, ct.REASON_UNABLE, ct.EXPLAIN_PORT_ID_NOT_REGISTERED,
                           f"GID_PN {format_wwn(wwn)}: " + (
                               "not allowed for this array (access control table)"
                               if vs is not None else "no such port on this edge"))
