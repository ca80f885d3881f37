"""Fuzz targets of ``tools.fuzz``: every parser and network-facing handler, one row each.

A :class:`Target` names a callable that takes one input (bytes) and either returns a
*feature* (a hashable summary of what the input did: which error, which kind of record,
which counters moved; the built-in engine keeps inputs that show a new one) or raises.
Raising one of the target's ``clean`` exception types is a declared outcome (a
``DecodeError`` from a frame parser); any other exception is a finding. The engine adds
the other two failure kinds: a hang (the input ran longer than the hang limit) and memory
(the tracemalloc peak of one input beyond ``memory_bound(len(data))`` bytes).

Seeds come from the project's builders (``seeds()``); ``fields`` are the field tables the
mutator aims interesting integers at: ``(marker, offset, layout)`` puts ``layout`` at
``offset`` after every occurrence of ``marker`` (``None``: the start of the input).
``fixup`` repairs redundancy (CRCs, complements) in some mutants so they get past the
first check; ``tokens`` are words the mutator splices into text inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

MiB = 1 << 20


class Finding(Exception):
    """Raised by a target for a failure that is not an exception of the code under test
    (a differential target's disagreement, a handler's logged traceback, a 500)."""


@dataclass
class Target:
    name: str
    doc: str
    run: Callable[[bytes], object]
    seeds: Callable[[], Iterable[bytes]]
    clean: tuple[type[BaseException], ...] = ()
    fields: tuple = ()
    fixup: Callable[[bytes, object], bytes] | None = None
    tokens: tuple[bytes, ...] = ()
    memory_bound: Callable[[int], int] = field(default=lambda n: 16 * MiB + 64 * n)
    memory_text: str = "16 MiB + 64 x input"
    max_len: int = 1 << 16
    test_runs: int = 300        # mutations in `make test` (tests/tools/test_fuzz.py)
    parser: bool = False        # a pure parser: the long runs of >= 1,000,000 inputs


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    if target.name in TARGETS:
        raise ValueError(f"fuzz target {target.name} registered twice")
    TARGETS[target.name] = target
    return target


def load() -> dict[str, Target]:
    """Import the target modules (they register themselves); the registry by name."""
    from tools.fuzz_targets import frames, services  # noqa: F401
    return TARGETS
