"""Exceptions of the RIO channel: what a caller's Deferred fails with.

Every message names the layer, the peer (N_Port IDs as tshark prints them,
WWNs as colon-separated hex) and what to do where there is something to do.
"""

from __future__ import annotations

from datapath.frames.names import format_port_id, format_wwn


class RioError(Exception):
    """Base class of every RIO channel error."""


class LinkDown(RioError):
    """The FCIP connection is gone (or was never up); open exchanges end with this."""

    def __init__(self, reason: str):
        super().__init__(f"rio: FCIP link down: {reason}")
        self.reason = reason


class ExchangeTimeout(RioError):
    """No answer within the exchange timeout (ABTS was sent for an exchange we originated)."""

    def __init__(self, what: str, peer: int, seconds: float):
        super().__init__(f"rio: {what} with {format_port_id(peer)} got no answer in {seconds:g} s")
        self.what = what
        self.peer = peer
        self.seconds = seconds


class ExchangeAborted(RioError):
    """The exchange was aborted (ABTS from the peer, LOGO, or our own cancellation)."""

    def __init__(self, what: str, peer: int, why: str):
        super().__init__(f"rio: {what} with {format_port_id(peer)} aborted: {why}")
        self.what = what
        self.peer = peer
        self.why = why


class ExchangeLimitReached(RioError):
    """The exchange table is full: the new exchange was refused, nothing was sent."""

    def __init__(self, limit: int, what: str):
        super().__init__(f"rio: cannot start {what}: {limit} exchanges already open "
                         f"(max_exchanges); retry when some complete")
        self.limit = limit


class LoginRejected(RioError):
    """A login (FLOGI, PLOGI, PRLI) or LOGO was answered with LS_RJT."""

    def __init__(self, command: str, peer: int, reason: int, explanation: int):
        super().__init__(f"rio: {command} to {format_port_id(peer)} rejected: LS_RJT reason "
                         f"0x{reason:02x} explanation 0x{explanation:02x}")
        self.command = command
        self.peer = peer
        self.reason = reason
        self.explanation = explanation


class NameNotFound(RioError):
    """The name server does not know (or will not tell us) the port name."""

    def __init__(self, wwn: int, reason: int = 0, explanation: int = 0):
        super().__init__(f"rio: name server has no port for {format_wwn(wwn)} (CT reject reason "
                         f"0x{reason:02x} explanation 0x{explanation:02x}); check the virtual "
                         f"storage and access control tables of the edge")
        self.wwn = wwn
        self.reason = reason
        self.explanation = explanation


class NotLoggedIn(RioError):
    """An operation needs a login (FLOGI, PLOGI + PRLI) that is not in place."""


class ProtocolError(RioError):
    """The peer broke the FC/FCP rules inside an exchange (bad offsets, bad answer)."""
