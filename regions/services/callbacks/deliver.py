"""Delivering completion callbacks: the outbox row (CallbackDelivery), stored
with the task at submission, is due once the task is final. It is sent right
after the finish commits (regions.callback_deliver, kicked by
task_finished_publish) and by the sweeper (regions.callback_sweep) for what is
due and not sent: the kick is an optimisation, the sweeper the guarantee.

One delivery never runs twice at once: a sender claims due rows with SELECT …
FOR UPDATE SKIP LOCKED (of the delivery rows only: a task's row is never
locked here, so delivery never waits on task processing nor holds it up) and
a lease (lease_until, lease_token), renewed as each row's attempt starts; another
sender skips a leased row until the lease runs out, which outlasts any attempt
(its timeouts are bounded). An
attempt's record is fenced on the lease token: a sender whose lease was taken
over records its attempt, and changes nothing else."""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterable

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from regions.models import CallbackAttempt, CallbackDelivery, Task
from regions.services import liveness
from regions.services.callbacks import guard
from regions.services.callbacks.secret import callback_secrets_of
from regions.services.leadership import unfenced
from regions.services.callbacks.signature import (ATTEMPT_HEADER, DELIVERY_HEADER, EVENT, EVENT_HEADER,
                                                  SIGNATURE_HEADER, callback_signature)

logger = logging.getLogger("regions.services.callbacks")

FINAL = (Task.Status.SUCCEEDED, Task.Status.FAILED, Task.Status.CANCELLED)
DELIVER_TASK = "regions.callback_deliver"


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: the base,
    doubled each time, capped."""
    return min(settings.CALLBACK_BACKOFF_BASE * (2 ** (attempts - 1)), settings.CALLBACK_BACKOFF_MAX)


def _due(now) -> Q:
    return (Q(state=CallbackDelivery.State.PENDING, task__status__in=FINAL)
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            & (Q(lease_until__isnull=True) | Q(lease_until__lt=now)))


def _claim(now, *, batch: int, task_id=None) -> tuple[list[int], str]:
    """Due rows, each caller's oldest first, round robin between callers (one
    caller's many callbacks to a slow receiver wait behind each other, not in
    front of everyone else's), leased to this sender."""
    token = uuid.uuid4().hex
    rows = CallbackDelivery.objects.filter(_due(now))
    if task_id is not None:
        rows = rows.filter(task_id=task_id)
    turns = Window(RowNumber(), partition_by=[F("task__submitted_by")], order_by=[F("next_attempt_at").asc(
        nulls_first=True), F("id").asc()])
    order = list(rows.annotate(turn=turns).order_by("turn", "next_attempt_at", "id")
                 .values_list("id", flat=True)[:batch])
    with transaction.atomic():
        # skip_locked: a row another sender is claiming is its; of=self: the
        # joined task row is only read, never locked.
        locked = set(CallbackDelivery.objects.filter(_due(now), id__in=order)
                     .select_for_update(skip_locked=True, of=("self",)).values_list("id", flat=True))
        ids = [delivery_id for delivery_id in order if delivery_id in locked]
        if ids:
            lease = now + timedelta(seconds=settings.CALLBACK_LEASE_SECONDS)
            CallbackDelivery.objects.filter(id__in=ids).update(lease_until=lease, lease_token=token)
    return ids, token


@contextmanager
def _sender_slot():
    """At most one sender in the region at a time (a lock in its Redis): the
    orchestrator's other worker slot stays free for the clock jobs, however
    slowly receivers answer. Redis away: no lock (the leases still keep one
    callback from being sent twice at once)."""
    client, key, mine = liveness.client(), liveness.key("callbacks:sender"), uuid.uuid4().hex
    hold_ms = int((settings.CALLBACK_SEND_BUDGET_SECONDS + 2 * settings.CALLBACK_TIMEOUT_SECONDS) * 1000)
    try:
        got = bool(client.set(key, mine, nx=True, px=hold_ms))
    except liveness.RedisError:
        got = True
    try:
        yield got
    finally:
        if got:
            try:
                if client.get(key) in (mine, mine.encode()):  # a client that decodes or not
                    client.delete(key)
            except liveness.RedisError:
                pass  # it expires


def callbacks_deliver_due(*, now, batch: int) -> int:
    """The sweeper's job: claim what is due (a batch) and deliver it, for at
    most CALLBACK_SEND_BUDGET_SECONDS (what is left is released to the next
    tick); the number delivered. Nothing while another sender runs."""
    with _sender_slot() as mine:
        if not mine:
            return 0
        ids, token = _claim(now, batch=batch)
        delivered, deadline = 0, time.monotonic() + settings.CALLBACK_SEND_BUDGET_SECONDS
        for index, delivery_id in enumerate(ids):
            if index and time.monotonic() > deadline:  # at least one a tick
                CallbackDelivery.objects.filter(id__in=ids[index:], lease_token=token).update(
                    lease_until=None, lease_token="")
                break
            delivered += _deliver(delivery_id, token=token, now=now)
        return delivered


def callback_deliver(*, task_id) -> bool:
    """The kick after a task's finish commits: deliver its callback if it is
    due, nobody else holds it and no other sender runs (else the sweeper, within
    CALLBACK_SWEEP_INTERVAL, does)."""
    with _sender_slot() as mine:
        if not mine:
            return False
        ids, token = _claim(timezone.now(), batch=1, task_id=task_id)
        return bool(ids) and _deliver(ids[0], token=token, now=timezone.now())


def callbacks_kick(task_ids: Iterable) -> None:
    """After a commit that made tasks final: send their callbacks now (best
    effort: a send the broker refuses is left to the sweeper)."""
    from project.celery import app

    ids = [str(t) for t in task_ids]
    pending = CallbackDelivery.objects.filter(task_id__in=ids, state=CallbackDelivery.State.PENDING)
    for task_id in pending.values_list("task_id", flat=True):
        try:
            app.send_task(DELIVER_TASK, kwargs={"task_id": str(task_id)}, retry=False)
        except Exception as exc:  # broker down: kombu raises several types
            logger.info("callback of task %s left to the sweeper: %s", task_id, exc)


def _deliver(delivery_id: int, *, token: str, now) -> bool:
    # A batch is delivered one row after another, so the lease taken at the
    # claim may be nearly over when this row's turn comes: the attempt starts
    # on a lease of its own (renewed while the row is still this sender's),
    # never on the rest of the batch's, or another sender could take the row
    # over mid-POST and the receiver would get it twice at once.
    renewed = CallbackDelivery.objects.filter(id=delivery_id, lease_token=token).update(
        lease_until=timezone.now() + timedelta(seconds=settings.CALLBACK_LEASE_SECONDS))
    delivery = renewed and CallbackDelivery.objects.select_related("task").filter(
        id=delivery_id, lease_token=token).first()
    if not delivery:
        return False
    task = delivery.task
    finished = task.finished_at or now
    if now > finished + timedelta(hours=settings.CALLBACK_RETRY_HOURS):
        _record(delivery, token=token, now=now, outcome=None, code=None,
                error=f"no 2xx within CALLBACK_RETRY_HOURS ({settings.CALLBACK_RETRY_HOURS}) of the finish")
        return False
    started = time.monotonic()
    outcome, code, error = _post(task, delivery)
    _record(delivery, token=token, now=now, outcome=outcome, code=code, error=error,
            duration_ms=int((time.monotonic() - started) * 1000))
    return outcome == CallbackAttempt.Outcome.DELIVERED


def representation(task: Task) -> bytes:
    """The body: the task as GET /api/v1/tasks/<id> shows it."""
    from regions.api.serializers import TaskOutputSerializer

    return JSONRenderer().render(TaskOutputSerializer(task).data)


def _post(task: Task, delivery: CallbackDelivery) -> tuple[str, int | None, str]:
    secrets = callback_secrets_of(task.submitted_by_id)
    if not secrets:
        return CallbackAttempt.Outcome.REFUSED, None, "the caller has no signing secret (POST /api/v1/callbacks/secret)"
    try:
        targets = guard.pinned_targets(task.callback_url)
    except guard.DeliveryRefused as exc:
        logger.warning("callback of task %s refused: %s", task.id, exc, extra={"task": str(task.id)})
        return CallbackAttempt.Outcome.REFUSED, None, str(exc)[:500]
    except OSError as exc:
        return CallbackAttempt.Outcome.FAILED, None, f"cannot resolve: {exc}"[:500]
    body = representation(task)
    headers = {"Content-Type": "application/json", "User-Agent": "Meridian-Callbacks/1",
               SIGNATURE_HEADER: callback_signature(body=body, secret=secrets[0], previous=secrets[1],
                                                    timestamp=int(time.time())),
               DELIVERY_HEADER: f"{task.id}.{task.attempt}", ATTEMPT_HEADER: str(delivery.attempts + 1),
               EVENT_HEADER: EVENT}
    error = ""
    for target in targets:
        try:
            code = _send(target, body=body, headers=headers)
        except httpx.ConnectError as exc:  # the next checked address, if any
            error = f"cannot connect to {target.address}:{target.port}: {exc}"
            continue
        except httpx.HTTPError as exc:
            return CallbackAttempt.Outcome.FAILED, None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= code < 300:
            return CallbackAttempt.Outcome.DELIVERED, code, ""
        if 300 <= code < 400:
            return CallbackAttempt.Outcome.FAILED, code, f"{code}: redirect not followed"
        return CallbackAttempt.Outcome.FAILED, code, f"answered {code}"
    return CallbackAttempt.Outcome.FAILED, None, error[:500]


def _send(target: guard.Target, *, body: bytes, headers: dict) -> int:
    """POST to the checked address itself (no second resolution), naming the
    host in Host and, for https, in the TLS server name (the certificate is
    checked against it). No proxy from the environment, no redirect followed,
    bounded time and answer size."""
    literal = f"[{target.address}]" if ":" in target.address else target.address
    url = f"{target.scheme}://{literal}:{target.port}{target.path}"
    timeout = httpx.Timeout(settings.CALLBACK_TIMEOUT_SECONDS, connect=min(3.0, settings.CALLBACK_TIMEOUT_SECONDS))
    deadline = time.monotonic() + settings.CALLBACK_TIMEOUT_SECONDS
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        with client.stream("POST", url, content=body, headers={**headers, "Host": target.host_header},
                           extensions=extensions) as response:
            read = 0
            # At most 64 KiB of the answer is read (none kept), within the
            # attempt's time: a receiver that drips its answer is not waited for.
            for chunk in response.iter_bytes():
                read += len(chunk)
                if read > 65536 or time.monotonic() > deadline:
                    break
            return response.status_code


def _record(delivery: CallbackDelivery, *, token: str, now, outcome: str | None, code: int | None, error: str,
            duration_ms: int = 0) -> None:
    """The attempt's row, and the delivery's next step if the lease is still
    this sender's. outcome None: the window is over, no attempt was made.
    Recorded even when the clock lease moved on meanwhile (the POST is made)."""
    with unfenced(), transaction.atomic():
        row = CallbackDelivery.objects.select_for_update().select_related("task").get(id=delivery.id)
        fields = ["attempts"]
        if outcome is not None:
            row.attempts += 1
            CallbackAttempt.objects.create(task_id=row.task_id, number=row.attempts, at=timezone.now(),
                                           outcome=outcome, response_code=code, error=error[:500],
                                           duration_ms=duration_ms)
        if row.lease_token != token:
            row.save(update_fields=fields)  # taken over (or the task was retried): the attempt is all we keep
            return
        fields += ["state", "next_attempt_at", "lease_until", "lease_token", "delivered_at"]
        row.lease_until, row.lease_token = None, ""
        if outcome == CallbackAttempt.Outcome.DELIVERED:
            row.state, row.delivered_at, row.next_attempt_at = CallbackDelivery.State.DELIVERED, timezone.now(), None
        else:
            finished = row.task.finished_at or now
            row.next_attempt_at = timezone.now() + timedelta(seconds=backoff(max(row.attempts, 1)))
            if outcome is None or row.next_attempt_at > finished + timedelta(hours=settings.CALLBACK_RETRY_HOURS):
                row.state = CallbackDelivery.State.GAVE_UP
                logger.warning("callback of task %s given up after %d attempts: %s", row.task_id, row.attempts,
                               error, extra={"task": str(row.task_id)})
        row.save(update_fields=fields)
