"""The core's console (issue 8): ``show version|interfaces|counters|routes|config``, ``clear
counters`` (console only), ``debug log-transfer on|off`` (a log line per entry relayed),
``shutdown`` / ``no shutdown log-transfer`` (the UDP socket)."""

from __future__ import annotations

from rcn.console.commands import CommandTree, add_counters, add_shutdown, columns

VERSION = "rcn-core 0.1.0"


def core_console(config, relay, udp_service) -> CommandTree:
    t = CommandTree()
    t.prefer("sh", "show")
    def interfaces(args):
        state = "up" if udp_service.running else "administratively down"
        rows = [["log-transfer", str(config.listen), state]]
        return columns(rows, ["interface", "address", "state"])

    def routes(args):
        return columns([[r["source_wwn"], r["target_wwn"], " > ".join(r["path"])]
                        for r in relay.routes.describe()], ["source", "target", "path"])

    def show_config(args):
        b = config.batch
        return columns([["id", config.id], ["listen", str(config.listen)],
                        ["batching", f"{b.max_delay * 1000:g} ms / {b.max_bytes} bytes / "
                                     f"{b.max_entries} entries" if b.enabled else "off"],
                        ["management server", config.mgmt or "none"]], ["setting", "value"])

    t.add("show version", lambda a: f"{VERSION}, device {config.id}", "software version")
    t.add("show interfaces", interfaces, "the log-transfer socket")
    add_counters(t, lambda: dict(relay.counters()), "relay counters since the last clear")
    t.add("show routes", routes, "the route table (408)")
    t.add("show config", show_config, "the settings this core runs with")

    def debug(args):
        relay.debug = args[0] == "on"
        return f"log-transfer debugging is {args[0]}"
    t.add("debug log-transfer", debug, "log every entry relayed", choices=("on", "off"))
    add_shutdown(t, "log-transfer", udp_service)
    return t
