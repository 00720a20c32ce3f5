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

#: Text as a careless caller or a handler's error may hold it: NUL, lone surrogates (high,
#: low, or a pair written as two code points), control and bidi characters and non-BMP
#: characters, among ordinary ones.
_AWKWARD = ["\x00", "\ud800", "\udfff", "\udbff", "\x1b", "\x07", "\x7f", "\n", "\u202e"]
#: A list joined, not ``st.text``: that merges its alphabet into one range of code points
#: without surrogates, where the awkward ones would be all but never drawn.
awkward_text = st.lists(
    st.one_of(
        st.sampled_from([*_AWKWARD, "\U0001f600", "\U0010ffff", "\\", "'", "%"]),
        st.characters(),
    ),
    min_size=1,
    max_size=24,
).map("".join)
