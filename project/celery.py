"""The Celery app, shared by the region's orchestrator worker and its agents."""
import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from wire.consumer import install_bounded_json  # noqa: E402
from wire.protocol import CONTROL_QUEUE, REPORTS_QUEUE  # noqa: E402

# Before any message is decoded: too big, too deep or non-finite is a dead letter.
install_bounded_json()

app = Celery("meridian")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _beat_schedule() -> dict:
    from django.conf import settings

    def every(task: str, seconds: float) -> dict:
        # A tick nobody ran in time is dropped, not run late in a pile.
        return {"task": task, "schedule": seconds, "options": {"expires": max(seconds, 1.0)}}

    if settings.ROLE != "region":
        return {}
    schedule = {
        "reap": every("regions.agent_reap", settings.REAPER_INTERVAL),
        "flush": every("regions.liveness_flush", settings.LIVENESS_FLUSH_INTERVAL),
        "sweep": every("regions.task_sweep", settings.SWEEPER_INTERVAL),
        "schedules": every("regions.schedules_tick", settings.SCHEDULE_TICK_SECONDS),
        "dead-letters": every("regions.dead_letters_prune", 600.0),
        # Hourly: beat's schedule lives in memory, and an orchestrator restarted daily would never prune.
        "audit": every("regions.audit_prune", 3600.0),
        "callbacks": every("regions.callback_sweep", settings.CALLBACK_SWEEP_INTERVAL),
    }
    if settings.ROUTER_URL:
        # Ticks often; the task pushes once per the configured (live) interval.
        schedule["summary"] = every("regions.summary_push", min(settings.SUMMARY_INTERVAL, 5.0))
    if settings.CONFIG_REPO:
        schedule["config"] = every("regions.config_sync", settings.CONFIG_SYNC_INTERVAL)
    return schedule


@app.on_after_configure.connect
def _configure(sender, **kwargs) -> None:
    sender.conf.task_queues = (Queue(CONTROL_QUEUE), Queue(REPORTS_QUEUE))
    sender.conf.beat_schedule = _beat_schedule()
