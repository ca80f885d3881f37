"""The WAN emulator's SCPI-style command set, as a plain object over the emulator.

:class:`ScpiConsole` takes one line at a time (:meth:`ScpiConsole.handle`) and
returns the answer to its queries (``None`` when it held none). It drives a
:class:`~rcn.wanem.link.WanEmulator`-like object: ``links`` (numbered 1..n here),
each with ``configure(**settings)``, ``setting(name)``, ``initial_settings()``,
``up``, ``set_state(up)``, ``stats(direction)``; and ``reset()`` for all. A setting
applies to both directions of a link.

Commands (upper case: the short form; either form, any case)
    ==============================  =================================================
    ``*IDN?``                        the identification string
    ``*RST``                         every link back to the settings it was built with,
                                     UP, random generators reseeded; counters kept
    ``*CLS``                         empties the error queue
    ``LINK<n>:DELay <ms>``           0..10000 ms (minimum one-way delay)
    ``LINK<n>:JITter <ms>``          0..10000 ms (uniform extra delay 0..jitter)
    ``LINK<n>:LOSS <percent>``       0..100
    ``LINK<n>:DUPlicate <percent>``  0..100
    ``LINK<n>:REORder <percent>``    0..100
    ``LINK<n>:RATE <bits/s>``        0 (unlimited) or 8..100e9; suffix K, M or G
                                     (x 1e3, 1e6, 1e9: ``RATE 10M``); the link counts
                                     bytes, so the value is divided by 8
    ``LINK<n>:QUEue <bytes>``        the rate limiter's queue, 1..2^30 bytes
    ``LINK<n>:STATE UP|DOWN``        also ON|OFF|1|0; STATE has no short form, since
                                     STAT is the short form of STATistics
    ``LINK<n>:STATistics? [AB|BA]``  counters; without a parameter both directions summed
    ``SYSTem:ERRor[:NEXT]?``         the oldest error, ``0,"No error"`` when none
    ``SYSTem:ERRor:COUNt?``          how many errors wait
    ==============================  =================================================

Every setting has its query (the header followed by ``?``), answered in the
setting's unit: ``LINK1:DEL?`` -> ``20``, ``LINK1:RATE?`` -> ``10000000``,
``LINK1:STATE?`` -> ``UP``. A numeric setting also takes ``MINimum``, ``MAXimum``
or ``DEFault`` (the value ``*RST`` restores); ``RATE MIN`` is 0, that is unlimited.
``LINK`` without a number is ``LINK1`` (the SCPI default suffix).

``STAT?`` answers one line of ten comma-separated integers::

    in,out,down,loss,queue_full,wire_full,duplicated,reordered,queue_packets,queue_bytes

datagrams in, datagrams out (a duplicate counts twice), drops by cause (link DOWN,
random loss, rate limiter queue full, wire over its byte bound), datagrams
duplicated, datagrams reordered, and what waits in the rate limiter's queue now.

Syntax
    Several commands in one line, separated by ``;``; the answers to the line's
    queries come back in one line, separated by ``;``. As in SCPI, a header that
    does not start at the root (no leading ``:``) may continue the previous
    command's path: ``LINK2:DEL 20;JIT 5`` sets link 2's jitter. A header is first
    tried from the root, so ``LINK1:DEL 20;LINK2:DEL 20`` also works. Each command
    stands alone: one that fails does not stop the rest of the line.

Errors
    Bad input never raises (:meth:`ScpiConsole.handle` raises nothing for any
    string, the session stays up): it puts an error on a queue of at most
    :data:`ERROR_QUEUE_LIMIT` (when full, the newest is replaced with
    ``-350,"Queue overflow"``), read with ``SYST:ERR?``. Numbers are SCPI's:
    ``-104`` data type error (text where a number belongs), ``-108`` parameter not
    allowed (too many, or one after a query that takes none), ``-109`` missing
    parameter, ``-113`` undefined header, ``-114`` header suffix out of range (no
    such link), ``-222`` data out of range, ``-224`` illegal parameter value (a
    word that is not one of the choices), ``-223`` too much data (a line over
    :data:`MAX_LINE` characters). A number too large for a double (``1e400``, 400
    digits) is ``-222`` like any other out of its range; ``INF`` and ``NAN`` are
    not numbers here (``-104``). After the standard text comes, after ``;``,
    what was wrong: ``-222,"Data out of range;LINK1:DELAY 20000 ms is outside 0..10000"``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

from rcn.wanem.link import MIN_RATE, RANGES

ERROR_QUEUE_LIMIT = 16
MAX_LINE = 1024
_DETAIL_MAX = 80


class ScpiError(Exception):
    """One queued error: the SCPI number and text, and what was wrong."""

    def __init__(self, code: int, text: str, detail: str = ""):
        super().__init__(code, text, detail)
        self.code = code
        self.text = text
        self.detail = detail

    def render(self) -> str:
        detail = self.detail.replace('"', "'")
        if len(detail) > _DETAIL_MAX:
            detail = detail[:_DETAIL_MAX - 3] + "..."
        text = f"{self.text};{detail}" if detail else self.text
        return f'{self.code},"{text}"'


def _error(kind: str, detail: str = "") -> ScpiError:
    code, text = ERRORS[kind]
    return ScpiError(code, text, detail)


ERRORS = {
    "no_error": (0, "No error"),
    "data_type": (-104, "Data type error"),
    "parameter_not_allowed": (-108, "Parameter not allowed"),
    "missing_parameter": (-109, "Missing parameter"),
    "undefined_header": (-113, "Undefined header"),
    "suffix_out_of_range": (-114, "Header suffix out of range"),
    "out_of_range": (-222, "Data out of range"),
    "too_much_data": (-223, "Too much data"),
    "illegal_value": (-224, "Illegal parameter value"),
    "queue_overflow": (-350, "Queue overflow"),
}


class Mnemonic:
    """A header word written SCPI-style: ``"DELay"`` takes ``DEL`` or ``DELAY``."""

    def __init__(self, spelled: str, children=(), *, numbered: bool = False, command=None):
        self.long = spelled.upper()
        self.short = "".join(c for c in spelled if c.isupper() or c.isdigit())
        self.children = list(children)
        self.numbered = numbered
        self.command = command       # the leaf's name, for the console's dispatch

    def matches(self, word: str) -> bool:
        return word in (self.short, self.long)


@dataclass(frozen=True)
class _Numeric:
    """A link setting in console units: value_in_console_units * scale = link units."""
    setting: str
    unit: str
    scale: float


_NUMERIC = {
    "DELAY": _Numeric("delay", "ms", 1e-3),
    "JITTER": _Numeric("jitter", "ms", 1e-3),
    "LOSS": _Numeric("loss", "%", 1e-2),
    "DUPLICATE": _Numeric("duplicate", "%", 1e-2),
    "REORDER": _Numeric("reorder", "%", 1e-2),
    "RATE": _Numeric("rate", "bits/s", 1 / 8),
    "QUEUE": _Numeric("queue_limit", "bytes", 1),
}

_TREE = Mnemonic("", [
    Mnemonic("LINK", [
        Mnemonic("DELay", command="DELAY"),
        Mnemonic("JITter", command="JITTER"),
        Mnemonic("LOSS", command="LOSS"),
        Mnemonic("DUPlicate", command="DUPLICATE"),
        Mnemonic("REORder", command="REORDER"),
        Mnemonic("RATE", command="RATE"),
        Mnemonic("QUEue", command="QUEUE"),
        Mnemonic("STATE", command="STATE"),
        Mnemonic("STATistics", command="STATISTICS"),
    ], numbered=True),
    Mnemonic("SYSTem", [
        Mnemonic("ERRor", [
            Mnemonic("NEXT", command="ERROR"),
            Mnemonic("COUNt", command="ERROR_COUNT"),
        ], command="ERROR"),
    ]),
])

_WORD = re.compile(r"([A-Z]+)([0-9]*)\Z")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?\Z")
_RATE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?)\s*([KMG]?)(?:BPS)?\Z")
_MULTIPLIERS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
_STATES = {"UP": True, "ON": True, "1": True, "DOWN": False, "OFF": False, "0": False}
_DIRECTIONS = {"AB": "ab", "BA": "ba"}
_MIN, _MAX, _DEF = Mnemonic("MINimum"), Mnemonic("MAXimum"), Mnemonic("DEFault")


def _format(value: float) -> str:
    """A number as the console prints it: no exponent, no trailing ``.0``."""
    text = f"{value:.12g}"
    if "e" in text:
        text = f"{value:.0f}"
    return "0" if text == "-0" else text


class ScpiConsole:
    """SCPI-style control of a WAN emulator; see the module docstring."""

    def __init__(self, emulator, idn: str = "RCN,rcn-wanem,0,1.0"):
        self.emulator = emulator
        self.idn = idn
        self.errors: deque[ScpiError] = deque()
        self._path: list[tuple[Mnemonic, int | None]] = []   # the previous header's parent

    # -- the error queue --------------------------------------------------------------

    def push_error(self, error: ScpiError) -> None:
        if len(self.errors) >= ERROR_QUEUE_LIMIT:
            self.errors[-1] = _error("queue_overflow")
        else:
            self.errors.append(error)

    def next_error(self) -> str:
        return self.errors.popleft().render() if self.errors else _error("no_error").render()

    # -- lines and commands -----------------------------------------------------------

    def handle(self, line: str) -> str | None:
        """Run one line; the answers of its queries joined by ``;``, or None."""
        if len(line) > MAX_LINE:
            self.push_error(_error("too_much_data", f"line of {len(line)} characters, "
                                                    f"at most {MAX_LINE}"))
            return None
        answers = []
        for command in line.strip().split(";"):
            if not command.strip():
                continue
            try:
                answer = self._command(command.strip())
            except ScpiError as exc:
                self.push_error(exc)
                continue
            if answer is not None:
                answers.append(answer)
        return ";".join(answers) if answers else None

    def _command(self, command: str) -> str | None:
        header, *rest = command.split(None, 1)
        header, rest = header.upper(), rest[0].strip() if rest else ""
        params = [p.strip().upper() for p in rest.split(",")] if rest else []
        if header.startswith("*"):
            return self._common(header, params)
        query = header.endswith("?")
        if query:
            header = header[:-1]
        if "?" in header or not header.strip(":"):
            raise _error("undefined_header", command)
        node, suffix = self._resolve(header, command)
        return self._run(node.command, suffix, query, params, command)

    def _common(self, header: str, params: list[str]) -> str | None:
        if header not in ("*IDN?", "*RST", "*CLS"):
            raise _error("undefined_header", header)
        if params:
            raise _error("parameter_not_allowed", f"{header} takes no parameter")
        if header == "*IDN?":
            return self.idn
        if header == "*RST":
            self.emulator.reset()
        else:
            self.errors.clear()
        return None

    def _resolve(self, header: str, command: str) -> tuple[Mnemonic, int | None]:
        words = header.split(":")
        if header.startswith(":"):
            found = self._walk([(_TREE, None)], words[1:])
        else:
            found = self._walk([(_TREE, None)], words)
            if found is None and self._path:
                found = self._walk(list(self._path), words)
        if found is None:
            raise _error("undefined_header", command)
        path = found
        node, suffix = path[-1]
        if node.command is None:
            raise _error("undefined_header", command)
        self._path = path[:-1]
        link = next((s for n, s in path if n.numbered), None)
        return node, link

    @staticmethod
    def _walk(start, words):
        """The path of (mnemonic, suffix) from ``start`` along ``words``, or None."""
        path = list(start)
        for word in words:
            match = _WORD.match(word)
            if match is None:
                return None
            letters, digits = match.groups()
            node = next((c for c in path[-1][0].children if c.matches(letters)), None)
            if node is None or (digits and not node.numbered):
                return None
            path.append((node, int(digits) if digits else (1 if node.numbered else None)))
        return path[1:] if path[0][0] is _TREE else path

    def _link(self, number: int):
        links = self.emulator.links
        if not 1 <= number <= len(links):
            raise _error("suffix_out_of_range",
                         f"LINK{number}: links are 1..{len(links)}")
        return links[number - 1]

    def _run(self, name: str, number: int | None, query: bool, params: list[str],
             command: str) -> str | None:
        if name in ("ERROR", "ERROR_COUNT"):
            if not query:
                raise _error("undefined_header", f"{command} (a query: add ?)")
            if params:
                raise _error("parameter_not_allowed", f"{command} takes no parameter")
            return self.next_error() if name == "ERROR" else str(len(self.errors))
        link = self._link(number)
        where = f"LINK{number}:{name}"
        if name == "STATISTICS":
            if not query:
                raise _error("undefined_header", f"{command} (a query: add ?)")
            if len(params) > 1:
                raise _error("parameter_not_allowed", f"{where}? takes AB or BA at most")
            direction = "both"
            if params:
                if params[0] not in _DIRECTIONS:
                    raise _error("illegal_value", f"{where}? {params[0]}: expected AB or BA")
                direction = _DIRECTIONS[params[0]]
            s = link.stats(direction)
            return ",".join(str(v) for v in (
                s.packets_in, s.packets_out, s.down, s.loss, s.queue_full, s.wire_full,
                s.duplicated, s.reordered, s.queue_packets, s.queue_bytes))
        if query:
            if params:
                raise _error("parameter_not_allowed", f"{where}? takes no parameter")
            if name == "STATE":
                return "UP" if link.up else "DOWN"
            numeric = _NUMERIC[name]
            return _format(link.setting(numeric.setting) / numeric.scale)
        if not params or not params[0]:
            raise _error("missing_parameter", f"{where} needs a value")
        if len(params) > 1:
            raise _error("parameter_not_allowed", f"{where} takes one value")
        value = params[0]
        if name == "STATE":
            if value not in _STATES:
                raise _error("illegal_value", f"{where} {value}: expected UP or DOWN")
            link.set_state(_STATES[value])
            return None
        numeric = _NUMERIC[name]
        setting = self._number(numeric, value, where, link)
        try:
            link.configure(**{numeric.setting: setting})
        except (ValueError, TypeError):
            raise _error("out_of_range", self._range_text(numeric, value, where)) from None
        return None

    def _number(self, numeric: _Numeric, value: str, where: str, link) -> float:
        """The parameter in the link's units."""
        lo, hi, _ = RANGES[numeric.setting]
        if _MIN.matches(value):
            return lo
        if _MAX.matches(value):
            return hi
        if _DEF.matches(value):
            return link.initial_settings()[numeric.setting]
        if numeric.setting == "rate":
            match = _RATE.match(value)
            if match is None:
                raise _error("data_type", f"{where} {value}: expected a number of bits/s, "
                                          f"with K, M or G")
            number = float(match.group(1)) * _MULTIPLIERS[match.group(2)]
        else:
            if _NUMBER.match(value) is None:
                raise _error("data_type", f"{where} {value}: expected a number "
                                          f"({numeric.unit})")
            number = float(value)
        if not math.isfinite(number):     # 1e400 or 400 digits: float() gives inf
            raise _error("out_of_range", self._range_text(numeric, value, where))
        scaled = number * numeric.scale
        if numeric.setting == "queue_limit":
            if number != int(number):
                raise _error("data_type", f"{where} {value}: expected a whole number of bytes")
            return int(number)
        # console units are rounded, so 100 % is exactly 1.0 and 10000 ms exactly 10 s
        return float(f"{scaled:.15g}")

    @staticmethod
    def _range_text(numeric: _Numeric, value: str, where: str) -> str:
        lo, hi, _ = RANGES[numeric.setting]
        if numeric.setting == "rate":
            return (f"{where} {value} is outside 0 (unlimited) or "
                    f"{_format(MIN_RATE * 8)}..{_format(hi * 8)} bits/s")
        return (f"{where} {value} {numeric.unit} is outside "
                f"{_format(lo / numeric.scale)}..{_format(hi / numeric.scale)}")
