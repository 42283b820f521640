"""Celery tasks of the regional orchestrator: thin, ids and primitives in.

The periodic ones (reap, flush, sweep, summary, config) are acked on receipt:
a lost tick is harmless (the next one comes), and a late ack after the broker
restarted can fail inside kombu in a way that stalls the worker's pool.
Reports stay acks_late: they must not be lost."""
import contextlib
import functools
import logging

from celery import current_task, shared_task
from django.db import DatabaseError, OperationalError
from django.utils import timezone

from project.exceptions import database_error_line, database_unavailable
from regions.clock.liveness_flush import liveness_flush
from regions.clock.reaper import agent_reap, web_unreachable
from regions.clock.schedules import schedules_tick
from regions.clock.sweep import task_sweep
from regions.services import leadership, liveness, reports
from wire import deadletter
from wire.protocol import CONTROL_QUEUE, REPORT_TASK, REPORTS_QUEUE

logger = logging.getLogger(__name__)


def clock_job(fn):
    """A periodic tick, run under the clock lease token its message carries
    (leadership.fenced): once another orchestrator has taken the lease, the
    tick skips, before it starts or at its next database write. A message
    without a token was not sent by a lease holder's beat: skipped (called
    in-process, as tests do, it runs unfenced). The token is a fence, not a
    credential: whoever can publish on the region's broker can send a tick with
    the current one, as they always could send a tick. While the region's database is away (the same
    test the API's 503 uses) it skips, with one line in the log, instead of a
    traceback per tick (the next tick retries). Any other database error is a
    bug: raised. A tick takes no arguments: a message that brings some is not
    beat's (a dead letter)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if args or kwargs:
            deadletter.record(queue=CONTROL_QUEUE, reason=f"{fn.__name__} takes no arguments",
                              task_name=fn.__name__, body=repr((args, kwargs))[:2000])
            return {"skipped": "dead letter"}
        request = current_task.request if current_task else None
        if request is None or request.called_directly:
            fence = contextlib.nullcontext()
        else:
            token = request.get(leadership.FENCE_HEADER, (request.headers or {}).get(leadership.FENCE_HEADER))
            if not isinstance(token, int) or isinstance(token, bool) or not 0 < token < 2 ** 63:
                logger.warning("%s skipped: no clock lease token (not sent by a lease holder's beat)",
                               fn.__name__)
                return {"skipped": "no clock lease token"}
            fence = leadership.fenced(token)
        try:
            with fence:
                # Up front too: a tick queued before the lease moved on does no read, Redis or HTTP work.
                leadership.fence_check()
                return fn()
        except leadership.Fenced as exc:
            # Expected around a handover (ticks already queued): not a warning.
            logger.info("%s skipped: %s", fn.__name__, exc)
            return {"skipped": "fenced"}
        except DatabaseError as exc:
            if not database_unavailable(exc):
                raise
            logger.warning("%s skipped: database unavailable (%s)", fn.__name__, database_error_line(exc))
            return {"skipped": "database unavailable"}

    return run


@shared_task(name=REPORT_TASK, bind=True, acks_late=True, autoretry_for=(OperationalError,),
             retry_backoff=True, max_retries=10, queue=REPORTS_QUEUE)
def report_ingest_task(self, *args, **kwargs) -> bool:
    # Idempotent: every update is fenced on (task, attempt, status). Whatever
    # arrives on the reports queue comes here; what is not a signed report of an
    # agent of this region is a dead letter (report_ingest records it).
    return reports.report_ingest_message(args=args, kwargs=kwargs, message_id=str(self.request.id or ""))


@shared_task(name="regions.agent_reap", ignore_result=True, acks_late=False, time_limit=60)
@clock_job
def agent_reap_task() -> dict:
    # Agents beat through the region's web: while it does not answer, silence
    # says nothing about them. Evict nobody; the tick is not counted, so the
    # reaper grants a TTL of grace once the web is back.
    problem = web_unreachable()
    if problem:
        return {"skipped": problem}
    try:
        return agent_reap(now=liveness.now())
    except liveness.RedisError as exc:
        # Without Redis we cannot tell who is alive: evict nobody.
        return {"skipped": f"liveness store unavailable: {exc}"}


@shared_task(name="regions.liveness_flush", ignore_result=True, acks_late=False, time_limit=60)
@clock_job
def liveness_flush_task() -> int:
    try:
        return liveness_flush()
    except liveness.RedisError:
        return 0


@shared_task(name="regions.task_sweep", ignore_result=True, acks_late=False, time_limit=60)
@clock_job
def task_sweep_task() -> dict:
    return task_sweep(now=timezone.now())


@shared_task(name="regions.schedules_tick", ignore_result=True, acks_late=False, time_limit=60)
@clock_job
def schedules_tick_task() -> dict:
    # Safe to run twice at once (two orchestrators' beats): a due time's run is
    # one row under a unique constraint, made with its task in one transaction.
    try:
        return schedules_tick(now=timezone.now())
    except liveness.RedisError as exc:
        # A run whose submission met Redis away was rolled back with its row: the next tick makes it.
        return {"skipped": f"liveness store unavailable: {exc}"}


@shared_task(name="regions.dead_letters_prune", ignore_result=True, acks_late=False, time_limit=300)
@clock_job
def dead_letters_prune_task() -> int:
    from regions.services.deadletters import dead_letters_prune

    return dead_letters_prune(now=timezone.now())


@shared_task(name="regions.audit_prune", ignore_result=True, acks_late=False, time_limit=300)
@clock_job
def audit_prune_task() -> int:
    from project.accounts.audit import audit_prune

    return audit_prune(now=timezone.now())


@shared_task(name="regions.summary_push", ignore_result=True, acks_late=False, time_limit=30)
@clock_job
def summary_push_task() -> dict:
    from regions.services.summary import summary_push

    return summary_push()


@shared_task(name="regions.config_sync", ignore_result=True, acks_late=False, time_limit=300)
@clock_job
def config_sync_task() -> dict:
    from django.conf import settings

    from regions.services.config.sync import config_sync

    result = config_sync(repo=settings.CONFIG_REPO, ref=settings.CONFIG_REF)
    return {"sha": result.sha, "applied": result.applied, "error": result.error}


@shared_task(name="regions.callback_deliver", ignore_result=True, acks_late=False, time_limit=120)
def callback_deliver_task(task_id: str) -> bool:
    # Acked on receipt: a lost message is the sweeper's to send (the outbox row
    # stays pending). Never twice at once: the delivery is claimed with a lease.
    from regions.services.callbacks.deliver import callback_deliver

    try:
        return callback_deliver(task_id=task_id)
    except DatabaseError as exc:
        if not database_unavailable(exc):
            raise
        return False


@shared_task(name="regions.callback_sweep", ignore_result=True, acks_late=False, time_limit=300)
@clock_job
def callback_sweep_task() -> int:
    from regions.clock.callbacks_due import deliver_due_callbacks

    return deliver_due_callbacks(now=timezone.now())
