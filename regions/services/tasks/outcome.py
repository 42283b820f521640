"""An attempt's outcome, as the agent that claimed it reports it: success, or a
failure retried with backoff while attempts remain. Only the claimant's current,
running attempt changes: a late or duplicate report matches no row, except a
success of an attempt requeued from the same agent while the next attempt is
unclaimed (_late_succeed)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from project.dbbackends import is_postgresql
from regions.models import IngestedRecord, Task, TaskAttempt, WorkflowStep
from regions.services.config.current import config_current
from regions.services.task_events import task_finished_publish
from regions.services.tasks.attempts import attempt_close
from regions.services.tasks.claim import servable
from regions.services.tasks.dispatch import revoke
from regions.services.workflows.advance import workflow_advance, workflow_of_task

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes


def _owned(task_id: str, attempt: int, agent_id: str, capabilities: list[str] | None = None):
    # Only the agent that claimed the attempt (synchronously, before its handler
    # started) may report its outcome, and only while it is the current attempt.
    return Task.objects.filter(servable(agent_id, capabilities), id=task_id, attempt=attempt,
                               status=Task.Status.RUNNING, agent=agent_id)


def _started(started_at: float | None):
    # The result may be processed before its claim: keep the agent's start time.
    when = datetime.fromtimestamp(started_at, tz=dt_timezone.utc) if started_at else timezone.now()
    return Coalesce(F("started_at"), Value(when))


def task_succeed(*, task_id: str, attempt: int, agent_id: str, result: dict,
                 started_at: float | None = None, capabilities: list[str] | None = None) -> bool:
    records = result.pop("records", None) if isinstance(result, dict) else None
    # The single statement takes tasks outside workflows only; a workflow's step
    # (and a fenced report, which matches nothing either way) takes the
    # transaction that also creates the next step.
    # callback: whether a completion callback may be due (the single statement
    # knows; otherwise the callbacks' own query finds out).
    done, callback = (_succeed_sql(task_id=task_id, attempt=attempt, agent_id=agent_id, result=result,
                                   started_at=started_at, capabilities=capabilities)
                      if not records and is_postgresql() else (False, True))
    if not done:
        callback = True
        with transaction.atomic():
            owned = _owned(task_id, attempt, agent_id, capabilities)
            if not records and is_postgresql():
                owned = owned.filter(workflow_step__isnull=False)
            done = bool(owned.update(
                status=Task.Status.SUCCEEDED, result=result, error="", agent=agent_id,
                started_at=_started(started_at), finished_at=timezone.now(), status_reason="",
            ))
            if done:
                attempt_close(task_id=task_id, number=attempt, outcome=TaskAttempt.Outcome.SUCCEEDED,
                              agent_id=agent_id)
                _records_keep(task_id, records)
                _workflow_advance(task_id)
    late = not done and _late_succeed(task_id=task_id, attempt=attempt, agent_id=agent_id, result=result,
                                      records=records, started_at=started_at, capabilities=capabilities)
    if done or late:
        task_finished_publish([task_id], callbacks=callback)
        logger.info("task %s attempt %s succeeded on %s%s", task_id, attempt, agent_id,
                    " (reported after the attempt was requeued; the next attempt will not run)" if late else "",
                    extra={"agent": agent_id, "task": str(task_id)})
    else:
        logger.info("late or fenced result for task %s attempt %s from %s ignored", task_id, attempt, agent_id,
                    extra={"agent": agent_id, "task": str(task_id)})
    return done or late


def _workflow_advance(task_id, workflow_step_id=None) -> None:
    """In the transaction that ended a task: its workflow's next step, or its end."""
    workflow_id = (workflow_of_task(task_id) if workflow_step_id is None else
                   WorkflowStep.objects.filter(id=workflow_step_id).values_list("workflow_id", flat=True).first())
    if workflow_id is not None:
        workflow_advance(workflow_id=workflow_id)


def _records_keep(task_id, records) -> None:
    if records:
        IngestedRecord.objects.bulk_create(
            [IngestedRecord(task_id=task_id, line=r["line"], data=r["data"]) for r in records],
            batch_size=2000, ignore_conflicts=True,
        )


def _late_succeed(*, task_id, attempt: int, agent_id: str, result, records, started_at: float | None,
                  capabilities: list[str] | None) -> bool:
    """A success reported after its attempt was requeued because its agent was
    lost (killed after the handler finished and back after its TTL, or frozen),
    while the next attempt is still unclaimed: the work is done, so it stands,
    and the next attempt never runs (its claim finds the task final; its message
    is revoked). Once anyone claims the next attempt, the late result is fenced
    out as before: a handler never runs for a superseded attempt, and a task
    has one result."""
    with transaction.atomic():
        requeued = TaskAttempt.objects.filter(task_id=task_id, number=attempt, agent=agent_id,
                                              outcome=TaskAttempt.Outcome.REQUEUED)
        done = requeued.exists() and Task.objects.filter(
            servable(agent_id, capabilities), id=task_id, attempt=attempt + 1, status__in=Task.PENDING,
        ).update(status=Task.Status.SUCCEEDED, attempt=attempt, result=result, error="", agent=agent_id,
                 started_at=_started(started_at), finished_at=timezone.now(), status_reason="")
        if done:
            requeued.update(outcome=TaskAttempt.Outcome.SUCCEEDED, error="", finished_at=timezone.now())
            _records_keep(task_id, records)
            _workflow_advance(task_id)
    if done:
        revoke(task_id, attempt + 1)
    return bool(done)


# The fenced success (the _owned conditions) and the attempt's history row closed,
# in one statement, for a task outside any workflow. An attempt without a row (claimed before attempts were kept)
# gets one in the same statement.
_SUCCEED_SQL = """
WITH done AS (
    UPDATE regions_task SET status = 'succeeded', result = %(result)s::jsonb, error = '', agent = %(agent)s,
                            started_at = COALESCE(started_at, %(started)s), finished_at = %(now)s,
                            status_reason = ''
    WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running' AND agent = %(agent)s
      AND workflow_step_id IS NULL
      AND (%(trusted)s OR target_agent = %(agent)s OR (target_agent = '' AND capability = ANY(%(caps)s)))
    RETURNING id, started_at, callback_url
), closed AS (
    UPDATE regions_taskattempt SET outcome = 'succeeded', error = '', finished_at = %(now)s
    WHERE task_id = (SELECT id FROM done) AND number = %(attempt)s AND outcome = ''
    RETURNING id
), opened AS (
    INSERT INTO regions_taskattempt (task_id, number, agent, started_at, finished_at, outcome, error)
    SELECT id, %(attempt)s, %(agent)s, COALESCE(started_at, %(now)s), %(now)s, 'succeeded', '' FROM done
    WHERE NOT EXISTS (SELECT 1 FROM closed)
    ON CONFLICT (task_id, number) DO NOTHING
)
SELECT count(*), coalesce(bool_or(callback_url <> ''), false) FROM done
"""


def _succeed_sql(*, task_id, attempt: int, agent_id: str, result, started_at: float | None,
                 capabilities) -> tuple[bool, bool]:
    """(succeeded, whether it has a completion callback to send)."""
    now = timezone.now()
    started = datetime.fromtimestamp(started_at, tz=dt_timezone.utc) if started_at else now
    with connection.cursor() as cursor:
        cursor.execute(_SUCCEED_SQL, {
            "result": None if result is None else json.dumps(result), "agent": agent_id, "started": started,
            "now": now, "id": str(task_id), "attempt": attempt, "trusted": capabilities is None,
            "caps": list(capabilities or [])})
        done, callback = cursor.fetchone()
        return bool(done), bool(callback)


def retry_delay(attempt: int, base: float | None = None) -> float:
    base = settings.TASK_RETRY_BACKOFF_BASE if base is None else base
    return min(base * (2 ** (attempt - 1)), settings.TASK_RETRY_BACKOFF_MAX)


def task_fail(*, task_id: str, attempt: int, agent_id: str, error: str, retryable: bool = True,
              started_at: float | None = None, capabilities: list[str] | None = None,
              outcome: str = TaskAttempt.Outcome.FAILED) -> bool:
    """A failed attempt: retry with backoff while attempts remain, else fail."""
    task = _owned(task_id, attempt, agent_id, capabilities).first()
    if task is None:
        return False
    with transaction.atomic():
        changed = _fail_owned(task, task_id=task_id, attempt=attempt, agent_id=agent_id, error=error,
                              retryable=retryable, started_at=started_at, capabilities=capabilities)
        if changed:
            attempt_close(task_id=task_id, number=attempt, outcome=outcome, error=error, agent_id=agent_id)
            if not (retryable and task.attempt < task.max_attempts):  # final: no attempt left, or not retryable
                task_finished_publish([task_id])
                if task.workflow_step_id:
                    _workflow_advance(task_id, task.workflow_step_id)  # fails the workflow, naming the step
    if changed:
        logger.warning("task %s attempt %s failed on %s (%s): %s", task_id, attempt, agent_id,
                       "retrying" if retryable and task.attempt < task.max_attempts else "final", error[:300],
                       extra={"agent": agent_id, "task": str(task_id)})
    return bool(changed)


def _fail_owned(task: Task, *, task_id: str, attempt: int, agent_id: str, error: str, retryable: bool,
                started_at: float | None, capabilities: list[str] | None) -> int:
    now = timezone.now()
    if retryable and task.attempt < task.max_attempts:
        # Queued again once its backoff ends: the backoff is no queue wait.
        not_before = now + timedelta(seconds=retry_delay(
            attempt, config_current().task_definition(task.capability).get("retry_backoff")))
        changed = _owned(task_id, attempt, agent_id, capabilities).update(
            status=Task.Status.RETRYING, attempt=F("attempt") + 1, agent="", error=error,
            dispatched_at=None, started_at=None, not_before=not_before, queued_at=not_before,
            status_reason=f"attempt {attempt} failed; retrying",
        )
    else:
        changed = _owned(task_id, attempt, agent_id, capabilities).update(
            status=Task.Status.FAILED, error=error, agent=agent_id, finished_at=now,
            started_at=_started(started_at), status_reason=f"failed after {attempt} attempt(s)",
        )
    return changed
