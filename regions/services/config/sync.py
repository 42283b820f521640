"""GitOps configuration, applied: pull a commit with git, parse it, and apply it
atomically (an invalid commit changes nothing and is recorded as rejected); the
apply publishes the new version to every process of the region
(regions.services.config.current)."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import transaction

from project.accounts.audit import FAILED, REFUSED, audit_record
from regions.models import Agent, ConfigVersion
from regions.services import liveness
from regions.services.config.current import config_current, config_publish
from regions.services.config.parse import ConfigError, config_diff, config_parse

logger = logging.getLogger(__name__)
CONFIG_SYNC = "config sync"  # the actor of a configuration applied or rejected, in the audit trail


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


# --- applying ----------------------------------------------------------------

@dataclass(frozen=True)
class SyncResult:
    sha: str
    applied: bool
    changes: list[dict]
    error: str = ""
    dry_run: bool = False
    duration_ms: int = 0


def _without_credentials(repo: str) -> str:
    """The repository as the audit trail names it: https://user:token@host/… loses its user and token."""
    parts = urlsplit(repo)
    if not parts.password and not parts.username:
        return repo
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def _credentials_out(text: str, repo: str) -> str:
    """`text` (git's error, ours) without the repository's user and token: the
    error is kept in the database, shown on the attention panel, and sent to the
    router in the region's summary."""
    return _CREDENTIALS.sub(r"\1", text.replace(repo, _without_credentials(repo)))


_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s'\"]+@", re.IGNORECASE)


def config_sync(*, repo: str, ref: str, dry_run: bool = False) -> SyncResult:
    """Pull, validate and apply one commit atomically. An invalid commit changes
    nothing (and is recorded as rejected); the same commit again is a no-op.
    The repository's credentials are used to fetch and kept nowhere."""
    started = time.monotonic()
    sha, shown = "", _without_credentials(repo)
    try:
        sha, files = config_fetch(repo=repo, ref=ref)
        content = config_parse(files)
    except ConfigError as exc:
        error = _credentials_out(str(exc), repo)
        if not dry_run and not _rejected_already(repo=shown, ref=ref, sha=sha or "?"):
            audit_record(action="config.rejected", target=f"{shown}@{ref} {sha[:12] or '?'}",
                         actor=CONFIG_SYNC, outcome=REFUSED if sha else FAILED, detail=error)
            ConfigVersion.objects.create(sha=sha or "?", subject=config_subject(sha=sha) if sha else "", ref=ref,
                                         repo=shown, result=ConfigVersion.Result.REJECTED, error=error,
                                         duration_ms=_ms(started))
        logger.warning("configuration %s@%s rejected: %s", shown, ref, error)
        return SyncResult(sha=sha, applied=False, changes=[], error=error, dry_run=dry_run,
                          duration_ms=_ms(started))
    active = ConfigVersion.objects.filter(is_active=True).first()
    changes = config_diff(active.content if active else {}, content)
    if dry_run or (active is not None and active.sha == sha and not changes):
        if not dry_run:
            config_publish(version_id=active.id)  # re-publish: Redis may have restarted without it
            # The ref is back on the active commit: a rejection recorded before is no longer in force.
            try:
                liveness.config_current_seen_set(now=time.time())
            except liveness.RedisError:
                pass  # the panel shows the rejection a while longer; nothing else depends on it
        return SyncResult(sha=sha, applied=False, changes=changes, dry_run=dry_run, duration_ms=_ms(started))
    with transaction.atomic():
        ConfigVersion.objects.filter(is_active=True).update(is_active=False)
        version = ConfigVersion.objects.create(sha=sha, subject=config_subject(sha=sha), ref=ref, repo=shown,
                                               result=ConfigVersion.Result.APPLIED,
                                               content=content, changes=changes, is_active=True,
                                               duration_ms=_ms(started))
        _enforce_blocklist(content)
        audit_record(action="config.applied", target=f"{shown}@{ref} {sha[:12]}", actor=CONFIG_SYNC,
                     detail=f"{len(changes)} changes: " + "; ".join(map(str, changes[:20])))
        # After the commit, never before: a process that sees the new id must find its row.
        transaction.on_commit(lambda: config_publish(version_id=version.id))
    config_current.cache_clear()
    logger.info("configuration %s applied (%d changes)", sha[:12], len(changes))
    return SyncResult(sha=sha, applied=True, changes=changes, duration_ms=_ms(started))


def _rejected_already(*, repo: str, ref: str, sha: str) -> bool:
    """The latest row is this very rejection (repo, ref, sha): the sync tick sees
    the same broken commit every CONFIG_SYNC_INTERVAL, and it is recorded once,
    not 360 times an hour. It stays the latest row, which the overview's
    attention panel reads, until a commit is applied (or another is rejected)."""
    latest = ConfigVersion.objects.order_by("-created_at", "-id").values("result", "repo", "ref", "sha").first()
    return latest == {"result": ConfigVersion.Result.REJECTED, "repo": repo, "ref": ref, "sha": sha}


def _enforce_blocklist(content: dict) -> None:
    """Connected agents on the blocklist are told to stop in their next heartbeat reply."""
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
