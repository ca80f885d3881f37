"""One JSON request over HTTP, for the command line, the lab and the bench.

Below all three (``rcn.cli`` -> ``rcn.lab`` -> here): a request that fails raises
:class:`RequestError` with the exit status an operator's command returns for it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class RequestError(Exception):
    """Why a request failed; ``status`` 1: the server answered with an error (its message),
    2: it could not be reached."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def request_json(url: str, timeout: float, method: str = "GET", body: dict | None = None,
                 token: str | None = None) -> dict:
    """One JSON request; ``RequestError`` with the server's message (status 1) or why it could
    not be reached (status 2)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = _json_object(response)
    except urllib.error.HTTPError as exc:
        reason = (_json_object(exc) or {}).get("error", exc.reason)
        raise RequestError(f"{reason} (HTTP {exc.code} from {method} {url})", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RequestError(f"cannot reach {url}: {reason}", 2) from None
    if answer is None:
        raise RequestError(f"{method} {url}: the answer is not a JSON object", 1)
    return answer


def _json_object(response) -> dict | None:
    """The body as a JSON object; None when it is not one (HTML, a list, garbage)."""
    try:
        obj = json.load(response)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
