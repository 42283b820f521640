from django.core.management.base import BaseCommand, CommandError

from project.accounts.audit import audit_record, command_actor
from project.accounts.models import CALLER_SCOPES, SCOPES
from project.accounts.services import api_key_create


class Command(BaseCommand):
    help = "Issue an API key for a caller (printed once; stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default")
        parser.add_argument("--staff", action="store_true",
                            help="an operator's key: every scope (unless --scope says otherwise)")
        parser.add_argument("--scope", action="append", dest="scopes", metavar="SCOPE", choices=list(SCOPES),
                            help="what the key may do, repeatable (default: "
                                 f"{', '.join(CALLER_SCOPES)}): " + "; ".join(f"{s}: {what}" for s, what in SCOPES.items())
                                 + " (docs/security.md)")
        parser.add_argument("--key", default=None, help="import this key (mk_…) instead of a new one")

    def handle(self, *args, username, name, staff, scopes, key, **options):
        try:
            created, raw = api_key_create(username=username, name=name, staff=staff, scopes=scopes, raw=key)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        audit_record(action="api_key.create", target=f"key {created.prefix}… of {username}",
                     actor=command_actor("create_api_key"), detail="scopes: " + ", ".join(created.scopes))
        self.stdout.write(raw)
