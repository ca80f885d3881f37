"""What every daemon's twistd tap module shares: ``--config FILE.toml``, the service, and
the service that opens the daemon's files at start.

A role's tap module subclasses :class:`ConfigOptions` (naming its ``load_config``
and its ``longdesc``) and makes its service with :func:`service_from`.

twistd calls ``makeService`` before it applies ``--umask`` and before it sheds privileges
(``--uid``/``--gid``): it then runs ``privilegedStartService`` (listening sockets, so a
privileged port can still be had), switches user, and only then ``startService``. So a
role's ``make_service`` builds its objects and sockets' factories without touching the
disk, and its first child is an :class:`OpenAtStart` that creates and opens the data
directory and files in ``startService``: they get the daemon's umask and belong to the
user it runs as.
"""

from __future__ import annotations

import grp
import os
import pwd

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from rcn.config import ConfigError
from rcn.logxfer.keys import KeyFileError

_log = Logger()


class ConfigOptions(usage.Options):
    """``--config FILE.toml``, required; a file that cannot be used is a UsageError naming
    the file and key (what ``load_config`` says)."""

    synopsis = "--config FILE.toml"
    optParameters = [["config", "c", None, "configuration file (TOML)"]]

    @staticmethod
    def load_config(path: str):
        raise NotImplementedError

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE.toml is required")
        try:
            self["parsed"] = self.load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def service_from(options, make_service):
    """``make_service(config, reactor)``'s top service; the daemon's entry point picks the
    reactor, so it is imported here and nowhere in library code."""
    from twisted.internet import reactor
    try:
        top, _ = make_service(options["parsed"], reactor)
    except KeyFileError as exc:
        raise usage.UsageError(str(exc)) from None
    return top


class StartError(Exception):
    """A daemon could not open its files at start; the message says which and as whom.

    twistd stops with it: ``-n`` prints it (last line of the traceback) and exits 1; a
    daemonising twistd reports its start to the shell that ran it, and exits 1."""


def running_as() -> str:
    """``uid 65534 (nobody), gid 65534 (nogroup)``: who this process is now."""
    def name(lookup, number):
        try:
            return f" ({lookup(number)[0]})"
        except KeyError:
            return ""
    uid, gid = os.geteuid(), os.getegid()
    return f"uid {uid}{name(pwd.getpwuid, uid)}, gid {gid}{name(grp.getgrgid, gid)}"


class OpenAtStart(service.Service):
    """Calls ``open()`` in ``startService`` and ``close()`` (may return a Deferred) in
    ``stopService``. Make it the daemon's first child, so the other services start on
    opened files. A failure to open stops the start with :class:`StartError` naming
    ``what``, the cause (the path is in it) and the user the daemon runs as."""

    def __init__(self, what: str, open, close=None):
        self.what, self._open, self._close = what, open, close

    def startService(self):
        try:
            self._open()
        except Exception as exc:
            message = (f"{self.what}: cannot open its files: {exc} (running as {running_as()}"
                       f": its data directory and files must be writable by that user; "
                       f"twistd --uid/--gid choose it)")
            _log.critical("{message}", message=message)
            raise StartError(message) from exc
        super().startService()

    def stopService(self):
        super().stopService()
        return self._close() if self._close is not None else None
