"""The edge's console commands (issue 8) over the daemon's own state objects.

DESIGN.md 3.5 (the operator interface).

``show version|interfaces|counters|groups|pairs|routes|log-store|config``,
``clear counters`` (the console shows counts since the clear; /metrics keeps its
monotonic counters), ``debug log-transfer on|off`` (a log line per entry received),
``shutdown log-transfer`` / ``no shutdown log-transfer`` (close and reopen the UDP
socket: entries stay in the log and are sent again when it is back).
"""

from __future__ import annotations

import time

from rcn.console.commands import CommandTree, add_counters, add_shutdown, columns

VERSION = "rcn-edge 0.1.0"


class EdgeConsole:
    def __init__(self, edge, udp_service):
        self.edge = edge
        self.udp_service = udp_service
        self.started = time.time()
        self.tree = CommandTree()
        t = self.tree
        t.prefer("sh", "show")
        t.add("show version", self.version, "software version and uptime")
        t.add("show interfaces", self.interfaces, "log-transfer socket, FCIP links")
        add_counters(t, self._all_counters, "event counters since the last clear")
        t.add("show groups", self.groups, "order guarantee groups (table 413)")
        t.add("show pairs", self.pairs, "the pair table (411) and states")
        t.add("show routes", self.routes, "the route table (408)")
        t.add("show log-store", self.log_store, "the log storage area")
        t.add("show config", self.config, "the settings this edge runs with")
        t.add("debug log-transfer", self.debug, "log every entry received",
              choices=("on", "off"))
        add_shutdown(t, "log-transfer", udp_service)

    def _all_counters(self) -> dict[str, int]:
        d = self.edge.device
        out = {f"edge.{k}": v for k, v in d.counters.items()}
        out.update({f"sender.{k}": v for k, v in d.sender.counters.items()})
        out.update({f"udp.{k}": v for k, v in self.edge.udp.counters.items()})
        out.update({f"drops.{k}": v for k, v in d.drops.by_reason.items()})
        return out

    def version(self, args) -> str:
        up = time.time() - self.started
        return (f"{VERSION}, device {self.edge.config.id}, uptime {int(up // 3600)}h "
                f"{int(up % 3600 // 60)}m {int(up % 60)}s")

    def interfaces(self, args) -> str:
        cfg = self.edge.config
        rows = [["log-transfer", str(cfg.log), "up" if self.udp_service.running else
                 "administratively down", f"{self.edge.udp.counters.get('received', 0)} in"]]
        for port in self.edge.fabric.ports.values():
            array = f"{port.array_wwn:016x}" if port.array_wwn else "-"
            rows.append([f"fcip link {port.index}", str(cfg.fcip), "up", f"array {array}"])
        return columns(rows, ["interface", "address", "state", "detail"])

    def groups(self, args) -> str:
        rows = [[g["group"], g.get("log_generation", 0), g.get("log_deleted", 0),
                 g.get("log_retained_entries", 0), g.get("durable", "-"),
                 "-" if g.get("lag_s") is None else f"{g['lag_s'] * 1000:.1f} ms"]
                for g in self.edge.device.describe_groups()]
        return columns(rows, ["group", "generation", "deleted", "retained", "applied", "lag"])

    def pairs(self, args) -> str:
        rows = [[r["side"], f"{r['source_wwn']}:{r['source_lun']}",
                 f"{r['target_wwn']}:{r['target_lun']}", r["group"], r["state"],
                 r["bitmap_727_tracks"]] for r in (p.describe() for p in self.edge.device.pairs)]
        return columns(rows, ["side", "source", "target", "group", "state", "727 tracks"])

    def routes(self, args) -> str:
        rows = [[r["source_wwn"], r["target_wwn"], " > ".join(r["path"])]
                for r in self.edge.device.routes.describe()]
        return columns(rows, ["source", "target", "path"])

    def log_store(self, args) -> str:
        store = self.edge.log_store
        rows = [[k, v] for k, v in sorted(store.counters().items())]
        return f"mode {store.mode}\n" + columns(rows, ["log store", "value"])

    def config(self, args) -> str:
        cfg = self.edge.config
        s = cfg.settings
        rows = [["id", cfg.id], ["log", str(cfg.log)], ["fcip", str(cfg.fcip)],
                ["data_dir", cfg.data_dir], ["log mode", cfg.log_mode],
                ["group quota", cfg.group_quota], ["window", s.window_bytes],
                ["rto / rto max", f"{s.rto} / {s.rto_max} s"],
                ["failure timeout", f"{s.failure_timeout} s"],
                ["group policy", s.group_policy], ["management server", cfg.mgmt or "none"]]
        return columns(rows, ["setting", "value"])

    def debug(self, args) -> str:
        self.edge.device.debug = args[0] == "on"
        return f"log-transfer debugging is {args[0]}"
