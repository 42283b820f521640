from django.core.management.base import BaseCommand
from django.utils import timezone

from project.accounts.audit import audit_record, command_actor
from project.accounts.registration import bounds_arguments, bounds_describe

from router.services.regions import registration_token_create


class Command(BaseCommand):
    help = ("Issue an agent registration token at the router (printed once), optionally limited to regions. "
            "Bounded with --max-uses and --expires-in, spent where the router places an agent; every token is "
            "also limited to REGISTRATION_RATE_PER_TOKEN placements per minute.")

    def add_arguments(self, parser):
        parser.add_argument("--name", default="default")
        parser.add_argument("--regions", default="", help="comma-separated region ids; empty means all")
        parser.add_argument("--token", default=None,
                            help="this value instead of a new one (again: its name, regions and bounds are "
                                 "replaced, its uses kept)")
        bounds_arguments(parser)

    def handle(self, *args, name, regions, token, max_uses, expires_in, **options):
        expires_at = timezone.now() + expires_in if expires_in else None
        created, raw = registration_token_create(name=name, regions=[r for r in regions.split(",") if r], token=token,
                                                 max_uses=max_uses, expires_at=expires_at)
        audit_record(action="token.create", target=f"registration token {name} ({created.prefix}…)",
                     actor=command_actor("router_add_registration_token"),
                     detail=f"regions: {regions or 'every region'}; "
                            f"{bounds_describe(max_uses=max_uses, expires_at=expires_at)}")
        self.stdout.write(raw)
