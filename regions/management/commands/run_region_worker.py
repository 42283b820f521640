"""The region's own Celery worker: task reports from agents, and (with --beat) a
candidate for the clock lease: of all the region's orchestrators started with
--beat, the one holding the lease sends the clock jobs (reaper, liveness flush,
sweeper, summaries, schedules, configuration sync); every orchestrator runs them."""
import sys

from celery import signals
from django.core.management.base import BaseCommand

from project.celery import app
from wire.protocol import CONTROL_QUEUE, REPORTS_QUEUE


class Command(BaseCommand):
    help = "Run the regional orchestrator's worker (reports, reaper, flush, sweeper)."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--beat", action="store_true",
                            help="stand for the clock lease (any number per region: one leads, the others stand by)")
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
        if beat:
            _beat_with_the_worker()
        worker = app.Worker(
            hostname="orchestrator@%h", queues=[CONTROL_QUEUE, REPORTS_QUEUE], concurrency=concurrency,
            loglevel=loglevel, without_mingle=True, without_gossip=True, without_heartbeat=True,
        )
        worker.start()
        sys.exit(worker.exitcode or 0)


def _beat_with_the_worker() -> None:
    """Beat as a thread of the worker's main process, from the moment the worker
    is ready (its pool forked) until it shuts down (the lease released then)."""
    from regions.clock.beat import beat_thread

    running = []

    @signals.worker_ready.connect(weak=False)
    def start(**kwargs):
        running.append(beat_thread(app))

    @signals.worker_shutdown.connect(weak=False)
    def stop(**kwargs):
        for service in running:
            service.stop()
