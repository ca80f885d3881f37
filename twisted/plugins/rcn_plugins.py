"""twistd plugins, one ServiceMaker per RCN role (DESIGN.md section 2).

Each role's ServiceMaker is added here with the issue that builds it. This file
and its directory carry no ``__init__.py``.
"""

from twisted.application.service import ServiceMaker

rcn_storage = ServiceMaker(
    "rcn-storage", "rcn.storage.tap",
    "Emulated storage array: volumes over NBD, remote copy through an edge (FCIP)",
    "rcn-storage")

rcn_edge = ServiceMaker(
    "rcn-edge", "rcn.edge.tap",
    "RCN edge device: FCIP front end for arrays, log storage, log transfer, ordered apply",
    "rcn-edge")

rcn_core = ServiceMaker(
    "rcn-core", "rcn.core.tap",
    "RCN core device: relays log entries along their paths, batching them",
    "rcn-core")

rcn_mgmt = ServiceMaker(
    "rcn-mgmt", "rcn.mgmt.tap",
    "RCN management server: settings, routes, distribution over AMP, REST API, dashboard",
    "rcn-mgmt")

rcn_wanem = ServiceMaker(
    "rcn-wanem", "rcn.wanem.tap",
    "WAN emulator appliance: delayed, lossy, rate-limited UDP links under SCPI control",
    "rcn-wanem")
