"""Who is calling on the task path: an agent's claims and reports, two requests
per task, answered without a database read when this web process verified the
same token recently.

The token check is the heartbeat path's (heartbeat_buffer): a digest this process
verified against the database is trusted while the region's revocation sequence
says the agent's token has not changed since, so a replaced or revoked token is
refused within REVOCATION_BOUND_SECONDS here as well. The agent's capabilities are
kept next to the digest: they change only when the agent registers again, which
always issues a new token. Without the buffer, or while Redis cannot be asked,
every call reads the database (a claim must not depend on the liveness store).
"""
from __future__ import annotations

from dataclasses import dataclass

from project.accounts.authentication import Principal
from project.accounts.tokens import token_hash
from regions.services import liveness
from regions.services.agents.registry import AuthError, agent_authenticate
from regions.services.heartbeat_buffer import get_buffer

MAX_CACHED = 200_000
# agent id -> (token digest, capabilities), per process
_verified: dict[str, tuple[str, tuple[str, ...]]] = {}


@dataclass(frozen=True)
class AgentCaller(Principal):
    agent_id: str
    capabilities: list[str]


def agent_caller(*, agent_id: str, raw_token: str | None) -> AgentCaller:
    """The authenticated agent, or AuthError (401), ForbiddenError (403), NotFound (404)."""
    if not raw_token:
        raise AuthError("Missing agent token.")
    digest = token_hash(raw_token)
    buffer = get_buffer()
    seq = None
    if buffer is not None:
        try:
            known = buffer.digest_for(agent_id)
            seq = buffer.seq
        except liveness.RedisError:
            known = None
        cached = _verified.get(agent_id)
        if known == digest and cached is not None and cached[0] == digest:
            return AgentCaller(agent_id=agent_id, capabilities=list(cached[1]))
    agent = agent_authenticate(agent_id=agent_id, raw_token=raw_token)
    if buffer is not None:
        buffer.remember(agent_id, digest, seq)
    if len(_verified) >= MAX_CACHED:
        _verified.clear()
    _verified[agent_id] = (digest, tuple(agent.capabilities))
    return AgentCaller(agent_id=agent.agent_id, capabilities=list(agent.capabilities))
