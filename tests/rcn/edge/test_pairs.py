"""The edge's pair table: rows, bitmap 727 and its persistence across a restart."""

from __future__ import annotations

import os

import numpy as np
from twisted.trial.unittest import TestCase

from rcn.edge.pairs import EdgePairs, PairEntry, PairRow
from rcn.pairstate import Event, PairState, PairStateError

S, T = 0x500A098000000001, 0x500A098000000002


class PairTableTests(TestCase):
    def test_rows_move_only_as_the_state_machine_allows(self):
        row = PairRow(PairEntry(S, 0, T, 1, 7), "source", PairState.SIMPLEX)
        self.assertIs(row.apply(Event.CREATED), PairState.INITIAL_COPYING)
        with self.assertRaises(PairStateError) as caught:
            row.apply(Event.CREATED)
        self.assertIn("LUN 0 -> 50:0a:09:80:00:00:00:02 LUN 1 at the source edge is "
                      "initial-copying", str(caught.exception))

    def test_dropped_entries_become_727_with_or_without_a_geometry(self):
        known = PairRow(PairEntry(S, 0, T, 0, 7), "source", geometry=(1 << 20, 512, 65536))
        known.dropped(np.array([0, 300]), np.array([8, 8]))
        self.assertEqual(known.dirty_tracks(), 2)
        unknown = PairRow(PairEntry(S, 1, T, 1, 7), "source")
        unknown.dropped(np.array([0, 300]), np.array([8, 8]))
        self.assertEqual(unknown.dirty_tracks(), 0)              # kept as extents
        self.assertEqual(unknown.bitmap_727(1 << 20, 4096).popcount(), 3)
        with self.assertRaises(ValueError):
            known.bitmap_727(1 << 20, 4096)                       # another geometry
        known.clear_727()
        self.assertEqual(known.dirty_tracks(), 0)

    def test_a_restart_finds_the_rows_states_and_bitmaps(self):
        path = os.path.join(self.mktemp() + ".json")
        pairs = EdgePairs("A-1", path)
        a = pairs.add(PairRow(PairEntry(S, 0, T, 0, 7, "acme"), "source",
                              PairState.FAILURE_SUSPEND, (1 << 20, 512, 65536)))
        a.dropped(np.array([16]), np.array([4]))
        b = pairs.add(PairRow(PairEntry(S, 1, T, 1, 9), "target", PairState.SUSPEND))
        b.dropped(np.array([5]), np.array([1]))
        pairs.failed_groups.add(7)
        pairs.restart_pending[7] = 3
        pairs.sok_sent.add(9)
        pairs.save()
        again = EdgePairs("A-1", path)
        again.add(PairRow(PairEntry(S, 0, T, 0, 7, "acme"), "source"))   # from the config
        self.assertEqual(again.load(), 2)
        a2, b2 = again.find(S, T, 0), again.find(S, T, 1)
        self.assertEqual((a2.state, a2.geometry, a2.dirty_tracks(), a2.entry.customer),
                         (PairState.FAILURE_SUSPEND, (1 << 20, 512, 65536), 1, "acme"))
        self.assertEqual((b2.side, b2.state), ("target", PairState.SUSPEND))
        self.assertEqual(b2.bitmap_727(1 << 20, 4096).popcount(), 1)
        # pair control's marks come back too: a pending RESTART must not be forgotten
        self.assertEqual((again.failed_groups, again.restart_pending, again.sok_sent),
                         ({7}, {7: 3}, {9}))
        self.assertEqual(EdgePairs("B", path + ".none").load(), 0)

    def test_duplicate_rows_are_refused(self):
        pairs = EdgePairs()
        pairs.add(PairRow(PairEntry(S, 0, T, 0, 7), "source"))
        with self.assertRaises(ValueError):
            pairs.add(PairRow(PairEntry(S, 3, T, 0, 8), "source"))
