"""What every ``rcn`` command uses: :class:`CliError` and :func:`table`.

The bottom of ``rcn.cli``: it imports nothing of the package. A request to a
device is :func:`rcn.httpjson.request_json`, below the lab and the bench too.
"""

from __future__ import annotations


class CliError(Exception):
    """Bad usage (``status`` 2) or a refusal (1); ``rcn`` prints the message and exits."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
