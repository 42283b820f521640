"""Task outcomes from agents: over HTTP with the agent's token (report_apply),
or, when the region's web is unreachable, over the broker (report_ingest).

Each broker report is signed with the agent's report key (derived from its current
token), so one agent cannot report for another, and a token rotated since is
refused. Reports are idempotent: they go through the fenced task updates.
"""
from __future__ import annotations

import hmac
import logging

from project.protocol import OUTCOME_KINDS, REPORT_KINDS, report_signature
from regions.models import Agent
from regions.services import tasks
from regions.services.agents import report_key_for

logger = logging.getLogger(__name__)

__all__ = ["report_apply", "report_ingest", "report_signature"]


def _agent_identity(agent_id: str) -> tuple[str, list[str]] | None:
    """(token digest, capabilities) from the database: the source of truth."""
    row = Agent.objects.filter(agent_id=agent_id).values_list("token_hash", "capabilities").first()
    return row if row and row[0] else None


def report_ingest(*, agent_id: str, kind: str, task_id: str, attempt: int, body: dict, sig: str) -> bool:
    if kind not in REPORT_KINDS:
        logger.warning("report of unknown kind %r from %s dropped", kind, agent_id)
        return False
    identity = _agent_identity(agent_id)
    if identity is None:
        logger.warning("report from unknown or revoked agent %s dropped", agent_id)
        return False
    digest, capabilities = identity
    key = report_key_for(agent_id=agent_id, token_digest=digest)
    expected = report_signature(key=key, kind=kind, task_id=task_id, attempt=attempt, body=body)
    if not hmac.compare_digest(expected, sig):
        logger.warning("report for task %s with a bad signature (agent %s) dropped", task_id, agent_id)
        return False
    if kind == "claim":
        return tasks.task_claim(task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities).run
    return report_apply(agent_id=agent_id, capabilities=capabilities, kind=kind, task_id=task_id,
                        attempt=attempt, body=body)


def report_apply(*, agent_id: str, capabilities: list[str], kind: str, task_id: str, attempt: int,
                 body: dict) -> bool:
    """An authenticated agent's outcome for one attempt (fenced: a superseded or
    repeated report changes nothing and returns False)."""
    if kind not in OUTCOME_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OUTCOME_KINDS)}")
    if kind == "success":
        return tasks.task_succeed(task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities,
                                  result=body.get("result"), started_at=_float(body.get("started_at")))
    return tasks.task_fail(
        task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities,
        started_at=_float(body.get("started_at")),
        error=str(body.get("error", ""))[:10_000], retryable=bool(body.get("retryable", True)),
    )


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
