"""``twistd rcn-core``: the core device (log-entry relay) as a daemon."""

from __future__ import annotations

from rcn.core.config import load_config
from rcn.tap import ConfigOptions, service_from


class Options(ConfigOptions):
    longdesc = ("Run a core device: relay log entries (UDP) along the paths of the route "
                "table, WROK and NAK backwards, batching entries per next hop; counted drops "
                "with reasons; Prometheus /metrics. The TOML options are documented in "
                "rcn/core/config.py and README.md.")
    load_config = staticmethod(load_config)


def makeService(options):
    from rcn.core.service import make_service
    return service_from(options, make_service)
