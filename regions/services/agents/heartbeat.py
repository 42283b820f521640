"""The heartbeat, the hot path: an agent's beat recorded in Redis (batched by the
process's heartbeat buffer), answered with the interval and TTL for the fleet's size."""
from __future__ import annotations

import time

from project.accounts.tokens import token_hash
from regions.models import Agent
from regions.services import liveness
from regions.services.agents.registry import AuthError, agent_authenticate
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current
from regions.services.heartbeat_buffer import get_buffer


def heartbeat_record(*, agent_id: str, raw_token: str | None, busy: int) -> dict:
    """The hot path. Batched: no I/O when this process has verified the token
    recently. Write-through (HEARTBEAT_FLUSH_SECONDS=0): one Redis round trip.
    The database is read only on a cache miss."""
    if not raw_token:
        raise AuthError("Missing agent token.")
    digest = token_hash(raw_token)
    now = liveness.now()
    buffer = get_buffer()
    if buffer is None:
        desired = _heartbeat_write_through(agent_id=agent_id, raw_token=raw_token, digest=digest, busy=busy, now=now)
    else:
        if buffer.digest_for(agent_id) != digest:
            seq = buffer.seq  # before the database read: a change after it drops this digest
            _token_verify(agent_id=agent_id, raw_token=raw_token, digest=digest)
            buffer.remember(agent_id, digest, seq)
        if not buffer.healthy():
            raise liveness.RedisError(buffer.last_error or "liveness store unavailable")
        desired = buffer.record(agent_id, now, busy)
    config = config_current(max_age=HOT_PATH_CHECK_SECONDS)
    if config.agent_blocked(agent_id):
        desired = Agent.Desired.STOPPED
    timing = config.heartbeat_timing(fleet_size())
    return {"interval": timing.interval, "ttl": timing.ttl, "desired": desired}


FLEET_SIZE_MAX_AGE = 1.0
_fleet_seen: list = [float("-inf"), 0]  # [monotonic time read, count]


def fleet_size() -> int:
    """Agents beating (the live set's ZCARD), as the heartbeat path sizes the
    interval by: the count the process's buffer read at its last flush (no extra
    round trip), else read at most once every FLEET_SIZE_MAX_AGE seconds."""
    buffer = get_buffer()
    if buffer is not None and buffer.fleet is not None:
        return buffer.fleet
    now = time.monotonic()
    if now - _fleet_seen[0] > FLEET_SIZE_MAX_AGE:
        _fleet_seen[:] = [now, liveness.live_count()]
    return _fleet_seen[1]


def _heartbeat_write_through(*, agent_id: str, raw_token: str, digest: str, busy: int, now: float) -> str:
    code, desired = liveness.heartbeat_touch(agent_id=agent_id, token_digest=digest, busy=busy, now=now)
    if code != 1:
        _token_verify(agent_id=agent_id, raw_token=raw_token, digest=digest)
        code, desired = liveness.heartbeat_touch(agent_id=agent_id, token_digest=digest, busy=busy, now=now)
    return desired


def _token_verify(*, agent_id: str, raw_token: str, digest: str) -> None:
    """The database decides (once per agent and web process, then cached in the
    process): the Redis copy sits where agents' broker traffic goes and is only a
    cache for the write-through path. Raises AuthError (401), ForbiddenError
    (403) or NotFound (404)."""
    agent = agent_authenticate(agent_id=agent_id, raw_token=raw_token)
    liveness.agent_cache(agent_id=agent_id, token_digest=digest, desired=agent.desired, seen_at=None)
