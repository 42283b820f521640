"""A caller or operator runs a failed or cancelled task again, as a new attempt;
the retry must pass what a submission must (capability allowed, the caller's
quotas, rate limit), and takes its place in its caller's fair share (fair.py)."""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest, Now

from regions.models import CallbackDelivery, Task
from regions.services.config.current import config_current
from regions.services.tasks.dispatch import task_dispatch
from regions.services.tasks.fair import hold_beyond_window
from regions.services.tasks.quotas import quota_admit
from regions.services.tasks.refusals import AttemptLimit, CapabilityRefused, InvalidState
from regions.services.tasks.submit import rate_check
from regions.services.tasks.waiting import initial_status
from regions.services.workflows.advance import workflow_resume


RETRYABLE = (Task.Status.FAILED, Task.Status.CANCELLED)


def task_retry(*, task: Task) -> Task:
    """Run a failed or cancelled task again, as a new attempt (one more than it
    had: a manual retry is granted even when its attempts were spent). The
    previous attempts' errors stay in their TaskAttempt rows. Bounded: a cancel
    and retry loop must not drive a task past what the wire carries."""
    if task.status not in RETRYABLE:
        raise InvalidState(f"cannot retry: only a failed or cancelled task can be retried; this one is {task.status}")
    if task.attempt >= settings.TASK_ATTEMPTS_MAX:
        raise AttemptLimit(f"cannot retry: this task has had {task.attempt} attempts, the most a task may have "
                           f"(TASK_ATTEMPTS_MAX); submit it again as a new task")
    # What submission checks, a retry checks too: a capability blocklisted or
    # not allowed here since, and its rate limit (cancel-retry is no way around it).
    config = config_current()
    refusal = config.capability_refusal(task.capability)
    if refusal:
        raise CapabilityRefused(refusal)
    admitted, quota_refusal = quota_admit(config, caller=task.submitted_by, count=1)
    if not admitted:
        raise quota_refusal
    rate_check(task.capability, config.task_definition(task.capability), task.submitted_by)
    status, reason = initial_status(capability=task.capability, target_agent=task.target_agent)
    # Beyond its caller's window it is held, as a new submission would be.
    turn = Task(capability=task.capability, submitted_by_id=task.submitted_by_id, target_agent=task.target_agent,
                status_reason=reason)
    hold_beyond_window([turn])
    with transaction.atomic():
        changed = Task.objects.filter(id=task.id, status__in=RETRYABLE, attempt=task.attempt).update(
            status=status, status_reason=turn.status_reason or f"retried after attempt {task.attempt}",
            held=turn.held,
            attempt=F("attempt") + 1, max_attempts=Greatest(F("max_attempts"), F("attempt") + 1),
            agent="", claim_id="", error="", result=None, dispatched_at=None, not_before=None,
            started_at=None, finished_at=None, queued_at=Now(),  # queue wait counts from here
        )
        if changed:
            if task.callback_url:
                # Final again later: its callback is due again then. The lease
                # stays (a delivery of the previous final state may be in flight;
                # without its token it records its attempt and nothing else).
                CallbackDelivery.objects.filter(task_id=task.id).update(
                    state=CallbackDelivery.State.PENDING, next_attempt_at=None, lease_token="", delivered_at=None)
            if task.workflow_step_id:
                workflow_resume(workflow_step_id=task.workflow_step_id)
            if not turn.held:
                transaction.on_commit(lambda: task_dispatch(task_id=task.id))
    task.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot retry: only a failed or cancelled task can be retried; this one is {task.status}")
    return task
