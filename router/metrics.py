"""The router's Prometheus collector, read at scrape time (project/metrics.py
serves it: settings.METRICS_COLLECTORS names it for the router role)."""
from __future__ import annotations

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router.models import ForwardOutcomes, Region
from router.selectors import region_forward_penalty, region_is_stale
from router.services.outcomes import OUTCOMES


class RouterCollector:
    def collect(self):
        now = timezone.now()
        stale = GaugeMetricFamily("meridian_router_region_stale", "1 when a region's summary is stale", labels=["region"])
        agents = GaugeMetricFamily("meridian_router_region_available_agents", "Available agents per summary",
                                   labels=["region"])
        age = GaugeMetricFamily("meridian_router_region_summary_age_seconds", "Age of the last summary",
                                labels=["region"])
        forwards = CounterMetricFamily("meridian_router_forwards", "Forwards to a region by outcome (answered; "
                                       "refused: 429, 503, 401; unreachable; no_answer; error: other 5xx)",
                                       labels=["region", "outcome"])
        failing = GaugeMetricFamily("meridian_router_region_forward_failure_rate",
                                    "Share of the region's recent forwards that failed (ROUTER_FORWARD_PENALTY_"
                                    "WINDOW_SECONDS); routing ranks it lower by it", labels=["region"])
        commits = set()
        for r in Region.objects.filter(enabled=True).select_related("forward_outcomes"):
            stale.add_metric([r.region_id], 1 if region_is_stale(r, now) else 0)
            agents.add_metric([r.region_id], r.available_agents)
            if r.received_at:
                age.add_metric([r.region_id], (now - r.received_at).total_seconds())
            commits.add(r.config_version)
            try:
                row = r.forward_outcomes
            except ForwardOutcomes.DoesNotExist:
                row = None
            for outcome in OUTCOMES:
                forwards.add_metric([r.region_id, outcome], getattr(row, f"{outcome}_total", 0))
            penalty = region_forward_penalty(r)
            failing.add_metric([r.region_id], penalty.rate if penalty else 0.0)
        yield stale
        yield agents
        yield age
        yield forwards
        yield failing
        yield GaugeMetricFamily("meridian_router_config_commits", "Distinct configuration commits in the fleet "
                                "(more than 1 means drift)", value=len(commits))
