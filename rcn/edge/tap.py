"""``twistd rcn-edge``: the edge device as a daemon."""

from __future__ import annotations

from rcn.edge.config import load_config
from rcn.tap import ConfigOptions, service_from


class Options(ConfigOptions):
    longdesc = ("Run an RCN edge device: FCIP front end for attached arrays (virtual "
                "storages, access control), optional NBD front end for virtual volumes "
                "([nbd]), log storage area (durable or memory), log transfer over UDP with "
                "retransmission, and ordered apply to attached target arrays or NBD "
                "servers. Serves Prometheus /metrics and /status on [metrics] listen. The "
                "TOML options are documented in rcn/edge/config.py and README.md.")
    load_config = staticmethod(load_config)


def makeService(options):
    from rcn.edge.service import make_service
    return service_from(options, make_service)
