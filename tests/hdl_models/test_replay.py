"""The replay-window block (hdl_models.replay) against datapath.reference.replay, and the
reference against the hop layer's own window (rcn.logxfer.seal.ReplayWindow)."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

try:
    from hdl_models import cosim, replay
    SKIP = None
except ImportError as exc:          # the hdl extra is not installed
    SKIP = f"amaranth not installed ({exc}): pip install '.[hdl]'"

from datapath.reference import replay as ref
from rcn.logxfer.seal import ReplayWindow

CHECK, MARK = ref.CHECK, ref.MARK


def traffic(rng: random.Random, count: int, size: int, start: int = 0) -> list[tuple[int, int]]:
    """Commands as a receiver makes them: mostly new counters, some reordered a little or a
    lot, replays of recent and old ones, jumps of more than a window, CHECKs between."""
    out, high = [], start
    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:
            high += rng.choice((1, 1, 2, 3))
            counter = high
        elif kind < 0.6:
            counter = max(0, high - rng.randrange(size + 4))       # reordered or replayed
        elif kind < 0.65:
            high += rng.choice((size - 1, size, size + 1, 5 * size))
            counter = high
        elif kind < 0.7:
            counter = max(0, high - rng.randrange(size, 4 * size))  # far behind
        else:
            counter = max(0, high + rng.randrange(-size // 2, size // 2))
        if counter < 1 << 64:          # the hop header's counter is 64 bits
            out.append((MARK if rng.random() < 0.75 else CHECK, counter))
    return out


def with_window(commands, size) -> list[tuple[int, bool]]:
    """What rcn.logxfer.seal.ReplayWindow answers to the same commands."""
    window, out = ReplayWindow(size), []
    for op, counter in commands:
        fresh = window.fresh(counter)
        out.append((op, fresh))
        if op == MARK and (fresh or window.top - counter < size):
            window.mark(counter)
    return out


class ReferenceTests(SynchronousTestCase):
    def test_hand_made_example(self):
        commands = [(MARK, 10), (CHECK, 10), (MARK, 10), (CHECK, 7), (MARK, 7), (CHECK, 7),
                    (MARK, 13), (CHECK, 9), (CHECK, 5), (MARK, 30), (CHECK, 13), (CHECK, 29),
                    (CHECK, 26)]
        self.assertEqual(ref.run(commands, 4), [
            (MARK, True), (CHECK, False), (MARK, False),   # 10 seen
            (CHECK, True), (MARK, True), (CHECK, False),    # 7 within 10's window of 4
            (MARK, True), (CHECK, False), (CHECK, False),   # 9 behind 13's window, 5 too
            (MARK, True), (CHECK, False), (CHECK, True),    # 30 skipped 29; 13 is old
            (CHECK, False)])                                # 26 is 4 behind 30

    def test_reference_is_the_hop_layers_window(self):
        for seed in range(20):
            rng = random.Random(seed)
            size = rng.choice((2, 4, 8, 64, 4096))
            commands = traffic(rng, 400, size, start=rng.choice((0, 1 << 40, (1 << 64) - 10**6)))
            self.assertEqual(ref.run(commands, size), with_window(commands, size), seed)


class BlockTests(SynchronousTestCase):
    skip = SKIP

    def check(self, params, commands, seed, **kw):
        return cosim.check(lambda: replay.build(**params), replay.codec(params["counter_bits"]),
                           commands, replay.reference(commands, params["window"]), seed=seed,
                           label=f"replay {params}", **kw)

    def test_small_windows_with_back_pressure(self):
        for seed, window in enumerate((2, 4, 8, 64)):
            rng = random.Random(100 + seed)
            commands = traffic(rng, 600, window, start=rng.choice((0, (1 << 64) - 20000)))
            self.check(dict(window=window, counter_bits=64), commands, seed)

    def test_the_software_window_size(self):
        rng = random.Random(7)
        self.check(replay.PARAMS, traffic(rng, 300, replay.PARAMS["window"]), seed=3)

    def test_narrow_counters(self):
        rng = random.Random(8)
        commands = [(op, c % (1 << 12)) for op, c in traffic(rng, 300, 16)
                    if c < 1 << 12]
        self.check(dict(window=16, counter_bits=12), commands, seed=4)

    def test_one_command_per_cycle(self):
        commands = [(MARK, n) for n in range(200)]
        result = self.check(replay.SMALL, commands, seed=0, valid_p=1.0, ready_p=1.0)
        self.assertEqual(result.accepted_at[-1] - result.accepted_at[0], len(commands) - 1)

    def test_bad_parameters(self):
        self.assertRaises(ValueError, replay.build, 3, 64)
        self.assertRaises(ValueError, replay.build, 64, 6)
        self.assertRaises(TypeError, replay.build, 64.0, 64)
