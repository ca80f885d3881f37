"""One NBD connection: input pump, flow control, output, and its two phases.

``NbdSession`` is a plain object: bytes go in through ``data_received`` and
come out through a ``Link`` (write, pause/resume reading, close), which the
Twisted protocol in ``rcn.nbd.server`` implements over its transport. Time
comes from an injected clock (``callLater``), used for the handshake deadline.

The session feeds its input to the phase it is in: ``rcn.nbd.handshake``'s
``Handshake`` (fixed newstyle negotiation, options), then
``rcn.nbd.transmission``'s ``Transmission`` (requests dispatched as soon as
their header and, for WRITE, payload are complete; replies matched by
cookie, possibly out of order). Replies produced while a chunk of input is
being parsed are collected and written with one ``writeSequence``.

Limits (``ServerLimits``), and what hitting each one does:

* a READ or WRITE longer than ``max_request_bytes``: EINVAL; a WRITE's payload
  is read and thrown away (nothing buffered) up to ``max_skip_bytes``, past
  which the connection is closed after the error reply;
* in-flight requests over ``max_inflight_bytes`` or ``max_inflight_requests``:
  the session stops parsing and pauses the transport; it resumes when replies
  drain below half of either limit;
* the transport's send buffer full (the client does not read its replies): the
  transport pauses the session as its producer, which stops reading too;
* input that arrives while paused beyond ``max_backlog_bytes``: disconnect;
* option data longer than ``max_option_bytes``: thrown away unbuffered and
  answered NBD_REP_ERR_TOO_BIG (NBD_OPT_EXPORT_NAME cannot be answered, so it
  disconnects); more than ``max_options`` options: disconnect;
* no transmission phase within ``handshake_timeout`` seconds: disconnect.

Every refused request and every disconnect for bad input is counted in the
server's counters and logged (the first ``max_logged_errors`` error replies of
a connection; every disconnect).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from twisted.logger import Logger

from rcn.nbd import protocol as P
from rcn.nbd.export import Export, ExportTable
from rcn.nbd.handshake import Handshake
from rcn.nbd.transmission import Transmission

MiB = 1 << 20


@dataclass(frozen=True)
class ServerLimits:
    """Per-server limits; every buffer the server keeps is bounded by one of these."""

    max_request_bytes: int = 32 * MiB      # largest READ/WRITE; advertised as maximum block size
    max_skip_bytes: int = 128 * MiB        # oversize WRITE payload read and discarded, not buffered
    max_inflight_bytes: int = 64 * MiB     # per connection, READ + WRITE bytes not yet replied to
    max_inflight_requests: int = 1024      # per connection
    max_backlog_bytes: int = 4 * MiB       # input received while paused (transport ignored pause)
    max_option_bytes: int = 64 * 1024      # option data buffered during the handshake
    max_options: int = 64                  # options per handshake
    handshake_timeout: float = 30.0        # seconds from connect to transmission phase
    max_connections: int = 128             # per server
    max_logged_errors: int = 10            # error replies logged per connection
    preferred_block_size: int = 4096       # advertised preferred block size (at least the export's)

    def __post_init__(self):
        if self.max_request_bytes < 512 or self.max_request_bytes & (self.max_request_bytes - 1):
            raise ValueError(f"max_request_bytes must be a power of two >= 512, "
                             f"got {self.max_request_bytes}")
        for name in ("max_skip_bytes", "max_inflight_bytes", "max_inflight_requests",
                     "max_backlog_bytes", "max_option_bytes", "max_options", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be positive, got {self.handshake_timeout}")


COUNTER_NAMES = (
    "connections", "connections_active", "connections_refused", "handshakes",
    "options", "option_errors", "handshake_timeouts", "protocol_errors",
    "requests_read", "requests_write", "requests_flush", "requests_trim",
    "requests_write_zeroes", "requests_disc", "requests_unknown",
    "bytes_read", "bytes_written", "errors", "replies_dropped", "backpressure_pauses",
) + tuple(f"errors_{name}" for name in P.ERROR_NAMES.values())


def new_counters() -> dict[str, int]:
    return dict.fromkeys(COUNTER_NAMES, 0)


class Link(Protocol):
    """What a session needs from its connection."""

    peer: str

    def write_sequence(self, chunks: list[bytes]) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Clock(Protocol):
    def callLater(self, delay: float, func, *args, **kw): ...


# Session states, in order (a state below DISCONNECTING still reads input).
HANDSHAKE, TRANSMISSION, DISCONNECTING, CLOSED = range(4)

_OUT_FLUSH_BYTES = 256 * 1024  # replies collected during one chunk before an early write


class NbdSession:
    """The server side of one NBD connection."""

    _log = Logger()

    def __init__(self, link: Link, exports: ExportTable, clock: Clock, limits: ServerLimits,
                 counters: dict[str, int]):
        self._link = link
        self._clock = clock
        self.limits = limits
        self.counters = counters
        self.peer = link.peer
        self.state = HANDSHAKE
        # input
        self._input: deque = deque()
        self._input_bytes = 0
        self._in_feed = False
        self.rx_total = 0            # bytes consumed so far, for error messages
        # output
        self._out: list[bytes] = []
        self._out_bytes = 0
        # flow control: why reading stopped ("output", "inflight"); phases read it
        self.pause_reasons: set[str] = set()
        self._timer = None
        # the phase that reads input (None once disconnecting)
        self.handshake = Handshake(self, exports, self._log)
        self.transmission: Transmission | None = None
        self.phase: Handshake | Transmission | None = self.handshake

    @property
    def export(self) -> Export | None:
        return self.transmission.export if self.transmission is not None else None

    @property
    def inflight(self) -> int:
        return self.transmission.inflight if self.transmission is not None else 0

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # -- events from the connection -------------------------------------------

    def connection_made(self) -> None:
        self._timer = self._clock.callLater(self.limits.handshake_timeout, self._handshake_expired)
        self.handshake.greet()
        self._flush_out()

    def data_received(self, data: bytes) -> None:
        if self.state >= DISCONNECTING or not data:
            return
        if self.pause_reasons:
            if self._input_bytes + len(data) > self.limits.max_backlog_bytes:
                self.violation(f"{self._input_bytes + len(data)} bytes arrived while the "
                               f"connection was paused (limit {self.limits.max_backlog_bytes})")
                return
        self._input.append(data)
        self._input_bytes += len(data)
        self._pump()

    def connection_lost(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.phase = None
        self._cancel_timer()
        self._input.clear()
        self._input_bytes = 0
        if self.transmission is not None:
            self.transmission.connection_lost()
        self._out = []

    def output_paused(self) -> None:
        """The transport's send buffer is full: stop reading until it drains."""
        self.pause("output")

    def output_resumed(self) -> None:
        self.resume("output")

    @property
    def paused(self) -> bool:
        return bool(self.pause_reasons)

    # -- input pump --------------------------------------------------------------

    def _pump(self) -> None:
        if self._in_feed:
            return
        self._in_feed = True
        try:
            while self._input and not self.pause_reasons and self.state < DISCONNECTING:
                chunk = self._input.popleft()
                size = len(chunk)
                self._input_bytes -= size
                pos = self._feed(chunk)
                self.rx_total += pos
                if pos < size and self.state < DISCONNECTING:
                    rest = memoryview(chunk)[pos:]
                    self._input.appendleft(rest)
                    self._input_bytes += size - pos
            if self.state >= DISCONNECTING:
                self._input.clear()
                self._input_bytes = 0
        finally:
            self._in_feed = False
        self._flush_out()

    def _feed(self, chunk) -> int:
        """Hand ``chunk`` to the phase in turn until it ends, the session pauses or stops
        reading; return the bytes used. A phase returns early only when it hands over."""
        mv = memoryview(chunk)
        n = len(mv)
        pos = 0
        while pos < n and not self.pause_reasons and self.phase is not None:
            pos = self.phase.feed(mv, pos, n)
        return pos

    # -- what the phases call ------------------------------------------------------

    def enter_transmission(self, export: Export) -> None:
        """The handshake chose ``export``: requests follow."""
        self._cancel_timer()
        self.state = TRANSMISSION
        self.transmission = self.phase = Transmission(self, export, self._log)
        self.counters["handshakes"] += 1
        self._log.info("NBD {peer}: serving export {name!r} ({size} bytes)",
                       peer=self.peer, name=export.name, size=export.size)

    def stop_reading(self) -> None:
        """NBD_CMD_DISC: read no more; the transmission closes once its replies are out."""
        self.state = DISCONNECTING
        self.phase = None

    def pause(self, reason: str) -> None:
        if not self.pause_reasons:
            self.counters["backpressure_pauses"] += 1
            if self.state < DISCONNECTING:
                self._link.pause_reading()
        self.pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.pause_reasons:
            return
        self.pause_reasons.discard(reason)
        if not self.pause_reasons and self.state < DISCONNECTING:
            self._link.resume_reading()
            if self._input and not self._in_feed:
                self._pump()

    def send(self, *chunks: bytes) -> None:
        self._out.extend(chunks)
        for chunk in chunks:
            self._out_bytes += len(chunk)
        if not self._in_feed or self._out_bytes >= _OUT_FLUSH_BYTES:
            self._flush_out()

    def _flush_out(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self._out_bytes = 0
            if self.state != CLOSED:
                self._link.write_sequence(out)

    # -- handshake deadline ------------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.state == HANDSHAKE:
            self.counters["handshake_timeouts"] += 1
            self.violation(f"no export chosen within {self.limits.handshake_timeout} s",
                           count=False)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- ending ----------------------------------------------------------------------

    def violation(self, reason: str, count: bool = True) -> None:
        """Bad input: log, count, send what is queued, close the connection."""
        if count:
            self.counters["protocol_errors"] += 1
        self._log.warn("NBD {peer}: closing connection: {reason}", peer=self.peer, reason=reason)
        self.close()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = DISCONNECTING
        self.phase = None
        self._cancel_timer()
        self._input.clear()
        self._input_bytes = 0
        self._flush_out()
        self.state = CLOSED
        self._link.close()
