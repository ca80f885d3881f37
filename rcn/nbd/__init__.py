"""NBD front end: a fixed-newstyle NBD server for volumes and virtual volumes.

``rcn.nbd.protocol`` holds the wire format, ``rcn.nbd.export`` the ``Export``
interface, the ``BlockVolume`` protocol a served volume implements,
``VolumeExport`` and ``ExportTable``, ``rcn.nbd.session`` the per-connection
object and its limits, ``rcn.nbd.handshake`` and ``rcn.nbd.transmission`` its
two phases' state machines, ``rcn.nbd.server`` the Twisted protocol and
factory. ``python -m rcn.storage.nbdserve`` runs a standalone server over the
storage emulator's volumes.
"""

from rcn.nbd.export import Export, ExportTable, NbdError, VolumeExport, error_code
from rcn.nbd.server import NbdServerFactory, NbdServerProtocol
from rcn.nbd.session import NbdSession, ServerLimits

__all__ = ["Export", "ExportTable", "NbdError", "NbdServerFactory", "NbdServerProtocol",
           "NbdSession", "ServerLimits", "VolumeExport", "error_code"]
