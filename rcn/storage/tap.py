"""``twistd rcn-storage``: the storage array emulator as a daemon."""

from __future__ import annotations

from twisted.python import usage

from rcn.storage.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config FILE.toml"
    longdesc = ("Run an emulated storage array: volumes as sparse files, an NBD host "
                "interface, remote copy of paired volumes through its edge (FCIP), and a "
                "JSON control API (see `rcn array --help`). The TOML options are documented "
                "in rcn/storage/config.py and README.md.")
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

    from rcn.storage.service import make_service
    top, _ = make_service(options["parsed"], reactor)
    return top
