"""A caller or operator cancels a running workflow: no step starts after it, and
its active tasks are cancelled (the sweeper cancels any a crash left running)."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from regions.models import Task, Workflow
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.refusals import InvalidState

logger = logging.getLogger("regions.services.workflows")


def workflow_cancel(*, workflow: Workflow) -> Workflow:
    # The workflow's row first, in a transaction of its own: a step succeeding
    # meanwhile holds its task's row and then waits for this one, so the tasks
    # are cancelled only after this commits (never the other order: no deadlock),
    # and the advance that follows sees the workflow cancelled and starts nothing.
    with transaction.atomic():
        changed = Workflow.objects.filter(id=workflow.id, status=Workflow.Status.RUNNING).update(
            status=Workflow.Status.CANCELLED, finished_at=timezone.now(), error="cancelled by caller")
    workflow.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot cancel: workflow is already {workflow.status}")
    cancelled = workflow_tasks_cancel(workflow_id=workflow.id)
    logger.info("workflow %s cancelled (%d active task(s) cancelled)", workflow.id, cancelled)
    return workflow


def workflow_tasks_cancel(*, workflow_id) -> int:
    count = 0
    for task in Task.objects.filter(workflow_step__workflow_id=workflow_id, status__in=Task.ACTIVE):
        try:
            task_cancel(task=task)
            count += 1
        except InvalidState:
            pass  # it ended meanwhile
    return count
