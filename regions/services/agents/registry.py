"""Agent registry: registration (and its tokens), authentication, deregistration
and the operator's desired state (cordon, drain, revoke)."""
from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from project.accounts import registration
from project.accounts.tokens import token_generate, token_hash
from project.exceptions import Refused
from regions.models import Agent, RegistrationToken
from regions.services import liveness
from regions.services.config.current import config_current, version_tuple
from regions.services.handlers import handlers_declare
from regions.services.heartbeat_buffer import get_buffer
from regions.services.tasks.requeue import tasks_requeue_for_agents
from wire.endpoints import AGENT_TOKEN_HEADER
from wire.protocol import agent_queue, capability_queue

logger = logging.getLogger("regions.services.agents")  # the agents' log stream, whichever module writes


class AuthError(Refused):
    """Credential missing or wrong."""

    status, code = 401, "authentication_failed"


class ForbiddenError(Refused):
    """A valid credential used for someone else."""

    status, code = 403, "permission_denied"


class NotFound(Refused):
    status, code = 404, "not_found"


class AgentIdInUse(Refused):
    """Re-registering an online agent's id without proving to be that agent."""

    status, code = 409, "agent_id_in_use"


@dataclass(frozen=True)
class Registration:
    agent: Agent
    token: str
    report_key: str


def report_key_for(*, agent_id: str, token_digest: str) -> str:
    """The key an agent signs its task reports with; derived, never stored."""
    msg = f"report:{agent_id}:{token_digest}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), msg, hashlib.sha256).hexdigest()


def registration_token_check(raw: str | None) -> RegistrationToken | None:
    """The registration token `raw` names, if it may still be used: the row, or
    None for the bootstrap token of the settings (AGENT_REGISTRATION_TOKEN, no
    row and no bounds). Unknown or revoked: AuthError; expired: TokenExpired.
    Whether a use is left is decided when one is spent (agent_register): an
    agent re-registering with its own credential spends none."""
    if not raw:
        raise AuthError("A valid registration token is required (Authorization: Bearer …).")
    if settings.AGENT_REGISTRATION_TOKEN and hmac.compare_digest(raw, settings.AGENT_REGISTRATION_TOKEN):
        return None
    tok = RegistrationToken.objects.filter(token_hash=token_hash(raw), revoked_at__isnull=True).first()
    if tok is None:
        raise AuthError("A valid registration token is required (Authorization: Bearer …).")
    registration.token_expiry_check(tok)
    return tok


def registration_token_valid(raw: str | None) -> bool:
    try:
        registration_token_check(raw)
    except Refused:
        return False
    return True


def registration_token_create(*, name: str, raw: str | None = None, max_uses: int | None = None,
                              expires_at: datetime | None = None) -> tuple[RegistrationToken, str]:
    """raw: a value chosen by the caller (the same token the router knows), else a
    new one. max_uses, expires_at: None is unlimited, never."""
    raw = raw or token_generate("mrt")
    tok = RegistrationToken.objects.create(name=name, prefix=raw[:10], token_hash=token_hash(raw),
                                           max_uses=max_uses, expires_at=expires_at)
    return tok, raw


def agent_register(
    *, agent_id: str, capabilities: list[str], version: str = "", hostname: str = "",
    kind: str = "celery", concurrency: int = 1, handlers: dict[str, dict] | None = None,
    current_token: str | None = None, registration_token: RegistrationToken | None = None,
) -> Registration:
    """Create or re-register an agent and issue it a fresh credential.

    Re-registering the same id rotates its token: a stale process still holding
    the old one gets 401 on its next heartbeat and stops. While the agent is
    online, only that agent may do so: current_token (sent as X-Agent-Token)
    must be its current token, or AgentIdInUse is raised. An id whose agent is
    offline or stopped may be taken over with the registration token alone. (An
    agent restarting after kill -9, its entry still online, sends the token it
    saved.)

    registration_token: the token presented (None for the router's grant or the
    bootstrap token of the settings): rate-limited per token, and one of its uses
    is spent unless the agent proves it already holds its credential.
    """
    config = config_current()
    if config.agent_blocked(agent_id):
        raise ForbiddenError(f"Agent {agent_id} is blocklisted by configuration {config.sha[:12]}.")
    floor = config.min_agent_version
    if floor and version_tuple(version or "0") < version_tuple(floor):
        raise ForbiddenError(f"Agent version {version or 'unknown'} is below the minimum {floor} required by "
                             f"configuration {config.sha[:12]}; upgrade the agent.")
    if registration_token is not None:
        # Before anything is written; a registration refused above spends none of the rate.
        registration.rate_check(key=liveness.key(f"regrate:{registration_token.pk}"),
                                per_minute=settings.REGISTRATION_RATE_PER_TOKEN)
    raw = token_generate("mat")
    digest = token_hash(raw)
    now = timezone.now()
    with transaction.atomic():
        agent, created = Agent.objects.select_for_update().get_or_create(
            agent_id=agent_id, defaults={"token_hash": digest}
        )
        if not created and agent.status == Agent.Status.ONLINE and agent.token_hash and not (
                current_token and hmac.compare_digest(agent.token_hash, token_hash(current_token))):
            raise AgentIdInUse(
                f"Agent id {agent_id} is registered to an agent that is online; re-registering it needs that "
                f"agent's current token in the {AGENT_TOKEN_HEADER} header, or wait until it is offline "
                "(it missed its heartbeat TTL) or deregistered.")
        if not created:
            # A restart under the same id: whatever the old process ran is gone
            # (its reports, signed with the old token, no longer verify).
            transaction.on_commit(lambda: tasks_requeue_for_agents(
                agent_ids=[agent_id], reason="agent re-registered (restarted)"))
        if agent.desired == Agent.Desired.STOPPED:
            raise ForbiddenError(f"Agent {agent_id} is revoked; an operator must re-admit it.")
        holds_credential = not created and bool(agent.token_hash) and bool(current_token) and hmac.compare_digest(
            agent.token_hash, token_hash(current_token))
        if registration_token is not None and not holds_credential:
            # In this transaction: a registration that fails below gives its use back.
            registration.token_use(registration_token)
        # A drained agent that is started again comes back active; a cordon stays.
        desired = Agent.Desired.ACTIVE if agent.desired == Agent.Desired.DRAINING else agent.desired
        agent.capabilities = sorted(set(capabilities))
        agent.version, agent.hostname, agent.kind = version, hostname, kind
        agent.concurrency = concurrency
        agent.token_hash = digest
        agent.status = Agent.Status.ONLINE
        agent.desired = desired
        agent.busy = False
        agent.last_seen = now
        agent.offline_since = None
        agent.save()
        if handlers:
            handlers_declare(agent_id=agent_id, declarations=handlers)
        # Redis before the commit: when the liveness store is down the RedisError rolls
        # the row back, so no agent is left online with a token nobody was given.
        # (A commit failing after this leaves Redis a digest of a token nobody holds
        # and a live entry the reaper evicts: harmless.) rotated=True numbers the
        # token change, so every web process drops the old token (heartbeat_buffer).
        liveness.agent_cache(agent_id=agent_id, token_digest=digest, desired=desired, seen_at=now.timestamp(),
                             rotated=True)
        # Again once committed: a web process that read the old digest from the
        # database between the first mark and the commit drops it too.
        transaction.on_commit(lambda: _rotation_mark_committed(agent_id))
    _forget_locally(agent_id)
    logger.info("agent %s registered (%s)", agent_id, ", ".join(agent.capabilities), extra={"agent": agent_id})
    return Registration(agent=agent, token=raw, report_key=report_key_for(agent_id=agent_id, token_digest=digest))


def _rotation_mark_committed(agent_id: str) -> None:
    try:
        liveness.rotation_mark(agent_ids=[agent_id])
    except liveness.RedisError as exc:  # the mark made before the commit stands
        logger.warning("could not mark the token change of %s after commit: %s", agent_id, exc)


def agent_queues(agent: Agent) -> list[str]:
    return [capability_queue(c) for c in agent.capabilities] + [agent_queue(agent.agent_id)]


def agent_authenticate(*, agent_id: str, raw_token: str | None) -> Agent:
    """Database path: for the rare calls (deregistration) and cache misses of the heartbeat and task paths."""
    if not raw_token:
        raise AuthError("Missing agent token.")
    digest = token_hash(raw_token)
    agent = Agent.objects.filter(agent_id=agent_id).first()
    if agent is not None and agent.token_hash and hmac.compare_digest(agent.token_hash, digest):
        return agent
    other = Agent.objects.filter(token_hash=digest).values_list("agent_id", flat=True).first()
    if other is not None:
        raise ForbiddenError(f"This token belongs to agent {other}; it cannot act as {agent_id}.")
    if agent is None:
        raise NotFound(f"No agent {agent_id} in region {settings.REGION_ID}.")
    raise AuthError("Invalid agent token.")


def agent_deregister(*, agent_id: str) -> None:
    """Clean exit after a warm shutdown (a draining agent is done draining)."""
    Agent.objects.filter(agent_id=agent_id).update(
        status=Agent.Status.STOPPED, busy=False, offline_since=timezone.now(),
        desired=Case(When(desired=Agent.Desired.DRAINING, then=Value(Agent.Desired.ACTIVE)), default=F("desired")),
    )
    liveness.agent_forget(agent_id=agent_id)
    logger.info("agent %s deregistered", agent_id, extra={"agent": agent_id})


def agent_set_desired(*, agent_id: str, desired: str) -> Agent:
    agent = Agent.objects.filter(agent_id=agent_id).first()
    if agent is None:
        raise NotFound(f"No agent {agent_id} in region {settings.REGION_ID}.")
    agent.desired = desired
    fields = ["desired"]
    if desired == Agent.Desired.STOPPED:
        # Revoked: the credential goes too, so its heartbeats get 401 (the agent
        # stops) and its reports no longer verify.
        agent.token_hash = ""
        fields.append("token_hash")
    agent.save(update_fields=fields)
    if desired == Agent.Desired.STOPPED:
        liveness.agent_forget(agent_id=agent_id)  # marks the token change for every web process
        transaction.on_commit(lambda: _rotation_mark_committed(agent_id))  # when in a transaction
    liveness.agent_desired_set(agent_id=agent_id, desired=desired)
    _forget_locally(agent_id)
    logger.warning("agent %s %s by an operator", agent_id, "revoked" if desired == Agent.Desired.STOPPED else
                   f"set to {desired}", extra={"agent": agent_id})
    return agent


def _forget_locally(agent_id: str) -> None:
    buffer = get_buffer()
    if buffer is not None:
        buffer.forget(agent_id)
