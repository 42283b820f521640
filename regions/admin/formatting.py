"""How the region's admin pages show durations, JSON, long text and statuses."""
from __future__ import annotations

import json
from datetime import datetime

from django.utils.html import format_html

from console.formatting import badge, wrapped
from regions.models import Task, TaskAttempt


def span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def pretty_json(value):
    """<pre> of the value as indented JSON; escaped (a payload is caller data)."""
    if value is None:
        return "—"
    return format_html('<pre style="margin:0;max-height:30em;overflow:auto;white-space:pre-wrap">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def truncated(text: str, limit: int = 80):
    """The start of `text`, wrapping inside its column; the whole of it in the title."""
    return wrapped(text, limit)


TASK_COLOURS = {
    Task.Status.WAITING: "yellow", Task.Status.QUEUED: "grey", Task.Status.RUNNING: "blue",
    Task.Status.RETRYING: "orange", Task.Status.SUCCEEDED: "green", Task.Status.FAILED: "red",
    Task.Status.CANCELLED: "grey",
}
TASK_BADGES = {status: badge(status, colour) for status, colour in TASK_COLOURS.items()}
OUTCOME_COLOURS = {
    TaskAttempt.Outcome.SUCCEEDED: "green", TaskAttempt.Outcome.FAILED: "red", TaskAttempt.Outcome.REQUEUED: "orange",
    TaskAttempt.Outcome.CANCELLED: "grey", TaskAttempt.Outcome.TIMED_OUT: "red",
}


def attempt_outcome_badge(attempt: TaskAttempt):
    if not attempt.outcome:
        return badge("running", "blue")
    return badge(attempt.outcome.replace("_", " "), OUTCOME_COLOURS.get(attempt.outcome, "grey"))
