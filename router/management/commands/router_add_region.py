from django.core.management.base import BaseCommand, CommandError

from project.accounts.audit import audited, command_actor
from router.models import Region
from router.services.refusals import RouterError
from router.services.regions import region_create


class Command(BaseCommand):
    help = "Add or re-key a region at the router; prints its summary token once."

    def add_arguments(self, parser):
        parser.add_argument("region_id")
        parser.add_argument("orchestrator_url")
        parser.add_argument("--labels", default="", help="comma-separated, e.g. eu,gdpr")
        parser.add_argument("--summary-interval", type=float, default=60.0)
        parser.add_argument("--token", default=None, help="use this token instead of a random one")
        parser.add_argument("--cidr", action="append", default=[], help="client addresses of this region")
        parser.add_argument("--ceiling", type=int, default=None,
                            help="the most agents its summaries are believed for (default: ROUTER_REGION_CEILING; "
                                 "a re-key keeps it)")
        parser.add_argument("--weight", type=float, default=None,
                            help="multiplies its idle capacity in the ranking, 0 to 10 (default 1; a re-key keeps it)")

    def handle(self, *args, region_id, orchestrator_url, labels, summary_interval, token, cidr, ceiling, weight,
               **options):
        try:
            known = Region.objects.filter(region_id=region_id).exists()
            with audited(None, "region.rekey" if known else "region.create", target=region_id,
                         actor=command_actor("router_add_region"),
                         detail=f"{orchestrator_url} labels {labels or '-'} ceiling {ceiling or 'kept/default'} "
                                f"weight {weight if weight is not None else 'kept/default'}"):
                region, raw = region_create(region_id=region_id, orchestrator_url=orchestrator_url,
                                            labels=[l for l in labels.split(",") if l],
                                            summary_interval=summary_interval, token=token,
                                            capacity_ceiling=ceiling, weight=weight)
        except RouterError as exc:
            raise CommandError(exc.detail) from None
        for block in cidr:
            region.address_rules.get_or_create(cidr=block)
        self.stdout.write(raw)
