"""Submission, single and batch: what refuses a task before anything is stored
(size, configuration, payload schema, require_agent, the caller's quotas, rate
limit), idempotency keys, and the INSERT that claims the first send (the
message goes out after the commit; a send the broker refuses is left to the
sweeper; a task beyond its caller's fair share is held, fair.py)."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from project.exceptions import Refused
from regions.models import CallbackDelivery, CallbackSecret, Task
from regions.services import liveness
from regions.services.callbacks.guard import url_refusal
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current
from regions.services.handlers import payload_check
from regions.services.tasks.dispatch import send_many, send_or_release
from regions.services.tasks.fair import hold_beyond_window
from regions.services.tasks.quotas import quota_admit
from regions.services.tasks.refusals import (CallbackRefused, CallbackSecretMissing, CapabilityRefused,
                                             IdempotencyConflict, NoAgent, PayloadTooLargeError, RateLimited)
from regions.services.tasks.waiting import initial_status

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes

_WINDOWS = {"s": 1, "m": 60, "h": 3600}


def rate_check(capability: str, definition: dict, caller) -> None:
    """The capability's fixed-window submission limit (tasks.<capability>.
    rate_limit), counted in Redis for the whole region or, with rate_limit_per:
    caller, for each caller on its own."""
    limit = definition.get("rate_limit")
    if not limit:
        return
    count, unit = limit.split("/")
    window = _WINDOWS[unit]
    slot = int(time.time() // window)
    per_caller = definition.get("rate_limit_per") == "caller"
    scope = f"{getattr(caller, 'pk', None)}:" if per_caller else ""  # no caller: the region's schedules
    key = liveness.key(f"rate:{capability}:{scope}{slot}")
    try:
        pipe = liveness.client().pipeline()
        pipe.incr(key)
        pipe.expire(key, window + 1)
        used = pipe.execute()[0]
    except liveness.RedisError:
        return  # no counter, no limit: accepting beats refusing while Redis is away
    if used > int(count):
        raise RateLimited(f"rate limit {limit} for {capability} reached"
                          f"{' for your tasks' if per_caller else ''}; retry later",
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
    require_agent: bool = False, callback_url: str = "",
) -> Submission:
    """Persist first, dispatch after commit: a failed send is retried by the sweeper.
    require_agent: refuse (NoAgent) instead of storing a task that would wait."""
    # The submit path looks at the published configuration id at most every
    # HOT_PATH_CHECK_SECONDS (one Redis GET per 100 ms per process, not per task).
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    digest = request_digest(capability=capability, payload=payload, priority=priority, timeout=timeout,
                            max_attempts=max_attempts, target_agent=target_agent,
                            callback_url=callback_url) if idempotency_key else ""
    if idempotency_key:
        # A replay answers the task the first request made, before any check that
        # may have changed since (a tightened schema, a new blocklist): a client
        # retrying after a lost answer must learn of its task, not be refused.
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replayed(existing, idempotency_key=idempotency_key, digest=digest)
    definition = _admitted(config, capability=capability, payload=payload)
    callback_check(callback_url, submitted_by=submitted_by)
    # Before the rate limit: a refused submission spends none of it.
    initial = initial_status(capability=capability, target_agent=target_agent)
    _agent_required(require_agent, capability=capability, target_agent=target_agent, initial=initial)
    admitted, refusal = quota_admit(config, caller=submitted_by, count=1)
    if not admitted:
        raise refusal
    rate_check(capability, definition, submitted_by)
    task = _new_task(definition, submitted_by=submitted_by, capability=capability, payload=payload,
                     priority=priority, timeout=timeout, max_attempts=max_attempts, target_agent=target_agent,
                     idempotency_key=idempotency_key, digest=digest, initial=initial, callback_url=callback_url)
    hold_beyond_window([task])
    try:
        with transaction.atomic():
            # The send is claimed by the INSERT itself (dispatched_at), and the
            # message goes out right after the commit from what is in hand: no
            # read back, no second UPDATE. If the broker refuses, dispatched_at
            # is cleared again and the sweeper sends it (the outbox). A task
            # beyond its caller's fair share is held instead (fair.py).
            task.save(force_insert=True)
            if callback_url:  # the callback's outbox row, due once the task is final
                CallbackDelivery.objects.create(task=task)
            if not task.held:
                transaction.on_commit(lambda: send_or_release(task, dispatched_at=task.dispatched_at))
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


def callback_check(callback_url: str, *, submitted_by) -> None:
    """A callback_url must be one the configuration allows (checked again at
    delivery, with what DNS says then), and the caller must have a secret to
    sign it with."""
    if not callback_url:
        return
    refusal = url_refusal(callback_url)
    if refusal:
        raise CallbackRefused(refusal)
    if not CallbackSecret.objects.filter(user=submitted_by).exists():
        raise CallbackSecretMissing("a callback_url needs your signing secret first: create it with "
                                    "POST /api/v1/callbacks/secret (shown once)")


def _new_task(definition: dict, *, submitted_by, capability: str, payload, priority: int, timeout: int | None,
              max_attempts: int | None, target_agent: str, idempotency_key: str | None, digest: str,
              initial: tuple[str, str], callback_url: str = "") -> Task:
    status, reason = initial
    return Task(
        capability=capability, payload=payload, priority=priority,
        timeout=timeout or definition.get("timeout") or settings.TASK_DEFAULT_TIMEOUT,
        max_attempts=max_attempts or definition.get("max_attempts") or settings.TASK_DEFAULT_MAX_ATTEMPTS,
        status=status, status_reason=reason, idempotency_key=idempotency_key or None,
        request_digest=digest, target_agent=target_agent, submitted_by=submitted_by,
        dispatched_at=timezone.now(), callback_url=callback_url,
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
    the single submission's checks and answers, stored in one INSERT and one
    commit and sent after it on one broker connection. Idempotency keys as the
    single path has them: a key used before (one lookup for the whole batch),
    or earlier in the same batch, answers its first task (409 for another
    request); a key a concurrent request takes first is answered with its task
    (the INSERT skips the conflict). All stored items are durable before any
    is sent."""
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    results: list[Submission | ItemRefused | None] = [None] * len(items)
    keys = [item["idempotency_key"] for item in items if item.get("idempotency_key")]
    known = {task.idempotency_key: task for task in
             Task.objects.filter(submitted_by=submitted_by, idempotency_key__in=keys)} if keys else {}
    candidates: list[tuple[int, dict, dict, str]] = []
    initial: dict[tuple[str, str], tuple[str, str]] = {}
    for index, item in enumerate(items):
        capability, target, key = item["capability"], item.get("target_agent", ""), item.get("idempotency_key")
        try:
            digest = request_digest(capability=capability, payload=item.get("payload", {}),
                                    priority=item.get("priority", 5), timeout=item.get("timeout"),
                                    max_attempts=item.get("max_attempts"), target_agent=target,
                                    callback_url=item.get("callback_url", "")) if key else ""
            if key in known:  # a replay is answered before any check, as the single path does
                results[index] = _replayed(known[key], idempotency_key=key, digest=digest)
                continue
            definition = _admitted(config, capability=capability, payload=item.get("payload", {}))
            callback_check(item.get("callback_url", ""), submitted_by=submitted_by)
            if (capability, target) not in initial:  # one counter read per capability and target
                initial[(capability, target)] = initial_status(capability=capability, target_agent=target)
            _agent_required(item.get("require_agent", False), capability=capability, target_agent=target,
                            initial=initial[(capability, target)])
        except Refused as exc:
            results[index] = item_refused(exc)
            continue
        candidates.append((index, item, definition, digest))
    # The caller's quotas admit the first items; the rest are refused as the
    # single submission would be (and spend no capability rate limit).
    admitted, refusal = quota_admit(config, caller=submitted_by, count=len(candidates)) if candidates else (0, None)
    fresh: list[tuple[int, Task]] = []
    first_of_key: dict[str, Task] = {}
    for position, (index, item, definition, digest) in enumerate(candidates):
        capability, target, key = item["capability"], item.get("target_agent", ""), item.get("idempotency_key")
        try:
            if key in first_of_key:  # the same key earlier in this batch
                results[index] = _replayed(first_of_key[key], idempotency_key=key, digest=digest)
                continue
            if position >= admitted:
                raise refusal
            rate_check(capability, definition, submitted_by)
        except Refused as exc:
            results[index] = item_refused(exc)
            continue
        task = _new_task(
            definition, submitted_by=submitted_by, capability=capability, payload=item.get("payload", {}),
            priority=item.get("priority", 5), timeout=item.get("timeout"), max_attempts=item.get("max_attempts"),
            target_agent=target, idempotency_key=key, digest=digest, initial=initial[(capability, target)],
            callback_url=item.get("callback_url", ""))
        if key:
            first_of_key[key] = task
        fresh.append((index, task))
    if fresh:
        _store_batch(fresh, results, submitted_by=submitted_by)
    return results


def _store_batch(fresh: list[tuple[int, Task]], results: list, *, submitted_by) -> None:
    tasks = [task for _, task in fresh]
    hold_beyond_window(tasks)
    with transaction.atomic():
        # A key a concurrent request stored first is skipped here (ON CONFLICT
        # DO NOTHING) and answered with that request's task below.
        Task.objects.bulk_create(tasks, batch_size=1000, ignore_conflicts=True)
        keyed = [task for task in tasks if task.idempotency_key]
        stored = set(Task.objects.filter(id__in=[t.id for t in keyed]).values_list("id", flat=True)) \
            if keyed else set()
        lost = {t.idempotency_key: t for t in keyed if t.id not in stored}
        winners = {t.idempotency_key: t for t in Task.objects.filter(
            submitted_by=submitted_by, idempotency_key__in=list(lost))} if lost else {}
        kept = [t for t in tasks if not t.idempotency_key or t.id in stored]
        CallbackDelivery.objects.bulk_create([CallbackDelivery(task=t) for t in kept if t.callback_url])
        sent = [t for t in kept if not t.held]
        transaction.on_commit(lambda: send_many(sent))
    for index, task in fresh:
        if task.idempotency_key in lost:
            try:
                results[index] = _replayed(winners[task.idempotency_key], idempotency_key=task.idempotency_key,
                                           digest=task.request_digest)
            except Refused as exc:
                results[index] = item_refused(exc)
        else:
            results[index] = Submission(task=task, created=True)
    logger.info("%d tasks submitted in a batch", len(tasks) - len(lost))


def request_digest(*, capability: str, payload: dict, priority: int, timeout: int | None,
                   max_attempts: int | None, target_agent: str, callback_url: str = "") -> str:
    """What a submission asked for, canonically (key order does not matter; a
    callback_url only when given, so the digests stored before it stay valid)."""
    asked = {"capability": capability, "payload": payload, "priority": priority, "timeout": timeout,
             "max_attempts": max_attempts, "target_agent": target_agent}
    if callback_url:
        asked["callback_url"] = callback_url
    canonical = json.dumps(asked,
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
