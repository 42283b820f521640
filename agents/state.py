"""The local outbox and credential of an agent (its own state directory).

An outcome is written to the outbox before it is reported and removed once
delivered; the credential is kept so that a restarted agent can deliver what it
finished before it died, and prove who it is when it registers again.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.conf import settings


def state_dir(agent_id: str) -> Path:
    path = Path(settings.AGENT_STATE_DIR) / agent_id
    (path / "outbox").mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _outbox_path(agent_id: str, task_id: str, attempt: int) -> Path:
    return state_dir(agent_id) / "outbox" / f"{task_id}.{attempt}.json"


def _write_private(path: Path, data: dict) -> None:
    """Owner-only, and whole or not at all: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    tmp.replace(path)


def outbox_put(agent_id: str, *, kind: str, task_id: str, attempt: int, body: dict) -> Path:
    path = _outbox_path(agent_id, task_id, attempt)
    _write_private(path, {"kind": kind, "task_id": task_id, "attempt": attempt, "body": body})
    return path


def credential_save(agent_id: str, *, region_url: str, token: str) -> None:
    """Kept so that a restarted agent can deliver what it finished before it died."""
    _write_private(state_dir(agent_id) / "credential.json", {"region_url": region_url, "token": token})


def credential_load(agent_id: str, *, region_url: str) -> str | None:
    """The token this agent saved for that region, if any: sent when it registers
    again, to prove it is the agent holding the id (never sent to another region)."""
    try:
        saved = json.loads((state_dir(agent_id) / "credential.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or str(saved.get("region_url", "")).rstrip("/") != region_url.rstrip("/"):
        return None
    token = saved.get("token")
    return token if isinstance(token, str) and token else None


def outbox_get(agent_id: str, *, task_id: str, attempt: int) -> dict | None:
    try:
        return json.loads(_outbox_path(agent_id, task_id, attempt).read_text())
    except (OSError, ValueError):
        return None


def outbox_pending(agent_id: str, *, min_age: float = 0.0) -> list[Path]:
    """The outbox's entries at least min_age seconds old, in name order."""
    cutoff = time.time() - min_age
    return sorted(p for p in (state_dir(agent_id) / "outbox").glob("*.json") if p.stat().st_mtime <= cutoff)


def credential_saved(agent_id: str) -> tuple[str, str] | None:
    """The region URL and token this agent saved last, whatever the region; None if unreadable."""
    try:
        saved = json.loads((state_dir(agent_id) / "credential.json").read_text())
        return saved["region_url"], saved["token"]
    except (OSError, ValueError, KeyError):
        return None
