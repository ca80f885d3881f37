"""The ``rotate`` fault: key rotation under load, through the management server (issue 17).

``POST /api/v1/keys/rotate {"all": true}`` starts a rotation of every link and group key
in use (``rcn.mgmt.keys``): each new epoch is accepted everywhere first, and sent with
only once every device that needs it has acknowledged a snapshot holding it (never on a
timer); the old one is retired after the overlap, once every device has acknowledged the
snapshot in which the new one sends. The fault is done once every rotated key's new
epoch is the one sent with (``GET /api/v1/keys``); one that is not by the recovery
timeout is named with the devices it waits for (the listing's ``waiting_for``: devices
not acknowledging the management server's snapshots). Then the run goes on as after any
fault (Duplex everywhere, caught up, the prefix checks); and the edges' ``/status``
figures from before the rotation to after the recovery must show no refusal of the seal
(:data:`REFUSALS`: a good rotation makes none) and no retransmission storm
(:func:`storm`).

A management server without the endpoint (404/405) makes the fault *skipped*, with the
reason, not failed: the rotation is then not exercised, and the table says so.
"""

from __future__ import annotations

import time

from rcn import lab as lablib

#: the edges' drop reasons a rotation done right never causes (``replayed`` is left out:
#: a restarted or stopped neighbour's late datagrams are replays by design)
REFUSALS = ("not_neighbour", "unsealed", "malformed", "unknown_key", "bad_tag", "no_link_key",
            "no_counter", "e2e_unsealed", "e2e_unknown_key", "e2e_retired_key", "e2e_bad_tag")
#: a storm: more retransmissions over the fault and its recovery than this many, and more
#: than one per write acknowledged meanwhile
STORM_FLOOR = 50
POLL = 0.2


class RotationAbsent(Exception):
    """The management server has no key rotation endpoint: the fault is skipped."""


def seal_figures(lab: dict, fetch_json) -> dict:
    """Per edge: its sender's retransmissions, its drops by reason, its seal mode and the
    newest key epoch it holds of each link and group (``/status``; never key material)."""
    out = {}
    for device in lab["devices"]:
        if device["role"] != "edge":
            continue
        body = fetch_json(device["urls"]["status"])
        seal = body.get("seal") or {}
        epochs = seal.get("epochs") or {}
        newest = {f"{kind} {name}": max(held) for kind in ("links", "groups")
                  for name, held in (epochs.get(kind) or {}).items() if held}
        out[device["name"]] = {"retransmits": body.get("sender", {}).get("retransmits", 0),
                               "drops": dict(body.get("drops", {})),
                               "mode": seal.get("mode"), "newest": newest}
    return out


def not_rotated(before: dict, after: dict) -> list[str]:
    """What a rotation did not reach: an edge running unsealed, or a link or group key of
    an edge whose newest epoch did not go up."""
    out = []
    for name, now in after.items():
        if now.get("mode") == "none":
            out.append(f"{name} runs unsealed (seal.mode none)")
            continue
        was = before.get(name, {}).get("newest", {})
        out += [f"{name} {key}: still epoch {epoch}" for key, epoch in now["newest"].items()
                if key in was and epoch <= was[key]]
    return out


def seal_delta(before: dict, after: dict) -> tuple[dict, int]:
    """(refusals by "edge reason", retransmissions) between two :func:`seal_figures`."""
    refused, retransmits = {}, 0
    for name, now in after.items():
        was = before.get(name, {"retransmits": 0, "drops": {}})
        retransmits += max(0, now["retransmits"] - was["retransmits"])
        for reason in REFUSALS:
            n = now["drops"].get(reason, 0) - was["drops"].get(reason, 0)
            if n > 0:
                refused[f"{name} {reason}"] = n
    return refused, retransmits


def storm(retransmits: int, acked: int) -> bool:
    return retransmits > max(STORM_FLOOR, acked)


def rotate_all(lab: dict, timeout: float) -> dict:
    """Rotate every key; wait until each new epoch sends. ``{"rotated": n, "skipped": [...],
    "sending_s": seconds or None, "pending": [names still not sending]}``;
    :class:`RotationAbsent` without the endpoint."""
    try:
        answer = lablib.api(lab, "POST", "/keys/rotate", {"all": True})
    except lablib.LabError as exc:
        if "HTTP 404" in str(exc) or "HTTP 405" in str(exc):
            raise RotationAbsent(f"the management server has no POST /api/v1/keys/rotate "
                                 f"({exc})") from None
        raise
    wanted = {(r["kind"], str(r["name"])): r["epoch"] for r in answer.get("rotated", [])}
    began = time.monotonic()
    pending = sorted(f"{k} {n}" for k, n in wanted)
    while pending and time.monotonic() - began < timeout:
        time.sleep(POLL)
        pending = _not_sending(lablib.api(lab, "GET", "/keys"), wanted)
    return {"rotated": len(wanted),
            "skipped": [f"{r['kind']} {r['name']}: {r.get('reason')}"
                        for r in answer.get("skipped", [])],
            "sending_s": None if pending else round(time.monotonic() - began, 3),
            "pending": pending}


def _not_sending(listing: dict, wanted: dict) -> list[str]:
    """The rotated links and groups whose new epoch is not the one sent with yet, each
    with the devices its epoch waits for when the listing names them."""
    rows = {("link", f"{row['a']} {row['b']}"): row for row in listing.get("links", [])}
    rows.update({("group", str(row["group"])): row for row in listing.get("groups", [])})
    out = []
    for (kind, name), epoch in sorted(wanted.items(), key=lambda item: item[0]):
        row = rows.get((kind, name), {})
        if (_sent_epoch(row) or 0) >= epoch:
            continue
        late = next((e.get("waiting_for") for e in row.get("epochs", [])
                     if e.get("epoch") == epoch), None)
        out.append(f"{kind} {name}" + (f" (waiting for {', '.join(late)})" if late else ""))
    return sorted(out)


def _sent_epoch(row: dict) -> int | None:
    sent = [e["epoch"] for e in row.get("epochs", []) if e.get("send")]
    return max(sent) if sent else None
