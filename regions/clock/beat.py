"""The orchestrator's beat: sends the clock jobs while, and only while, it holds
the clock lease (regions/services/leadership.py).

Runs as a thread of the orchestrator's main process, so the lease dies with the
process that holds it: killed, the renewals stop; frozen, they stop too, and the
thread that wakes up asks again before it sends anything. A standby's beat ticks
through the same schedule without sending, so when it takes over it carries on
where its own clock stands. The schedule is kept in memory: every job is an
interval, and what must happen once per due time (schedules) is fenced in the
database, not by a file."""
from __future__ import annotations

import copy
import logging
import os
import secrets
import socket
import time

from celery import beat
from django.conf import settings
from django.db import Error, close_old_connections
from django.utils import timezone

from regions.services.leadership import FENCE_HEADER, lease_keep, lease_release

logger = logging.getLogger(__name__)


def orchestrator_name() -> str:
    # A restarted container keeps its hostname and, as PID 1, its pid: the suffix tells the two apart.
    return f"orchestrator-{secrets.token_hex(3)}@{socket.gethostname()}:{os.getpid()}"


class LeaderScheduler(beat.Scheduler):
    """A Celery beat scheduler that sends a due job only while holding the lease,
    with the lease's token in the FENCE_HEADER of every message."""

    def __init__(self, *args, **kwargs):
        self.holder = orchestrator_name()
        self.started_at = timezone.now()
        self.token: int | None = None
        self.leader = ""
        self._valid_until = 0.0
        self._next_keep = 0.0
        self._store_error = self._tick_error = ""
        super().__init__(*args, **kwargs)

    def leading(self) -> bool:
        # Stop sending one renewal before the lease could run out on the database's clock.
        return self.token is not None and time.monotonic() < self._valid_until

    def tick(self, *args, **kwargs):
        if time.monotonic() >= self._next_keep:
            self.keep()
        try:
            delay = super().tick(*args, **kwargs)
            self._tick_error = ""
        except Exception as exc:  # noqa: BLE001 - e.g. the broker connection beat opens: the thread must go on
            line = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            if line != self._tick_error:
                logger.warning("beat tick failed (%s); the next one retries", line)
            self._tick_error = line
            delay = settings.ORCHESTRATOR_LEASE_RENEW_SECONDS
        return max(0.0, min(delay, self._next_keep - time.monotonic()))

    def keep(self) -> None:
        asked = time.monotonic()
        self._next_keep = asked + settings.ORCHESTRATOR_LEASE_RENEW_SECONDS
        try:
            close_old_connections()
            state = lease_keep(holder=self.holder, token=self.token, started_at=self.started_at)
        except Exception as exc:  # noqa: BLE001 - the beat thread must outlive any failure; the next renewal retries
            text = str(exc).strip()
            line = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            if line != self._store_error:
                log = logger.warning if isinstance(exc, Error) else logger.exception
                log("clock lease: could not ask the database (%s); %s", line,
                    "leading until the lease runs out" if self.leading() else "standing by")
            self._store_error = line
            return
        self._store_error = ""
        if state.held:
            self.token = state.token  # (lease_keep logs a new token)
            self._valid_until = asked + settings.ORCHESTRATOR_LEASE_SECONDS - settings.ORCHESTRATOR_LEASE_RENEW_SECONDS
        else:
            if self.token is not None:
                logger.warning("lost the clock lease (token %d) to %s: standing by", self.token, state.leader)
            elif state.leader != self.leader:
                logger.info("standing by: %s runs the clock jobs", state.leader or "nobody")
            self.token = None
        self.leader = state.leader

    def _ensure_connected(self):
        # One attempt, not Celery's retry-forever (broker_connection_max_retries): a broker away at
        # start would hold this thread, and the lease's renewals with it. The next tick tries again.
        return self.connection.ensure_connection(max_retries=1)

    def apply_entry(self, entry, producer=None):
        if not self.leading():
            return
        entry = copy.copy(entry)
        entry.options = {**entry.options, "headers": {**(entry.options.get("headers") or {}),
                                                      FENCE_HEADER: self.token}}
        super().apply_entry(entry, producer=producer)

    def close(self):
        if self.token is not None:
            try:
                close_old_connections()
                if lease_release(holder=self.holder, token=self.token):
                    logger.info("released the clock lease (token %d)", self.token)
            except Error as exc:
                logger.warning("clock lease not released (%s): a standby takes it when it runs out", exc)
            self.token = None
        super().close()


def beat_thread(app):
    """The beat service as a daemon thread of this process (started, returned)."""
    service = beat.EmbeddedService(app, thread=True, scheduler_cls=LeaderScheduler)
    service.start()
    return service
