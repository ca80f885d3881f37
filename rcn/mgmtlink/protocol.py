"""The management channel's protocol base (DESIGN.md 3.4, 5.6): AMP that bounds every box
and answers or drops bad input instead of dropping the connection.

:class:`MgmtAMP` is what both ends speak (the server's ``ServerProtocol`` in
:mod:`rcn.mgmt.distribution`, the device's ``DeviceProtocol`` in
:mod:`rcn.mgmtlink.client`); the commands are :mod:`rcn.mgmtlink.commands`. JSON
that does not parse is counted and answered with ``BadJSON``, and arguments that
do not parse (a missing key, a number that is not one) are answered with
``BadArguments`` instead of AMP's default, which drops the connection. Boxes that
are not AMP (an answer nobody asked for, an empty box, a command name that is not
ASCII) are counted and dropped, the connection kept: :class:`MgmtAMP` has the
table. The server's count is ``bad_messages``
(``rcn_mgmt_amp_bad_messages_total`` in ``/metrics``).
"""

from __future__ import annotations

from twisted.internet.defer import fail
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.protocols import amp

from rcn.mgmtlink.commands import MAX_DOCUMENT

__all__ = ["MAX_BOX", "MgmtAMP"]

#: the most bytes of keys and values one box may hold: a document in 65535-byte chunks
#: and the other arguments; a larger box closes the connection (MgmtAMP)
MAX_BOX = MAX_DOCUMENT + (1 << 20)


def _show(value: bytes, limit: int = 40) -> str:
    """``value`` for a log line: printable, and cut at ``limit`` bytes."""
    text = repr(value[:limit])
    return text + f"... ({len(value)} bytes)" if len(value) > limit else text


class MgmtAMP(amp.AMP):
    """AMP that answers or drops every bad box instead of dropping the connection with
    a traceback, which is Twisted's default (``BoxDispatcher.ampBoxReceived`` raises
    ``KeyError``/``NoEmptyBoxes`` out of ``dataReceived``; ``SimpleStringLocator`` raises
    ``UnicodeDecodeError`` for a non-ASCII ``_command``; a failed command without
    ``_ask`` goes to ``unhandledError``, which closes the connection).

    AMP answers a box only when it carries ``_ask``, and never answers an answer; a box
    is self-delimiting, so after any bad box the stream is still in step. Hence, each
    bad box is counted and logged once by :meth:`bad_message` (its reason in the line)
    and the connection stays up:

    ==========================================  ==========================================
    box                                         outcome
    ==========================================  ==========================================
    ``_command`` + ``_ask``, arguments that     answered ``BAD_ARGUMENTS``
    do not parse
    ``_command`` unknown, not ASCII, or         answered ``UNHANDLED`` (Twisted's answer
    ``StartTLS`` (TLS is the endpoint's job)    to an unknown command) if it has ``_ask``
    ``_command`` without ``_ask`` that fails    dropped (nothing to answer)
    ``_answer``/``_error`` with a tag no        dropped (a late or forged answer)
    request of ours waits for
    ``_error`` without ``_error_code`` or       the waiting request fails with
    ``_error_description``                      ``UNKNOWN`` and what was there
    none of ``_command``/``_answer``/           dropped; answered ``BAD_BOX`` if it has
    ``_error`` (an empty box, say)              ``_ask``
    ==========================================  ==========================================

    A responder that fails with an error its command does not declare is a bug of
    ours: logged with its traceback and answered ``SERVER_ERROR`` (:class:`ServerFailed`),
    connection kept. Two things close the connection, each counted and logged: a box
    over :data:`MAX_BOX` bytes (it cannot be held to find its end) and a key over 255
    bytes (AMP's framing is broken).

    For fuzzers: ``dataReceived`` raises nothing for any bytes; the clean outcomes are an
    error answer, a counted drop (``bad_message``) and the clean close above; a
    ``Logger.failure`` is a finding.
    """

    _log = Logger()
    _box_bytes = 0

    # -- framing: bound the box ---------------------------------------------------------
    def proto_init(self, string):
        self._box_bytes = 0
        return super().proto_init(string)

    def proto_key(self, string):
        self._box_bytes += len(string)
        return super().proto_key(string)

    def proto_value(self, string):
        self._box_bytes += len(string)
        if self._box_bytes > MAX_BOX:
            self.bad_message(f"a box of more than {MAX_BOX} bytes (key "
                             f"{_show(self._currentKey)}); closing the connection")
            self._currentBox = None
            return "done"              # StatefulStringProtocol closes the connection
        return super().proto_value(string)

    def proto_done(self, string):
        return "done"                  # what was already read after the close

    def lengthLimitExceeded(self, length):
        self.bad_message(f"an AMP key of {length} bytes (at most 255); closing the "
                         f"connection")
        super().lengthLimitExceeded(length)

    # -- dispatch -----------------------------------------------------------------------
    def ampBoxReceived(self, box):
        if amp.ANSWER in box or amp.ERROR in box:
            self._answer_received(box)
        elif amp.COMMAND not in box:
            keys = ", ".join(_show(k, 20) for k in sorted(box)[:8]) or "no keys"
            self.bad_message(f"a box with no _command, _answer or _error ({keys}); dropped")
            if amp.ASK in box:
                self._send_error(box[amp.ASK], b"BAD_BOX",
                                 "a box with _ask needs a _command")
        elif amp.ASK not in box:
            # Nothing to answer: a failure is dropped here, not in unhandledError.
            self.dispatchCommand(box).addErrback(self._unanswered, box[amp.COMMAND])
        else:
            super().ampBoxReceived(box)

    def _answer_received(self, box):
        key = amp.ANSWER if amp.ANSWER in box else amp.ERROR
        tag = box[key]
        if tag not in (self._outstandingRequests or {}):
            self.bad_message(f"{key.decode()} {_show(tag)}: no request of ours has this "
                             f"tag (late or forged); dropped")
            return
        if key == amp.ERROR and not (amp.ERROR_CODE in box and amp.ERROR_DESCRIPTION in box):
            self.bad_message(f"_error {_show(tag)} without _error_code or "
                             f"_error_description; the request fails with UNKNOWN")
            box = amp.AmpBox(box)
            box[amp.ERROR_CODE] = amp.UNKNOWN_ERROR_CODE
            box[amp.ERROR_DESCRIPTION] = (b"malformed error answer: "
                                          + box.get(amp.ERROR_DESCRIPTION, b"")[:1000])
        super().ampBoxReceived(box)

    def _unanswered(self, failure, name: bytes) -> None:
        if failure.check(amp.RemoteAmpError):
            # Counted where it was found (bad arguments, unknown command) or answered
            # by the responder's own refusal; there is no _ask to carry it back.
            self._log.info("management channel from {peer}: {command} without _ask "
                           "failed: {error}", peer=self.peer(), command=_show(name),
                           error=failure.getErrorMessage())
        else:
            self._log.failure("command {command} from {peer}", failure,
                              command=_show(name), peer=self.peer())

    def _send_error(self, tag: bytes, code: bytes, description: str) -> None:
        answer = amp.AmpBox({amp.ERROR: tag, amp.ERROR_CODE: code,
                             amp.ERROR_DESCRIPTION: description.encode()})
        try:
            self.sendBox(answer)
        except (amp.ProtocolSwitched, ConnectionLost):
            pass

    def locateResponder(self, name):
        # Declared commands only: no StartTLS (TLS is the endpoint's), no amp_* methods.
        responder = (None if name == amp.StartTLS.commandName
                     else amp.CommandLocator.locateResponder(self, name))
        if responder is None:
            self.bad_message(f"unknown command {_show(name)}")
            return None                # AMP answers an _ask with UNHANDLED
        command = name.decode("ascii")

        def guarded(box):
            # The responder itself runs inside maybeDeferred: whatever raises here is
            # the parsing of the box's arguments.
            try:
                d = responder(box)
            except Exception as e:
                what = f"{command}: bad arguments: {e}"
                self.bad_message(what)
                return fail(amp.RemoteAmpError(b"BAD_ARGUMENTS", what, False))
            return d.addErrback(self._undeclared, command)
        return guarded

    def _undeclared(self, failure, command: str):
        if failure.check(amp.RemoteAmpError):
            return failure             # a declared error, already in AMP's form
        self._log.failure("{command} from {peer} failed", failure, command=command,
                          peer=self.peer())
        raise amp.RemoteAmpError(b"SERVER_ERROR", f"{command}: an internal error at the "
                                 f"receiver; see its log", False)

    def bad_message(self, what: str) -> None:
        self._log.warn("management channel from {peer}: {what}", peer=self.peer(), what=what)

    def peer(self) -> str:
        if self.transport is None:
            return "?"
        addr = self.transport.getPeer()
        host, port = getattr(addr, "host", None), getattr(addr, "port", None)
        return f"{host}:{port}" if host is not None else str(addr)
