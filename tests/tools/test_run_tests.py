"""tools/run_tests.py: the names of failed tests are repeated after the counts."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tools.run_tests import FailureNames

# trial's report as CI printed it (abridged tracebacks)
TRIAL_OUTPUT = """\
    test_other_port ...                                                    [OK]

===============================================================================
[FAIL]
Traceback (most recent call last):
  File "defer.py", line 1835, in _inlineCallbacks
twisted.trial.unittest.FailTest: Regex didn't match: 'x' not found in 'tests.not.a.name'

tests.rcn.bench.test_runner.BenchRunTests.test_every_step_and_a_failing_check
===============================================================================
[ERROR]
Traceback (most recent call last):
  File "defer.py", line 1835, in _inlineCallbacks
builtins.OSError: boom

tests.rcn.lab.test_lab.LabTests.test_one
tests.rcn.lab.test_lab.LabTests.test_two
-------------------------------------------------------------------------------
Ran 440 tests in 53.648s

FAILED (failures=1, errors=2, successes=437)
"""


class FailureNamesTests(TestCase):
    def feed(self, text: str) -> FailureNames:
        names = FailureNames()
        for line in text.splitlines(keepends=True):
            names.feed(line)
        return names

    def test_names_under_each_flavour(self):
        self.assertEqual(self.feed(TRIAL_OUTPUT).names, [
            ("FAIL", "tests.rcn.bench.test_runner.BenchRunTests.test_every_step_and_a_failing_check"),
            ("ERROR", "tests.rcn.lab.test_lab.LabTests.test_one"),
            ("ERROR", "tests.rcn.lab.test_lab.LabTests.test_two"),
        ])

    def test_test_names_in_passing_output_are_not_failures(self):
        self.assertEqual(self.feed("tests.rcn.lab.test_lab\n  LabTests\n"
                                   "tests.rcn.x.Y.test_z\nPASSED (successes=1)\n").names, [])

    def test_summary_rule_ends_the_section(self):
        names = self.feed(TRIAL_OUTPUT + "tests.rcn.after.the.Summary\n")
        self.assertEqual(len(names.names), 3)
