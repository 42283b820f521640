from django.core.management.base import BaseCommand

from project.accounts.audit import audit_record, command_actor

from router.services.regions import registration_token_create


class Command(BaseCommand):
    help = "Issue an agent registration token at the router (printed once), optionally limited to regions."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="default")
        parser.add_argument("--regions", default="", help="comma-separated region ids; empty means all")
        parser.add_argument("--token", default=None)

    def handle(self, *args, name, regions, token, **options):
        created, raw = registration_token_create(name=name, regions=[r for r in regions.split(",") if r], token=token)
        audit_record(action="token.create", target=f"registration token {name} ({created.prefix}…)",
                     actor=command_actor("router_add_registration_token"), detail=f"regions: {regions or 'every region'}")
        self.stdout.write(raw)
