"""The audit trail: every state change a person or a key makes (fleet actions,
task cancel and retry, tokens created, rotated or revoked, regions changed at the
router, configuration applied or rejected) is one AuditEvent row and one line on
the `meridian.audit` log stream (JSON with LOG_FORMAT=json), refusals included.

    with audited(request, "agent.drain", target=agent_id):
        agent_set_desired(...)

records `done`; when the block raises, `refused` with the reason (an answer in
the 4xx) or `failed` (anything else: the database or Redis away); the exception
goes on."""
from __future__ import annotations

import contextlib
import getpass
import logging

from project.accounts.models import ApiKey, AuditEvent

logger = logging.getLogger("meridian.audit")

DONE, REFUSED, FAILED = "done", "refused", "failed"


def actor_of(request) -> str:
    """Who made a request: its API key (and the key's user), or the signed-in person."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return f"key {auth.prefix}… of {auth.user.username}"
    user = getattr(request, "user", None)
    if getattr(user, "is_authenticated", False) and getattr(user, "username", ""):
        return f"user {user.username}"
    return "anonymous"


def command_actor(command: str) -> str:
    """An operator's management command, named with the OS user that ran it."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"command {command} by {who}"


def audit_record(*, action: str, target: str = "", request=None, actor: str | None = None, outcome: str = DONE,
                 detail: str = "") -> AuditEvent:
    event = AuditEvent.objects.create(
        actor=(actor or actor_of(request))[:200], action=action, target=str(target)[:200],
        address=(request.META.get("REMOTE_ADDR") or None) if request is not None else None,
        outcome=outcome, detail=detail[:4000])
    logger.info("%s %s %s: %s%s", event.actor, action, event.target or "-", outcome, f" ({detail})" if detail else "",
                extra={"audit_actor": event.actor, "audit_action": action, "audit_target": event.target,
                       "audit_outcome": outcome, "audit_address": event.address})
    return event


@contextlib.contextmanager
def audited(request, action: str, *, target: str = "", actor: str | None = None, detail: str = "",
            refusals: bool = True):
    """Record the block's outcome: done when it returns, refused or failed (with
    the exception's text) when it raises; the exception goes on. refusals=False
    records only what changed something (a caller refused on its own tasks, in a
    loop, must not fill the trail)."""
    try:
        yield
    except Exception as exc:
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None) or 500
        if refusals or status >= 500:
            audit_record(action=action, target=target, request=request, actor=actor,
                         outcome=REFUSED if status < 500 else FAILED, detail=str(getattr(exc, "detail", "") or exc))
        raise
    audit_record(action=action, target=target, request=request, actor=actor, detail=detail)


def audit_prune(*, now, batch: int = 10_000) -> int:
    """Delete audit rows older than AUDIT_RETENTION_DAYS (0 keeps them all), a
    batch at a time so a long backlog never holds one long transaction. The
    region's beat runs it daily; the router's operators run `manage.py
    audit_prune` from their scheduler (the router has no beat)."""
    from datetime import timedelta

    from django.conf import settings

    if settings.AUDIT_RETENTION_DAYS <= 0:
        return 0
    cutoff = now - timedelta(days=settings.AUDIT_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(AuditEvent.objects.filter(at__lt=cutoff).order_by("at").values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += AuditEvent.objects.filter(id__in=ids).delete()[0]
