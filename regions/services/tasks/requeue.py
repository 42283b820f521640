"""The running attempts of lost agents (missed their TTL, restarted, stopped)
back on the queue as a new attempt, or failed when none is left."""
from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from regions.models import Task, TaskAttempt
from regions.services.task_events import task_finished_publish
from regions.services.tasks.attempts import attempt_close
from regions.services.tasks.dispatch import revoke, task_dispatch

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes


def tasks_requeue_for_agents(*, agent_ids: list[str], reason: str) -> int:
    """Put the running attempts of lost agents back on the queue (attempt + 1),
    or fail them when no attempt is left. The old attempt is fenced: its late
    result matches no row, unless it is a success that arrives before anyone
    claims the new attempt (outcome._late_succeed)."""
    count = 0
    now = timezone.now()
    for task in Task.objects.filter(agent__in=agent_ids, status=Task.Status.RUNNING).only(
        "id", "attempt", "max_attempts", "agent"
    ):
        base = Task.objects.filter(id=task.id, attempt=task.attempt, status=Task.Status.RUNNING)
        lost = f"{reason} (agent {task.agent})"
        if task.attempt >= task.max_attempts:
            error = f"{lost} on attempt {task.attempt} of {task.max_attempts}"
            with transaction.atomic():
                if base.update(status=Task.Status.FAILED, finished_at=now, error=error,
                               status_reason="no attempts left"):
                    attempt_close(task_id=task.id, number=task.attempt, outcome=TaskAttempt.Outcome.FAILED,
                                   error=error, agent_id=task.agent)
                    task_finished_publish([task.id])
                    logger.warning("task %s failed: %s, no attempts left", task.id, lost,
                                   extra={"agent": task.agent, "task": str(task.id)})
            continue
        with transaction.atomic():
            if base.update(status=Task.Status.QUEUED, attempt=F("attempt") + 1, agent="",
                           dispatched_at=None, started_at=None, not_before=None, queued_at=now,
                           status_reason=f"requeued: {lost}"[:255]):
                attempt_close(task_id=task.id, number=task.attempt, outcome=TaskAttempt.Outcome.REQUEUED,
                               error=lost, agent_id=task.agent)
                count += 1
                logger.warning("task %s requeued after attempt %s: %s (agent %s)", task.id, task.attempt, reason,
                               task.agent, extra={"agent": task.agent, "task": str(task.id)})
                transaction.on_commit(lambda tid=task.id: task_dispatch(task_id=tid))
        revoke(task.id, task.attempt)
    return count
