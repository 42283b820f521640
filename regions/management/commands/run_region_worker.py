"""The region's own Celery worker: task reports from agents, and (with --beat) the
reaper, the liveness flush and the outbox sweeper."""
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from project.celery import app
from wire.protocol import CONTROL_QUEUE, REPORTS_QUEUE


class Command(BaseCommand):
    help = "Run the regional orchestrator's worker (reports, reaper, flush, sweeper)."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--beat", action="store_true", help="embed Celery beat (one per region)")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, concurrency, beat, loglevel, **options):
        from wire import deadletter
        from regions.services.deadletters import dead_letter_store

        # What this worker's consumers drop is kept in the region's database
        # (the DeadLetter admin page); pool processes inherit the sink.
        deadletter.set_sink(dead_letter_store)
        # Nobody remote-controls the orchestrator: with remote control on, anyone
        # who can publish on the region's broker (every agent) could cancel its
        # consumers or shut it down with one broadcast, and no supervisor would see.
        app.conf.worker_enable_remote_control = False
        schedule = Path(settings.VAR_DIR) / f"celerybeat-{settings.REGION_ID}"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        worker = app.Worker(
            hostname="orchestrator@%h", queues=[CONTROL_QUEUE, REPORTS_QUEUE], concurrency=concurrency,
            beat=beat, loglevel=loglevel, without_mingle=True, without_gossip=True, without_heartbeat=True,
            schedule_filename=str(schedule),
        )
        worker.start()
        sys.exit(worker.exitcode or 0)
