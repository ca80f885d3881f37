"""The route table (table 408): addresses, next hops both ways, the ends of a path."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from datapath.frames.logentry import EntryType
from rcn.logxfer.routes import BACKWARD_TYPES, Address, Route, RouteError, RouteTable

SRC = 0x500A098000000001
DST = 0x500A098000000002
OTHER = 0x500A098000000003
A, C1, C2, B = (Address("10.0.0.1", 47001), Address("10.0.0.2", 47001),
                Address("10.0.0.3", 47001), Address("10.0.0.4", 47001))


class AddressTests(SynchronousTestCase):
    def test_parse_ipv4_and_names(self):
        self.assertEqual(Address.parse("127.0.0.1:47001"), Address("127.0.0.1", 47001))
        self.assertEqual(Address.parse(" edge-a.example:1 "), Address("edge-a.example", 1))

    def test_parse_ipv6_in_brackets_and_back(self):
        address = Address.parse("[::1]:47002")
        self.assertEqual(address, Address("::1", 47002))
        self.assertEqual(str(address), "[::1]:47002")
        self.assertEqual(address.pair, ("::1", 47002))

    def test_str_and_pair_of_ipv4(self):
        address = Address("127.0.0.1", 5)
        self.assertEqual((str(address), address.pair), ("127.0.0.1:5", ("127.0.0.1", 5)))

    def test_parse_errors_name_the_text(self):
        for text in ("127.0.0.1", "127.0.0.1:", ":47001", "127.0.0.1:0", "127.0.0.1:65536",
                     "127.0.0.1:port", "127.0.0.1:-1", ""):
            exc = self.assertRaises(RouteError, Address.parse, text)
            self.assertIn(repr(text), str(exc))
            self.assertIn("1..65535", str(exc))

    def test_a_host_with_a_space_hash_or_control_character_is_refused(self):
        # a key file or table written with one would not read back
        for text in ("10.0.0.1 x:47001", "edge#a:1", "a\nb:1", "a\tb:1", "é:1"):
            exc = self.assertRaises(RouteError, Address.parse, text)
            self.assertIn("not a name or an IP address", str(exc))

    def test_addresses_are_hashable_values(self):
        self.assertEqual(len({Address("h", 1), Address("h", 1), Address("h", 2)}), 2)


class RouteTableTests(SynchronousTestCase):
    def setUp(self):
        self.table = RouteTable([Route(SRC, DST, (A, C1, C2, B)), Route(OTHER, DST, (A, C2, B))])

    def test_next_hop_forward_along_the_path(self):
        self.assertEqual([self.table.next_hop(SRC, DST, me) for me in (A, C1, C2)], [C1, C2, B])

    def test_next_hop_backward_along_the_path(self):
        self.assertEqual([self.table.next_hop(SRC, DST, me, backward=True) for me in (B, C2, C1)],
                         [C2, C1, A])

    def test_the_ends_of_a_path_have_no_further_hop(self):
        self.assertIsNone(self.table.next_hop(SRC, DST, B))
        self.assertIsNone(self.table.next_hop(SRC, DST, A, backward=True))

    def test_routes_are_per_storage_pair(self):
        self.assertEqual(self.table.next_hop(OTHER, DST, A), C2)
        self.assertIsNone(self.table.next_hop(OTHER, DST, C1))

    def test_no_route(self):
        self.assertIsNone(self.table.next_hop(DST, SRC, C1))          # the reverse pair
        self.assertIsNone(self.table.next_hop(SRC, DST, Address("10.0.0.9", 47001)))
        self.assertFalse(self.table.on_path(SRC, DST, Address("10.0.0.9", 47001)))
        self.assertTrue(self.table.on_path(SRC, DST, C2))
        self.assertIsNone(self.table.route(DST, SRC))
        self.assertEqual(RouteTable().next_hop(SRC, DST, A), None)

    def test_duplicate_route_is_an_error_naming_it(self):
        exc = self.assertRaises(RouteError, RouteTable,
                                [Route(SRC, DST, (A, B)), Route(SRC, DST, (A, C1, B))])
        self.assertIn("second route", str(exc))
        self.assertIn("50:0a:09:80:00:00:00:01 -> 50:0a:09:80:00:00:00:02", str(exc))

    def test_path_needs_two_distinct_devices(self):
        self.assertIn("at least", str(self.assertRaises(RouteError, Route, SRC, DST, (A,))))
        self.assertIn("twice", str(self.assertRaises(RouteError, Route, SRC, DST, (A, C1, A))))

    def test_len_iter_route_describe(self):
        self.assertEqual(len(self.table), 2)
        self.assertEqual({(r.source_wwn, r.target_wwn) for r in self.table},
                         {(SRC, DST), (OTHER, DST)})
        self.assertEqual(self.table.route(SRC, DST).path, (A, C1, C2, B))
        self.assertIn({"source_wwn": "50:0a:09:80:00:00:00:01",
                       "target_wwn": "50:0a:09:80:00:00:00:02",
                       "path": ["10.0.0.1:47001", "10.0.0.2:47001", "10.0.0.3:47001",
                                "10.0.0.4:47001"]}, self.table.describe())

    def test_backward_types_are_the_answers(self):
        self.assertEqual(BACKWARD_TYPES, {EntryType.WROK, EntryType.CTRL_OK, EntryType.NAK})
