"""The claim: an agent asks before it runs an attempt, and is granted it once,
for the current attempt only; the grant, not the broker message, says what to run."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from project.dbbackends import is_postgresql
from regions.models import Task, TaskAttempt
from regions.services.config.current import config_current
from regions.services.task_events import task_finished_publish
from regions.services.tasks.attempts import attempt_close, attempt_start
from regions.services.tasks.fair import held_exists, release_held

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes


def servable(agent_id: str, capabilities: list[str] | None) -> Q:
    """Tasks this agent could have been sent: its capabilities' queues or its own.
    None means the caller is trusted region code (no restriction)."""
    if capabilities is None:
        return Q()
    return Q(target_agent=agent_id) | Q(target_agent="", capability__in=capabilities)


@dataclass(frozen=True)
class Claim:
    """The region's answer to an agent about to run an attempt. A grant carries
    what to run, from the database: the broker message only points at the
    attempt (a forged or stale message cannot change the work or its secret's
    destination)."""

    run: bool
    reason: str = ""
    capability: str = ""
    payload: dict | None = None
    timeout: int = 0
    secrets: dict = field(default_factory=dict, repr=False)


def task_claim(*, task_id: str, attempt: int, agent_id: str, capabilities: list[str] | None = None,
               claim_id: str = "") -> Claim:
    """An agent is about to run this attempt: it may only if the attempt is still
    the current one and nobody runs it yet. The answer is synchronous, so a
    handler never starts for a superseded attempt, whatever the broker
    redelivers (a dead consumer's messages, a visibility timeout, a revoke
    nobody heard). A message for an attempt already running elsewhere is
    skipped: if that agent is dead the reaper moves the task to a new attempt.
    The same delivery asking again (claim_id; its first answer was lost) gets
    the same grant."""
    now = timezone.now()
    if is_postgresql():  # PostgreSQL: the grant, its history row and what to run in one statement
        row = _claim_sql(task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities,
                         claim_id=claim_id, now=now)
        if row is not None:
            if row[4]:  # the claim left room in its caller's window, and something waits for it
                release_held(submitted_by_id=row[3], capability=row[0], refill=True)
            return _granted(task_id=task_id, attempt=attempt, agent_id=agent_id, capability=row[0],
                            payload=json.loads(row[1]) if isinstance(row[1], str) else row[1], timeout=row[2])
        claimed = 0
    else:
        with transaction.atomic():
            # A new attempt starts clean: the previous attempt's error stays in its TaskAttempt row.
            claimed = (Task.objects.filter(servable(agent_id, capabilities), id=task_id, attempt=attempt,
                                           status__in=Task.PENDING)
                       .update(status=Task.Status.RUNNING, agent=agent_id, started_at=now, status_reason="",
                               claim_id=claim_id, error=""))
            if claimed:
                attempt_start(task_id=task_id, number=attempt, agent_id=agent_id, when=now)
    if not claimed and not (claim_id and Task.objects.filter(
            id=task_id, attempt=attempt, status=Task.Status.RUNNING, agent=agent_id, claim_id=claim_id).exists()):
        reason = _claim_refusal(task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities)
        logger.info("claim of task %s attempt %s by %s refused: %s", task_id, attempt, agent_id, reason,
                    extra={"agent": agent_id, "task": str(task_id)})
        return Claim(run=False, reason=reason)
    task = Task.objects.only("capability", "payload", "timeout", "submitted_by_id", "target_agent").get(id=task_id)
    if claimed and not task.target_agent and held_exists(submitted_by_id=task.submitted_by_id,
                                                         capability=task.capability):
        release_held(submitted_by_id=task.submitted_by_id, capability=task.capability, refill=True)
    return _granted(task_id=task_id, attempt=attempt, agent_id=agent_id, capability=task.capability,
                    payload=task.payload, timeout=task.timeout)


# One statement, one round trip, no transaction to open and commit: the fenced
# UPDATE (same conditions as the ORM path: this attempt, still pending, a task
# this agent could have been sent), the attempt's history row, what to run, and
# whether the caller has tasks held for its fair share (fair.py) to send next.
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE regions_task SET status = 'running', agent = %(agent)s, started_at = %(now)s, status_reason = '',
                            claim_id = %(claim_id)s, error = ''
    WHERE id = %(id)s AND attempt = %(attempt)s AND status IN ('waiting', 'queued', 'retrying')
      AND (%(trusted)s OR target_agent = %(agent)s OR (target_agent = '' AND capability = ANY(%(caps)s)))
    RETURNING id, capability, payload, timeout, submitted_by_id, target_agent
), history AS (
    INSERT INTO regions_taskattempt (task_id, number, agent, started_at, finished_at, outcome, error)
    SELECT id, %(attempt)s, %(agent)s, %(now)s, NULL, '', '' FROM claimed
    ON CONFLICT (task_id, number) DO NOTHING
)
SELECT c.capability, c.payload::text, c.timeout, c.submitted_by_id,
       c.target_agent = '' AND EXISTS (
           SELECT 1 FROM regions_task h WHERE h.held AND h.status IN ('waiting', 'queued')
           AND h.capability = c.capability AND h.submitted_by_id IS NOT DISTINCT FROM c.submitted_by_id)
FROM claimed c
"""


def _claim_sql(*, task_id, attempt: int, agent_id: str, capabilities, claim_id: str, now):
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"agent": agent_id, "now": now, "claim_id": claim_id, "id": str(task_id),
                                    "attempt": attempt, "trusted": capabilities is None,
                                    "caps": list(capabilities or [])})
        return cursor.fetchone()


def _granted(*, task_id, attempt: int, agent_id: str, capability: str, payload, timeout: int) -> Claim:
    logger.info("task %s attempt %s claimed by %s", task_id, attempt, agent_id,
                extra={"agent": agent_id, "task": str(task_id)})
    grant = {"run": True, "capability": capability, "payload": payload, "timeout": timeout}
    secret_name = payload.get("auth_secret") if isinstance(payload, dict) else None
    if not secret_name:
        return Claim(**grant)
    # Resolved here, inside the region, for the agent that claimed the attempt:
    # never stored, never in a queued message. Checked again: the configuration
    # may have changed since submission.
    config = config_current()
    try:
        refusal = config.secret_refusal(str(secret_name), str(payload.get("source", "")))
        if refusal:
            raise KeyError(refusal)
        return Claim(**grant, secrets={secret_name: config.secret(str(secret_name))})
    except (KeyError, OSError) as exc:
        error = f"secret unavailable: {exc.args[0] if exc.args else exc}"
        with transaction.atomic():
            if Task.objects.filter(id=task_id, attempt=attempt, status=Task.Status.RUNNING, agent=agent_id).update(
                    status=Task.Status.FAILED, error=error, finished_at=timezone.now(), status_reason=error[:255]):
                attempt_close(task_id=task_id, number=attempt, outcome=TaskAttempt.Outcome.FAILED, error=error,
                               agent_id=agent_id)
                task_finished_publish([task_id])
        return Claim(run=False, reason=error)


def _claim_refusal(*, task_id: str, attempt: int, agent_id: str, capabilities: list[str] | None) -> str:
    """Why, as far as this agent may know: of a task it could not have been sent,
    not even that it exists; never which other agent runs it (the log says)."""
    row = Task.objects.filter(servable(agent_id, capabilities), id=task_id).values("attempt", "status", "agent").first()
    if row is None:
        return f"no task {task_id} that agent {agent_id} may run in region {settings.REGION_ID}"
    if row["attempt"] != attempt:
        return f"attempt {attempt} is superseded: the task is at attempt {row['attempt']} ({row['status']})"
    if row["status"] == Task.Status.RUNNING:
        return f"attempt {attempt} is already running on {'this' if row['agent'] == agent_id else 'another'} agent"
    return f"the task is already {row['status']}"
