"""Delete audit rows older than AUDIT_RETENTION_DAYS (the router's operators run
it from their scheduler; a region's beat runs it daily)."""
from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from project.accounts.audit import audit_prune


class Command(BaseCommand):
    help = "Delete audit trail rows older than AUDIT_RETENTION_DAYS (0: keep every row)."

    def handle(self, *args, **options):
        deleted = audit_prune(now=timezone.now())
        days = settings.AUDIT_RETENTION_DAYS
        self.stdout.write(f"{deleted} audit rows older than {days} days (AUDIT_RETENTION_DAYS) deleted" if days > 0
                          else "AUDIT_RETENTION_DAYS is 0: every audit row is kept")
