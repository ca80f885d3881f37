"""``rcn-edge`` as a Twisted service: the data plane behind its sockets (DESIGN.md 2, 3).

:func:`make_service` builds the :class:`~rcn.edge.device.EdgeDevice` and serves

* the RIO channel (FCIP over TCP) for attached arrays: every virtual storage
  (table 404) answers through the device, access per table 405;
* the log-transfer channel (UDP) with deliberate datagram and buffer sizes;
* the NBD front end on ``[nbd] listen`` when ``[nbd]`` is configured: one
  :class:`~rcn.edge.nbdfront.VirtualVolumeExport` per ``[[nbd_volume]]``
  (writes take the log path, reads are answered by the target through the
  RCN); the volumes' pairs join the device's pair table (411) so their groups,
  customers and bandwidth limits are those of any pair;
* HTTP on ``[metrics] listen``: Prometheus ``/metrics`` and ``/status``
  (JSON: groups with their generation, apply and delete counters, links,
  NBD volumes with their figures).

Its first service (:class:`rcn.tap.OpenAtStart`) creates the data directory and opens
the pair file, the log storage area (replaying what it holds), the apply counters, the
last snapshot and, sealed, the hop layer's state file (``DATA_DIR/keys.hop``: the counter
reservation written, the replay windows saved while it runs and at stop) in
``startService``, under twistd's ``--umask`` and ``--uid``. The reactor is
passed in; nothing here imports the global one.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.internet.defer import gatherResults
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import Site

from datapath.frames.logentry import LogHeader
from datapath.frames.names import format_wwn
from rcn.edge.applystate import ApplyState
from rcn.edge.config import EdgeConfig
from rcn.edge.device import EdgeDevice, SourceTarget
from rcn.edge.logstore import LogStore
from rcn.edge.nbdapply import NbdApplyTarget
from rcn.edge.syncthread import SyncThread
from rcn.edge.nbdfront import COUNTER_NAMES as NBD_VOLUME_COUNTERS
from rcn.edge.nbdfront import VirtualVolumeExport
from rcn.logxfer.keys import KeyRing
from rcn.logxfer.protocol import LogTransferProtocol, listen
from rcn.logxfer.hopstate import state_path
from rcn.logxfer.seal import E2E_DROP_REASONS, GroupSeal, hop_at_start, keys_at_start
from rcn.config import Reader
from rcn.console.service import serve_console
from rcn.edge.config import read_tables
from rcn.edge.console import EdgeConsole
from rcn.metrics import MetricsRegistry, MetricsResource
from rcn.mgmtlink.client import MgmtClient, client_service
from rcn.nbd.export import ExportTable
from rcn.nbd.server import NbdServerFactory
from rcn.pairstate import PairState
from rcn.rio.fabric import FabricConfig
from rcn.rio.protocol import FcipServerFactory
from rcn.tap import OpenAtStart
from rcn.web import BoundedSite

_log = Logger()
SNAPSHOT_TABLES = ("virtual_storage", "access", "customer", "pair", "route")


def _pair_label(row, end: str) -> str:
    e = row.entry
    if end == "source":
        return f"{format_wwn(e.source_wwn)}/{e.source_lun}"
    return f"{format_wwn(e.target_wwn)}/{e.target_lun}"


class Edge:
    """The parts of one edge daemon (plain objects; sockets are the services').

    Building it touches no file and starts no thread: :meth:`start` creates the data
    directory, opens the log storage area (replaying it), the apply counters, the pair
    file and the last snapshot, then sends again what the log retained; :meth:`close`
    closes them."""

    def __init__(self, config: EdgeConfig, reactor):
        self.config = config
        self.reactor = reactor
        self.sync: SyncThread | None = None
        self.log_store = LogStore(None if config.log_mode == "memory" else
                                  os.path.join(config.data_dir, "log"), mode=config.log_mode,
                                  segment_bytes=config.segment_size,
                                  group_quota_bytes=config.group_quota, clock=reactor,
                                  run_sync=self._run_sync)
        self.apply_state = ApplyState(os.path.join(config.data_dir, "applied.json"),
                                      run_sync=self._run_sync)
        self.udp = LogTransferProtocol(None, receive_buffer=config.receive_buffer,
                                       send_buffer=config.send_buffer)
        ring = keys_at_start(config.id, config.seal, config.mgmt is not None)
        settings = config.settings
        if config.nbd_volumes:
            settings = replace(settings, pairs=[*settings.pairs,
                                                *(v.pair for v in config.nbd_volumes)])
        self.nbd_targets = {key: NbdApplyTarget(reactor, url)
                            for key, url in config.nbd_targets.items()}
        self.device = EdgeDevice(reactor, settings, self.log_store, self.apply_state,
                                 self.udp.send, apply_target_for=self._apply_target,
                                 name=config.id,
                                 pairs_path=os.path.join(config.data_dir, "pairs.json"),
                                 seal=GroupSeal(ring, sealed=ring is not None))
        self.udp.handler = self.device
        self.udp.drops = self.device.drops
        if ring is not None:
            self.device.seal.on_held = self._held_released
            self.udp.hop = hop_at_start(config.log, ring, self.device.drops,
                                        state_path(data_dir=config.data_dir), reactor)
            for reason in E2E_DROP_REASONS:
                self.device.drops.by_reason.setdefault(reason, 0)
        access = config.access
        self.fabric = FcipServerFactory(reactor, FabricConfig(
            virtual_storages=config.virtual_storages,
            access=lambda storage, virtual: (storage, virtual) in access,
            first_burst=config.first_burst, exchange_timeout=config.exchange_timeout,
            attach=self._attach))
        self.device.target_side.links = lambda: list(self.fabric.ports.values())
        self.nbd_exports: list[VirtualVolumeExport] = []
        self.nbd: NbdServerFactory | None = None
        if config.nbd is not None:
            self.nbd_exports = [
                VirtualVolumeExport(self.device.source_side, v.pair, v.name, v.capacity, reactor,
                                    config.nbd.read_timeout) for v in config.nbd_volumes]
            default = self.nbd_exports[0].name if len(self.nbd_exports) == 1 else None
            self.nbd = NbdServerFactory(ExportTable(self.nbd_exports, default=default), reactor)
        self.mgmt: MgmtClient | None = None
        if config.mgmt is not None:
            self.mgmt = MgmtClient(reactor, config.id, "edge", str(config.log),
                                   self.apply_snapshot, self.status, self.residual)
        self.metrics = self._build_metrics()

    def _run_sync(self, fn):
        return self.sync.run(fn)

    # -- the management server ---------------------------------------------------------
    def apply_snapshot(self, version: int, doc: dict, persist: bool = True) -> None:
        """Tables 404, 405, 408, 411 and the customers from the management server; the
        same keys as this edge's file. Kept in DATA_DIR/mgmt.json for a restart."""
        tables = read_tables(Reader({key: doc.get(key, []) for key in SNAPSHOT_TABLES},
                                    "snapshot."))
        if "keys" in doc:
            doc = dict(doc)
            self._set_keys(KeyRing.from_snapshot(doc.pop("keys")))
        self.device.set_tables(tables.routes, tables.pairs, tables.customers)
        access = tables.access
        self.fabric.reconfigure(tables.virtual_storages,
                                lambda storage, virtual: (storage, virtual) in access)
        if persist:
            path = os.path.join(self.config.data_dir, "mgmt.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"version": version, "snapshot": doc}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
        _log.info("{edge}: settings version {version} applied: {v} virtual storages, {p} pairs, "
                  "{r} routes", edge=self.config.id, version=version,
                  v=len(tables.virtual_storages), p=len(tables.pairs), r=len(tables.routes))

    def _set_keys(self, ring: KeyRing) -> None:
        """A snapshot's keys: in force at once, and kept in the key file (not in mgmt.json)
        so a restart before the server is reached again keeps working."""
        if self.udp.hop is None:
            _log.warn("{edge}: keys in a snapshot ignored: seal.mode is \"none\"",
                      edge=self.config.id)
            return
        # group epochs this edge's log still needs stay held; the file first, so a crash
        # never leaves the edge running keys its file lacks
        ring = self.device.seal.with_held(ring)
        ring.save(self.config.seal.keys)
        self.udp.hop.set_ring(ring)
        self.device.seal.set_ring(ring)

    def _held_released(self, ring: KeyRing) -> None:
        """A held group epoch is no longer used by the log: the key file without it."""
        ring.save(self.config.seal.keys)

    def _load_snapshot(self) -> int:
        """The snapshot this edge applied last (0: none): applied again at start."""
        path = os.path.join(self.config.data_dir, "mgmt.json")
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            held = json.load(f)
        self.apply_snapshot(held["version"], held["snapshot"], persist=False)
        return held["version"]

    def residual(self, group: int) -> dict:
        """The residual-entry query of 【0087】: what the log still holds of ``group``."""
        if group not in self.log_store.groups():
            raise LookupError(f"no group {group} in this edge's log")
        retained = self.log_store.retained(group)
        stats = self.log_store.group_stats(group)
        return {"group": group, "retained_entries": len(retained),
                "retained_bytes": stats["retained_bytes"],
                "first": retained[0] if retained else None,
                "last": retained[-1] if retained else None}

    def _apply_target(self, header: LogHeader):
        """An NBD server for the target LUNs ``[[nbd_target]]`` names; else the array's link."""
        target = self.nbd_targets.get((header.target_wwn, header.target_lun))
        return target if target is not None else self.device.target_side.fabric_target(header)

    def _attach(self, vs) -> None:
        vs.target = SourceTarget(self.device, vs.partner_wwn)

    def start(self) -> None:
        # a thread started in makeService would not survive twistd's daemonising fork
        self.sync = SyncThread(self.reactor)
        os.makedirs(self.config.data_dir, exist_ok=True)
        if self.udp.hop is not None:        # the counters reserved before the first datagram
            self.udp.hop.start()
        self.device.open()
        replayed = self.log_store.open()
        self.apply_state.open()
        if self.mgmt is not None:
            self.mgmt.version = self._load_snapshot()
        count = self.device.replay(replayed)
        if count:
            _log.info("{edge}: replaying {n} retained log entries", edge=self.config.id, n=count)

    def status(self) -> dict:
        return {"id": self.config.id, "log": str(self.config.log),
                "fcip": str(self.config.fcip) if self.config.fcip else None,
                "log_mode": self.config.log_mode,
                "links": [{"link": port.index, "array_wwn": format_wwn(port.array_wwn)
                           if port.array_wwn else None} for port in self.fabric.ports.values()],
                "groups": self.device.describe_groups(),
                "pairs": [row.describe() for row in self.device.pairs],
                "pair_control": dict(self.device.controls.counters),
                "counters": dict(self.device.counters),
                "sender": dict(self.device.sender.counters),
                "paths": self.device.sender.path_stats(),
                "drops": dict(self.device.drops.by_reason),
                "seal": self._seal_status(),
                "ack_latency_p50_s": _figure(self.device.ack_latency.quantile(0.5)),
                "ack_latency_p99_s": _figure(self.device.ack_latency.quantile(0.99)),
                "lag_p50_s": _figure(self.device.lag.quantile(0.5)),
                "lag_p99_s": _figure(self.device.lag.quantile(0.99)),
                "nbd": None if self.nbd is None else {
                    "listen": str(self.config.nbd.listen), "server": dict(self.nbd.counters),
                    "volumes": [export.describe() for export in self.nbd_exports]}}

    def _seal_status(self) -> dict:
        """Which epochs are held (never a key)."""
        hop = self.udp.hop
        if hop is None:
            return {"mode": "none"}
        # link epochs are the hop layer's; group (and held) epochs the end-to-end seal's
        epochs = {**self.device.seal.ring.epochs(), "links": hop.ring.epochs()["links"]}
        return {"mode": self.config.seal.mode, "epochs": epochs,
                "hop": dict(hop.counts), "end_to_end": dict(self.device.seal.counts)}

    def _build_metrics(self) -> MetricsRegistry:
        m = MetricsRegistry()
        labels = {"device": self.config.id}
        d = self.device
        m.counters("edge", lambda: d.counters, "edge data plane events", labels)
        m.counters("sender", lambda: d.sender.counters, "log-transfer sender", labels)
        m.counters("udp", lambda: self.udp.counters, "log-transfer socket", labels)
        # end-to-end seal: sealed, opened, resealed (entries sent again under a newer epoch)
        m.counters("seal", lambda: d.seal.counts, "end-to-end seal (group keys)", labels)
        m.counters("segments", lambda: {"evicted": d.assembler.evicted,
                                        "copies_ignored": d.assembler.copies_ignored,
                                        "joins_refused": d.assembler.joins_refused},
                   "segment reassembly", labels)
        m.counters("log_store", self.log_store.counters, "log storage area", labels,
                   gauges=("retained_entries", "retained_bytes", "segments"))
        m.labelled("drops_total", "counter", "datagrams dropped, by reason", ("reason",),
                   lambda: (((r,), n) for r, n in d.drops.by_reason.items()))
        # table 413 per group: generation and delete counters (source side), apply counter
        # and reorder/apply queues (target side)
        for name, key, doc, kind in (
                ("generation", "log_generation", "generation counter (last sequence given)",
                 "counter"),
                ("log_delete", "log_deleted", "delete counter (all entries up to it deleted)",
                 "counter"),
                ("log_retained_entries", "log_retained_entries", "entries retained until WROK",
                 "gauge"),
                ("applied", "applied", "apply counter", "counter"),
                ("durable", "durable", "apply counter known durable", "counter"),
                ("buffered", "buffered", "entries in the reorder buffer", "gauge"),
                ("in_flight", "in_flight", "entries applying, not yet durable", "gauge"),
                ("naks_sent", "naks_sent", "NAKs sent", "counter"),
                ("wroks_sent", "wroks_sent", "WROKs sent", "counter"),
                ("duplicates_applied", "duplicates_applied", "duplicates of applied entries",
                 "counter"),
                ("apply_errors", "apply_errors", "failed applies", "counter"),
                ("refused", "refused", "applies the target refused for good (group stopped)",
                 "counter"),
                ("bad_areas", "bad_areas", "entries whose RIO area did not parse (NAKed)",
                 "counter")):
            m.labelled(f"group_{name}", kind, doc, ("group",),
                       lambda key=key: ((((str(g["group"]),), g[key]) for g in d.describe_groups()
                                         if key in g)))
        # the pair table: one series per pair and state, 1 for the state it is in
        m.counters("pair_control", lambda: d.controls.counters, "pair control events", labels)
        m.labelled("pair_state", "gauge", "pair state (1 for the current one)",
                   ("source", "target", "side", "state"), lambda: self._pair_states())
        m.labelled("pair_bitmap_727_tracks", "gauge",
                   "dirty tracks of the bitmap 727 (entries failure Suspend dropped)",
                   ("source", "target"), lambda: (((_pair_label(r, "source"),
                                                    _pair_label(r, "target")), r.dirty_tracks())
                                                  for r in d.pairs if r.side == "source"))
        m.labelled("path_in_flight_bytes", "gauge", "unacknowledged bytes per path", ("path",),
                   lambda: (((p,), s["in_flight_bytes"]) for p, s in d.sender.path_stats().items()))
        for key, doc in (("srtt_s", "smoothed round trip per path (RFC 6298; absent: no sample)"),
                         ("rto_s", "retransmission timeout per path")):
            m.labelled(f"path_{key[:-2]}_seconds", "gauge", doc, ("path",),
                       lambda key=key: (((p,), s[key]) for p, s in d.sender.path_stats().items()
                                        if s[key] is not None))
        m.histogram("edge_ack_latency_seconds", "WR received to GOOD answered",
                    d.ack_latency.snapshot)
        m.histogram("edge_lag_seconds", "apply time minus I/O time (target side)",
                    d.lag.snapshot)
        if self.nbd is not None:
            self._nbd_metrics(m, labels)
        return m

    def _pair_states(self):
        for row in self.device.pairs:
            source, target = _pair_label(row, "source"), _pair_label(row, "target")
            for state in PairState:
                yield (source, target, row.side, state.value), int(row.state is state)

    def _nbd_metrics(self, m: MetricsRegistry, labels: dict) -> None:
        nbd, exports = self.nbd, self.nbd_exports
        m.counters("nbd", lambda: nbd.counters, "NBD front end (all volumes)", labels,
                   gauges=("connections_active",))
        for key in NBD_VOLUME_COUNTERS:
            m.labelled(f"nbd_volume_{key}", "counter", f"NBD volume: {key.replace('_', ' ')}",
                       ("volume",),
                       lambda key=key: (((e.name,), e.counters[key]) for e in exports))
        m.labelled("nbd_volume_pending_writes", "gauge",
                   "NBD volume: write requests waiting for the log", ("volume",),
                   lambda: (((e.name,), e.pending_writes) for e in exports))

    def close(self):
        if self.nbd is not None:
            for connection in list(self.nbd.connections):
                connection.close()
        self.device.stop()
        for target in self.nbd_targets.values():
            target.close()
        if self.udp.hop is not None:        # after the socket closed: the last windows
            self.udp.hop.stop()
        closed = gatherResults([self.log_store.close(), self.apply_state.close()])
        return closed.addBoth(self._stop_sync)

    def _stop_sync(self, result):
        if self.sync is not None:
            self.sync.stop()
        return result


def _figure(value: float) -> float | None:
    """None (JSON null) for a quantile of no samples, which is NaN."""
    return None if value != value else value


class _Status(resource.Resource):
    isLeaf = True

    def __init__(self, edge: Edge):
        super().__init__()
        self.edge = edge

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.edge.status(), indent=1, sort_keys=True).encode() + b"\n"


def http_site(edge: Edge) -> Site:
    root = resource.Resource()
    root.putChild(b"metrics", MetricsResource(edge.metrics))
    root.putChild(b"status", _Status(edge))
    return BoundedSite(root)


class _Udp(service.Service):
    def __init__(self, edge: Edge):
        self.edge = edge
        self.port = None

    def startService(self):
        super().startService()
        self.port = listen(self.edge.reactor, self.edge.udp, self.edge.config.log)

    def stopService(self):
        super().stopService()
        return self.port.stopListening() if self.port is not None else None


def make_service(config: EdgeConfig, reactor) -> tuple[service.MultiService, Edge]:
    edge = Edge(config, reactor)
    top = service.MultiService()
    OpenAtStart(f"rcn-edge {config.id}", edge.start, edge.close).setServiceParent(top)
    udp = _Udp(edge)
    udp.setServiceParent(top)
    if config.console is not None:
        serve_console(EdgeConsole(edge, udp).tree, config.id, f"RCN edge {config.id}",
                      config.console, reactor).setServiceParent(top)
    if edge.mgmt is not None:
        client_service(edge.mgmt, reactor, config.mgmt).setServiceParent(top)
    listeners = ((config.fcip, lambda: edge.fabric),
                 (config.nbd and config.nbd.listen, lambda: edge.nbd),
                 (config.metrics, lambda: http_site(edge)))
    for description, factory in listeners:          # endpoint strings (rcn.config)
        if description is not None:
            internet.StreamServerEndpointService(endpoints.serverFromString(reactor, description),
                                                 factory()).setServiceParent(top)
    _log.info("rcn-edge {id}: log {log} ({mode}), FCIP {fcip}, {v} virtual storages, {p} pairs, "
              "{r} routes, NBD {nbd} ({n} volumes)", id=config.id, log=str(config.log),
              mode=config.log_mode, fcip=config.fcip or "none",
              v=len(config.virtual_storages), p=len(config.settings.pairs),
              r=len(config.settings.routes),
              nbd=config.nbd.listen if config.nbd else "none", n=len(config.nbd_volumes))
    if config.nbd is not None and not config.nbd_volumes:
        _log.warn("rcn-edge {id}: [nbd] is configured but there is no [[nbd_volume]]: the NBD "
                  "server on {nbd} has nothing to export", id=config.id, nbd=str(config.nbd.listen))
    return top, edge
