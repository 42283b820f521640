"""Agent registry: registration, heartbeats, desired state, reaping and the bulk flush.

Reaping. An agent whose last heartbeat is older than the TTL is marked offline
and its running tasks are requeued, unless the silence looks like a fault of the
region rather than of the agents. The rule follows Kubernetes' node lifecycle
controller (--unhealthy-zone-threshold, --large-cluster-size-threshold,
--secondary-node-eviction-rate):

- An agent is *silent* once it has missed a beat (no beat for TTL - interval),
  *expired* once it has missed its TTL. Counting the silent, not only the
  expired, sees a fleet that stopped at once as one event: agents frozen
  together expire up to one interval apart, and the first must not be evicted
  alone before the others cross the TTL.
- When more than EVICTION_HOLD_RATIO of the fleet is silent and at least 2
  agents are: a fleet of at most EVICTION_LARGE_FLEET agents (50) evicts nobody
  (a hold); a larger one evicts at most EVICTION_SECONDARY_RATE of the fleet per
  tick, oldest silence first, and nobody when the whole fleet is silent (in a
  large fleet, a share that size going silent together is the network or the
  region, not the agents; a small fleet has too few agents to tell the two apart,
  so it waits). A hold ends after EVICTION_HOLD_MAX_SECONDS: a real mass failure
  is then evicted.
- A lone agent (a fleet of 1) that goes silent is evicted normally: there is no
  mass to tell a fault of the region from the death of the agent, and holding
  would leave its tasks stuck for the whole hold. (Its silence during an outage
  of the region is covered by the grace below.)
- Grace: after any period in which the reaper could not run or the liveness store
  was unavailable (no successful reaper tick for more than
  EVICTION_GRACE_AFTER_TICKS reaper intervals), and when a hold lifts, nobody is
  evicted for a full TTL: the agents' beats could not be heard, and they need one
  TTL to be heard again (Kubernetes resets every node's probe time when a zone
  leaves full disruption). An empty Redis is re-seeded from the database with a
  fresh TTL (liveness_seed), which is the same grace.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from project.accounts.tokens import token_generate, token_hash
from project.celery import agent_queue, capability_queue
from project.exceptions import Refused
from project.protocol import AGENT_TOKEN_HEADER
from regions.models import Agent, RegistrationToken, Task
from regions.services import liveness
from regions.services.config import HOT_PATH_CHECK_SECONDS, HeartbeatTiming, config_current, version_tuple
from regions.services.handlers import handlers_declare
from regions.services.heartbeat_buffer import get_buffer
from regions.services.tasks.requeue import tasks_requeue_for_agents

logger = logging.getLogger(__name__)


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


def registration_token_valid(raw: str | None) -> bool:
    if not raw:
        return False
    if settings.AGENT_REGISTRATION_TOKEN and hmac.compare_digest(raw, settings.AGENT_REGISTRATION_TOKEN):
        return True
    return RegistrationToken.objects.filter(token_hash=token_hash(raw), revoked_at__isnull=True).exists()


def registration_token_create(*, name: str, raw: str | None = None) -> tuple[RegistrationToken, str]:
    """raw: a value chosen by the caller (the same token the router knows), else a new one."""
    raw = raw or token_generate("mrt")
    tok = RegistrationToken.objects.create(name=name, prefix=raw[:10], token_hash=token_hash(raw))
    return tok, raw


def agent_register(
    *, agent_id: str, capabilities: list[str], version: str = "", hostname: str = "",
    kind: str = "celery", concurrency: int = 1, handlers: dict[str, dict] | None = None,
    current_token: str | None = None,
) -> Registration:
    """Create or re-register an agent and issue it a fresh credential.

    Re-registering the same id rotates its token: a stale process still holding
    the old one gets 401 on its next heartbeat and stops. While the agent is
    online, only that agent may do so: current_token (sent as X-Agent-Token)
    must be its current token, or AgentIdInUse is raised. An id whose agent is
    offline or stopped may be taken over with the registration token alone. (An
    agent restarting after kill -9, its entry still online, sends the token it
    saved.)
    """
    config = config_current()
    if config.agent_blocked(agent_id):
        raise ForbiddenError(f"Agent {agent_id} is blocklisted by configuration {config.sha[:12]}.")
    floor = config.min_agent_version
    if floor and version_tuple(version or "0") < version_tuple(floor):
        raise ForbiddenError(f"Agent version {version or 'unknown'} is below the minimum {floor} required by "
                             f"configuration {config.sha[:12]}; upgrade the agent.")
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
    """Database path: for the rare calls (deregister) and heartbeat cache misses."""
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


def reaper_timing(*, config, now: float, fleet: int) -> HeartbeatTiming:
    """The interval and TTL the reaper holds agents to: the rule's for this fleet
    (config.heartbeat_timing, as handed out by heartbeat_record), or, when the
    fleet just shrank, the larger ones handed out within the last such TTL: an
    agent told the longer interval sleeps it before it hears the shorter one."""
    timing = config.heartbeat_timing(fleet)
    held = liveness.timing_get()
    if held and now < held["until"] and held["ttl"] > timing.ttl:
        return HeartbeatTiming(interval=held["interval"], ttl=held["ttl"])
    liveness.timing_set({"interval": timing.interval, "ttl": timing.ttl, "until": now + timing.ttl})
    return timing


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


def agent_deregister(*, agent: Agent) -> None:
    """Clean exit after a warm shutdown."""
    Agent.objects.filter(pk=agent.pk).update(
        status=Agent.Status.STOPPED, busy=False, offline_since=timezone.now(),
        desired=Agent.Desired.ACTIVE if agent.desired == Agent.Desired.DRAINING else agent.desired,
    )
    liveness.agent_forget(agent_id=agent.agent_id)
    logger.info("agent %s deregistered", agent.agent_id, extra={"agent": agent.agent_id})
    # No requeue here: the results of the work it finished may still be queued
    # behind this call. The sweeper requeues what is still running after a grace.


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


def liveness_seed(*, now: float) -> int:
    """Redis lost its data (restart): rebuild the cache from the database.

    Online agents get a full TTL of grace from now: we cannot know when they last
    beat, and evicting the whole fleet because the cache restarted is the mass
    eviction we refuse elsewhere.
    """
    pipe = liveness.client().pipeline()
    count = 0
    for agent_id, digest, desired, status in Agent.objects.exclude(token_hash="").values_list(
        "agent_id", "token_hash", "desired", "status"
    ).iterator(chunk_size=5000):
        pipe.hset(liveness.key("tok"), agent_id, digest)
        if desired != Agent.Desired.ACTIVE:
            pipe.hset(liveness.key("desired"), agent_id, desired)
        if status == Agent.Status.ONLINE:
            pipe.zadd(liveness.key("live"), {agent_id: now})
            count += 1
    pipe.execute()
    liveness.seed_mark(now=now)
    logger.warning("liveness cache seeded from the database: %d online agents given a fresh TTL", count)
    return count


@dataclass(frozen=True)
class EvictionRule:
    mode: str  # "normal": evict every expired agent; "hold": nobody; "limited": at most `limit`
    limit: int | None = None
    reason: str = ""


def eviction_rule(*, silent: int, fleet: int) -> EvictionRule:
    """How many expired agents to evict when `silent` of `fleet` live agents are
    silent (see the module docstring). Pure: no I/O."""
    if silent < 2 or fleet <= 0 or silent / fleet <= settings.EVICTION_HOLD_RATIO:
        return EvictionRule("normal")
    what = f"{silent} of {fleet} agents went silent at once"
    held = (f"evictions held for up to {settings.EVICTION_HOLD_MAX_SECONDS:g}s (network partition, "
            "frozen hosts or orchestrator restart?)")
    if fleet <= settings.EVICTION_LARGE_FLEET:
        return EvictionRule("hold", 0, f"{what} in a fleet of at most {settings.EVICTION_LARGE_FLEET}; {held}")
    if silent >= fleet:
        return EvictionRule("hold", 0, f"{what}, the whole fleet; {held}")
    limit = max(1, int(fleet * settings.EVICTION_SECONDARY_RATE))
    return EvictionRule("limited", limit, f"{what}; evicting at most {limit} per tick, oldest silence first, "
                                          f"for up to {settings.EVICTION_HOLD_MAX_SECONDS:g}s")


def agent_reap(*, now: float) -> dict:
    """Mark agents that missed their TTL offline and requeue their tasks, within
    the eviction rule and the grace of the module docstring."""
    config = config_current()
    if not liveness.seeded():
        count = liveness_seed(now=now)  # every online agent's clock restarts now: the same grace
        ttl = reaper_timing(config=config, now=now, fleet=liveness.live_count()).ttl
        grace = _grace_grant(now=now, ttl=ttl, reason=f"liveness store lost its data; {count} online agents "
                                                       "re-seeded from the database")
        liveness.reaped_set(now=now)
        return {"evicted": [], "held": False, "seeded": True, "grace": grace["reason"]}
    total = liveness.live_count()
    timing = reaper_timing(config=config, now=now, fleet=total)
    ttl, interval = timing.ttl, timing.interval
    grace = _grace_check(now=now, ttl=ttl, interval=interval)
    if grace is not None:
        liveness.reaped_set(now=now)
        return {"evicted": [], "held": False, "grace": grace["reason"]}
    cutoff = now - ttl
    missing = liveness.expired(cutoff=cutoff)  # oldest silence first
    silent = max(liveness.silent_count(cutoff=now - (ttl - interval)), len(missing))
    rule = eviction_rule(silent=silent, fleet=total)
    previous = liveness.hold_get()
    if rule.mode == "normal":
        if previous:
            # The fleet is heard again: the agents still silent get a full TTL to be heard
            # too, instead of being evicted by the tick that sees the others back first.
            liveness.hold_set(None)
            logger.warning("eviction hold lifted (%d of %d agents still silent)", silent, total)
            grace = _grace_grant(now=now, ttl=ttl, reason=f"eviction hold lifted with {silent} of {total} "
                                                           "agents still silent")
            liveness.reaped_set(now=now)
            return {"evicted": [], "held": False, "grace": grace["reason"]}
    else:
        since = previous["since"] if previous else now
        if now - since < settings.EVICTION_HOLD_MAX_SECONDS:
            info = {"since": since, "checked": now, "missing": len(missing), "silent": silent, "online": total,
                    "mode": rule.mode, "reason": rule.reason}
            if previous is None or (previous.get("silent"), previous.get("mode")) != (silent, rule.mode):
                logger.warning("eviction hold: %s", rule.reason)
            liveness.hold_set(info)
            missing = missing[:rule.limit]
            if not missing:
                liveness.reaped_set(now=now)
                return {"evicted": [], "held": True, "missing": info["missing"], "silent": silent}
        else:
            logger.error("eviction hold expired after %gs with %d of %d agents still silent: evicting them",
                         settings.EVICTION_HOLD_MAX_SECONDS, silent, total)
            liveness.hold_set(None)
            rule = EvictionRule("normal")
    evicted = liveness.evict(agent_ids=missing, cutoff=cutoff)
    if evicted:
        when = timezone.now()
        Agent.objects.filter(agent_id__in=evicted, status=Agent.Status.ONLINE).update(
            status=Agent.Status.OFFLINE, offline_since=when, busy=False
        )
        requeued = tasks_requeue_for_agents(agent_ids=evicted, reason="agent missed its heartbeat TTL")
        logger.warning("marked %d agents offline (%s); requeued %d tasks", len(evicted),
                       ", ".join(evicted[:10]), requeued)
        for agent_id in evicted:
            logger.info("agent %s offline: missed its heartbeat TTL", agent_id, extra={"agent": agent_id})
    orphans = _reap_orphans(now=now, cutoff=cutoff) if rule.mode == "normal" else []
    liveness.reaped_set(now=now)
    return {"evicted": evicted + orphans, "held": rule.mode == "hold", "limited": rule.mode == "limited"}


def _grace_check(*, now: float, ttl: float, interval: float) -> dict | None:
    """The grace in force, if any; grants one when the reaper has not ticked for a while.

    The gap that calls for grace: more than EVICTION_GRACE_AFTER_TICKS reaper
    intervals, but never more than TTL - interval (a longer silence of the store
    can already have pushed every agent past its TTL), nor less than two intervals
    (one late tick is not an outage)."""
    last = liveness.reaped_get()
    reaper = settings.REAPER_INTERVAL
    gap_limit = max(2 * reaper, min(settings.EVICTION_GRACE_AFTER_TICKS * reaper, ttl - interval))
    if last is not None and now - last > gap_limit:
        return _grace_grant(now=now, ttl=ttl, reason=(
            f"no reaper tick for {now - last:.1f}s (liveness store or reaper unavailable): agents could "
            "not be heard"))
    current = liveness.grace_get()
    if current is None:
        return None
    if now < current["until"]:
        return current
    liveness.grace_set(None)
    logger.info("eviction grace over")
    return None


def _grace_grant(*, now: float, ttl: float, reason: str) -> dict:
    info = {"since": now, "until": now + ttl, "reason": f"{reason}; nobody evicted for {ttl:g}s (one TTL)"}
    liveness.grace_set(info)
    logger.warning("eviction grace: %s", info["reason"])
    return info


def _reap_orphans(*, now: float, cutoff: float) -> list[str]:
    """Agents online in the database but absent from Redis's live set: a reap that
    evicted them in Redis and then failed before the database was updated."""
    stale_before = datetime.fromtimestamp(cutoff - 2 * settings.LIVENESS_FLUSH_INTERVAL, tz=dt_timezone.utc)
    candidates = list(Agent.objects.filter(status=Agent.Status.ONLINE, last_seen__lt=stale_before)
                      .values_list("agent_id", flat=True)[:1000])
    if not candidates:
        return []
    scores = liveness.client().zmscore(liveness.key("live"), candidates)
    orphans = [a for a, score in zip(candidates, scores) if score is None]
    if orphans:
        Agent.objects.filter(agent_id__in=orphans, status=Agent.Status.ONLINE).update(
            status=Agent.Status.OFFLINE, offline_since=timezone.now(), busy=False)
        tasks_requeue_for_agents(agent_ids=orphans, reason="agent missed its heartbeat TTL")
        logger.warning("marked %d agents offline that the live set no longer had", len(orphans))
        for agent_id in orphans:
            logger.info("agent %s offline: missed its heartbeat TTL", agent_id, extra={"agent": agent_id})
    return orphans


def liveness_flush() -> int:
    """Copy Redis liveness into the database in bulk: a few UPDATEs, not one per agent.

    last_seen is written to the second; agents seen again after being marked
    offline are welcomed back as online.
    """
    seen, busy = liveness.live_snapshot()
    if not seen:
        return 0
    by_second: dict[int, list[str]] = defaultdict(list)
    for agent_id, ts in seen.items():
        by_second[int(ts)].append(agent_id)
    ids = list(seen)
    with transaction.atomic():
        for second, agent_ids in by_second.items():
            when = datetime.fromtimestamp(second, tz=dt_timezone.utc)
            Agent.objects.filter(agent_id__in=agent_ids).update(last_seen=when)
        busy_ids = [a for a in ids if busy.get(a, 0) > 0]
        Agent.objects.filter(agent_id__in=busy_ids, busy=False).update(busy=True)
        Agent.objects.filter(agent_id__in=ids, busy=True).exclude(agent_id__in=busy_ids).update(busy=False)
        # Welcome back only agents that beat after they were marked offline: a beat
        # buffered before the eviction and flushed after it must not revive a dead agent.
        returned = [
            agent_id for agent_id, since in Agent.objects.filter(agent_id__in=ids, status=Agent.Status.OFFLINE)
            .values_list("agent_id", "offline_since")
            if since is None or seen[agent_id] > since.timestamp()
        ]
        back = Agent.objects.filter(agent_id__in=returned, status=Agent.Status.OFFLINE).update(
            status=Agent.Status.ONLINE, offline_since=None
        )
    if back:
        logger.info("%d agents back online", back)
    return len(ids)


def agent_running_tasks(*, agent_id: str) -> list[str]:
    return [str(t) for t in Task.objects.filter(agent=agent_id, status=Task.Status.RUNNING)
            .values_list("id", flat=True)]


def web_unreachable() -> str | None:
    """Why the region's own web (the door heartbeats come through) does not
    answer, or None when it does (or when no check is configured)."""
    import requests

    url = settings.REAPER_WEB_CHECK_URL
    if not url:
        return None
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException as exc:
        reason = f"region web unreachable at {url} ({exc.__class__.__name__}): heartbeats cannot arrive"
    else:
        if response.status_code == 200:
            return None
        reason = f"region web answers {response.status_code} at {url}: heartbeats cannot arrive"
    logger.warning("reaper skipped: %s", reason)
    return reason
