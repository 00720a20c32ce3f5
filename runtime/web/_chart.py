"""The queues page's throughput chart: an SVG drawn here (no script, no library), one bar
per minute stacked from completed and dead jobs (pure: counts in, markup out)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import attrs
from markupsafe import Markup, escape

from trioforge._core.states import JobState

__all__ = ["Bar", "bars", "throughput_svg"]

#: The chart's size in SVG units (it scales to its box, which the stylesheet sizes).
WIDTH = 360
HEIGHT = 64
#: Room at the top for the peak's label.
TOP = 12


@attrs.frozen
class Bar:
    """One minute's finished jobs."""

    minute: int  # epoch seconds of its first second
    completed: int
    dead: int


def bars(counts: Mapping[JobState, Mapping[int, int]], last_minute: int, minutes: int) -> list[Bar]:
    """The ``minutes`` minutes ending with the one starting at ``last_minute``, oldest
    first, each with its completed and dead jobs (0 where none finished)."""
    done, dead = counts.get(JobState.COMPLETED, {}), counts.get(JobState.DEAD, {})
    first = last_minute - (minutes - 1) * 60
    return [Bar(m, done.get(m, 0), dead.get(m, 0)) for m in range(first, last_minute + 1, 60)]


def _label(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute, dt.UTC).strftime("%H:%M UTC")


def throughput_svg(queue: str, minutes: list[Bar]) -> Markup:
    """The chart: per minute a ``completed`` bar with a ``dead`` one stacked on it (a bar
    only where there is a job; each says its minute and count in a ``<title>``)."""
    peak = max((b.completed + b.dead for b in minutes), default=0)
    slot = WIDTH / max(len(minutes), 1)
    scale = (HEIGHT - TOP) / peak if peak else 0.0
    parts = [
        f'<svg class="throughput" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="none" data-queue="{escape(queue)}" data-peak="{peak}">',
        f"<title>{escape(queue)}: jobs finished per minute, last {len(minutes)} minutes</title>",
        f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>',
        f'<text class="peak" x="2" y="9">{f"peak {peak}/min" if peak else "no jobs finished"}'
        "</text>",
    ]
    for i, bar in enumerate(minutes):
        x = round(i * slot + slot * 0.1, 2)
        width = round(slot * 0.8, 2)
        base = float(HEIGHT)
        for kind, count in (("completed", bar.completed), ("dead", bar.dead)):
            if not count:
                continue
            height = round(count * scale, 2)
            base -= height
            parts.append(
                f'<rect class="{kind}" x="{x}" y="{round(base, 2)}" width="{width}" '
                f'height="{height}" data-minute="{bar.minute}" data-count="{count}">'
                f"<title>{_label(bar.minute)}: {count} {kind}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # every text in it is escaped above
