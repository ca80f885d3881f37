"""The console command language: words, abbreviations, ?, help, errors naming the word."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from rcn.console.commands import CommandTree, ConsoleError, columns


class CommandTreeTests(TestCase):
    def setUp(self):
        self.calls = []
        t = self.tree = CommandTree()
        t.add("show version", lambda a: "rcn 1.0", "software version")
        t.add("show counters", lambda a: "writes 3", "event counters")
        t.add("show config", lambda a: "cfg", "the running configuration")
        t.add("clear counters", lambda a: self.calls.append("clear") or "", "zero the counters")
        t.add("debug log-transfer", lambda a: self.calls.append(a) or f"debug {a[0]}",
              "trace datagrams", choices=("on", "off"))
        t.add("shutdown log-transfer", lambda a: "down", "stop the UDP interface")
        t.add("no shutdown log-transfer", lambda a: "up", "start it again")
        t.prefer("sh", "show")

    def test_full_words_and_abbreviations(self):
        self.assertEqual(self.tree.run("show version"), "rcn 1.0")
        self.assertEqual(self.tree.run("sh cou"), "writes 3")
        self.assertEqual(self.tree.run("SHOW VER"), "rcn 1.0")
        self.assertEqual(self.tree.run("deb log of"), "debug off")
        self.assertEqual(self.tree.run("no shut l"), "up")
        self.assertEqual(self.tree.run("shu log"), "down")
        self.assertEqual(self.tree.run("   "), "")
        self.tree.run("clear counters")
        self.assertEqual(self.calls, [["off"], "clear"])

    def test_errors_name_the_bad_word(self):
        for line, text in (("show cuonters", 'unknown word "cuonters" after "show"'),
                           ("sh co", 'ambiguous word "co" after "show": config, counters'),
                           ("frobnicate", 'unknown word "frobnicate"; expected one of: clear'),
                           ("show", '"show" is incomplete; next: config, counters, version'),
                           ("debug log-transfer maybe", 'bad value "maybe" for "debug '
                                                        'log-transfer"; expected one of: on, off'),
                           ("debug log-transfer", 'needs one of: on, off'),
                           ("show version now", 'unexpected word "now" after "show version"')):
            with self.assertRaises(ConsoleError) as caught:
                self.tree.run(line)
            self.assertIn(text, str(caught.exception), line)

    def test_question_mark_and_help(self):
        self.assertEqual(self.tree.run("show ?").splitlines(),
                         ["config    the running configuration", "counters  event counters",
                          "version   software version"])
        self.assertEqual(self.tree.run("show c?").splitlines()[0].split()[0], "config")
        self.assertIn("on", self.tree.run("debug log-transfer ?"))
        self.assertIn("<cr>", self.tree.run("show version ?"))
        helptext = self.tree.run("help")
        self.assertIn("debug log-transfer on|off", helptext)
        self.assertIn("no shutdown log-transfer", helptext)

    def test_columns_align(self):
        self.assertEqual(columns([["a", 1], ["bbb", 22]], ["name", "n"]),
                         "name  n\na     1\nbbb   22")
