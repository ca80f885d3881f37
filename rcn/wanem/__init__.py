"""The WAN emulator appliance (``rcn-wanem``, issue 8): a UDP relay that delays, drops,
duplicates, reorders and rate-limits (:mod:`rcn.wanem.link`), controlled with a
SCPI-style command set (:mod:`rcn.wanem.scpi`)."""
