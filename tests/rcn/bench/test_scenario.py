"""Scenario files: the examples load, steps and repetitions, errors that name the key."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import tomllib

from twisted.trial.unittest import TestCase

from rcn.bench.cli import describe, main
from rcn.bench.scenario import load_scenario, parse_scenario
from rcn.config import ConfigError

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "bench")

LAB = '[lab]\ncores = 1\n[[wanem]]\nbetween = ["edgeA", "core1"]\n'


def parse(text: str):
    return parse_scenario(tomllib.loads(text), "/x/my-scenario.toml")


class ScenarioTests(TestCase):
    def test_the_examples_load(self):
        files = sorted(glob.glob(os.path.join(EXAMPLES, "*.toml")))
        names = [os.path.basename(f) for f in files]
        for wanted in ("wan-20ms-loss1.toml", "ci-wan-20ms-loss1.toml", "core-link-cut-10s.toml",
                       "link-flap-2s.toml"):
            self.assertIn(wanted, names)
        for path in files:
            scenario = load_scenario(path)
            self.assertEqual([a.port for a in scenario.appliances], ["lab"], path)
            self.assertTrue(scenario.topology.wanem, path)
            self.assertIn("equal", [s.args.get("check") for s in scenario.steps], path)
        wan = load_scenario(os.path.join(EXAMPLES, "wan-20ms-loss1.toml"))
        self.assertEqual(dict(wan.topology.wanem[0].settings), {"delay_ms": 20.0, "loss": 0.01})
        self.assertEqual(wan.topology.wanem[0].between, ("edgeA", "core1"))

    def test_steps_defaults_and_repetition(self):
        s = parse(LAB + '[scenario]\ndescription = "d"\n'
                  '[[step]]\ndo = "workload"\nrate = 100\n'
                  '[[step]]\nat = 2\ndo = "link_down"\nevery = 2\nuntil = 8\n'
                  '[[step]]\nat = 3\ndo = "impair"\ndelay_ms = 20\nloss = 0.01\nrate = "1MiB"\n'
                  '[[step]]\nat = 9\ndo = "check"\ncheck = "lag"\nbelow_ms = 100\n')
        self.assertEqual((s.name, s.description, s.sample_interval), ("my-scenario", "d", 0.5))
        self.assertEqual([(a.name, a.kind, a.port) for a in s.appliances],
                         [("wanem", "wanem", "lab")])
        work, down, impair, check = s.steps
        self.assertEqual(work.args, {"name": "w1", "pair": 0, "block": 4096, "depth": 16,
                                     "rate": 100.0, "region": 64 << 20, "seed": 1})
        self.assertEqual(down.times(), [2.0, 4.0, 6.0, 8.0])
        self.assertEqual(impair.args, {"appliance": "wanem", "link": 1, "delay_ms": 20.0,
                                       "loss": 0.01, "rate": 1 << 20})
        self.assertEqual(check.args, {"check": "lag", "name": "lag@9s", "below_ms": 100.0,
                                      "since": 0.0})
        self.assertEqual(s.end(), 9.0)
        self.assertIn("step[1] at 2 s, every 2 s until 8 s: link_down link=1", describe(s))
        self.assertIn("wanem LINK1: edgeA - core1 (no impairment)", describe(s))

    def test_errors_name_the_key(self):
        for text, message in [
            ("", "step: a scenario needs at least one [[step]]"),
            ('[[step]]\ndo = "dance"\n', "step[0].do: "),
            ('[[step]]\ndo = "link_down"\n', "step[0].do: link_down needs an appliance"),
            (LAB + '[[step]]\ndo = "link_down"\nlink = 2\n', "step[0].link: the lab has 1 wanem"),
            (LAB + '[[step]]\ndo = "impair"\n', "step[0].do: impair sets nothing"),
            (LAB + '[[step]]\ndo = "impair"\nloss = 2\n', "step[0].loss"),
            (LAB + '[[step]]\ndo = "link_up"\nevery = 1\n', "step[0].until: every and until go "
                                                             "together"),
            (LAB + '[[step]]\ndo = "check"\ncheck = "lag"\n', "step[0].below_ms: a lag needs a "
                                                               "bound"),
            (LAB + '[[step]]\ndo = "check"\ncheck = "prefix"\nevery = 1\nuntil = 3\n',
             "step[0].every: a check step does not repeat"),
            (LAB + '[[step]]\ndo = "workload"\nblock = 1000\n', "step[0].block: 1000 is not a "
                                                                 "multiple of 512"),
            (LAB + '[[step]]\ndo = "workload"\nregion = "1GiB"\n', "step[0].region"),
            (LAB + '[[step]]\ndo = "workload"\nspeed = 3\n', "step[0].speed"),
            (LAB + '[[step]]\ndo = "signal"\ndevice = "core7"\nsignal = "STOP"\n',
             "step[0].device"),
            ('[[appliance]]\nname = "w"\n[[step]]\ndo = "wait"\nfor = "drained"\n',
             "appliance[0].port: \"lab\" is the lab's WAN emulator, and this lab has no [[wanem]]"),
            (LAB + '[[appliance]]\nname = "w"\nkind = "toaster"\n[[step]]\ndo = "wait"\n'
                   'for = "drained"\n', "appliance[0].kind"),
            (LAB + '[scenario]\nsample_interval = 0\n[[step]]\ndo = "wait"\nfor = "drained"\n',
             "scenario.sample_interval"),
        ]:
            with self.assertRaises(ConfigError, msg=text) as caught:
                parse(text)
            self.assertIn(message, str(caught.exception), text)

    def test_cli_check_and_bad_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[[step]]\ndo = "nothing"\n')
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(main(["check", path]), 2)
            self.assertEqual(main(["check", os.path.join(EXAMPLES, "link-flap-2s.toml")]), 0)
        self.assertIn("step[0].do: 'nothing' is not one of workload", err.getvalue())
        self.assertIn("step[1] at 5 s, every 2 s until 23 s: link_down link=1", out.getvalue())
