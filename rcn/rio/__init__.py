"""The RIO channel: FC over FCIP over TCP between a storage array and its edge (DESIGN 3.1).

Layers, bottom up (each a plain object with an injected clock; only the
protocol class touches a transport):

* :mod:`rcn.rio.protocol` -- :class:`~rcn.rio.protocol.FcipProtocol`: TCP bytes
  <-> FC frames (delineation kernel, FC CRC and EOF checks, one
  ``transport.write`` per FCIP frame), and the factories for the edge
  (:class:`~rcn.rio.protocol.FcipServerFactory`) and the array
  (:class:`~rcn.rio.protocol.FcipClientFactory`);
* :mod:`rcn.rio.exchange` -- :class:`~rcn.rio.exchange.ExchangeTable`: OX_ID /
  RX_ID allocation, sequences and F_CTL, exchange limits and timeouts, ABTS /
  BA_ACC / BA_RJT;
* :mod:`rcn.rio.fcp` -- the FCP initiator and target: write exchanges with or
  without XFER_RDY, data-in, FCP_RSP, task attributes;
  :class:`~rcn.rio.fcp.ScsiCommand`, :class:`~rcn.rio.fcp.ScsiResult` and the
  :class:`~rcn.rio.fcp.ScsiTarget` the data plane implements;
* :mod:`rcn.rio.port` -- what both ends share: frame dispatch, logins, ELS/CT
  requests and replies;
* :mod:`rcn.rio.fabric` -- the edge: :class:`~rcn.rio.fabric.FabricPort`
  (F_Port, FLOGI, name server, access control table 405) and its
  :class:`~rcn.rio.fabric.VirtualStorage` ports (table 404);
* :mod:`rcn.rio.array` -- the array: :class:`~rcn.rio.array.ArrayPort`
  (FLOGI, GID_PN, PLOGI, PRLI) and :class:`~rcn.rio.array.RioSession`.

Errors callers see are in :mod:`rcn.rio.errors`.
"""
