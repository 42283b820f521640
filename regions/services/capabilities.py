"""Which capabilities the region's online agents serve now: the reads task
submission and the sweeper make. Below both services/agents/ (which
changes agents) and services/tasks/ (which asks before it queues)."""
from __future__ import annotations

from project.dbbackends import is_postgresql
from regions.models import Agent, CapabilityCounter


def live_capabilities(*, idle_only: bool = False) -> set[str]:
    """Capabilities served by at least one online agent that takes work (and, with
    idle_only, is not busy). Read from the counters PostgreSQL keeps in the same
    transaction as every change to an agent (models.CapabilityCounter): one
    small query over the capabilities, not the agents, and never stale."""
    if is_postgresql():
        counters = CapabilityCounter.objects.exclude(capability=CapabilityCounter.FLEET)
        counters = counters.filter(idle__gt=0) if idle_only else counters.filter(agents__gt=0)
        return set(counters.values_list("capability", flat=True))
    return live_capabilities_scan(idle_only=idle_only)


def capability_live(capability: str) -> bool:
    """Whether an online agent that takes work serves `capability`: the submit
    path's question, one primary-key read of its counter on PostgreSQL."""
    from django.db import connection

    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT agents > 0 FROM regions_capabilitycounter WHERE capability = %s", [capability])
            row = cursor.fetchone()
        return bool(row and row[0])
    return capability in live_capabilities_scan()


def live_capabilities_scan(*, idle_only: bool = False) -> set[str]:
    """The same answer from a scan of the online agents (SQLite; tests compare the two)."""
    caps: set[str] = set()
    agents = Agent.objects.filter(status=Agent.Status.ONLINE, desired=Agent.Desired.ACTIVE)
    if idle_only:
        agents = agents.filter(busy=False)
    rows = agents.values_list("capabilities", flat=True).distinct()
    for row in rows:
        caps.update(row)
    return caps
