"""The fuzz target registry: :class:`Target`, :class:`Finding` and ``register``, which the
target modules call at import (see the package docstring for what a target is)."""

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
