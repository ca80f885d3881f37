"""``twistd rcn-edge``: the edge device as a daemon."""

from __future__ import annotations

from twisted.python import usage

from rcn.edge.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config FILE.toml"
    longdesc = ("Run an RCN edge device: FCIP front end for attached arrays (virtual "
                "storages, access control), optional NBD front end for virtual volumes "
                "([nbd]), log storage area (durable or memory), log transfer over UDP with "
                "retransmission, and ordered apply to attached target arrays or NBD "
                "servers. Serves Prometheus /metrics and /status on [metrics] listen. The "
                "TOML options are documented in rcn/edge/config.py and README.md.")
    optParameters = [["config", "c", None, "configuration file (TOML)"]]

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE.toml is required")
        try:
            self["parsed"] = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def makeService(options):
    from twisted.internet import reactor   # the daemon's entry point picks the reactor

    from rcn.edge.service import make_service
    top, _ = make_service(options["parsed"], reactor)
    return top
