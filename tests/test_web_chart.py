"""The queues page's throughput chart: bars from known counts (pure, no server)."""

from __future__ import annotations

import re

from trioforge import JobState
from trioforge.web._chart import HEIGHT, TOP, Bar, bars, throughput_svg

LAST = 3_600 * 500  # a minute's first second


def test_bars_cover_every_minute_of_the_window_oldest_first() -> None:
    counts = {
        JobState.COMPLETED: {LAST - 120: 4, LAST: 1, LAST - 3_600: 9},  # the last: too old
        JobState.DEAD: {LAST: 2},
        JobState.CANCELLED: {LAST: 5},  # neither completed nor dead: not drawn
    }
    minutes = bars(counts, LAST, 60)
    assert [b.minute for b in minutes] == list(range(LAST - 59 * 60, LAST + 1, 60))
    assert [b for b in minutes if b.completed or b.dead] == [
        Bar(LAST - 120, 4, 0), Bar(LAST, 1, 2)
    ]  # fmt: skip


def test_the_svg_has_a_rect_per_minute_and_kind_scaled_to_the_peak() -> None:
    svg = str(throughput_svg("<q>", [Bar(LAST - 120, 4, 0), Bar(LAST - 60, 0, 0), Bar(LAST, 1, 2)]))
    rects = re.findall(r'<rect class="(\w+)"[^>]* height="([\d.]+)" data-minute="(\d+)" '
                       r'data-count="(\d+)"', svg)  # fmt: skip
    assert [(kind, int(m), int(n)) for kind, _, m, n in rects] == [
        ("completed", LAST - 120, 4), ("completed", LAST, 1), ("dead", LAST, 2)
    ]  # fmt: skip
    heights = [float(h) for _, h, _, _ in rects]
    assert heights[0] == HEIGHT - TOP  # the peak fills the chart
    assert heights[1] + heights[2] == 3 / 4 * (HEIGHT - TOP)
    assert "peak 4/min" in svg
    assert "<q>" not in svg
    assert 'data-queue="&lt;q&gt;"' in svg


def test_an_idle_queue_has_an_empty_chart() -> None:
    svg = str(throughput_svg("idle", bars({}, LAST, 60)))
    assert "<rect" not in svg
    assert "no jobs finished" in svg
