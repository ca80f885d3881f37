"""Pair states and their transitions, shared by arrays and edges (DESIGN.md 4; 【0026】-【0038】).

Every party that keeps a row of the pair table 411 -- the source array, the
source edge, the target edge, the target array -- moves it through the same
states on the same events, each when the event reaches it:

=================  ============================================================
event              meaning (the answer RIO of the patent that carries it)
=================  ============================================================
CREATED            ICOK: the target side took PAIR_CREATE
DUPLEXED           DOK: the target side took DUPLEX (after initial copy/resync)
SUSPEND_REQUESTED  a host asked for Suspend; the answer is not back yet
SUSPENDED          SOK: Suspend done (host request, in the group's order)
FAILED             failure Suspend: RCN cannot go on (【0084】), failover SOK
                   (Fig. 13) or TAKEOVER
RESYNCED           DPOK: the target side sent its bitmap; differential copy
DELETED            the pair is dissolved (the row goes; Simplex again)
=================  ============================================================

A new row starts in SIMPLEX (the source edge makes it when PAIR_CREATE passes,
【0090】 step 2; the target array when PAIR_CREATE arrives). Anything not in
:data:`TRANSITIONS` is refused with :class:`PairStateError`, which names the
pair, the event and the state it is in.

Across the RCN a refusal travels as CHECK CONDITION, ILLEGAL REQUEST with a
vendor-specific ASC (:data:`ASC_PAIR_STATE` and friends); for a state refusal
the ASCQ is the refusing party's :attr:`PairState.code`, so
:func:`explain` on the other side can still name the state.
"""

from __future__ import annotations

import enum

from rcn.rio.fcp import ScsiResult, SenseKey, check_condition, parse_sense


class PairState(enum.Enum):
    SIMPLEX = "simplex"
    INITIAL_COPYING = "initial-copying"
    DUPLEX = "duplex"
    DUPLEX_PENDING = "duplex-pending"
    SUSPENDING = "suspending"
    SUSPEND = "suspend"
    FAILURE_SUSPEND = "failure-suspend"

    @property
    def code(self) -> int:
        """A small number for the wire (the ASCQ of a state refusal)."""
        return _STATE_CODES[self]


_STATE_CODES = {state: i for i, state in enumerate(PairState)}
_STATES_BY_CODE = {i: state for state, i in _STATE_CODES.items()}


class Event(enum.Enum):
    CREATED = "created"
    DUPLEXED = "duplexed"
    SUSPEND_REQUESTED = "suspend-requested"
    SUSPENDED = "suspended"
    FAILED = "failed"
    RESYNCED = "resynced"
    DELETED = "deleted"


S = PairState
E = Event
_COPYING = (S.INITIAL_COPYING, S.DUPLEX, S.DUPLEX_PENDING)

#: (state, event) -> next state. Everything else is refused.
TRANSITIONS: dict[tuple[PairState, Event], PairState] = {
    (S.SIMPLEX, E.CREATED): S.INITIAL_COPYING,
    (S.INITIAL_COPYING, E.DUPLEXED): S.DUPLEX,
    (S.DUPLEX_PENDING, E.DUPLEXED): S.DUPLEX,
    **{(s, E.SUSPEND_REQUESTED): S.SUSPENDING for s in _COPYING},
    **{(s, E.SUSPENDED): S.SUSPEND for s in (*_COPYING, S.SUSPENDING)},
    **{(s, E.FAILED): S.FAILURE_SUSPEND for s in (*_COPYING, S.SUSPENDING, S.FAILURE_SUSPEND)},
    (S.SUSPEND, E.FAILED): S.SUSPEND,            # already stopped by request: stays so
    (S.SUSPEND, E.RESYNCED): S.DUPLEX_PENDING,
    (S.FAILURE_SUSPEND, E.RESYNCED): S.DUPLEX_PENDING,
    # A source array that lost its link alone (its edge crashed, the FCIP link dropped) is in
    # failure Suspend while the edges and the target still replicate: its RESYNC meets them
    # there. The source array itself sends RESYNC only when stopped (RemoteCopy.resync).
    **{(s, E.RESYNCED): S.DUPLEX_PENDING for s in _COPYING},
    **{(s, E.DELETED): S.SIMPLEX for s in PairState},
}
del S, E

#: states in which the source side sends a volume's writes over the RCN
REPLICATING = frozenset({PairState.INITIAL_COPYING, PairState.DUPLEX, PairState.DUPLEX_PENDING})
#: states in which the target volume takes writes from its own host
TARGET_WRITABLE = frozenset({PairState.SIMPLEX, PairState.SUSPEND, PairState.FAILURE_SUSPEND})
#: states in which a target volume takes RIO WRs from its edge
TARGET_ACCEPTS = frozenset({PairState.INITIAL_COPYING, PairState.DUPLEX, PairState.DUPLEX_PENDING,
                            PairState.FAILURE_SUSPEND})
#: states in which a pair replicates nothing (suspended, by command or by failure)
STOPPED = frozenset({PairState.SUSPEND, PairState.FAILURE_SUSPEND})


class PairStateError(ValueError):
    """An event the pair's state does not allow. ``state`` is the state it is in."""

    def __init__(self, message: str, state: PairState):
        super().__init__(message)
        self.state = state


def next_state(state: PairState, event: Event, what: str = "the pair") -> PairState:
    """The state after ``event``, or ``PairStateError`` naming ``what`` and its state."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        raise PairStateError(f"{what} is {state.value}: {event.value} is not allowed "
                             f"(allowed: {', '.join(allowed)})", state) from None


def allows(state: PairState, event: Event) -> bool:
    return (state, event) in TRANSITIONS


# -- refusals on the wire ----------------------------------------------------------

ASC_PAIR_STATE = 0x80       # ASCQ: the refusing party's PairState.code
ASC_NO_PAIR = 0x81          # no pair for this volume / WWN
ASC_PAIR_PARAMS = 0x82      # the target volume cannot take the source (size, geometry)
ASC_GROUP_CONFLICT = 0x83   # the order guarantee ID is in use by another source
ASC_RCN_FAILED = 0x84       # the RCN cannot reach the partner (failure Suspend)
ASC_IN_PROGRESS = 0x85      # another control command of this pair is still running

_ASC_TEXT = {
    ASC_NO_PAIR: "no such pair",
    ASC_PAIR_PARAMS: "the target volume cannot take the source volume",
    ASC_GROUP_CONFLICT: "the order guarantee ID is used by another source",
    ASC_RCN_FAILED: "the RCN cannot reach the partner (failure Suspend)",
    ASC_IN_PROGRESS: "another control command of this pair is still running",
}


def state_refusal(state: PairState) -> ScsiResult:
    return check_condition(SenseKey.ILLEGAL_REQUEST, (ASC_PAIR_STATE, state.code))


def refusal(asc: int) -> ScsiResult:
    return check_condition(SenseKey.ILLEGAL_REQUEST, (asc, 0))


def explain(result: ScsiResult) -> str:
    """What a non-GOOD answer to a control or write RIO means, in words."""
    if result.good:
        return "GOOD"
    _, asc, ascq = parse_sense(result.sense)
    if asc == ASC_PAIR_STATE:
        state = _STATES_BY_CODE.get(ascq)
        return f"the partner's pair is {state.value if state else f'in state code {ascq}'}"
    if asc in _ASC_TEXT:
        return _ASC_TEXT[asc]
    return f"SCSI status 0x{result.status:02x}, sense ASC/ASCQ 0x{asc:02x}/0x{ascq:02x}"
