"""The one transition of a workflow: from the state of its steps' tasks, create
the next step's tasks, or finish it (succeeded with the last step's result, or
failed naming the step). Idempotent; always under the workflow's row lock, so
two members of a group succeeding at once cannot both (or neither) fire the join."""
from __future__ import annotations

import logging
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from regions.models import Task, Workflow, WorkflowStep
from regions.services.tasks.dispatch import send_or_release
from regions.services.tasks.fair import hold_beyond_window
from regions.services.tasks.submit import payload_size
from regions.services.tasks.waiting import initial_status

logger = logging.getLogger("regions.services.workflows")

ENDED = (Task.Status.FAILED, Task.Status.CANCELLED)


def step_input(step: WorkflowStep, previous: list[tuple[WorkflowStep, Task]] | None):
    """A step's input: its payload, merged with the previous step's result (the
    result's keys win; a result that is not an object comes as "previous"), or
    after a group with the list of its members' results as "results"."""
    payload = dict(step.payload or {})
    if not previous:
        return payload
    if previous[0][0].in_group:
        return {**payload, "results": [task.result for _, task in previous]}
    result = previous[0][1].result
    if isinstance(result, dict):
        return {**payload, **result}
    return {**payload, "previous": result}


def step_name(step: WorkflowStep) -> str:
    where = f"step {step.index}" + (f" (group member {step.member})" if step.in_group else "")
    return f"{where}, {step.capability}"


def workflow_advance(*, workflow_id) -> str:
    """Bring the workflow up to date with its tasks; returns what it did
    ("created", "succeeded", "failed" or "" for nothing). Runs in the caller's
    transaction when there is one (a task's success: the next step is created
    with it), else in its own."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(id=workflow_id, status=Workflow.Status.RUNNING).first()
        if workflow is None:
            return ""
        steps = list(WorkflowStep.objects.filter(workflow_id=workflow_id).order_by("index", "member"))
        # Results are read only for the step the next one starts from (or the last).
        tasks = {task.workflow_step_id: task for task in Task.objects.filter(workflow_step__workflow_id=workflow_id)
                 .only("id", "status", "error", "workflow_step_id")}
        previous: list[WorkflowStep] | None = None
        for _, rows in groupby(steps, key=lambda step: step.index):
            rows = list(rows)
            ended = [step for step in rows if step.id in tasks and tasks[step.id].status in ENDED]
            if ended:
                task = tasks[ended[0].id]
                return _fail(workflow, f"{step_name(ended[0])} {task.status}"
                                       + (f": {task.error}" if task.error else ""))
            missing = [step for step in rows if step.id not in tasks]
            if missing:
                results = _results(previous, tasks)
                too_large = _input_too_large(missing, results)
                if too_large is not None:
                    return _fail(workflow, f"{step_name(too_large)}: its input (its payload merged with the "
                                           f"previous step's results) is larger than the payload limit of "
                                           f"{settings.TASK_PAYLOAD_LIMIT_BYTES} bytes")
                _create(workflow, missing, results)
                return "created"
            if any(tasks[step.id].status != Task.Status.SUCCEEDED for step in rows):
                return ""  # still running
            previous = rows
        results = _results(previous, tasks)
        workflow.status, workflow.finished_at = Workflow.Status.SUCCEEDED, timezone.now()
        workflow.result = ([task.result for _, task in results] if results and results[0][0].in_group
                           else results[0][1].result if results else None)
        workflow.save(update_fields=["status", "result", "finished_at"])
        logger.info("workflow %s succeeded", workflow_id)
        return "succeeded"


def _results(steps: list[WorkflowStep] | None, tasks: dict) -> list[tuple[WorkflowStep, Task]] | None:
    """The steps with their tasks, results loaded (one query)."""
    if not steps:
        return None
    loaded = {task.id: task for task in Task.objects.filter(id__in=[tasks[s.id].id for s in steps])
              .only("id", "result")}
    return [(step, loaded[tasks[step.id].id]) for step in steps]


def _fail(workflow: Workflow, error: str) -> str:
    workflow.status, workflow.finished_at, workflow.error = Workflow.Status.FAILED, timezone.now(), error[:2000]
    workflow.save(update_fields=["status", "error", "finished_at"])
    logger.warning("workflow %s failed: %s", workflow.id, workflow.error[:300])
    return "failed"


def _input_too_large(steps: list[WorkflowStep], previous) -> WorkflowStep | None:
    """A step whose input would be refused as a submission's payload is (the
    previous results can make it large): the workflow fails there, naming it."""
    return next((step for step in steps
                 if payload_size(step_input(step, previous)) > settings.TASK_PAYLOAD_LIMIT_BYTES), None)


def step_tasks(workflow: Workflow, steps: list[WorkflowStep],
               previous: list[tuple[WorkflowStep, Task]] | None) -> list[Task]:
    """The tasks of these steps, as a submission makes them (initial status,
    the outbox's dispatched_at claim, fair dispatch's hold), not yet saved."""
    now = timezone.now()
    status = {}
    tasks = []
    for step in steps:
        if step.capability not in status:
            status[step.capability] = initial_status(capability=step.capability, target_agent="")
        state, reason = status[step.capability]
        tasks.append(Task(capability=step.capability, payload=step_input(step, previous), priority=step.priority,
                          timeout=step.timeout, max_attempts=step.max_attempts, status=state, status_reason=reason,
                          submitted_by_id=workflow.submitted_by_id, dispatched_at=now, workflow_step=step))
    hold_beyond_window(tasks)
    return tasks


def _create(workflow: Workflow, steps: list[WorkflowStep], previous) -> None:
    # Inside the workflow's lock: the unique constraint on Task.workflow_step is
    # the second guard, should anything create a step without it.
    tasks = step_tasks(workflow, steps, previous)
    Task.objects.bulk_create(tasks)
    for task in tasks:
        if not task.held:
            transaction.on_commit(lambda task=task: send_or_release(task, dispatched_at=task.dispatched_at))
    logger.info("workflow %s: step %s started (%d task(s))", workflow.id, steps[0].index, len(tasks))


def workflow_of_task(task_id) -> str | None:
    return (Task.objects.filter(id=task_id, workflow_step__isnull=False)
            .values_list("workflow_step__workflow_id", flat=True).first())


def workflow_resume(*, workflow_step_id) -> None:
    """In the transaction that retries a step's task: its failed workflow runs
    again (the sweeper fails it anew if another step is still failed)."""
    Workflow.objects.filter(steps__id=workflow_step_id, status=Workflow.Status.FAILED).update(
        status=Workflow.Status.RUNNING, error="", finished_at=None)
