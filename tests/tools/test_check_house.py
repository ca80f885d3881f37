"""tools/check_house.py: each rule caught on a small planted tree, and the
checkout itself keeps every rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.trial.unittest import TestCase

from tools import check_house


class PlantedTreeTests(TestCase):

    def setUp(self):
        self.root = Path(self.mktemp())
        for top in check_house.TOP_PACKAGES:
            self.write(f"{top}/__init__.py", "")

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def rules(self):
        return [(b.rule, b.where) for b in check_house.breaches(self.root)]

    def test_a_clean_tree_has_no_breach(self):
        self.write("rcn/a.py", "from datapath import k\n")
        self.write("datapath/k.py", "X = 1\n")
        self.write("hdl_models/m.py", "from datapath.k import X\n")
        self.write("tools/t.py", "import rcn.a\nfrom hdl_models import m\n")
        self.assertEqual(self.rules(), [])

    def test_datapath_importing_rcn_breaks_the_one_way_rule(self):
        self.write("rcn/a.py", "X = 1\n")
        self.write("datapath/k.py", "def f():\n    from rcn.a import X\n")
        self.assertEqual(self.rules(), [("one-way", "datapath.k")])

    def test_rcn_importing_hdl_models_or_tools_breaks_the_one_way_rule(self):
        self.write("hdl_models/m.py", "")
        self.write("tools/t.py", "")
        self.write("rcn/a.py", "import hdl_models.m\nfrom tools import t\n")
        self.assertEqual(self.rules(), [("one-way", "rcn.a"), ("one-way", "rcn.a")])

    def test_datapath_or_hdl_models_importing_twisted_breaks_the_one_way_rule(self):
        self.write("datapath/k.py", "def f():\n    from twisted.internet import task\n")
        self.write("hdl_models/m.py", "import twisted\n")
        found = check_house.breaches(self.root)
        self.assertEqual([(b.rule, b.where, b.detail) for b in found],
                         [("one-way", "datapath.k", "imports twisted.internet"),
                          ("one-way", "datapath.k", "imports twisted.internet.task"),
                          ("one-way", "hdl_models.m", "imports twisted")])

    def test_rcn_importing_the_global_reactor_at_import_time_is_a_breach(self):
        self.write("rcn/lib.py", "from twisted.internet import reactor\n")
        self.write("rcn/klass.py", "class K:\n    import twisted.internet.reactor\n")
        self.write("rcn/main.py", "def main():\n    from twisted.internet import reactor\n"
                                  "    reactor.run()\n")
        self.assertEqual(sorted(self.rules()), [("global reactor", "rcn.klass"),
                                                ("global reactor", "rcn.lib")])

    def test_a_module_cycle_is_found_even_through_a_deferred_import(self):
        self.write("rcn/a.py", "from rcn import b\n")
        self.write("rcn/b.py", "def f():\n    from rcn.a import g\n")
        found = check_house.breaches(self.root)
        self.assertEqual([(b.rule, b.where) for b in found], [("module cycle", "rcn.a")])
        self.assertEqual(found[0].detail, "rcn.a -> rcn.b -> rcn.a")

    def test_an_import_under_type_checking_is_not_a_cycle(self):
        self.write("rcn/a.py", "from rcn import b\n")
        self.write("rcn/b.py", """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from rcn.a import g
            """)
        self.assertEqual(self.rules(), [])

    def test_packages_importing_each_other_are_a_cycle_without_a_module_cycle(self):
        self.write("rcn/edge/__init__.py", "")
        self.write("rcn/edge/service.py", "from rcn.mgmt.client import C\n")
        self.write("rcn/edge/pairs.py", "")
        self.write("rcn/mgmt/__init__.py", "")
        self.write("rcn/mgmt/client.py", "C = 1\n")
        self.write("rcn/mgmt/settings.py", "from rcn.edge.pairs import P\n")
        self.assertEqual(self.rules(), [("package cycle", "rcn.edge")])

    def test_a_subpackage_using_its_parent_is_not_a_package_cycle(self):
        self.write("rcn/edge/__init__.py", "from rcn.edge.sub import x\n")
        self.write("rcn/edge/base.py", "")
        self.write("rcn/edge/sub/__init__.py", "")
        self.write("rcn/edge/sub/x.py", "from rcn.edge import base\n")
        self.assertEqual(self.rules(), [])

    def test_relative_imports_resolve(self):
        self.write("rcn/p/__init__.py", "")
        self.write("rcn/p/a.py", "from . import b\n")
        self.write("rcn/p/b.py", "from .a import f\n")
        self.assertEqual(self.rules(), [("module cycle", "rcn.p.a")])

    def test_long_files_and_functions_are_breaches(self):
        body = "".join(f"    x{i} = {i}\n" for i in range(check_house.MAX_FUNCTION_LINES))
        self.write("rcn/long.py", "def long():\n" + body)
        self.write("rcn/ok.py", "def ok():\n" + body[: -len(body.splitlines()[-1]) - 1])
        self.write("tools/big.py", "X = 1\n" * (check_house.MAX_FILE_LINES + 1))
        self.assertEqual(sorted(self.rules()),
                         [("file size", "tools/big.py"), ("function size", "rcn/long.py:1")])



class ThisCheckoutTests(TestCase):

    def test_the_checkout_keeps_every_house_rule(self):
        root = Path(__file__).resolve().parents[2]
        found = check_house.breaches(root)
        self.assertEqual([str(b) for b in found], [])
