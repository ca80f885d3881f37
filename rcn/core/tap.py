"""``twistd rcn-core``: the core device (log-entry relay) as a daemon."""

from __future__ import annotations

from twisted.python import usage

from rcn.core.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config FILE.toml"
    longdesc = ("Run a core device: relay log entries (UDP) along the paths of the route "
                "table, WROK and NAK backwards, batching entries per next hop; counted drops "
                "with reasons; Prometheus /metrics. The TOML options are documented in "
                "rcn/core/config.py and README.md.")
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

    from rcn.core.service import make_service
    top, _ = make_service(options["parsed"], reactor)
    return top
