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
from tools.fuzz_targets.kit import Finding, Target

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
        mutator = fuzz.Mutator(target, random.Random(1))
        hits = {"rio_length": 0, "group_id": 0}          # a length field, a plain one
        for _ in range(1000):
            out = bytearray(entry)
            mutator._field(out)
            for name in hits:
                at = logentry.LOG_HEADER.offsets[name]
                hits[name] += out[at:at + 4] != entry[at:at + 4]
        # length fields first: more often than a field of the same width that is none
        self.assertGreater(hits["rio_length"], 2 * hits["group_id"], hits)
        self.assertGreater(hits["group_id"], 0, hits)


class _Rng:
    """A stand-in for the engine's random.Random: always ``value``."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


class SealTargetTests(_Base):
    """The sealed log transfer targets (issue 17): registered, their seeds reach every
    outcome, their fixups get mutants past the tag, and their checks can fail."""

    def test_registered_with_seeds(self):
        for name in ("hop-open", "e2e-open", "key-file", "key-snapshot", "decode-keys"):
            self.assertIn(name, TARGETS)
            self.assertTrue(fuzz.seeds(TARGETS[name]), name)

    def features(self, name: str) -> set:
        out = set()
        for data in TARGETS[name].seeds():
            outcome = fuzz.run_one(TARGETS[name], data)
            self.assertIsNone(outcome.failure, f"{name}: {outcome.failure}")
            out.update(outcome.feature)
        return out

    def test_hop_seeds_reach_every_outcome(self):
        self.assertEqual({what for _, what in self.features("hop-open")},
                         {"opened", "not_neighbour", "unsealed", "malformed", "bad_tag",
                          "replayed"})

    def test_e2e_seeds_open_and_refuse(self):
        self.assertEqual({what for _, what in self.features("e2e-open")},
                         {"opened", "e2e_unsealed"})

    def test_the_hop_fixup_gets_a_mutated_counter_past_the_tag(self):
        from tools.fuzz_targets import seal
        data = bytearray(seal.hop_seeds()[0])
        data[3 + seal._COUNTER_AT + 7] ^= 0x55            # the counter of the first envelope
        self.assertEqual(seal.run_hop_open(bytes(data)), ((False, "bad_tag"),))
        self.assertEqual(seal.run_hop_open(seal.fix_hop_tags(bytes(data), _Rng(0.5))),
                         ((False, "opened"),))

    def test_the_e2e_fixup_gets_a_mutated_header_past_the_tag(self):
        from tools.fuzz_targets import seal
        data = bytearray(seal.e2e_seeds()[0])
        data[2 + logentry.LOG_HEADER.offsets["target_lun"] + 7] ^= 1
        fixed = seal.fix_log_crcs(bytes(data), _Rng(0.5))
        self.assertEqual(seal.run_e2e_open(fixed), ((logentry.EntryType.WR, "e2e_bad_tag"),))
        self.assertEqual(seal.run_e2e_open(seal.fix_e2e_seals(fixed, _Rng(0.1))),
                         ((logentry.EntryType.WR, "opened"),))

    def test_a_hop_that_opened_a_strangers_datagram_is_a_finding(self):
        from tools.fuzz_targets import seal
        receiver, _ = seal._hops()
        data = seal.hop_seeds()[2]                        # a stranger's copy first
        neighbour, opened = seal._address(seal._NEIGHBOUR), receiver.open
        # a broken hop layer: it takes every sender for the neighbour
        receiver.open = lambda datagram, sender: opened(datagram, neighbour)
        self.addCleanup(delattr, receiver, "open")
        outcome = fuzz.run_one(TARGETS["hop-open"], data)
        self.assertEqual(outcome.kind, "mismatch", outcome.failure)

    def test_key_file_round_trip_and_the_leak_check(self):
        from tools.fuzz_targets import seal
        self.assertEqual(seal.run_key_file(seal.key_file_seeds()[0]), ("ring", 1, 1))
        key = "ab" * 32
        shuffled = f"group 7 1 send {key}\n".encode()      # the key in the last column
        self.assertEqual(seal.run_key_file(shuffled)[0], "error")
        self.assertEqual(seal.run_key_file(b"link 1\n")[0], "error")
        self.assert_an_echoed_key_is_found("parse", lambda text: text.split()[-1],
                                           seal.run_key_file, shuffled)

    def assert_an_echoed_key_is_found(self, reader: str, key_of, run, data: bytes) -> None:
        """A ``KeyRing`` reader that echoes a key of its input in its error: ``run`` on
        ``data`` finds it."""
        from rcn.logxfer.keys import KeyFileError, KeyRing

        def echoes(given, where="keys"):
            raise KeyFileError(f"{where} line 1: {key_of(given)!r} is wrong")
        self.patch(KeyRing, reader, echoes)
        with self.assertRaises(Finding):
            run(data)

    def test_key_snapshot_seeds_read_and_refuse_and_the_checks_can_fail(self):
        from tools.fuzz_targets import sealkeys
        outcomes = {sealkeys.run_key_snapshot(data)[0]
                    for data in sealkeys.key_snapshot_seeds()}
        self.assertEqual(outcomes, {"ring", "error"})
        self.assertEqual(sealkeys.run_key_snapshot(b"[1"), ("json",))
        self.assert_an_echoed_key_is_found("from_snapshot", lambda doc: doc["link"][0]["key"],
                                           sealkeys.run_key_snapshot,
                                           sealkeys.key_snapshot_seeds()[0])

    def test_key_snapshot_a_ring_the_key_file_cannot_hold_is_a_finding(self):
        from rcn.logxfer.keys import KeyRing
        from tools.fuzz_targets import sealkeys
        self.patch(KeyRing, "dump", lambda ring: "link 1\n")
        with self.assertRaises(Finding):
            sealkeys.run_key_snapshot(sealkeys.key_snapshot_seeds()[0])

    def test_decode_keys_seeds_check_tags_and_open_bodies(self):
        features = set()
        for data in TARGETS["decode-keys"].seeds():
            outcome = fuzz.run_one(TARGETS["decode-keys"], data)
            self.assertIsNone(outcome.failure, outcome.failure)
            features.update(outcome.feature)
        self.assertLessEqual({"hop: hop tag good", "seal: opened", "hop.tag", "log_nak",
                              "seal: sealed end to end"}, features)

    def test_decode_keys_key_material_in_the_output_is_a_finding(self):
        from rcn.decode import sealed
        from tools.fuzz_targets import sealkeys
        data = sealkeys.decode_keys_seeds()[0]
        # an opener that shows the key it opened with
        self.patch(sealed.Keys, "open_body", lambda self, header, body, out, at: out.update(
            seal=f"opened with {sealkeys._GROUP.hex()}"))
        with self.assertRaises(Finding):
            sealkeys.run_decode_keys(data)

    def test_the_decode_keys_fixup_gets_a_mutated_envelope_past_the_tag(self):
        from tools.fuzz_targets import sealkeys
        data = bytearray(sealkeys.decode_keys_seeds()[0])
        at = data.find(b"RCNH") + 24 + logentry.LOG_HEADER.offsets["ttl"]
        data[at] ^= 1                                    # the inner entry's ttl: not sealed e2e
        broken = sealkeys.run_decode_keys(bytes(data))
        self.assertIn("hop.tag", broken)
        fixed = sealkeys.run_decode_keys(sealkeys.fix_decode_keys(bytes(data), _Rng(0.5)))
        self.assertNotIn("hop.tag", fixed)
        self.assertIn("seal: opened", fixed)
