"""Attempts lost in flight (sent long ago, never claimed, while an agent for
them idles) are sent again, as the same attempt."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from regions.models import Agent, Task
from regions.services.capabilities import live_capabilities
from regions.services.tasks.dispatch import task_dispatch

logger = logging.getLogger("regions.services.tasks")  # the task lifecycle's log stream


def resend_lost_in_flight(*, now, batch: int) -> int:
    """An attempt dispatched long ago and never claimed, while an idle agent could
    take it, was lost in flight (a broker that lost its data, a message acked by
    a consumer that died before claiming it). Send the same attempt again: the
    claim grants an attempt once, so if the first message still exists one of
    the two is skipped, and no attempt is spent on a loss that was not the
    task's fault. A mere backlog has no idle agent: untouched."""
    lost_before = now - timedelta(seconds=settings.TASK_UNCLAIMED_RESEND_AFTER)
    idle = live_capabilities(idle_only=True)
    online = Agent.objects.filter(status=Agent.Status.ONLINE).values("agent_id")
    lost = (Task.objects.filter(status=Task.Status.QUEUED, dispatched_at__lt=lost_before)
            .filter(Q(target_agent="", capability__in=idle) | Q(target_agent__in=online))
            .values_list("id", "attempt")[:batch])
    resent = 0
    for task_id, attempt in lost:
        with transaction.atomic():
            if Task.objects.filter(id=task_id, attempt=attempt, status=Task.Status.QUEUED,
                                   dispatched_at__lt=lost_before).update(
                    dispatched_at=None, status_reason=f"attempt {attempt} was not claimed in time; sent again"):
                resent += 1
                transaction.on_commit(lambda tid=task_id: task_dispatch(task_id=tid))
    if resent:
        logger.warning("re-sent %d attempts nobody claimed within %ss", resent, settings.TASK_UNCLAIMED_RESEND_AFTER)
    return resent
