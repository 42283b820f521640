"""Per-process heartbeat batching for the web workers.

A heartbeat costs one Redis round trip if written at once; at 4,000 beats/s
those round trips (syscalls on both sides plus Redis's own CPU on the same
cores) cost more than the Django view itself. So each web process:

- keeps the token digests it has verified (a mismatch always falls through to
  Redis/the database, so a new token works at once),
- keeps the region's `desired` map (small: only non-active agents),
- buffers (agent, time, busy) and writes them every FLUSH_SECONDS in one
  pipeline: ZADD GT (a late flush from another process never rewinds an
  agent's last beat) and one HSET,
- reads the live set's size in the same pipeline: the fleet size the heartbeat
  interval is chosen by (config.heartbeat_timing), at no extra round trip.

Revocation bound. A replaced or withdrawn token is numbered by the region's
revocation sequence in Redis (liveness.rotation_mark), never timestamped: web
hosts' clocks may disagree. Every flush (and so every FLUSH_SECONDS while the
process serves heartbeats) reads the changes numbered after the last it saw
and drops the digests cached before them. A cached digest is trusted only
while the last such sync started at most REVOCATION_BOUND_SECONDS ago (this
process's monotonic clock); otherwise the request syncs first, one round trip,
whether or not the flush thread ever started. So a token changed more than
REVOCATION_BOUND_SECONDS ago is refused by every process; when Redis cannot be
read, a cached token is not trusted and the heartbeat gets 503.

A crashed process loses at most FLUSH_SECONDS of beats, which the TTL absorbs.
If Redis stops answering, the next heartbeats get 503 (see healthy()).
"""
from __future__ import annotations

import logging
import os
import threading
import time

from django.db import DatabaseError

from regions.services import liveness

logger = logging.getLogger(__name__)

DIGEST_TTL = 3600.0
REVOCATION_BOUND_SECONDS = 1.0
# After a failed sync, requests answer 503 for this long without asking Redis
# again (a Redis that does not answer would otherwise cost each one a timeout).
SYNC_RETRY_SECONDS = 0.25


class HeartbeatBuffer:
    def __init__(self, flush_seconds: float, autostart: bool = True,
                 sync_seconds: float = REVOCATION_BOUND_SECONDS):
        self.flush_seconds = flush_seconds
        self.autostart = autostart
        self.sync_seconds = sync_seconds
        self.pending: dict[str, tuple[float, int]] = {}
        # agent -> (digest, expires (monotonic), the revocation sequence seen before it was read)
        self.digests: dict[str, tuple[str, float, int]] = {}
        self.desired: dict[str, str] = {}
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.seq: int | None = None            # token changes applied up to this number
        self.incarnation: str | None = None    # of the Redis data those numbers belong to
        self.synced_at = float("-inf")         # monotonic start of the last successful sync
        self.rotations: dict[str, int] = {}   # agent -> number of its latest change seen
        self.fleet: int | None = None          # agents in the live set at the last sync (ZCARD)
        self._sync_failed_at: float | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._pid: int | None = None

    # --- request side (no I/O while synced) -----------------------------------------
    def digest_for(self, agent_id: str) -> str | None:
        """The digest this process may trust for the agent, or None. Syncs first
        (one round trip; RedisError when it cannot) if the last sync is older
        than the bound."""
        if time.monotonic() - self.synced_at > self.sync_seconds:
            self.sync()
        entry = self.digests.get(agent_id)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember(self, agent_id: str, digest: str, seq: int | None) -> None:
        """Cache a digest read from the database; seq: self.seq taken before that
        read. A change numbered after it, already seen, means the read may be stale."""
        if seq is None:
            return
        with self._lock:
            if self.rotations.get(agent_id, 0) > seq:
                return
            self.digests[agent_id] = (digest, time.monotonic() + DIGEST_TTL, seq)

    def preload(self, limit: int = 500_000) -> int:
        """Load every agent's digest in one query, so a process that just started
        does not verify each agent separately (20,000 agents: one query, ~2 MB).
        Only once synced: each digest is tagged with the sequence seen before the
        query."""
        from regions.models import Agent

        seq = self.seq
        if seq is None:
            return 0
        rows = list(Agent.objects.exclude(token_hash="").values_list("agent_id", "token_hash")
                    .iterator(chunk_size=5000))[:limit]
        expires = time.monotonic() + DIGEST_TTL
        with self._lock:
            for agent_id, digest in rows:
                if self.rotations.get(agent_id, 0) <= seq:
                    self.digests[agent_id] = (digest, expires, seq)
        return len(rows)

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

    # --- sync and flush ------------------------------------------------------------
    def sync(self) -> None:
        """Learn of token changes (and desired states) now. Raises RedisError."""
        if self._sync_failed_at is not None and time.monotonic() - self._sync_failed_at < SYNC_RETRY_SECONDS:
            raise liveness.RedisError(self.last_error or "liveness store unavailable")
        self._exchange({})

    def flush(self) -> int:
        with self._lock:
            batch, self.pending = self.pending, {}
        try:
            self._exchange(batch)
        except liveness.RedisError as exc:
            with self._lock:  # keep the beats: newer ones win
                for agent_id, entry in batch.items():
                    self.pending.setdefault(agent_id, entry)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                logger.warning("heartbeat flush failed, Redis unavailable: %s", exc)
            return 0
        self.failing_since = None
        return len(batch)

    def _exchange(self, batch: dict[str, tuple[float, int]]) -> None:
        """Write the beats and read what changed since the last sync, in one pipeline."""
        reset = False
        with self._sync_lock:  # one at a time: the sequence only moves forward
            started = time.monotonic()
            pipe = liveness.client().pipeline(transaction=False)
            if batch:
                pipe.zadd(liveness.key("live"), {a: ts for a, (ts, _) in batch.items()}, gt=True)
                pipe.hset(liveness.key("busy"), mapping={a: busy for a, (_, busy) in batch.items()})
            pipe.zcard(liveness.key("live"))  # the fleet size the interval is chosen by
            pipe.hgetall(liveness.key("desired"))
            liveness.rotation_sync_queue(pipe, after=self.seq)
            try:
                results = pipe.execute()
            except liveness.RedisError as exc:
                self._sync_failed_at = time.monotonic()
                self.last_error = str(exc)
                raise
            fleet, desired, _, incarnation, seq, changes = results[-6:]
            self.fleet = int(fleet)
            reset = self._apply(incarnation, int(seq or 0), changes)
            self.desired = desired
            self.synced_at = started
            self._sync_failed_at = None
            self.last_error = None
        if reset:
            try:
                self.preload()
            except DatabaseError as exc:  # each agent is then verified on its next heartbeat
                logger.warning("could not reload the token digests: %s", exc)

    def _apply(self, incarnation: str, seq: int, changes: list[tuple[str, float]]) -> bool:
        """Drop the digests cached before a change to their agent's token. True
        when nothing cached can be trusted any more (cleared: reload)."""
        with self._lock:
            if self.seq is not None and (incarnation != self.incarnation or seq < self.seq
                                         or seq - self.seq > liveness.ROTATION_KEEP):
                # Redis lost its data, or more changed than it keeps a record of.
                logger.warning("token changes since sequence %s unknown; dropping every cached token", self.seq)
                self.digests.clear()
                self.rotations.clear()
                self.seq, self.incarnation = seq, incarnation
                return True
            for agent_id, number in changes:
                number = int(number)
                if number > self.rotations.get(agent_id, 0):
                    self.rotations[agent_id] = number
                entry = self.digests.get(agent_id)
                if entry is not None and entry[2] < number:  # read before that change
                    self.digests.pop(agent_id, None)
            self.seq = seq if self.seq is None else max(self.seq, seq)
            self.incarnation = incarnation
            return False

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
        try:
            buffer.sync()  # preloads once it knows the sequence; else digests fill lazily
        except liveness.RedisError:
            pass
        else:
            buffer.preload()
        _buffer = buffer
    return _buffer
