"""Small charts drawn on the server as inline SVG: no script, nothing fetched.

Each function takes plain numbers and returns markup safe to put in a page;
every label is escaped. A <title> on each mark is the browser's tooltip."""
from __future__ import annotations

from itertools import count

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

FONT = 'font-family="system-ui, sans-serif" font-size="11"'
# No font metrics on the server: a bound of a glyph's advance at font-size 11
# (digits are about 6.1 px), so an axis label always fits left of the plot.
CHAR_PX = 6.9
MUTED = "#8a8f98"


_ids = count(1)


def _open(kind: str, width: int, height: int, title: str, *, font: bool = True) -> str:
    """The <svg> element of a chart: an image (role="img") named by its first
    child, a <title>, through aria-labelledby (axe's svg-img-alt). Ids differ
    per chart drawn by this process, so several charts share a page."""
    chart_id = f"chart-{next(_ids)}"
    return (f'<svg class="{kind}" role="img" aria-labelledby="{chart_id}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"{" " + FONT if font else ""}>'
            f'<title id="{chart_id}">{escape(title)}</title>')


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def hbars(rows: list[tuple[str, float, str]], *, title: str, width: int = 420, label_width: int = 110,
          unit: str = "") -> SafeString:
    """One horizontal bar per (label, value, colour), scaled to the largest value."""
    bar, top = 20, max((value for _, value, _ in rows), default=0) or 1
    span = width - label_width - 50
    height = bar * len(rows) + 4
    out = [_open("chart hbars", width, height, title)]
    for i, (label, value, colour) in enumerate(rows):
        y = i * bar + 2
        w = max(value / top * span, 1 if value else 0)
        out.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end" fill="currentColor">'
                   f'{escape(label)}</text>')
        out.append(f'<rect x="{label_width}" y="{y + 2}" width="{_num(w)}" height="{bar - 6}" rx="2" '
                   f'fill="{colour}"><title>{escape(label)}: {_num(value)}{escape(unit)}</title></rect>')
        out.append(f'<text x="{_num(label_width + w + 5)}" y="{y + 13}" fill="currentColor">'
                   f'{_num(value)}{escape(unit)}</text>')
    out.append("</svg>")
    return mark_safe("".join(out))


def columns(points: list[dict], *, stack: list[tuple[str, str]], labels: list[str], title: str,
            width: int = 1200, height: int = 140, unit: str = "") -> SafeString:
    """Stacked columns, one per point; `stack` names the keys of each point
    (bottom first) and their colours; `labels` the point's tooltip and x-axis text
    (every tenth shown)."""
    top = max((sum(p[k] or 0 for k, _ in stack) for p in points), default=0) or 1
    left, bottom = _left(top, unit), 18
    plot_w, plot_h = width - left - 4, height - bottom - 6
    step = plot_w / max(len(points), 1)
    out = [_open("chart columns", width, height, title), _axis(left, plot_w, plot_h, top, unit)]
    for i, point in enumerate(points):
        x, base = left + i * step, plot_h + 6
        tip = ", ".join(f"{k} {_num(point[k] or 0)}" for k, _ in stack)
        for key, colour in stack:
            h = (point[key] or 0) / top * plot_h
            if h:
                base -= h
                out.append(f'<rect x="{_num(x + 0.5)}" y="{_num(base)}" width="{_num(max(step - 1, 1))}" '
                           f'height="{_num(h)}" fill="{colour}"><title>{escape(labels[i])}: {escape(tip)}'
                           f'</title></rect>')
        if i % 10 == 0 and x < left + plot_w - 30:
            out.append(f'<text x="{_num(x)}" y="{height - 4}" fill="{MUTED}">{escape(labels[i])}</text>')
    out.append("</svg>")
    return mark_safe("".join(out))


def lines(series: list[tuple[str, str, list[float | None]]], *, labels: list[str], title: str,
          width: int = 1200, height: int = 140, unit: str = "") -> SafeString:
    """One polyline per (name, colour, values); None leaves a gap. A dot marks
    each value, with its tooltip."""
    top = max((v for _, _, values in series for v in values if v is not None), default=0) or 1
    left, bottom = _left(top, unit), 18
    plot_w, plot_h = width - left - 10, height - bottom - 6
    n = max((len(values) for _, _, values in series), default=1)
    step = plot_w / max(n - 1, 1)
    out = [_open("chart lines", width, height, title), _axis(left, plot_w, plot_h, top, unit)]
    for name, colour, values in series:
        run: list[str] = []
        for i, value in enumerate(values + [None]):
            if value is None:
                if len(run) > 1:
                    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>')
                run = []
                continue
            x, y = left + i * step, 6 + plot_h - value / top * plot_h
            run.append(f"{_num(x)},{_num(y)}")
            out.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{colour}"><title>{escape(name)} '
                       f'{escape(labels[i])}: {_num(value)}{escape(unit)}</title></circle>')
    for i, label in enumerate(labels):
        if i % 3 == 0 and left + i * step < left + plot_w - 20:
            out.append(f'<text x="{_num(left + i * step)}" y="{height - 4}" text-anchor="middle" '
                       f'fill="{MUTED}">{escape(label)}</text>')
    legend = "".join(f'<tspan fill="{colour}">■ {escape(name)} </tspan>' for name, colour, _ in series)
    out.append(f'<text x="{width - 10}" y="14" text-anchor="end">{legend}</text></svg>')
    return mark_safe("".join(out))


def meter(idle: int, total: int, *, width: int = 90) -> SafeString:
    """idle of total as a small bar: the idle part green, the busy part grey."""
    w = idle / total * width if total else 0
    return mark_safe(
        _open("meter", width, 10, f"{idle} idle of {total}", font=False) +
        f'<rect width="{width}" height="10" rx="2" fill="#d5d8dc"/>'
        f'<rect width="{_num(w)}" height="10" rx="2" fill="#2e9d57"/></svg>')


def _left(top: float, unit: str) -> int:
    """The left margin: the widest axis label ("118.2 s") and a gap; 34 at least."""
    return max(34, int(len(f"{_num(top)}{unit}") * CHAR_PX) + 8)


def _axis(left: int, plot_w: float, plot_h: float, top: float, unit: str) -> str:
    return (f'<line x1="{left}" y1="{plot_h + 6}" x2="{_num(left + plot_w)}" y2="{plot_h + 6}" stroke="{MUTED}"/>'
            f'<text x="{left - 4}" y="12" text-anchor="end" fill="{MUTED}">{_num(top)}{escape(unit)}</text>'
            f'<text x="{left - 4}" y="{plot_h + 6}" text-anchor="end" fill="{MUTED}">0</text>')


def flow(columns: list[list[tuple[str, str, str]]], *, title: str = "Workflow steps", box_w: int = 96,
         box_h: int = 22, gap_x: int = 34, gap_y: int = 6) -> SafeString:
    """Steps left to right, one column per step: each box a (label, fill colour,
    tooltip), a group's members stacked in their column; an arrow from every box
    of a column to every box of the next (a fan-out, then a join). Columns of
    more than 12 boxes show 11 and a "+n more" box."""
    shown = []
    for boxes in columns:
        if len(boxes) > 12:
            more = len(boxes) - 11
            boxes = boxes[:11] + [(f"+{more} more", MUTED, f"{more} more members")]
        shown.append(boxes)
    tallest = max((len(boxes) for boxes in shown), default=1)
    height = tallest * (box_h + gap_y) + gap_y
    width = max(len(shown), 1) * (box_w + gap_x) - gap_x + 8
    out = [_open("chart flow", width, height, title),
           '<defs><marker id="flow-arrow" viewBox="0 0 6 6" refX="6" refY="3" markerWidth="6" markerHeight="6" '
           f'orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="{MUTED}"/></marker></defs>']

    def centre_y(count: int, i: int) -> float:
        top = (height - count * (box_h + gap_y) + gap_y) / 2
        return top + i * (box_h + gap_y) + box_h / 2

    for c, boxes in enumerate(shown):
        x = 4 + c * (box_w + gap_x)
        if c:
            prev = shown[c - 1]
            for i in range(len(prev)):
                for j in range(len(boxes)):
                    if len(prev) > 1 and len(boxes) > 1 and i != j:
                        continue  # group to group: member by member, not a mesh
                    out.append(f'<line x1="{_num(x - gap_x)}" y1="{_num(centre_y(len(prev), i))}" '
                               f'x2="{_num(x - 2)}" y2="{_num(centre_y(len(boxes), j))}" stroke="{MUTED}" '
                               f'marker-end="url(#flow-arrow)"/>')
        for i, (label, colour, tip) in enumerate(boxes):
            y = centre_y(len(boxes), i) - box_h / 2
            text = label if len(label) <= 14 else label[:13] + "…"
            out.append(f'<g><title>{escape(tip)}</title><rect x="{x}" y="{_num(y)}" width="{box_w}" '
                       f'height="{box_h}" rx="4" fill="{colour}"/><text x="{_num(x + box_w / 2)}" '
                       f'y="{_num(y + box_h / 2 + 4)}" text-anchor="middle" fill="#fff">{escape(text)}</text></g>')
    out.append("</svg>")
    return mark_safe("".join(out))
