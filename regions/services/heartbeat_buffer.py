"""Per-process heartbeat batching for the web workers.

A heartbeat costs one Redis round trip if written at once; at 4,000 beats/s
those round trips (syscalls on both sides plus Redis's own CPU on the same
cores) cost more than the Django view itself. So each web process:

- keeps the token digests it has verified (a mismatch always falls through to
  Redis/the database, so a new token works at once; a replaced or withdrawn
  one is dropped within one flush, through the `rotated` set),
- keeps the region's `desired` map (small: only non-active agents), refreshed on
  every flush,
- buffers (agent, time, busy) and writes them every FLUSH_SECONDS in one
  pipeline: ZADD GT (a late flush from another process never rewinds an
  agent's last beat) and one HSET.

A crashed process loses at most FLUSH_SECONDS of beats, which the TTL absorbs.
If Redis stops answering, the next heartbeats get 503 (see healthy()).
"""
from __future__ import annotations

import logging
import os
import threading
import time

from regions.services import liveness

logger = logging.getLogger(__name__)

DIGEST_TTL = 3600.0


class HeartbeatBuffer:
    def __init__(self, flush_seconds: float, autostart: bool = True):
        self.flush_seconds = flush_seconds
        self.autostart = autostart
        self.pending: dict[str, tuple[float, int]] = {}
        self.digests: dict[str, tuple[str, float, float]] = {}  # agent -> (digest, expires, verified at)
        self.desired: dict[str, str] = {}
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    # --- request side (no I/O) -------------------------------------------------
    def digest_for(self, agent_id: str) -> str | None:
        entry = self.digests.get(agent_id)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember(self, agent_id: str, digest: str) -> None:
        self.digests[agent_id] = (digest, time.monotonic() + DIGEST_TTL, time.time())

    def preload(self, limit: int = 500_000) -> int:
        """Load every agent's digest in one query, so a process that just started
        does not verify each agent separately (20,000 agents: one query, ~2 MB)."""
        from regions.models import Agent

        verified_at = time.time()
        expires = time.monotonic() + DIGEST_TTL
        count = 0
        for agent_id, digest in (Agent.objects.exclude(token_hash="").values_list("agent_id", "token_hash")
                                 .iterator(chunk_size=5000)):
            self.digests[agent_id] = (digest, expires, verified_at)
            count += 1
            if count >= limit:
                break
        return count

    def forget(self, agent_id: str) -> None:
        self.digests.pop(agent_id, None)

    def record(self, agent_id: str, ts: float, busy: int) -> str:
        if self.autostart:
            self._ensure_thread()
        with self._lock:
            self.pending[agent_id] = (ts, busy)
        return self.desired.get(agent_id, "active")

    def healthy(self) -> bool:
        """False once flushes have failed for longer than two flush periods (1 s at least)."""
        grace = max(2 * self.flush_seconds, 1.0)
        return self.failing_since is None or time.monotonic() - self.failing_since < grace

    # --- flusher -----------------------------------------------------------------
    def flush(self) -> int:
        with self._lock:
            batch, self.pending = self.pending, {}
        pipe = liveness.client().pipeline(transaction=False)
        if batch:
            pipe.zadd(liveness.key("live"), {a: ts for a, (ts, _) in batch.items()}, gt=True)
            pipe.hset(liveness.key("busy"), mapping={a: busy for a, (_, busy) in batch.items()})
        pipe.hgetall(liveness.key("desired"))
        pipe.zrangebyscore(liveness.key("rotated"), time.time() - liveness.ROTATION_WINDOW, "+inf",
                           withscores=True)
        try:
            results = pipe.execute()
        except liveness.RedisError as exc:
            with self._lock:  # keep the beats: newer ones win
                for agent_id, entry in batch.items():
                    self.pending.setdefault(agent_id, entry)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                logger.warning("heartbeat flush failed, Redis unavailable: %s", exc)
            self.last_error = str(exc)
            return 0
        self.desired = results[-2]
        for agent_id, rotated_at in results[-1]:
            entry = self.digests.get(agent_id)
            if entry is not None and entry[2] <= rotated_at:  # verified before the rotation
                self.digests.pop(agent_id, None)
        self.failing_since = None
        self.last_error = None
        return len(batch)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # after a fork the parent's thread is gone
            threading.Thread(target=self._run, name="heartbeat-flush", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            try:
                self.flush()
            except Exception:  # the flusher must never die
                logger.exception("heartbeat flush crashed")


_buffer: HeartbeatBuffer | None = None


def get_buffer() -> HeartbeatBuffer | None:
    """The process's buffer, or None when HEARTBEAT_FLUSH_SECONDS is 0 (write-through)."""
    global _buffer
    from django.conf import settings

    if settings.HEARTBEAT_FLUSH_SECONDS <= 0:
        return None
    if _buffer is None:
        buffer = HeartbeatBuffer(settings.HEARTBEAT_FLUSH_SECONDS)
        buffer.preload()
        _buffer = buffer
    return _buffer
