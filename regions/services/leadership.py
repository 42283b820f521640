"""The clock lease: any number of orchestrators per region, one runs the clock jobs.

Every orchestrator started with --beat stands for the lease (one ClockLease row).
The holder renews it every ORCHESTRATOR_LEASE_RENEW_SECONDS; when it stops
renewing (killed, frozen, cut from the database) the lease runs out after
ORCHESTRATOR_LEASE_SECONDS and the first standby to ask takes it, raising the
token by one. Time is the database's (statement_timestamp() on PostgreSQL), so
orchestrators on hosts with skewed clocks agree on when a lease ends.

Only the holder's beat sends clock jobs, each with the token in a message header
(FENCE_HEADER). Whichever orchestrator's worker runs the job runs it `fenced`:
before each database write it makes, the job checks in the write's own
transaction that the token is still the lease's, holding a share lock on the row
until that transaction ends (PostgreSQL's FOR KEY SHARE, which renewals do not wait
for; a transaction left idle by a frozen process is ended by the server after a
lease's length; on SQLite, the demo's one-host store, the
check is itself a write, SQLite has one writer at a time, and a write outside a
transaction is checked just before it). A takeover updates the row, so it waits for
writes already checked to commit, and every write after it fails the check
(`Fenced`): a leader paused past its lease that wakes up cannot act on it. This is
Kubernetes' leader election with a fencing token (Kleppmann's "How to do
distributed locking").
"""
from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from regions.models import ClockLease, Orchestrator

logger = logging.getLogger(__name__)

CLOCK = "clock"
FENCE_HEADER = "meridian_fence"
# Statements that change rows (a CTE may hide one).
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


class Fenced(Exception):
    """A clock job's lease token is no longer the lease's: another orchestrator took it."""


@dataclass(frozen=True)
class LeaseState:
    held: bool
    token: int | None     # ours when held
    leader: str           # the holder as the row says ("" when nobody ever held it)
    expires_at: datetime | None


def db_now() -> datetime:
    """The database's clock (SQLite, the demo's single-host store, has the host's)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


def lease_keep(*, holder: str, token: int | None, started_at: datetime) -> LeaseState:
    """Renew our lease, or take it if it has run out; say who leads otherwise.

    `token` is the one we hold (None when standing by). A holder that let its own
    lease run out takes it again under a new token, as anyone else would. Never
    waits longer than a renewal interval for a lock (PostgreSQL's lock_timeout)."""
    with transaction.atomic():
        _set_local("lock_timeout", settings.ORCHESTRATOR_LEASE_RENEW_SECONDS)
        now = db_now()
        until = now + timedelta(seconds=settings.ORCHESTRATOR_LEASE_SECONDS)
        Orchestrator.objects.update_or_create(name=holder, defaults={"seen_at": now},
                                              create_defaults={"started_at": started_at, "seen_at": now})
        # A renewal changes no key column: PostgreSQL takes FOR NO KEY UPDATE, which the fenced
        # writes' FOR KEY SHARE neither waits for nor blocks. Only a takeover waits for them.
        if token is not None and ClockLease.objects.filter(
                name=CLOCK, holder=holder, token=token, expires_at__gt=now).update(renewed_at=now, expires_at=until):
            return LeaseState(True, token, holder, until)
        lease, _ = ClockLease.objects.get_or_create(
            name=CLOCK, defaults={"holder": "", "token": 0, "acquired_at": now, "renewed_at": now, "expires_at": now})
        if lease.expires_at > now:
            return LeaseState(False, None, lease.holder, lease.expires_at)
        try:
            with transaction.atomic():
                # FOR UPDATE: waits for every clock-job transaction still writing under the old token.
                lease = ClockLease.objects.select_for_update().get(name=CLOCK)
        except OperationalError:  # lock_timeout: they are still at it (the next renewal asks again)
            logger.info("clock lease takeover waits: clock jobs of token %d are still in their transactions",
                        lease.token)
            return LeaseState(False, None, lease.holder, lease.expires_at)
        now = db_now()
        if lease.expires_at > now:  # renewed, or taken by another standby, meanwhile
            return LeaseState(False, None, lease.holder, lease.expires_at)
        until = now + timedelta(seconds=settings.ORCHESTRATOR_LEASE_SECONDS)
        ClockLease.objects.filter(name=CLOCK, token=lease.token).update(
            holder=holder, token=lease.token + 1, acquired_at=now, renewed_at=now, expires_at=until)
        Orchestrator.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()  # processes long gone
        # Taking it over from another holder is news; the first holder of a region is not.
        (logger.warning if lease.holder not in ("", holder) else logger.info)(
            "took the clock lease as %s (token %d)%s", holder, lease.token + 1,
            f" from {lease.holder}, {(now - lease.expires_at).total_seconds():.1f}s after it ran out"
            if lease.holder else "")
        return LeaseState(True, lease.token + 1, holder, until)


def _set_local(name: str, seconds: float) -> None:
    """A PostgreSQL setting for the rest of this transaction (SET LOCAL)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [name, f"{max(1, int(seconds * 1000))}ms"])


def lease_release(*, holder: str, token: int) -> bool:
    """End our lease now (a clean shutdown), so a standby need not wait it out."""
    with transaction.atomic():
        now = db_now()
        released = ClockLease.objects.filter(name=CLOCK, holder=holder, token=token, expires_at__gt=now).update(
            expires_at=now)
        Orchestrator.objects.filter(name=holder).delete()
    return bool(released)


# --- fencing ---------------------------------------------------------------------

_local = threading.local()


def _check(conn, token: int) -> None:
    table = conn.ops.quote_name(ClockLease._meta.db_table)
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            # A key-share lock until this transaction ends: a takeover (FOR UPDATE) waits for it,
            # a renewal does not. A transaction left open by a frozen process would hold the takeover
            # for as long as the server lets it idle: a lease's length here.
            cursor.execute(f"SELECT token, set_config('idle_in_transaction_session_timeout', %s, true) "
                           f"FROM {table} WHERE name = %s FOR KEY SHARE",
                           [f"{max(1, int(settings.ORCHESTRATOR_LEASE_SECONDS * 1000))}ms", CLOCK])
            row = cursor.fetchone()
            current = row[0] if row else None
        else:
            cursor.execute(f"UPDATE {table} SET token = token WHERE name = %s AND token = %s", [CLOCK, token])
            current = token if cursor.rowcount == 1 else "another"
    if current != token:
        raise Fenced(f"clock lease token {token} is no longer the lease's ({current})")


class _Fence:
    """A database execute wrapper: every write checks the token in its transaction."""

    def __init__(self, token: int):
        self.token = token
        self.checking = False
        self.paused = False

    def __call__(self, execute, sql, params, many, context):
        if self.checking or self.paused or not _WRITE.match(sql):
            return execute(sql, params, many, context)
        conn = context["connection"]
        if conn.in_atomic_block or conn.vendor == "sqlite":
            # SQLite (the demo's one-host store) cannot commit while a write's RETURNING rows are
            # unread: a write outside a transaction is checked just before it, not in its transaction.
            self._checked(conn)
            return execute(sql, params, many, context)
        with transaction.atomic(using=conn.alias):
            self._checked(conn)
            return execute(sql, params, many, context)

    def _checked(self, conn) -> None:
        self.checking = True
        try:
            _check(conn, self.token)
        finally:
            self.checking = False


@contextmanager
def fenced(token: int):
    """Run a clock job under `token`: each of its database writes raises Fenced
    once the lease has moved on."""
    previous = getattr(_local, "fence", None)
    _local.fence = fence = _Fence(token)
    try:
        with connection.execute_wrapper(fence):
            yield
    finally:
        _local.fence = previous


@contextmanager
def unfenced():
    """Writes that record a side effect already made (a callback POSTed, a send
    the broker refused) even after the lease moved on: refusing them would lose
    the record, not undo the effect. Their own guards (a row's lease token, the
    attempt) still apply."""
    fence = getattr(_local, "fence", None)
    if fence is None:
        yield
        return
    paused, fence.paused = fence.paused, True
    try:
        yield
    finally:
        fence.paused = paused


def fence_check() -> None:
    """Raise Fenced now if this thread runs a clock job whose lease has moved on:
    for a job about to write somewhere other than the database (Redis, the broker)."""
    fence = getattr(_local, "fence", None)
    if fence is None:
        return
    with transaction.atomic():
        fence._checked(connection)
