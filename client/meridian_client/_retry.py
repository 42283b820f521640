"""How long to wait before trying again: Retry-After and backoff with jitter."""
from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime
from typing import Callable


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date;
    None when absent or unreadable, 0 for a date already past."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, float(when.timestamp()) - (time.time() if now is None else now))
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, infinities
        return None
    return max(0.0, seconds)


def backoff(attempt: int, *, retry_after: float | None = None, base: float = 0.5, cap: float = 30.0,
            rand: Callable[[], float] = random.random) -> float:
    """How long to wait before retry number ``attempt`` (0 for the first).

    With a Retry-After: that long, plus up to 10% so that callers told the same
    time do not all come back at once (never earlier than asked). Without:
    exponential from ``base``, capped at ``cap``, with "equal jitter" (half
    fixed, half random), so a retry always waits a little."""
    if retry_after is not None:
        return retry_after * (1 + 0.1 * rand())
    ceiling = min(cap, base * (2.0 ** min(attempt, 32)))
    return ceiling / 2 + ceiling / 2 * rand()
