"""A caller or operator cancels an active task: its current attempt ends, its
message is revoked, and its caller's next held task takes its place."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from regions.models import Task, TaskAttempt
from regions.services.task_events import task_finished_publish
from regions.services.tasks.dispatch import revoke
from regions.services.tasks.fair import WINDOWED, release_held
from regions.services.tasks.refusals import InvalidState


def task_cancel(*, task: Task, reason: str = "cancelled by caller") -> Task:
    if task.status not in Task.ACTIVE:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    # Sent and not yet claimed: its place in its caller's fair share frees up.
    windowed = task.status in WINDOWED and not task.held and not task.target_agent
    with transaction.atomic():
        changed = Task.objects.filter(id=task.id, attempt=task.attempt, status__in=Task.ACTIVE).update(
            status=Task.Status.CANCELLED, finished_at=timezone.now(), status_reason=reason[:255], held=False,
        )
        if changed:  # a running attempt ends here; a queued one never started (no row)
            TaskAttempt.objects.filter(task_id=task.id, number=task.attempt, outcome="").update(
                outcome=TaskAttempt.Outcome.CANCELLED, finished_at=timezone.now())
            task_finished_publish([task.id])
    task.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    revoke(task.id, task.attempt, terminate=True)
    if windowed:
        release_held(submitted_by_id=task.submitted_by_id, capability=task.capability)
    return task
