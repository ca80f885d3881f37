"""A whole RCN on one machine, as real daemons on loopback ports (``rcn lab``).

``rcn lab up`` writes one TOML file per device into a directory, starts every
daemon (``twistd -n rcn-storage|rcn-edge|rcn-core``) as a detached process, records
the lab in ``DIR/lab.json`` and waits until the data path is ready; ``rcn lab
status`` shows the figures that matter; ``rcn lab down`` stops the processes it
recorded. The data path it builds::

    host --NBD--> arrayA --FCIP--> edgeA --UDP--> core1 .. coreN --UDP--> edgeB --FCIP--> arrayB
    (source array, pairs role "source")                     (target array, pairs role "target")

The package, bottom up: :mod:`rcn.lab.topology` (the topology file),
:mod:`rcn.lab.plan` (names, ports, each device's configuration document and
``lab.json``), :mod:`rcn.lab.processes` (start, wait, signal, restart, stop),
:mod:`rcn.lab.figures` (what the devices report, and whether the target applied
everything). The ``rcn lab`` command itself is :mod:`rcn.cli.lab`.

Library use (``rcn demo`` and the crash tests do this): :func:`up`, :func:`status`,
:func:`down`, and for one device :func:`signal_device` (SIGKILL, SIGSTOP...) and
:func:`restart` (same file and ports, new pid in ``lab.json``); they raise
:class:`LabError` with a message and the exit status.
"""

from rcn.lab.figures import (applied_counter, device_figures, group_status, sha256_file,
                             status, unapplied, wait_applied)
from rcn.lab.plan import (HOST, KEYS_DIR, LAB_CUSTOMER, PLUGINS, device_configs, free_ports,
                          key_rings, plan, render_device, settings_requests, virtual_wwn)
from rcn.lab.processes import (LAB_FILE, LabError, api, down, get_json, get_text, lab_file,
                               load_lab, operator_token, pid_alive, restart, signal_device,
                               tail, up, write_keys)
from rcn.lab.topology import (DEFAULT_CAPACITY, DEFAULT_SOURCE_WWN, DEFAULT_TARGET_WWN,
                              PairSpec, Topology, WanemSpec, load_topology, parse_topology,
                              path_names)

__all__ = ["LabError", "Topology", "PairSpec", "WanemSpec", "parse_topology", "load_topology",
           "path_names", "plan", "device_configs", "key_rings", "KEYS_DIR", "render_device",
           "settings_requests", "virtual_wwn", "free_ports", "up", "status", "down", "restart",
           "signal_device", "write_keys",
           "load_lab", "lab_file", "api", "operator_token", "pid_alive", "tail", "get_json",
           "get_text", "device_figures", "applied_counter", "group_status", "unapplied",
           "wait_applied", "sha256_file", "DEFAULT_CAPACITY", "DEFAULT_SOURCE_WWN",
           "DEFAULT_TARGET_WWN", "HOST", "LAB_CUSTOMER", "LAB_FILE", "PLUGINS"]
