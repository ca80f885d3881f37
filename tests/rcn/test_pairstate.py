"""The shared pair state machine: every (state, event) pair is allowed or refused as the
table of docs/pairs.md says, and refusals name the state on both sides of the wire."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from rcn import pairstate
from rcn.pairstate import Event, PairState, PairStateError, explain, next_state
from rcn.rio.fcp import ScsiResult

S, E = PairState, Event

# Written out by hand from docs/pairs.md, not derived from the module's table.
EXPECTED = {
    (S.SIMPLEX, E.CREATED): S.INITIAL_COPYING,
    (S.INITIAL_COPYING, E.DUPLEXED): S.DUPLEX,
    (S.DUPLEX_PENDING, E.DUPLEXED): S.DUPLEX,
    (S.INITIAL_COPYING, E.SUSPEND_REQUESTED): S.SUSPENDING,
    (S.DUPLEX, E.SUSPEND_REQUESTED): S.SUSPENDING,
    (S.DUPLEX_PENDING, E.SUSPEND_REQUESTED): S.SUSPENDING,
    (S.INITIAL_COPYING, E.SUSPENDED): S.SUSPEND,
    (S.DUPLEX, E.SUSPENDED): S.SUSPEND,
    (S.DUPLEX_PENDING, E.SUSPENDED): S.SUSPEND,
    (S.SUSPENDING, E.SUSPENDED): S.SUSPEND,
    (S.INITIAL_COPYING, E.FAILED): S.FAILURE_SUSPEND,
    (S.DUPLEX, E.FAILED): S.FAILURE_SUSPEND,
    (S.DUPLEX_PENDING, E.FAILED): S.FAILURE_SUSPEND,
    (S.SUSPENDING, E.FAILED): S.FAILURE_SUSPEND,
    (S.FAILURE_SUSPEND, E.FAILED): S.FAILURE_SUSPEND,
    (S.SUSPEND, E.FAILED): S.SUSPEND,
    (S.SUSPEND, E.RESYNCED): S.DUPLEX_PENDING,
    (S.FAILURE_SUSPEND, E.RESYNCED): S.DUPLEX_PENDING,
    (S.INITIAL_COPYING, E.RESYNCED): S.DUPLEX_PENDING,   # the source array failed alone
    (S.DUPLEX, E.RESYNCED): S.DUPLEX_PENDING,
    (S.DUPLEX_PENDING, E.RESYNCED): S.DUPLEX_PENDING,
    **{(state, E.DELETED): S.SIMPLEX for state in S},
}


class TransitionTests(TestCase):
    def test_every_state_and_event(self):
        for state in S:
            for event in E:
                expected = EXPECTED.get((state, event))
                if expected is not None:
                    self.assertEqual(next_state(state, event), expected, (state, event))
                    self.assertTrue(pairstate.allows(state, event))
                    continue
                self.assertFalse(pairstate.allows(state, event), (state, event))
                with self.assertRaises(PairStateError) as caught:
                    next_state(state, event, "pair LUN 3")
                self.assertIs(caught.exception.state, state)
                message = str(caught.exception)
                self.assertIn(f"pair LUN 3 is {state.value}", message)
                self.assertIn(event.value, message)

    def test_resync_of_a_simplex_pair_names_simplex(self):
        with self.assertRaises(PairStateError) as caught:
            next_state(S.SIMPLEX, E.RESYNCED)
        self.assertIn("is simplex: resynced is not allowed (allowed: created, deleted)",
                      str(caught.exception))

    def test_replicating_and_target_writable_sets(self):
        self.assertEqual(pairstate.REPLICATING,
                         {S.INITIAL_COPYING, S.DUPLEX, S.DUPLEX_PENDING})
        self.assertEqual(pairstate.TARGET_WRITABLE, {S.SIMPLEX, S.SUSPEND, S.FAILURE_SUSPEND})


class RefusalTests(TestCase):
    def test_state_refusal_names_the_state_across_the_wire(self):
        for state in S:
            result = pairstate.state_refusal(state)
            self.assertFalse(result.good)
            self.assertEqual(explain(result), f"the partner's pair is {state.value}")

    def test_other_refusals(self):
        self.assertEqual(explain(pairstate.refusal(pairstate.ASC_NO_PAIR)), "no such pair")
        self.assertIn("failure Suspend", explain(pairstate.refusal(pairstate.ASC_RCN_FAILED)))
        self.assertEqual(explain(ScsiResult()), "GOOD")
        self.assertIn("0x25/0x00", explain(ScsiResult(status=2, sense=bytes(
            (0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0, 0, 0, 0, 0)))))

    def test_state_codes_are_distinct_and_small(self):
        codes = [state.code for state in S]
        self.assertEqual(sorted(codes), list(range(len(S))))
