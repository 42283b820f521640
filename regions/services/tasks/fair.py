"""Fair dispatch between tenants of one capability: each tenant (the account
that submitted) has a window of tasks sent to the capability's queue and not
yet claimed; what is beyond it waits in the database (Task.held) and is sent,
highest priority and oldest first, as the tenant's own tasks are claimed. The
capability queue therefore holds at most one window per tenant: a tenant that
floods it waits behind its own work, and another tenant's task is taken after
at most one window of the flood (Hatchet's group round robin, Kubernetes' API
priority and fairness), however long the flood's backlog.

The window is sized from the capability's slots (the summed concurrency of the
online agents that take work, kept by the counters' triggers), so a tenant
alone still keeps every slot busy. Tasks for a named agent (target_agent) go to
that agent's own queue and are not windowed. A task that leaves the window
otherwise than by a claim (cancelled, failed waiting) releases too, and the
sweeper releases whatever a lost release left held (regions/clock/held.py)."""
from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from project.dbbackends import is_postgresql, json_list_has
from regions.models import Agent, CapabilityCounter, Task
from regions.services.tasks.dispatch import send_many

logger = logging.getLogger("regions.services.tasks")  # the lifecycle's log stream, whichever module writes

WINDOWED = (Task.Status.WAITING, Task.Status.QUEUED)  # sent and not yet claimed
HELD_REASON = ("held: {window} tasks of this caller for {capability} are already queued (its fair share); "
               "sent as they start")
_SLOTS_MAX_AGE = 1.0  # seconds a process reuses a capability's slot count
_SLOTS_SEEN_MAX = 10_000
_slots_seen: dict[str, tuple[float, int]] = {}


def windowing() -> bool:
    return settings.TENANT_WINDOW_PER_SLOT > 0


def capability_slots(capability: str) -> int:
    """The summed concurrency of the online agents that take work and serve
    `capability` (read at most once a second per process)."""
    seen = _slots_seen.get(capability)
    now = time.monotonic()
    if seen is not None and now - seen[0] < _SLOTS_MAX_AGE:
        return seen[1]
    if is_postgresql():
        slots = CapabilityCounter.objects.filter(capability=capability).values_list("slots", flat=True).first() or 0
    else:
        slots = (Agent.objects.filter(json_list_has("capabilities", capability), status=Agent.Status.ONLINE,
                                      desired=Agent.Desired.ACTIVE).aggregate(n=Sum("concurrency"))["n"] or 0)
    if len(_slots_seen) >= _SLOTS_SEEN_MAX:  # any name may be submitted: the memory stays bounded
        _slots_seen.clear()
    _slots_seen[capability] = (now, slots)
    return slots


def tenant_window(capability: str) -> int:
    return max(settings.TENANT_WINDOW_MIN, math.ceil(settings.TENANT_WINDOW_PER_SLOT * capability_slots(capability)))


def window_used(*, submitted_by_id, capability: str, window: int) -> int:
    """How many of the tenant's tasks of `capability` are sent and unclaimed,
    counted up to `window` (a partial index holds exactly these rows)."""
    return (Task.objects.filter(submitted_by_id=submitted_by_id, capability=capability, target_agent="",
                                dispatched_at__isnull=False, status__in=WINDOWED)[:window].count())


def hold_beyond_window(tasks: list[Task]) -> None:
    """At submission, before the INSERT: of new tasks (one tenant's), those
    beyond the tenant's window on their capability are held (not sent: no
    dispatched_at, and a reason saying why); the others keep their claimed send."""
    if not windowing():
        return
    room: dict[str, tuple[int, int]] = {}  # capability -> (window, room left)
    for task in tasks:
        if task.target_agent:
            continue
        if task.capability not in room:
            window = tenant_window(task.capability)
            used = window_used(submitted_by_id=task.submitted_by_id, capability=task.capability, window=window)
            room[task.capability] = (window, window - used)
        window, left = room[task.capability]
        if left > 0:
            room[task.capability] = (window, left - 1)
            continue
        task.held, task.dispatched_at = True, None
        # A task waiting for an agent says so first: that is what it waits for.
        task.status_reason = task.status_reason or HELD_REASON.format(window=window, capability=task.capability)


def release_held(*, submitted_by_id, capability: str, refill: bool = False) -> int:
    """Send as many of the tenant's held tasks of `capability` as its window has
    room for, highest priority and oldest first. Concurrent releases skip each
    other's rows; the sends go out after the commit (a refused one is left to
    the outbox sweeper). refill (a claim): only once a quarter of the window is
    free, so a busy capability sends its held tasks several at a time on one
    connection, not one per claim; three quarters of a window still feed the
    agents meanwhile."""
    window = tenant_window(capability) if windowing() else 10 ** 6
    min_room = max(1, window // 4) if refill else 1
    now = timezone.now()
    with transaction.atomic():
        if is_postgresql():  # the claim's path: one statement
            tasks = _release_sql(submitted_by_id=submitted_by_id, capability=capability, window=window,
                                 min_room=min_room, now=now)
        else:
            room = window - window_used(submitted_by_id=submitted_by_id, capability=capability, window=window)
            ids = [] if room < min_room else list(
                Task.objects.filter(held=True, submitted_by_id=submitted_by_id, capability=capability,
                                    status__in=WINDOWED)
                .order_by("-priority", "created_at").select_for_update(skip_locked=True)
                .values_list("id", flat=True)[:room])
            Task.objects.filter(id__in=ids, held=True).update(held=False, dispatched_at=now, status_reason="")
            tasks = list(Task.objects.filter(id__in=ids).only(*_SENT_FIELDS))
        if tasks:
            transaction.on_commit(lambda: send_many(tasks))
    if tasks:
        logger.debug("released %d held tasks of %s for caller %s", len(tasks), capability, submitted_by_id)
    return len(tasks)


_SENT_FIELDS = ("id", "attempt", "capability", "target_agent", "timeout", "priority", "dispatched_at")

# The room left in the caller's window (its sent, unclaimed tasks counted up to
# the window), and that many of its held tasks sent, in one statement.
_RELEASE_SQL = """
WITH used AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM regions_task
        WHERE {caller} AND capability = %(capability)s AND target_agent = ''
          AND dispatched_at IS NOT NULL AND status IN ('waiting', 'queued')
        LIMIT %(window)s
    ) sent
), next AS (
    SELECT id FROM regions_task
    WHERE held AND {caller} AND capability = %(capability)s AND status IN ('waiting', 'queued')
    ORDER BY priority DESC, created_at
    LIMIT (SELECT CASE WHEN %(window)s - n >= %(min_room)s THEN %(window)s - n ELSE 0 END FROM used)
    FOR UPDATE SKIP LOCKED
)
UPDATE regions_task t SET held = false, dispatched_at = %(now)s, status_reason = ''
FROM next WHERE t.id = next.id
RETURNING t.id, t.attempt, t.capability, t.target_agent, t.timeout, t.priority
"""


def _release_sql(*, submitted_by_id, capability: str, window: int, min_room: int, now) -> list[Task]:
    # Equality (not IS NOT DISTINCT FROM) for a caller: the partial indexes serve it.
    caller = "submitted_by_id IS NULL" if submitted_by_id is None else "submitted_by_id = %(caller)s"
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE_SQL.format(caller=caller), {
            "caller": submitted_by_id, "capability": capability, "window": window, "min_room": min_room,
            "now": now})
        rows = cursor.fetchall()
    return [Task(id=row[0], attempt=row[1], capability=row[2], target_agent=row[3], timeout=row[4],
                 priority=row[5], dispatched_at=now) for row in rows]


def held_exists(*, submitted_by_id, capability: str) -> bool:
    return Task.objects.filter(held=True, submitted_by_id=submitted_by_id, capability=capability,
                               status__in=WINDOWED).exists()
