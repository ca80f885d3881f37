"""One NBD connection's state machine: handshake, option haggling, transmission.

``NbdSession`` is a plain object: bytes go in through ``data_received`` and
come out through a ``Link`` (write, pause/resume reading, close), which the
Twisted protocol in ``rcn.nbd.server`` implements over its transport. Time
comes from an injected clock (``callLater``), used for the handshake deadline.

Transmission requests are dispatched as soon as their header (and, for WRITE,
payload) is complete; an export may answer later through a Deferred, so
replies can leave out of order, matched by cookie. Replies produced while a
chunk of input is being parsed are collected and written with one
``writeSequence``.

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

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from rcn.nbd import protocol as P
from rcn.nbd.export import Export, ExportTable, error_code

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


# Session states.
CLIENT_FLAGS, OPTION_HEADER, OPTION_DATA, SKIP_OPTION, REQUEST, PAYLOAD, SKIP_PAYLOAD, \
    DISCONNECTING, CLOSED = range(9)

_REQ_SIZE = P.REQUEST.size
_REQ_UNPACK = P.REQUEST.unpack_from
_REPLY_PACK = P.SIMPLE_REPLY.pack
_REQUEST_MAGIC = P.REQUEST_MAGIC
_REPLY_MAGIC = P.SIMPLE_REPLY_MAGIC
_OUT_FLUSH_BYTES = 256 * 1024  # replies collected during one chunk before an early write

_ALLOWED_FLAGS = {
    P.CMD_READ: P.CMD_FLAG_FUA,
    P.CMD_WRITE: P.CMD_FLAG_FUA,
    P.CMD_FLUSH: P.CMD_FLAG_FUA,
    P.CMD_TRIM: P.CMD_FLAG_FUA,
    P.CMD_WRITE_ZEROES: P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE,
    P.CMD_DISC: P.CMD_FLAG_FUA,
}
_WRITING = frozenset((P.CMD_WRITE, P.CMD_TRIM, P.CMD_WRITE_ZEROES))


def transmission_flags(export: Export) -> int:
    flags = P.FLAG_HAS_FLAGS | P.FLAG_SEND_FLUSH
    if export.read_only:
        flags |= P.FLAG_READ_ONLY
    else:
        flags |= P.FLAG_SEND_FUA | P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES
    if getattr(export, "can_multi_conn", False):
        flags |= P.FLAG_CAN_MULTI_CONN
    return flags


def block_sizes(export: Export, limits: ServerLimits) -> tuple[int, int, int]:
    """(minimum, preferred, maximum) block sizes advertised for ``export``."""
    minimum = getattr(export, "min_block_size", 1) or 1
    preferred = max(limits.preferred_block_size, export.block_size, minimum)
    if preferred & (preferred - 1):
        preferred = max(limits.preferred_block_size, minimum)
    maximum = limits.max_request_bytes
    return minimum, max(minimum, min(preferred, maximum)), maximum


class NbdSession:
    """The server side of one NBD connection."""

    _log = Logger()

    def __init__(self, link: Link, exports: ExportTable, clock: Clock, limits: ServerLimits,
                 counters: dict[str, int]):
        self._link = link
        self._exports = exports
        self._clock = clock
        self.limits = limits
        self.counters = counters
        self.peer = link.peer
        self.state = CLIENT_FLAGS
        self.export: Export | None = None
        self.no_zeroes = False
        self._min_block = 1
        self._max_request = limits.max_request_bytes
        # input
        self._input: deque = deque()
        self._input_bytes = 0
        self._in_feed = False
        self._rx_total = 0           # bytes consumed so far, for error messages
        self._acc = bytearray()      # partial handshake unit or request header
        self._need = 4
        self._option = 0
        self._options_seen = 0
        self._skip_left = 0
        self._pieces: list = []      # partial WRITE payload
        self._payload_left = 0
        self._pending: tuple = ()    # (flags, cookie, offset, length) of the WRITE being received
        # output
        self._out: list[bytes] = []
        self._out_bytes = 0
        # flow control
        self._pause_reasons: set[str] = set()
        self.inflight = 0
        self.inflight_bytes = 0
        self._errors_logged = 0
        self._timer = None

    # -- events from the connection -------------------------------------------

    def connection_made(self) -> None:
        self._timer = self._clock.callLater(self.limits.handshake_timeout, self._handshake_expired)
        self._send(P.handshake(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES))
        self._flush_out()

    def data_received(self, data: bytes) -> None:
        if self.state >= DISCONNECTING or not data:
            return
        if self._pause_reasons:
            if self._input_bytes + len(data) > self.limits.max_backlog_bytes:
                self._violation(f"{self._input_bytes + len(data)} bytes arrived while the "
                                f"connection was paused (limit {self.limits.max_backlog_bytes})")
                return
        self._input.append(data)
        self._input_bytes += len(data)
        self._pump()

    def connection_lost(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._cancel_timer()
        self._input.clear()
        self._input_bytes = 0
        self._pieces = []
        self._out = []

    def output_paused(self) -> None:
        """The transport's send buffer is full: stop reading until it drains."""
        self._pause("output")

    def output_resumed(self) -> None:
        self._resume("output")

    @property
    def paused(self) -> bool:
        return bool(self._pause_reasons)

    # -- input pump --------------------------------------------------------------

    def _pump(self) -> None:
        if self._in_feed:
            return
        self._in_feed = True
        try:
            while self._input and not self._pause_reasons and self.state < DISCONNECTING:
                chunk = self._input.popleft()
                size = len(chunk)
                self._input_bytes -= size
                pos = self._feed(chunk)
                self._rx_total += pos
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
        """Consume ``chunk`` until it ends, the session pauses or closes; return bytes used."""
        mv = memoryview(chunk)
        n = len(mv)
        pos = 0
        while pos < n:
            if self._pause_reasons:
                break
            state = self.state
            if state == REQUEST:
                acc = self._acc
                if acc:
                    take = min(_REQ_SIZE - len(acc), n - pos)
                    acc += mv[pos:pos + take]
                    pos += take
                    if len(acc) < _REQ_SIZE:
                        break
                    magic, flags, cmd, cookie, offset, length = _REQ_UNPACK(acc)
                    acc.clear()
                elif n - pos >= _REQ_SIZE:
                    magic, flags, cmd, cookie, offset, length = _REQ_UNPACK(mv, pos)
                    pos += _REQ_SIZE
                else:
                    acc += mv[pos:]
                    pos = n
                    break
                if magic != _REQUEST_MAGIC:
                    self._violation(f"request magic 0x{magic:08x} at stream offset "
                                    f"{self._rx_total + pos - _REQ_SIZE}, expected "
                                    f"0x{_REQUEST_MAGIC:08x}")
                    return pos
                if cmd == P.CMD_WRITE:
                    error = self._check(P.CMD_WRITE, flags, offset, length)
                    if error:
                        self._refuse_write(error, cookie, offset, length)
                    elif n - pos >= length:
                        payload = mv[pos:pos + length]
                        pos += length
                        self._write(flags, cookie, offset, payload)
                    else:
                        self._pieces = [mv[pos:]]
                        self._payload_left = length - (n - pos)
                        self._pending = (flags, cookie, offset, length)
                        self.state = PAYLOAD
                        pos = n
                else:
                    self._request(cmd, flags, cookie, offset, length)
            elif state == PAYLOAD:
                take = min(self._payload_left, n - pos)
                self._pieces.append(mv[pos:pos + take])
                pos += take
                self._payload_left -= take
                if self._payload_left == 0:
                    flags, cookie, offset, length = self._pending
                    payload = memoryview(b"".join(self._pieces))
                    self._pieces = []
                    self.state = REQUEST
                    self._write(flags, cookie, offset, payload)
            elif state == SKIP_PAYLOAD or state == SKIP_OPTION:
                take = min(self._skip_left, n - pos)
                pos += take
                self._skip_left -= take
                if self._skip_left == 0:
                    if state == SKIP_PAYLOAD:
                        self.state = REQUEST
                    else:
                        self._option_reply(P.REP_ERR_TOO_BIG,
                                           f"option data longer than "
                                           f"{self.limits.max_option_bytes} bytes")
                        self._next_option()
            elif state < REQUEST:   # handshake units: flags, option header, option data
                acc = self._acc
                take = min(self._need - len(acc), n - pos)
                acc += mv[pos:pos + take]
                pos += take
                if len(acc) < self._need:
                    break
                unit = bytes(acc)
                acc.clear()
                self._handshake_unit(unit)
            else:
                break
        return pos

    # -- flow control --------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self._pause_reasons:
            self.counters["backpressure_pauses"] += 1
            if self.state < DISCONNECTING:
                self._link.pause_reading()
        self._pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.state < DISCONNECTING:
            self._link.resume_reading()
            if self._input and not self._in_feed:
                self._pump()

    def _send(self, *chunks: bytes) -> None:
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

    # -- handshake -----------------------------------------------------------------

    def _handshake_unit(self, unit: bytes) -> None:
        state = self.state
        if state == CLIENT_FLAGS:
            (flags,) = P.CLIENT_FLAGS.unpack(unit)
            if flags & ~P.CLIENT_FLAGS_KNOWN:
                self._violation(f"client flags 0x{flags:08x} carry unknown bits "
                                f"0x{flags & ~P.CLIENT_FLAGS_KNOWN:08x}")
                return
            self.no_zeroes = bool(flags & P.FLAG_C_NO_ZEROES)
            self._next_option()
        elif state == OPTION_HEADER:
            magic, option, length = P.OPTION_HEADER.unpack(unit)
            if magic != P.IHAVEOPT:
                self._violation(f"option magic 0x{magic:016x}, expected IHAVEOPT "
                                f"0x{P.IHAVEOPT:016x}")
                return
            self._options_seen += 1
            self.counters["options"] += 1
            if self._options_seen > self.limits.max_options:
                self._violation(f"more than {self.limits.max_options} options in one handshake")
                return
            self._option = option
            if length > self.limits.max_option_bytes:
                if option == P.OPT_EXPORT_NAME:
                    self._violation(f"NBD_OPT_EXPORT_NAME with {length} bytes of data "
                                    f"(names are at most {P.MAX_STRING})")
                    return
                self.state = SKIP_OPTION
                self._skip_left = length
            elif length == 0:
                self._option_data(b"")
            else:
                self.state = OPTION_DATA
                self._need = length
        elif state == OPTION_DATA:
            self._option_data(unit)

    def _next_option(self) -> None:
        if self.state < REQUEST:
            self.state = OPTION_HEADER
            self._need = P.OPTION_HEADER.size

    def _option_reply(self, reply_type: int, message: str = "", data: bytes = b"") -> None:
        if reply_type & P.REP_FLAG_ERROR:
            self.counters["option_errors"] += 1
            data = message.encode("utf-8")[:P.MAX_STRING]
            # Unsupported options are routine (qemu asks for structured replies): debug.
            log = self._log.debug if reply_type == P.REP_ERR_UNSUP else self._log.info
            log("NBD {peer}: option {option} refused ({reply}): {message}",
                peer=self.peer, option=P.OPTION_NAMES.get(self._option, self._option),
                reply=_rep_name(reply_type), message=message)
        self._send(P.option_reply(self._option, reply_type, data))

    def _option_data(self, data: bytes) -> None:
        option = self._option
        self._next_option()
        if option == P.OPT_EXPORT_NAME:
            self._export_name(data)
        elif option in (P.OPT_GO, P.OPT_INFO):
            self._info(option, data)
        elif option == P.OPT_LIST:
            if data:
                self._option_reply(P.REP_ERR_INVALID, "NBD_OPT_LIST carries no data")
                return
            for export in self._exports:
                name = export.name.encode("utf-8")
                self._send(P.option_reply(option, P.REP_SERVER, P.U32.pack(len(name)) + name))
            self._send(P.option_reply(option, P.REP_ACK))
        elif option == P.OPT_ABORT:
            self._send(P.option_reply(option, P.REP_ACK))
            self._log.info("NBD {peer}: client aborted the handshake", peer=self.peer)
            self._close()
        elif option == P.OPT_STRUCTURED_REPLY:
            self._option_reply(P.REP_ERR_UNSUP, "structured replies are not supported; "
                               "this server sends simple replies")
        elif option == P.OPT_STARTTLS:
            self._option_reply(P.REP_ERR_UNSUP, "TLS is not supported by this server")
        else:
            self._option_reply(P.REP_ERR_UNSUP,
                               f"option {P.OPTION_NAMES.get(option, option)} is not supported")

    def _lookup(self, raw: bytes) -> Export | None:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self._exports.get(name)

    def _export_name(self, raw: bytes) -> None:
        export = self._lookup(raw)
        if export is None:
            # NBD_OPT_EXPORT_NAME cannot be answered with an error: hard disconnect.
            self._violation(f"NBD_OPT_EXPORT_NAME asked for unknown export {raw[:64]!r}; "
                            f"known: {self._exports.names()}")
            return
        reply = P.EXPORT_NAME_REPLY.pack(export.size, transmission_flags(export))
        if not self.no_zeroes:
            reply += bytes(P.EXPORT_NAME_PAD)
        self._send(reply)
        self._enter_transmission(export)

    def _info(self, option: int, data: bytes) -> None:
        try:
            raw, requests = P.parse_go_data(data)
        except ValueError as exc:
            self._option_reply(P.REP_ERR_INVALID, f"malformed {P.OPTION_NAMES[option]}: {exc}")
            return
        export = self._lookup(raw)
        if export is None:
            self._option_reply(P.REP_ERR_UNKNOWN, f"no export named {raw[:64]!r}; known: "
                               f"{', '.join(self._exports.names()) or 'none'}")
            return
        minimum, preferred, maximum = block_sizes(export, self.limits)
        if option == P.OPT_GO and minimum > 1 and P.INFO_BLOCK_SIZE not in requests:
            self._option_reply(P.REP_ERR_BLOCK_SIZE_REQD,
                               f"export {export.name!r} needs requests aligned to {minimum} "
                               f"bytes: ask for NBD_INFO_BLOCK_SIZE")
            return
        send = self._send
        send(P.option_reply(option, P.REP_INFO, P.INFO_EXPORT_LAYOUT.pack(
            P.INFO_EXPORT, export.size, transmission_flags(export))))
        if P.INFO_NAME in requests:
            send(P.option_reply(option, P.REP_INFO,
                                P.U16.pack(P.INFO_NAME) + export.name.encode("utf-8")))
        if P.INFO_DESCRIPTION in requests and export.description:
            send(P.option_reply(option, P.REP_INFO, P.U16.pack(P.INFO_DESCRIPTION)
                                + export.description.encode("utf-8")[:P.MAX_STRING]))
        send(P.option_reply(option, P.REP_INFO, P.INFO_BLOCK_SIZE_LAYOUT.pack(
            P.INFO_BLOCK_SIZE, minimum, preferred, maximum)))
        send(P.option_reply(option, P.REP_ACK))
        if option == P.OPT_GO:
            self._enter_transmission(export)

    def _enter_transmission(self, export: Export) -> None:
        self._cancel_timer()
        self.export = export
        self._min_block = getattr(export, "min_block_size", 1) or 1
        self.state = REQUEST
        self._acc = bytearray()
        self.counters["handshakes"] += 1
        self._log.info("NBD {peer}: serving export {name!r} ({size} bytes)",
                       peer=self.peer, name=export.name, size=export.size)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.state < REQUEST:
            self.counters["handshake_timeouts"] += 1
            self._violation(f"no export chosen within {self.limits.handshake_timeout} s",
                            count=False)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- transmission ----------------------------------------------------------------

    def _check(self, cmd: int, flags: int, offset: int, length: int) -> tuple[int, str] | None:
        """None for a valid request; else (NBD error code, reason)."""
        export = self.export
        allowed = _ALLOWED_FLAGS.get(cmd)
        if allowed is None:
            return P.EINVAL, f"unknown command {cmd}"
        if flags & ~allowed:
            return P.EINVAL, (f"flags 0x{flags & ~allowed:04x} are not valid for "
                              f"{P.COMMAND_NAMES[cmd]}")
        if cmd in _WRITING and export.read_only:
            return P.EPERM, f"export {export.name!r} is read-only"
        if cmd == P.CMD_FLUSH:
            if offset or length:
                return P.EINVAL, "flush must have offset and length 0"
            return None
        if length > self._max_request and cmd <= P.CMD_WRITE:
            return P.EINVAL, (f"{P.COMMAND_NAMES[cmd]} of {length} bytes exceeds the maximum "
                              f"{self._max_request}")
        if offset + length > export.size:
            code = P.ENOSPC if cmd in (P.CMD_WRITE, P.CMD_WRITE_ZEROES) else P.EINVAL
            return code, (f"{P.COMMAND_NAMES[cmd]} at offset {offset} length {length} ends past "
                          f"the export size {export.size}")
        minimum = self._min_block
        if minimum > 1 and (offset % minimum or length % minimum):
            return P.EINVAL, (f"{P.COMMAND_NAMES[cmd]} at offset {offset} length {length} is "
                              f"not aligned to the minimum block size {minimum}")
        return None

    def _refuse_write(self, error: tuple[int, str], cookie: int, offset: int, length: int) -> None:
        self.counters["requests_write"] += 1
        self._error_reply(P.CMD_WRITE, cookie, error[0], error[1])
        if length > self.limits.max_skip_bytes:
            self._violation(f"write payload of {length} bytes is too large to skip "
                            f"(limit {self.limits.max_skip_bytes})")
            return
        if length:
            self.state = SKIP_PAYLOAD
            self._skip_left = length

    def _write(self, flags: int, cookie: int, offset: int, payload) -> None:
        self.counters["requests_write"] += 1
        length = len(payload)
        self._start(P.CMD_WRITE, cookie, length, 0, self.export.write, offset, payload,
                    bool(flags & P.CMD_FLAG_FUA))

    def _request(self, cmd: int, flags: int, cookie: int, offset: int, length: int) -> None:
        counters = self.counters
        name = P.COMMAND_NAMES.get(cmd)
        if cmd == P.CMD_DISC:
            counters["requests_disc"] += 1
            self._log.info("NBD {peer}: client disconnected (NBD_CMD_DISC)", peer=self.peer)
            self.state = DISCONNECTING
            self._maybe_finish_disconnect()
            return
        if name is None or cmd not in _ALLOWED_FLAGS:
            counters["requests_unknown"] += 1
        else:
            counters["requests_" + name] += 1
        error = self._check(cmd, flags, offset, length)
        if error:
            self._error_reply(cmd, cookie, error[0], error[1])
            return
        export = self.export
        fua = flags & P.CMD_FLAG_FUA
        if cmd == P.CMD_READ:
            self._start(cmd, cookie, length, length, export.read, offset, length)
        elif cmd == P.CMD_FLUSH:
            self._start(cmd, cookie, 0, 0, export.flush)
        elif cmd == P.CMD_TRIM:
            call = self._with_flush(export.trim) if fua else export.trim
            self._start(cmd, cookie, 0, 0, call, offset, length)
        else:  # WRITE_ZEROES
            call = self._with_flush(export.write_zeroes) if fua else export.write_zeroes
            self._start(cmd, cookie, 0, 0, call, offset, length,
                        not (flags & P.CMD_FLAG_NO_HOLE))

    def _with_flush(self, func):
        """``func`` then the export's flush: FUA for calls that take no fua argument."""
        flush = self.export.flush

        def call(*args):
            result = func(*args)
            if isinstance(result, Deferred):
                return result.addCallback(lambda _: flush())
            return flush()
        return call

    def _start(self, cmd: int, cookie: int, nbytes: int, read_length: int, func, *args) -> None:
        self.inflight += 1
        self.inflight_bytes += nbytes
        try:
            result = func(*args)
        except Exception as exc:  # the export refused or failed synchronously
            self._done_error(Failure(exc), cmd, cookie, nbytes)
        else:
            if isinstance(result, Deferred):
                result.addCallbacks(self._done, self._done_error,
                                    callbackArgs=(cmd, cookie, nbytes, read_length),
                                    errbackArgs=(cmd, cookie, nbytes))
                result.addErrback(self._bug)
            else:
                self._done(result, cmd, cookie, nbytes, read_length)
        limits = self.limits
        if (self.inflight_bytes > limits.max_inflight_bytes
                or self.inflight >= limits.max_inflight_requests):
            self._pause("inflight")

    def _done(self, result, cmd: int, cookie: int, nbytes: int, read_length: int) -> None:
        self.inflight -= 1
        self.inflight_bytes -= nbytes
        if self.state == CLOSED:
            self.counters["replies_dropped"] += 1
            return
        if cmd == P.CMD_READ:
            if type(result) is not bytes:
                result = bytes(result) if result is not None else b""
            if len(result) != read_length:
                self._error_reply(cmd, cookie, P.EIO,
                                  f"export returned {len(result)} bytes for a read of "
                                  f"{read_length}")
            else:
                self.counters["bytes_read"] += read_length
                self._send(_REPLY_PACK(_REPLY_MAGIC, 0, cookie), result)
        else:
            if cmd == P.CMD_WRITE:
                self.counters["bytes_written"] += nbytes
            self._send(_REPLY_PACK(_REPLY_MAGIC, 0, cookie))
        self._completed()

    def _done_error(self, failure: Failure, cmd: int, cookie: int, nbytes: int) -> None:
        self.inflight -= 1
        self.inflight_bytes -= nbytes
        code = error_code(failure.value)
        if code is None:
            self._log.failure("NBD {peer}: export {name!r} failed on {cmd}", failure,
                              peer=self.peer, name=self.export.name, cmd=P.COMMAND_NAMES[cmd])
            code = P.EIO
        if self.state == CLOSED:
            self.counters["replies_dropped"] += 1
            return
        self._error_reply(cmd, cookie, code, str(failure.value))
        self._completed()

    def _bug(self, failure: Failure) -> None:
        self._log.failure("NBD {peer}: error while replying", failure, peer=self.peer)

    def _completed(self) -> None:
        if "inflight" in self._pause_reasons:
            limits = self.limits
            if (self.inflight_bytes <= limits.max_inflight_bytes // 2
                    and self.inflight < max(1, limits.max_inflight_requests // 2)):
                self._resume("inflight")
        if self.state == DISCONNECTING:
            self._maybe_finish_disconnect()

    def _error_reply(self, cmd: int, cookie: int, code: int, reason: str) -> None:
        counters = self.counters
        counters["errors"] += 1
        name = P.ERROR_NAMES.get(code, str(code))
        key = "errors_" + name
        if key in counters:
            counters[key] += 1
        if self._errors_logged < self.limits.max_logged_errors:
            self._errors_logged += 1
            more = (" (further errors on this connection are counted, not logged)"
                    if self._errors_logged == self.limits.max_logged_errors else "")
            self._log.warn("NBD {peer}: {cmd} refused with {code}: {reason}{more}",
                           peer=self.peer, cmd=P.COMMAND_NAMES.get(cmd, f"command {cmd}"),
                           code=name, reason=reason, more=more)
        self._send(_REPLY_PACK(_REPLY_MAGIC, code, cookie))

    # -- ending ----------------------------------------------------------------------

    def _maybe_finish_disconnect(self) -> None:
        if self.inflight == 0:
            self._close()

    def _violation(self, reason: str, count: bool = True) -> None:
        """Bad input: log, count, send what is queued, close the connection."""
        if count:
            self.counters["protocol_errors"] += 1
        self._log.warn("NBD {peer}: closing connection: {reason}", peer=self.peer, reason=reason)
        self._close()

    def _close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = DISCONNECTING
        self._cancel_timer()
        self._input.clear()
        self._input_bytes = 0
        self._flush_out()
        self.state = CLOSED
        self._link.close()


def _rep_name(reply_type: int) -> str:
    for name, value in vars(P).items():
        if name.startswith("REP_ERR_") and value == reply_type:
            return "NBD_" + name
    return hex(reply_type)
