"""Exchanges of one FCIP link: IDs, sequences, timeouts and aborts (FC-FS-3, FC-LS-3 BLS).

An :class:`ExchangeTable` holds the open exchanges of one link, both kinds:

* exchanges we **originate** (our FCP commands, ELS and CT requests): keyed by
  our OX_ID. OX_IDs are handed out round-robin over 0x0000..0xFFFE (0xFFFF
  means "unassigned" and is skipped), never one that is still open;
* exchanges we **respond** to (FCP commands that arrive): keyed by the
  originator's ``(S_ID, OX_ID)``; we assign the RX_ID from a second
  round-robin space, again never one still open.

A frame belongs to one or the other by its F_CTL exchange-context bit: 0 when
the exchange's originator sent it, 1 when the responder did (see
:meth:`ExchangeTable.lookup`).

Limits: at most ``max_exchanges`` (default 4096) originated and as many
responded exchanges. :meth:`ExchangeTable.originate` then raises
:class:`~rcn.rio.errors.ExchangeLimitReached` at once (nothing is queued or
sent: fail fast, the caller retries); :meth:`ExchangeTable.respond` raises it
too, and the FCP target answers such a command with TASK SET FULL.

Timeouts: each exchange has a deadline (``timeout``, default 30 s, from its
creation). One timer per table (``tick``, default 1 s, only while exchanges
are open) sweeps them, so a timeout fires between ``timeout`` and ``timeout +
tick`` after the start; no timer is created or cancelled per exchange. An
originated exchange that times out ends with
:class:`~rcn.rio.errors.ExchangeTimeout` and an ABTS is sent; its OX_ID stays
reserved until the BA_ACC/BA_RJT arrives or ``abort_timeout`` (default 10 s)
passes. A responded exchange that times out is dropped (the originator
aborts it on its side).

Aborts (BLS): an incoming ABTS for an open exchange is answered with BA_ACC
and the exchange ends with :class:`~rcn.rio.errors.ExchangeAborted` (a target
drops the command, an initiator's Deferred fails); ABTS for an exchange we do
not know gets BA_RJT (logical error, invalid OX_ID-RX_ID combination).

Sequences: :meth:`Exchange.send` sends a one-frame sequence (SOFi3, EOFt,
End_Sequence), :meth:`Exchange.send_data` a sequence of data frames of up to
``max_frame`` bytes with relative offsets (SOFi3 then SOFn3, EOFn then EOFt on
the last frame, SEQ_CNT counting from 0, End_Sequence and the caller's
sequence-initiative bit on the last frame). Each sequence takes the next
SEQ_ID of its sender; the exchange-context bit is set on everything the
responder sends. F_CTL values of a write exchange, as tshark accepts them:
FCP_CMND 0x290000 (0x280000 when write data follows without XFER_RDY),
XFER_RDY 0x890000, FCP_DATA 0x000008, the last one 0x090008, FCP_RSP 0x980000.

Handlers: each exchange has a handler object with two methods,
``frame_received(exchange, frame)`` (a frame of this exchange arrived) and
``exchange_ended(exchange, error)`` (the exchange ended other than by the
handler's own ``close``: timeout, abort, LOGO or link down).
"""

from __future__ import annotations

from twisted.logger import Logger

from datapath.frames import els
from datapath.frames.fc import Eof, FCtl, FcType, RCtl, Sof
from datapath.frames.names import format_port_id
from rcn.rio.errors import ExchangeAborted, ExchangeLimitReached, ExchangeTimeout, LinkDown

# F_CTL bits and codes as plain ints: the hot path compares and ors them per frame
EXCHANGE_CONTEXT = int(FCtl.EXCHANGE_CONTEXT)
FIRST_SEQUENCE = int(FCtl.FIRST_SEQUENCE)
LAST_SEQUENCE = int(FCtl.LAST_SEQUENCE)
END_SEQUENCE = int(FCtl.END_SEQUENCE)
SEQUENCE_INITIATIVE = int(FCtl.SEQUENCE_INITIATIVE)
RELATIVE_OFFSET = int(FCtl.RELATIVE_OFFSET)
SOF_I3, SOF_N3 = int(Sof.I3), int(Sof.N3)
EOF_N, EOF_T = int(Eof.N), int(Eof.T)
R_ABTS, R_BA_ACC, R_BA_RJT = int(RCtl.BLS_ABTS), int(RCtl.BLS_BA_ACC), int(RCtl.BLS_BA_RJT)
TYPE_BLS = int(FcType.BLS)

UNASSIGNED = 0xFFFF
MAX_DATA_FRAME = 2048
#: BA_RJT reason / explanation (FC-LS-3 table 17/18)
BA_RJT_LOGICAL_ERROR = 0x03
BA_RJT_INVALID_OX_RX = 0x03

OPEN, ABORTING, CLOSED = 0, 1, 2


class _NoLink:
    """Stands in for the FCIP protocol while the link is down."""

    def send_fc(self, *args):
        raise LinkDown("not connected")

    def send_fc_many(self, frames):
        raise LinkDown("not connected")


NO_LINK = _NoLink()


class Exchange:
    """One open exchange: its IDs, ports, deadline, handler and sequence counter."""

    __slots__ = ("table", "ox_id", "rx_id", "local_id", "remote_id", "originator", "handler",
                 "what", "deadline", "timeout", "state", "_ec", "_seq_id")

    def __init__(self, table, ox_id, rx_id, local_id, remote_id, originator, handler, what,
                 timeout, now):
        self.table = table
        self.ox_id = ox_id
        self.rx_id = rx_id
        self.local_id = local_id
        self.remote_id = remote_id
        self.originator = originator
        self.handler = handler
        self.what = what
        self.timeout = timeout
        self.deadline = now + timeout
        self.state = OPEN
        self._ec = 0 if originator else EXCHANGE_CONTEXT
        self._seq_id = 0

    def __repr__(self):
        role = "originated" if self.originator else "responded"
        return (f"<Exchange {self.what} {role} ox_id=0x{self.ox_id:04x} rx_id=0x{self.rx_id:04x} "
                f"{format_port_id(self.local_id)}<->{format_port_id(self.remote_id)} "
                f"state={('open', 'aborting', 'closed')[self.state]}>")

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def next_seq_id(self) -> int:
        seq_id = self._seq_id
        self._seq_id = (seq_id + 1) & 0xFF
        return seq_id

    def send(self, r_ctl: int, fc_type: int, payload=b"", f_ctl: int = 0,
             parameter: int = 0) -> None:
        """A one-frame sequence: SOFi3, EOFt, End_Sequence; ``f_ctl`` adds the other bits."""
        self.table.link.send_fc(r_ctl, self.remote_id, self.local_id, fc_type,
                                f_ctl | self._ec | END_SEQUENCE, self.next_seq_id(), 0,
                                self.ox_id, self.rx_id, parameter, payload, SOF_I3, EOF_T)

    def send_data(self, r_ctl: int, fc_type: int, data, start: int, end: int,
                  last_f_ctl: int = SEQUENCE_INITIATIVE, max_frame: int = MAX_DATA_FRAME) -> int:
        """One sequence carrying ``data[start:end]`` in frames of up to ``max_frame`` bytes.

        Each frame's Parameter is its relative offset (F_CTL bit 3); the last
        frame has End_Sequence and ``last_f_ctl`` (sequence initiative by
        default). Returns the number of frames sent.
        """
        if end <= start:
            raise ValueError(f"exchange: empty data sequence [{start}:{end}]")
        view = memoryview(data)
        seq_id = self.next_seq_id()
        f_ctl = self._ec | RELATIVE_OFFSET
        remote, local, ox_id, rx_id = self.remote_id, self.local_id, self.ox_id, self.rx_id
        frames, count, offset, sof = [], 0, start, SOF_I3
        while True:
            upto = offset + max_frame
            if upto >= end:
                frames.append((r_ctl, remote, local, fc_type, f_ctl | END_SEQUENCE | last_f_ctl,
                               seq_id, count, ox_id, rx_id, offset, view[offset:end], sof, EOF_T))
                break
            frames.append((r_ctl, remote, local, fc_type, f_ctl, seq_id, count, ox_id, rx_id,
                           offset, view[offset:upto], sof, EOF_N))
            count += 1
            offset = upto
            sof = SOF_N3
        # the whole sequence in one write: per-write costs dominate 2 KiB frames
        link = self.table.link
        send_many = getattr(link, "send_fc_many", None)
        if send_many is not None:
            send_many(frames)
        else:
            for frame in frames:
                link.send_fc(*frame)
        return count + 1

    def close(self) -> None:
        """The exchange is complete; its IDs are free again."""
        self.table.close(self)

    def abort(self, error: Exception, send_abts: bool = True) -> None:
        """End the exchange with ``error``; ABTS tells the peer (see ExchangeTable.abort)."""
        self.table.abort(self, error, send_abts)


class ExchangeTable:
    """The open exchanges of one link (see the module doc)."""

    _log = Logger()

    def __init__(self, clock, max_exchanges: int = 4096, timeout: float = 30.0,
                 abort_timeout: float = 10.0, tick: float = 1.0, name: str = "rio"):
        if not 1 <= max_exchanges <= 0xF000:
            raise ValueError(f"max_exchanges: {max_exchanges} outside 1..{0xF000}")
        for label, value in (("timeout", timeout), ("abort_timeout", abort_timeout),
                             ("tick", tick)):
            if not value > 0:
                raise ValueError(f"{label}: {value!r} is not a positive number of seconds")
        self.clock = clock
        self.max_exchanges = max_exchanges
        self.timeout = timeout
        self.abort_timeout = abort_timeout
        self.tick = tick
        self.name = name
        self.link = NO_LINK
        self._originated: dict[int, Exchange] = {}
        self._responded: dict[tuple[int, int], Exchange] = {}
        self._rx_ids: set[int] = set()
        self._next_ox = 0
        self._next_rx = 0
        self._tick_call = None
        self.counters = dict.fromkeys((
            "originated", "responded", "timeouts", "abts_sent", "abts_received", "ba_acc_sent",
            "ba_rjt_sent", "abts_unanswered", "limit_refused", "unexpected_bls"), 0)

    # -- looking up ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._originated) + len(self._responded)

    @property
    def originated_count(self) -> int:
        return len(self._originated)

    @property
    def responded_count(self) -> int:
        return len(self._responded)

    def exchanges(self) -> list[Exchange]:
        return [*self._originated.values(), *self._responded.values()]

    def originated(self, ox_id: int) -> Exchange | None:
        return self._originated.get(ox_id)

    def responded(self, remote_id: int, ox_id: int) -> Exchange | None:
        return self._responded.get((remote_id, ox_id))

    def lookup(self, header: dict) -> Exchange | None:
        """The exchange a received frame belongs to, by its exchange-context bit."""
        if header["f_ctl"] & EXCHANGE_CONTEXT:
            exchange = self._originated.get(header["ox_id"])
            if exchange is not None and exchange.remote_id != header["s_id"]:
                return None
            return exchange
        return self._responded.get((header["s_id"], header["ox_id"]))

    # -- opening and closing -------------------------------------------------------
    def originate(self, local_id: int, remote_id: int, handler, what: str,
                  timeout: float | None = None) -> Exchange:
        """A new exchange we originate, with a fresh OX_ID (RX_ID unassigned)."""
        if len(self._originated) >= self.max_exchanges:
            self.counters["limit_refused"] += 1
            raise ExchangeLimitReached(self.max_exchanges, what)
        used = self._originated
        ox_id = self._next_ox
        while ox_id in used or ox_id == UNASSIGNED:
            ox_id = (ox_id + 1) & 0xFFFF
        self._next_ox = (ox_id + 1) & 0xFFFF
        exchange = Exchange(self, ox_id, UNASSIGNED, local_id, remote_id, True, handler, what,
                            timeout or self.timeout, self.clock.seconds())
        used[ox_id] = exchange
        self.counters["originated"] += 1
        if self._tick_call is None:
            self._arm()
        return exchange

    def respond(self, local_id: int, remote_id: int, ox_id: int, handler, what: str,
                timeout: float | None = None) -> Exchange:
        """A new exchange the peer originated, with an RX_ID we assign."""
        if len(self._responded) >= self.max_exchanges:
            self.counters["limit_refused"] += 1
            raise ExchangeLimitReached(self.max_exchanges, what)
        rx_id = self.allocate_rx_id()
        exchange = Exchange(self, ox_id, rx_id, local_id, remote_id, False, handler, what,
                            timeout or self.timeout, self.clock.seconds())
        self._responded[(remote_id, ox_id)] = exchange
        self._rx_ids.add(rx_id)
        self.counters["responded"] += 1
        if self._tick_call is None:
            self._arm()
        return exchange

    def allocate_rx_id(self) -> int:
        """An RX_ID no open exchange uses (one-frame replies take one without an entry)."""
        used = self._rx_ids
        rx_id = self._next_rx
        while rx_id in used or rx_id == UNASSIGNED:
            rx_id = (rx_id + 1) & 0xFFFF
        self._next_rx = (rx_id + 1) & 0xFFFF
        return rx_id

    def close(self, exchange: Exchange) -> None:
        if exchange.state == CLOSED:
            return
        exchange.state = CLOSED
        if exchange.originator:
            if self._originated.get(exchange.ox_id) is exchange:
                del self._originated[exchange.ox_id]
        else:
            key = (exchange.remote_id, exchange.ox_id)
            if self._responded.get(key) is exchange:
                del self._responded[key]
                self._rx_ids.discard(exchange.rx_id)

    def abort(self, exchange: Exchange, error: Exception, send_abts: bool = True) -> None:
        """End an open exchange with ``error``.

        With ``send_abts`` an ABTS goes to the peer and the IDs stay reserved
        until it is answered (or ``abort_timeout`` passes); without, or when
        the link is down, the exchange is closed at once.
        """
        if exchange.state != OPEN:
            return
        if send_abts:
            try:
                exchange.send(R_ABTS, TYPE_BLS, b"", SEQUENCE_INITIATIVE)
            except LinkDown:
                self.close(exchange)
            else:
                self.counters["abts_sent"] += 1
                exchange.state = ABORTING
                exchange.deadline = self.clock.seconds() + self.abort_timeout
        else:
            self.close(exchange)
        exchange.handler.exchange_ended(exchange, error)

    def end_all(self, error: Exception, local_id: int | None = None,
                remote_id: int | None = None) -> int:
        """End every open exchange (of one port pair when given) without ABTS: link down, LOGO.

        Returns how many were open.
        """
        ended = 0
        for exchange in self.exchanges():
            if local_id is not None and exchange.local_id != local_id:
                continue
            if remote_id is not None and exchange.remote_id != remote_id:
                continue
            was_open = exchange.state == OPEN
            self.close(exchange)
            if was_open:
                ended += 1
                exchange.handler.exchange_ended(exchange, error)
        if not self and self._tick_call is not None:
            self.stop()
        return ended

    def stop(self) -> None:
        """Cancel the sweep timer (the link is gone)."""
        if self._tick_call is not None:
            if self._tick_call.active():
                self._tick_call.cancel()
            self._tick_call = None

    # -- timeouts --------------------------------------------------------------------
    def _arm(self) -> None:
        self._tick_call = self.clock.callLater(self.tick, self._sweep)

    def _sweep(self) -> None:
        self._tick_call = None
        now = self.clock.seconds()
        for exchange in self.exchanges():
            if exchange.deadline > now or exchange.state == CLOSED:
                continue
            if exchange.state == ABORTING:
                self.close(exchange)
                self.counters["abts_unanswered"] += 1
                self._log.warn("{table}: no BA_ACC for the ABTS of {exchange} in {seconds} s; "
                               "its IDs are free again", table=self.name, exchange=exchange,
                               seconds=self.abort_timeout)
                continue
            self.counters["timeouts"] += 1
            self._log.warn("{table}: {exchange} timed out after {seconds} s", table=self.name,
                           exchange=exchange, seconds=exchange.timeout)
            error = ExchangeTimeout(exchange.what, exchange.remote_id, exchange.timeout)
            if exchange.originator:
                self.abort(exchange, error)
            else:
                self.close(exchange)
                exchange.handler.exchange_ended(exchange, error)
        if self and self._tick_call is None:
            self._arm()

    # -- basic link services -----------------------------------------------------------
    def reply(self, frame, r_ctl: int, fc_type: int, payload: bytes = b"",
              d_id: int | None = None) -> None:
        """A one-frame last sequence answering ``frame`` on its exchange (ELS/CT/BLS replies).

        ``d_id`` overrides the destination (FLOGI's LS_ACC goes to the newly
        assigned N_Port ID, not to the requester's S_ID 0).
        """
        h = frame.header
        if h["f_ctl"] & EXCHANGE_CONTEXT:          # the responder sent it: we are the originator
            f_ctl, rx_id = LAST_SEQUENCE | END_SEQUENCE, h["rx_id"]
        else:
            f_ctl = EXCHANGE_CONTEXT | LAST_SEQUENCE | END_SEQUENCE
            exchange = self._responded.get((h["s_id"], h["ox_id"]))
            rx_id = exchange.rx_id if exchange is not None else (
                h["rx_id"] if h["rx_id"] != UNASSIGNED else self.allocate_rx_id())
        self.link.send_fc(r_ctl, h["s_id"] if d_id is None else d_id, h["d_id"], fc_type, f_ctl,
                          0, 0, h["ox_id"], rx_id, 0, payload, SOF_I3, EOF_T)

    def handle_bls(self, frame) -> None:
        """ABTS, BA_ACC or BA_RJT received (see the module doc)."""
        h = frame.header
        r_ctl = h["r_ctl"]
        exchange = self.lookup(h)
        if r_ctl == R_ABTS:
            self.counters["abts_received"] += 1
            if exchange is None:
                self.counters["ba_rjt_sent"] += 1
                self._log.warn("{table}: ABTS from {peer} for unknown exchange ox_id=0x{ox:04x} "
                               "rx_id=0x{rx:04x}: BA_RJT", table=self.name,
                               peer=format_port_id(h["s_id"]), ox=h["ox_id"], rx=h["rx_id"])
                self.reply(frame, R_BA_RJT, TYPE_BLS, els.BA_RJT.build(
                    reason=BA_RJT_LOGICAL_ERROR, explanation=BA_RJT_INVALID_OX_RX))
                return
            self.counters["ba_acc_sent"] += 1
            was_open = exchange.state == OPEN
            self._log.info("{table}: ABTS from {peer} aborts {exchange}", table=self.name,
                           peer=format_port_id(h["s_id"]), exchange=exchange)
            self.reply(frame, R_BA_ACC, TYPE_BLS, els.build_ba_acc(exchange.ox_id, exchange.rx_id))
            self.close(exchange)
            if was_open:
                exchange.handler.exchange_ended(exchange, ExchangeAborted(
                    exchange.what, exchange.remote_id, "ABTS from the peer"))
            return
        if r_ctl in (R_BA_ACC, R_BA_RJT) and exchange is not None and exchange.state == ABORTING:
            self.close(exchange)
            return
        self.counters["unexpected_bls"] += 1
        self._log.warn("{table}: unexpected BLS R_CTL 0x{r_ctl:02x} from {peer} for "
                       "ox_id=0x{ox:04x} (no exchange being aborted); dropped", table=self.name,
                       r_ctl=r_ctl, peer=format_port_id(h["s_id"]), ox=h["ox_id"])
