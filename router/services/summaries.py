"""A region's summary in: validated, checked against the replay watermark and
stored in one conditional UPDATE, then put in this process's directory."""
from __future__ import annotations

import logging
from datetime import datetime, timezone as dt_timezone
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from project.dbbackends import is_postgresql
from router import inputs
from router.models import Region
from router.selectors import directory_put
from router.services.refusals import Forbidden, Stale

logger = logging.getLogger("router.services")  # the router's log stream, whichever module writes


def summary_ingest(*, region: Region, summary: Any) -> Region:
    """Store a region's summary (any JSON value: validated here, see
    router/inputs.py). A region updates only itself; an older (or replayed)
    summary than the one stored is refused."""
    summary = inputs.summary_parse(summary)
    if summary["region_id"] != region.region_id:
        logger.warning("summary refused: region %s sent one for %s", region.region_id, summary["region_id"],
                       extra={"region": region.region_id})
        raise Forbidden(f"This token belongs to region {region.region_id}; it cannot update "
                        f"{summary['region_id']}.")
    if summary["orchestrator_url"].rstrip("/") != region.orchestrator_url:
        # The directory's URL is the operator's (router_add_region), not the token holder's.
        raise Forbidden(f"orchestrator_url {summary['orchestrator_url']} differs from the one registered for "
                        f"{region.region_id} ({region.orchestrator_url}); re-register the region to move it.")
    last_updated = datetime.fromtimestamp(summary["last_updated"], tz=dt_timezone.utc)
    now = timezone.now()
    config = summary["config_version"]
    fields = {"available_agents": summary["available_agents"], "capabilities": summary["agent_capabilities_summary"],
              "last_updated": last_updated, "received_at": now, "schema_version": summary["schema_version"],
              "config_version": config, "config_subject": summary["config_subject"],
              "attention": summary.get("attention") or []}
    if summary.get("summary_interval"):
        fields["summary_interval"] = summary["summary_interval"]
    # One conditional UPDATE: the replay check (newer than the stored one) and
    # the write are a single statement, so no row lock is held across round
    # trips and the stored summary it replaces is never read back.
    with transaction.atomic():
        _summary_commit_unflushed()
        updated = Region.objects.filter(Q(last_updated__isnull=True) | Q(last_updated__lt=last_updated),
                                        pk=region.pk).update(
            **fields, config_since=Case(When(Q(config_since__isnull=True) | ~Q(config_version=config),
                                             then=Value(now)), default=F("config_since")))
    if not updated:
        stored = Region.objects.filter(pk=region.pk).values_list("last_updated", flat=True).first()
        if stored is None:  # deleted since the token was checked, or its watermark cleared meanwhile: resend
            raise Stale(f"Region {region.region_id} changed while its summary was stored; send it again.")
        logger.warning("summary refused: region %s sent one dated %s, not newer than the stored one",
                       region.region_id, last_updated.isoformat(), extra={"region": region.region_id})
        raise Stale(f"Summary from {last_updated.isoformat()} is not newer than the stored one "
                    f"({stored.isoformat()}); if that one is dated in the future, an operator "
                    f"can clear it: manage.py router_reset_region {region.region_id}.")
    if config != region.config_version or region.config_since is None:
        region.config_since = now  # as the UPDATE decided, unless another summary raced this one
    for name, value in fields.items():
        setattr(region, name, value)
    # This process routes by it at once; the others within DIRECTORY_CHECK_SECONDS (0.5 s),
    # each re-reading only the regions that changed: never the whole directory.
    directory_put(region)
    logger.info("summary from %s accepted (%d agents available, config %s)", region.region_id,
                region.available_agents, region.config_version[:12] or "-", extra={"region": region.region_id})
    return region


def _summary_commit_unflushed() -> None:
    """Commit this transaction without waiting for its WAL flush (PostgreSQL's
    synchronous_commit off, for this transaction only). A summary is soft state
    replaced every interval: a database crash within the next ~0.6 s (3 x
    wal_writer_delay) may lose the newest one, and the region's next summary
    restores it (the replay watermark then stands at the previous one, which
    only admits that lost summary again). Waiting on the disk was most of an
    ingest on a busy host."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
