"""One emulated WAN link, and the UDP relay that puts links in front of real devices.

:class:`EmulatedLink` is one direction of a link as a plain object: datagrams go
in with :meth:`~EmulatedLink.send`, come out (later, perhaps not, perhaps twice)
through the injected ``deliver(datagram)``. Time is the injected clock's
(``seconds()`` and ``callLater``); randomness is a ``random.Random(seed)``.

What a datagram goes through, in this order
    1. **Counted in** (``in``).
    2. **Four random draws**, always, whatever the settings: loss, duplicate,
       reorder, jitter (``random()`` each, in that order). So one seed gives one
       sequence of fates, and changing one setting does not shift the others' draws.
    3. **DOWN**: dropped (``down``).
    4. **Loss**: dropped when the loss draw < ``loss`` (``loss``).
    5. **Serialiser** (only when ``rate`` > 0): a FIFO of whole datagrams holding at
       most ``queue_limit`` bytes, the one being transmitted included (a datagram
       occupies the buffer until its last byte is out). A datagram that would take
       the queue over the limit is dropped (``queue_full``); so is one larger than
       the limit. Transmission takes ``len(datagram) / rate`` seconds, back to back:
       the rate counts UDP payload bytes only (no IP/UDP header overhead). With
       ``rate`` = 0 (unlimited) a datagram leaves the serialiser at once.
    6. **Propagation** ("the wire"): the datagram leaves the serialiser at time t and
       is due at ``t + delay + jitter * u``, u the jitter draw -- that is, uniformly
       distributed over [delay, delay + jitter): jitter only ever adds, as queueing
       in a real path does, so ``delay`` is the minimum. The link keeps FIFO order:
       a datagram is never due before the one that left the serialiser before it
       (its due time is raised to that one's), so the bounds stay [delay,
       delay + jitter] but back-to-back traffic sees fewer short delays.
       **Reorder**: when the reorder draw < ``reorder`` the datagram is instead due
       at ``t + delay + jitter * u + reorder_hold`` and takes no part in the FIFO
       rule (neither raised, nor raising others): every datagram that leaves within
       ``reorder_hold`` after it overtakes it (``reordered`` counts such datagrams).
       The wire holds at most ``wire_limit`` bytes (bandwidth x delay of the
       emulated path); a datagram that would exceed it is dropped (``wire_full``).
    7. **Out**: at its due time the datagram is delivered (``out``); when the
       duplicate draw < ``duplicate`` a second, identical copy follows at once
       (``out`` counts both, ``duplicated`` counts the pair once).
       Delivery is always from a timer, never from inside :meth:`~EmulatedLink.send`.

So, with nothing in flight, ``in = out - duplicated + sum(dropped)``.

Run-time changes (:meth:`EmulatedLink.configure`) take effect for datagrams sent
(loss, duplicate, reorder) or leaving the serialiser (delay, jitter) afterwards;
a new ``rate`` applies from the next datagram transmitted (``rate`` = 0 releases
the whole queue at once); a smaller ``queue_limit`` drops the newest queued
datagrams until the rest fit (``queue_full``). Out-of-range values raise
``ValueError`` naming the setting and its range (:data:`RANGES`), and nothing is
changed. ``set_state(False)`` is a cut cable: the queue and the wire are emptied,
their datagrams counted as ``down``, and everything sent until ``set_state(True)``
is dropped as ``down``.

:class:`WanEmulator` puts :class:`RelayLink`\\ s -- two :class:`EmulatedLink`\\ s
each, A to B and B to A -- between UDP sockets: what reaches a link's A socket is
sent from its B socket to the configured B address, and what reaches the B socket
goes back from the A socket to the A side. The protocol class is thin; the relay
logic runs on anything with ``write(data, addr)``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Mapping

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rcn.logxfer.protocol import (DEFAULT_RECEIVE_BUFFER, DEFAULT_SEND_BUFFER, MAX_UDP_PAYLOAD,
                                  size_buffers)

_log = Logger()

#: A rate above 0 must be at least this (bytes/s): below it one datagram would take hours.
MIN_RATE = 1.0

#: setting -> (lowest, highest, unit). ``rate`` 0 means unlimited, else >= MIN_RATE.
RANGES: dict[str, tuple[float, float, str]] = {
    "delay": (0.0, 10.0, "s"),
    "jitter": (0.0, 10.0, "s"),
    "loss": (0.0, 1.0, "(fraction)"),
    "duplicate": (0.0, 1.0, "(fraction)"),
    "reorder": (0.0, 1.0, "(fraction)"),
    "rate": (0.0, 12.5e9, "bytes/s"),          # 100 Gbit/s
    "queue_limit": (1, 1 << 30, "bytes"),
}

#: The settings a link has when nothing else is said.
DEFAULTS: dict[str, float] = {
    "delay": 0.0, "jitter": 0.0, "loss": 0.0, "duplicate": 0.0, "reorder": 0.0,
    "rate": 0.0, "queue_limit": 1 << 20,
}

DROP_CAUSES = ("down", "loss", "queue_full", "wire_full")

# A timer fired for time t may see seconds() a rounding error before t.
_EPSILON = 1e-9


def check_setting(name: str, value) -> float:
    """``value`` as the setting's number; ``ValueError`` naming the setting and its range
    (or naming an unknown setting); ``TypeError`` for a non-number."""
    if name not in RANGES:
        raise ValueError(f"unknown link setting {name!r}; known: {', '.join(RANGES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"link setting {name} must be a number, not {type(value).__name__}")
    lo, hi, unit = RANGES[name]
    if name == "rate":
        if not (value == 0 or MIN_RATE <= value <= hi):
            raise ValueError(f"rate {value} bytes/s is outside 0 (unlimited) or "
                             f"{MIN_RATE:g}..{hi:g} bytes/s")
    elif not lo <= value <= hi:   # also refuses NaN
        raise ValueError(f"{name} {value} {unit} is outside {lo:g}..{hi:g} {unit}")
    if name == "queue_limit":
        if value != int(value):
            raise ValueError(f"queue_limit {value} is not a whole number of bytes")
        return int(value)
    return float(value)


@dataclass(frozen=True)
class LinkStats:
    """A link's counters (one direction, or the sum of both with ``+``)."""

    packets_in: int = 0
    packets_out: int = 0
    down: int = 0
    loss: int = 0
    queue_full: int = 0
    wire_full: int = 0
    duplicated: int = 0
    reordered: int = 0
    queue_packets: int = 0
    queue_bytes: int = 0

    def __add__(self, other: "LinkStats") -> "LinkStats":
        return LinkStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def dropped(self) -> int:
        return self.down + self.loss + self.queue_full + self.wire_full


class _Datagram:
    __slots__ = ("data", "copies", "reorder", "u")

    def __init__(self, data: bytes, copies: int, reorder: bool, u: float):
        self.data = data
        self.copies = copies
        self.reorder = reorder
        self.u = u


class EmulatedLink:
    """One direction of an emulated link; see the module docstring.

    ``clock``: ``seconds()`` and ``callLater``; ``deliver(datagram)``: where datagrams
    come out. Settings (:data:`RANGES`): ``delay`` and ``jitter`` in seconds, ``loss``,
    ``duplicate`` and ``reorder`` as fractions 0..1, ``rate`` in bytes/s (0: unlimited),
    ``queue_limit`` in bytes. ``reorder_hold`` (s): the extra wait of a reordered
    datagram; ``wire_limit``: bytes in propagation at most.
    """

    def __init__(self, clock, deliver: Callable[[bytes], None], *, seed: int = 0,
                 delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0,
                 duplicate: float = 0.0, reorder: float = 0.0, rate: float = 0.0,
                 queue_limit: int = 1 << 20, up: bool = True, reorder_hold: float = 0.010,
                 wire_limit: int = 64 << 20):
        if not 0 < reorder_hold <= 10.0:
            raise ValueError(f"reorder_hold {reorder_hold} s is outside (0, 10] s")
        if not 1 <= wire_limit <= 1 << 32:
            raise ValueError(f"wire_limit {wire_limit} bytes is outside 1..{1 << 32} bytes")
        self._clock = clock
        self._deliver = deliver
        self.seed = seed
        self._random = random.Random(seed)
        self.reorder_hold = float(reorder_hold)
        self.wire_limit = int(wire_limit)
        initial = dict(delay=delay, jitter=jitter, loss=loss, duplicate=duplicate,
                       reorder=reorder, rate=rate, queue_limit=queue_limit)
        self._settings = {name: check_setting(name, value) for name, value in initial.items()}
        self._initial = (dict(self._settings), bool(up))
        self.up = bool(up)
        self._counts = dict.fromkeys(("packets_in", "packets_out", "duplicated", "reordered"), 0)
        self._dropped = dict.fromkeys(DROP_CAUSES, 0)
        # serialiser
        self._queue: deque[_Datagram] = deque()
        self._queue_bytes = 0
        self._tx_timer = None
        self._tx_end = 0.0          # when the datagram in transmission is out
        # wire: (due, order, datagram), one timer for the earliest
        self._wire: list[tuple[float, int, _Datagram]] = []
        self._wire_bytes = 0
        self._wire_timer = None
        self._order = 0
        self._last_due = -math.inf  # due time of the last FIFO (not reordered) datagram

    # -- settings ---------------------------------------------------------------------

    @property
    def delay(self) -> float:
        return self._settings["delay"]

    @property
    def jitter(self) -> float:
        return self._settings["jitter"]

    @property
    def loss(self) -> float:
        return self._settings["loss"]

    @property
    def duplicate(self) -> float:
        return self._settings["duplicate"]

    @property
    def reorder(self) -> float:
        return self._settings["reorder"]

    @property
    def rate(self) -> float:
        return self._settings["rate"]

    @property
    def queue_limit(self) -> int:
        return int(self._settings["queue_limit"])

    def settings(self) -> dict[str, float]:
        return dict(self._settings)

    def initial_settings(self) -> dict[str, float]:
        """The settings the link was built with (what :meth:`reset` restores)."""
        return dict(self._initial[0])

    def configure(self, **settings) -> None:
        """Change settings (names of :data:`RANGES`); all are checked before any applies."""
        checked = {name: check_setting(name, value) for name, value in settings.items()}
        old_rate = self._settings.get("rate")
        self._settings.update(checked)
        if old_rate and checked.get("rate") == 0:
            self._release_queue()
        if "queue_limit" in checked:
            self._trim_queue()

    def set_state(self, up: bool) -> None:
        """UP or DOWN; DOWN empties the queue and the wire (counted ``down``)."""
        self.up = bool(up)
        if self.up:
            return
        now = self._clock.seconds()
        self._dropped["down"] += len(self._queue) + len(self._wire)
        self._queue.clear()
        self._queue_bytes = 0
        self._wire.clear()
        self._wire_bytes = 0
        for timer in (self._tx_timer, self._wire_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._tx_timer = self._wire_timer = None
        self._tx_end = now
        self._last_due = now

    def reset(self) -> None:
        """Back to the settings and state the link was built with, and its random
        generator back to its seed (so the same traffic meets the same fates again).
        Counters are kept (:meth:`clear_counters`)."""
        settings, up = self._initial
        self.configure(**settings)
        self.set_state(up)
        self._random.seed(self.seed)

    # -- counters ---------------------------------------------------------------------

    def stats(self) -> LinkStats:
        return LinkStats(queue_packets=len(self._queue), queue_bytes=self._queue_bytes,
                         **self._counts, **self._dropped)

    @property
    def dropped(self) -> dict[str, int]:
        """Dropped datagrams by cause (:data:`DROP_CAUSES`)."""
        return dict(self._dropped)

    @property
    def queue_packets(self) -> int:
        return len(self._queue)

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    @property
    def wire_packets(self) -> int:
        return len(self._wire)

    def clear_counters(self) -> None:
        self._counts = dict.fromkeys(self._counts, 0)
        self._dropped = dict.fromkeys(DROP_CAUSES, 0)

    # -- the datagram's way -----------------------------------------------------------

    def send(self, datagram: bytes) -> None:
        """One datagram into the link."""
        self._counts["packets_in"] += 1
        draw = self._random.random
        lost, duplicate, reorder, u = draw(), draw(), draw(), draw()
        if not self.up:
            self._dropped["down"] += 1
            return
        if lost < self.loss:
            self._dropped["loss"] += 1
            return
        item = _Datagram(bytes(datagram), 2 if duplicate < self.duplicate else 1,
                         reorder < self.reorder, u)
        if not self.rate:
            self._launch(item, self._clock.seconds())
            return
        size = len(item.data)
        if self._queue_bytes + size > self.queue_limit:
            self._dropped["queue_full"] += 1
            return
        self._queue.append(item)
        self._queue_bytes += size
        if self._tx_timer is None:
            self._transmit(max(self._clock.seconds(), self._tx_end))

    def _transmit(self, start: float) -> None:
        """Start sending the queue's head at ``start`` (back to back: the last end)."""
        self._tx_end = start + len(self._queue[0].data) / self.rate
        self._tx_timer = self._clock.callLater(max(0.0, self._tx_end - self._clock.seconds()),
                                               self._transmitted)

    def _transmitted(self) -> None:
        self._tx_timer = None
        item = self._queue.popleft()
        self._queue_bytes -= len(item.data)
        self._launch(item, self._tx_end)
        if self._queue:
            self._transmit(self._tx_end)

    def _release_queue(self) -> None:
        """Rate now unlimited: everything queued leaves now, in order."""
        if self._tx_timer is not None and self._tx_timer.active():
            self._tx_timer.cancel()
        self._tx_timer = None
        now = self._clock.seconds()
        self._tx_end = now
        while self._queue:
            item = self._queue.popleft()
            self._queue_bytes -= len(item.data)
            self._launch(item, now)

    def _trim_queue(self) -> None:
        while self._queue_bytes > self.queue_limit:
            item = self._queue.pop()
            self._queue_bytes -= len(item.data)
            self._dropped["queue_full"] += 1
        if not self._queue and self._tx_timer is not None:
            # the datagram in transmission went too
            if self._tx_timer.active():
                self._tx_timer.cancel()
            self._tx_timer = None
            self._tx_end = self._clock.seconds()

    def _launch(self, item: _Datagram, t: float) -> None:
        """``item`` left the serialiser at ``t``: onto the wire."""
        size = len(item.data)
        if self._wire_bytes + size > self.wire_limit:
            self._dropped["wire_full"] += 1
            return
        due = t + self.delay + self.jitter * item.u
        if item.reorder:
            due += self.reorder_hold
            self._counts["reordered"] += 1
        else:
            due = max(due, self._last_due)
            self._last_due = due
        heapq.heappush(self._wire, (due, self._order, item))
        self._order += 1
        self._wire_bytes += size
        self._arm()

    def _arm(self) -> None:
        """Keep one timer, for the earliest datagram on the wire."""
        timer = self._wire_timer
        if not self._wire:
            return
        due = self._wire[0][0]
        if timer is not None and timer.active():
            if timer.getTime() <= due:
                return
            timer.cancel()
        self._wire_timer = self._clock.callLater(max(0.0, due - self._clock.seconds()),
                                                 self._arrive)

    def _arrive(self) -> None:
        self._wire_timer = None
        limit = self._clock.seconds() + _EPSILON
        due = []
        while self._wire and self._wire[0][0] <= limit:
            item = heapq.heappop(self._wire)[2]
            self._wire_bytes -= len(item.data)
            due.append(item)
        self._arm()
        for item in due:
            self._counts["packets_out"] += item.copies
            if item.copies > 1:
                self._counts["duplicated"] += 1
            for _ in range(item.copies):
                try:
                    self._deliver(item.data)
                except Exception:
                    _log.failure("delivering a datagram of {n} bytes failed", n=len(item.data))


# -- the relay --------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    """One relayed link, in plain values (what a config file gives).

    ``a_port``: the UDP port the A side sends to (on ``interface``); ``b_address``:
    (host, port) where its datagrams go; ``b_port``: the port they leave from (0: any;
    the B side answers to it); ``a_address``: (host, port) where datagrams from B go --
    None: to whoever last sent on the A socket. ``seed``: None is the link's number.
    ``settings``: initial impairments (names of :data:`RANGES`), both directions.
    """

    a_port: int
    b_address: tuple[str, int]
    a_address: tuple[str, int] | None = None
    b_port: int = 0
    interface: str = ""
    seed: int | None = None
    settings: Mapping[str, float] = field(default_factory=dict)


class _RelaySocket(DatagramProtocol):
    """One socket of a link: datagrams to ``receive(data, addr)``; nothing else."""

    def __init__(self, receive, errors: dict, receive_buffer: int, send_buffer: int):
        self.receive = receive
        self.errors = errors
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer

    def startProtocol(self):
        size_buffers(self.transport, self.receive_buffer, self.send_buffer)

    def datagramReceived(self, data, addr):
        self.receive(data, addr)

    def connectionRefused(self):
        # ICMP port unreachable for an earlier datagram: the far device is down;
        # a WAN does not tell the sender either, so it is only counted.
        self.errors["refused"] += 1


class RelayLink:
    """Link ``number`` of a :class:`WanEmulator`: ``ab`` (A to B) and ``ba`` (B to A).

    Each direction's seed is derived from the link's: ``2 * seed`` for A to B,
    ``2 * seed + 1`` for B to A. ``a_socket`` and ``b_socket`` are the two sockets'
    protocols (for ``listenUDP``, or ``makeConnection`` with anything that has
    ``write(data, addr)``); they hand what arrives to :meth:`from_a` and :meth:`from_b`.
    ``errors`` counts what the relay itself could not send: ``no_peer`` (a datagram
    from B before any A sender is known), ``not_attached``, ``send_error`` (the
    kernel refused it), ``refused`` (ICMP port unreachable).
    """

    def __init__(self, clock, spec: LinkSpec, number: int = 1, *,
                 receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
                 send_buffer: int = DEFAULT_SEND_BUFFER, **link_options):
        self.number = number
        self.spec = spec
        self.b_address = (spec.b_address[0], int(spec.b_address[1]))
        self.a_peer = None if spec.a_address is None else (spec.a_address[0],
                                                          int(spec.a_address[1]))
        seed = number if spec.seed is None else spec.seed
        settings = {**DEFAULTS, **spec.settings}
        self.ab = EmulatedLink(clock, self._to_b, seed=2 * seed, **settings, **link_options)
        self.ba = EmulatedLink(clock, self._to_a, seed=2 * seed + 1, **settings, **link_options)
        self.errors = dict.fromkeys(("no_peer", "not_attached", "send_error", "refused"), 0)
        self.a_socket = _RelaySocket(self.from_a, self.errors, receive_buffer, send_buffer)
        self.b_socket = _RelaySocket(self.from_b, self.errors, receive_buffer, send_buffer)

    def from_a(self, data: bytes, sender) -> None:
        if self.spec.a_address is None:
            self.a_peer = (sender[0], sender[1])
        self.ab.send(data)

    def from_b(self, data: bytes, sender) -> None:
        self.ba.send(data)

    def _to_b(self, data: bytes) -> None:
        self._write(self.b_socket.transport, data, self.b_address)

    def _to_a(self, data: bytes) -> None:
        if self.a_peer is None:
            self.errors["no_peer"] += 1
            return
        self._write(self.a_socket.transport, data, self.a_peer)

    def _write(self, transport, data: bytes, address) -> None:
        if transport is None:
            self.errors["not_attached"] += 1
            return
        try:
            transport.write(data, address)
        except OSError as exc:
            self.errors["send_error"] += 1
            _log.warn("link {n}: datagram of {size} bytes to {peer} not sent: {why}",
                      n=self.number, size=len(data), peer=f"{address[0]}:{address[1]}", why=exc)

    # -- both directions at once ------------------------------------------------------

    def configure(self, **settings) -> None:
        """The same settings in both directions (checked first: all or nothing)."""
        for name, value in settings.items():
            check_setting(name, value)
        self.ab.configure(**settings)
        self.ba.configure(**settings)

    def setting(self, name: str) -> float:
        """A setting's value (A to B; both directions agree unless set one by one)."""
        if name not in RANGES:
            raise ValueError(f"unknown link setting {name!r}; known: {', '.join(RANGES)}")
        return self.ab.settings()[name]

    def initial_settings(self) -> dict[str, float]:
        return self.ab.initial_settings()

    @property
    def up(self) -> bool:
        return self.ab.up and self.ba.up

    def set_state(self, up: bool) -> None:
        self.ab.set_state(up)
        self.ba.set_state(up)

    def reset(self) -> None:
        self.ab.reset()
        self.ba.reset()

    def stats(self, direction: str = "both") -> LinkStats:
        """Counters of ``"ab"``, ``"ba"`` or ``"both"`` (summed)."""
        if direction == "ab":
            return self.ab.stats()
        if direction == "ba":
            return self.ba.stats()
        if direction == "both":
            return self.ab.stats() + self.ba.stats()
        raise ValueError(f"direction {direction!r} is not one of ab, ba, both")


class WanEmulator:
    """Several :class:`RelayLink`\\ s, numbered 1..n in the order of ``links``.

    ``link_options`` go to every :class:`EmulatedLink` (``reorder_hold``, ``wire_limit``).
    """

    def __init__(self, clock, links: Iterable[LinkSpec], *, receive_buffer: int =
                 DEFAULT_RECEIVE_BUFFER, send_buffer: int = DEFAULT_SEND_BUFFER, **link_options):
        self.links = [RelayLink(clock, spec, n, receive_buffer=receive_buffer,
                                send_buffer=send_buffer, **link_options)
                      for n, spec in enumerate(links, start=1)]

    def link(self, number: int) -> RelayLink:
        """Link ``number`` (1..n); ``IndexError`` naming the range."""
        if not 1 <= number <= len(self.links):
            raise IndexError(f"link {number} does not exist; links are 1..{len(self.links)}")
        return self.links[number - 1]

    def reset(self) -> None:
        for link in self.links:
            link.reset()

    def listen(self, reactor) -> list:
        """Open both sockets of every link; returns the listening ports (A, B, A, B...)."""
        ports = []
        size = MAX_UDP_PAYLOAD + 1          # listenUDP's default 8192 would truncate
        for link in self.links:
            for port, proto in ((link.spec.a_port, link.a_socket),
                                (link.spec.b_port, link.b_socket)):
                ports.append(reactor.listenUDP(port, proto, interface=link.spec.interface,
                                               maxPacketSize=size))
        return ports
