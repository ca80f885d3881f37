"""Order guarantee IDs by policy (【0064】): the one function the edges and the server share."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rcn.groups import MAX_B_GROUP, POLICIES, group_id
from rcn.logxfer.routes import Address

S1, T1 = 0x500A098000000001, 0x500A098000000002         # the settings and edge tests' WWNs
OTHER = 0x500A098000000003
EDGE_A, EDGE_B = "10.0.0.1:47001", "10.0.0.2:47001"     # the edges' log-transfer addresses


class GroupIdTests(SynchronousTestCase):
    def test_a1_is_one_id_per_pair_of_storages(self):
        one = group_id("A-1", 0, S1, T1, "e1", "e2")
        self.assertEqual(one >> 30, 1)
        self.assertEqual(one, 0x531B1CCD)                  # what edges have always given
        self.assertEqual(one, group_id("A-1", 0, S1, T1, "e3", "e4"))      # not per edges
        self.assertNotEqual(one, group_id("A-1", 0, OTHER, T1, "e1", "e2"))
        self.assertEqual(group_id("A-1", 0, OTHER, T1, "e1", "e2"), 0x7DED344B)
        self.assertNotEqual(one, group_id("A-1", 0, T1, S1, "e1", "e2"))   # directed

    def test_a2_is_one_id_per_pair_of_edges(self):
        two = group_id("A-2", 0, S1, T1, "e1", "e2")
        self.assertEqual(two >> 30, 2)
        self.assertEqual(two, 0xA1CF961C)
        self.assertEqual(two, group_id("A-2", 0, OTHER, T1, "e1", "e2"))   # not per storages
        self.assertNotEqual(two, group_id("A-2", 0, S1, T1, "e2", "e1"))   # directed

    def test_a2_keys_on_the_edges_addresses_as_text(self):
        # the server passes Address objects, an edge its route's ends: the same IDs
        given = group_id("A-2", 0, S1, T1, Address.parse(EDGE_A), Address.parse(EDGE_B))
        self.assertEqual(given, group_id("A-2", 0, S1, T1, EDGE_A, EDGE_B))
        self.assertEqual(given, 0x8D1DA60F)
        self.assertEqual(group_id("A-1", 0, S1, T1, Address.parse(EDGE_A),
                                  Address.parse(EDGE_B)), 0x531B1CCD)

    def test_b_is_the_given_id(self):
        self.assertEqual(group_id("B", 7, S1, T1, "e1", "e2"), 7)
        self.assertEqual(group_id("B", 0, S1, T1, "e1", "e2"), 0)      # an edge gives none
        self.assertEqual(group_id("B", MAX_B_GROUP, S1, T1, "e1", "e2"), MAX_B_GROUP)

    def test_the_policies_never_share_an_id(self):
        self.assertEqual(MAX_B_GROUP, (1 << 30) - 1)
        a1 = group_id("A-1", 0, S1, T1, "e1", "e2")
        a2 = group_id("A-2", 0, S1, T1, "e1", "e2")
        self.assertGreater(a1, MAX_B_GROUP)
        self.assertGreater(a2, MAX_B_GROUP)
        self.assertNotEqual(a1 >> 30, a2 >> 30)

    def test_an_unknown_policy_is_refused(self):
        self.assertEqual(POLICIES, ("A-1", "A-2", "B"))
        with self.assertRaises(ValueError) as caught:
            group_id("C", 0, S1, T1, "e1", "e2")
        self.assertIn("A-1, A-2, B", str(caught.exception))
