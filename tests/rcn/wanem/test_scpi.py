"""ScpiConsole: every command and query, short forms, case, ';', numbered errors, *RST."""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rcn.wanem.link import LinkSpec, WanEmulator
from rcn.wanem.scpi import ERROR_QUEUE_LIMIT, MAX_LINE, ScpiConsole

NO_ERROR = '0,"No error"'


class ConsoleCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.wanem = WanEmulator(self.clock, [
            LinkSpec(47001, ("10.0.9.9", 47001)),
            LinkSpec(47002, ("10.0.9.8", 47001), settings={"delay": 0.005, "loss": 0.01}),
        ])
        self.console = ScpiConsole(self.wanem)

    def ask(self, line: str) -> str | None:
        return self.console.handle(line)

    def error(self) -> str:
        return self.ask("SYST:ERR?")

    def assertError(self, line: str, code: int, text: str, *detail: str):
        """``line`` answers nothing and queues exactly one error ``code,"text;..."``."""
        self.assertIsNone(self.ask(line))
        error = self.error()
        self.assertTrue(error.startswith(f'{code},"{text}'), error)
        for word in detail:
            self.assertIn(word, error)
        self.assertEqual(self.error(), NO_ERROR)

    def assertNoError(self):
        self.assertEqual(self.error(), NO_ERROR)


class IdentityTests(ConsoleCase):
    def test_idn(self):
        self.assertEqual(self.ask("*IDN?"), "RCN,rcn-wanem,0,1.0")
        self.assertEqual(self.ask("*idn?"), "RCN,rcn-wanem,0,1.0")
        self.assertEqual(ScpiConsole(self.wanem, idn="ACME,box,7,2.1").handle("*IDN?"),
                         "ACME,box,7,2.1")
        self.assertNoError()

    def test_empty_lines(self):
        for line in ("", "   ", ";", " ; ;", "\r\n"):
            self.assertIsNone(self.ask(line))
        self.assertNoError()


class SettingTests(ConsoleCase):
    # command (long form), short form, console value, link setting, link value, query answer
    TABLE = [
        ("DELAY", "DEL", "20", "delay", 0.02, "20"),
        ("JITTER", "JIT", "2.5", "jitter", 0.0025, "2.5"),
        ("LOSS", "LOSS", "1", "loss", 0.01, "1"),
        ("DUPLICATE", "DUP", "0.5", "duplicate", 0.005, "0.5"),
        ("REORDER", "REOR", "7", "reorder", 0.07, "7"),
        ("RATE", "RATE", "10000000", "rate", 1_250_000.0, "10000000"),
        ("QUEUE", "QUE", "65536", "queue_limit", 65536, "65536"),
    ]

    def test_every_setting_long_and_short_any_case(self):
        for long, short, value, setting, expected, answer in self.TABLE:
            for n, header in enumerate((long, short, long.lower(), short.capitalize())):
                link = n % 2 + 1
                self.assertIsNone(self.ask(f"LINK{link}:{header} {value}"))
                self.assertEqual(self.wanem.link(link).ab.settings()[setting], expected)
                self.assertEqual(self.wanem.link(link).ba.settings()[setting], expected)
                self.assertEqual(self.ask(f"link{link}:{header}?"), answer)
                self.assertEqual(self.ask(f":LINK{link}:{long}?"), answer)
        self.assertNoError()

    def test_extremes(self):
        self.ask("LINK1:DEL 10000;JIT 10000;LOSS 100;DUP 100;REOR 100;RATE 100G;QUE 1073741824")
        self.assertNoError()
        self.assertEqual(self.wanem.link(1).ab.settings(), {
            "delay": 10.0, "jitter": 10.0, "loss": 1.0, "duplicate": 1.0, "reorder": 1.0,
            "rate": 12.5e9, "queue_limit": 1 << 30})
        self.assertEqual(self.ask("LINK1:DEL?;LOSS?;RATE?"), "10000;100;100000000000")
        self.ask("LINK1:DEL 0;JIT 0;LOSS 0;DUP 0;REOR 0;RATE 8;QUE 1")
        self.assertNoError()
        self.assertEqual(self.ask("LINK1:RATE?;QUE?;DEL?"), "8;1;0")

    def test_rate_suffixes(self):
        for value, bits in [("64000", 64_000), ("1.5K", 1500), ("1.5k", 1500), ("10M", 10e6),
                            ("10m", 10e6), ("2G", 2e9), ("10 M", 10e6), ("100MBPS", 100e6),
                            ("1E6", 1e6), ("0", 0)]:
            self.ask(f"LINK1:RATE {value}")
            self.assertNoError()
            self.assertEqual(self.wanem.link(1).setting("rate"), bits / 8, value)
        self.assertEqual(self.ask("LINK1:RATE?"), "0")

    def test_min_max_default(self):
        self.ask("LINK2:DEL MAX;LOSS MAXIMUM;RATE MAX")
        self.assertEqual(self.ask("LINK2:DEL?;LOSS?;RATE?"), "10000;100;100000000000")
        self.ask("LINK2:DEL MIN;LOSS minimum")
        self.assertEqual(self.ask("LINK2:DEL?;LOSS?"), "0;0")
        self.ask("LINK2:DEL DEF;LOSS DEFAULT;RATE DEF")          # as the link was built
        self.assertEqual(self.ask("LINK2:DEL?;LOSS?;RATE?"), "5;1;0")
        self.assertNoError()

    def test_state(self):
        self.assertEqual(self.ask("LINK1:STATE?"), "UP")
        for word, up in [("DOWN", False), ("up", True), ("OFF", False), ("ON", True),
                         ("0", False), ("1", True), ("down", False)]:
            self.ask(f"LINK1:STATE {word}")
            self.assertEqual(self.wanem.link(1).up, up, word)
            self.assertEqual(self.ask("link1:state?"), "UP" if up else "DOWN")
        self.assertEqual(self.ask("LINK2:STATE?"), "UP")
        self.assertNoError()

    def test_link_without_number_is_link1(self):
        self.ask("LINK:DEL 30")
        self.assertEqual(self.wanem.link(1).setting("delay"), 0.03)
        self.assertEqual(self.ask("LINK:DEL?;LINK1:DEL?"), "30;30")
        self.assertNoError()


class StatisticsTests(ConsoleCase):
    def test_fields(self):
        link = self.wanem.link(1)
        for i in range(10):
            link.from_a(b"x" * 100, ("10.0.0.1", 5000))
        link.configure(rate=100, queue_limit=250)
        for i in range(3):
            link.from_b(b"y" * 100, ("10.0.9.9", 47001))
        self.clock.advance(0)
        # in,out,down,loss,queue_full,wire_full,duplicated,reordered,queue_packets,queue_bytes
        self.assertEqual(self.ask("LINK1:STAT? AB"), "10,10,0,0,0,0,0,0,0,0")
        self.assertEqual(self.ask("LINK1:STAT? BA"), "3,0,0,0,1,0,0,0,2,200")
        self.assertEqual(self.ask("LINK1:STAT?"), "13,10,0,0,1,0,0,0,2,200")
        self.ask("LINK1:STATE DOWN")
        self.assertEqual(self.ask("link1:statistics?"), "13,10,2,0,1,0,0,0,0,0")
        self.assertEqual(self.ask("LINK2:STAT?"), "0,0,0,0,0,0,0,0,0,0")
        self.assertNoError()

    def test_out_counts_delivered_datagrams(self):
        self.ask("LINK1:DUP 100")
        self.wanem.link(1).from_a(b"x", ("10.0.0.1", 5000))
        self.clock.advance(0)
        self.assertEqual(self.ask("LINK1:STAT?"), "1,2,0,0,0,0,1,0,0,0")

    def test_bad_direction(self):
        self.assertError("LINK1:STAT? XY", -224, "Illegal parameter value", "AB or BA")
        self.assertError("LINK1:STAT? AB,BA", -108, "Parameter not allowed")
        self.assertError("LINK1:STAT", -113, "Undefined header", "add ?")


class SeparatorTests(ConsoleCase):
    def test_several_commands_and_queries(self):
        self.assertEqual(self.ask("LINK1:DEL 20;LINK2:DEL 30;LINK1:DEL?;LINK2:DEL?;*IDN?"),
                         "20;30;RCN,rcn-wanem,0,1.0")
        self.assertNoError()

    def test_relative_path_continues_the_previous_header(self):
        self.assertEqual(self.ask("LINK2:DEL 40;JIT 4;LOSS 3;DEL?;JIT?"), "40;4")
        self.assertEqual(self.wanem.link(2).setting("loss"), 0.03)
        self.assertEqual(self.wanem.link(1).setting("jitter"), 0.0)
        # a leading ':' starts at the root: JIT is not a root header
        self.assertError("LINK2:DEL 40;:JIT 4", -113, "Undefined header")

    def test_an_error_does_not_stop_the_line(self):
        self.assertEqual(self.ask("LINK1:DEL 99999;LINK1:FOO;LINK1:JIT 3;LINK1:JIT?"), "3")
        self.assertTrue(self.error().startswith("-222,"))
        self.assertTrue(self.error().startswith("-113,"))
        self.assertNoError()

    def test_answers_of_error_queries_in_one_line(self):
        self.ask("FOO;BAR")
        self.assertEqual(self.ask("SYST:ERR?;SYST:ERR?;SYST:ERR?"),
                         '-113,"Undefined header;FOO";-113,"Undefined header;BAR";' + NO_ERROR)


class ErrorTests(ConsoleCase):
    def test_no_error(self):
        self.assertEqual(self.ask("SYST:ERR?"), NO_ERROR)
        self.assertEqual(self.ask("SYSTEM:ERROR:NEXT?"), NO_ERROR)
        self.assertEqual(self.ask("syst:err:next?"), NO_ERROR)

    def test_undefined_headers(self):
        for line in ("FOO", "LINK1:FOO 3", "LINK1:DELAYS 3", "LINK1:DELA 3", "LINK1", "LINK1?",
                     "*FOO", "*IDN", "LINK1::DEL 3", "LINK1:DEL?X", "LINK1:DEL1 3",
                     "SYST:ERR", "SYST", ":", "LINK1:DEL:JIT 3", "LINK-1:DEL 3"):
            self.assertError(line, -113, "Undefined header")

    def test_error_names_the_command(self):
        self.assertError("LINK1:DELAYS 3", -113, "Undefined header", "LINK1:DELAYS")

    def test_no_such_link(self):
        self.assertError("LINK3:DEL 3", -114, "Header suffix out of range", "LINK3", "1..2")
        self.assertError("LINK0:DEL?", -114, "Header suffix out of range")
        self.assertError("LINK9:STAT?", -114, "Header suffix out of range")

    def test_out_of_range(self):
        cases = [("LINK1:DEL 10001", "0..10000"), ("LINK1:DEL -1", "0..10000"),
                 ("LINK1:JIT 20000", "0..10000"), ("LINK1:LOSS 100.5", "0..100"),
                 ("LINK1:DUP -3", "0..100"), ("LINK1:REOR 101", "0..100"),
                 ("LINK1:RATE 4", "0 (unlimited) or 8..100000000000 bits/s"),
                 ("LINK1:RATE 101G", "bits/s"), ("LINK1:QUE 0", "1..1073741824"),
                 ("LINK1:QUE 2000000000", "bytes")]
        for line, range_text in cases:
            self.assertError(line, -222, "Data out of range", range_text, line.split()[0])
        self.assertEqual(self.wanem.link(1).ab.settings(), self.wanem.link(1).initial_settings())

    def test_numbers_beyond_a_double_are_out_of_range_on_every_numeric_setting(self):
        # float() makes these inf; QUEue's int(inf) raised OverflowError out of handle()
        for header in ("DEL", "JIT", "LOSS", "DUP", "REOR", "RATE", "QUE"):
            last = "1E400G" if header == "RATE" else "9e999"
            for value in ("9" * 400, "1e400", "-1e400", last):
                self.assertError(f"LINK1:{header} {value}", -222, "Data out of range",
                                 f"LINK1:{header}")
        for value in ("INF", "NAN", "-INF"):
            self.assertError(f"LINK1:QUE {value}", -104, "Data type error")
        self.assertEqual(self.wanem.link(1).ab.settings(), self.wanem.link(1).initial_settings())

    def test_a_seeded_random_mix_of_numeric_lines_never_raises(self):
        heads = ["LINK1:DEL", "LINK1:JIT", "LINK1:LOSS", "LINK1:DUP", "LINK1:REOR",
                 "LINK1:RATE", "LINK1:QUE", "LINK1:STATE", "LINK1:STAT?", "SYST:ERR?", "QUE",
                 ":LINK1:QUE", "LINK" + "9" * 900 + ":DEL"]
        values = ["9" * 400, "1e400", "-1e400", "1E308", "1e308G", "INF", "NAN", "1e-400", "-0",
                  ".5", "MIN", "MAX", "DEF", "\u0661", "\u00b2", "1" * 1000, "1.5e3M", "+", ""]
        rng = random.Random(9)
        for _ in range(5000):
            self.ask(";".join(f"{rng.choice(heads)} {rng.choice(values)}"
                              for _ in range(rng.randint(1, 3))))
            self.console.errors.clear()

    def test_wrong_types(self):
        for line in ("LINK1:DEL abc", "LINK1:DEL 20ms", "LINK1:LOSS 1%", "LINK1:RATE fast",
                     "LINK1:RATE 10T", "LINK1:QUE 10.5", "LINK1:JIT 1..2", "LINK1:DUP 0x10"):
            self.assertError(line, -104, "Data type error")

    def test_illegal_state(self):
        self.assertError("LINK1:STATE SIDEWAYS", -224, "Illegal parameter value", "UP or DOWN")
        self.assertError("LINK1:STATE 2", -224, "Illegal parameter value")
        self.assertTrue(self.wanem.link(1).up)

    def test_missing_parameter(self):
        for header in ("DEL", "JIT", "LOSS", "DUP", "REOR", "RATE", "QUE", "STATE"):
            self.assertError(f"LINK1:{header}", -109, "Missing parameter")
        self.assertError("LINK1:DEL ,", -109, "Missing parameter")

    def test_parameter_not_allowed(self):
        for line in ("LINK1:DEL 1,2", "LINK1:DEL? 5", "LINK1:STATE? UP", "*IDN? 3", "*RST 1",
                     "SYST:ERR? 1", "LINK1:STATE UP,DOWN"):
            self.assertError(line, -108, "Parameter not allowed")

    def test_too_long_a_line(self):
        self.assertError("LINK1:DEL 1;" * (MAX_LINE // 12 + 1), -223, "Too much data")
        self.assertEqual(self.wanem.link(1).setting("delay"), 0.0)

    def test_queue_is_bounded_and_overflow_is_reported(self):
        for i in range(ERROR_QUEUE_LIMIT + 5):
            self.ask(f"BAD{i}")
        self.assertEqual(self.ask("SYST:ERR:COUN?"), str(ERROR_QUEUE_LIMIT))
        errors = [self.error() for _ in range(ERROR_QUEUE_LIMIT)]
        self.assertEqual(errors[0], '-113,"Undefined header;BAD0"')
        self.assertEqual(errors[-2], f'-113,"Undefined header;BAD{ERROR_QUEUE_LIMIT - 2}"')
        self.assertEqual(errors[-1], '-350,"Queue overflow"')
        self.assertNoError()

    def test_cls_empties_the_queue(self):
        self.ask("FOO;BAR")
        self.assertEqual(self.ask("SYST:ERR:COUNT?"), "2")
        self.ask("*CLS")
        self.assertEqual(self.ask("SYST:ERR:COUN?"), "0")
        self.assertNoError()

    def test_detail_is_bounded_and_quote_safe(self):
        self.ask('LINK1:DEL "' + "9" * 200)
        error = self.error()
        self.assertLess(len(error), 150)
        self.assertEqual(error.count('"'), 2)

    def test_bad_input_never_raises(self):
        rng = random.Random(8)
        alphabet = 'LINK12:DELJTOSUPRAEQ?*;, .-+eEkMG"\t:#\x00\xff'
        for _ in range(3000):
            line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
            answer = self.console.handle(line)
            self.assertTrue(answer is None or isinstance(answer, str), repr(line))
        self.assertLessEqual(len(self.console.errors), ERROR_QUEUE_LIMIT)


class ResetTests(ConsoleCase):
    def test_rst_restores_every_link(self):
        self.ask("LINK1:DEL 50;LOSS 20;RATE 1M;STATE DOWN;LINK2:DEL 70;JIT 3;STATE DOWN")
        self.wanem.link(2).from_a(b"x", ("10.0.0.1", 5000))
        self.ask("*RST")
        self.assertEqual(self.ask("LINK1:DEL?;LOSS?;RATE?;STATE?"), "0;0;0;UP")
        self.assertEqual(self.ask("LINK2:DEL?;JIT?;LOSS?;STATE?"), "5;0;1;UP")
        self.assertEqual(self.ask("*rst;LINK2:STAT?"), "1,0,1,0,0,0,0,0,0,0")   # kept
        self.assertNoError()
