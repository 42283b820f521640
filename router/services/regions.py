"""The router's regions and registration tokens: the operator's side of a region
(create, validate, update, rotate its summary token, clear its replay
watermark), the region token's and the registration token's checks,
registration tokens' lifecycle, and the registration grant an agent placed in
a region takes there."""
from __future__ import annotations

import logging
import re
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from project.accounts import registration
from project.accounts.assertions import REGISTER, assertion_sign, router_signing_key
from project.accounts.tokens import token_generate, token_hash
from router import inputs
from router.models import Region, RegistrationToken
from router.selectors import region_interval, regions_directory_reset
from router.services.refusals import NotFound, RouterError, Unauthenticated

logger = logging.getLogger("router.services")  # the router's log stream, whichever module writes


def region_create(*, region_id: str, orchestrator_url: str, labels: list[str] | None = None,
                  summary_interval: float = 60.0, token: str | None = None, capacity_ceiling: int | None = None,
                  weight: float | None = None) -> tuple[Region, str]:
    """Add (or re-key) a region; returns its summary token, shown once. Its
    ceiling and weight change only when given (a re-key keeps the operator's)."""
    _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels or [],
                  summary_interval=summary_interval)
    region_hold_validate(capacity_ceiling=capacity_ceiling, weight=1.0 if weight is None else weight)
    raw = token or token_generate("mrg")
    hold = {**({"capacity_ceiling": capacity_ceiling} if capacity_ceiling is not None else {}),
            **({"weight": weight} if weight is not None else {})}
    region, _ = Region.objects.update_or_create(
        region_id=region_id,
        defaults={"orchestrator_url": orchestrator_url.rstrip("/"), "labels": labels or [],
                  "token_hash": token_hash(raw), "summary_interval": summary_interval, **hold},
    )
    return region, raw


def region_hold_validate(*, capacity_ceiling: int | None, weight: float) -> None:
    """The operator's hold on a region: a ceiling of 1 to MAX_AGENTS (or none), a weight of 0 to 10."""
    if capacity_ceiling is not None and not (isinstance(capacity_ceiling, int)
                                             and 1 <= capacity_ceiling <= inputs.MAX_AGENTS):
        raise RouterError(f"capacity_ceiling: an integer from 1 to {inputs.MAX_AGENTS}, or empty.")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 10:
        raise RouterError("weight: a number from 0 to 10.")


def _region_check(*, region_id: str, orchestrator_url: str, labels: list[str], summary_interval: float) -> None:
    """The operator's side of a region held to the bounds summaries are."""
    if not isinstance(region_id, str) or not re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", region_id):
        raise RouterError(f"region_id: {ascii(region_id)[:80]} is not a slug of at most 64 characters.")
    url = orchestrator_url.rstrip("/") if isinstance(orchestrator_url, str) else ""
    if not inputs.orchestrator_url(url) or "\x00" in url or len(url) > inputs.MAX_URL_LENGTH:
        raise RouterError(f"orchestrator_url: an http(s) URL of at most {inputs.MAX_URL_LENGTH} characters.")
    if not isinstance(labels, list) or len(labels) > inputs.MAX_LABELS:
        raise RouterError(f"labels: a list of at most {inputs.MAX_LABELS} labels.")
    bad = next((label for label in labels if not isinstance(label, str) or not inputs.label_name(label)), None)
    if bad is not None:
        raise RouterError(f"labels: invalid label {ascii(bad)[:80]} (lower-case letters, digits, - and _).")
    if not (inputs.MIN_SUMMARY_INTERVAL <= summary_interval <= inputs.MAX_SUMMARY_INTERVAL):
        raise RouterError(f"summary_interval: between {inputs.MIN_SUMMARY_INTERVAL:g} and "
                          f"{inputs.MAX_SUMMARY_INTERVAL:g} seconds.")


def region_watermark_reset(*, region_id: str) -> Region:
    """Forget the date of the newest summary, so the region's next one is
    accepted however it is dated (within the skew allowance). Replays are
    refused by that date: a summary dated in the future (stored before the
    allowance existed, or while it was wider) refuses every genuine one until
    the date passes; this is the way out."""
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(region_id=region_id).first()
        if region is None:
            raise NotFound(f"Unknown region {region_id}.")
        was = region.last_updated
        region.last_updated = None
        region.save(update_fields=["last_updated"])
    logger.warning("region %s: replay watermark %s cleared by an operator", region_id,
                   was.isoformat() if was else "(none)")
    regions_directory_reset()
    return region


def region_authenticate(raw: str | None) -> Region:
    if not raw:
        raise Unauthenticated("A region token is required (Authorization: Bearer …).")
    # Not the stored summary: ~8 KB of JSON at 200 capabilities, read on every push for nothing.
    region = Region.objects.filter(token_hash=token_hash(raw), enabled=True).defer("capabilities").first()
    if region is None:
        raise Unauthenticated("Unknown or disabled region token.")
    return region


def registration_token_check(raw: str | None) -> RegistrationToken:
    if not raw:
        raise Unauthenticated("A registration token is required (Authorization: Bearer …).")
    tok = RegistrationToken.objects.filter(token_hash=token_hash(raw), revoked_at__isnull=True).first()
    if tok is None:
        raise Unauthenticated("Invalid or revoked registration token.")
    registration.token_expiry_check(tok)  # its uses are spent where an agent is placed (services.placement)
    return tok


def region_validate(*, region_id: str, orchestrator_url: str, labels: list[str], summary_interval: float) -> None:
    """Raise RouterError if the operator's side of a region is out of bounds
    (for forms, before region_create or region_update is called)."""
    _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels,
                  summary_interval=summary_interval)


def region_update(*, region_id: str, orchestrator_url: str, labels: list[str], enabled: bool,
                  capacity_ceiling: int | None = None, weight: float = 1.0) -> Region:
    """The operator's fields of a region (the admin's change form); the summary
    fields belong to the region and its token to region_token_rotate."""
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(region_id=region_id).first()
        if region is None:
            raise NotFound(f"Unknown region {region_id}.")
        _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels,
                      summary_interval=region_interval(region.summary_interval))
        region_hold_validate(capacity_ceiling=capacity_ceiling, weight=weight)
        region.orchestrator_url = orchestrator_url.rstrip("/")
        region.labels = labels
        region.enabled = enabled
        region.capacity_ceiling, region.weight = capacity_ceiling, weight
        region.save(update_fields=["orchestrator_url", "labels", "enabled", "capacity_ceiling", "weight"])
    regions_directory_reset()
    return region


def region_token_rotate(*, region_id: str) -> tuple[Region, str]:
    """A new summary token for the region, returned once; the old one stops
    working at once (the region's REGION_TOKEN must be changed to the new one)."""
    raw = token_generate("mrg")
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(region_id=region_id).first()
        if region is None:
            raise NotFound(f"Unknown region {region_id}.")
        region.token_hash = token_hash(raw)
        region.save(update_fields=["token_hash"])
    logger.warning("region %s: summary token rotated by an operator", region_id, extra={"region": region_id})
    return region, raw


def registration_token_create(*, name: str, regions: list[str] | None = None, token: str | None = None,
                              max_uses: int | None = None, expires_at: datetime | None = None,
                              ) -> tuple[RegistrationToken, str]:
    """max_uses, expires_at: None is unlimited, never. Again with the same `token`:
    its name, regions and bounds are replaced; the uses counted so far stay."""
    raw = token or token_generate("mrt")
    tok, _ = RegistrationToken.objects.update_or_create(
        token_hash=token_hash(raw), defaults={"name": name, "prefix": raw[:10], "regions": regions or [],
                                              "max_uses": max_uses, "expires_at": expires_at}
    )
    return tok, raw


def registration_token_revoke(*, token_id: int) -> bool:
    """Revoke a registration token; False if it was already revoked."""
    return bool(RegistrationToken.objects.filter(pk=token_id, revoked_at__isnull=True)
                .update(revoked_at=timezone.now()))


def registration_grant(*, region_id: str, agent_id: str) -> str | None:
    """What lets an agent the router placed in `region_id` register there: a
    grant signed by the router for that region and that agent id only, valid
    ROUTER_GRANT_TTL_SECONDS. None when the router has no signing key (the
    agent then presents its registration token to the region, which must know it)."""
    key = router_signing_key()
    if key is None:
        return None
    return assertion_sign(key=key, audience=region_id, subject=agent_id, purpose=REGISTER,
                          ttl=settings.ROUTER_GRANT_TTL_SECONDS)
