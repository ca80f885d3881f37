"""A progress display for long operations: a bar on a terminal, plain lines otherwise.

``Progress(total, out, mode, label="writing")``: ``mode`` is ``"bar"`` (one
line redrawn with ``\\r`` at most every 0.2 s, for a tty), ``"lines"`` (a line
``<label>: ...`` every 2 s, for logs and pipes) or ``"none"``. ``update(done)``
reports how far it got; ``update(done, final=True)`` always draws and ends the
line. Each line shows MiB done of the total, the rate in MB/s (10^6 bytes) and
the ETA. ``clock`` (default ``time.perf_counter``) is injectable for tests.
"""

from __future__ import annotations

import math
import time

MB = 1_000_000


def mode_for(out, quiet: bool = False) -> str:
    """``"bar"`` on a terminal, ``"lines"`` otherwise, ``"none"`` when ``quiet``."""
    if quiet:
        return "none"
    isatty = getattr(out, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


class Progress:
    """Progress of an operation of ``total`` bytes (see the module doc)."""

    def __init__(self, total: int, out, mode: str, label: str = "writing", clock=time.perf_counter):
        self.total, self.out, self.mode, self.label = total, out, mode, label
        self.clock = clock
        self.start = clock()
        self.last = self.start       # the first line after one interval: a rate worth showing

    def line(self, done: int) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:5.1f}s" if math.isfinite(eta) else "    ?"
        return (f"{done / (1 << 20):8.1f} / {self.total / (1 << 20):.1f} MiB  "
                f"{rate / MB:7.1f} MB/s  ETA {eta_text}")

    def update(self, done: int, final: bool = False) -> None:
        if self.mode == "none":
            return
        now = self.clock()
        if self.mode == "bar":
            if not final and now - self.last < 0.2:
                return
            width = 30
            filled = min(int(width * done / self.total), width) if self.total else width
            self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line(done)}"
                           + ("\n" if final else ""))
        else:
            if not final and now - self.last < 2.0:
                return
            self.out.write(f"{self.label}: {self.line(done)}\n")
        self.out.flush()
        self.last = now
