"""Nothing waits forever: a task still waiting for an agent past its wait
deadline fails with reason no_agent."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from regions.models import Agent, Task, TaskAttempt
from regions.services.config.current import config_current
from regions.services.task_events import task_finished_publish

logger = logging.getLogger("regions.services.tasks")  # the task lifecycle's log stream


def fail_waiting_past_deadline(*, now, batch: int, live: set[str]) -> int:
    """Nothing waits forever: a task still waiting for an agent when its wait
    deadline has passed fails with reason no_agent. The wait counts from when
    its current attempt was sent (dispatched_at: the submit, a retry or a
    requeue); an attempt not sent yet (the broker refused it; the sweeper sends
    it) is waiting for the broker, not for an agent, and is not counted. The
    deadline is the configuration's tasks.<capability>.wait_deadline, else
    settings.TASK_WAIT_DEADLINE.

    A task whose capability is live again (it wakes in this sweep) or whose
    target agent is online is left alone; and the rows are locked and changed
    on status = waiting only, so a task an agent claimed a moment ago (the
    claim is a fenced UPDATE on the same row) is never failed: one of the two
    wins, and the other changes nothing."""
    config = config_current()
    custom = {capability: int(definition["wait_deadline"])
              for capability, definition in (config.content.get("tasks") or {}).items()
              if isinstance(definition, dict) and definition.get("wait_deadline")}

    def past(seconds: int) -> Q:  # on the (status, dispatched_at) index
        return Q(dispatched_at__lt=now - timedelta(seconds=seconds))

    expired = past(settings.TASK_WAIT_DEADLINE) & ~Q(capability__in=list(custom))
    for capability, seconds in custom.items():
        expired |= Q(capability=capability) & past(seconds)
    waiting = Task.objects.filter(expired, status=Task.Status.WAITING)
    candidates = waiting.exclude(target_agent="", capability__in=live)
    for target, capability in _served_targets(waiting, batch):
        candidates = candidates.exclude(target_agent=target, capability=capability)
    failed: list = []
    count = 0
    with transaction.atomic():
        # skip_locked: a row a claim holds right now is the claim's; the next tick sees it again.
        rows = list(candidates.select_for_update(skip_locked=True).order_by()
                    .values_list("id", "capability", "target_agent")[:batch])
        groups: dict[tuple[str, str], list] = {}
        for task_id, capability, target in rows:
            groups.setdefault((capability, target), []).append(task_id)
        for (capability, target), ids in groups.items():
            seconds = custom.get(capability, settings.TASK_WAIT_DEADLINE)
            if target:
                error = (f"no_agent: target agent {target} did not take this task of capability {capability!r} "
                         f"within its wait deadline of {seconds} s")
            else:
                error = (f"no_agent: no live agent serving capability {capability!r} checked in within the wait "
                         f"deadline of {seconds} s")
            changed = Task.objects.filter(id__in=ids, status=Task.Status.WAITING).update(
                status=Task.Status.FAILED, error=error, status_reason="no_agent", finished_at=now, held=False)
            # An open history row of the current attempt (rare: a waiting attempt
            # normally has none) is closed as failed too.
            TaskAttempt.objects.filter(task_id__in=ids, number=F("task__attempt"), outcome="").update(
                outcome=TaskAttempt.Outcome.FAILED, error=error, finished_at=now)
            failed.extend(ids)
            count += changed
            logger.warning("%d tasks of %s failed: no agent within the wait deadline of %s s", changed,
                           capability, seconds)
        task_finished_publish(failed)  # wakes their long-poll waiters once this commits
    return count


def _served_targets(waiting, batch: int) -> list[tuple[str, str]]:
    """(target agent, capability) of waiting tasks whose target agent is back,
    takes work and serves the capability: its own queue holds the message, and
    it claims it (a claim takes a waiting task); not a task nobody serves."""
    pairs = list(waiting.exclude(target_agent="").order_by().values_list("target_agent", "capability")
                 .distinct()[:batch])
    if not pairs:
        return []
    serving = dict(Agent.objects.filter(agent_id__in={t for t, _ in pairs}, status=Agent.Status.ONLINE,
                                        desired=Agent.Desired.ACTIVE).values_list("agent_id", "capabilities"))
    return [(t, c) for t, c in pairs if c in serving.get(t, ())]
