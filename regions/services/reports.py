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

__all__ = ["OutcomeInvalid", "outcome_clean", "report_apply", "report_ingest", "report_signature"]


def _agent_identity(agent_id: str) -> tuple[str, list[str]] | None:
    """(token digest, capabilities) from the database: the source of truth."""
    row = Agent.objects.filter(agent_id=agent_id).values_list("token_hash", "capabilities").first()
    return row if row and row[0] else None


class OutcomeInvalid(ValueError):
    """A report body that cannot be an agent's honest outcome (400)."""


LATEST_TIMESTAMP = 4102444800.0  # 2100-01-01: a start time beyond it is garbage


def outcome_clean(*, kind: str, body) -> dict:
    """The outcome body, checked field by field, so no report can raise deep in
    the task services: bounded started_at, records shaped as the ingestion
    handler makes them, an error string, a retryable flag."""
    if kind not in OUTCOME_KINDS:
        raise OutcomeInvalid(f"kind must be one of {', '.join(OUTCOME_KINDS)}")
    if not isinstance(body, dict):
        raise OutcomeInvalid("body must be a JSON object")
    clean: dict = {}
    started = body.get("started_at")
    if started is not None:
        if not isinstance(started, (int, float)) or isinstance(started, bool) or not 0 <= started <= LATEST_TIMESTAMP:
            raise OutcomeInvalid("body.started_at must be a Unix time in seconds")
        clean["started_at"] = float(started)
    if kind == "success":
        result = body.get("result")
        if result is not None and not isinstance(result, dict):
            raise OutcomeInvalid("body.result must be a JSON object")
        records = (result or {}).get("records")
        if records is not None and not (isinstance(records, list) and all(
                isinstance(r, dict) and isinstance(r.get("line"), int) and not isinstance(r.get("line"), bool)
                and r["line"] >= 0 and isinstance(r.get("data"), dict) for r in records)):
            raise OutcomeInvalid("body.result.records must be a list of {\"line\": int, \"data\": object}")
        clean["result"] = result
    else:
        clean["error"] = str(body.get("error", ""))[:10_000]
        clean["retryable"] = bool(body.get("retryable", True))
    return clean


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
    try:
        body = outcome_clean(kind=kind, body=body)
    except OutcomeInvalid as exc:
        logger.warning("report for task %s from %s dropped: %s", task_id, agent_id, exc)
        return False
    return report_apply(agent_id=agent_id, capabilities=capabilities, kind=kind, task_id=task_id,
                        attempt=attempt, body=body)


def report_apply(*, agent_id: str, capabilities: list[str], kind: str, task_id: str, attempt: int,
                 body: dict) -> bool:
    """An authenticated agent's outcome for one attempt, cleaned by outcome_clean
    (fenced: a superseded or repeated report changes nothing and returns False)."""
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
