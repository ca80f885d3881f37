"""The management server's refusals: a setting that cannot be taken, and why.

Every one names the field that was wrong (``field``; the message names it too) and
carries the HTTP status the REST API answers with (``status``). The store
(:mod:`rcn.mgmt.store`, :mod:`rcn.mgmt.tables`) raises them for a record that is
wrong or stands in the way of another; the settings (:mod:`rcn.mgmt.settings`) for
who may do what and the contract limits.
"""

from __future__ import annotations

__all__ = ["SettingsError", "NotFound", "Conflict", "Forbidden", "Unauthorized",
           "LimitExceeded"]


class SettingsError(ValueError):
    """A setting that cannot be taken; ``field`` names it, and so does the message.
    ``status`` is the HTTP status the REST API answers with."""

    status = 400

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message

    def as_json(self) -> dict:
        return {"error": type(self).__name__, "field": self.field, "message": self.message}


class NotFound(SettingsError, LookupError):
    """The object asked for does not exist -- or is another customer's (never its data).
    A ``LookupError`` too, for callers that only ask "is it there"."""
    status = 404


class Conflict(SettingsError):
    """A duplicate, or a change other records stand in the way of."""
    status = 409


class Forbidden(SettingsError):
    """The caller may not do this at all (a customer asking for operator settings)."""
    status = 403


class Unauthorized(SettingsError):
    """No token, or a token the store does not know."""
    status = 401


class LimitExceeded(SettingsError):
    """A contract limit of 【0056】; the message names the limit and its value."""
    status = 409
