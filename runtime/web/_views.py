"""What the HTTP API says about a job: a JSON object built from a snapshot (pure)."""

from __future__ import annotations

from typing import Any

from trioforge.storage import JobInfo

__all__ = ["job_view"]


def job_view(info: JobInfo) -> dict[str, Any]:
    """The tracking view of a job: no payload (ids are guessable; the payload is the
    caller's input, not something a tracker needs)."""
    return {
        "id": info.id,
        "name": info.name,
        "queue": info.queue,
        "status": info.status.value,
        "terminal": info.is_terminal,
        "attempt": info.attempt,
        "max_attempts": info.max_attempts,
        "progress": info.progress,
        "message": info.progress_message,
        "error": info.error,
        "result": info.result,
        "cancel_requested": info.cancel_requested,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
    }
