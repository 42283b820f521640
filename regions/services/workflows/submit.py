"""Accepting a workflow: every step checked as its own submission would be
(size, the capability allowed in this region, its payload schema), the caller's
quotas for the first step's tasks, then the workflow, all its steps'
definitions and the first step's tasks stored in one transaction (their
messages sent after the commit, as a submission's)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from regions.models import Task, Workflow, WorkflowStep
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current
from regions.services.tasks.dispatch import send_or_release
from regions.services.tasks.quotas import quota_admit
from regions.services.tasks.refusals import IdempotencyConflict
from regions.services.tasks.submit import _admitted, rate_check
from regions.services.workflows.advance import step_tasks

logger = logging.getLogger("regions.services.workflows")

MAX_STEPS = 50
MAX_GROUP = 100


@dataclass(frozen=True)
class WorkflowSubmission:
    workflow: Workflow
    created: bool


def workflow_submit(*, submitted_by, steps: list[dict], idempotency_key: str | None = None) -> WorkflowSubmission:
    """steps: each a task ({"capability", "payload", "priority", "timeout",
    "max_attempts"}) or a group ({"group": [task, ...]}), validated in shape by
    the API. Refused (as a submission is) if any step would be."""
    digest = workflow_digest(steps) if idempotency_key else ""
    if idempotency_key:
        existing = Workflow.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replayed(existing, idempotency_key=idempotency_key, digest=digest)
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    rows: list[WorkflowStep] = []
    for index, step in enumerate(steps):
        members = step["group"] if "group" in step else [step]
        for member, item in enumerate(members):
            # Residency: every step runs here, so every step must be allowed here.
            definition = _admitted(config, capability=item["capability"], payload=item.get("payload", {}))
            rows.append(WorkflowStep(
                index=index, member=member, in_group="group" in step, capability=item["capability"],
                payload=item.get("payload", {}), priority=item.get("priority", 5),
                timeout=item.get("timeout") or definition.get("timeout") or settings.TASK_DEFAULT_TIMEOUT,
                max_attempts=(item.get("max_attempts") or definition.get("max_attempts")
                              or settings.TASK_DEFAULT_MAX_ATTEMPTS)))
    first = [row for row in rows if row.index == 0]
    # Every step's task is reserved now: its later steps start without asking.
    admitted, refusal = quota_admit(config, caller=submitted_by, count=len(rows), submitted_now=len(first))
    if admitted < len(rows):
        raise refusal
    for capability in dict.fromkeys(row.capability for row in first):
        rate_check(capability, config.task_definition(capability), submitted_by)
    workflow = Workflow(submitted_by=submitted_by, idempotency_key=idempotency_key or None, request_digest=digest)
    try:
        with transaction.atomic():
            workflow.save(force_insert=True)
            for row in rows:
                row.workflow = workflow
            WorkflowStep.objects.bulk_create(rows)
            tasks = step_tasks(workflow, first, None)
            Task.objects.bulk_create(tasks)
            sent = [task for task in tasks if not task.held]
            transaction.on_commit(lambda: [send_or_release(task, dispatched_at=task.dispatched_at) for task in sent])
    except IntegrityError:
        existing = Workflow.objects.filter(submitted_by=submitted_by, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replayed(existing, idempotency_key=idempotency_key, digest=digest)
    logger.info("workflow %s submitted (%d steps, %d tasks)", workflow.id, len(steps), len(rows))
    return WorkflowSubmission(workflow=workflow, created=True)


def workflow_digest(steps: list[dict]) -> str:
    canonical = json.dumps(steps, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(existing: Workflow, *, idempotency_key: str, digest: str) -> WorkflowSubmission:
    if existing.request_digest != digest:
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was already used for a different workflow ({existing.id}); "
            "use a new key for a new workflow")
    return WorkflowSubmission(workflow=existing, created=False)
