"""An attempt's history row (TaskAttempt): opened by the claim that grants the
attempt, closed in the transaction of the fenced update that ends it."""
from __future__ import annotations

from django.utils import timezone

from regions.models import TaskAttempt


def attempt_start(*, task_id, number: int, agent_id: str, when) -> None:
    """The attempt's history row, written with the claim that granted it: one
    INSERT on the claim's path (an attempt is granted once, so a row already
    there is left as it is)."""
    TaskAttempt.objects.bulk_create([TaskAttempt(task_id=task_id, number=number, agent=agent_id, started_at=when)],
                                    ignore_conflicts=True)


def attempt_close(*, task_id, number: int, outcome: str, error: str = "", agent_id: str = "",
                   started_at=None) -> None:
    """Close the attempt's row. Called only after the fenced Task update changed
    the row, in the same transaction: a superseded attempt never gets here. An
    attempt without a row (claimed before attempts were kept) gets one now."""
    now = timezone.now()
    closed = TaskAttempt.objects.filter(task_id=task_id, number=number, outcome="").update(
        outcome=outcome, error=error, finished_at=now)
    if not closed and not TaskAttempt.objects.filter(task_id=task_id, number=number).exists():
        TaskAttempt.objects.create(task_id=task_id, number=number, agent=agent_id, outcome=outcome, error=error,
                                   started_at=started_at or now, finished_at=now)
