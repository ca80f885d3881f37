"""Readable forms of FC names and addresses."""

from __future__ import annotations

import re

_WWN_TEXT = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){7}$|^[0-9a-fA-F]{16}$")


def format_wwn(wwn: int) -> str:
    """``0x2000002500000001`` -> ``20:00:00:25:00:00:00:01``."""
    return ":".join(f"{b:02x}" for b in wwn.to_bytes(8, "big"))


def parse_wwn(text: str) -> int:
    """A WWN as colon-separated or plain hex (16 digits)."""
    text = text.strip()
    if not _WWN_TEXT.match(text):
        raise ValueError(f"not a WWN: {text!r} (want 8 colon-separated hex bytes)")
    return int(text.replace(":", ""), 16)


def format_port_id(port_id: int) -> str:
    """24-bit N_Port ID as tshark prints it: ``01.02.00``."""
    return ".".join(f"{b:02x}" for b in port_id.to_bytes(3, "big"))
