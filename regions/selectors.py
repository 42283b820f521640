"""Reads of the region's state."""
from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from regions.models import Agent, Task
from regions.services import liveness


def task_list(*, user, status: str | None = None, capability: str | None = None) -> QuerySet[Task]:
    qs = Task.objects.all()
    if not user.is_staff:
        qs = qs.filter(submitted_by=user)
    if status:
        qs = qs.filter(status=status)
    if capability:
        qs = qs.filter(capability=capability)
    return qs


def task_get(*, user, task_id) -> Task | None:
    return task_list(user=user).filter(id=task_id).first()


def agent_list(*, status: str | None = None, capability: str | None = None) -> QuerySet[Agent]:
    qs = Agent.objects.all()
    if status:
        qs = qs.filter(status=status)
    if capability:
        qs = qs.filter(capabilities__contains=[capability]) if _json_contains() else qs
    return qs


def _json_contains() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def agent_live_view(agent: Agent) -> dict:
    """The database row overlaid with Redis's exact liveness, when Redis answers."""
    try:
        seen, busy = liveness.agent_last_seen(agent_id=agent.agent_id)
    except liveness.RedisError:
        return {"live_last_seen": None, "live_busy": None, "liveness": "unavailable"}
    return {"live_last_seen": seen, "live_busy": busy, "liveness": "ok"}


def region_status() -> dict:
    agents = Agent.objects.aggregate(
        online=Count("id", filter=Q(status=Agent.Status.ONLINE)),
        offline=Count("id", filter=Q(status=Agent.Status.OFFLINE)),
        busy=Count("id", filter=Q(status=Agent.Status.ONLINE, busy=True)),
    )
    tasks = dict(Task.objects.filter(status__in=Task.ACTIVE).values_list("status").annotate(n=Count("id")))
    status = {
        "region_id": settings.REGION_ID,
        "regional_orchestrator_url": settings.REGION_URL,
        "agents": agents,
        "tasks_active": tasks,
        "heartbeat_interval": settings.HEARTBEAT_INTERVAL,
        "heartbeat_ttl": settings.HEARTBEAT_TTL,
    }
    try:
        status["liveness"] = {"ok": True, "live_agents": liveness.live_count(), "eviction_hold": liveness.hold_get()}
    except liveness.RedisError as exc:
        status["liveness"] = {"ok": False, "error": f"liveness store unavailable: {exc}"}
    return status
