"""The overview's inline SVG charts: labels that fit, and a text alternative
(role, title, aria-labelledby) on every chart. Pure functions: no database."""
import re
import xml.etree.ElementTree as ET

import pytest

from console import svg

NS = "{http://www.w3.org/2000/svg}"
# An upper bound of a system-ui glyph's advance at font-size 11 (digits are ~6.1 px).
CHAR_PX = 11 * 0.62


def _tree(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def _charts() -> dict[str, str]:
    labels = [f"10:{i:02d}" for i in range(12)]
    return {
        "hbars": svg.hbars([("online idle", 3, "#2e9d57"), ("offline", 1, "#9aa0a6")], title="Agents by state"),
        "columns": svg.columns([{"ok": i, "bad": 1} for i in range(12)], stack=[("ok", "#2e9d57"), ("bad", "#ba2121")],
                               labels=labels, title="Tasks finished per minute"),
        "lines": svg.lines([("p50", "#2f6fb5", [1.0] * 12), ("p95", "#e07b1a", [118.2] * 12)], labels=labels,
                           unit=" s", title="Queue wait p50 and p95"),
        "meter": svg.meter(3, 4),
        "flow": svg.flow([[("a", "#2e9d57", "step 1")], [("b", "#2e9d57", "step 2")]], title="Workflow steps"),
    }


def test_the_queue_wait_axis_label_fits_left_of_the_plot_whatever_its_width():
    # 118.2 s read as "18.2 s": the label was anchored at x=30 with no room for 7 characters.
    for top in (118.2, 1234.5, 0.4):
        root = _tree(svg.lines([("p95", "#e07b1a", [1.0, top])], labels=["10:00", "10:05"], unit=" s",
                               title="Queue wait"))
        axis = [t for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end" and (t.text or "").endswith(" s")]
        assert axis, ET.tostring(root)
        for label in axis:
            assert float(label.get("x")) >= len(label.text) * CHAR_PX, (label.text, label.get("x"))
        line = next(root.iter(f"{NS}line"))
        assert float(line.get("x1")) > float(axis[0].get("x")), "the plot starts right of its axis label"


def test_columns_axis_label_fits_too():
    root = _tree(svg.columns([{"n": 12345}], stack=[("n", "#2e9d57")], labels=["10:00"], title="Tasks"))
    top = next(t for t in root.iter(f"{NS}text") if t.get("text-anchor") == "end")
    assert top.text == "12345" and float(top.get("x")) >= len(top.text) * CHAR_PX


@pytest.mark.parametrize("kind", ["hbars", "columns", "lines", "meter", "flow"])
def test_every_chart_is_an_image_with_a_title_that_names_it(kind):
    root = _tree(_charts()[kind])
    assert root.get("role") == "img"
    title = root[0]
    assert title.tag == f"{NS}title" and title.text and title.text.strip(), "the first child names the chart"
    assert root.get("aria-labelledby") == title.get("id") and title.get("id")


def test_chart_titles_are_escaped_and_their_ids_differ_per_chart():
    a = svg.hbars([("x", 1, "#000")], title="Failures <by> capability")
    b = svg.hbars([("x", 1, "#000")], title="Idle agents per capability")
    assert "Failures &lt;by&gt; capability" in a
    ids = [re.search(r'aria-labelledby="([^"]+)"', str(m)).group(1) for m in (a, b)]
    assert ids[0] != ids[1]
