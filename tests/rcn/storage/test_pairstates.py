"""The array's side of the pair state machine, table-driven: for each role, every host
command, incoming control RIO, RIO WR and host write in every state.

The expected tables are written out by hand from docs/pairs.md, not derived from
rcn.pairstate: an allowed command must make exactly the listed state changes, every
other one is refused with an error naming the state, and changes nothing.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from datapath.frames import fcp
from datapath.kernels.bitmap import DifferentialBitmap
from rcn.pairstate import (ASC_NO_PAIR, ASC_PAIR_STATE, PairState, PairStateError)
from rcn.rio.fcp import ScsiResult, parse_sense
from rcn.storage.copyerrors import Conflict, HostWriteRefused
from tests.rcn.storage.support import PARTNER, TRACK, MiB, Rig, control_command, write_command

S = PairState
A = fcp.RcnServiceAction
ALL = tuple(S)
IC, D, DP, SG, SP, FS, SX = (S.INITIAL_COPYING, S.DUPLEX, S.DUPLEX_PENDING, S.SUSPENDING,
                             S.SUSPEND, S.FAILURE_SUSPEND, S.SIMPLEX)
RESIDUAL = fcp.build_residual_report(7, 9, 0, 1)

# (role, command) -> {state: (role after, [the state after each event])}; missing: refused.
# "gone" as the role: the row is dropped. An empty list: answered at once, nothing changes.
HOST_COMMANDS = {
    ("source", "pair_create"): {SX: ("source", [IC, D])},
    ("source", "suspend"): {s: ("source", [SG, SP]) for s in (IC, D, DP)},
    ("source", "resync"): {s: ("source", [DP, D]) for s in (SP, FS)},
    ("source", "takeover"): {},
    ("source", "pair_delete"): {s: ("gone", [SX]) for s in ALL},
    ("source", "reverse"): {s: ("target", [SP]) for s in (SP, FS)},
    ("target", "pair_create"): {SX: ("source", [IC, D])},
    ("target", "suspend"): {**{s: ("target", [FS]) for s in (IC, D, DP)},
                            SP: ("target", []), FS: ("target", [])},
    ("target", "resync"): {},
    ("target", "takeover"): {s: ("target", [FS]) for s in (IC, D, DP, FS)},
    ("target", "pair_delete"): {s: ("gone", [SX]) for s in ALL},
    ("target", "reverse"): {s: ("source", [SP]) for s in (SP, FS)},
}
# commands that send a RIO when allowed (suspend at an already stopped target does not)
SENDS = {"pair_create": ["PAIR_CREATE", "DUPLEX"], "suspend": ["SUSPEND"],
         "resync": ["RESYNC", "DUPLEX"], "takeover": ["TAKEOVER"], "pair_delete": ["DELETE"],
         "reverse": []}

# incoming RCN CONTROL to a target-role volume: (action, failure flag) -> {state: after}
TARGET_CONTROLS = {
    (A.PAIR_CREATE, False): {SX: IC},
    (A.DUPLEX, False): {IC: D, DP: D},
    (A.SUSPEND, False): {IC: SP, D: SP, DP: SP, SG: SP},
    (A.SUSPEND, True): {IC: FS, D: FS, DP: FS, SG: FS, FS: FS, SP: SP},
    (A.RESYNC, False): {SP: DP, FS: DP, IC: DP, D: DP, DP: DP},   # the source failed alone
    (A.DELETE, False): {s: None for s in ALL},
}
# the FAILURE notice to a source-role volume
SOURCE_FAILURE = {IC: FS, D: FS, DP: FS, SG: FS, FS: FS, SP: SP}
TARGET_TAKES_WRS = (IC, D, DP, FS)


class Recorder:
    """The state after each event the remote copy program applied."""

    def __init__(self, rc):
        self.states: list[PairState] = []
        rc.observers.append(lambda pair, before, why: self.states.append(pair.state))


def make(role: str, state: PairState) -> Rig:
    rig = Rig(volumes=((0, MiB),))
    rig.volumes[0].write(0, b"\x01" * 4096)
    rig.add_pair(role=role, state=state)
    rig.session.control["RESYNC"] = ScsiResult(data_in=DifferentialBitmap(MiB, TRACK).serialize())
    rig.session.control["SUSPEND"] = ScsiResult(data_in=RESIDUAL)
    rig.session.control["TAKEOVER"] = ScsiResult(data_in=RESIDUAL)
    return rig


def run(rig: Rig, command: str):
    rc = rig.rc
    if command == "pair_create":
        return rc.pair_create(0, PARTNER, 5)
    return getattr(rc, command)(0)


class HostCommandTests(TestCase):
    def test_every_command_in_every_state(self):
        for (role, command), allowed in HOST_COMMANDS.items():
            for state in S:
                with self.subTest(role=role, command=command, state=state.value):
                    self.check(role, command, state, allowed.get(state))

    def check(self, role, command, state, expected):
        rig = make(role, state)
        recorder = Recorder(rig.rc)
        d = run(rig, command)
        if expected is None:
            failure = self.failureResultOf(d, PairStateError, Conflict)
            self.assertIn(f"is {state.value}", str(failure.value))
            row = rig.rc.pairs.for_lun(0)
            self.assertEqual((row.role, row.state, rig.session.log), (role, state, []))
            return
        self.successResultOf(d)
        role_after, states = expected
        self.assertEqual(recorder.states, states)
        row = rig.rc.pairs.for_lun(0)
        if role_after == "gone":
            self.assertIsNone(row)
        else:
            self.assertEqual((row.role, row.state), (role_after, states[-1] if states else state))
        # a simplex row is dropped without a word; a stopped target fails over at once
        quiet = (command == "pair_delete" and state is SX) or not states
        self.assertEqual(rig.session.controls, [] if quiet else SENDS[command])

    def test_pair_create_without_a_row(self):
        rig = Rig(volumes=((0, MiB),))
        recorder = Recorder(rig.rc)
        self.successResultOf(rig.rc.pair_create(0, PARTNER, 5))
        self.assertEqual(recorder.states, [IC, D])


class IncomingControlTests(TestCase):
    def answer(self, rig, action, failure=False, lun=0, source_lun=5, **kw):
        if action is A.PAIR_CREATE and "data" not in kw:
            kw["data"] = fcp.build_pair_params(MiB, 512, TRACK, 0)
        if action is A.RESYNC:
            kw.setdefault("allocation_length", 44 + 8)
        return rig.rc.control_received(control_command(action, lun, source_lun, failure=failure,
                                                       **kw))

    def test_target_volume_every_action_in_every_state(self):
        for (action, failure), allowed in TARGET_CONTROLS.items():
            for state in S:
                with self.subTest(action=action.name, failure=failure, state=state.value):
                    rig = make("target", state)
                    result = self.answer(rig, action, failure)
                    row = rig.rc.pairs.for_lun(0)
                    if state not in allowed:
                        self.assertFalse(result.good)
                        self.assertEqual(parse_sense(result.sense), (5, ASC_PAIR_STATE, state.code))
                        self.assertEqual(row.state, state)
                        continue
                    self.assertTrue(result.good)
                    if allowed[state] is None:
                        self.assertIsNone(row)
                    else:
                        self.assertEqual((row.role, row.state), ("target", allowed[state]))

    def test_failure_notice_to_a_source_volume(self):
        for state in S:
            with self.subTest(state=state.value):
                rig = make("source", state)
                # the source edge: FCP LUN = the target LUN, source_lun = this volume
                result = self.answer(rig, A.SUSPEND, True, lun=5, source_lun=0)
                row = rig.rc.pairs.for_lun(0)
                if state in SOURCE_FAILURE:
                    self.assertTrue(result.good)
                    self.assertEqual(row.state, SOURCE_FAILURE[state])
                else:
                    self.assertEqual(parse_sense(result.sense), (5, ASC_PAIR_STATE, state.code))
                    self.assertEqual(row.state, state)

    def test_other_actions_to_a_source_volume_find_no_pair(self):
        for action in (A.DUPLEX, A.SUSPEND, A.RESYNC, A.DELETE):
            rig = make("source", D)
            result = self.answer(rig, action, lun=5, source_lun=0)
            self.assertEqual(parse_sense(result.sense)[1], ASC_NO_PAIR, action.name)
            self.assertEqual(rig.rc.pairs.for_lun(0).state, D)

    def test_takeover_is_not_for_an_array(self):
        rig = make("target", D)
        result = self.answer(rig, A.TAKEOVER)
        self.assertEqual(parse_sense(result.sense)[1:], (0x24, 0))
        self.assertEqual(rig.rc.pairs.for_lun(0).state, D)


class WriteTests(TestCase):
    def test_rio_wr_to_a_target_in_every_state(self):
        for state in S:
            rig = make("target", state)
            result = rig.rc.admit_write(write_command(0, 0, bytes(512)))
            if state in TARGET_TAKES_WRS:
                self.assertIsNone(result, state)
            else:
                self.assertEqual(parse_sense(result.sense), (5, ASC_PAIR_STATE, state.code), state)

    def test_rio_wr_without_a_target_pair_is_no_pair(self):
        rig = make("source", D)
        self.assertEqual(parse_sense(rig.rc.admit_write(write_command(0, 0, bytes(512))).sense)[1],
                         ASC_NO_PAIR)
        rig = make("target", D)
        other = rig.rc.admit_write(write_command(0, 0, bytes(512), initiator=0x500A0980000000FF))
        self.assertEqual(parse_sense(other.sense)[1], ASC_NO_PAIR)
        rig = Rig()
        self.assertEqual(parse_sense(rig.rc.admit_write(write_command(0, 0, bytes(512))).sense)[1],
                         ASC_NO_PAIR)

    def test_host_writes_in_every_state(self):
        for role in ("source", "target"):
            for state in S:
                with self.subTest(role=role, state=state.value):
                    rig = make(role, state)
                    pair = rig.rc.pairs.for_lun(0)
                    d = rig.rc.host_write(0, 2 * TRACK, b"\x02" * 512)
                    if role == "target" and state in (IC, D, DP, SG):
                        failure = self.failureResultOf(d, HostWriteRefused)
                        self.assertIn(f"state {state.value}", str(failure.value))
                        continue
                    self.successResultOf(d)
                    sent = len(rig.session.writes)
                    recorded = pair.bitmap.popcount()
                    if role == "source" and state in (IC, D, DP):
                        self.assertEqual((sent, recorded), (1, 0))
                    elif state in (SG, SP, FS):
                        self.assertEqual((sent, recorded), (0, 1))
                    else:
                        self.assertEqual((sent, recorded), (0, 0))
