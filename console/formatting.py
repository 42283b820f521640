"""Ages, exact times and badges, one wording for the region's and the router's
admin, the overview and `manage.py fleet_status`."""
from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html

# Badge colours: white text on each at 4.5:1 or more (WCAG AA; tests/test_console_pages.py).
COLOURS = {
    "green": "#1e7e34", "blue": "#0b5ed7", "yellow": "#8a6100", "orange": "#c2410c", "red": "#c92a2a",
    "grey": "#6c757d",
}


# Hosts' clocks differ a little: an age this far below zero still reads "0 s ago".
CLOCK_SKEW_SECONDS = 5


def age_text(seconds: float | None) -> str:
    """'90 s ago', '3 min ago', '2 h ago', '5 d ago': a unit changes at two of it."""
    if seconds is None:
        return "never"
    if seconds < -CLOCK_SKEW_SECONDS:
        return "in the future"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def exact_time(value: datetime | float | None) -> str:
    """To the second, in the site's time zone, named: '2026-12-06 18:16:50 UTC'."""
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.get_current_timezone())
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def age(value: datetime | None, now: datetime | None = None):
    """The age, with the exact time on hover."""
    if value is None:
        return "never"
    seconds = ((now or timezone.now()) - value).total_seconds()
    return format_html('<span title="{}" style="white-space:nowrap">{}</span>', exact_time(value), age_text(seconds))


def when(value: datetime | None):
    """An exact time that does not wrap."""
    if value is None:
        return "—"
    return format_html('<span style="white-space:nowrap">{}</span>', exact_time(value))


def badge(label: str, colour: str, title: str = ""):
    return format_html(
        '<span class="meridian-badge" title="{}" style="display:inline-block;padding:1px 7px;border-radius:9px;'
        'color:#fff;background:{};font-size:11px;font-weight:600;white-space:nowrap">{}</span>',
        title or label, COLOURS[colour], label)


# Long text in a list column: wraps inside the column (even an unbroken run, a
# URL or a traceback line) instead of widening the table past the screen.
WRAP_STYLE = "display:inline-block;max-width:32em;white-space:normal;overflow-wrap:anywhere"


def wrapped(text: str, limit: int = 160, tone: str = ""):
    """The start of `text` (up to `limit` characters), wrapping; the whole of it in the title.
    `tone` "quiet" or "error" takes the admin theme's colour (light and dark keep their contrast)."""
    if not text:
        return ""
    shown = text if len(text) <= limit else text[:limit] + "…"
    style = WRAP_STYLE + {"quiet": ";color:var(--body-quiet-color)", "error": ";color:var(--error-fg)"}.get(tone, "")
    return format_html('<span title="{}" style="{}">{}</span>', text, style, shown)
