"""What needs an operator across the fleet, as the router sees it: regions
stale or without agents, configuration drift, forwards failing, and every
region's own "needs attention" items as its latest summary carried them
(kind, severity, text, count: never task data). Items are {"kind", "severity",
"text", "count", "href"}, critical first; one row per region, read once."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from project.region_summary import (ATTENTION_SEVERITIES, MAX_ATTENTION_COUNT, MAX_ATTENTION_ITEMS,
                                    MAX_ATTENTION_KIND, MAX_ATTENTION_TEXT, attention_path_ok)
from router.models import ForwardOutcomes, Region
from router.selectors import config_drift_groups, forward_penalty, region_capabilities, region_is_stale

CRITICAL, WARNING = ATTENTION_SEVERITIES


def _item(kind: str, severity: str, text: str, count: int, href: str) -> dict:
    return {"kind": kind, "severity": severity, "text": text, "count": count, "href": href}


def attention_items_clean(value: Any) -> list[dict]:
    """A stored list of items held to the bounds the summary was checked against
    (the row may come from the admin or SQL): malformed entries are left out."""
    if not isinstance(value, list):
        return []
    out = []
    for item in value[:MAX_ATTENTION_ITEMS]:
        if not isinstance(item, dict):
            continue
        kind, severity, text, count = (item.get(k) for k in ("kind", "severity", "text", "count"))
        if (isinstance(kind, str) and 0 < len(kind) <= MAX_ATTENTION_KIND and severity in ATTENTION_SEVERITIES
                and isinstance(text, str) and text and isinstance(count, int) and not isinstance(count, bool)):
            path = item.get("path")
            out.append({"kind": kind, "severity": severity, "count": min(max(count, 0), MAX_ATTENTION_COUNT),
                        "text": "".join(ch for ch in text if ch.isprintable())[:MAX_ATTENTION_TEXT],
                        "path": path if attention_path_ok(path) else "/admin/"})
    return out


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def router_attention(*, now: datetime | None = None) -> list[dict]:
    now = now or timezone.now()
    regions = list(Region.objects.filter(enabled=True).order_by("region_id"))
    drift = config_drift_groups(now=now)
    majority = drift["majority"]
    since = time.time() - float(settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS)
    penalties = {row.region_id: penalty for row in ForwardOutcomes.objects.filter(failed_at__gte=since)
                 if (penalty := forward_penalty(row, since=since))}
    items = []
    if not regions:
        items.append(_item("no_regions", CRITICAL, "no enabled region: the router has nowhere to route a task", 0,
                           "/admin/router/region/"))
    if not settings.ROUTER_SIGNING_KEY:
        items.append(_item("no_signing_key", CRITICAL, "ROUTER_SIGNING_KEY is not set: the router cannot vouch "
                           "for a caller to a region, so it forwards nothing (manage.py router_signing_key)", 1,
                           "/admin/router/region/"))
    for region in regions:
        href = f"/admin/router/region/{region.pk}/change/"
        name = region.region_id
        if region_is_stale(region, now):
            if region.received_at is None:
                text = f"region {name} has never sent a summary; routing skips it"
            else:
                text = (f"region {name}: no summary for {_age((now - region.received_at).total_seconds())} "
                        "(stale); routing skips it")
            items.append(_item("region_stale", CRITICAL, text, 1, href))
        else:
            caps = region_capabilities(region.capabilities)
            own_items = attention_items_clean(region.attention)
            # The region says so itself, with a link to its list: one line, not two.
            if not any(c["count"] for c in caps.values()) and "no_agents" not in {own["kind"] for own in own_items}:
                items.append(_item("region_no_agents", CRITICAL, f"region {name} reports no agent taking work", 0,
                                   href))
            console = region.orchestrator_url.rstrip("/")
            for own in own_items:
                items.append(_item(own["kind"], own["severity"], f"{name}: {own['text']}", own["count"],
                                   console + own["path"]))
        penalty = penalties.get(region.pk)
        if majority and region.config_version and region.config_version != majority:
            items.append(_item("config_drift", WARNING, f"region {name} runs configuration "
                               f"{region.config_version[:12]}, the majority {majority[:12]}", 1, href))
        if penalty is not None:
            items.append(_item("forward_penalty", WARNING, f"forwards to region {name} failing: {penalty.rate:.0%} "
                               f"lately (last: {penalty.last_failure or 'failed'}); routing ranks it last", 1, href))
    items.sort(key=lambda i: ATTENTION_SEVERITIES.index(i["severity"]))
    return items
