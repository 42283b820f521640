"""Task lifecycle in a region: submit → dispatch (outbox) → claim → result, with
requeue, retry, cancel and the sweeper. State only moves forward: every write
is a filtered UPDATE on (id, attempt, status) so a late or duplicate message
changes nothing."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from wire.broker import message_priority
from project.celery import app
from project.dbbackends import is_postgresql
from project.exceptions import Refused
from wire.protocol import (EXECUTE_TASK, agent_queue, capability_queue, execute_kwargs, hard_time_limit,
                           message_id)
from regions.models import Agent, IngestedRecord, Task, TaskAttempt
from regions.services import liveness
from regions.services.capabilities import capability_live, live_capabilities
from regions.services.config import HOT_PATH_CHECK_SECONDS, config_current
from regions.services.handlers import payload_check
from regions.services.task_events import task_finished_publish

logger = logging.getLogger(__name__)

NO_AGENT_REASON = "no live agent serves capability {cap}; the task runs when one checks in"
HELD_REASON = ("the agents serving capability {cap} are cordoned or draining ({agents}); the task runs when one is "
               "uncordoned or another checks in")


# What submission and the operator actions refuse; the API answers each with its
# status and code (project.exceptions.Refused), a batch item too.

class PayloadTooLargeError(Refused):
    status, code = 413, "payload_too_large"


class InvalidState(Refused):
    """The task is not in a state the action applies to."""

    status, code = 409, "conflict"


class CapabilityRefused(Refused):
    """The active configuration does not let this region run the capability."""

    status, code = 403, "permission_denied"


class NoAgent(Refused):
    """require_agent was asked and no live agent takes the task: nothing stored."""

    status, code = 409, "no_agent"


class IdempotencyConflict(Refused):
    """The idempotency key was used before for a different request."""

    status, code = 409, "idempotency_key_reused"


class RateLimited(Refused):
    status, code = 429, "throttled"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


_WINDOWS = {"s": 1, "m": 60, "h": 3600}


def _rate_check(capability: str, limit: str | None) -> None:
    """Fixed-window submission limit per capability, counted in Redis."""
    if not limit:
        return
    count, unit = limit.split("/")
    window = _WINDOWS[unit]
    slot = int(time.time() // window)
    key = liveness.key(f"rate:{capability}:{slot}")
    try:
        pipe = liveness.client().pipeline()
        pipe.incr(key)
        pipe.expire(key, window + 1)
        used = pipe.execute()[0]
    except liveness.RedisError:
        return  # no counter, no limit: accepting beats refusing while Redis is away
    if used > int(count):
        raise RateLimited(f"rate limit {limit} for {capability} reached; retry later",
                          retry_after=max(1, int(window - time.time() % window)))


@dataclass(frozen=True)
class Submission:
    task: Task
    created: bool


def payload_size(payload) -> int:
    return len(json.dumps(payload, separators=(",", ":")).encode())


def task_submit(
    *, submitted_by, capability: str, payload: dict, priority: int = 5, timeout: int | None = None,
    max_attempts: int | None = None, idempotency_key: str | None = None, target_agent: str = "",
    require_agent: bool = False,
) -> Submission:
    """Persist first, dispatch after commit: a failed send is retried by the sweeper.
    require_agent: refuse (NoAgent) instead of storing a task that would wait."""
    # The submit path looks at the published configuration id at most every
    # HOT_PATH_CHECK_SECONDS (one Redis GET per 100 ms per process, not per task).
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    digest = request_digest(capability=capability, payload=payload, priority=priority, timeout=timeout,
                            max_attempts=max_attempts, target_agent=target_agent) if idempotency_key else ""
    if idempotency_key:
        # A replay answers the task the first request made, before any check that
        # may have changed since (a tightened schema, a new blocklist): a client
        # retrying after a lost answer must learn of its task, not be refused.
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replayed(existing, idempotency_key=idempotency_key, digest=digest)
    definition = _admitted(config, capability=capability, payload=payload)
    # Before the rate limit: a refused submission spends none of it.
    initial = _initial_status(capability=capability, target_agent=target_agent)
    _agent_required(require_agent, capability=capability, target_agent=target_agent, initial=initial)
    _rate_check(capability, definition.get("rate_limit"))
    task = _new_task(definition, submitted_by=submitted_by, capability=capability, payload=payload,
                     priority=priority, timeout=timeout, max_attempts=max_attempts, target_agent=target_agent,
                     idempotency_key=idempotency_key, digest=digest, initial=initial)
    try:
        with transaction.atomic():
            # The send is claimed by the INSERT itself (dispatched_at), and the
            # message goes out right after the commit from what is in hand: no
            # read back, no second UPDATE. If the broker refuses, dispatched_at
            # is cleared again and the sweeper sends it (the outbox).
            task.save(force_insert=True)
            transaction.on_commit(lambda: _send_or_release(task, dispatched_at=task.dispatched_at))
    except IntegrityError:
        # The same key raced us in another request: answer with the winner.
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replayed(existing, idempotency_key=idempotency_key, digest=digest)
    logger.info("task %s submitted (%s, %s)", task.id, capability, task.status, extra={"task": str(task.id)})
    return Submission(task=task, created=True)


def _admitted(config, *, capability: str, payload) -> dict:
    """What refuses a submission before anything is stored (413, 403); returns
    the capability's task definition."""
    if payload_size(payload) > settings.TASK_PAYLOAD_LIMIT_BYTES:
        raise PayloadTooLargeError(
            f"payload is larger than the limit of {settings.TASK_PAYLOAD_LIMIT_BYTES} bytes"
        )
    refusal = config.capability_refusal(capability)
    if refusal:
        raise CapabilityRefused(refusal)
    if isinstance(payload, dict) and payload.get("auth_secret"):
        refusal = config.secret_refusal(str(payload["auth_secret"]), str(payload.get("source", "")))
        if refusal:
            raise CapabilityRefused(refusal)
    definition = config.task_definition(capability)
    declared = payload_check(capability=capability, payload=payload, definition=definition)  # PayloadInvalid
    if declared.timeout and not definition.get("timeout"):
        # The handler's own default timeout comes after the configuration's.
        definition = {**definition, "timeout": declared.timeout}
    return definition


def _new_task(definition: dict, *, submitted_by, capability: str, payload, priority: int, timeout: int | None,
              max_attempts: int | None, target_agent: str, idempotency_key: str | None, digest: str,
              initial: tuple[str, str]) -> Task:
    status, reason = initial
    return Task(
        capability=capability, payload=payload, priority=priority,
        timeout=timeout or definition.get("timeout") or settings.TASK_DEFAULT_TIMEOUT,
        max_attempts=max_attempts or definition.get("max_attempts") or settings.TASK_DEFAULT_MAX_ATTEMPTS,
        status=status, status_reason=reason, idempotency_key=idempotency_key or None,
        request_digest=digest, target_agent=target_agent, submitted_by=submitted_by,
        dispatched_at=timezone.now(),
    )


@dataclass(frozen=True)
class ItemRefused:
    """One item of a batch that was not accepted, as the single submission would
    have answered it."""

    status: int
    code: str
    detail: str


def item_refused(exc: Refused) -> ItemRefused:
    """A batch item answered as the single submission would be."""
    return ItemRefused(exc.status, exc.code, str(exc))


def task_submit_batch(*, submitted_by, items: list[dict]) -> list[Submission | ItemRefused]:
    """Several submissions in one call, each accepted or refused on its own, with
    the single submission's checks and answers. The items without an idempotency
    key are stored in one INSERT and one commit, and their messages sent after it
    on one broker connection; an item with a key takes the single path (its
    replay and race handling). All stored items are durable before any is sent."""
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    results: list[Submission | ItemRefused | None] = [None] * len(items)
    fresh: list[tuple[int, Task]] = []
    initial: dict[tuple[str, str], tuple[str, str]] = {}
    for index, item in enumerate(items):
        try:
            if item.get("idempotency_key"):
                results[index] = task_submit(submitted_by=submitted_by, **item)
                continue
            capability, target = item["capability"], item.get("target_agent", "")
            definition = _admitted(config, capability=capability, payload=item.get("payload", {}))
            if (capability, target) not in initial:  # one counter read per capability and target
                initial[(capability, target)] = _initial_status(capability=capability, target_agent=target)
            _agent_required(item.get("require_agent", False), capability=capability, target_agent=target,
                            initial=initial[(capability, target)])
            _rate_check(capability, definition.get("rate_limit"))
        except Refused as exc:
            results[index] = item_refused(exc)
            continue
        fresh.append((index, _new_task(
            definition, submitted_by=submitted_by, capability=capability, payload=item.get("payload", {}),
            priority=item.get("priority", 5), timeout=item.get("timeout"), max_attempts=item.get("max_attempts"),
            target_agent=target, idempotency_key=None, digest="", initial=initial[(capability, target)])))
    if fresh:
        tasks = [task for _, task in fresh]
        with transaction.atomic():
            Task.objects.bulk_create(tasks, batch_size=1000)
            transaction.on_commit(lambda: _send_many(tasks))
        for index, task in fresh:
            results[index] = Submission(task=task, created=True)
        logger.info("%d tasks submitted in a batch", len(tasks))
    return results


def _send_many(tasks: list[Task]) -> int:
    """The messages of freshly stored tasks, on one pooled broker connection. At
    the first refusal the rest are released to the sweeper in one UPDATE: a broker
    that accepts connections and never answers costs the batch one connection
    timeout, not one per item."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for index, task in enumerate(tasks):
            if not _send_or_release(task, dispatched_at=task.dispatched_at, producer=producer):
                rest = [t.id for t in tasks[index + 1:]]
                if rest:
                    Task.objects.filter(id__in=rest, attempt=1, status__in=Task.PENDING).update(dispatched_at=None)
                break
            sent += 1
    return sent


def request_digest(*, capability: str, payload: dict, priority: int, timeout: int | None,
                   max_attempts: int | None, target_agent: str) -> str:
    """What a submission asked for, canonically (key order does not matter)."""
    canonical = json.dumps({"capability": capability, "payload": payload, "priority": priority, "timeout": timeout,
                            "max_attempts": max_attempts, "target_agent": target_agent},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(existing: Task, *, idempotency_key: str, digest: str) -> Submission:
    """The Stripe rule: the same key with the same request answers the first
    task; with a different request it is the client's mistake. (Tasks stored
    before digests were kept have none and are answered as before.)"""
    if existing.request_digest and existing.request_digest != digest:
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was already used for a different request (task {existing.id}); "
            "use a new key for a new task")
    return Submission(task=existing, created=False)


def _initial_status(*, capability: str, target_agent: str) -> tuple[str, str]:
    if target_agent:
        agent = Agent.objects.filter(agent_id=target_agent).only("status", "desired", "capabilities").first()
        if agent is None or agent.status != Agent.Status.ONLINE:
            reason = f"target agent {target_agent} is not online"
        elif capability not in agent.capabilities:
            reason = f"target agent {target_agent} does not serve {capability}"
        else:
            return Task.Status.QUEUED, ""
        return Task.Status.WAITING, _with_deadline(reason, capability=capability, since=timezone.now())
    if capability_live(capability):
        return Task.Status.QUEUED, ""
    return Task.Status.WAITING, waiting_reason(capability, since=timezone.now())


def _agent_required(required: bool, *, capability: str, target_agent: str, initial: tuple[str, str]) -> None:
    """require_agent: a task that would wait is refused instead (nothing stored)."""
    if not required or initial[0] != Task.Status.WAITING:
        return
    if target_agent:
        why = initial[1].split(";")[0]  # "target agent a1 is not online"
        raise NoAgent(f"{why} in region {settings.REGION_ID}; nothing was stored (require_agent)")
    held = initial[1].split(";")[0] if initial[1].startswith("the agents serving") else ""
    raise NoAgent(f"no live agent serves capability {capability!r} in region {settings.REGION_ID}"
                  + (f": {held}" if held else "")
                  + "; nothing was stored (require_agent; submit without it to wait for one)")


def wait_deadline(capability: str, config=None) -> int:
    """Seconds a task of `capability` may wait for an agent: the configuration's
    tasks.<capability>.wait_deadline, else settings.TASK_WAIT_DEADLINE."""
    config = config or config_current(max_age=HOT_PATH_CHECK_SECONDS)
    return int(config.task_definition(capability).get("wait_deadline") or settings.TASK_WAIT_DEADLINE)


def _with_deadline(reason: str, *, capability: str, since: datetime | None) -> str:
    """The waiting reason and when the deadline fails the task: the time, when the
    wait starts now (submit, retry); its length otherwise (a queued task that
    stalls: its wait counts from when its attempt was sent)."""
    seconds = wait_deadline(capability)
    if since is not None:
        at = (since + timedelta(seconds=seconds)).astimezone(dt_timezone.utc)
        note = f"; it fails (no_agent) at {at:%Y-%m-%dT%H:%M:%SZ} if still waiting"
    else:
        note = f"; it fails (no_agent) {seconds} s after it was sent if still waiting"
    return reason[:255 - len(note)] + note


def waiting_reason(capability: str, *, since: datetime | None = None) -> str:
    """Why nobody takes a task of `capability`: no agent online serves it, or
    those online are held by the operator (cordoned or draining); and when the
    wait deadline fails it."""
    online_held = Agent.objects.filter(status=Agent.Status.ONLINE).exclude(desired=Agent.Desired.ACTIVE)
    if is_postgresql():
        held = list(online_held.filter(capabilities__contains=[capability]).values_list("agent_id", flat=True)[:4])
    else:  # SQLite (the embedded demo): few agents, filtered here
        held = [a for a, caps in online_held.values_list("agent_id", "capabilities")[:1000] if capability in caps][:4]
    if held:
        names = ", ".join(held[:3]) + (", …" if len(held) > 3 else "")
        return _with_deadline(HELD_REASON.format(cap=capability, agents=names), capability=capability, since=since)
    return _with_deadline(NO_AGENT_REASON.format(cap=capability), capability=capability, since=since)


def task_dispatch(*, task_id) -> bool:
    """Hand the current attempt to the broker, exactly once per attempt: the send
    is claimed by a conditional UPDATE first (the sweeper and an on-commit
    dispatch may race), and released again if the broker refuses it."""
    now = timezone.now()
    task = (Task.objects.filter(id=task_id, status__in=Task.PENDING, dispatched_at__isnull=True)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now)).first())
    if task is None:
        return False
    claimed = Task.objects.filter(id=task.id, attempt=task.attempt, status__in=Task.PENDING,
                                  dispatched_at__isnull=True).update(
        dispatched_at=now,
        status=Case(When(status=Task.Status.RETRYING, then=Value(Task.Status.QUEUED)), default=F("status")),
    )
    if not claimed:
        return False
    return _send_or_release(task, dispatched_at=now)


def _send_or_release(task: Task, *, dispatched_at, producer=None) -> bool:
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
            time_limit=hard_time_limit(task.timeout),
            producer=producer,
            # One quick retry re-opens a pooled connection that went stale while
            # the broker was away; a broker that is still down fails fast.
            retry=True, retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 0.2},
        )
    except Exception as exc:  # broker down: kombu raises several types
        Task.objects.filter(id=task.id, attempt=task.attempt, dispatched_at=dispatched_at).update(dispatched_at=None)
        logger.warning("dispatch of task %s deferred, broker unavailable: %s", task.id, exc,
                       extra={"task": str(task.id)})
        return False
    return True


def _servable(agent_id: str, capabilities: list[str] | None) -> Q:
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
            return _granted(task_id=task_id, attempt=attempt, agent_id=agent_id, capability=row[0],
                            payload=json.loads(row[1]) if isinstance(row[1], str) else row[1], timeout=row[2])
        claimed = 0
    else:
        with transaction.atomic():
            # A new attempt starts clean: the previous attempt's error stays in its TaskAttempt row.
            claimed = (Task.objects.filter(_servable(agent_id, capabilities), id=task_id, attempt=attempt,
                                           status__in=Task.PENDING)
                       .update(status=Task.Status.RUNNING, agent=agent_id, started_at=now, status_reason="",
                               claim_id=claim_id, error=""))
            if claimed:
                _attempt_start(task_id=task_id, number=attempt, agent_id=agent_id, when=now)
    if not claimed and not (claim_id and Task.objects.filter(
            id=task_id, attempt=attempt, status=Task.Status.RUNNING, agent=agent_id, claim_id=claim_id).exists()):
        reason = _claim_refusal(task_id=task_id, attempt=attempt, agent_id=agent_id)
        logger.info("claim of task %s attempt %s by %s refused: %s", task_id, attempt, agent_id, reason,
                    extra={"agent": agent_id, "task": str(task_id)})
        return Claim(run=False, reason=reason)
    task = Task.objects.only("capability", "payload", "timeout").get(id=task_id)
    return _granted(task_id=task_id, attempt=attempt, agent_id=agent_id, capability=task.capability,
                    payload=task.payload, timeout=task.timeout)


# One statement, one round trip, no transaction to open and commit: the fenced
# UPDATE (same conditions as the ORM path: this attempt, still pending, a task
# this agent could have been sent), the attempt's history row, and what to run.
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE regions_task SET status = 'running', agent = %(agent)s, started_at = %(now)s, status_reason = '',
                            claim_id = %(claim_id)s, error = ''
    WHERE id = %(id)s AND attempt = %(attempt)s AND status IN ('waiting', 'queued', 'retrying')
      AND (%(trusted)s OR target_agent = %(agent)s OR (target_agent = '' AND capability = ANY(%(caps)s)))
    RETURNING id, capability, payload, timeout
), history AS (
    INSERT INTO regions_taskattempt (task_id, number, agent, started_at, finished_at, outcome, error)
    SELECT id, %(attempt)s, %(agent)s, %(now)s, NULL, '', '' FROM claimed
    ON CONFLICT (task_id, number) DO NOTHING
)
SELECT capability, payload::text, timeout FROM claimed
"""


def _claim_sql(*, task_id, attempt: int, agent_id: str, capabilities, claim_id: str, now):
    from django.db import connection

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
                _attempt_close(task_id=task_id, number=attempt, outcome=TaskAttempt.Outcome.FAILED, error=error,
                               agent_id=agent_id)
                task_finished_publish([task_id])
        return Claim(run=False, reason=error)


def _attempt_start(*, task_id, number: int, agent_id: str, when) -> None:
    """The attempt's history row, written with the claim that granted it: one
    INSERT on the claim's path (an attempt is granted once, so a row already
    there is left as it is)."""
    TaskAttempt.objects.bulk_create([TaskAttempt(task_id=task_id, number=number, agent=agent_id, started_at=when)],
                                    ignore_conflicts=True)


def _attempt_close(*, task_id, number: int, outcome: str, error: str = "", agent_id: str = "",
                   started_at=None) -> None:
    """Close the attempt's row. Called only after the fenced Task update changed
    the row, in the same transaction: a superseded attempt never gets here. An
    attempt without a row (claimed before attempts were kept) gets one now."""
    now = timezone.now()
    closed = TaskAttempt.objects.filter(task_id=task_id, number=number, outcome="").update(
        outcome=outcome, error=error, finished_at=now)
    if not closed and not TaskAttempt.objects.filter(task_id=task_id, number=number).exists():
        TaskAttempt.objects.create(task_id=task_id, number=number, agent=agent_id, outcome=outcome, error=error,
                                   started_at=started_at or now, finished_at=now)


def _claim_refusal(*, task_id: str, attempt: int, agent_id: str) -> str:
    row = Task.objects.filter(id=task_id).values("attempt", "status", "agent").first()
    if row is None:
        return f"no task {task_id} in region {settings.REGION_ID}"
    if row["attempt"] != attempt:
        return f"attempt {attempt} is superseded: the task is at attempt {row['attempt']} ({row['status']})"
    if row["status"] == Task.Status.RUNNING:
        return f"attempt {attempt} is already running on agent {row['agent']}"
    if row["status"] not in Task.PENDING:
        return f"the task is already {row['status']}"
    return f"agent {agent_id} does not serve this task"


def _owned(task_id: str, attempt: int, agent_id: str, capabilities: list[str] | None = None):
    # Only the agent that claimed the attempt (synchronously, before its handler
    # started) may report its outcome, and only while it is the current attempt.
    return Task.objects.filter(_servable(agent_id, capabilities), id=task_id, attempt=attempt,
                               status=Task.Status.RUNNING, agent=agent_id)


def _started(started_at: float | None):
    # The result may be processed before its claim: keep the agent's start time.
    when = datetime.fromtimestamp(started_at, tz=dt_timezone.utc) if started_at else timezone.now()
    return Coalesce(F("started_at"), Value(when))


def task_succeed(*, task_id: str, attempt: int, agent_id: str, result: dict,
                 started_at: float | None = None, capabilities: list[str] | None = None) -> bool:
    records = result.pop("records", None) if isinstance(result, dict) else None
    if not records and is_postgresql():
        done = _succeed_sql(task_id=task_id, attempt=attempt, agent_id=agent_id, result=result,
                            started_at=started_at, capabilities=capabilities)
        if done:
            task_finished_publish([task_id])
        _succeeded_log(done, task_id=task_id, attempt=attempt, agent_id=agent_id)
        return done
    with transaction.atomic():
        done = _owned(task_id, attempt, agent_id, capabilities).update(
            status=Task.Status.SUCCEEDED, result=result, error="", agent=agent_id,
            started_at=_started(started_at), finished_at=timezone.now(), status_reason="",
        )
        if done:
            _attempt_close(task_id=task_id, number=attempt, outcome=TaskAttempt.Outcome.SUCCEEDED, agent_id=agent_id)
            task_finished_publish([task_id])
        if done and records:
            IngestedRecord.objects.bulk_create(
                [IngestedRecord(task_id=task_id, line=r["line"], data=r["data"]) for r in records],
                batch_size=2000, ignore_conflicts=True,
            )
    _succeeded_log(bool(done), task_id=task_id, attempt=attempt, agent_id=agent_id)
    return bool(done)


def _succeeded_log(done: bool, *, task_id, attempt: int, agent_id: str) -> None:
    if not done:
        logger.info("late or fenced result for task %s attempt %s from %s ignored", task_id, attempt, agent_id,
                    extra={"agent": agent_id, "task": str(task_id)})
    else:
        logger.info("task %s attempt %s succeeded on %s", task_id, attempt, agent_id,
                    extra={"agent": agent_id, "task": str(task_id)})


# The fenced success (the _owned conditions) and the attempt's history row closed,
# in one statement. An attempt without a row (claimed before attempts were kept)
# gets one in the same statement.
_SUCCEED_SQL = """
WITH done AS (
    UPDATE regions_task SET status = 'succeeded', result = %(result)s::jsonb, error = '', agent = %(agent)s,
                            started_at = COALESCE(started_at, %(started)s), finished_at = %(now)s,
                            status_reason = ''
    WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'running' AND agent = %(agent)s
      AND (%(trusted)s OR target_agent = %(agent)s OR (target_agent = '' AND capability = ANY(%(caps)s)))
    RETURNING id, started_at
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
SELECT count(*) FROM done
"""


def _succeed_sql(*, task_id, attempt: int, agent_id: str, result, started_at: float | None, capabilities) -> bool:
    from django.db import connection

    now = timezone.now()
    started = datetime.fromtimestamp(started_at, tz=dt_timezone.utc) if started_at else now
    with connection.cursor() as cursor:
        cursor.execute(_SUCCEED_SQL, {
            "result": None if result is None else json.dumps(result), "agent": agent_id, "started": started,
            "now": now, "id": str(task_id), "attempt": attempt, "trusted": capabilities is None,
            "caps": list(capabilities or [])})
        return bool(cursor.fetchone()[0])


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
            _attempt_close(task_id=task_id, number=attempt, outcome=outcome, error=error, agent_id=agent_id)
            if not (retryable and task.attempt < task.max_attempts):  # final: no attempt left, or not retryable
                task_finished_publish([task_id])
    if changed:
        logger.warning("task %s attempt %s failed on %s (%s): %s", task_id, attempt, agent_id,
                       "retrying" if retryable and task.attempt < task.max_attempts else "final", error[:300],
                       extra={"agent": agent_id, "task": str(task_id)})
    return bool(changed)


def _fail_owned(task: Task, *, task_id: str, attempt: int, agent_id: str, error: str, retryable: bool,
                started_at: float | None, capabilities: list[str] | None) -> int:
    now = timezone.now()
    if retryable and task.attempt < task.max_attempts:
        changed = _owned(task_id, attempt, agent_id, capabilities).update(
            status=Task.Status.RETRYING, attempt=F("attempt") + 1, agent="", error=error,
            dispatched_at=None, started_at=None,
            not_before=now + timedelta(seconds=retry_delay(
                attempt, config_current().task_definition(task.capability).get("retry_backoff"))),
            status_reason=f"attempt {attempt} failed; retrying",
        )
    else:
        changed = _owned(task_id, attempt, agent_id, capabilities).update(
            status=Task.Status.FAILED, error=error, agent=agent_id, finished_at=now,
            started_at=_started(started_at), status_reason=f"failed after {attempt} attempt(s)",
        )
    return changed


def tasks_requeue_for_agents(*, agent_ids: list[str], reason: str) -> int:
    """Put the running attempts of lost agents back on the queue (attempt + 1),
    or fail them when no attempt is left. The old attempt is fenced: its late
    result matches no row."""
    count = 0
    now = timezone.now()
    for task in Task.objects.filter(agent__in=agent_ids, status=Task.Status.RUNNING).only(
        "id", "attempt", "max_attempts", "agent"
    ):
        base = Task.objects.filter(id=task.id, attempt=task.attempt, status=Task.Status.RUNNING)
        lost = f"{reason} (agent {task.agent})"
        if task.attempt >= task.max_attempts:
            error = f"{lost} on attempt {task.attempt} of {task.max_attempts}"
            with transaction.atomic():
                if base.update(status=Task.Status.FAILED, finished_at=now, error=error,
                               status_reason="no attempts left"):
                    _attempt_close(task_id=task.id, number=task.attempt, outcome=TaskAttempt.Outcome.FAILED,
                                   error=error, agent_id=task.agent)
                    task_finished_publish([task.id])
                    logger.warning("task %s failed: %s, no attempts left", task.id, lost,
                                   extra={"agent": task.agent, "task": str(task.id)})
            continue
        with transaction.atomic():
            if base.update(status=Task.Status.QUEUED, attempt=F("attempt") + 1, agent="",
                           dispatched_at=None, started_at=None, not_before=None,
                           status_reason=f"requeued: {lost}"[:255]):
                _attempt_close(task_id=task.id, number=task.attempt, outcome=TaskAttempt.Outcome.REQUEUED,
                               error=lost, agent_id=task.agent)
                count += 1
                logger.warning("task %s requeued after attempt %s: %s (agent %s)", task.id, task.attempt, reason,
                               task.agent, extra={"agent": task.agent, "task": str(task.id)})
                transaction.on_commit(lambda tid=task.id: task_dispatch(task_id=tid))
        _revoke(task.id, task.attempt)
    return count


def _revoke(task_id, attempt: int, terminate: bool = False) -> None:
    try:
        app.control.revoke(message_id(task_id, attempt), terminate=terminate, signal="SIGTERM")
    except Exception as exc:  # best effort: the fence still drops the attempt
        logger.info("revoke of %s:%s not sent: %s", task_id, attempt, exc)


def task_cancel(*, task: Task) -> Task:
    if task.status not in Task.ACTIVE:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    with transaction.atomic():
        changed = Task.objects.filter(id=task.id, attempt=task.attempt, status__in=Task.ACTIVE).update(
            status=Task.Status.CANCELLED, finished_at=timezone.now(), status_reason="cancelled by caller"
        )
        if changed:  # a running attempt ends here; a queued one never started (no row)
            TaskAttempt.objects.filter(task_id=task.id, number=task.attempt, outcome="").update(
                outcome=TaskAttempt.Outcome.CANCELLED, finished_at=timezone.now())
            task_finished_publish([task.id])
    task.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot cancel: task is already {task.status}")
    _revoke(task.id, task.attempt, terminate=True)
    return task


RETRYABLE = (Task.Status.FAILED, Task.Status.CANCELLED)


def task_retry(*, task: Task) -> Task:
    """Run a failed or cancelled task again, as a new attempt (one more than it
    had: a manual retry is granted even when its attempts were spent). The
    previous attempts' errors stay in their TaskAttempt rows."""
    if task.status not in RETRYABLE:
        raise InvalidState(f"cannot retry: only a failed or cancelled task can be retried; this one is {task.status}")
    # What submission checks, a retry checks too: a capability blocklisted or
    # not allowed here since, and its rate limit (cancel-retry is no way around it).
    config = config_current()
    refusal = config.capability_refusal(task.capability)
    if refusal:
        raise CapabilityRefused(refusal)
    _rate_check(task.capability, config.task_definition(task.capability).get("rate_limit"))
    status, reason = _initial_status(capability=task.capability, target_agent=task.target_agent)
    with transaction.atomic():
        changed = Task.objects.filter(id=task.id, status__in=RETRYABLE, attempt=task.attempt).update(
            status=status, status_reason=reason or f"retried after attempt {task.attempt}",
            attempt=F("attempt") + 1, max_attempts=Greatest(F("max_attempts"), F("attempt") + 1),
            agent="", claim_id="", error="", result=None, dispatched_at=None, not_before=None,
            started_at=None, finished_at=None,
        )
        if changed:
            transaction.on_commit(lambda: task_dispatch(task_id=task.id))
    task.refresh_from_db()
    if not changed:
        raise InvalidState(f"cannot retry: only a failed or cancelled task can be retried; this one is {task.status}")
    return task


def task_sweep(*, now=None, batch: int = 500) -> dict:
    """Re-send what the broker never got, start due retries, keep 'waiting' honest,
    and re-send attempts lost in flight (never claimed) with attempt + 1."""
    now = now or timezone.now()
    due = list(
        Task.objects.filter(status__in=Task.PENDING, dispatched_at__isnull=True,
                            created_at__lt=now - timedelta(seconds=1))
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("created_at").values_list("id", flat=True)[:batch]
    )
    sent = sum(1 for task_id in due if task_dispatch(task_id=task_id))

    live = live_capabilities()
    woke = Task.objects.filter(status=Task.Status.WAITING, target_agent="", capability__in=live).update(
        status=Task.Status.QUEUED, status_reason=""
    )
    stalled = 0
    for capability in (Task.objects.filter(status=Task.Status.QUEUED, target_agent="").exclude(capability__in=live)
                       .order_by().values_list("capability", flat=True).distinct()[:batch]):
        stalled += Task.objects.filter(status=Task.Status.QUEUED, target_agent="", capability=capability).update(
            status=Task.Status.WAITING, status_reason=waiting_reason(capability))
    no_agent = _fail_waiting_past_deadline(now, batch, live=live)
    resent = _resend_lost_in_flight(now, batch)
    overdue = _fail_overdue_running(now, batch)
    orphaned = _requeue_tasks_of_stopped_agents(now)
    return {"sent": sent, "woke": woke, "stalled": stalled, "no_agent": no_agent, "resent": resent,
            "overdue": overdue, "orphaned": orphaned}


def _fail_waiting_past_deadline(now, batch: int, *, live: set[str]) -> int:
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
                status=Task.Status.FAILED, error=error, status_reason="no_agent", finished_at=now)
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


def _resend_lost_in_flight(now, batch: int) -> int:
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


OVERDUE_GRACE_SECONDS = 30


def _fail_overdue_running(now, batch: int) -> int:
    """A running attempt with no report long after its hard time limit (the
    worker killed it, or its report was lost) counts as a failed attempt."""
    count = 0
    for task in Task.objects.filter(status=Task.Status.RUNNING,
                                    started_at__lt=now - timedelta(seconds=OVERDUE_GRACE_SECONDS))[:batch]:
        if task.started_at + timedelta(seconds=hard_time_limit(task.timeout) + OVERDUE_GRACE_SECONDS) > now:
            continue
        if task_fail(task_id=task.id, attempt=task.attempt, agent_id=task.agent,
                     error=f"no result within {task.timeout}s + grace (attempt killed or its report lost)",
                     outcome=TaskAttempt.Outcome.TIMED_OUT):
            count += 1
    return count


DEREGISTER_GRACE_SECONDS = 10


def _requeue_tasks_of_stopped_agents(now) -> int:
    """Running tasks of agents that deregistered a while ago: their last reports
    had time to arrive, so what is still running was lost with the agent."""
    stopped = Agent.objects.filter(status=Agent.Status.STOPPED,
                                   offline_since__lt=now - timedelta(seconds=DEREGISTER_GRACE_SECONDS),
                                   agent_id__in=Task.objects.filter(status=Task.Status.RUNNING).values("agent"))
    agent_ids = list(stopped.values_list("agent_id", flat=True)[:500])
    if not agent_ids:
        return 0
    return tasks_requeue_for_agents(agent_ids=agent_ids, reason="agent stopped while running it")
