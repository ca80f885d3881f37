"""The management server's records (DESIGN.md 4; 【0054】-【0067】): plain frozen dataclasses.

Settings the operator and customers enter:

* :class:`Customer` -- a contract and its limits (【0056】): the edges the
  customer may use (empty: any), how many storages and ordered pairs it may have
  (None: no limit).
* :class:`Device` -- an edge or a core: its ID, the log-transfer address other
  devices send to (``host:port``), a core's processing limit (entries per
  second it can relay; 0: no limit) and its failure domain (a site, a building:
  routes may avoid the source's).
* :class:`Link` -- an undirected link between two devices, its capacity in
  bytes per second (0: no limit) and latency in milliseconds.
* :class:`StorageConnection` -- table 503: a customer's storage (WWN) attached to
  an edge.
* :class:`OrderedPair` -- a pair whose write order the RCN guarantees: source
  and target storage WWN and LUN, the order guarantee group (0: by ``policy``),
  the policy (``A-1``, ``A-2`` or ``B``, 【0064】), and the load it is expected to
  carry (entries/s, bytes/s) for route computation.

Two options the records above have no field for are kept in subclasses the
store always returns (it takes the plain records too; the options then take
their defaults): a customer's ``bandwidth`` (bytes/s on the log-transfer
channel, 0: no limit; :class:`CustomerRecord`) and a storage's own
``virtual_wwn`` for the virtual-WWN variant (【0093】; None: the same-WWN scheme;
:class:`StorageRecord`).

Tables derived from them and distributed to devices: :class:`VirtualStorage`
(404), :class:`Access` (405), :class:`RouteEntry` (408, a path of device IDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Customer:
    id: str
    name: str = ""
    allowed_edges: tuple[str, ...] = ()        # empty: every edge
    max_storages: int | None = None
    max_pairs: int | None = None


@dataclass(frozen=True)
class Device:
    id: str
    role: str                                  # "edge" or "core"
    log_address: str                           # "host:port" of its log-transfer socket
    processing_limit: float = 0.0              # entries/s a core relays at most; 0: no limit
    failure_domain: str = ""


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    capacity: float = 0.0                      # bytes/s; 0: no limit
    latency_ms: float = 0.0


@dataclass(frozen=True)
class StorageConnection:
    edge_id: str
    customer_id: str
    storage_wwn: int


@dataclass(frozen=True)
class CustomerRecord(Customer):
    bandwidth: int = 0                         # bytes/s on the log-transfer channel; 0: no limit


@dataclass(frozen=True)
class StorageRecord(StorageConnection):
    virtual_wwn: int | None = None             # shown under this WWN at partner edges (【0093】)


@dataclass(frozen=True)
class OrderedPair:
    customer_id: str
    source_wwn: int
    source_lun: int
    target_wwn: int
    target_lun: int
    group: int = 0                             # 0: given by the policy
    policy: str = "A-1"
    load_entries: float = 0.0                  # expected entries/s
    load_bytes: float = 0.0                    # expected bytes/s
    id: int | None = None                      # given by the store


@dataclass(frozen=True)
class VirtualStorage:
    """Table 404: ``edge_id`` shows ``partner_wwn`` (attached to ``partner_edge_id``) to its
    arrays as ``virtual_wwn`` (equal to ``partner_wwn`` in the same-WWN scheme)."""
    edge_id: str
    virtual_wwn: int
    partner_edge_id: str
    partner_wwn: int


@dataclass(frozen=True)
class Access:
    """Table 405: ``storage_wwn`` may use ``virtual_wwn`` on ``edge_id``."""
    edge_id: str
    virtual_wwn: int
    storage_wwn: int


@dataclass(frozen=True)
class RouteEntry:
    """Table 408: entries from ``source_wwn`` to ``target_wwn`` take ``path`` (device IDs,
    source edge first, target edge last)."""
    source_wwn: int
    target_wwn: int
    path: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Caller:
    """Who is calling the management server: the operator, or one customer."""
    operator: bool = False
    customer_id: str | None = None

    def describe(self) -> str:
        return "operator" if self.operator else f"customer {self.customer_id}"


OPERATOR = Caller(operator=True)
