"""The storage array emulator's console (issue 8): ``show version|volumes|pairs|status``."""

from __future__ import annotations

from rcn.console.commands import CommandTree, columns

VERSION = "rcn-storage 0.1.0"


def array_console(array) -> CommandTree:
    """The command tree over a :class:`rcn.storage.service.StorageArray`."""
    t = CommandTree()
    t.prefer("sh", "show")

    def version(args):
        return f"{VERSION}, array {array.describe_status()['wwpn']}"

    def volumes(args):
        return columns([[v["lun"], v["name"], v["capacity"], v["block_size"], v["path"]]
                        for v in array.describe_volumes()],
                       ["lun", "name", "capacity", "block", "file"])

    def pairs(args):
        return columns([[p["lun"], p["role"], p["state"], p["partner_wwpn"], p["partner_lun"],
                         p["group"], p["mode"], p.get("dirty_tracks", 0)]
                        for p in array.describe_pairs()],
                       ["lun", "role", "state", "partner", "partner lun", "group", "mode",
                        "dirty tracks"])

    def status(args):
        body = array.describe_status()
        return columns([[k, v] for k, v in sorted(body.items())
                        if not isinstance(v, (dict, list))], ["status", "value"])

    t.add("show version", version, "software version")
    t.add("show volumes", volumes, "the volumes (LUN, name, size, file)")
    t.add("show pairs", pairs, "the pair table and states")
    t.add("show status", status, "the link to the edge and the port")
    return t
