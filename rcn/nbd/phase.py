"""What both phases of an NBD connection (``Handshake``, ``Transmission``) hold.

A phase is fed by its ``rcn.nbd.session.NbdSession`` (``feed(view, pos, end)``
until the session's ``phase`` is another) and answers through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rcn.nbd.session import NbdSession


class Phase:
    def __init__(self, session: NbdSession, log):
        self._session = session
        self._log = log                 # the session's, so events keep its namespace
        self.limits = session.limits
        self.counters = session.counters
        self.peer = session.peer
        self._send = session.send

    def feed(self, mv: memoryview, pos: int, end: int) -> int:
        raise NotImplementedError
