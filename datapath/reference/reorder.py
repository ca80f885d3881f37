"""Reference model of ``datapath.kernels.reorder``: a dict and an int.

Sequences are Python ints taken modulo 2**64; the window is
``[next_expected, next_expected + capacity)`` measured by the modular distance
``(sequence - next_expected) % 2**64``; up to 2**63 behind is "applied".
"""

from __future__ import annotations

MODULUS = 2 ** 64
HALF = 2 ** 63

ACCEPTED = 0
APPLIED_DUPLICATE = 1
BUFFERED_DUPLICATE = 2
BEYOND_WINDOW = 3


class ReorderModel:
    def __init__(self, capacity: int, first_sequence: int = 1):
        self.capacity = capacity
        self.next_expected = first_sequence % MODULUS
        self.buffered: dict[int, int] = {}        # sequence -> handle

    def ahead(self, sequence: int) -> int:
        return (sequence - self.next_expected) % MODULUS

    @property
    def occupancy(self) -> int:
        return len(self.buffered)

    @property
    def highest_buffered(self) -> int | None:
        if not self.buffered:
            return None
        return max(self.buffered, key=self.ahead)

    def entries(self) -> list[tuple[int, int]]:
        """``(sequence, handle)`` pairs in window order."""
        return sorted(self.buffered.items(), key=lambda item: self.ahead(item[0]))

    def insert(self, sequences, handles) -> list[int]:
        verdicts = []
        for sequence, handle in zip(sequences, handles):
            sequence = int(sequence) % MODULUS
            ahead = self.ahead(sequence)
            if ahead < self.capacity:
                if sequence in self.buffered:
                    verdicts.append(BUFFERED_DUPLICATE)
                else:
                    self.buffered[sequence] = int(handle)
                    verdicts.append(ACCEPTED)
            elif ahead >= HALF:
                verdicts.append(APPLIED_DUPLICATE)
            else:
                verdicts.append(BEYOND_WINDOW)
        return verdicts

    def release(self, limit: int | None = None) -> tuple[list[int], int]:
        """Handles of the run from ``next_expected`` (at most ``limit``), and its first sequence."""
        first = self.next_expected
        handles = []
        while (limit is None or len(handles) < limit) and self.next_expected in self.buffered:
            handles.append(self.buffered.pop(self.next_expected))
            self.next_expected = (self.next_expected + 1) % MODULUS
        return handles, first

    def missing(self, max_ranges: int | None = None) -> list[tuple[int, int]]:
        """Inclusive ranges of absent sequences up to the highest buffered; split at 2**64 - 1."""
        ranges: list[list[int]] = []
        if self.buffered:
            for offset in range(self.ahead(self.highest_buffered)):
                sequence = (self.next_expected + offset) % MODULUS
                if sequence in self.buffered:
                    continue
                if ranges and ranges[-1][1] + 1 == sequence:   # never true for sequence 0
                    ranges[-1][1] = sequence
                else:
                    ranges.append([sequence, sequence])
        if max_ranges is not None:
            ranges = ranges[:max_ranges]
        return [(first, last) for first, last in ranges]
