"""A caller or operator cancels an active task: its current attempt ends, and
its message is revoked."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from regions.models import Task, TaskAttempt
from regions.services.task_events import task_finished_publish
from regions.services.tasks.dispatch import revoke
from regions.services.tasks.refusals import InvalidState


def task_cancel(*, task: Task) -> Task:
    if task.status not in Task.ACTIVE:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    with transaction.atomic():
        changed = Task.objects.filter(id=task.id, attempt=task.attempt, status__in=Task.ACTIVE).update(
            status=Task.Status.CANCELLED, finished_at=timezone.now(), status_reason="cancelled by caller"
        )
        if changed:  # a running attempt ends here; a queued one never started (no row)
            TaskAttempt.objects.filter(task_id=task.id, number=task.attempt, outcome="").update(
                outcome=TaskAttempt.Outcome.CANCELLED, finished_at=timezone.now())
            task_finished_publish([task.id])
    task.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    revoke(task.id, task.attempt, terminate=True)
    return task
