"""The reaper (regions.agent_reap): an agent whose last heartbeat is older than
the TTL is marked offline and its running tasks are requeued, unless the silence
looks like a fault of the region rather than of the agents. The rule follows
Kubernetes' node lifecycle controller (--unhealthy-zone-threshold,
--large-cluster-size-threshold, --secondary-node-eviction-rate):

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
- Dead or frozen: before it holds (or limits), the reaper asks the broker whether
  the silent agents still hold their connections (regions/services/agents/
  presence.py). A killed process's connection closes at once; a frozen or
  partitioned one's stays. An agent whose consumers are gone is dead: it does not
  count as silent for the rule and is evicted at its TTL, hold or no hold. A hold
  is for silence *with* live connections, and for the agents the broker could not
  tell about (HTTP agents, a Redis broker, a broker that does not answer within
  REAPER_BROKER_CHECK_SECONDS: the hold as before, with the reason in it).
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

import logging
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.utils import timezone

from regions.models import Agent
from regions.services import liveness
from regions.services.agents.presence import BrokerPresence, agent_presence_check
from regions.services.config.current import HeartbeatTiming, config_current
from regions.services.leadership import fence_check
from regions.services.tasks.requeue import tasks_requeue_for_agents

logger = logging.getLogger("regions.services.agents")  # the agents' log stream, whichever module writes

# Why an agent was evicted, as its requeued tasks and the log record it.
SILENT = "agent missed its heartbeat TTL"
DEAD = "agent missed its heartbeat TTL and its broker connection is gone (dead)"


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
    dead: set[str] = set()
    presence = None
    if rule.mode != "normal":
        rule, dead, presence = _rule_corroborated(rule=rule, silent=silent, total=total,
                                                  cutoff=now - (ttl - interval))
    dead_missing = [a for a in missing if a in dead]  # evicted at their TTL, hold or no hold
    previous = liveness.hold_get()
    if rule.mode == "normal":
        if previous:
            # The fleet is heard again: the agents still silent get a full TTL to be heard
            # too, instead of being evicted by the tick that sees the others back first.
            # (Not the dead: nothing will be heard of them.)
            liveness.hold_set(None)
            logger.warning("eviction hold lifted (%d of %d agents still silent)", silent, total)
            grace = _grace_grant(now=now, ttl=ttl, reason=f"eviction hold lifted with {silent} of {total} "
                                                           "agents still silent")
            evicted = _evict(agent_ids=dead_missing, cutoff=cutoff, dead=dead)
            liveness.reaped_set(now=now)
            return {"evicted": evicted, "dead": evicted, "held": False, "grace": grace["reason"]}
    else:
        since = previous["since"] if previous else now
        if now - since < settings.EVICTION_HOLD_MAX_SECONDS:
            info = {"since": since, "checked": now, "missing": len(missing) - len(dead_missing),
                    "silent": silent - len(dead), "dead": len(dead), "online": total, "mode": rule.mode,
                    "reason": rule.reason, "broker": presence.summary()}
            if previous is None or (previous.get("silent"), previous.get("mode")) != (info["silent"], rule.mode):
                logger.warning("eviction hold: %s", rule.reason)
            liveness.hold_set(info)
            missing = dead_missing + [a for a in missing if a not in dead][:rule.limit]
            if not missing:
                liveness.reaped_set(now=now)
                return {"evicted": [], "dead": [], "held": True, "missing": info["missing"],
                        "silent": info["silent"]}
        else:
            logger.error("eviction hold expired after %gs with %d of %d agents still silent: evicting them",
                         settings.EVICTION_HOLD_MAX_SECONDS, silent, total)
            liveness.hold_set(None)
            rule = EvictionRule("normal")
    evicted = _evict(agent_ids=missing, cutoff=cutoff, dead=dead)
    orphans = _reap_orphans(now=now, cutoff=cutoff) if rule.mode == "normal" else []
    liveness.reaped_set(now=now)
    return {"evicted": evicted + orphans, "dead": [a for a in evicted if a in dead], "held": rule.mode == "hold",
            "limited": rule.mode == "limited"}


def _rule_corroborated(*, rule: EvictionRule, silent: int, total: int,
                       cutoff: float) -> tuple[EvictionRule, set[str], BrokerPresence]:
    """The rule once the broker has said which silent agents are dead (their
    connections gone): they leave both the silent and the fleet, and the rule is
    taken again over the rest. What the broker could not tell stays silent."""
    silent_ids = liveness.expired(cutoff=cutoff, limit=settings.REAPER_BROKER_CHECK_MAX)
    presence = agent_presence_check(agent_ids=silent_ids)
    dead = set(presence.gone)
    if presence.error:
        logger.warning("reaper: the broker could not say whether %d silent agents are alive (%s): they count "
                       "as silent", len(presence.unknown), presence.error)
    if dead:
        rule = eviction_rule(silent=silent - len(dead), fleet=total - len(dead))
    note = (f"{len(dead)} silent agents dead (broker connection gone), evicted at their TTL; "
            if dead else "") + presence.summary()
    return EvictionRule(rule.mode, rule.limit, f"{rule.reason}; {note}" if rule.reason else note), dead, presence


def _evict(*, agent_ids: list[str], cutoff: float, dead: set[str]) -> list[str]:
    """Mark these expired agents offline and requeue their tasks, recording why:
    dead (the broker saw their connection close) or silent only. A reaper whose
    clock lease has moved on stops before it touches the live set (the database
    writes after are fenced anyway; an agent evicted from Redis but not from the
    database is an orphan the next reap finds)."""
    fence_check()
    evicted = liveness.evict(agent_ids=agent_ids, cutoff=cutoff)
    if not evicted:
        return []
    Agent.objects.filter(agent_id__in=evicted, status=Agent.Status.ONLINE).update(
        status=Agent.Status.OFFLINE, offline_since=timezone.now(), busy=False
    )
    for reason, group in ((DEAD, [a for a in evicted if a in dead]), (SILENT, [a for a in evicted if a not in dead])):
        if not group:
            continue
        requeued = tasks_requeue_for_agents(agent_ids=group, reason=reason)
        logger.warning("marked %d agents offline (%s): %s; requeued %d tasks", len(group), ", ".join(group[:10]),
                       reason, requeued)
        for agent_id in group:
            logger.info("agent %s offline: %s", agent_id, reason.removeprefix("agent "), extra={"agent": agent_id})
    return evicted


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
