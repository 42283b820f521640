"""Running attempts with no report long after their hard time limit fail (timed out)."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from regions.models import Task, TaskAttempt
from regions.services.tasks.outcome import task_fail
from wire.protocol import hard_time_limit


OVERDUE_GRACE_SECONDS = 30


def fail_overdue_running(*, now, batch: int) -> int:
    """A running attempt with no report long after its hard time limit (the
    worker killed it, or its report was lost) counts as a failed attempt."""
    count = 0
    for task in Task.objects.filter(status=Task.Status.RUNNING,
                                    started_at__lt=now - timedelta(seconds=OVERDUE_GRACE_SECONDS))[:batch]:
        if task.started_at + timedelta(seconds=hard_time_limit(task.timeout, settings.REPORT_ALLOWANCE_SECONDS) + OVERDUE_GRACE_SECONDS) > now:
            continue
        if task_fail(task_id=task.id, attempt=task.attempt, agent_id=task.agent,
                     error=f"no result within {task.timeout}s + grace (attempt killed or its report lost)",
                     outcome=TaskAttempt.Outcome.TIMED_OUT):
            count += 1
    return count
