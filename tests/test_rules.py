"""The pure scheduling rules, checked on their own."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.strategies import retry_policies
from trioforge import ConfigurationError, PayloadError, Retry
from trioforge._core.retry import backoff_delay, failure_outcome, rescue_outcome
from trioforge._core.states import (
    PENDING_STATES,
    TERMINAL_STATES,
    Cancelled,
    Claimed,
    Failed,
    JobState,
    Retried,
    Succeeded,
    next_state,
    parse_priority,
)
from trioforge._core.wakes import left_over


@given(retry_policies, st.integers(min_value=1, max_value=50))
def test_backoff_follows_the_formula(policy: Retry, attempt: int) -> None:
    delay = backoff_delay(policy, attempt)
    if policy.backoff == "constant":
        assert delay == policy.base_delay
    else:
        assert delay == min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)


@given(retry_policies, st.integers(min_value=1, max_value=20))
def test_backoff_never_shrinks_between_attempts(policy: Retry, attempt: int) -> None:
    assert backoff_delay(policy, attempt + 1) >= backoff_delay(policy, attempt)


@given(st.floats(min_value=0, max_value=0.99), st.floats(min_value=0, max_value=0.999))
def test_jitter_only_shortens_within_its_fraction(jitter: float, u: float) -> None:
    policy = Retry(base_delay=10, jitter=jitter)
    delay = backoff_delay(policy, 1, u)
    assert 10 * (1 - jitter) <= delay <= 10


@given(retry_policies, st.integers(min_value=1, max_value=10))
def test_failure_retries_only_while_attempts_remain(policy: Retry, attempt: int) -> None:
    outcome = failure_outcome(policy, attempt, RuntimeError("x"), now=100.0)
    if attempt >= policy.max_attempts:
        assert outcome.retry_at is None
    else:
        assert outcome.retry_at == 100.0 + backoff_delay(policy, attempt)


def test_retry_on_limits_which_errors_retry() -> None:
    policy = Retry(max_attempts=5, on=(ConnectionError,))
    assert failure_outcome(policy, 1, ConnectionResetError(), 0.0).retry_at is not None
    assert failure_outcome(policy, 1, ValueError(), 0.0).retry_at is None


@given(retry_policies, st.integers(min_value=1, max_value=10))
def test_a_final_payload_error_is_never_retried(policy: Retry, attempt: int) -> None:
    final = PayloadError("return value of job 'x' does not fit Any", final=True)
    assert failure_outcome(policy, attempt, final, now=100.0).retry_at is None
    plain = PayloadError("payload of job 'y' does not fit P")  # raised by the handler itself
    retried = failure_outcome(policy, attempt, plain, now=100.0).retry_at is not None
    assert retried == (attempt < policy.max_attempts)


def test_terminal_states_accept_only_an_operator_retry() -> None:
    for state in TERMINAL_STATES:
        assert next_state(state, Claimed()) is None
        assert next_state(state, Succeeded()) is None
        assert next_state(state, Cancelled()) is None
    assert next_state(JobState.COMPLETED, Retried()) is None
    assert next_state(JobState.DEAD, Retried()) is JobState.AVAILABLE


def test_pending_states_are_claimable_and_cancellable() -> None:
    for state in PENDING_STATES:
        assert next_state(state, Claimed()) is JobState.RUNNING
        assert next_state(state, Cancelled()) is JobState.CANCELLED
        assert next_state(state, Failed(retry_at=None)) is None


def test_rescue_counts_the_lost_attempt() -> None:
    assert rescue_outcome(attempt=1, max_attempts=3, now=5.0).retry_at == 5.0
    assert rescue_outcome(attempt=3, max_attempts=3, now=5.0).retry_at is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff": "linear"}, "backoff"),
        ({"base_delay": -1}, "Retry.base_delay"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_bad_retry_policies_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_priorities_by_name_and_number() -> None:
    assert parse_priority("critical") > parse_priority("high") > parse_priority("normal")
    assert parse_priority("normal") > parse_priority("low")
    assert parse_priority(7) == 7
    with pytest.raises(ConfigurationError, match="urgent"):
        parse_priority("urgent")  # type: ignore[arg-type]


_ERRORS = [TypeError, ValueError, KeyError, ConnectionError, TimeoutError]


@given(
    retry_policies,
    st.integers(min_value=1, max_value=10),
    st.sampled_from(_ERRORS),
    st.lists(st.sampled_from(_ERRORS), max_size=3).map(tuple),
)
def test_discard_on_errors_go_straight_to_dead(
    policy: Retry, attempt: int, error: type[Exception], discard_on: tuple[type[Exception], ...]
) -> None:
    discarding = attrs.evolve(policy, discard_on=discard_on)
    outcome = failure_outcome(discarding, attempt, error("x"), now=100.0)
    if issubclass(error, discard_on):
        assert outcome.retry_at is None
    else:  # the ordinary rule, unchanged
        assert outcome == failure_outcome(policy, attempt, error("x"), now=100.0)


@given(retry_policies, st.integers(min_value=1, max_value=10), st.booleans())
def test_a_discard_predicate_decides_per_error(policy: Retry, attempt: int, fatal: bool) -> None:
    discarding = attrs.evolve(policy, discard_on=lambda exc: "fatal" in str(exc))
    error = RuntimeError("fatal" if fatal else "flaky")
    outcome = failure_outcome(discarding, attempt, error, now=0.0)
    if fatal:
        assert outcome.retry_at is None
    else:
        assert outcome == failure_outcome(policy, attempt, error, now=0.0)


def test_one_discard_on_error_in_a_group_sends_the_job_to_dead() -> None:
    policy = Retry(max_attempts=5, discard_on=(TypeError,))
    group = ExceptionGroup("g", [ValueError("a"), ExceptionGroup("h", [TypeError("b")])])
    assert failure_outcome(policy, 1, group, 0.0).retry_at is None
    assert failure_outcome(policy, 1, ExceptionGroup("g", [ValueError()]), 0.0).retry_at == 1.0


def test_a_raising_discard_predicate_falls_back_to_the_retry_rules() -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in the predicate")

    assert failure_outcome(Retry(discard_on=broken), 1, ValueError(), 0.0).retry_at == 1.0


@pytest.mark.parametrize("bad", [(TypeError, "x"), [TypeError], int, "TypeError"])
def test_discard_on_must_be_exception_types_or_a_function(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="discard_on"):
        Retry(discard_on=bad)  # type: ignore[arg-type]


# --- addressed wake-ups: when the claim that answers one passes it on (_core.wakes) -------

_run_ats = st.lists(st.floats(0.0, 100.0), max_size=8)


@given(_run_ats, st.integers(1, 8), st.integers(1, 20), st.booleans())
def test_a_full_claim_passes_on_unless_it_took_the_announced_jobs(
    run_ats: list[float], limit: int, owed: int, limited: bool
) -> None:
    run_ats = run_ats[:limit] + [50.0] * (limit - len(run_ats))  # full: ``limit`` jobs
    passes = left_over(run_ats, taken=limit, limit=limit, owed=owed, owed_at=50.0, limited=limited)
    assert passes == (limit < owed or min(run_ats) < 50.0)


@given(st.integers(0, 7), st.integers(1, 20), st.booleans())
def test_a_short_claim_passes_on_only_what_a_limit_held_back(
    taken: int, owed: int, limited: bool
) -> None:
    # Older jobs than the announced ones do not matter: the claim took every due job it saw.
    passes = left_over(
        [0.0] * taken, taken=taken, limit=8, owed=owed, owed_at=50.0, limited=limited
    )
    assert passes == (limited and taken < owed)


@pytest.mark.parametrize(
    ("taken", "limit", "owed", "run_ats", "limited", "passes"),
    [
        (1, 64, 1, [50.0], False, False),  # a trickle: one job, taken
        (0, 64, 1, [], False, False),  # another process took it
        (64, 64, 100, [50.0] * 64, False, True),  # 36 announced jobs left
        (1, 1, 1, [50.0], False, False),  # a pool of one took the one announced
        (1, 1, 1, [10.0], False, True),  # ... took an older job instead
        (0, 64, 3, [], True, True),  # a limit held them: others learn its next token or
        # re-claim when a running job frees a concurrency slot
    ],
)
def test_left_over_cases(
    taken: int, limit: int, owed: int, run_ats: list[float], limited: bool, passes: bool
) -> None:
    assert (
        left_over(run_ats, taken=taken, limit=limit, owed=owed, owed_at=50.0, limited=limited)
        is passes
    )
