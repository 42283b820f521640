"""The one Celery task every agent runs: execute a capability handler for one attempt."""
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from agents import runtime
from agents.handlers import Context, HandlerError, handler_get


@shared_task(name="agents.execute", bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_task(self, *, task_id: str, attempt: int, capability: str, payload: dict, timeout: int,
                 secrets: dict | None = None) -> None:
    # acks_late is safe: the region fences every report on (task, attempt), so a
    # re-delivered message can at worst redo the work, never record it twice.
    ident = runtime.IDENTITY
    started_at = time.time()
    runtime.report("claim", task_id=task_id, attempt=attempt, body={})
    ctx = Context(task_id=task_id, attempt=attempt, agent_id=ident.agent_id, secrets=secrets or {})
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
    body["started_at"] = started_at
    runtime.report("success" if "result" in body else "failure", task_id=task_id, attempt=attempt, body=body)


@shared_task(name="agents.noop", ignore_result=True)
def noop_task(counter_url: str, key: str) -> None:
    """Raw Celery baseline for bench/tasks.py: does nothing but count itself."""
    import redis

    redis.Redis.from_url(counter_url).incr(key)
