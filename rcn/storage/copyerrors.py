"""How the remote copy program (:mod:`rcn.storage.remotecopy`) refuses or fails.

The host commands fail their Deferred with one of these (the control API answers
``http_status``); a host write a pair's state forbids raises
:class:`HostWriteRefused`. A partner's refusal may carry the target edge's
residual report (``fcp.RCN_RESIDUAL_REPORT``): :func:`residual_of` reads it.
"""

from __future__ import annotations

import errno

from datapath.frames import fcp
from rcn.rio.fcp import ScsiResult
from rcn.storage.volume import VolumeError

RESIDUAL_SIZE = fcp.RCN_RESIDUAL_REPORT.size


class RemoteCopyError(Exception):
    """A host command that failed; ``http_status`` is what the control API answers."""
    http_status = 500


class BadRequest(RemoteCopyError, ValueError):
    http_status = 400


class NotFound(RemoteCopyError, LookupError):
    http_status = 404

    def __str__(self):            # LookupError would quote the message
        return self.args[0] if self.args else ""


class Conflict(RemoteCopyError):
    """The command does not fit this array's side of the pair (role, a command running)."""
    http_status = 409


class Busy(Conflict):
    """Another host command of the pair is still running."""


class PartnerRefused(Conflict):
    """The partner (or an edge on the way) answered CHECK CONDITION; ``result`` is the answer."""

    def __init__(self, message: str, result: ScsiResult, residual: dict | None = None):
        super().__init__(message)
        self.result = result
        self.residual = residual


class PartnerUnreachable(RemoteCopyError):
    """No answer: no link to the edge, a login failed, the exchange timed out."""
    http_status = 503


class HostWriteRefused(VolumeError):
    """A host write the pair's state forbids (NBD answers EPERM)."""

    def __init__(self, message: str):
        super().__init__(errno.EPERM, message)


def format_residual(r: dict) -> str:
    return (f"the target edge applied up to sequence {r['applied']}, received up to "
            f"{r['received_max']}, discarded {r['discarded']}, knows {r['known_missing']} missing")


def residual_of(result: ScsiResult) -> dict | None:
    """The residual report an answer carries, or None."""
    if len(result.data_in) != RESIDUAL_SIZE:
        return None
    return fcp.parse_residual_report(bytes(result.data_in))
