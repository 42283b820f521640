"""The router's Prometheus collector, read at scrape time (project/metrics.py
serves it: settings.METRICS_COLLECTORS names it for the router role)."""
from __future__ import annotations

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from router.models import Region
from router.selectors import region_is_stale


class RouterCollector:
    def collect(self):
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
