"""The route table (patent table 408): which device a log entry goes to next.

DESIGN.md 3.3, "Routing", and 4 (table 408 lives on mgmt, edges and cores).

A route is a path of device addresses for one (source WWN, target WWN): the
source edge first, then cores, then the target edge. Every device on the path
sends an entry to the address after its own; answers (WROK, CTRL_OK, NAK) go
to the address before it. A device finds itself in a path by its own
log-transfer address, so one table can be distributed to every device.
:class:`Hops` is one device's view of the table (its own address and the table
in force), shared by the parts of an edge so a new snapshot reaches them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

from datapath.frames.logentry import EntryFlag, EntryType
from datapath.frames.names import format_wwn

#: entry types that travel from the target edge back to the source edge
BACKWARD_TYPES = frozenset({EntryType.WROK, EntryType.CTRL_OK, EntryType.NAK})
_REVERSE = int(EntryFlag.REVERSE)
_CTRL = int(EntryType.CTRL)


def goes_backward(entry_type: int, flags: int) -> bool:
    """Whether an entry travels its path from the target end to the source end: the
    answers, and a CTRL the target edge sends (flag REVERSE, a failover's SUSPEND)."""
    return entry_type in BACKWARD_TYPES or (entry_type == _CTRL and bool(flags & _REVERSE))


class RouteError(ValueError):
    """A route table that cannot be used (the message names the route)."""


class Address(NamedTuple):
    """A device's log-transfer address. A tuple underneath: it is hashed several times per
    datagram (route and window lookups), and a tuple's hash is C code."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        """``"127.0.0.1:47001"`` (IPv4 or a name; ``[v6]:port`` for IPv6)."""
        host, sep, port = str(text).strip().rpartition(":")
        if host.startswith("[") or host.endswith("]"):
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RouteError(f"address {text!r}: expected host:port with a port 1..65535")
        if not _HOST_CHARS.issuperset(host):
            # a name or an IP literal: no space, '#' or control character (a key file
            # written with one would not read back)
            raise RouteError(f"address {text!r}: the host is not a name or an IP address")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def pair(self) -> tuple[str, int]:
        """What ``transport.write(data, addr)`` takes."""
        return (self.host, self.port)


_HOST_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:%")

@dataclass(frozen=True, slots=True)
class Route:
    source_wwn: int
    target_wwn: int
    path: tuple[Address, ...]

    def __post_init__(self):
        if len(self.path) < 2:
            raise RouteError(f"route {self}: a path needs at least the source and target edges")
        if len(set(self.path)) != len(self.path):
            raise RouteError(f"route {self}: a device appears twice in the path")

    def __str__(self) -> str:
        return (f"{format_wwn(self.source_wwn)} -> {format_wwn(self.target_wwn)} via "
                + " ".join(str(a) for a in self.path))


class RouteTable:
    """Routes by (source WWN, target WWN); replaced whole when the table changes."""

    def __init__(self, routes: Iterable[Route] = ()):
        self._routes: dict[tuple[int, int], Route] = {}
        for route in routes:
            key = (route.source_wwn, route.target_wwn)
            if key in self._routes:
                raise RouteError(f"route {route}: a second route for the same storage pair")
            self._routes[key] = route
        # (source, target, me) -> (next, previous): a relay looks this up per datagram
        self._hops: dict[tuple[int, int, Address], tuple[Address | None, Address | None]] = {}
        for (source, target), route in self._routes.items():
            for i, address in enumerate(route.path):
                self._hops[(source, target, address)] = (
                    route.path[i + 1] if i + 1 < len(route.path) else None,
                    route.path[i - 1] if i > 0 else None)

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self):
        return iter(self._routes.values())

    def route(self, source_wwn: int, target_wwn: int) -> Route | None:
        return self._routes.get((source_wwn, target_wwn))

    def next_hop(self, source_wwn: int, target_wwn: int, me: Address,
                 backward: bool = False) -> Address | None:
        """The address after ``me`` (before it when ``backward``); None when ``me`` is the
        end of the path in that direction, or there is no route through ``me``."""
        hops = self._hops.get((source_wwn, target_wwn, me))
        if hops is None:
            return None
        return hops[1] if backward else hops[0]

    def on_path(self, source_wwn: int, target_wwn: int, me: Address) -> bool:
        return (source_wwn, target_wwn, me) in self._hops

    def describe(self) -> list[dict]:
        return [{"source_wwn": format_wwn(r.source_wwn), "target_wwn": format_wwn(r.target_wwn),
                 "path": [str(a) for a in r.path]} for r in self]


class Hops:
    """Where entries go from one device: ``me`` in the route table in force (``table``,
    replaced whole when a new snapshot arrives; every holder sees the new one)."""

    __slots__ = ("me", "table")

    def __init__(self, me: Address, table: RouteTable):
        self.me = me
        self.table = table

    def next(self, source_wwn: int, target_wwn: int, backward: bool = False) -> Address | None:
        """The neighbour an entry of (source, target) goes to from here; None at the end of
        the path in that direction, or with no route through here."""
        return self.table.next_hop(source_wwn, target_wwn, self.me, backward)

    def passes(self, source_wwn: int, target_wwn: int) -> bool:
        """Whether the route of (source, target) passes this device."""
        return self.table.on_path(source_wwn, target_wwn, self.me)

    def route(self, source_wwn: int, target_wwn: int) -> Route | None:
        return self.table.route(source_wwn, target_wwn)
