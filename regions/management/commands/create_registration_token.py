from django.core.management.base import BaseCommand

from regions.services.agents import registration_token_create


class Command(BaseCommand):
    help = "Issue a registration token agents trade for their own credential (printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="default")

    def handle(self, *args, name, **options):
        _, raw = registration_token_create(name=name)
        self.stdout.write(raw)
