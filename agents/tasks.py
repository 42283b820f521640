"""The one Celery task every agent runs: claim one attempt, run its handler, report."""
import json
import logging
import time
import uuid

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.conf import settings

from agents import runtime
from agents.handlers import Context, HandlerError, handler_get
from project.protocol import EXECUTE_TASK

logger = logging.getLogger("meridian.handler")


@shared_task(name=EXECUTE_TASK, bind=True, acks_late=True, reject_on_worker_lost=False)
def execute_task(self, *, task_id: str, attempt: int, capability: str, payload: dict, timeout: int,
                 **_unused) -> None:
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
        return
    # What to run comes from the region's answer, not from the message: a forged
    # or stale message cannot change the work, nor where a secret is sent.
    capability, payload, timeout = grant["capability"], grant["payload"], grant["timeout"]
    started_at = time.time()
    logger.info("handler start task=%s attempt=%s agent=%s capability=%s", task_id, attempt, ident.agent_id,
                capability)
    ctx = Context(task_id=task_id, attempt=attempt, agent_id=ident.agent_id, secrets=grant.get("secrets") or {})
    try:
        result = handler_get(capability)(payload, ctx)
    except SoftTimeLimitExceeded:
        body = {"error": f"timed out after {timeout}s", "retryable": True}
    except HandlerError as exc:
        body = {"error": str(exc), "retryable": False}
    except Exception as exc:
        body = {"error": f"{type(exc).__name__}: {exc}", "retryable": True}
    else:
        body = {"result": result}
        size = _json_size(result)
        if size > settings.AGENT_MAX_RESULT_BYTES:
            body = {"error": f"result of {size} bytes is over the limit of {settings.AGENT_MAX_RESULT_BYTES} bytes",
                    "retryable": False}
    kind = "success" if "result" in body else "failure"
    logger.info("handler finish task=%s attempt=%s agent=%s outcome=%s seconds=%.3f", task_id, attempt,
                ident.agent_id, kind, time.time() - started_at)
    body["started_at"] = started_at
    runtime.report_outcome(kind, task_id=task_id, attempt=attempt, body=body)


def _json_size(value) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return 0  # not JSON: the report itself will say so


@shared_task(name="agents.noop", ignore_result=True)
def noop_task(counter_url: str, key: str) -> None:
    """Raw Celery baseline for bench/tasks.py: does nothing but count itself."""
    import redis

    redis.Redis.from_url(counter_url).incr(key)
