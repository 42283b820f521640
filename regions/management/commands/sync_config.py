"""Pull the configuration repository, validate, and apply it atomically."""
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from regions.services.config.sync import config_sync


class Command(BaseCommand):
    help = "Sync this region's configuration from its git repository (global.yaml + regions/<id>.yaml)."

    def add_arguments(self, parser):
        parser.add_argument("--repo", default=settings.CONFIG_REPO, help="path or URL of the git repository")
        parser.add_argument("--ref", default=settings.CONFIG_REF, help="branch, tag or commit sha")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")

    def handle(self, *args, repo, ref, dry_run, **options):
        if not repo:
            raise CommandError("no repository: pass --repo or set CONFIG_REPO")
        result = config_sync(repo=repo, ref=ref, dry_run=dry_run)
        if result.error:
            raise CommandError(f"configuration at {ref} rejected, nothing changed: {result.error}")
        verb = "would change" if dry_run else ("applied" if result.applied else "already applied")
        self.stdout.write(f"{result.sha[:12]} {verb} ({len(result.changes)} changes, {result.duration_ms} ms)")
        for change in result.changes:
            self.stdout.write(f"  {change['key']}: {json.dumps(change['from'])} -> {json.dumps(change['to'])}")
