"""The transmission phase of one NBD connection: requests in, simple replies out.

``Transmission`` is a plain state machine fed by ``rcn.nbd.session.NbdSession``
once the handshake chose an export: ``feed(view, pos, end)`` parses request
headers and WRITE payloads and dispatches each request as soon as it is
complete. An export may answer later through a Deferred, so replies can leave
out of order, matched by cookie; they go out through the session's ``send``.

Its limits are the session's ``ServerLimits``: a READ or WRITE longer than
``max_request_bytes`` is refused with EINVAL, a refused WRITE's payload is read
and thrown away (nothing buffered) up to ``max_skip_bytes``, past which the
connection is closed after the error reply; in-flight requests over
``max_inflight_bytes`` or ``max_inflight_requests`` pause the session
(``session.pause("inflight")``) until replies drain below half of either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from rcn.nbd import protocol as P
from rcn.nbd.export import Export, error_code
from rcn.nbd.phase import Phase

if TYPE_CHECKING:
    from rcn.nbd.session import NbdSession

# Transmission states.
REQUEST, PAYLOAD, SKIP_PAYLOAD = range(3)

_REQ_SIZE = P.REQUEST.size
_REQ_UNPACK = P.REQUEST.unpack_from
_REPLY_PACK = P.SIMPLE_REPLY.pack
_REQUEST_MAGIC = P.REQUEST_MAGIC
_REPLY_MAGIC = P.SIMPLE_REPLY_MAGIC

_ALLOWED_FLAGS = {
    P.CMD_READ: P.CMD_FLAG_FUA,
    P.CMD_WRITE: P.CMD_FLAG_FUA,
    P.CMD_FLUSH: P.CMD_FLAG_FUA,
    P.CMD_TRIM: P.CMD_FLAG_FUA,
    P.CMD_WRITE_ZEROES: P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE,
    P.CMD_DISC: P.CMD_FLAG_FUA,
}
_WRITING = frozenset((P.CMD_WRITE, P.CMD_TRIM, P.CMD_WRITE_ZEROES))


class Transmission(Phase):
    """Requests of one connection to one export, and their replies."""

    def __init__(self, session: NbdSession, export: Export, log):
        super().__init__(session, log)
        self.export = export
        self._min_block = getattr(export, "min_block_size", 1) or 1
        self._max_request = self.limits.max_request_bytes
        self.state = REQUEST
        self._acc = bytearray()      # partial request header
        self._skip_left = 0
        self._pieces: list = []      # partial WRITE payload
        self._payload_left = 0
        self._pending: tuple = ()    # (flags, cookie, offset, length) of the WRITE being received
        self._disconnecting = False  # NBD_CMD_DISC came: close once nothing is in flight
        self.inflight = 0
        self.inflight_bytes = 0
        self._errors_logged = 0

    def connection_lost(self) -> None:
        self._pieces = []

    # -- input -------------------------------------------------------------------------

    def feed(self, mv: memoryview, pos: int, end: int) -> int:
        """Consume ``mv[pos:end]`` until it ends, the session pauses or stops; return the
        new pos. Request headers are parsed here, in the loop: this is the hot path."""
        session = self._session
        paused = session.pause_reasons
        while pos < end and not paused and session.phase is self:
            state = self.state
            if state == REQUEST:
                acc = self._acc
                if acc:
                    take = min(_REQ_SIZE - len(acc), end - pos)
                    acc += mv[pos:pos + take]
                    pos += take
                    if len(acc) < _REQ_SIZE:
                        break
                    magic, flags, cmd, cookie, offset, length = _REQ_UNPACK(acc)
                    acc.clear()
                elif end - pos >= _REQ_SIZE:
                    magic, flags, cmd, cookie, offset, length = _REQ_UNPACK(mv, pos)
                    pos += _REQ_SIZE
                else:
                    acc += mv[pos:]
                    return end
                if magic != _REQUEST_MAGIC:
                    session.violation(f"request magic 0x{magic:08x} at stream offset "
                                      f"{session.rx_total + pos - _REQ_SIZE}, expected "
                                      f"0x{_REQUEST_MAGIC:08x}")
                    return pos
                if cmd == P.CMD_WRITE:
                    pos = self._write_request(mv, pos, end, flags, cookie, offset, length)
                else:
                    self._request(cmd, flags, cookie, offset, length)
            elif state == PAYLOAD:
                pos = self._payload(mv, pos, end)
            else:  # SKIP_PAYLOAD
                take = min(self._skip_left, end - pos)
                pos += take
                self._skip_left -= take
                if self._skip_left == 0:
                    self.state = REQUEST
        return pos

    def _write_request(self, mv, pos: int, end: int, flags: int, cookie: int, offset: int,
                       length: int) -> int:
        error = self._check(P.CMD_WRITE, flags, offset, length)
        if error:
            self._refuse_write(error, cookie, offset, length)
            return pos
        if end - pos >= length:
            self._write(flags, cookie, offset, mv[pos:pos + length])
            return pos + length
        self._pieces = [mv[pos:]]
        self._payload_left = length - (end - pos)
        self._pending = (flags, cookie, offset, length)
        self.state = PAYLOAD
        return end

    def _payload(self, mv, pos: int, end: int) -> int:
        take = min(self._payload_left, end - pos)
        self._pieces.append(mv[pos:pos + take])
        pos += take
        self._payload_left -= take
        if self._payload_left == 0:
            flags, cookie, offset, length = self._pending
            payload = memoryview(b"".join(self._pieces))
            self._pieces = []
            self.state = REQUEST
            self._write(flags, cookie, offset, payload)
        return pos

    # -- requests ------------------------------------------------------------------------

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
            self._session.violation(f"write payload of {length} bytes is too large to skip "
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
            self._disconnecting = True
            self._session.stop_reading()
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

    # -- replies -------------------------------------------------------------------------

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
            self._session.pause("inflight")

    def _done(self, result, cmd: int, cookie: int, nbytes: int, read_length: int) -> None:
        self.inflight -= 1
        self.inflight_bytes -= nbytes
        if self._session.closed:
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
        if self._session.closed:
            self.counters["replies_dropped"] += 1
            return
        self._error_reply(cmd, cookie, code, str(failure.value))
        self._completed()

    def _bug(self, failure: Failure) -> None:
        self._log.failure("NBD {peer}: error while replying", failure, peer=self.peer)

    def _completed(self) -> None:
        session = self._session
        if "inflight" in session.pause_reasons:
            limits = self.limits
            if (self.inflight_bytes <= limits.max_inflight_bytes // 2
                    and self.inflight < max(1, limits.max_inflight_requests // 2)):
                session.resume("inflight")
        if self._disconnecting:
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

    def _maybe_finish_disconnect(self) -> None:
        if self.inflight == 0:
            self._session.close()
