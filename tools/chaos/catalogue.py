"""The fault catalogue: roles, fault kinds, the documented way back from each, the plan."""

from __future__ import annotations

import random

ROLES = {"source-array": "arrayA", "target-array": "arrayB", "source-edge": "edgeA",
         "target-edge": "edgeB", "core": "core1", "mgmt": "mgmt"}
FAULTS = ("kill", "stop", "cut", "rotate")
CUT_LINKS = {"source-edge": (1,), "target-edge": (2,), "core": (1, 2)}
LAB_OF_FAULT = {"kill": "mgmt", "stop": "mgmt", "cut": "wanem", "rotate": "mgmt"}

# -- the documented way back, per (role, fault) -------------------------------------------
# "auto": the RCN recovers by itself (restart, reconnect, retransmit, replay);
# "resync": `rcn array resync LUN` on the source array once its pair shows Suspend or
# failure Suspend (docs/pairs.md, Resync). Chaos tries the ladder AUTO, then RESYNC for
# every fault; a fault that needed a step its entry does not name counts as "unexpected"
# (a failure of the run), one that nothing brought back as "stuck".
AUTO, RESYNC = "auto", "resync"
RECOVERY: dict[tuple[str, str], str] = {
    ("source-array", "kill"): AUTO,      # rows, bitmaps and write intent on disk: it
                                         # resyncs what was in flight by itself
    ("source-array", "stop"): AUTO,
    ("target-array", "kill"): AUTO,      # the target edge applies again once it is back
    ("target-array", "stop"): AUTO,
    ("source-edge", "kill"): AUTO,       # the array's RIOs fail: failure Suspend, and it
                                         # resyncs by itself at link-up (auto_resync)
    ("source-edge", "stop"): AUTO,
    ("source-edge", "cut"): AUTO,        # retransmission, within failure_timeout
    ("target-edge", "kill"): AUTO,       # the source edge retransmits what it retains
    ("target-edge", "stop"): AUTO,
    ("target-edge", "cut"): AUTO,
    ("core", "kill"): AUTO,
    ("core", "stop"): AUTO,
    ("core", "cut"): AUTO,
    ("mgmt", "kill"): AUTO,              # the devices keep their settings meanwhile
    ("mgmt", "stop"): AUTO,
    ("mgmt", "rotate"): AUTO,            # every link and group key rotated under load: the
                                         # overlap keeps both epochs open (tools.chaos.keys)
}
# Faults known to strand the pair today (issue 15); each entry names why. Remove an entry
# once its fix lands: tests/tools/test_chaos.py then requires that fault to recover.
KNOWN_STUCK: dict[tuple[str, str], str] = {}

GAP = (0.5, 2.5)             # seconds of workload before each fault
HOLD = (0.5, 5.0)            # seconds a process stays stopped / a link cut (past the
                             # management server's 5 s staleness sometimes)
KILL_GAP = (0.0, 1.0)        # seconds between a kill and the restart


def applicable(role: str, fault: str) -> bool:
    return (role, fault) in RECOVERY


def plan(roles: list[str], faults: list[str], rounds: int, seed: int
         ) -> list[tuple[str, str]]:
    """(role, fault) in run order: round after round, every role in turn; each role goes
    round its applicable fault kinds in an order drawn from ``seed``."""
    rng = random.Random(seed)
    kinds = {}
    for role in roles:
        mine = [f for f in faults if applicable(role, f)]
        rng.shuffle(mine)
        kinds[role] = mine
    out = []
    for r in range(rounds):
        for role in roles:
            if kinds[role]:
                out.append((role, kinds[role][r % len(kinds[role])]))
    return out
