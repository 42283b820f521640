from django.core.management.base import BaseCommand

from project.accounts.services import api_key_create


class Command(BaseCommand):
    help = "Issue an API key for a caller (printed once; stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default")
        parser.add_argument("--staff", action="store_true")
        parser.add_argument("--key", default=None, help="import this key (mk_…) instead of a new one")

    def handle(self, *args, username, name, staff, key, **options):
        _, raw = api_key_create(username=username, name=name, staff=staff, raw=key)
        self.stdout.write(raw)
