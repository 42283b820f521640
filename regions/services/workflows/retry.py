"""A caller or operator resumes a failed or cancelled workflow: its failed and
cancelled tasks run again (a task retry each, with its checks) and the steps it
never reached start when their turn comes. Retrying a failed step's task alone
(POST /tasks/<id>/retry) resumes its workflow too (advance.workflow_resume)."""
from __future__ import annotations

import logging

from django.db import transaction

from regions.models import Task, Workflow
from regions.services.tasks.refusals import InvalidState
from regions.services.tasks.retry import task_retry
from regions.services.workflows.advance import workflow_advance

logger = logging.getLogger("regions.services.workflows")

RETRYABLE = (Workflow.Status.FAILED, Workflow.Status.CANCELLED)


def workflow_retry(*, workflow: Workflow) -> Workflow:
    """All or nothing, in one transaction: a task retry refused (its capability
    no longer allowed, its rate limit, its attempt cap), or a workflow that
    fails again at once (a step's input over the payload limit), leaves it as
    it was and is the caller's answer (4xx)."""
    with transaction.atomic():
        changed = Workflow.objects.filter(id=workflow.id, status__in=RETRYABLE).update(
            status=Workflow.Status.RUNNING, error="", finished_at=None, result=None)
        if not changed:
            workflow.refresh_from_db()
            raise InvalidState(f"cannot retry: only a failed or cancelled workflow can be retried; "
                               f"this one is {workflow.status}")
        for task in Task.objects.filter(workflow_step__workflow_id=workflow.id,
                                        status__in=(Task.Status.FAILED, Task.Status.CANCELLED)):
            task_retry(task=task)
        workflow_advance(workflow_id=workflow.id)  # a cancel between two steps left the next one to start
        workflow.refresh_from_db()
        if workflow.status == Workflow.Status.FAILED:
            error = workflow.error
            raise InvalidState(f"cannot retry: the workflow fails again at once: {error}")
    logger.info("workflow %s retried", workflow.id)
    return workflow
