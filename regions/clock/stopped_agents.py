"""The running tasks of agents that deregistered a while ago are requeued."""
from __future__ import annotations

from datetime import timedelta

from regions.models import Agent, Task
from regions.services.tasks.requeue import tasks_requeue_for_agents


DEREGISTER_GRACE_SECONDS = 10


def requeue_tasks_of_stopped_agents(*, now) -> int:
    """Running tasks of agents that deregistered a while ago: their last reports
    had time to arrive, so what is still running was lost with the agent."""
    stopped = Agent.objects.filter(status=Agent.Status.STOPPED,
                                   offline_since__lt=now - timedelta(seconds=DEREGISTER_GRACE_SECONDS),
                                   agent_id__in=Task.objects.filter(status=Task.Status.RUNNING).values("agent"))
    agent_ids = list(stopped.values_list("agent_id", flat=True)[:500])
    if not agent_ids:
        return 0
    return tasks_requeue_for_agents(agent_ids=agent_ids, reason="agent stopped while running it")
