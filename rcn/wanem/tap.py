"""``twistd rcn-wanem``: the WAN emulator appliance as a daemon."""

from __future__ import annotations

from rcn.tap import ConfigOptions, service_from
from rcn.wanem.config import load_config


class Options(ConfigOptions):
    longdesc = ("Run the WAN emulator appliance: UDP links with delay, jitter, loss, "
                "duplication, reordering, a rate limit and up/down, controlled over SCPI on "
                "a serial console or TCP. The TOML options are documented in "
                "rcn/wanem/config.py.")
    load_config = staticmethod(load_config)


def makeService(options):
    from rcn.wanem.service import make_service
    return service_from(options, make_service)
