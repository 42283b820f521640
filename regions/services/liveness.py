"""Liveness lives in Redis: a heartbeat is one script call, never a PostgreSQL write.

Keys (all under ``m:<region>:``):
  live     ZSET  agent_id -> unix time of its last heartbeat
  tok      HASH  agent_id -> SHA-256 of its token (cache of the database column)
  busy     HASH  agent_id -> number of tasks it is running
  desired  HASH  agent_id -> what the region wants of it (absent = active)
  epoch    STR   set when the keys were seeded from the database; its absence
                 means Redis lost its data (restart) and must be re-seeded
  hold     STR   JSON describing an eviction hold, while one is in force
  reaped   STR   unix time of the reaper's last successful tick: a gap longer
                 than a few ticks means Redis (or the reaper) was away
  router   STR   JSON {"kind", "status", "error", "at"}: the router's latest
                 refusal of the summary (or its being out of reach), expiring
                 after a few summary intervals; deleted by an accepted push
  configok STR   unix time of the latest sync that found the ref on the active
                 commit: a rejection older than it is no longer in force
  grace    STR   JSON {"until", "reason"}: nobody is evicted before `until`
  timing   STR   JSON {"interval", "ttl", "until"}: the largest heartbeat
                 timing handed out lately; the reaper holds agents to it
                 until `until` (clock.reaper.reaper_timing)
  config   STR   id of the active ConfigVersion, published on apply so every
                 process of the region sees a new configuration at once
  rotseq   STR   the region's revocation sequence: INCR'd each time a token is
                 replaced or withdrawn (a counter, never a clock: web hosts'
                 clocks may disagree)
  rotations ZSET agent_id -> the rotseq of its latest token change; web
                 processes drop their cached digest for it (heartbeat_buffer),
                 keeping the last ROTATION_KEEP changes. (The older `rotated`,
                 scored by wall-clock time, is no longer read.)
  rotinc   STR   a random id set by the first reader: a different value means
                 Redis lost its data and every cached digest is suspect
"""
from __future__ import annotations

import functools
import json
import time
import uuid

import redis
from django.conf import settings

RedisError = redis.RedisError

_HEARTBEAT = """
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return {-1, ''} end
if h ~= ARGV[2] then return {0, ''} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
local d = redis.call('HGET', KEYS[4], ARGV[1])
return {1, d or 'active'}
"""

# Remove only entries still older than the cutoff: a heartbeat that lands
# between the reaper's read and this call must keep its agent alive.
_EVICT = """
local out = {}
for i, a in ipairs(ARGV) do
  if i > 1 then
    local s = redis.call('ZSCORE', KEYS[1], a)
    if s and tonumber(s) <= tonumber(ARGV[1]) then
      redis.call('ZREM', KEYS[1], a)
      redis.call('HDEL', KEYS[2], a)
      table.insert(out, a)
    end
  end
end
return out
"""


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        decode_responses=True,
        health_check_interval=30,
    )


def key(name: str) -> str:
    return f"m:{settings.REGION_ID}:{name}"


@functools.cache
def _script(source: str):
    return client().register_script(source)


def heartbeat_touch(*, agent_id: str, token_digest: str, busy: int, now: float) -> tuple[int, str]:
    """(1, desired) when recorded; (0, '') wrong token; (-1, '') agent not cached."""
    code, desired = _script(_HEARTBEAT)(
        keys=[key("tok"), key("live"), key("busy"), key("desired")],
        args=[agent_id, token_digest, now, busy],
    )
    return int(code), desired


# A token change is one INCR and one ZADD, in one script: a reader that sees the
# counter at n has seen every change numbered up to n in `rotations`.
_ROTATE = """
local n = redis.call('INCR', KEYS[1])
for i, a in ipairs(ARGV) do
  if i > 1 then redis.call('ZADD', KEYS[2], n, a) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', n - tonumber(ARGV[1]))
return n
"""

# Token changes kept in `rotations`; a web process further behind than this trusts
# none of its cached digests (it reloads them from the database).
ROTATION_KEEP = 100_000


def agent_cache(*, agent_id: str, token_digest: str, desired: str, seen_at: float | None,
                rotated: bool = False) -> None:
    """One round trip. rotated: the agent's token was just replaced (see rotation_mark)."""
    pipe = client().pipeline()
    pipe.hset(key("tok"), agent_id, token_digest)
    if desired == "active":
        pipe.hdel(key("desired"), agent_id)
    else:
        pipe.hset(key("desired"), agent_id, desired)
    if seen_at is not None:
        pipe.zadd(key("live"), {agent_id: seen_at})
    if rotated:
        rotation_mark(agent_ids=[agent_id], pipe=pipe)
    pipe.execute()


def rotation_mark(*, agent_ids: list[str], pipe=None) -> int | None:
    """These agents' tokens were replaced or withdrawn: every web process drops
    its cached digest for them at its next sync (heartbeat_buffer). Returns the
    new revocation sequence number (None when queued on a pipeline)."""
    result = _script(_ROTATE)(keys=[key("rotseq"), key("rotations")], args=[ROTATION_KEEP, *agent_ids],
                              client=pipe or client())
    return None if pipe is not None else int(result)


def rotation_sync_queue(pipe, *, after: int | None) -> None:
    """Queue, on a pipeline, what a web process reads to learn of token changes
    since `after`: [set-if-absent, incarnation, sequence, [(agent, seq)]]. The
    sequence is read before the changes, so none numbered up to it is missed."""
    pipe.set(key("rotinc"), uuid.uuid4().hex, nx=True)
    pipe.get(key("rotinc"))
    pipe.get(key("rotseq"))
    pipe.zrangebyscore(key("rotations"), "-inf" if after is None else f"({after}", "+inf", withscores=True)


def agent_desired_set(*, agent_id: str, desired: str) -> None:
    if desired == "active":
        client().hdel(key("desired"), agent_id)
    else:
        client().hset(key("desired"), agent_id, desired)


def agent_forget(*, agent_id: str) -> None:
    pipe = client().pipeline()
    rotation_mark(agent_ids=[agent_id], pipe=pipe)
    for name in ("tok", "busy", "desired"):
        pipe.hdel(key(name), agent_id)
    pipe.zrem(key("live"), agent_id)
    pipe.execute()


def agent_last_seen(*, agent_id: str) -> tuple[float | None, int]:
    pipe = client().pipeline()
    pipe.zscore(key("live"), agent_id)
    pipe.hget(key("busy"), agent_id)
    score, busy = pipe.execute()
    return score, int(busy or 0)


def live_snapshot() -> tuple[dict[str, float], dict[str, int]]:
    """Every live agent's last heartbeat and busy count (for the bulk flush)."""
    pipe = client().pipeline()
    pipe.zrange(key("live"), 0, -1, withscores=True)
    pipe.hgetall(key("busy"))
    seen, busy = pipe.execute()
    return dict(seen), {a: int(n) for a, n in busy.items()}


def live_count() -> int:
    return client().zcard(key("live"))


def expired(*, cutoff: float, limit: int | None = None) -> list[str]:
    """Agents last heard at or before `cutoff`, oldest first (at most `limit`)."""
    if limit is None:
        return client().zrangebyscore(key("live"), "-inf", cutoff)
    return client().zrangebyscore(key("live"), "-inf", cutoff, start=0, num=limit)


def silent_count(*, cutoff: float) -> int:
    return client().zcount(key("live"), "-inf", cutoff)


def evict(*, agent_ids: list[str], cutoff: float) -> list[str]:
    if not agent_ids:
        return []
    return list(_script(_EVICT)(keys=[key("live"), key("busy")], args=[cutoff, *agent_ids]))


def seeded() -> bool:
    return bool(client().exists(key("epoch")))


def seed_mark(*, now: float) -> None:
    client().set(key("epoch"), now)


def _record_set(name: str, info: dict | None) -> None:
    """A JSON record under one key while it is in force (None removes it)."""
    if info is None:
        client().delete(key(name))
    else:
        client().set(key(name), json.dumps(info))


def _record_get(name: str) -> dict | None:
    raw = client().get(key(name))
    return json.loads(raw) if raw else None


def hold_set(info: dict | None) -> None:
    _record_set("hold", info)


def hold_get() -> dict | None:
    return _record_get("hold")


def reaped_get() -> float | None:
    raw = client().get(key("reaped"))
    return float(raw) if raw else None


def reaped_set(*, now: float) -> None:
    client().set(key("reaped"), now)


def timing_set(info: dict | None) -> None:
    _record_set("timing", info)


def timing_get() -> dict | None:
    return _record_get("timing")


def grace_set(info: dict | None) -> None:
    _record_set("grace", info)


def grace_get() -> dict | None:
    return _record_get("grace")


def router_refusal_set(info: dict | None, *, ttl: float = 0) -> None:
    """Kept for `ttl` seconds (a few summary intervals): a region that stopped
    pushing altogether does not show an old refusal for ever."""
    if info is None:
        client().delete(key("router"))
    else:
        client().set(key("router"), json.dumps(info), px=max(int(ttl * 1000), 1000))


def router_refusal_get() -> dict | None:
    return _record_get("router")


def config_current_seen_set(*, now: float) -> None:
    client().set(key("configok"), now)


def config_current_seen_get() -> float | None:
    raw = client().get(key("configok"))
    return float(raw) if raw else None


def config_publish(*, version_id: int) -> None:
    client().set(key("config"), version_id)


def config_published() -> int | None:
    raw = client().get(key("config"))
    return int(raw) if raw else None


def ping() -> bool:
    try:
        return bool(client().ping())
    except RedisError:
        return False


def now() -> float:
    return time.time()
