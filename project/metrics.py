"""Prometheus /metrics for both roles, computed at scrape time from the role's
own state (database aggregates, Redis), so every web process answers the same
without a multiprocess registry. Authenticated: METRICS_TOKEN as a bearer, or a
staff API key."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from rest_framework.exceptions import AuthenticationFailed

from project.accounts.authentication import ApiKeyAuthentication
from project.accounts.tokens import bearer_from_header
from project.exceptions import BEARER_CHALLENGE


class RegionCollector:
    def collect(self):
        from django.db.models import Count

        from regions.models import Agent, Task
        from regions.services import liveness
        from regions.services.config import config_current

        region = settings.REGION_ID
        agents = GaugeMetricFamily("meridian_agents", "Agents by status", labels=["region", "status"])
        counts = dict(Agent.objects.values_list("status").annotate(n=Count("id")))
        for status in Agent.Status.values:
            agents.add_metric([region, status], counts.get(status, 0))
        yield agents
        tasks = GaugeMetricFamily("meridian_tasks", "Tasks by status", labels=["region", "status"])
        counts = dict(Task.objects.values_list("status").annotate(n=Count("id")))
        for status in Task.Status.values:
            tasks.add_metric([region, status], counts.get(status, 0))
        yield tasks
        up = GaugeMetricFamily("meridian_liveness_up", "1 when the liveness store (Redis) answers", labels=["region"])
        live = GaugeMetricFamily("meridian_agents_live", "Agents heartbeating within the TTL", labels=["region"])
        hold = GaugeMetricFamily("meridian_eviction_hold", "1 while mass eviction is held", labels=["region"])
        try:
            live.add_metric([region], liveness.live_count())
            hold.add_metric([region], 1 if liveness.hold_get() else 0)
            up.add_metric([region], 1)
            yield live
            yield hold
        except liveness.RedisError:
            up.add_metric([region], 0)
        yield up
        info = InfoMetricFamily("meridian_config", "Configuration commit this region runs", labels=["region"])
        info.add_metric([region], {"sha": config_current().sha or "none"})
        yield info


class RouterCollector:
    def collect(self):
        from django.utils import timezone

        from router.models import Region
        from router.selectors import region_is_stale

        now = timezone.now()
        stale = GaugeMetricFamily("meridian_router_region_stale", "1 when a region's summary is stale", labels=["region"])
        agents = GaugeMetricFamily("meridian_router_region_available_agents", "Available agents per summary",
                                   labels=["region"])
        age = GaugeMetricFamily("meridian_router_region_summary_age_seconds", "Age of the last summary",
                                labels=["region"])
        commits = set()
        for r in Region.objects.filter(enabled=True):
            stale.add_metric([r.region_id], 1 if region_is_stale(r, now) else 0)
            agents.add_metric([r.region_id], r.available_agents)
            if r.received_at:
                age.add_metric([r.region_id], (now - r.received_at).total_seconds())
            commits.add(r.config_version)
        yield stale
        yield agents
        yield age
        yield GaugeMetricFamily("meridian_router_config_commits", "Distinct configuration commits in the fleet "
                                "(more than 1 means drift)", value=len(commits))


def _authorized(request) -> bool:
    raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
    if raw and settings.METRICS_TOKEN and hmac.compare_digest(raw, settings.METRICS_TOKEN):
        return True
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return bool(found and found[0].is_staff)


def metrics_view(request):
    if not _authorized(request):
        response = JsonResponse({"error": "not_authenticated",
                                 "detail": "Bearer METRICS_TOKEN or a staff API key is required."}, status=401)
        response["WWW-Authenticate"] = BEARER_CHALLENGE
        return response
    registry = CollectorRegistry()
    registry.register(RegionCollector() if settings.ROLE == "region" else RouterCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
