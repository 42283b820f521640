from django.core.management.base import BaseCommand
from django.utils import timezone

from project.accounts.audit import audit_record, command_actor
from project.accounts.registration import bounds_arguments, bounds_describe

from regions.services.agents.registry import registration_token_create


class Command(BaseCommand):
    help = ("Issue a registration token agents trade for their own credential (printed once). Bounded with "
            "--max-uses and --expires-in; every token is also limited to REGISTRATION_RATE_PER_TOKEN "
            "registrations per minute.")

    def add_arguments(self, parser):
        parser.add_argument("--name", default="default")
        parser.add_argument("--token", default=None, help="this value (e.g. the router's token) instead of a new one")
        bounds_arguments(parser)

    def handle(self, *args, name, token, max_uses, expires_in, **options):
        expires_at = timezone.now() + expires_in if expires_in else None
        created, raw = registration_token_create(name=name, raw=token, max_uses=max_uses, expires_at=expires_at)
        audit_record(action="token.create", target=f"registration token {name} ({created.prefix}…)",
                     actor=command_actor("create_registration_token"),
                     detail=bounds_describe(max_uses=max_uses, expires_at=expires_at))
        self.stdout.write(raw)
