"""User code that only a type checker reads (``mypy --strict`` in ``make lint``), never run.

Correct calls carry ``assert_type``; each wrong call carries a ``# type: ignore[code]``
that mypy's ``warn_unused_ignores`` (on under ``strict``) proves necessary: were the call
accepted, the unused ignore would be an error. No module here is named ``test_*``, so
pytest collects nothing from it.
"""
