"""tools/fuzz.py in `make test`: every target's seeds, kept corpus and regression inputs
replayed, and a short seeded mutation run per target, all with no finding beyond the known
ones (``xfail-`` regression inputs: bugs in code another change fixes; they must still
fail, and the test says when one no longer does). Plus the engine's own checks: it tells
crashes, hangs, memory growth and logged tracebacks apart, and a seed repeats a run.

The hang limit here is 10 s, not the command line's 1 s: the suite shares the machine.
"""

from __future__ import annotations

import random
import sys
import tracemalloc

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from datapath.frames import logentry
from tools import fuzz
from tools.fuzz_targets import load
from tools.fuzz_targets.registry import Finding, Target

TARGETS = load()
HANG_SECONDS = 10.0
SEED = 15


class _Base(SynchronousTestCase):
    def setUp(self):
        fuzz.FAILURE_LOG.install()
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10_000))
        self.addCleanup(sys.setrecursionlimit, limit)
        # the targets' own logged tracebacks are judged by the engine, not by trial
        self.addCleanup(self.flushLoggedErrors)


class TargetTests(_Base):
    """One test per target: replay, then a short mutation run."""

    def check_target(self, name: str) -> None:
        target = TARGETS[name]
        wrong = fuzz.replay(target, HANG_SECONDS)
        self.assertEqual(
            [(file, "fails no more: rename it without xfail-" if expected
              else f"{outcome.kind}: {outcome.failure}") for file, outcome, expected in wrong], [])
        known = fuzz.known_signatures(name)
        stats = fuzz.fuzz(target, target.test_runs, SEED, hang_seconds=HANG_SECONDS)
        new = {o.signature: f"{o.kind}: {o.failure}; input {data.hex()}"
               for o, data in stats.findings if o.signature not in known}
        self.assertEqual(new, {}, f"{name}: new findings (python -m tools.fuzz {name} "
                                  f"--runs {target.test_runs} --seed {SEED} saves them)")
        self.assertGreater(stats.inputs, target.test_runs)


def _target_test(name: str):
    def test(self):
        self.check_target(name)
    test.__name__ = f"test_{name.replace('-', '_')}"
    test.__doc__ = f"{name}: corpus and regressions replay, {TARGETS[name].test_runs} mutants"
    return test


for _name in TARGETS:
    setattr(TargetTests, f"test_{_name.replace('-', '_')}", _target_test(_name))


def _toy(run, **kw) -> Target:
    return Target("toy", "a test target", run, lambda: [b"seed"], **kw)


class EngineTests(_Base):
    def test_declared_errors_are_clean_and_others_are_crashes(self):
        def run(data):
            if data == b"bad":
                raise ValueError("declared")
            if data == b"worse":
                raise KeyError("not declared")
            return len(data)
        target = _toy(run, clean=(ValueError,))
        self.assertIsNone(fuzz.run_one(target, b"bad").failure)
        outcome = fuzz.run_one(target, b"worse")
        self.assertEqual(outcome.kind, "crash")
        self.assertIn("KeyError", outcome.failure)
        self.assertEqual(fuzz.run_one(target, b"fine").feature, 4)

    def test_a_loop_is_a_hang(self):
        def run(data):
            while True:
                pass
        outcome = fuzz.run_one(_toy(run), b"x", hang_seconds=0.05)
        self.assertEqual(outcome.kind, "hang")

    def test_an_allocation_over_the_bound_is_a_memory_finding(self):
        target = _toy(lambda data: len(bytearray(1 << 20)), memory_bound=lambda n: 1 << 16)
        outcome = fuzz.run_one(target, b"x")
        self.assertEqual(outcome.kind, "memory")

    def test_a_logged_traceback_is_a_finding(self):
        log = Logger()

        def run(data):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("handler failed")
        outcome = fuzz.run_one(_toy(run), b"x")
        self.assertEqual(outcome.kind, "logged")
        self.assertIn("ZeroDivisionError", outcome.failure)

    def test_a_differential_disagreement_is_a_mismatch(self):
        def run(data):
            raise Finding("kernel 1 != reference 2")
        self.assertEqual(fuzz.run_one(_toy(run), b"x").kind, "mismatch")

    def test_the_same_seed_gives_the_same_mutants(self):
        target = TARGETS["log-entry"]
        corpus = fuzz.seeds(target)
        runs = []
        for _ in range(2):
            mutator = fuzz.Mutator(target, random.Random(7))
            runs.append([mutator.mutate(corpus[i % len(corpus)], corpus) for i in range(50)])
        self.assertEqual(runs[0], runs[1])
        self.assertNotEqual(runs[0], [corpus[i % len(corpus)] for i in range(50)])

    def test_length_fields_are_mutated_at_their_offsets(self):
        target = TARGETS["log-entry"]
        entry = target.seeds()[6]                      # the NAK
        at = logentry.LOG_HEADER.offsets["rio_length"]
        mutator = fuzz.Mutator(target, random.Random(1))
        hits = 0
        for _ in range(300):
            out = bytearray(entry)
            mutator._field(out)
            hits += out[at:at + 4] != entry[at:at + 4]
        self.assertGreater(hits, 10)
