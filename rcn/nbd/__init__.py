"""NBD front end: a fixed-newstyle NBD server for volumes and virtual volumes.

``rcn.nbd.protocol`` holds the wire format, ``rcn.nbd.export`` the ``Export``
interface, ``VolumeExport`` and ``ExportTable``, ``rcn.nbd.session`` the
per-connection state machine and its limits, ``rcn.nbd.server`` the Twisted
protocol and factory. ``python -m rcn.nbd`` runs a standalone server.
"""

from rcn.nbd.export import Export, ExportTable, NbdError, VolumeExport, error_code
from rcn.nbd.server import NbdServerFactory, NbdServerProtocol
from rcn.nbd.session import NbdSession, ServerLimits

__all__ = ["Export", "ExportTable", "NbdError", "NbdServerFactory", "NbdServerProtocol",
           "NbdSession", "ServerLimits", "VolumeExport", "error_code"]
