from django.core.management.base import BaseCommand

from project.accounts.services import api_key_create


class Command(BaseCommand):
    help = "Issue an API key for a caller (printed once; stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default")
        parser.add_argument("--staff", action="store_true")

    def handle(self, *args, username, name, staff, **options):
        _, raw = api_key_create(username=username, name=name, staff=staff)
        self.stdout.write(raw)
