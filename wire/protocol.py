"""The agent <-> region contract over the broker: task and queue names, messages.

The region sends one message per task attempt (``EXECUTE_TASK`` on
``capability_queue(cap)`` or ``agent_queue(id)``) with the kwargs of
``execute_kwargs``. Over HTTP, with its own bearer token, the agent then
*claims* the attempt (``endpoints.CLAIM``): the region answers whether that
attempt is still the current one, and only then does a handler run. The
outcome goes back over HTTP (``endpoints.REPORT``); when the region's web is
unreachable the agent falls back to a signed report on ``REPORTS_QUEUE``
(``REPORT_TASK``), which the orchestrator's collector verifies with
``signing.report_signature``.
"""
from __future__ import annotations

import re

EXECUTE_TASK = "agents.execute"
REPORT_TASK = "regions.report"
CONTROL_QUEUE = "meridian.control"
REPORTS_QUEUE = "meridian.reports"
# What an agent reports over the broker: an attempt's outcome (claims go over HTTP).
OUTCOME_KINDS = ("success", "failure")


def capability_queue(capability: str) -> str:
    return f"meridian.cap.{capability}"


def agent_queue(agent_id: str) -> str:
    return f"meridian.agent.{agent_id}"


def agent_node_name(agent_id: str, host: str) -> str:
    """The agent's Celery node name (run_agent's worker hostname, what Flower
    shows): its remote-control queue on the broker is ``<node>.celery.pidbox``,
    consumed for as long as its process holds its broker connection."""
    return f"{agent_id}@{host}"


def agent_control_queue(node: str) -> str:
    """Celery's remote-control ("pidbox") queue of a worker node (kombu.pidbox.Mailbox,
    namespace "celery"): consumed on the worker's broker connection, deleted with
    its last consumer. The region reads its consumers to tell a dead agent from a
    frozen one (regions/services/agents/presence.py)."""
    return f"{node}.celery.pidbox"


def message_id(task_id, attempt: int) -> str:
    """One broker message per attempt: the id names both."""
    return f"{task_id}:{attempt}"


def execute_kwargs(*, task_id, attempt: int, capability: str, timeout: int) -> dict:
    # The message only points at the attempt. What to run (payload, secrets)
    # comes in the claim answer, for an attempt the agent has claimed: a queued
    # message carries no secret and no client data a worker has to decode.
    return {"task_id": str(task_id), "attempt": attempt, "capability": capability, "timeout": timeout}


class MessageInvalid(ValueError):
    """A message on a Meridian queue that cannot be ours (a dead letter)."""


_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


# The highest attempt number a message may carry (a region's TASK_ATTEMPTS_MAX stays below it).
MAX_ATTEMPT = 1000


def attempt_parse(task_id, attempt) -> tuple[str, int]:
    """The (task id, attempt) a message names, or MessageInvalid."""
    if not isinstance(task_id, str) or not _UUID_RE.match(task_id):
        raise MessageInvalid("task_id must be a task's UUID")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= MAX_ATTEMPT:
        raise MessageInvalid(f"attempt must be an integer from 1 to {MAX_ATTEMPT}")
    return task_id, attempt


# The hard time limit leaves an attempt this long after its soft limit (the
# task's timeout) to report its outcome; the region presumes an attempt lost
# only after that, plus a grace. A region may set another (settings.REPORT_ALLOWANCE_SECONDS).
REPORT_ALLOWANCE_SECONDS = 60


def hard_time_limit(timeout: int, allowance: int = REPORT_ALLOWANCE_SECONDS) -> int:
    return timeout + allowance
