"""Held tasks whose turn a lost release skipped (the process that claimed the
last windowed task died before it sent the next; the window grew as agents
joined) are sent now, as far as each tenant's window has room."""
from __future__ import annotations

from regions.models import Task
from regions.services.tasks.fair import WINDOWED, release_held


def release_held_tasks(*, batch: int) -> int:
    groups = (Task.objects.filter(held=True, status__in=WINDOWED).order_by()
              .values_list("submitted_by_id", "capability").distinct()[:batch])
    return sum(release_held(submitted_by_id=tenant, capability=capability) for tenant, capability in groups)
