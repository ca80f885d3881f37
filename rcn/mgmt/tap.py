"""``twistd rcn-mgmt``: the management server as a daemon."""

from __future__ import annotations

from rcn.mgmt.config import load_config
from rcn.tap import ConfigOptions, service_from


class Options(ConfigOptions):
    longdesc = ("Run the RCN management server: settings in SQLite (customers and contracts, "
                "devices, links, storages, ordered pairs), route computation, distribution of "
                "each device's tables over AMP, collection of their figures; a REST API with "
                "an OpenAPI document, Prometheus /metrics and a web dashboard. The TOML options "
                "are documented in rcn/mgmt/config.py and README.md.")
    load_config = staticmethod(load_config)


def makeService(options):
    from rcn.mgmt.service import make_service
    return service_from(options, make_service)
