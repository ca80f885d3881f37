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

from tools.fuzz_targets.kit import TARGETS, Target


def load() -> dict[str, Target]:
    """Import the target modules (they register themselves); the registry by name."""
    from tools.fuzz_targets import frames, seal, sealkeys, services  # noqa: F401
    return TARGETS
