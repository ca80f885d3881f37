"""The WAN emulator as an appliance: the driver the bench and the lab control it with.

One class per appliance kind (:data:`DRIVERS`), apart from its transport.

A driver talks to anything with pyserial's port interface (``write``,
``readline``, ``reset_input_buffer``, ``close``): :func:`open_port` opens one
from a URL with ``serial.serial_for_url`` -- a device (``/dev/ttyUSB0``), a pty
path, ``socket://HOST:PORT``, ``rfc2217://HOST:PORT``, ``spy://...`` for a hex
trace of the exchange, ``loop://``. Tests give a scripted port instead.

:class:`WanemDriver` speaks ``rcn-wanem``'s SCPI: every setting is written and
then checked with ``SYST:ERR?``, so a refused value raises
:class:`ApplianceError` with the appliance's own error (``-222,"Data out of
range;..."``); a query that gets no line within the port's timeout raises it too.
"""

from __future__ import annotations

from dataclasses import dataclass

STAT_FIELDS = ("packets_in", "packets_out", "down", "loss", "queue_full", "wire_full",
               "duplicated", "reordered", "queue_packets", "queue_bytes")


class ApplianceError(Exception):
    """The appliance refused a command, or did not answer."""


def open_port(url: str, speed: int = 115200, timeout: float = 2.0):
    """A pyserial port for ``url`` (see the module doc)."""
    import serial
    return serial.serial_for_url(url, baudrate=speed, timeout=timeout)


@dataclass(frozen=True)
class LinkStats:
    packets_in: int
    packets_out: int
    down: int
    loss: int
    queue_full: int
    wire_full: int
    duplicated: int
    reordered: int
    queue_packets: int
    queue_bytes: int

    @property
    def dropped(self) -> int:
        return self.down + self.loss + self.queue_full + self.wire_full


class WanemDriver:
    """The WAN emulator appliance (``rcn-wanem``) over a port."""

    kind = "wanem"

    def __init__(self, port):
        self.port = port

    # -- the exchange --------------------------------------------------------------------
    def _write(self, command: str) -> None:
        self.port.write(command.encode("ascii") + b"\n")

    def query(self, command: str) -> str:
        self._write(command)
        line = self.port.readline()
        if not line.endswith(b"\n"):
            raise ApplianceError(f"{command}: no answer from the appliance")
        return line.decode("ascii", "replace").strip()

    def command(self, command: str) -> None:
        """Send a setting and check the error queue; ``ApplianceError`` on a refusal."""
        self._write(command)
        error = self.query("SYST:ERR?")
        if not error.startswith("0,"):
            raise ApplianceError(f"{command}: the appliance answered {error}")

    # -- what a scenario uses ----------------------------------------------------------------
    def identify(self) -> str:
        return self.query("*IDN?")

    def reset(self) -> None:
        self.command("*RST")

    def set_delay(self, link: int, ms: float) -> None:
        self.command(f"LINK{link}:DELAY {ms:g}")

    def set_jitter(self, link: int, ms: float) -> None:
        self.command(f"LINK{link}:JITTER {ms:g}")

    def set_loss(self, link: int, percent: float) -> None:
        self.command(f"LINK{link}:LOSS {percent:g}")

    def set_duplicate(self, link: int, percent: float) -> None:
        self.command(f"LINK{link}:DUP {percent:g}")

    def set_reorder(self, link: int, percent: float) -> None:
        self.command(f"LINK{link}:REORDER {percent:g}")

    def set_rate(self, link: int, bits_per_second: float) -> None:
        self.command(f"LINK{link}:RATE {bits_per_second:g}")

    def set_up(self, link: int, up: bool) -> None:
        self.command(f"LINK{link}:STATE {'UP' if up else 'DOWN'}")

    def is_up(self, link: int) -> bool:
        return self.query(f"LINK{link}:STATE?") == "UP"

    def delay(self, link: int) -> float:
        return float(self.query(f"LINK{link}:DELAY?"))

    def stats(self, link: int) -> LinkStats:
        answer = self.query(f"LINK{link}:STAT?")
        values = answer.split(",")
        if len(values) != len(STAT_FIELDS) or not all(v.isdigit() for v in values):
            raise ApplianceError(f"LINK{link}:STAT?: unexpected answer {answer!r}")
        return LinkStats(*map(int, values))

    def close(self) -> None:
        self.port.close()


DRIVERS = {"wanem": WanemDriver}
