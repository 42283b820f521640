"""An attempt on the broker: its message sent once (the send is claimed by
setting dispatched_at, and released if the broker refuses, for the sweeper to
send), and revoked, best effort, when the attempt ends here first."""
from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from project.celery import app
from regions.models import Task
from regions.services.leadership import unfenced
from wire.broker import message_priority
from wire.protocol import (EXECUTE_TASK, agent_queue, capability_queue, execute_kwargs, hard_time_limit,
                           message_id)

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes


def task_dispatch(*, task_id) -> bool:
    """Hand the current attempt to the broker, exactly once per attempt: the send
    is claimed by a conditional UPDATE first (the sweeper and an on-commit
    dispatch may race), and released again if the broker refuses it."""
    now = timezone.now()
    task = (Task.objects.filter(id=task_id, status__in=Task.PENDING, dispatched_at__isnull=True, held=False)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now)).first())
    if task is None:
        return False
    claimed = Task.objects.filter(id=task.id, attempt=task.attempt, status__in=Task.PENDING,
                                  dispatched_at__isnull=True, held=False).update(
        dispatched_at=now,
        status=Case(When(status=Task.Status.RETRYING, then=Value(Task.Status.QUEUED)), default=F("status")),
    )
    if not claimed:
        return False
    return send_or_release(task, dispatched_at=now)


def send_or_release(task: Task, *, dispatched_at, producer=None) -> bool:
    """Send the message of the task's current attempt, whose send this caller
    claimed by setting dispatched_at; if the broker refuses, release the claim
    (the sweeper sends it later)."""
    queue = agent_queue(task.target_agent) if task.target_agent else capability_queue(task.capability)
    kwargs = execute_kwargs(task_id=task.id, attempt=task.attempt, capability=task.capability,
                            timeout=task.timeout)
    try:
        app.send_task(
            EXECUTE_TASK,
            kwargs=kwargs,
            task_id=message_id(task.id, task.attempt),
            queue=queue,
            priority=message_priority(settings.CELERY_BROKER_URL, task.priority),
            soft_time_limit=task.timeout,
            time_limit=hard_time_limit(task.timeout, settings.REPORT_ALLOWANCE_SECONDS),
            producer=producer,
            # One quick retry re-opens a pooled connection that went stale while
            # the broker was away; a broker that is still down fails fast.
            retry=True, retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 0.2},
        )
    except Exception as exc:  # broker down: kombu raises several types
        with unfenced():  # the claim is released even by a sweeper whose clock lease moved on
            Task.objects.filter(id=task.id, attempt=task.attempt, dispatched_at=dispatched_at).update(
                dispatched_at=None)
        logger.warning("dispatch of task %s deferred, broker unavailable: %s", task.id, exc,
                       extra={"task": str(task.id)})
        return False
    return True


def send_many(tasks: list[Task]) -> int:
    """The messages of freshly stored tasks, on one pooled broker connection. At
    the first refusal the rest are released to the sweeper in one UPDATE: a broker
    that accepts connections and never answers costs the batch one connection
    timeout, not one per item."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for index, task in enumerate(tasks):
            if not send_or_release(task, dispatched_at=task.dispatched_at, producer=producer):
                rest = [t.id for t in tasks[index + 1:]]
                if rest:
                    Task.objects.filter(id__in=rest, attempt=1, status__in=Task.PENDING).update(dispatched_at=None)
                break
            sent += 1
    return sent


def revoke(task_id, attempt: int, terminate: bool = False) -> None:
    try:
        app.control.revoke(message_id(task_id, attempt), terminate=terminate, signal="SIGTERM")
    except Exception as exc:  # best effort: the fence still drops the attempt
        logger.info("revoke of %s:%s not sent: %s", task_id, attempt, exc)
