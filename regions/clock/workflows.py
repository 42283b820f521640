"""Workflows a lost transition left behind: advanced (next step created, or the
workflow finished or failed) from the state of their tasks, and the active
tasks of cancelled workflows cancelled. Idempotent: workflow_advance works
under the workflow's row lock and a step has at most one task."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q

from regions.models import Task, Workflow
from regions.services.workflows.advance import workflow_advance
from regions.services.workflows.cancel import workflow_tasks_cancel

logger = logging.getLogger("regions.services.workflows")


def advance_stalled_workflows(*, now, batch: int) -> int:
    """A running workflow with no active task (a step succeeded and the next is
    missing, or all succeeded and it is not finished), or with a task that
    failed or was cancelled (failed by a path that does not advance workflows:
    out of attempts on a lost agent, past its wait deadline)."""
    stalled = (Workflow.objects.filter(status=Workflow.Status.RUNNING, created_at__lt=now - timedelta(seconds=1))
               .filter(~Q(steps__tasks__status__in=Task.ACTIVE)
                       | Q(steps__tasks__status__in=(Task.Status.FAILED, Task.Status.CANCELLED)))
               .order_by("created_at").values_list("id", flat=True).distinct()[:batch])
    moved = sum(1 for workflow_id in list(stalled) if workflow_advance(workflow_id=workflow_id))
    if moved:
        logger.warning("advanced %d workflows a lost transition left behind", moved)
    return moved


def cancel_tasks_of_cancelled_workflows(*, batch: int) -> int:
    ids = (Task.objects.filter(workflow_step__workflow__status=Workflow.Status.CANCELLED, status__in=Task.ACTIVE)
           .values_list("workflow_step__workflow_id", flat=True).distinct()[:batch])
    return sum(workflow_tasks_cancel(workflow_id=workflow_id) for workflow_id in list(ids))
