"""GitOps configuration: pull a commit with git, overlay the region's file on the
global one, validate, apply atomically, and serve the active configuration to
every process of the region without restarts.

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

import copy
import logging
import math
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from django.conf import settings
from django.db import DatabaseError, transaction
from jsonschema import Draft202012Validator

from project.jsonsafe import json_problem
from regions.config_schema import SCHEMA
from regions.models import Agent, ConfigVersion
from regions.services.handlers import schema_problem

logger = logging.getLogger(__name__)

CONFIG_CHECK_SECONDS = 2.0
HOT_PATH_CHECK_SECONDS = 0.1


class ConfigError(Exception):
    """The commit cannot be used; the message names the file, key and reason."""


# --- fetching ----------------------------------------------------------------

def _git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if out.returncode:
        raise ConfigError(f"git {' '.join(args[:2])} failed: {out.stderr.strip()[:500]}")
    return out.stdout


def _cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "config" / settings.REGION_ID / "repo.git"


def config_subject(*, sha: str) -> str:
    """The subject line of a fetched commit ("" when it cannot be read): what the
    operator wrote about the change, shown next to its sha."""
    try:
        return _git("log", "-1", "--format=%s", sha, cwd=_cache_dir()).strip()[:255]
    except (ConfigError, OSError, subprocess.SubprocessError):
        return ""


def config_fetch(*, repo: str, ref: str) -> tuple[str, dict[str, str]]:
    """Fetch `repo` into the region's cache and read the files of `ref` (a branch,
    tag or sha) without checking anything out. Returns (sha, {path: text})."""
    cache = _cache_dir()
    if not (cache / "HEAD").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", "--bare", "--quiet", repo, str(cache))
    else:
        _git("remote", "set-url", "origin", repo, cwd=cache)
        _git("fetch", "--quiet", "--prune", "--tags", "origin", "+refs/heads/*:refs/heads/*", cwd=cache)
    try:
        sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=cache).strip()
    except ConfigError:
        raise ConfigError(f"ref {ref!r} not found in {repo}") from None
    files = {}
    for path in ("global.yaml", f"regions/{settings.REGION_ID}.yaml"):
        try:
            files[path] = _git("show", f"{sha}:{path}", cwd=cache)
        except ConfigError:
            if path == "global.yaml":
                raise ConfigError(f"global.yaml: missing at {sha[:12]}") from None
    return sha, files


# --- validating and merging ------------------------------------------------------

def _validate_file(path: str, data) -> None:
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {key}: {e.message}")


CONFIG_FILE_MAX_BYTES = 1024 * 1024


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: `*ref` can make a small file expand without bound
    when it is copied, validated or stored (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _yaml_load(path: str, text: str):
    if len(text.encode("utf-8", errors="replace")) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {CONFIG_FILE_MAX_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_PlainLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    problem = json_problem(data, max_depth=16)
    if problem:
        # Dates, binary, non-string keys, NUL...: nothing the schema allows is any of these.
        raise ConfigError(f"{path}: {problem}")
    return data


def config_parse(files: dict[str, str]) -> dict:
    """Parse and validate each file, then overlay region on global key by key."""
    merged: dict = {}
    for path, text in files.items():
        data = _yaml_load(path, text)
        _validate_file(path, data)
        merged = deep_merge(merged, data)
    for capability, definition in sorted(merged.get("tasks", {}).items()):
        problem = "payload_schema" in definition and schema_problem(definition["payload_schema"])
        if problem:
            raise ConfigError(f"tasks.{capability}.payload_schema {problem}")
    ttl = merged.get("agents", {}).get("heartbeat_ttl", settings.HEARTBEAT_TTL)
    interval = merged.get("agents", {}).get("heartbeat_interval", settings.HEARTBEAT_INTERVAL)
    if ttl < 2 * interval:
        where = next((p for p in reversed(list(files)) if "heartbeat" in files[p]), "global.yaml")
        raise ConfigError(f"{where}: agents.heartbeat_ttl: {ttl} is shorter than two heartbeat intervals "
                          f"({2 * interval}); agents would be marked offline between beats")
    return merged


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(data, prefix: str = "") -> dict:
    if isinstance(data, dict) and data:
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_diff(old: dict, new: dict) -> list[dict]:
    a, b = _flatten(old), _flatten(new)
    return [{"key": k, "from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --- applying ----------------------------------------------------------------

@dataclass(frozen=True)
class SyncResult:
    sha: str
    applied: bool
    changes: list[dict]
    error: str = ""
    dry_run: bool = False
    duration_ms: int = 0


def config_sync(*, repo: str, ref: str, dry_run: bool = False) -> SyncResult:
    """Pull, validate and apply one commit atomically. An invalid commit changes
    nothing (and is recorded as rejected); the same commit again is a no-op."""
    started = time.monotonic()
    sha = ""
    try:
        sha, files = config_fetch(repo=repo, ref=ref)
        content = config_parse(files)
    except ConfigError as exc:
        if not dry_run:
            ConfigVersion.objects.create(sha=sha or "?", subject=config_subject(sha=sha) if sha else "", ref=ref,
                                         repo=repo, result=ConfigVersion.Result.REJECTED, error=str(exc),
                                         duration_ms=_ms(started))
        logger.warning("configuration %s@%s rejected: %s", repo, ref, exc)
        return SyncResult(sha=sha, applied=False, changes=[], error=str(exc), dry_run=dry_run,
                          duration_ms=_ms(started))
    active = ConfigVersion.objects.filter(is_active=True).first()
    changes = config_diff(active.content if active else {}, content)
    if dry_run or (active is not None and active.sha == sha and not changes):
        if not dry_run:
            config_publish(version_id=active.id)  # re-publish: Redis may have restarted without it
        return SyncResult(sha=sha, applied=False, changes=changes, dry_run=dry_run, duration_ms=_ms(started))
    with transaction.atomic():
        ConfigVersion.objects.filter(is_active=True).update(is_active=False)
        version = ConfigVersion.objects.create(sha=sha, subject=config_subject(sha=sha), ref=ref, repo=repo,
                                               result=ConfigVersion.Result.APPLIED,
                                               content=content, changes=changes, is_active=True,
                                               duration_ms=_ms(started))
        _enforce_blocklist(content)
        # After the commit, never before: a process that sees the new id must find its row.
        transaction.on_commit(lambda: config_publish(version_id=version.id))
    config_current.cache_clear()
    logger.info("configuration %s applied (%d changes)", sha[:12], len(changes))
    return SyncResult(sha=sha, applied=True, changes=changes, duration_ms=_ms(started))


def config_publish(*, version_id: int) -> None:
    """Tell every process of the region that `version_id` is now active."""
    from regions.services import liveness

    try:
        liveness.config_publish(version_id=version_id)
    except liveness.RedisError as exc:  # processes find it in the database within CONFIG_CHECK_SECONDS
        logger.warning("configuration %s applied but not published (Redis unavailable: %s); processes pick it "
                       "up from the database within %gs", version_id, exc, CONFIG_CHECK_SECONDS)


def _enforce_blocklist(content: dict) -> None:
    """Connected agents on the blocklist are told to stop in their next heartbeat reply."""
    from regions.services import liveness

    blocked = content.get("blocklist", {}).get("agents", [])
    if not blocked:
        return
    ids = list(Agent.objects.filter(agent_id__in=blocked).exclude(desired=Agent.Desired.STOPPED)
               .values_list("agent_id", flat=True))
    Agent.objects.filter(agent_id__in=ids).update(desired=Agent.Desired.STOPPED)

    def tell() -> None:
        for agent_id in ids:
            try:
                liveness.agent_desired_set(agent_id=agent_id, desired=Agent.Desired.STOPPED)
            except liveness.RedisError:  # the database already says so; the cache refills from it
                pass

    transaction.on_commit(tell)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# --- the active configuration, as every process reads it ---------------------------------

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
        from urllib.parse import urlsplit

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
        from regions.services import liveness

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
