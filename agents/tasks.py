"""The one Celery task every agent runs: claim one attempt, run its handler, report."""
import json
import logging
import time
import uuid

from celery import shared_task, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.conf import settings

from agents import runtime, state
from agents.handlers import Context, HandlerError, handler_get
from project.jsonsafe import json_problem
from wire import deadletter
from wire.protocol import EXECUTE_TASK, MessageInvalid, attempt_parse

logger = logging.getLogger("meridian.handler")

# What a skipped delivery returns (Celery records it as a success: see below).
SKIPPED = "skipped: the region did not grant this attempt here (see the agent's log)"


class AttemptFailed(Exception):
    """Raised once a failed attempt has been reported to the region, so that
    Celery (its task-failed event, Flower, `celery events`) sees the failure the
    region recorded. Declared in `throws`: Celery logs it as an expected error,
    one INFO line without a traceback, and acks the message like any end of an
    acks_late task (task_acks_on_failure_or_timeout, pinned on the task). It
    is neither WorkerLostError nor TimeLimitExceeded, so runtime's
    _report_lost_attempt does not report the attempt a second time."""


@shared_task(name=EXECUTE_TASK, bind=True, acks_late=True, reject_on_worker_lost=False,
             acks_on_failure_or_timeout=True, throws=(AttemptFailed,))
def execute_task(self, *args, task_id=None, attempt=None, **_unused) -> str | None:
    # Any message on our queues arrives here: one that does not name an attempt
    # is a dead letter, acked, and the worker goes on. (A message from an older
    # region also carries capability, payload and timeout: the claim answer is
    # what counts.)
    try:
        if args:
            raise MessageInvalid("positional arguments")
        task_id, attempt = attempt_parse(task_id, attempt)
    except MessageInvalid as exc:
        deadletter.record(queue=_queue(self.request), reason=f"not an attempt: {exc}", task_name=EXECUTE_TASK,
                          task_id=str(self.request.id or ""), body=repr(_unused)[:2000])
        return
    # acks_late: a message is acked only once its attempt has been claimed and
    # run (or skipped), so a consumer that dies before claiming gives it back.
    # A redelivered message never runs twice: the claim says whether the attempt
    # is still current and free.
    ident = runtime.identity()
    try:
        # One id per delivery: if the grant is lost on the way, asking again gets
        # it again; a second delivery of the same message gets a refusal.
        grant = runtime.claim(task_id=task_id, attempt=attempt, claim_id=uuid.uuid4().hex)
    except runtime.RegionUnanswered as exc:
        logger.warning("%s; giving task %s attempt %s back to the broker", exc, task_id, attempt)
        raise Reject(str(exc), requeue=True) from exc
    if grant is None:
        # Not this delivery's to run (superseded, running elsewhere, finished,
        # cancelled): a success for Celery, not a failure. Not Ignore either:
        # Celery sends no event for an ignored task, and Flower would show it
        # started forever.
        return SKIPPED
    # What to run comes from the region's answer, not from the message: a forged
    # or stale message cannot change the work, nor where a secret is sent.
    capability, payload, timeout = grant["capability"], grant["payload"], grant["timeout"]
    started_at = time.time()
    logger.info("handler start task=%s attempt=%s agent=%s capability=%s", task_id, attempt, ident.agent_id,
                capability, extra={"agent": ident.agent_id, "task": str(task_id)})
    ctx = Context(task_id=task_id, attempt=attempt, agent_id=ident.agent_id, secrets=grant.get("secrets") or {})
    try:
        result = handler_get(capability).fn(payload, ctx)
    except SoftTimeLimitExceeded:
        body = {"error": f"timed out after {timeout}s", "retryable": True}
    except HandlerError as exc:
        body = {"error": str(exc), "retryable": False}
    except Exception as exc:
        body = {"error": f"{type(exc).__name__}: {exc}", "retryable": True}
    else:
        problem = _result_problem(result)
        body = {"error": f"result refused: {problem}", "retryable": False} if problem else {"result": result}
    kind = "success" if "result" in body else "failure"
    seconds = time.time() - started_at
    body["started_at"] = started_at
    # On the agent's disk first: from here the outcome reaches the region even if
    # the agent dies now. (Dying between the handler's return and this write, a
    # fraction of a millisecond, runs the handler again: handlers are idempotent.)
    kept = state.outbox_put(ident.agent_id, kind=kind, task_id=task_id, attempt=attempt, body=body)
    logger.info("handler finish task=%s attempt=%s agent=%s outcome=%s seconds=%.3f", task_id, attempt,
                ident.agent_id, kind, seconds, extra={"agent": ident.agent_id, "task": str(task_id)})
    runtime.report_outcome(kind, task_id=task_id, attempt=attempt, body=body, kept=kept)
    if kind == "failure":
        # Only after the region has it (or the outbox does): the exception is
        # for Celery's monitoring, the region's record is what counts.
        raise AttemptFailed(body["error"][:500])
    return None


@signals.worker_ready.connect
def _task_events_on(sender=None, **_kwargs) -> None:
    """AGENT_TASK_EVENTS: an agent's worker starts with worker events only (run_agent)
    and adds the task group here, as `celery control enable_events` would. Before
    the first message is taken: the event loop has not run yet."""
    dispatcher = getattr(sender, "event_dispatcher", None)
    if runtime.IDENTITY is None or dispatcher is None or not settings.AGENT_TASK_EVENTS:
        return
    dispatcher.groups.add("task")
    logger.info("agent %s sends Celery task events (AGENT_TASK_EVENTS)", runtime.IDENTITY.agent_id)


def _result_problem(result) -> str | None:
    """What the region could not store or the broker could not carry: the
    attempt then fails with this reason instead of poisoning a consumer."""
    if result is not None and not isinstance(result, dict):
        return f"a handler must return a JSON object, not {type(result).__name__}"
    problem = json_problem(result, root="result")
    if problem:
        return problem
    size = len(json.dumps(result, separators=(",", ":")).encode())
    if size > settings.AGENT_MAX_RESULT_BYTES:
        return f"result of {size} bytes is over the limit of {settings.AGENT_MAX_RESULT_BYTES} bytes"
    return None


def _queue(request) -> str:
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "?")


@shared_task(name="agents.noop", ignore_result=True)
def noop_task(counter_url: str, key: str) -> None:
    """Raw Celery baseline for bench/tasks.py: does nothing but count itself."""
    import redis

    redis.Redis.from_url(counter_url).incr(key)
