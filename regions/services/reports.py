"""Task outcomes from agents: over HTTP with the agent's token (report_apply),
or, when the region's web is unreachable, over the broker (report_ingest).

Each broker report is signed with the agent's report key (derived from its current
token), so one agent cannot report for another, and a token rotated since is
refused. Reports are idempotent: they go through the fenced task updates.
"""
from __future__ import annotations

import hmac
import logging
import re

from project.jsonsafe import json_problem
from project.validation import AGENT_ID_RE
from regions.models import Agent
from regions.services.agents.registry import report_key_for
from regions.services.tasks.outcome import task_fail, task_succeed
from wire import deadletter
from wire.protocol import OUTCOME_KINDS, REPORT_TASK, REPORTS_QUEUE, MessageInvalid, attempt_parse
from wire.signing import report_signature

logger = logging.getLogger(__name__)

__all__ = ["OutcomeInvalid", "outcome_clean", "report_apply", "report_ingest", "report_ingest_message"]


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
    problem = json_problem(body, root="body")
    if problem:
        raise OutcomeInvalid(problem)
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


def report_ingest_message(*, args: tuple, kwargs: dict, message_id: str = "") -> bool:
    """A message from the reports queue, whatever it holds: a signed report of
    one of this region's agents is applied; anything else is a dead letter."""
    try:
        if args:
            raise MessageInvalid("positional arguments")
        fields = {name: kwargs.get(name) for name in ("agent_id", "kind", "task_id", "attempt", "body", "sig")}
        if not isinstance(fields["agent_id"], str) or not re.match(AGENT_ID_RE, fields["agent_id"]):
            raise MessageInvalid("agent_id must be an agent's id")
        if fields["kind"] not in OUTCOME_KINDS:
            raise MessageInvalid(f"kind must be one of {', '.join(OUTCOME_KINDS)}")
        attempt_parse(fields["task_id"], fields["attempt"])
        if not isinstance(fields["body"], dict):
            raise MessageInvalid("body must be an object")
        if not isinstance(fields["sig"], str) or len(fields["sig"]) != 64:
            raise MessageInvalid("sig must be a report signature")
    except MessageInvalid as exc:
        _dead(reason=f"not a report: {exc}", task_id=str(kwargs.get("task_id", message_id))[:64],
              body=repr(kwargs)[:2000])
        return False
    return report_ingest(**fields)


def _dead(*, reason: str, task_id: str, body) -> None:
    deadletter.record(queue=REPORTS_QUEUE, reason=reason, task_name=REPORT_TASK, task_id=task_id, body=body)


def report_ingest(*, agent_id: str, kind: str, task_id: str, attempt: int, body: dict, sig: str) -> bool:
    identity = _agent_identity(agent_id)
    if identity is None:
        _dead(reason=f"report from unknown or revoked agent {agent_id}", task_id=task_id, body=body)
        return False
    digest, capabilities = identity
    key = report_key_for(agent_id=agent_id, token_digest=digest)
    expected = report_signature(key=key, kind=kind, task_id=task_id, attempt=attempt, body=body)
    if not hmac.compare_digest(expected, sig):
        # Forged, or signed with a credential rotated since: the task is not
        # touched (a forger must not be able to fail it).
        _dead(reason=f"report signature does not verify for agent {agent_id}", task_id=task_id, body=body)
        return False
    try:
        body = outcome_clean(kind=kind, body=body)
    except OutcomeInvalid as exc:
        _dead(reason=f"report from {agent_id} refused: {exc}", task_id=task_id, body=body)
        return False
    return report_apply(agent_id=agent_id, capabilities=capabilities, kind=kind, task_id=task_id,
                        attempt=attempt, body=body)


def report_apply(*, agent_id: str, capabilities: list[str], kind: str, task_id: str, attempt: int,
                 body: dict) -> bool:
    """An authenticated agent's outcome for one attempt, cleaned by outcome_clean
    (fenced: a superseded or repeated report changes nothing and returns False)."""
    if kind == "success":
        return task_succeed(task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities,
                            result=body.get("result"), started_at=_float(body.get("started_at")))
    return task_fail(
        task_id=task_id, attempt=attempt, agent_id=agent_id, capabilities=capabilities,
        started_at=_float(body.get("started_at")),
        error=str(body.get("error", ""))[:10_000], retryable=bool(body.get("retryable", True)),
    )


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
