"""Global Task Router: summaries in, routing answers out. Stateless about agents
and tasks: it stores region summaries, tokens and address rules only."""
from __future__ import annotations

import heapq
import ipaddress
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from urllib3.exceptions import MaxRetryError, NewConnectionError

from project.dbbackends import is_postgresql
from project.accounts.tokens import token_generate, token_hash
from project.exceptions import Refused
from router import inputs
from router.models import AddressRule, Region, RegistrationToken
from router.selectors import (DirectoryEntry, capability_counts, directory_entries, directory_put, region_interval,
                              region_is_stale, regions_directory_reset)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = inputs.SCHEMA_VERSION


class RouterError(Refused):
    """What the router refuses, answered by the API exception handler."""


class Unauthenticated(RouterError):
    status, code = 401, "not_authenticated"


class Forbidden(RouterError):
    status, code = 403, "permission_denied"


class NotFound(RouterError):
    status, code = 404, "not_found"


class Stale(RouterError):
    status, code = 409, "conflict"


class NoRegion(RouterError):
    status, code = 503, "unavailable"


class ForwardUncertain(RouterError):
    status, code = 504, "timeout"


class ForwardBudgetSpent(NoRegion):
    """Every region tried was unreachable and the forward's time is up."""

    def __init__(self, detail: str, *, retry_after: int, **extra):
        super().__init__(detail, **extra)
        self.retry_after = retry_after


# --- regions and tokens ------------------------------------------------------

def region_create(*, region_id: str, orchestrator_url: str, labels: list[str] | None = None,
                  summary_interval: float = 60.0, token: str | None = None) -> tuple[Region, str]:
    """Add (or re-key) a region; returns its summary token, shown once."""
    _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels or [],
                  summary_interval=summary_interval)
    raw = token or token_generate("mrg")
    region, _ = Region.objects.update_or_create(
        region_id=region_id,
        defaults={"orchestrator_url": orchestrator_url.rstrip("/"), "labels": labels or [],
                  "token_hash": token_hash(raw), "summary_interval": summary_interval},
    )
    return region, raw


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


def registration_token_create(*, name: str, regions: list[str] | None = None,
                              token: str | None = None) -> tuple[RegistrationToken, str]:
    raw = token or token_generate("mrt")
    tok, _ = RegistrationToken.objects.update_or_create(
        token_hash=token_hash(raw), defaults={"name": name, "prefix": raw[:10], "regions": regions or []}
    )
    return tok, raw


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
    return tok


# --- summaries -----------------------------------------------------------------

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
              "config_version": config, "config_subject": summary["config_subject"]}
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


# --- routing -------------------------------------------------------------------

@dataclass
class RouteAnswer:
    regions: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)


_STALE = "stale: no summary for more than 3 intervals"


def _healthy_entries(now: datetime) -> tuple[list[DirectoryEntry], dict[str, str]]:
    healthy, skipped = [], {}
    for entry in directory_entries():
        if entry.stale(now):
            skipped[entry.region.region_id] = _STALE
        else:
            healthy.append(entry)
    return healthy, skipped


def route(*, capability: str, residency: str | None = None, region: str | None = None,
          count: int = 3) -> RouteAnswer:
    """Regions that serve the capability, ranked by idle agents for it, then by
    freshness. Residency is a hard constraint, and so is a pinned region.

    One pass over the cached directory, one dict lookup per region: at 500
    regions x 200 capabilities a query costs well under a millisecond, and the
    number of capabilities does not enter it."""
    now = timezone.now()
    pinned = region
    entries = directory_entries()
    if pinned:
        entries = [e for e in entries if e.region.region_id == pinned]
    skipped: dict[str, str] = {}
    if pinned and not entries:
        skipped[pinned] = "no such region (or disabled)"
    not_resident = f"residency: not labelled {residency}"
    not_served = f"no agent serves {capability}"
    candidates = []
    for entry in entries:
        region = entry.region
        if entry.stale_after is None or now > entry.stale_after:
            skipped[region.region_id] = _STALE
        elif residency and residency not in region.labels:
            skipped[region.region_id] = not_resident
        elif (type(cap := entry.caps.get(capability)) is dict and type(total := cap.get("count")) is int
              and total > 0 and type(idle := cap.get("idle", 0)) is int):
            # selectors.capability_counts inlined (a call per region would be most of the query)
            if not 0 <= idle <= total <= inputs.MAX_AGENTS:  # a stored row may predate the bounds
                total = min(total, inputs.MAX_AGENTS)
                idle = min(max(idle, 0), total)
            candidates.append((idle, region.received_at, region, total))
        else:
            skipped[region.region_id] = not_served
    if not candidates:
        why = "; ".join(f"{r}: {reason}" for r, reason in sorted(skipped.items())) or "no regions registered"
        raise NoRegion(f"No eligible region for capability {capability}"
                       f"{f' with residency {residency}' if residency else ''}"
                       f"{f' in region {pinned}' if pinned else ''} ({why}).", skipped=skipped)
    # The `count` best by (idle, freshness), ties in region_id order: sorted(..., reverse=True)[:count].
    best = heapq.nlargest(count, candidates, key=lambda c: (c[0], c[1]))
    return RouteAnswer(regions=[{
        "region_id": region.region_id,
        "orchestrator_url": region.orchestrator_url,
        "idle": idle,
        "count": total,
        "labels": region.labels,
        "summary_age_seconds": round((now - received).total_seconds(), 3),
    } for idle, received, region, total in best], skipped=skipped)


def region_pick(*, capabilities: list[str], hint: str | None, client_ip: str | None,
                allowed: list[str] | None) -> Region:
    """For a registering agent: explicit hint, then address rules, then the
    healthy region with the most spare capacity for its capabilities. `allowed`
    limits the regions (the registration token's), None means all."""
    now = timezone.now()
    if hint:
        region = Region.objects.filter(region_id=hint, enabled=True).first()
        if region is None:
            raise RouterError(f"Unknown region {hint}.")
        if allowed is not None and hint not in allowed:
            raise Forbidden(f"This registration token is not valid for region {hint}.")
        if region_is_stale(region, now):
            raise NoRegion(f"Region {hint} is not healthy (no recent summary).")
        return region
    entries, _ = _healthy_entries(now)
    entries = [e for e in entries if allowed is None or e.region.region_id in allowed]
    healthy = [e.region for e in entries]
    if not healthy:
        raise NoRegion("No healthy region can take this agent"
                       f"{' (token limited to ' + ', '.join(allowed) + ')' if allowed is not None else ''}.")
    if client_ip:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            address = None
        by_id = {r.pk: r for r in healthy}
        for rule in AddressRule.objects.filter(region_id__in=by_id):
            try:
                if address is not None and address in ipaddress.ip_network(rule.cidr, strict=False):
                    return by_id[rule.region_id]
            except ValueError:
                logger.warning("address rule %s has an invalid CIDR", rule.pk)

    def spare(entry: DirectoryEntry) -> tuple[int, int]:
        idle = sum((capability_counts(entry.caps, c) or {"idle": 0})["idle"] for c in capabilities)
        return (-idle, -entry.region.available_agents)  # most idle for these, then the most idle overall

    return min(entries, key=spare).region


def task_forward(*, capability: str, residency: str | None, region: str | None = None, body: bytes,
                 authorization: str) -> tuple[int, dict]:
    """Send a submission to the best region, the next one if it cannot be
    reached. Nothing is stored here: the body passes through. `region` pins the
    forward to that region (a retry after an uncertain forward must go where the
    first try may have landed: idempotency keys are kept per region).

    The whole forward, across candidates, is held to ROUTER_FORWARD_BUDGET_SECONDS
    (each connect to ROUTER_FORWARD_CONNECT_TIMEOUT): the web worker runs one
    request at a time, and gunicorn kills it past its 30 s timeout."""
    candidates = route(capability=capability, residency=residency, region=region, count=5).regions
    return _forward(candidates=candidates, path="/api/v1/tasks", key="task", body=body, authorization=authorization)


def task_batch_forward(*, capabilities: list[str], residency: str | None, region: str | None = None, body: bytes,
                       authorization: str) -> tuple[int, dict]:
    """Send a whole batch to ONE region that serves every capability in it (a
    batch is one request to one region: its items are answered together, and a
    retry after an uncertain forward goes to that region with the same keys).
    Same candidates, budget and uncertainty rules as task_forward."""
    candidates = route_all(capabilities=capabilities, residency=residency, region=region, count=5)
    return _forward(candidates=candidates, path="/api/v1/tasks/batch", key="batch", body=body,
                    authorization=authorization)


def route_all(*, capabilities: list[str], residency: str | None = None, region: str | None = None,
              count: int = 3) -> list[dict]:
    """The regions that serve every one of `capabilities`, ranked by the idle
    agents of their scarcest capability, then by freshness (route's order for
    one). A capability no region serves raises route's NoRegion naming it."""
    names = list(dict.fromkeys(capabilities))
    if len(names) == 1:
        return route(capability=names[0], residency=residency, region=region, count=count).regions
    everywhere = len(directory_entries()) or 1
    ranked: dict[str, dict] = {}
    served: list[set[str]] = []
    for name in names:
        regions = route(capability=name, residency=residency, region=region, count=everywhere).regions
        served.append({r["region_id"] for r in regions})
        for answer in regions:
            best = ranked.setdefault(answer["region_id"], dict(answer))
            if answer["idle"] < best["idle"]:
                best.update(idle=answer["idle"], count=answer["count"])
    common = set.intersection(*served)
    if not common:
        raise NoRegion(f"No eligible region serves all of {', '.join(names)}"
                       f"{f' with residency {residency}' if residency else ''}"
                       f"{f' in region {region}' if region else ''}: split the batch.",
                       skipped={})
    best = sorted((ranked[r] for r in common), key=lambda r: (-r["idle"], r["summary_age_seconds"], r["region_id"]))
    return best[:count]


def _forward(*, candidates: list[dict], path: str, key: str, body: bytes, authorization: str) -> tuple[int, dict]:
    """POST `body` to `path` of the first candidate region that can be reached,
    within ROUTER_FORWARD_BUDGET_SECONDS; the region's answer comes back under
    `key`, with the region's status code."""
    budget = float(settings.ROUTER_FORWARD_BUDGET_SECONDS)
    deadline = time.monotonic() + budget
    errors = {}
    for candidate in candidates:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ForwardBudgetSpent(
                f"No region answered within the router's forward budget of {budget:g} s "
                f"(ROUTER_FORWARD_BUDGET_SECONDS); the task was sent nowhere: retry later.",
                retry_after=max(1, math.ceil(budget)), errors=errors)
        url = f"{candidate['orchestrator_url']}{path}"
        try:
            response = requests.post(url, data=body, timeout=(min(settings.ROUTER_FORWARD_CONNECT_TIMEOUT, left), left),
                                     headers={"Authorization": authorization, "Content-Type": "application/json"})
        except requests.RequestException as exc:
            if _never_sent(exc):
                # Not connected: the region never saw the task, the next one may take it.
                errors[candidate["region_id"]] = f"unreachable: {exc.__class__.__name__}"
                continue
            # Sent but unanswered: it may have been accepted there. Trying another
            # region could run it twice (idempotency keys are per region), so say
            # where it may be and stop.
            raise ForwardUncertain(
                f"Region {candidate['region_id']} ({candidate['orchestrator_url']}) did not answer "
                f"({exc.__class__.__name__}); the task may have been accepted there. Idempotency keys are kept per "
                f"region: check there, or retry against that region only, with the same idempotency_key "
                f"({url}, or here with \"region\": "
                f"\"{candidate['region_id']}\"). An unpinned retry here may pick another region and run it twice.",
                region_id=candidate["region_id"], regional_orchestrator_url=candidate["orchestrator_url"],
                retry_with={"region": candidate["region_id"]}) from exc
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
            data = {"detail": response.text[:500]}
        return response.status_code, {"region_id": candidate["region_id"],
                                      "regional_orchestrator_url": candidate["orchestrator_url"],
                                      key: data}
    raise NoRegion("No eligible region accepted the task.", errors=errors)


def task_redirect(*, region_id: str, path: str, query: str) -> str:
    """Where a request about a task of `region_id` belongs: that region's
    orchestrator URL with the same path and query (the caller's `region`
    already taken out). The router answers with a redirect there and never
    carries the answer: task data and results never cross it. A stale region
    is still named (its summaries may lag while it serves); a disabled or
    unknown one is not."""
    entry = next((e for e in directory_entries() if e.region.region_id == region_id), None)
    if entry is None:
        raise NotFound(f"No region {region_id} (unknown or disabled).", region_id=region_id)
    return f"{entry.region.orchestrator_url}{path}{f'?{query}' if query else ''}"


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when no connection was made (timed out or refused while
    connecting, or the TLS handshake failed): the request never left. A
    connection dropped after sending is not that: the region may have it."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)



def region_validate(*, region_id: str, orchestrator_url: str, labels: list[str], summary_interval: float) -> None:
    """Raise RouterError if the operator's side of a region is out of bounds
    (for forms, before region_create or region_update is called)."""
    _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels,
                  summary_interval=summary_interval)


def region_update(*, region_id: str, orchestrator_url: str, labels: list[str], enabled: bool) -> Region:
    """The operator's fields of a region (the admin's change form); the summary
    fields belong to the region and its token to region_token_rotate."""
    with transaction.atomic():
        region = Region.objects.select_for_update().filter(region_id=region_id).first()
        if region is None:
            raise NotFound(f"Unknown region {region_id}.")
        _region_check(region_id=region_id, orchestrator_url=orchestrator_url, labels=labels,
                      summary_interval=region_interval(region.summary_interval))
        region.orchestrator_url = orchestrator_url.rstrip("/")
        region.labels = labels
        region.enabled = enabled
        region.save(update_fields=["orchestrator_url", "labels", "enabled"])
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


def registration_token_revoke(*, token_id: int) -> bool:
    """Revoke a registration token; False if it was already revoked."""
    return bool(RegistrationToken.objects.filter(pk=token_id, revoked_at__isnull=True)
                .update(revoked_at=timezone.now()))
