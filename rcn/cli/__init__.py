"""``rcn``: the operator's and customer's command line.

Groups: ``rcn array`` talks to a storage array emulator's control API
(``rcn-storage``, JSON over HTTP): it shows the array and runs the pair
lifecycle (pair-create, suspend, resync, takeover, reverse, pair-delete;
:mod:`rcn.cli.array`); ``rcn lab up|status|down`` runs a whole RCN on this
machine as real daemons (:mod:`rcn.cli.lab` over the library :mod:`rcn.lab`);
``rcn demo`` writes through such a lab and proves the target equals the source
(:mod:`rcn.cli.demo`); ``rcn customer|device|link|storage|pair|route|status|lag``
talk to the management server's REST API (:mod:`rcn.cli.mgmt`). The entry point
is :func:`rcn.cli.main.main`; every command module uses :mod:`rcn.cli.kit`, and
none imports this package's ``__init__`` (it holds nothing).

Exit status: 0 success, 1 the device answered with an error (the message is
the device's), 2 bad usage or the device could not be reached.
"""
