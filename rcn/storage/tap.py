"""``twistd rcn-storage``: the storage array emulator as a daemon."""

from __future__ import annotations

from rcn.storage.config import load_config
from rcn.tap import ConfigOptions, service_from


class Options(ConfigOptions):
    longdesc = ("Run an emulated storage array: volumes as sparse files, an NBD host "
                "interface, remote copy of paired volumes through its edge (FCIP), and a "
                "JSON control API (see `rcn array --help`). The TOML options are documented "
                "in rcn/storage/config.py and README.md.")
    load_config = staticmethod(load_config)


def makeService(options):
    from rcn.storage.service import make_service
    return service_from(options, make_service)
