"""Formatters for trioforge's log records, text and JSON, over the standard ``logging``.

A worker logs one record per attempt event on ``trioforge.attempts`` (started, completed,
failed, timed out, discarded, cancelled, released, suspended, resumed, rescued, lost) with
the job's fields in ``extra``: ``event``, ``job_id``, ``job_name``, ``queue``, ``attempt``,
``max_attempts`` and, as they apply, ``duration``, ``state``, ``error``, ``retry_in``,
``retry_at``, ``wake_at``, ``why``. Records a handler logs through ``ctx.log``
(``trioforge.job``) carry ``job_id``, ``job_name``, ``queue``, ``attempt`` and
``max_attempts``. See docs/logging.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Literal, TextIO

from trioforge._core.errors import ConfigurationError

__all__ = ["JsonFormatter", "TextFormatter", "configure"]

#: The attributes every ``LogRecord`` has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

#: ``trioforge worker``'s text format.
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields ``extra`` put on ``record``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """The standard formatter (by default ``%(asctime)s %(levelname)s %(name)s:
    %(message)s``), which also names the job of a record that carries one but does not say
    it (``ctx.log`` records): ``job 42 emails:welcome attempt 1/5: <message>``. Attempt
    events say it themselves."""

    def __init__(self, fmt: str | None = _TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        if job_id is not None and getattr(record, "event", None) is None:
            who = f"job {job_id} {getattr(record, 'queue', '?')}:{getattr(record, 'job_name', '?')}"
            attempt = getattr(record, "attempt", None)
            if attempt is not None:
                who += f" attempt {attempt}/{getattr(record, 'max_attempts', '?')}"
            record.message = f"{who}: {record.message}"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, for log shippers: ``time`` (ISO 8601 UTC),
    ``level``, ``logger``, ``message``, every ``extra`` field, and ``exception`` /
    ``stack`` when the record has them. Values JSON cannot hold are written as text."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        data: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure(
    level: int | str = "INFO",
    format: Literal["text", "json"] = "text",
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every record at ``level`` and above to ``stream`` (stderr) in ``format``: the
    root logger gets one handler (replacing those it had), which is returned. What
    ``trioforge worker --log-level --log-format`` does; an application that configures
    logging itself sets :class:`TextFormatter` or :class:`JsonFormatter` on its handlers."""
    if format not in ("text", "json"):
        raise ConfigurationError(f"format must be 'text' or 'json', got {format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
