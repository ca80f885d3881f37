"""The management server's console (issue 8) over the :class:`MgmtServer`'s own state.

``show version|interfaces|devices|customers|pairs|routes|keys|counters|config``, ``clear
counters`` (the console shows counts since the clear; /metrics keeps its monotonic
counters) and ``shutdown amp`` / ``no shutdown amp`` (close and reopen the socket devices
register on: devices already connected stay; new ones, and those that reconnect, are
refused until it is back).

Every command reads the server's objects in the reactor thread, as the REST API does:
the settings in SQLite (a few small local queries) and the devices' last reports.
"""

from __future__ import annotations

from datapath.frames.names import format_wwn
from rcn.console.commands import CommandTree, add_counters, add_shutdown, columns
from rcn.mgmt.model import OPERATOR
from rcn.mgmt.server import REROUTE_STEP

VERSION = "rcn-mgmt 0.1.0"


class MgmtConsole:
    """``http``: the API's listening service (``running``); ``amp``: the devices' one
    (``running``, ``listening_on``, ``error``: a :class:`rcn.mgmt.service.TcpListenService`);
    ``api_counters``: the REST API's counters (requests, errors)."""

    def __init__(self, config, server, api_counters: dict, http, amp):
        self.config, self.server, self.api_counters = config, server, api_counters
        self.http, self.amp = http, amp
        self.started = server.clock.seconds()
        self.tree = t = CommandTree()
        t.prefer("sh", "show")
        t.add("show version", self.version, "software and settings version, uptime")
        t.add("show interfaces", self.interfaces, "the API and the devices' (AMP) sockets")
        t.add("show devices", self.devices, "devices: connected, stale, settings acked")
        t.add("show customers", self.customers, "customers and their contracts")
        t.add("show pairs", self.pairs, "ordered pairs with state and lag")
        t.add("show routes", self.routes, "the route table (408) and infeasible pairs")
        t.add("show keys", self.keys, "log-transfer keys: epochs, states, ages (never the keys)")
        add_counters(t, self._all_counters, "server, AMP and API counters since the clear")
        t.add("show config", self.show_config, "the settings this server runs with")
        add_shutdown(t, "amp", amp)

    def _all_counters(self) -> dict[str, int]:
        out = {f"server.{k}": v for k, v in self.server.counters.items()}
        out.update({f"amp.{k}": v for k, v in self.server.distribution.counters.items()})
        out.update({f"api.{k}": v for k, v in self.api_counters.items()})
        out.update({f"keys.{k}": v for k, v in self.server.keys.counters.items()})
        return out

    def version(self, args) -> str:
        up = self.server.clock.seconds() - self.started
        settings, reroutes = divmod(self.server.version, REROUTE_STEP)
        return (f"{VERSION}, server {self.config.id}, settings version {settings}, "
                f"{reroutes} reroutes since (snapshot version {self.server.version}), "
                f"uptime {int(up // 3600)}h {int(up % 3600 // 60)}m {int(up % 60)}s")

    def interfaces(self, args) -> str:
        devices = self.server.distribution.devices()
        connected = sum(1 for d in devices if d["connected"])
        if not self.amp.running:
            amp_state = "administratively down"
        elif self.amp.error:
            amp_state = f"down: {self.amp.error}"
        else:
            amp_state = "up"
        rows = [["http", str(self.config.http), "up" if self.http.running else "down",
                 f"{self.api_counters.get('requests', 0)} API requests"],
                ["amp", self.amp.listening_on or str(self.config.amp), amp_state,
                 f"{connected} of {len(devices)} registered devices connected"]]
        return columns(rows, ["interface", "address", "state", "detail"])

    def devices(self, args) -> str:
        seen = {d["id"]: d for d in self.server.distribution.devices()}
        now = self.server.clock.seconds()
        rows = []
        for device in self.server.store.list_devices():
            d = seen.pop(device.id, None)
            rows.append(_device_row(device.id, device.role, device.log_address, d, now))
        for d in seen.values():            # registered once, since removed from the settings
            rows.append(_device_row(d["id"], d["role"], d["log_address"], d, now))
        return columns(rows, ["device", "role", "log address", "status", "settings",
                              "last report"])

    def customers(self, args) -> str:
        def of(count, limit):
            return f"{count}/{limit}" if limit is not None else f"{count}"
        rows = [[c["id"], c["name"] or "-", of(c["storages"], c["max_storages"]),
                 of(c["pairs"], c["max_pairs"]), ",".join(c["allowed_edges"]) or "any",
                 f"{c['bandwidth']} B/s" if c["bandwidth"] else "no limit"]
                for c in self.server.settings.list_customers(OPERATOR)]
        return columns(rows, ["customer", "name", "storages", "pairs", "edges", "bandwidth"])

    def pairs(self, args) -> str:
        figures = self.server.pair_figures(self.server.settings.list_pairs(OPERATOR))
        rows = [[p["id"], p["customer_id"], f"{p['source_wwn']}:{p['source_lun']}",
                 f"{p['target_wwn']}:{p['target_lun']}", p["group"],
                 p["state"] or "unknown", "-" if p["lag_s"] is None
                 else f"{p['lag_s'] * 1000:.1f} ms"] for p in figures]
        return columns(rows, ["pair", "customer", "source", "target", "group", "state", "lag"])

    def routes(self, args) -> str:
        routing = self.server.routing
        users: dict[tuple[str, str], list[str]] = {}
        for p in self.server.settings.list_pairs(OPERATOR):
            users.setdefault((p["source_wwn"], p["target_wwn"]), []).append(str(p["id"]))
        keys = sorted(set(routing.routes) | set(routing.infeasible))
        rows = []
        for key in keys:
            source, target = format_wwn(key[0]), format_wwn(key[1])
            route = routing.routes.get(key)
            path = (" > ".join(route.path) if route is not None
                    else f"infeasible: {routing.infeasible[key]}")
            rows.append([source, target, ",".join(users.get((source, target), []))
                         or "(failback)", path])
        text = columns(rows, ["source", "target", "pairs", "path"])
        if self.server.failed:
            text += "\ndevices avoided (disconnected or stale): " + ", ".join(
                sorted(self.server.failed))
        return text

    def keys(self, args) -> str:
        listing = self.server.keys.listing()
        named = [(f"{r['a']} - {r['b']}", r) for r in listing["links"]]
        named += [(f"group {r['group']}", r) for r in listing["groups"]]
        rows = [[name, ",".join(r["holders"]) or "(unused)", e["epoch"], e["state"],
                 f"{e['age_s']:.0f} s", "-" if e["deadline_in_s"] is None
                 else f"{e['deadline_in_s']:.0f} s", ",".join(e["waiting_for"]) or "-"]
                for name, r in named for e in r["epochs"]]
        return columns(rows, ["link or group", "holders", "epoch", "state", "age", "deadline",
                              "waiting for"])

    def show_config(self, args) -> str:
        c = self.config
        console = c.console
        where = "none" if console is None else ", ".join(
            part for part in (console.serial and f"serial {console.serial}",
                              console.pty_link and f"link {console.pty_link}",
                              console.tcp and f"tcp {console.tcp}") if part)
        rows = [["id", c.id], ["database", c.database], ["http", str(c.http)],
                ["amp", str(c.amp)], ["operator token file", c.operator_token_file],
                ["history", f"{c.history} reports per device"],
                ["stale after", f"{c.stale_after:g} s"], ["console", where],
                ["key rotation", f"every {c.keys.rotate_every:g} s" if c.keys.rotate_every
                 else "on demand only"],
                ["key overlap", f"{c.keys.overlap:g} s (links), {c.keys.group_overlap:g} s "
                                f"(groups)"],
                ["key warning", f"after {c.keys.warn_after:g} s (devices not acknowledging "
                                f"a new key; it sends only once all have)"]]
        return columns(rows, ["setting", "value"])


def _device_row(device_id: str, role: str, log_address: str, d: dict | None, now: float):
    if d is None:
        return [device_id, role, log_address, "never registered", "-", "-"]
    settings = f"{d['version']}" + ("" if d["up_to_date"] else " old")
    last = "-" if d["last_report"] is None else f"{now - d['last_report']:.1f} s ago"
    return [device_id, role, log_address, d["status"], settings, last]
