"""The schedules' tick (regions.schedules_tick): the latest due time of each
schedule of the active configuration, run once (regions/services/schedules/runs.py).

Every orchestrator's beat may tick at once: a due time that another clock already
ran is a no-op (its ScheduleRun row), so overlapping ticks are safe. Only the
latest due time is ever considered: what was missed while the region was down is
run once (catch_up: latest) or recorded as missed (catch_up: none), never replayed
due time by due time."""
from __future__ import annotations

from datetime import datetime

from django.db.models import Max

from regions.models import ScheduleRun
from regions.services.config.current import config_current
from regions.services.schedules.due import CATCH_UP_DEFAULT, late_after, schedule_due_before
from regions.services.schedules.runs import schedule_run_create


def schedules_tick(*, now: datetime) -> dict:
    schedules = config_current().schedules
    counts = {outcome: 0 for outcome in ScheduleRun.Outcome.values}
    if not schedules:
        return counts
    last = dict(ScheduleRun.objects.filter(schedule__in=list(schedules)).values_list("schedule")
                .annotate(last=Max("due_at")))
    for name, definition in schedules.items():
        due = schedule_due_before(definition, now)
        if name in last and last[name] >= due:
            continue
        late = now - due > late_after()
        if late and name not in last:
            # Due before the schedule came to this region: nothing was missed.
            result = schedule_run_create(name=name, definition=definition, due_at=due, missed=True,
                                         why="due before the schedule was in this region's configuration")
        else:
            missed = late and definition.get("catch_up", CATCH_UP_DEFAULT) == "none"
            result = schedule_run_create(name=name, definition=definition, due_at=due, missed=missed)
        if result.outcome:
            counts[result.outcome] += 1
    return counts
