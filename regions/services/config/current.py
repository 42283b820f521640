"""The active configuration, as every process of the region reads it, without
restarts.

Every process caches the active configuration. An apply publishes the new
ConfigVersion id in the region's Redis (`m:<region>:config`) after its commit;
config_current() compares it with one Redis GET (the heartbeat path at most once
every HOT_PATH_CHECK_SECONDS per process), so a configuration is in force in every
process of the region as soon as sync_config returns. The database is re-checked
every CONFIG_CHECK_SECONDS regardless: the only check while Redis is down, and a
safety net for a publish that Redis missed.

Secrets stay references (env:NAME, file:/run/secrets/NAME) everywhere: in the
repository, the database and summaries. They are resolved only here, inside the
region that owns them, at the moment they are used."""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError

from regions.models import ConfigVersion
from regions.services import liveness
from regions.services.schedules.due import schedule_applies

logger = logging.getLogger(__name__)

CONFIG_CHECK_SECONDS = 2.0
HOT_PATH_CHECK_SECONDS = 0.1


def config_publish(*, version_id: int) -> None:
    """Tell every process of the region that `version_id` is now active."""
    try:
        liveness.config_publish(version_id=version_id)
    except liveness.RedisError as exc:  # processes find it in the database within CONFIG_CHECK_SECONDS
        logger.warning("configuration %s applied but not published (Redis unavailable: %s); processes pick it "
                       "up from the database within %gs", version_id, exc, CONFIG_CHECK_SECONDS)


@dataclass(frozen=True)
class HeartbeatTiming:
    interval: float  # handed to agents in every heartbeat reply
    ttl: float       # an agent silent this long is offline


@dataclass(frozen=True)
class EffectiveConfig:
    sha: str
    content: dict

    def _get(self, *path, default=None):
        node = self.content
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    # Computed once per configuration: the heartbeat path reads these every beat.
    @cached_property
    def heartbeat_interval(self) -> float:
        return float(self._get("agents", "heartbeat_interval", default=settings.HEARTBEAT_INTERVAL))

    @cached_property
    def heartbeat_ttl(self) -> float:
        return float(self._get("agents", "heartbeat_ttl", default=settings.HEARTBEAT_TTL))

    @cached_property
    def heartbeat_budget(self) -> float:
        return float(self._get("agents", "heartbeat_budget", default=settings.HEARTBEAT_BUDGET_PER_SECOND))

    @cached_property
    def heartbeat_interval_max(self) -> float:
        return float(self._get("agents", "heartbeat_interval_max", default=settings.HEARTBEAT_INTERVAL_MAX))

    def heartbeat_timing(self, fleet: int) -> "HeartbeatTiming":
        """The interval handed to agents and the TTL they are held to, for a fleet
        of `fleet` beating agents (bounded chatter, as Nomad scales its heartbeat
        TTL with the number of nodes):

            interval = max(heartbeat_interval, fleet / heartbeat_budget),
                       rounded up to 0.1 s, at most max(heartbeat_interval,
                       heartbeat_interval_max)
            ttl      = heartbeat_ttl * interval / heartbeat_interval

        So the fleet beats at most heartbeat_budget times a second in total until
        the interval reaches its maximum (then the budget yields: detection stays
        bounded), the configured interval is the floor (a small fleet is not
        slowed down), and TTL/interval stays the configured ratio (>= 2, checked
        by config_parse), so agents are still allowed the same number of missed
        beats. A dead agent is detected within ttl + one reaper tick, so at worst
        heartbeat_ttl * interval_max / heartbeat_interval + REAPER_INTERVAL.
        A budget of 0 turns the rule off. Pure: the caller passes the fleet size
        from a counter (the live set's ZCARD), never a count(*).

        The reaper holds agents to the largest TTL it handed out within the last
        such TTL (regions/clock/reaper.py): an agent told a long interval just before
        the fleet shrank keeps it until its next beat."""
        base_interval, base_ttl = self.heartbeat_interval, self.heartbeat_ttl
        budget = self.heartbeat_budget
        if budget <= 0 or fleet <= budget * base_interval:
            return HeartbeatTiming(interval=base_interval, ttl=base_ttl)
        cap = max(base_interval, self.heartbeat_interval_max)
        # Capped before rounding: a tiny budget (1e-320) must give the cap, not ceil(inf).
        interval = math.ceil(min(fleet / budget, cap) * 10 - 1e-9) / 10
        interval = min(max(interval, base_interval), cap)
        return HeartbeatTiming(interval=interval, ttl=round(base_ttl * interval / base_interval, 3))

    @cached_property
    def summary_interval(self) -> float:
        return float(self._get("summary_interval", default=settings.SUMMARY_INTERVAL))

    @property
    def min_agent_version(self) -> str | None:
        return self._get("agents", "min_version")

    @cached_property
    def _blocked_agents(self) -> frozenset:
        return frozenset(self._get("blocklist", "agents", default=[]))

    def agent_blocked(self, agent_id: str) -> bool:
        return agent_id in self._blocked_agents

    def task_definition(self, capability: str) -> dict:
        return self._get("tasks", capability, default={}) or {}

    @cached_property
    def schedules(self) -> dict[str, dict]:
        """The schedules that run in this region: those of global.yaml naming it (or
        no region, or "*") merged with those of its own file."""
        return {name: definition for name, definition in sorted(self._get("schedules", default={}).items())
                if schedule_applies(definition, settings.REGION_ID)}

    def caller_quota(self, username: str) -> dict[str, int]:
        """The caller's quotas: its own entry in callers, then callers.default,
        then the settings (CALLER_SUBMISSIONS_PER_SECOND, CALLER_MAX_IN_FLIGHT).
        0 means no limit."""
        own = self._get("callers", username, default={}) or {}
        default = self._get("callers", "default", default={}) or {}
        return {name: int(own.get(name, default.get(name, fallback))) for name, fallback in (
            ("submissions_per_second", settings.CALLER_SUBMISSIONS_PER_SECOND),
            ("max_in_flight", settings.CALLER_MAX_IN_FLIGHT))}

    def capability_refusal(self, capability: str) -> str | None:
        """Why this region may not run the capability, or None."""
        if capability in self._get("blocklist", "capabilities", default=[]):
            return f"capability {capability} is blocklisted by configuration {self.sha[:12]}"
        allowed = self.task_definition(capability).get("regions")
        if allowed and "*" not in allowed and settings.REGION_ID not in allowed:
            return (f"capability {capability} is not allowed in region {settings.REGION_ID} "
                    f"(configuration {self.sha[:12]} allows {', '.join(allowed)})")
        return None

    def secret_refusal(self, name: str, url: str) -> str | None:
        """Why the secret may not be sent to this URL, or None."""
        entry = self._get("secrets", name)
        if entry is None:
            return f"no secret {name!r} in configuration {self.sha[:12] or '(none)'}"
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"secret {name!r} is only sent to an http(s) source"
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        if host not in entry["hosts"] and parts.hostname not in entry["hosts"]:
            return f"secret {name!r} may not be sent to {host} (allowed: {', '.join(entry['hosts'])})"
        return None

    def secret(self, name: str) -> str:
        """Resolve a secret reference; only ever called inside the owning region."""
        entry = self._get("secrets", name)
        if entry is None:
            raise KeyError(f"no secret {name!r} in configuration {self.sha[:12]}")
        kind, _, target = entry["ref"].partition(":")
        if kind == "env":
            if target not in os.environ:
                raise KeyError(f"secret {name!r}: environment variable {target} is not set")
            return os.environ[target]
        return Path(target).read_text().strip()


class _Current:
    """Per-process cache of the active configuration (see the module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.cache_clear()

    def cache_clear(self) -> None:
        self._value = EffectiveConfig(sha="", content={})
        self._id = None
        self._checked = 0.0            # last database check (monotonic)
        self._peeked = 0.0             # last look at the published id
        self._redis_retry_at = 0.0     # Redis failed: do not try again before this
        self._ignored: int | None = None  # a published id the database contradicted

    def __call__(self, *, max_age: float = 0.0) -> EffectiveConfig:
        """The active configuration. max_age: how old this process's look at the
        published id may be (0: look now; the heartbeat path passes
        HOT_PATH_CHECK_SECONDS)."""
        now = time.monotonic()
        stale = now - self._checked >= CONFIG_CHECK_SECONDS
        published = None
        if not stale and now - self._peeked >= max_age and now >= self._redis_retry_at:
            self._peeked = now
            published = self._published(now)
            stale = published is not None and published != self._id and published != self._ignored
        if stale:
            with self._lock:
                self._reload(now, published)
        return self._value

    def _published(self, now: float) -> int | None:
        try:
            return liveness.config_published()
        except (liveness.RedisError, ValueError):
            self._redis_retry_at = now + CONFIG_CHECK_SECONDS  # the database check covers it meanwhile
            return None

    def _reload(self, now: float, published: int | None) -> None:
        try:
            row = ConfigVersion.objects.filter(is_active=True).values("id", "sha").first()
        except DatabaseError:
            if self._checked == 0.0:
                raise  # nothing known yet
            # The database is away (a restart, a failover): keep what this process
            # has and look again in CONFIG_CHECK_SECONDS, not on every heartbeat.
            self._checked = now
            return
        if row is None:
            self._value, self._id = EffectiveConfig(sha="", content={}), None
        elif row["id"] != self._id:
            content = ConfigVersion.objects.values_list("content", flat=True).get(id=row["id"])
            self._value, self._id = EffectiveConfig(sha=row["sha"], content=content), row["id"]
        self._checked = now
        if published is not None and published != self._id:
            # Redis holds an id the database does not (a publish lost while Redis was
            # away): do not re-read the database for it on every call, and repair it.
            self._ignored = published
            if self._id is not None:
                config_publish(version_id=self._id)


config_current = _Current()


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))
