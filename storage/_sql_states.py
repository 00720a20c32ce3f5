"""State sets of the rules (:mod:`trioforge._core.states`) written as SQL literals, so the
statements and the schema of both SQL backends name the states the rules name.

Only JobState constants go in, in their declared order, so the text is the same at every
import: the migrations built from it stay byte-identical to the ones already applied.
"""

from __future__ import annotations

from collections.abc import Iterable

from trioforge._core.states import PENDING_STATES, TERMINAL_STATES, JobState

__all__ = [
    "PENDING",
    "PENDING_VALUES",
    "RESCUE_RETRIES",
    "TERMINAL",
    "TERMINAL_V1",
    "state_list",
]


def state_list(states: Iterable[JobState]) -> str:
    """``('scheduled', 'available', 'retrying')``: ``states`` as an SQL IN-list."""
    chosen = frozenset(states)
    return "(" + ", ".join(f"'{s.value}'" for s in JobState if s in chosen) + ")"


#: The pending states' values, in declared order (an SQL array parameter).
PENDING_VALUES: tuple[str, ...] = tuple(s.value for s in JobState if s in PENDING_STATES)
PENDING = state_list(PENDING_STATES)
TERMINAL = state_list(TERMINAL_STATES)
#: The terminal states before workflows (the first migration's indexes name them).
TERMINAL_V1 = state_list(TERMINAL_STATES - {JobState.COMPENSATED})

#: Whether a rescued job's row gets another attempt (``rescue_outcome``'s rule): attempts
#: are left, or it is a workflow run lost on its last attempt (one more, to be undone).
RESCUE_RETRIES = "(attempt < max_attempts OR (workflow AND attempt = max_attempts))"
