"""The source edge's sender: windows, retransmission, NAKs and bandwidth limits.

DESIGN.md 3.3, "Reliability" (retain until WROK, retransmit on timeout and at once on
NAK, a window per path, a bandwidth limit per customer); the patent's 【0084】.

Every WR/CTRL entry handed to :meth:`Sender.submit` is sent toward its next
hop and stays *outstanding* until :meth:`Sender.acknowledged` (its WROK or
CTRL_OK). The entry itself stays in the log storage area; the sender keeps
its datagrams (the segments) for retransmission.

* **Window** -- per path (next hop), at most ``window_bytes`` of outstanding
  datagrams; more entries wait in that path's FIFO queue. A single entry larger
  than the window is sent when nothing else is outstanding.
* **Retransmission timeout** -- from the measured round trip, per path, as
  RFC 6298 does it (:class:`RttEstimator`): SRTT and RTTVAR from the time
  between an entry's send and its acknowledgement, RTO = SRTT + max(``tick``,
  4 RTTVAR), at least ``rto`` (also the first RTO, before any sample) and at
  most ``rto_max``. Karn's rule: an entry sent more than once gives no sample.
  The target applies a group in order and its acknowledgements are
  cumulative, so the round trip includes the queue at the target: entries
  behind a deep queue are late, not lost.
* **Retransmission** -- an entry unacknowledged for its path's RTO (doubled,
  ``backoff``, for each timeout it already had, up to ``rto_max``) since its
  timer started is *due*. What then happens depends on its group:

  - the group's acknowledgements advanced within the last RTO: the target is
    working through a queue, so the entry is only queued -- its timer
    restarts, nothing is sent (``timer_restarts``). A lost entry stops the
    group's progress (it is applied in order), so it is never hidden this way;
  - no progress for an RTO: the path or the target is silent (a stall, or a
    loss with nothing after it for the target to NAK) -- the group's lowest
    due entry is sent again alone (a probe, flag RETRANSMIT; again after an
    RTO while unanswered) and the other due entries back off;
  - the target answered the probe but went no further for an RTO: it is alive
    and what it lacks is lost -- every due entry of the group is sent again
    (go-back-N).

  So a stall costs one probe per RTO, not a window of duplicates.

  A sweep every ``tick`` seconds checks the oldest timers first (outstanding
  entries are kept in order of their timer's start), so the cost is per
  timeout, not per entry per tick.
* **NAK** -- the quick repair of real losses: the target edge names missing
  sequences (a gap in its reorder buffer); those outstanding are sent again at
  once (at most once per ``nak_holdoff`` seconds each, so a repeated NAK does
  not multiply traffic).
* **Bounded work per input** -- each group keeps a sorted index of the
  sequences it holds, so a cumulative acknowledgement
  (:meth:`Sender.acknowledge_through`) costs the entries it releases and a NAK
  the entries it finds (at most ``limit`` looked at), never the distance
  between the sequences a datagram names. :meth:`Sender.highest` is the
  highest sequence handed over per group: the edge refuses answers and NAKs
  beyond it.
* **Batching** -- with ``batch_bytes``, first sends are staged until the end of
  the reactor turn and go out as BATCH datagrams of up to that size: the
  entries one group commit made durable leave in one system call. A single
  datagram goes as it is; retransmissions always go alone.
* **Giving up** -- with ``failure_timeout``, an entry still unacknowledged that
  long after its first send, while its group's acknowledgements have not advanced
  for that long either (a deep queue at the target is not a failure), makes the
  sender call ``on_failure(group, why)``
  once for its group (the edge then puts the group's pairs in failure Suspend,
  【0084】); the group's entries go on being retransmitted until the edge
  cancels them or :meth:`Sender.recovered` re-arms the check.
* **Bandwidth** -- a token bucket per customer (``rate`` bytes/s, ``burst``
  bytes) meters first sends and retransmissions alike; a path whose customer
  has no tokens waits for the bucket's refill time.

Everything runs on the injected ``clock`` (``seconds()``, ``callLater``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from datapath.frames.logentry import HEADER_SIZE, EntryFlag, LOG_HEADER, build_batch, entry_crc
from rcn.logxfer.routes import Address

_FLAGS_AT = LOG_HEADER.offsets["flags"]
_CRC_AT = LOG_HEADER.offsets["crc32c"]
_RETRANSMIT = int(EntryFlag.RETRANSMIT)
BATCH_OVERHEAD = HEADER_SIZE + 8          # a BATCH's header and count prefix


def mark_retransmit(datagram: bytes) -> bytes:
    """The same datagram with the RETRANSMIT flag set and its CRC32C recomputed."""
    flags = int.from_bytes(datagram[_FLAGS_AT:_FLAGS_AT + 2], "big")
    if flags & _RETRANSMIT:
        return datagram
    header = bytearray(datagram[:HEADER_SIZE])
    header[_FLAGS_AT:_FLAGS_AT + 2] = (flags | _RETRANSMIT).to_bytes(2, "big")
    body = datagram[HEADER_SIZE:]
    header[_CRC_AT:_CRC_AT + 4] = entry_crc(bytes(header), body).to_bytes(4, "big")
    return bytes(header) + body


class TokenBucket:
    """``rate`` bytes/s with up to ``burst`` bytes saved; ``rate`` 0 means unlimited."""

    def __init__(self, clock, rate: float, burst: float | None = None):
        if rate < 0:
            raise ValueError(f"token bucket rate {rate} < 0")
        self.clock = clock
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 10, 256 << 10))
        self.tokens = self.burst
        self.stamp = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, size: int) -> float:
        """0.0 and the tokens taken if ``size`` bytes may go now; else seconds to wait.

        A datagram bigger than the burst goes when the bucket is full (tokens go
        negative), so nothing is too big to ever pass.
        """
        if not self.rate:
            return 0.0
        self._refill()
        if self.tokens >= min(size, self.burst):
            self.tokens -= size
            return 0.0
        return (min(size, self.burst) - self.tokens) / self.rate


@dataclass(eq=False, slots=True)
class Outstanding:
    group: int
    sequence: int
    datagrams: list[bytes] = field(repr=False)
    path: Address
    customer: str
    size: int
    last_sent: float = 0.0
    attempts: int = 0
    timer: float = 0.0                 # when its retransmission timer (re)started
    timeouts: int = 0                  # timeouts it had: its RTO is doubled this often
    last_nak: float = float("-inf")
    first_sent: float | None = None


class RttEstimator:
    """RFC 6298 section 2 for one path: ``sample(r)`` updates SRTT and RTTVAR; ``rto`` is
    SRTT + max(``granularity``, 4 RTTVAR) within [``floor``, ``ceiling``], and ``floor``
    before the first sample."""

    ALPHA = 1 / 8
    BETA = 1 / 4

    __slots__ = ("floor", "ceiling", "granularity", "srtt", "rttvar", "rto", "samples")

    def __init__(self, floor: float, ceiling: float, granularity: float):
        self.floor = floor
        self.ceiling = ceiling
        self.granularity = granularity
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = floor
        self.samples = 0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += self.BETA * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += self.ALPHA * (rtt - self.srtt)
        self.samples += 1
        self.rto = min(self.ceiling, max(self.floor, self.srtt + max(self.granularity,
                                                                     4 * self.rttvar)))


@dataclass
class _Path:
    rtt: RttEstimator
    queue: deque = field(default_factory=deque)
    in_flight_bytes: int = 0
    in_flight: int = 0
    queued_bytes: int = 0


@dataclass(slots=True)
class _Progress:
    """When a group's acknowledgements last advanced, and its unanswered timeout probe."""
    acked: float = float("-inf")
    probe: float | None = None


class Sender:
    """See the module doc. ``transmit(datagram, address)`` puts one datagram on the wire."""

    def __init__(self, clock, transmit: Callable[[bytes, Address], object], *,
                 window_bytes: int = 64 << 20, rto: float = 0.5, rto_max: float = 5.0,
                 backoff: float = 2.0, tick: float = 0.05, nak_holdoff: float = 0.05,
                 buckets: dict[str, TokenBucket] | None = None, batch_bytes: int = 0,
                 failure_timeout: float | None = None,
                 on_failure: Callable[[int, str], object] | None = None):
        if window_bytes <= 0 or rto <= 0 or rto_max < rto or backoff < 1 or tick <= 0:
            raise ValueError("sender: window_bytes, rto and tick must be > 0, rto_max >= rto, "
                             "backoff >= 1")
        self.clock = clock
        self.transmit = transmit
        self.window_bytes = window_bytes
        self.rto = rto
        self.rto_max = rto_max
        self.backoff = backoff
        self.tick = tick
        self.nak_holdoff = nak_holdoff
        self.buckets = buckets or {}
        self.batch_bytes = batch_bytes
        self.failure_timeout = failure_timeout
        self.on_failure = on_failure
        #: called with an entry before each of its sends (first or again): it may replace
        #: ``item.datagrams`` (the source edge re-seals under a rotated group key there)
        self.prepare: Callable[[Outstanding], object] | None = None
        self.failed_groups: set[int] = set()
        self._staged: dict[Address, list[Outstanding]] = {}
        self._flush_call = None
        self._batches = 0
        self.paths: dict[Address, _Path] = {}
        # (group, sequence) -> Outstanding, in order of last send (oldest first)
        self.outstanding: OrderedDict[tuple[int, int], Outstanding] = OrderedDict()
        self.queued: dict[tuple[int, int], Outstanding] = {}
        self._progress: dict[int, _Progress] = {}
        # group -> ascending sequences submitted; acknowledged ones leave it lazily
        # (compacted when they outnumber the held ones), so removal is O(1)
        self._index: dict[int, list[int]] = {}
        self._held: dict[int, int] = {}              # group -> entries outstanding or queued
        self._highest: dict[int, int] = {}           # group -> highest sequence submitted
        self._pump_timers: dict[Address, object] = {}
        self._sweep_call = None
        self.counters = {"entries_sent": 0, "datagrams_sent": 0, "bytes_sent": 0,
                         "retransmits": 0, "nak_retransmits": 0, "acknowledged": 0,
                         "unknown_acks": 0, "throttled": 0, "batches_sent": 0, "cancelled": 0,
                         "gave_up": 0, "timeout_retransmits": 0, "timer_restarts": 0,
                         "rtt_samples": 0}

    # -- entries in -------------------------------------------------------
    def submit(self, group: int, sequence: int, datagrams: list[bytes], path: Address,
               customer: str = "") -> None:
        key = (group, sequence)
        if key in self.outstanding or key in self.queued:
            raise ValueError(f"sender: group {group} sequence {sequence} submitted twice")
        item = Outstanding(group, sequence, datagrams, path, customer,
                           sum(len(d) for d in datagrams))
        index = self._index.setdefault(group, [])
        if not index or sequence > index[-1]:
            index.append(sequence)          # the usual case: sequences come in order
        else:
            at = bisect_left(index, sequence)
            if at == len(index) or index[at] != sequence:
                index.insert(at, sequence)
        self._held[group] = self._held.get(group, 0) + 1
        if sequence > self._highest.get(group, 0):
            self._highest[group] = sequence
        state = self.paths.get(path)
        if state is None:
            state = self.paths[path] = _Path(RttEstimator(self.rto, self.rto_max, self.tick))
        state.queue.append(item)
        state.queued_bytes += item.size
        self.queued[key] = item
        self._pump(path)

    def highest(self, group: int) -> int:
        """The highest sequence of the group ever submitted here (0: none): no answer or
        NAK for a sequence beyond it can be genuine."""
        return self._highest.get(group, 0)

    def _remove(self, group: int, sequence: int, pump: bool = True) -> Outstanding | None:
        """Take an entry out (outstanding or queued); None if it is not held. The group's
        index keeps the sequence until it is compacted."""
        key = (group, sequence)
        item = self.outstanding.pop(key, None)
        if item is not None:
            state = self.paths[item.path]
            state.in_flight_bytes -= item.size
            state.in_flight -= 1
            if pump:
                self._pump(item.path)
        else:
            item = self.queued.pop(key, None)
            if item is None:
                return None
            state = self.paths[item.path]
            state.queue.remove(item)
            state.queued_bytes -= item.size
        self._held[group] -= 1
        return item

    def _compact(self, group: int) -> None:
        index = self._index.get(group)
        held = self._held.get(group, 0)
        if not held:
            self._index.pop(group, None)
        elif len(index) > 2 * held + 64:
            index[:] = [seq for seq in index if (group, seq) in self.outstanding
                        or (group, seq) in self.queued]

    def acknowledged(self, group: int, sequence: int) -> Outstanding | None:
        """The entry's WROK/CTRL_OK arrived: stop sending it; None if it was not outstanding."""
        item = self._remove(group, sequence)
        if item is None:
            self.counters["unknown_acks"] += 1
            return None
        self.counters["acknowledged"] += 1
        self._advanced(item)
        self._compact(group)
        return item

    def _advanced(self, newest: Outstanding) -> None:
        """An acknowledgement took entries out: the group progresses; the newest entry it
        took gives a round-trip sample if it was sent once only (Karn)."""
        now = self.clock.seconds()
        progress = self._progress.get(newest.group)
        if progress is None:
            progress = self._progress[newest.group] = _Progress()
        progress.acked = now
        if newest.attempts == 1 and newest.first_sent is not None:
            self.paths[newest.path].rtt.sample(now - newest.first_sent)
            self.counters["rtt_samples"] += 1

    def acknowledge_through(self, group: int, sequence: int,
                            keep: Callable[[int], bool] | None = None) -> list[Outstanding]:
        """A cumulative acknowledgement: every entry of the group up to ``sequence`` but
        those ``keep(sequence)`` names; returns the entries taken out, in order. The work is
        the entries the group's index holds up to ``sequence``, whatever ``sequence`` is."""
        index = self._index.get(group)
        if not index:
            return []
        upto = bisect_right(index, sequence)
        kept, done, paths = [], [], set()
        for seq in index[:upto]:
            if (group, seq) not in self.outstanding and (group, seq) not in self.queued:
                continue                                   # acknowledged one by one before
            if keep is not None and keep(seq):
                kept.append(seq)
                continue
            item = self._remove(group, seq, pump=False)
            paths.add(item.path)
            done.append(item)
        index[:upto] = kept
        self.counters["acknowledged"] += len(done)
        if done:
            self._advanced(done[-1])
        for path in paths:
            self._pump(path)
        self._compact(group)
        return done

    def cancel(self, group: int, sequence: int) -> bool:
        """Stop sending an entry without an acknowledgement (failure Suspend dropped it)."""
        if self._remove(group, sequence) is None:
            return False
        self.counters["cancelled"] += 1
        self._compact(group)
        return True

    def entries_of(self, group: int) -> list[int]:
        """Sequences of the group still outstanding or queued, in order."""
        return [seq for seq in self._index.get(group, ())
                if (group, seq) in self.outstanding or (group, seq) in self.queued]

    def recovered(self, group: int) -> None:
        """The group is in service again: a later timeout may give it up again."""
        self.failed_groups.discard(group)

    def holds(self, group: int, sequence: int) -> bool:
        """Whether the entry is outstanding or queued."""
        key = (group, sequence)
        return key in self.outstanding or key in self.queued

    def nak(self, group: int, ranges: list[tuple[int, int]], limit: int = 4096) -> int:
        """Send the named outstanding entries again now; returns how many were sent.

        Each range is found in the group's index (a bisection), and at most ``limit``
        held sequences are looked at in all: a NAK of many huge or overlapping ranges
        costs what the sender holds, not what the ranges span."""
        index = self._index.get(group)
        if not index:
            return 0
        now = self.clock.seconds()
        sent = 0
        for first, last in ranges:
            at = bisect_left(index, first)
            while at < len(index) and index[at] <= last:
                item = self.outstanding.get((group, index[at]))
                at += 1
                limit -= 1
                if item is not None and now - item.last_nak >= self.nak_holdoff:
                    item.last_nak = now
                    if self._send(item, now, retransmit=True):
                        self.counters["nak_retransmits"] += 1
                        sent += 1
                if limit <= 0:
                    return sent
        return sent

    # -- sending ----------------------------------------------------------
    def _pump(self, path: Address) -> None:
        state = self.paths[path]
        if path in self._pump_timers:
            return
        now = self.clock.seconds()
        while state.queue:
            item = state.queue[0]
            if state.in_flight and state.in_flight_bytes + item.size > self.window_bytes:
                return
            wait = self._throttle(item)
            if wait:
                self._pump_timers[path] = self.clock.callLater(wait, self._resume, path)
                return
            state.queue.popleft()
            state.queued_bytes -= item.size
            del self.queued[(item.group, item.sequence)]
            state.in_flight_bytes += item.size
            state.in_flight += 1
            self.outstanding[(item.group, item.sequence)] = item
            self.counters["entries_sent"] += 1
            if self.batch_bytes:
                self._stage(path, item, now)
            else:
                self._send(item, now, retransmit=False, metered=True)
        self._arm_sweep()

    # -- first sends, batched ---------------------------------------------------------
    def _stage(self, path: Address, item: Outstanding, now: float) -> None:
        """Entries made durable together are sent together: at the end of this reactor turn,
        as BATCH datagrams of up to ``batch_bytes`` (one system call for many entries)."""
        if self.prepare is not None:
            self.prepare(item)
        item.attempts += 1
        item.last_sent = item.timer = now
        if item.first_sent is None:
            item.first_sent = now
        self._staged.setdefault(path, []).append(item)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        staged, self._staged = self._staged, {}
        for path, items in staged.items():
            pending: list[bytes] = []
            size = BATCH_OVERHEAD
            for item in items:
                if (item.group, item.sequence) not in self.outstanding:
                    continue                      # acknowledged or cancelled meanwhile
                for datagram in item.datagrams:
                    padded = len(datagram) + (-len(datagram) % 8)
                    if pending and size + padded > self.batch_bytes:
                        self._emit(pending, path)
                        pending, size = [], BATCH_OVERHEAD
                    pending.append(datagram)
                    size += padded
            if pending:
                self._emit(pending, path)

    def _emit(self, datagrams: list[bytes], path: Address) -> None:
        if len(datagrams) == 1:
            data = datagrams[0]
        else:
            self._batches += 1
            data = build_batch(datagrams, ttl=1, sequence=self._batches)
            self.counters["batches_sent"] += 1
        self.transmit(data, path)
        self.counters["datagrams_sent"] += 1
        self.counters["bytes_sent"] += len(data)

    def _resume(self, path: Address) -> None:
        del self._pump_timers[path]
        self._pump(path)

    def _throttle(self, item: Outstanding) -> float:
        bucket = self.buckets.get(item.customer)
        if bucket is None:
            return 0.0
        wait = bucket.take(item.size)
        if wait:
            self.counters["throttled"] += 1
        return wait

    def _send(self, item: Outstanding, now: float, retransmit: bool, metered: bool = False) -> bool:
        if retransmit:
            if not metered and self._throttle(item):
                return False       # over the customer's rate: the next sweep tries again
        if self.prepare is not None:
            self.prepare(item)
        if retransmit:
            item.datagrams = [mark_retransmit(d) for d in item.datagrams]
            self.counters["retransmits"] += 1
        for datagram in item.datagrams:
            self.transmit(datagram, item.path)
            self.counters["datagrams_sent"] += 1
            self.counters["bytes_sent"] += len(datagram)
        item.attempts += 1
        item.last_sent = item.timer = now
        if item.first_sent is None:
            item.first_sent = now
        self.outstanding.move_to_end((item.group, item.sequence))
        return True

    # -- the retransmission sweep ----------------------------------------
    def _arm_sweep(self) -> None:
        if self._sweep_call is None and self.outstanding:
            self._sweep_call = self.clock.callLater(self.tick, self._sweep)

    def _timeout(self, item: Outstanding) -> float:
        rto = self.paths[item.path].rtt.rto
        if not item.timeouts:
            return rto
        return min(rto * self.backoff ** min(item.timeouts, 64), self.rto_max)

    def _sweep(self) -> None:
        self._sweep_call = None
        now = self.clock.seconds()
        due: dict[int, list[Outstanding]] = {}
        for item in self.outstanding.values():
            age = now - item.timer
            if age < self.rto:
                break       # timers are in order and no RTO is below rto: none left
            if age >= self._timeout(item):
                due.setdefault(item.group, []).append(item)
        give_up: dict[int, Outstanding] = {}
        for group, items in due.items():
            progress = self._progress.setdefault(group, _Progress())
            rto = self.paths[items[0].path].rtt.rto
            if now - progress.acked < rto:
                resend, backoff = (), False        # queued at the target, not lost
            elif progress.probe is not None and progress.acked > progress.probe:
                resend, backoff = items, True      # alive, answered, no further: go back N
                progress.probe = None
            elif progress.probe is None or now - progress.probe >= rto:
                # silent: one probe (the lowest due), the rest back off
                resend, backoff = (min(items, key=lambda item: item.sequence),), True
                progress.probe = now
            else:
                resend, backoff = (), True         # silent, a probe is on its way
            for item in resend:
                if self._send(item, now, retransmit=True):
                    self.counters["timeout_retransmits"] += 1
            for item in items:
                if backoff:
                    item.timeouts += 1
                if item.timer != now:              # not sent just now: restart its timer
                    item.timer = now
                    self.outstanding.move_to_end((item.group, item.sequence))
                    self.counters["timer_restarts"] += 1
                # a deep queue at the target is not a failure: time from the later of the
                # entry's first send and the group's last progress
                if (self.failure_timeout is not None and group not in self.failed_groups
                        and now - max(item.first_sent, progress.acked) >= self.failure_timeout):
                    give_up.setdefault(group, item)
        for group, item in give_up.items():
            self.failed_groups.add(group)
            self.counters["gave_up"] += 1
            if self.on_failure is not None:
                self.on_failure(group, f"sequence {item.sequence} unacknowledged for "
                                       f"{now - item.first_sent:.1f} s after {item.attempts} "
                                       f"sends to {item.path}, the group without progress "
                                       f"for {now - max(item.first_sent, progress.acked):.1f} s")
        self._arm_sweep()

    def stop(self) -> None:
        for call in [self._sweep_call, self._flush_call, *self._pump_timers.values()]:
            if call is not None and call.active():
                call.cancel()
        self._sweep_call = self._flush_call = None
        self._pump_timers.clear()

    # -- what metrics show ---------------------------------------------------
    def path_stats(self) -> dict[str, dict]:
        return {str(path): {"in_flight": s.in_flight, "in_flight_bytes": s.in_flight_bytes,
                            "queued": len(s.queue), "queued_bytes": s.queued_bytes,
                            "srtt_s": s.rtt.srtt, "rttvar_s": s.rtt.rttvar, "rto_s": s.rtt.rto}
                for path, s in self.paths.items()}
