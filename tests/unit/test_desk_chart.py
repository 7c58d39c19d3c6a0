"""The summary chart: valid, accessible SVG whose bars add up to the numbers given."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from cdc_claims.desk.chart import COLOURS, _nice_ceiling, stacked_bars

SVG = "{http://www.w3.org/2000/svg}"
PLOT_HEIGHT = 240


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_the_chart_is_accessible_svg() -> None:
    svg = stacked_bars(
        "Claims per day",
        ["2026-12-01", "2026-12-02"],
        [{"checked": 3, "rejected": 1}, {"valuated": 2}],
        ["checked", "valuated", "rejected"],
        series_words={"checked": "Checked", "valuated": "Valuated", "rejected": "Rejected"},
        element_id="daily",
    )
    root = _parse(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "daily-title daily-desc"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text == "Claims per day"
    assert title.get("id") == "daily-title"
    assert desc is not None
    assert desc.text == "6 in total from 2026-12-01 to 2026-12-02: Checked 3, Valuated 2, Rejected 1."
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "4" in texts and "2" in texts  # the total above each bar
    assert "Checked (3)" in texts and "Rejected (1)" in texts  # the legend, in words
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_segments_are_proportional_and_stacked_in_order() -> None:
    svg = stacked_bars("t", ["d1", "d2"], [{"checked": 3, "rejected": 1}, {"checked": 5}], ["checked", "rejected"])
    rects = [r for r in _parse(svg).iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    tips: list[tuple[str | None, object, str | None]] = [
        (r.findtext(f"{SVG}title"), float(r.get("height", "0")), r.get("fill")) for r in rects
    ]
    top = _nice_ceiling(5)
    assert top == 8
    assert tips == [
        ("d1: checked 3", pytest.approx(PLOT_HEIGHT * 3 / top, abs=0.1), COLOURS["checked"]),
        ("d1: rejected 1", pytest.approx(PLOT_HEIGHT * 1 / top, abs=0.1), COLOURS["rejected"]),
        ("d2: checked 5", pytest.approx(PLOT_HEIGHT * 5 / top, abs=0.1), COLOURS["checked"]),
    ]
    # the rejected segment sits on top of the checked one
    first, second = rects[0], rects[1]
    assert float(second.get("y", "0")) + float(second.get("height", "0")) == pytest.approx(
        float(first.get("y", "0")), abs=0.1
    )


def test_text_is_escaped() -> None:
    svg = stacked_bars('<b>"x"</b>', ["<d>"], [{"a&b": 1}], ["a&b"])
    root = _parse(svg)  # still well-formed
    assert root.find(f"{SVG}title").text == '<b>"x"</b>'  # type: ignore[union-attr]
    assert "<b>" not in svg


def test_empty_data_still_draws_an_axis() -> None:
    svg = stacked_bars("Nothing yet", [], [], ["checked"])
    root = _parse(svg)
    assert root.find(f"{SVG}desc").text == "No data."  # type: ignore[union-attr]
    assert [t.text for t in root.iter(f"{SVG}text")][:5] == ["0", "1", "2", "3", "4"]


def test_many_days_thin_the_axis_labels_but_keep_every_bar() -> None:
    labels = [f"2026-01-{d:02d}" for d in range(1, 32)] + [f"2026-02-{d:02d}" for d in range(1, 29)]
    svg = stacked_bars("t", labels, [{"checked": 1} for _ in labels], ["checked"])
    root = _parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == len(labels)
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text and re.fullmatch(r"2026-\d\d-\d\d", t.text)]
    assert 0 < len(shown) < len(labels)


def test_the_axis_has_four_integer_steps_just_above_the_tallest_bar() -> None:
    tops = [_nice_ceiling(n) for n in (0, 1, 3, 6, 11, 99, 101, 535, 4000)]
    assert tops == [4, 4, 4, 8, 20, 100, 200, 800, 4000]
    assert all(top % 4 == 0 for top in tops)


def test_mismatched_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one stack per label"):
        stacked_bars("t", ["a", "b"], [{}], [])


def test_a_few_days_label_every_bar() -> None:
    svg = stacked_bars("t", ["d1", "d2", "d3"], [{"checked": 1}] * 3, ["checked"])
    texts = [t.text for t in _parse(svg).iter(f"{SVG}text")]
    assert {"d1", "d2", "d3"} <= set(texts)
