"""Shared hypothesis strategies for scheduling tests."""

from __future__ import annotations

from hypothesis import strategies as st

import trioforge
from trioforge import Priority

priorities = st.sampled_from(list(Priority))

#: Delays in whole milliseconds, so virtual-time comparisons are exact.
delays = st.integers(min_value=0, max_value=60_000).map(lambda ms: ms / 1000)

retry_policies = st.builds(
    trioforge.Retry,
    max_attempts=st.integers(min_value=1, max_value=6),
    backoff=st.sampled_from(["exponential", "constant"]),
    base_delay=st.integers(min_value=0, max_value=30),
    max_delay=st.integers(min_value=0, max_value=120),
)
