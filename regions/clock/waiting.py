"""'Waiting' kept honest: a waiting task whose capability an agent serves again
is queued, and a queued one nobody serves any more waits, with the reason."""
from __future__ import annotations

from regions.models import Task
from regions.services.tasks.waiting import waiting_reason


def wake_waiting(*, live: set[str]) -> int:
    return Task.objects.filter(status=Task.Status.WAITING, target_agent="", capability__in=live).update(
        status=Task.Status.QUEUED, status_reason=""
    )


def stall_queued(*, live: set[str], batch: int) -> int:
    stalled = 0
    for capability in (Task.objects.filter(status=Task.Status.QUEUED, target_agent="").exclude(capability__in=live)
                       .order_by().values_list("capability", flat=True).distinct()[:batch]):
        stalled += Task.objects.filter(status=Task.Status.QUEUED, target_agent="", capability=capability).update(
            status=Task.Status.WAITING, status_reason=waiting_reason(capability))
    return stalled
