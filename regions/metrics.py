"""The region's Prometheus collector, read at scrape time (project/metrics.py
serves it: settings.METRICS_COLLECTORS names it for the region role)."""
from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

from regions.models import Agent, Task
from regions.services import liveness
from regions.services.config.current import config_current


class RegionCollector:
    def collect(self):
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
        held = GaugeMetricFamily("meridian_tasks_held", "Tasks held beyond their caller's fair share of a "
                                 "capability (sent as the caller's earlier tasks start)", labels=["region"])
        held.add_metric([region], Task.objects.filter(held=True, status__in=Task.PENDING).count())
        yield held
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
