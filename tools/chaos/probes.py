"""Invariants 5 and 6 for one daemon: bounded resources, bad input answered."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from rcn import lab as lablib
from rcn.wanem.driver import ApplianceError, WanemDriver, open_port
from tools.chaos.parties import HTTP_TIMEOUT

RSS_LIMIT = 512 << 20        # bytes of resident memory per daemon (they start near 170 MiB)
FD_LIMIT = 256               # open descriptors per daemon (they start near 15)


def resources(pid: int) -> tuple[int, int] | None:
    """(resident bytes, open descriptors) of a process (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


def _base(device: dict) -> str | None:
    urls = device["urls"]
    if "control" in urls:
        return urls["control"]
    if "metrics" in urls:
        return urls["metrics"].rsplit("/", 1)[0]
    return None


def probe(device: dict) -> str | None:
    """Invariant 6 for one daemon: what it failed to answer (None: it answered)."""
    if device["role"] == "wanem":
        try:
            driver = WanemDriver(open_port(device["urls"]["scpi"], timeout=2.0))
        except Exception as exc:                  # serial.SerialException: no connection
            return f"SCPI: cannot connect: {exc}"
        try:
            if not driver.identify():
                return "SCPI: *IDN? answered nothing"
            try:
                driver.command("CHAOS:NOSUCH 1")
            except ApplianceError as exc:
                if "no answer" in str(exc):
                    return f"SCPI: an unknown command: {exc}"
                return None
            return "SCPI: an unknown command was accepted"
        except ApplianceError as exc:
            return f"SCPI: {exc}"
        finally:
            driver.close()
    base = _base(device)
    if base is None:
        return None
    try:
        text = lablib.get_text(base + "/metrics", HTTP_TIMEOUT)
        if "# TYPE" not in text:
            return f"{base}/metrics: not Prometheus text"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{base}/metrics: {getattr(exc, 'reason', exc)}"
    try:
        with urllib.request.urlopen(base + "/chaos-no-such-path", timeout=HTTP_TIMEOUT):
            return f"{base}/chaos-no-such-path: answered 2xx"
    except urllib.error.HTTPError as exc:
        if not 400 <= exc.code < 500:
            return f"{base}/chaos-no-such-path: HTTP {exc.code}, not 4xx"
    except (urllib.error.URLError, OSError) as exc:
        return f"{base}/chaos-no-such-path: {getattr(exc, 'reason', exc)}"
    return None
