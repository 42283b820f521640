"""The outbox: a task whose current attempt the broker never got (its send was
refused and released, or a retry's backoff is over) is sent now. A task held
beyond its caller's fair share is not unsent: it waits for its turn (held.py)."""
from __future__ import annotations

from datetime import timedelta

from django.db.models import Q

from regions.models import Task
from regions.services.tasks.dispatch import task_dispatch


def send_unsent(*, now, batch: int) -> int:
    due = list(
        Task.objects.filter(status__in=Task.PENDING, dispatched_at__isnull=True, held=False,
                            created_at__lt=now - timedelta(seconds=1))
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("created_at").values_list("id", flat=True)[:batch]
    )
    return sum(1 for task_id in due if task_dispatch(task_id=task_id))
