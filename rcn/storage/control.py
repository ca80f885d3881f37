"""The array's control interface: JSON over HTTP (what ``rcn array`` talks to).

=======  =====================  ==============================================
method   path                   answer
=======  =====================  ==============================================
GET      /status                array names, edge link, counters
GET      /volumes               the volumes: LUN, export name, capacity, file
GET      /pairs                 the pair table
GET      /pairs/<lun>           one pair (404 if the volume has none)
GET      /metrics               Prometheus text format (the ``metrics`` resource)
=======  =====================  ==============================================

Every answer but /metrics is a JSON object; errors are ``{"error": "..."}``
with 404 (no such path or pair) or 405 (method not allowed). The pair
lifecycle issue adds the commands that change pair states.
"""

from __future__ import annotations

import json
from typing import Protocol

from twisted.web import resource


class Describable(Protocol):
    def describe_status(self) -> dict: ...
    def describe_volumes(self) -> list[dict]: ...
    def describe_pairs(self) -> list[dict]: ...


def _json(request, code: int, body) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"


class ControlResource(resource.Resource):
    """Routes by path; only GET for now."""

    isLeaf = True

    def __init__(self, array: Describable, metrics: resource.Resource | None = None):
        super().__init__()
        self.array = array
        self.metrics = metrics          # a rcn.metrics.MetricsResource; None: no /metrics

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, 405, {"error": f"{request.method.decode()} is not allowed here"})
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if parts == ["status"]:
            return _json(request, 200, self.array.describe_status())
        if parts == ["volumes"]:
            return _json(request, 200, {"volumes": self.array.describe_volumes()})
        if parts == ["pairs"]:
            return _json(request, 200, {"pairs": self.array.describe_pairs()})
        if len(parts) == 2 and parts[0] == "pairs":
            for pair in self.array.describe_pairs():
                if str(pair["lun"]) == parts[1]:
                    return _json(request, 200, pair)
            return _json(request, 404, {"error": f"LUN {parts[1]} is not the source of a pair"})
        if parts == ["metrics"] and self.metrics is not None:
            return self.metrics.render(request)
        hint = "/status, /volumes, /pairs" + (", /metrics" if self.metrics is not None else "")
        return _json(request, 404, {"error": f"no resource /{'/'.join(parts)}; try {hint}"})
