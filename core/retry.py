"""How a failed attempt is retried: the policy, backoff, and what a failure or a rescue leads to.

Pure, like :mod:`trioforge._core.states`: ``now`` and the random draw come in from the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Literal

import attrs

from trioforge._core.durations import seconds
from trioforge._core.errors import ConfigurationError, Discard, PayloadError
from trioforge._core.states import MAX_STORED_INT, Failed, Rescued

__all__ = [
    "Retry",
    "backoff_delay",
    "discard_reason",
    "failure_outcome",
    "rescue_outcome",
]


def _base_delay(value: float | dt.timedelta) -> float:
    return seconds(value, "Retry.base_delay")


def _max_delay(value: float | dt.timedelta) -> float:
    return seconds(value, "Retry.max_delay")


@attrs.frozen
class Retry:
    """How a failing job is retried.

    ``max_attempts`` counts every attempt, the first included (1 means never retry).
    After failed attempt *n* the job waits ``min(base_delay * 2**(n-1), max_delay)`` seconds
    (``backoff="exponential"``) or ``base_delay`` (``"constant"``), reduced by up to
    ``jitter`` (a fraction in [0, 1)) at random. ``on`` limits which exception types are
    retried; an empty tuple retries every exception. A timed-out attempt raises
    :class:`~trioforge.JobTimeoutError` (a ``TimeoutError``) for this purpose.

    An exception group (what a nursery inside the handler raises) retries only if every
    exception in it, nested groups included, is of a type in ``on``: one error that is not
    retryable makes the whole attempt not retryable.
    """

    max_attempts: int = 3
    backoff: Literal["exponential", "constant"] = "exponential"
    #: Seconds (given as seconds or a timedelta), as ``max_delay``.
    base_delay: float = attrs.field(default=1.0, converter=_base_delay)
    max_delay: float = attrs.field(default=300.0, converter=_max_delay)
    jitter: float = 0.0
    on: tuple[type[BaseException], ...] = ()
    discard_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = ()

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_STORED_INT:
            raise ConfigurationError(
                f"Retry.max_attempts must be between 1 (no retries) and {MAX_STORED_INT}, "
                f"got {self.max_attempts!r}"
            )
        if self.backoff not in ("exponential", "constant"):
            raise ConfigurationError("Retry.backoff must be 'exponential' or 'constant'")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigurationError("Retry.jitter must be a fraction in [0, 1)")
        is_function = callable(self.discard_on) and not isinstance(self.discard_on, type)
        if not is_function and not (
            isinstance(self.discard_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in self.discard_on)
        ):
            raise ConfigurationError(
                "Retry.discard_on must be a tuple of exception types (one type: "
                f"(TypeError,)) or a function (exc) -> bool, got {self.discard_on!r}"
            )

    def discards(self, exc: BaseException) -> bool:
        """Whether ``exc`` (a group: any exception in it) is one ``discard_on`` names."""
        condition = self.discard_on
        if condition == ():
            return False
        try:
            if isinstance(exc, BaseExceptionGroup):
                found, _ = exc.split(condition)
                return found is not None
            if isinstance(condition, tuple):
                return isinstance(exc, condition)
            return bool(condition(exc))
        except Exception:
            return False

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is of a type this policy retries (a group: all of its leaves)."""
        if not self.on:
            return True
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(self.on)
            return rest is None
        return isinstance(exc, self.on)


def discard_reason(exc: BaseException) -> str | None:
    """The reason of the :class:`~trioforge.Discard` that ``exc`` is or holds (anywhere in
    nested exception groups), None if it holds none. Several Discards in one group: their
    distinct reasons joined by "; ", in the group's order."""
    if isinstance(exc, Discard):
        return exc.reason
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found, _ = exc.split(Discard)
    if found is None:
        return None
    reasons: list[str] = []
    pending: list[BaseException] = [found]
    while pending:
        leaf = pending.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            pending[:0] = leaf.exceptions
        elif isinstance(leaf, Discard) and leaf.reason not in reasons:
            reasons.append(leaf.reason)
    return "; ".join(reasons)


def backoff_delay(policy: Retry, attempt: int, u: float = 0.0) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based); ``u`` in [0, 1) is the
    random draw used for jitter, passed in so the rule stays deterministic."""
    if policy.backoff == "constant":
        delay = policy.base_delay
    else:
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        delay = min(policy.base_delay * 2.0 ** min(attempt - 1, 1000), policy.max_delay)
    return delay * (1.0 - policy.jitter * u)


def failure_outcome(
    policy: Retry, attempt: int, exc: BaseException, now: float, u: float = 0.0
) -> Failed:
    """Decide what failed attempt ``attempt`` leads to (a final PayloadError: dead at once)."""
    if (
        attempt >= policy.max_attempts
        or policy.discards(exc)
        or not policy.retries(exc)
        or (isinstance(exc, PayloadError) and exc.final)
    ):
        return Failed(retry_at=None)
    return Failed(retry_at=now + backoff_delay(policy, attempt, u))


def rescue_outcome(
    attempt: int, max_attempts: int, now: float, *, workflow: bool = False
) -> Rescued:
    """A job whose owner vanished: retry at once if attempts are left (the lost attempt
    counts), else dead. Backoff is not applied: the failure was the worker's, not the job's.

    A workflow run lost on its last attempt gets one attempt more, due at once, so that it
    is undone (its compensations run) like a run failing for good any other way: its
    driver sees ``attempt > max_attempts`` and goes straight to the undo. Lost again on
    that extra attempt, it goes dead: a run that keeps killing its worker cannot loop."""
    if attempt < max_attempts or (workflow and attempt == max_attempts):
        return Rescued(retry_at=now)
    return Rescued(retry_at=None)
