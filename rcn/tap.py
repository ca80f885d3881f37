"""What every daemon's twistd tap module shares: ``--config FILE.toml`` and the service.

A role's tap module subclasses :class:`ConfigOptions` (naming its ``load_config``
and its ``longdesc``) and makes its service with :func:`service_from`.
"""

from __future__ import annotations

from twisted.python import usage

from rcn.config import ConfigError


class ConfigOptions(usage.Options):
    """``--config FILE.toml``, required; a file that cannot be used is a UsageError naming
    the file and key (what ``load_config`` says)."""

    synopsis = "--config FILE.toml"
    optParameters = [["config", "c", None, "configuration file (TOML)"]]

    @staticmethod
    def load_config(path: str):
        raise NotImplementedError

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE.toml is required")
        try:
            self["parsed"] = self.load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def service_from(options, make_service):
    """``make_service(config, reactor)``'s top service; the daemon's entry point picks the
    reactor, so it is imported here and nowhere in library code."""
    from twisted.internet import reactor
    top, _ = make_service(options["parsed"], reactor)
    return top
