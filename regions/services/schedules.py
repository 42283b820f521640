"""Schedules of the configuration repository (schedules.<name>): their due
times, and the run of one due time.

A run's identity is (schedule, due time): the ScheduleRun row is inserted in
the same transaction as the task it creates, under a unique constraint, so a
second orchestrator ticking at the same moment, or one restarted after a crash,
finds the row (or waits for the first transaction, then finds it) and creates
nothing. Exactly once per due time by construction, however many clocks tick.

Due times are pure functions of the definition: an interval's are multiples of
it since the Unix epoch, a cron expression's are its times in its time zone
(croniter), returned in UTC. A wall-clock time that occurs twice when the clocks
go back (01:30 on the night summer time ends) is due once, at its first
occurrence, as cron does it, unless the hour field is a wildcard."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.db import IntegrityError, transaction

from project.exceptions import Refused
from regions.models import ScheduleRun, Task
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.refusals import InvalidState
from regions.services.tasks.submit import task_submit

logger = logging.getLogger(__name__)

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


# --- runs ----------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    outcome: str  # a ScheduleRun.Outcome, or "" when another clock made this run
    run: ScheduleRun | None


def schedule_run_create(*, name: str, definition: dict, due_at: datetime, missed: bool = False,
                        why: str = "due while the region was down; catch_up is none") -> RunResult:
    """Make the run of `name` due at `due_at`, once: the row and its task are
    one transaction. missed: record the due time as missed (`why`), no task."""
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the losing INSERT leaves the transaction usable
                run = ScheduleRun.objects.create(schedule=name, due_at=due_at, outcome=ScheduleRun.Outcome.CREATED)
        except IntegrityError:
            return RunResult(outcome="", run=None)  # another clock made it (it waited for their commit)
        if missed:
            return RunResult(outcome=_finish(run, ScheduleRun.Outcome.MISSED, why), run=run)
        previous = (ScheduleRun.objects.filter(schedule=name, task__status__in=Task.ACTIVE, due_at__lt=due_at)
                    .select_related("task").order_by("-due_at").first())
        overlap = definition.get("overlap", OVERLAP_DEFAULT)
        if previous is not None and overlap == "skip":
            return RunResult(outcome=_finish(run, ScheduleRun.Outcome.SKIPPED,
                                             f"task {previous.task_id} of the run due "
                                             f"{previous.due_at.isoformat()} is still {previous.task.status}"),
                             run=run)
        if previous is not None and overlap == "replace":
            try:
                # Its revoke goes out at once; should this transaction then roll back,
                # the attempt it killed is failed by the sweeper (overdue) and retried.
                task_cancel(task=previous.task, reason=f"replaced by the next run of schedule {name}")
            except InvalidState:
                pass  # it finished meanwhile: nothing to replace
        try:
            submission = task_submit(submitted_by=None, capability=definition["capability"],
                                     payload=definition.get("payload", {}), priority=definition.get("priority", 5))
        except Refused as exc:
            return RunResult(outcome=_finish(run, ScheduleRun.Outcome.REFUSED, str(exc)), run=run)
        run.task = submission.task
        run.save(update_fields=["task"])
    logger.info("schedule %s: run due %s created task %s", name, due_at.isoformat(), run.task_id,
                extra={"task": str(run.task_id)})
    return RunResult(outcome=ScheduleRun.Outcome.CREATED, run=run)


def _finish(run: ScheduleRun, outcome: str, detail: str) -> str:
    run.outcome, run.detail = outcome, detail[:255]
    run.save(update_fields=["outcome", "detail"])
    logger.info("schedule %s: run due %s %s: %s", run.schedule, run.due_at.isoformat(), outcome, detail)
    return outcome
