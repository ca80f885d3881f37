"""Reference model of the hop layer's replay window (``rcn.logxfer.seal.ReplayWindow``,
re-expressed here: ``datapath`` may not import ``rcn``), for ``hdl_models.replay``.

A receiver keeps, per sender, the highest counter whose datagram verified (``top``) and
which of the ``size`` counters up to it were seen. A counter is *fresh* when it is above
``top``, or within the window and not seen; only a fresh counter's datagram is accepted,
and only then is it marked. Written as a set, to be obviously right; the tests hold it to
``ReplayWindow`` (an integer bitmap) on random traffic.
"""

from __future__ import annotations

CHECK = 0        # is the counter fresh? (no change)
MARK = 1         # is it fresh? then record it (after its datagram's tag verified)


class ReplayModel:
    def __init__(self, size: int):
        self.size = size
        self.top = -1
        self.seen: set[int] = set()

    def fresh(self, counter: int) -> bool:
        if counter > self.top:
            return True
        return self.top - counter < self.size and counter not in self.seen

    def mark(self, counter: int) -> None:
        """Record ``counter``; a counter already behind the window changes nothing."""
        if counter > self.top:
            self.top = counter
            self.seen = {c for c in self.seen if self.top - c < self.size}
        if self.top - counter < self.size:
            self.seen.add(counter)


def run(commands: list[tuple[int, int]], size: int) -> list[tuple[int, bool]]:
    """``(op, counter)`` commands -> ``(op, fresh before the command)`` each; MARK records."""
    model, out = ReplayModel(size), []
    for op, counter in commands:
        fresh = model.fresh(counter)
        out.append((op, fresh))
        if op == MARK:
            model.mark(counter)
    return out
