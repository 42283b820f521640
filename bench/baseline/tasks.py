import time

from celery import shared_task


@shared_task(name="baseline.echo")
def echo(payload, submitted_at: float) -> dict:
    """The no-op: hands its payload back, with when it started (submit -> start)."""
    return {"payload": payload, "submitted_at": submitted_at, "started_at": time.time()}
