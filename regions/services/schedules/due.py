"""A schedule's definition checked, and its due times: pure functions of the
definition. An interval's due times are multiples of it since the Unix epoch, a
cron expression's are its times in its time zone (croniter), returned in UTC, so
every orchestrator computes the same ones. A wall-clock time that occurs twice
when the clocks go back (01:30 on the night summer time ends) is due once, at
its first occurrence, as cron does it, unless the hour field is a wildcard."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

OVERLAP_DEFAULT = "skip"
CATCH_UP_DEFAULT = "latest"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- definitions ---------------------------------------------------------------

def schedule_problem(definition: dict) -> tuple[str, str] | None:
    """What is wrong with a merged schedule definition the schema let through,
    as (key below the schedule, or "", reason); None when it can run."""
    if "capability" not in definition:
        return "", "capability is required"
    if "cron" in definition and "interval" in definition:
        return "", "give cron or interval, not both"
    if "cron" not in definition and "interval" not in definition:
        return "", "give cron or interval"
    if "cron" in definition and not croniter.is_valid(definition["cron"]):
        return "cron", f"{definition['cron']!r} is not a valid cron expression (five fields: minute hour day " \
                       "month weekday)"
    if "timezone" in definition:
        try:
            ZoneInfo(definition["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            return "timezone", f"unknown time zone {definition['timezone']!r} (an IANA name such as Europe/Paris)"
    return None


def schedule_applies(definition: dict, region_id: str) -> bool:
    regions = definition.get("regions")
    return not regions or "*" in regions or region_id in regions


# --- due times -----------------------------------------------------------------

def _zone(definition: dict) -> ZoneInfo:
    return ZoneInfo(definition.get("timezone", "UTC"))


def _repeated_wall_time(definition: dict, local: datetime) -> bool:
    """The second occurrence of a wall-clock time on the night the clocks go back."""
    if "*" in definition["cron"].split()[1]:
        return False  # an hour field with a wildcard runs in both hours, as cron does
    naive, zone = local.replace(tzinfo=None), local.tzinfo
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first == local.astimezone(UTC):
        return False
    return first.astimezone(zone).replace(tzinfo=None) == naive  # the same wall time, an hour earlier


def schedule_due_after(definition: dict, at: datetime) -> datetime:
    """The first due time strictly after `at` (UTC)."""
    if "interval" in definition:
        step = definition["interval"]
        elapsed = int((at - _EPOCH).total_seconds() // step)
        return _EPOCH + timedelta(seconds=(elapsed + 1) * step)
    zone = _zone(definition)
    it = croniter(definition["cron"], at.astimezone(zone))
    while True:
        local = it.get_next(datetime)
        if not _repeated_wall_time(definition, local):
            return local.astimezone(UTC)


def schedule_due_before(definition: dict, at: datetime) -> datetime:
    """The latest due time at or before `at` (UTC)."""
    if "interval" in definition:
        step = definition["interval"]
        return _EPOCH + timedelta(seconds=int((at - _EPOCH).total_seconds() // step) * step)
    zone = _zone(definition)
    # croniter's get_prev is strictly before: start a second later to count `at` itself.
    it = croniter(definition["cron"], (at + timedelta(seconds=1)).astimezone(zone))
    while True:
        local = it.get_prev(datetime)
        if not _repeated_wall_time(definition, local):
            return local.astimezone(UTC)


def late_after() -> timedelta:
    """A due time this much in the past when it is first seen was missed (the
    region was down), not merely reached between two ticks."""
    from django.conf import settings

    return timedelta(seconds=3 * settings.SCHEDULE_TICK_SECONDS)
