"""The liveness flush: Redis's heartbeats copied into the database in bulk."""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timezone as dt_timezone

from django.db import transaction

from regions.models import Agent
from regions.services import liveness

logger = logging.getLogger("regions.services.agents")  # the agents' log stream, whichever module writes


def liveness_flush() -> int:
    """Copy Redis liveness into the database in bulk: a few UPDATEs, not one per agent.

    last_seen is written to the second; agents seen again after being marked
    offline are welcomed back as online.
    """
    seen, busy = liveness.live_snapshot()
    if not seen:
        return 0
    by_second: dict[int, list[str]] = defaultdict(list)
    for agent_id, ts in seen.items():
        by_second[int(ts)].append(agent_id)
    ids = list(seen)
    with transaction.atomic():
        for second, agent_ids in by_second.items():
            when = datetime.fromtimestamp(second, tz=dt_timezone.utc)
            Agent.objects.filter(agent_id__in=agent_ids).update(last_seen=when)
        busy_ids = [a for a in ids if busy.get(a, 0) > 0]
        Agent.objects.filter(agent_id__in=busy_ids, busy=False).update(busy=True)
        Agent.objects.filter(agent_id__in=ids, busy=True).exclude(agent_id__in=busy_ids).update(busy=False)
        # Welcome back only agents that beat after they were marked offline: a beat
        # buffered before the eviction and flushed after it must not revive a dead agent.
        returned = [
            agent_id for agent_id, since in Agent.objects.filter(agent_id__in=ids, status=Agent.Status.OFFLINE)
            .values_list("agent_id", "offline_since")
            if since is None or seen[agent_id] > since.timestamp()
        ]
        back = Agent.objects.filter(agent_id__in=returned, status=Agent.Status.OFFLINE).update(
            status=Agent.Status.ONLINE, offline_since=None
        )
    if back:
        logger.info("%d agents back online", back)
    return len(ids)
