from django.core.management.base import BaseCommand

from project.accounts.audit import audit_record, command_actor

from regions.services.agents.registry import registration_token_create


class Command(BaseCommand):
    help = "Issue a registration token agents trade for their own credential (printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="default")
        parser.add_argument("--token", default=None, help="this value (e.g. the router's token) instead of a new one")

    def handle(self, *args, name, token, **options):
        created, raw = registration_token_create(name=name, raw=token)
        audit_record(action="token.create", target=f"registration token {name} ({created.prefix}…)",
                     actor=command_actor("create_registration_token"))
        self.stdout.write(raw)
