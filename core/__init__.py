"""The kernel: the rules, errors, clock and cron, as pure code that imports nothing else of
trioforge.

Every other layer builds on these modules (``core ← storage ← actors ← runtime``, the web
app and the CLI on top; ``tests/test_layers.py`` holds the order). Nothing here reads a
clock, touches storage or starts a task: callers pass ``now`` in and get a decision back.

- :mod:`~trioforge._core.states`: job states, claim order and the transition table;
- :mod:`~trioforge._core.retry`: the retry policy and what a failure leads to;
- :mod:`~trioforge._core.outcomes`: how an attempt ended, for hooks, metrics and logs;
- :mod:`~trioforge._core.flow`: rate and concurrency limits;
- :mod:`~trioforge._core.cron`: cron expressions, zones and daylight-saving policy;
- :mod:`~trioforge._core.prefetch`: how far a queue's fetcher claims ahead of its free slots;
- :mod:`~trioforge._core.errors`, :mod:`~trioforge._core.clock`, :mod:`~trioforge._core.extras`,
  :mod:`~trioforge._core.durations`, :mod:`~trioforge._core.text`: the exception
  hierarchy, time sources, duration parsing and storable text.
"""
