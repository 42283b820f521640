"""One command, the main job: a Global Task Router and three regions on this
machine, each with its own database, broker, beat and agents, doing real work.
The fleet itself is in ``regions/management/demo/``; this parses the options.
Runs until SIGINT (Ctrl-C) or SIGTERM, then stops agents first and the rest after.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from regions.management.demo.fleet import DEFAULT_VHOST_PREFIX, demo_run
from regions.management.demo.layout import DemoError


class Command(BaseCommand):
    help = "Run the local multi-region fleet: router + us-east-1, eu-west-3, ap-southeast-1 with agents."

    def add_arguments(self, parser):
        parser.add_argument("--base-port", type=int, default=8000)
        parser.add_argument("--dir", default=str(Path(settings.BASE_DIR) / "var" / "demo"))
        parser.add_argument("--tasks", type=int, default=12, help="tasks to submit through the router")
        parser.add_argument("--exit-after-tasks", action="store_true",
                            help="stop once the tasks are done (for tests and CI)")
        parser.add_argument("--broker", choices=["auto", "rabbitmq", "redis"], default="auto",
                            help="auto: RabbitMQ if it answers, else Redis (with a warning)")
        parser.add_argument("--vhost-prefix", default=DEFAULT_VHOST_PREFIX,
                            help="RabbitMQ vhosts are <prefix>-<region>; another prefix than the default is another "
                                 "demo beside it, with a redis-server of its own as well")
        parser.add_argument("--status-file", default=None,
                            help="write every process's state (pid, state, restarts, crashes) here as JSON")

    def handle(self, *args, base_port, dir, tasks, exit_after_tasks, broker, vhost_prefix, status_file,
               **options):
        try:
            demo_run(root=Path(dir), base_port=base_port, tasks=tasks, exit_after_tasks=exit_after_tasks,
                     broker=broker, vhost_prefix=vhost_prefix,
                     status_file=Path(status_file).resolve() if status_file else None, say=self.say)
        except DemoError as exc:
            raise CommandError(str(exc)) from exc

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()
