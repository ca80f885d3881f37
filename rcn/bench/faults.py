"""Faults on a running lab and what is looked at after them.

Shared by the crash tests (``tests/rcn/test_crash.py``) and ``tools/chaos/``:
:func:`kill` (SIGKILL, then wait until the pid is gone, so a restart does not meet
the dead daemon's pidfile owner), :func:`device_status` (an array's or an edge's
JSON status) and :func:`volumes_equal` (a pair's two volume files, byte for byte).
Restarting a device is :func:`rcn.lab.restart`.
"""

from __future__ import annotations

import signal
import time

from rcn import lab as lablib
from rcn.lab import sha256_file

__all__ = ["kill", "device_status", "volumes_equal"]


def kill(directory: str, name: str, timeout: float = 10.0) -> int:
    """SIGKILL one lab device and wait until its pid has ended; the pid.
    ``LabError`` when it does not run, or still runs after ``timeout`` seconds."""
    pid = lablib.signal_device(directory, name, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while lablib.pid_alive(pid):
        if time.monotonic() > deadline:
            raise lablib.LabError(f"{name} (pid {pid}) still runs {timeout:g} s after SIGKILL")
        time.sleep(0.01)
    return pid


def device_status(device: dict, timeout: float = 2.0) -> dict:
    """An array's control ``/status`` or an edge's ``/status`` (OSError/ValueError when it
    does not answer)."""
    url = (device["urls"]["status"] if device["role"] == "edge"
           else device["urls"]["control"] + "/status")
    return lablib.get_json(url, timeout)


def volumes_equal(pair: dict) -> bool:
    """A lab pair's source and target volume files hold the same bytes."""
    return sha256_file(pair["source_volume"]) == sha256_file(pair["target_volume"])
