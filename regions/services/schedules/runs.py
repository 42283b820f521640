"""The run of one due time of a schedule.

A run's identity is (schedule, due time): the ScheduleRun row is inserted in
the same transaction as the task it creates, under a unique constraint, so a
second orchestrator ticking at the same moment, or one restarted after a crash,
finds the row (or waits for the first transaction, then finds it) and creates
nothing. Exactly once per due time by construction, however many clocks tick."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from project.exceptions import Refused
from regions.models import ScheduleRun, Task
from regions.services.schedules.due import OVERLAP_DEFAULT
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.refusals import InvalidState
from regions.services.tasks.submit import task_submit

logger = logging.getLogger(__name__)


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
        try:
            submission = task_submit(submitted_by=None, capability=definition["capability"],
                                     payload=definition.get("payload", {}), priority=definition.get("priority", 5))
        except Refused as exc:
            # A refused run replaces nothing: the previous task goes on.
            return RunResult(outcome=_finish(run, ScheduleRun.Outcome.REFUSED, str(exc)), run=run)
        if previous is not None and overlap == "replace":
            try:
                # Its revoke goes out at once, before this transaction commits; should
                # it then roll back (a database error), the task is left running in the
                # database with its attempt stopped, and the sweeper's overdue check
                # fails that attempt (retried if the task has attempts left).
                task_cancel(task=previous.task, reason=f"replaced by the next run of schedule {name}")
            except InvalidState:
                pass  # it finished meanwhile: nothing to replace
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
