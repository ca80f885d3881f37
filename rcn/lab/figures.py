"""The lab's figures: each device's key figures, the lab's status, and whether the target
has applied everything the source wrote (what ``rcn demo``, the bench and the crash tests
wait for)."""

from __future__ import annotations

import hashlib
import time
import urllib.error

from rcn.lab.processes import LabError, get_json, get_text, is_ours, need_lab, pid_alive


def applied_counter(group: dict) -> int:
    """The target edge's apply counter for a group from its ``/status`` entry.

    ``durable`` (the counter as persisted; WROKs leave only after it) rather than
    ``applied``: in ``/status`` the receiver's ``applied`` is overwritten by the
    statistics field of the same name, which counts entries applied since the
    daemon started, so after a restart it is not the counter.
    """
    return group.get("durable", group.get("applied", 0))


def _core_figures(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {"forwarded": 0, "batches_sent": 0, "drops": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rcn_core_forwarded_total":
                out["forwarded"] = int(sample.value)
            elif sample.name == "rcn_core_batches_sent_total":
                out["batches_sent"] = int(sample.value)
            elif sample.name == "rcn_core_received_total":
                out["received"] = int(sample.value)
            elif sample.name == "rcn_core_dropped_total":
                out["drops"][sample.labels.get("reason", "")] = int(sample.value)
    return out


def _mgmt_figures(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    out = {"version": None, "up_to_date": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rcn_mgmt_settings_version":
                out["version"] = int(sample.value)
            elif sample.name == "rcn_mgmt_device_up_to_date":
                out["up_to_date"][sample.labels.get("device", "")] = bool(sample.value)
    return out


def _wanem_figures(device: dict) -> dict:
    """Each link's state, delay, loss and counters, asked over the SCPI TCP port."""
    from rcn.wanem.driver import ApplianceError, WanemDriver, open_port
    try:
        driver = WanemDriver(open_port(device["urls"]["scpi"], timeout=2.0))
    except Exception as exc:                  # serial.SerialException: cannot connect
        raise OSError(str(exc)) from None
    try:
        links = []
        for link in device["links"]:
            n = link["number"]
            state, delay, loss = driver.query(f"LINK{n}:STATE?;DEL?;LOSS?").split(";")
            stats = driver.stats(n)
            links.append({"link": n, "between": link["between"], "state": state,
                          "delay_ms": float(delay), "loss_percent": float(loss),
                          "in": stats.packets_in, "out": stats.packets_out,
                          "dropped": stats.dropped})
        return {"links": links}
    except (ApplianceError, ValueError) as exc:
        raise OSError(f"SCPI: {exc}") from None
    finally:
        driver.close()


def device_figures(device: dict) -> dict:
    """A device's key figures from its HTTP interface (``error`` when it does not answer)."""
    try:
        if device["role"] == "storage":
            base = device["urls"]["control"]
            body = get_json(base + "/status")
            pairs = get_json(base + "/pairs").get("pairs", [])
            return {"edge_link": body.get("edge_link"), "replication": body.get("replication"),
                    "rio_target": body.get("rio_target"),
                    "pairs": [{k: p.get(k) for k in ("lun", "role", "partner_lun", "group",
                                                     "state", "mode", "dirty_tracks",
                                                     "copy_progress")}
                              for p in pairs]}
        if device["role"] == "edge":
            body = get_json(device["urls"]["status"])
            return {"links": body.get("links"),
                    "pairs": [{k: p.get(k) for k in ("source_lun", "target_lun", "group", "side",
                                                     "state", "bitmap_727_tracks")}
                              for p in body.get("pairs", [])],
                    "groups": [{k: g.get(k) for k in ("group", "log_generation", "log_deleted",
                                                      "log_retained_entries", "log_outstanding",
                                                      "applied", "durable") if k in g}
                               for g in body.get("groups", [])],
                    "ack_latency_p50_s": body.get("ack_latency_p50_s"),
                    "ack_latency_p99_s": body.get("ack_latency_p99_s"),
                    "lag_p50_s": body.get("lag_p50_s"), "lag_p99_s": body.get("lag_p99_s"),
                    "sender": body.get("sender"), "drops": body.get("drops")}
        if device["role"] == "mgmt":
            return _mgmt_figures(get_text(device["urls"]["metrics"]))
        if device["role"] == "wanem":
            return _wanem_figures(device)
        return _core_figures(get_text(device["urls"]["metrics"]))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"{getattr(exc, 'reason', exc)}"}


def status(directory: str) -> dict:
    lab = need_lab(directory)
    rows = []
    for device in lab["devices"]:
        alive = pid_alive(device.get("pid")) and is_ours(device)
        row = {"name": device["name"], "role": device["role"], "pid": device.get("pid"),
               "alive": alive}
        if alive:
            row.update(device_figures(device))
        rows.append(row)
    return {"dir": lab["dir"], "nbd_url": lab["nbd_url"], "devices": rows}


def group_status(body: dict | None, group: int) -> dict:
    """One group's entry in an edge's ``/status`` (empty when it has none)."""
    return next((g for g in (body or {}).get("groups", []) if g.get("group") == group), {})


def unapplied(source: dict, target: dict, groups) -> list[str]:
    """The groups the target edge has not applied yet, described (empty: all applied and
    nothing retained, outstanding or in flight at the source edge)."""
    in_flight = sum(p.get("in_flight", 0) for p in source.get("paths", {}).values())
    behind = []
    for group in groups:
        s, t = group_status(source, group), group_status(target, group)
        generation = s.get("log_generation", 0)
        applied = applied_counter(t)
        retained, outstanding = s.get("log_retained_entries", 0), s.get("log_outstanding", 0)
        if retained or outstanding or in_flight or applied != generation:
            behind.append(f"group {group}: source generation {generation}, retained {retained}, "
                          f"outstanding {outstanding}, in flight {in_flight}; target applied "
                          f"{applied}")
    return behind


def wait_applied(lab: dict, timeout: float) -> dict:
    """Poll the edges until every pair's group is applied; their last /status bodies."""
    devices = {d["name"]: d for d in lab["devices"]}
    groups = sorted({p["group"] for p in lab["pairs"]})
    deadline = time.monotonic() + timeout
    while True:
        try:
            source = get_json(devices["edgeA"]["urls"]["status"])
            target = get_json(devices["edgeB"]["urls"]["status"])
        except (OSError, ValueError) as exc:
            raise LabError(f"edge /status not answering: {getattr(exc, 'reason', exc)}") from None
        behind = unapplied(source, target, groups)
        if not behind:
            return {"source": source, "target": target}
        if time.monotonic() > deadline:
            raise LabError(f"not everything applied after {timeout:g} s: " + "; ".join(behind)
                           + f" (logs in {lab['dir']})")
        time.sleep(0.05)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()
