"""A caller's quotas at the region, applied before anything is stored:
submissions per second (a batch counts each item; a fixed one-second window in
the region's Redis) and tasks in flight (waiting, queued or running, counted in
the database up to the limit). The limits come from the configuration
repository (callers.<username>, callers.default) or the settings; 0 is none.
A refusal is a 429 naming the quota, its limit and when to come back."""
from __future__ import annotations

import time

from django.conf import settings

from regions.models import Task, Workflow, WorkflowStep
from regions.services import liveness
from regions.services.tasks.refusals import QuotaExceeded

IN_FLIGHT_RETRY_AFTER = 5  # seconds: until some of the caller's tasks finish


def quota_admit(config, *, caller, count: int, submitted_now: int | None = None) -> tuple[int, QuotaExceeded | None]:
    """How many of `count` new tasks the caller's quotas admit now, and the
    refusal for the rest (None when all are admitted). submitted_now: of them,
    how many are submitted now (a workflow reserves all its steps in flight but
    submits its first step only); a refusal by the rate then admits none. No
    caller (the region's own schedules, bounded by its configuration) has no
    quota."""
    if caller is None:
        return count, None
    quota = config.caller_quota(caller.get_username())
    admitted, refusal = count, None
    limit = quota["max_in_flight"]
    if limit:
        in_flight = in_flight_count(caller, limit=limit)
        if in_flight + admitted > limit:
            admitted = max(0, limit - in_flight)
            refusal = QuotaExceeded(
                f"quota max_in_flight={limit} reached: {in_flight} of your tasks are waiting or running in region "
                f"{settings.REGION_ID}; submit more as they finish",
                retry_after=IN_FLIGHT_RETRY_AFTER, quota="max_in_flight", limit=limit)
    limit = quota["submissions_per_second"]
    if limit and admitted:
        allowed, refused = _per_second(caller.pk, admitted if submitted_now is None else submitted_now, limit)
        if refused:
            admitted = allowed if submitted_now is None else 0
            refusal = QuotaExceeded(
                f"quota submissions_per_second={limit} reached in region {settings.REGION_ID}; retry in a second",
                retry_after=1, quota="submissions_per_second", limit=limit)
    return admitted, refusal


def in_flight_count(caller, *, limit: int) -> int:
    """The caller's tasks waiting, queued or running, and the steps its running
    workflows will still start (each reserved when its workflow was accepted),
    counted up to `limit` each."""
    tasks = Task.objects.filter(submitted_by=caller, status__in=Task.ACTIVE)[:limit].count()
    steps = (WorkflowStep.objects.filter(workflow__submitted_by=caller, workflow__status=Workflow.Status.RUNNING,
                                         tasks__isnull=True)[:limit].count())
    return tasks + steps


def _per_second(caller_id, count: int, limit: int) -> tuple[int, bool]:
    key = liveness.key(f"quota:{caller_id}:{int(time.time())}")
    try:
        pipe = liveness.client().pipeline()
        pipe.incrby(key, count)
        pipe.expire(key, 2)
        used = pipe.execute()[0]
        admitted = max(0, min(count, limit - (used - count)))
        if admitted < count:
            liveness.client().decrby(key, count - admitted)  # what is refused spends nothing
    except liveness.RedisError:
        return count, False  # no counter, no limit: accepting beats refusing while Redis is away
    return admitted, admitted < count
