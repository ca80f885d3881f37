"""The handshake phase of one NBD connection: fixed newstyle negotiation and options.

``Handshake`` is a plain state machine fed by ``rcn.nbd.session.NbdSession``:
``feed(view, pos, end)`` consumes handshake units (the client's flags, option
headers, option data) and answers through the session's ``send``. It ends in
``session.enter_transmission(export)`` (NBD_OPT_EXPORT_NAME, NBD_OPT_GO) or in
``session.close`` / ``session.violation``. Its limits are the session's
``ServerLimits``: option data over ``max_option_bytes`` is skipped unbuffered
and answered NBD_REP_ERR_TOO_BIG (NBD_OPT_EXPORT_NAME disconnects); more than
``max_options`` options disconnect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rcn.nbd import protocol as P
from rcn.nbd.export import Export, ExportTable
from rcn.nbd.phase import Phase

if TYPE_CHECKING:
    from rcn.nbd.session import NbdSession, ServerLimits

# Handshake states.
CLIENT_FLAGS, OPTION_HEADER, OPTION_DATA, SKIP_OPTION = range(4)


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


class Handshake(Phase):
    """From the server's greeting to the chosen export."""

    def __init__(self, session: NbdSession, exports: ExportTable, log):
        super().__init__(session, log)
        self._exports = exports
        self.state = CLIENT_FLAGS
        self.no_zeroes = False
        self._acc = bytearray()      # partial handshake unit
        self._need = P.CLIENT_FLAGS.size
        self._option = 0
        self._options_seen = 0
        self._skip_left = 0

    def greet(self) -> None:
        self._send(P.handshake(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES))

    def feed(self, mv: memoryview, pos: int, end: int) -> int:
        """Consume ``mv[pos:end]`` until it ends or the handshake is over; return the new pos."""
        session = self._session
        paused = session.pause_reasons
        while pos < end and not paused and session.phase is self:
            if self.state == SKIP_OPTION:
                take = min(self._skip_left, end - pos)
                pos += take
                self._skip_left -= take
                if self._skip_left == 0:
                    self._option_reply(P.REP_ERR_TOO_BIG, f"option data longer than "
                                       f"{self.limits.max_option_bytes} bytes")
                    self._next_option()
                continue
            acc = self._acc
            take = min(self._need - len(acc), end - pos)
            acc += mv[pos:pos + take]
            pos += take
            if len(acc) < self._need:
                break
            unit = bytes(acc)
            acc.clear()
            self._unit(unit)
        return pos

    def _unit(self, unit: bytes) -> None:
        state = self.state
        if state == CLIENT_FLAGS:
            (flags,) = P.CLIENT_FLAGS.unpack(unit)
            if flags & ~P.CLIENT_FLAGS_KNOWN:
                self._session.violation(f"client flags 0x{flags:08x} carry unknown bits "
                                        f"0x{flags & ~P.CLIENT_FLAGS_KNOWN:08x}")
                return
            self.no_zeroes = bool(flags & P.FLAG_C_NO_ZEROES)
            self._next_option()
        elif state == OPTION_HEADER:
            self._option_header(unit)
        elif state == OPTION_DATA:
            self._option_data(unit)

    def _option_header(self, unit: bytes) -> None:
        violation = self._session.violation
        magic, option, length = P.OPTION_HEADER.unpack(unit)
        if magic != P.IHAVEOPT:
            violation(f"option magic 0x{magic:016x}, expected IHAVEOPT 0x{P.IHAVEOPT:016x}")
            return
        self._options_seen += 1
        self.counters["options"] += 1
        if self._options_seen > self.limits.max_options:
            violation(f"more than {self.limits.max_options} options in one handshake")
            return
        self._option = option
        if length > self.limits.max_option_bytes:
            if option == P.OPT_EXPORT_NAME:
                violation(f"NBD_OPT_EXPORT_NAME with {length} bytes of data "
                          f"(names are at most {P.MAX_STRING})")
                return
            self.state = SKIP_OPTION
            self._skip_left = length
        elif length == 0:
            self._option_data(b"")
        else:
            self.state = OPTION_DATA
            self._need = length

    def _next_option(self) -> None:
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
            self._session.close()
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
            self._session.violation(f"NBD_OPT_EXPORT_NAME asked for unknown export "
                                    f"{raw[:64]!r}; known: {self._exports.names()}")
            return
        reply = P.EXPORT_NAME_REPLY.pack(export.size, transmission_flags(export))
        if not self.no_zeroes:
            reply += bytes(P.EXPORT_NAME_PAD)
        self._send(reply)
        self._session.enter_transmission(export)

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
            self._session.enter_transmission(export)


def _rep_name(reply_type: int) -> str:
    for name, value in vars(P).items():
        if name.startswith("REP_ERR_") and value == reply_type:
            return "NBD_" + name
    return hex(reply_type)
