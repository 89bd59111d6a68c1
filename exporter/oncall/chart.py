"""A fingerprint's latency over the window as a small inline SVG: one bar per time slice,
as tall as the slowest run in it. Drawn on the server, so it shows without JavaScript."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH, HEIGHT, COLUMNS = 240, 48, 48


def latency_chart(points: Sequence[tuple[float, float]], start: float, end: float) -> str:
    """`points` (Unix time, ms) between `start` and `end`, as an `<svg>` element."""
    if not points or end <= start:
        return '<span class="muted">no timed runs</span>'
    tallest = [0.0] * (COLUMNS + 1)  # the last one: a run at `end` exactly
    scale = COLUMNS / (end - start)
    for at, ms in points:
        column = int((at - start) * scale)
        if 0 <= column <= COLUMNS and ms > tallest[column]:
            tallest[column] = ms
    tallest[COLUMNS - 1] = max(tallest[COLUMNS - 1], tallest.pop())
    top = max(tallest) or 1.0
    step = WIDTH / COLUMNS
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{HEIGHT - h:.1f}" width="{step - 1:.1f}" height="{h:.1f}"/>'
        for i, ms in enumerate(tallest)
        if ms > 0
        for h in (max(1.0, ms / top * (HEIGHT - 12)),)
    )
    label = f"slowest run per slice; top {top:.1f} ms"
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' role="img" aria-label="{label}"><title>{label}</title>'
        f'<text x="0" y="9">{top:.0f} ms</text>'
        f'<line x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>{bars}</svg>'
    )
