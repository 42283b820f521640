from django.core.management.base import BaseCommand, CommandError

from project.accounts.audit import audited, command_actor
from router.services.refusals import RouterError
from router.services.regions import region_watermark_reset


class Command(BaseCommand):
    help = ("Clear a region's replay watermark (the date of its newest summary), so its next summary is "
            "accepted: the way out for a region locked out by a summary dated in the future.")

    def add_arguments(self, parser):
        parser.add_argument("region_id")

    def handle(self, *args, region_id, **options):
        try:
            with audited(None, "region.reset_watermark", target=region_id, actor=command_actor("router_reset_region")):
                region_watermark_reset(region_id=region_id)
        except RouterError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"{region_id}: replay watermark cleared; its next summary is accepted.")
