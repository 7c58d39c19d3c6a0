"""A stacked bar chart as inline SVG, drawn on the server: no JavaScript, no CDN, no fonts.

The summary page shows claims per day (or week) by status. A billing office's browser may be
old, offline from the internet, or read aloud by a screen reader, so the chart is plain SVG
markup with a ``<title>`` and ``<desc>`` (``role="img"``, ``aria-labelledby``), a text total
above each bar, a legend in words, and a ``<title>`` on every segment (a tooltip that says the
day, the status and the count). Colours are the Okabe-Ito palette (distinguishable with the
common colour-vision deficiencies); the tables beside the chart carry the same numbers.
Pure: numbers in, markup out, every text escaped here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

#: status -> fill colour (Okabe-Ito); unknown series take the fallbacks in turn
COLOURS: Mapping[str, str] = {
    "submitting": "#E69F00",
    "entered": "#F0E442",
    "checked": "#0072B2",
    "processed": "#56B4E9",
    "valuated": "#009E73",
    "rejected": "#D55E00",
    "failed": "#CC79A7",
    "unknown_status": "#555555",
}
_FALLBACK = ("#882255", "#44AA99", "#117733", "#332288", "#999933")

_HEIGHT = 240  # plot area
_TOP, _BOTTOM, _LEFT, _RIGHT = 24, 56, 44, 12
_SLOT_MIN, _SLOT_MAX = 14, 48
_LEGEND_ROW = 18
_LABEL_GAP = 18


def _nice_ceiling(value: int) -> int:
    """The top of the axis: four equal integer steps of 1, 2, 2.5 or 5 x 10^k covering ``value``."""
    scale = 1
    while True:
        for factor in (1, 2, 2.5, 5) if scale >= 10 else (1, 2, 5):
            step = int(factor * scale)
            if 4 * step >= value:
                return 4 * step
        scale *= 10


def _colour(name: str, order: Sequence[str]) -> str:
    if name in COLOURS:
        return COLOURS[name]
    unknown = [s for s in order if s not in COLOURS]
    return _FALLBACK[unknown.index(name) % len(_FALLBACK)] if name in unknown else _FALLBACK[0]


def stacked_bars(
    title: str,
    labels: Sequence[str],
    stacks: Sequence[Mapping[str, int]],
    order: Sequence[str],
    *,
    series_words: Mapping[str, str] | None = None,
    element_id: str = "chart",
) -> str:
    """An SVG document fragment: one bar per label, stacked by ``order`` (bottom first).

    ``stacks[i]`` holds the counts of ``labels[i]`` by series name; ``series_words`` gives the
    legend text of a series (default: the name). ``element_id`` prefixes the ids of the
    ``<title>``/``<desc>`` the ``aria-labelledby`` points at (unique per page).
    """
    if len(labels) != len(stacks):
        raise ValueError("one stack per label")
    words = dict(series_words or {})
    totals = [sum(stack.get(s, 0) for s in order) for stack in stacks]
    top = _nice_ceiling(max(totals, default=0))
    count = max(len(labels), 1)
    slot = max(_SLOT_MIN, min(_SLOT_MAX, 640 // count))
    plot_width = slot * count
    width = _LEFT + plot_width + _RIGHT
    legend_rows = (len(order) + 2) // 3
    height = _TOP + _HEIGHT + _BOTTOM + legend_rows * _LEGEND_ROW
    grand = sum(totals)
    by_series = {s: sum(stack.get(s, 0) for stack in stacks) for s in order}
    described = ", ".join(f"{words.get(s, s)} {n}" for s, n in by_series.items() if n) or "none"
    desc = f"{grand} in total from {labels[0]} to {labels[-1]}: {described}." if labels else "No data."
    tid, did = f"{element_id}-title", f"{element_id}-desc"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{tid} {did}"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}" class="chart" id="{escape(element_id)}">',
        f'<title id="{tid}">{escape(title)}</title>',
        f'<desc id="{did}">{escape(desc)}</desc>',
    ]
    # axis and grid: four integer steps up to the top
    for step in range(5):
        value = top // 4 * step
        y = _TOP + _HEIGHT - _HEIGHT * step / 4
        out.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_width}" y2="{y:.1f}"'
            ' stroke="#cccccc" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#222222">{value}</text>'
        )
    every = -(-_LABEL_GAP // slot)  # every n-th day's label: rotated labels need _LABEL_GAP pixels apart
    for i, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = _LEFT + i * slot + 2
        bar = slot - 4
        y = float(_TOP + _HEIGHT)
        for series in order:
            n = stack.get(series, 0)
            if n <= 0:
                continue
            h = _HEIGHT * n / top
            y -= h
            tip = f"{label}: {words.get(series, series)} {n}"
            out.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="{_colour(series, order)}"'
                f' stroke="#ffffff" stroke-width="0.5"><title>{escape(tip)}</title></rect>'
            )
        if totals[i]:
            out.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="11"'
                f' fill="#222222">{totals[i]}</text>'
            )
        if i % every == 0:
            lx, ly = x + bar / 2, _TOP + _HEIGHT + 14
            out.append(
                f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" font-size="11" fill="#222222"'
                f' transform="rotate(-40 {lx:.1f} {ly})">{escape(label)}</text>'
            )
    legend_top = _TOP + _HEIGHT + _BOTTOM
    column = max(120, (width - _LEFT) // 3)
    for k, series in enumerate(order):
        lx = _LEFT + (k % 3) * column
        ly = legend_top + (k // 3) * _LEGEND_ROW
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{_colour(series, order)}"/>')
        text = f"{words.get(series, series)} ({by_series[series]})"
        out.append(f'<text x="{lx + 16}" y="{ly}" font-size="12" fill="#222222">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)
