"""Reads of the region's state."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection
from django.db.models import Count, Prefetch, Q, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone

from project.dbbackends import json_list_has
from regions.attention import LAST_HOUR, attention_items, capabilities_served
from regions.models import (Agent, CallbackAttempt, CallbackDelivery, ConfigVersion, DeadLetter, Task, Workflow,
                            WorkflowStep)
from regions.services import liveness


def task_list(*, user, see_all: bool = False, status: str | None = None,
              capability: str | None = None) -> QuerySet[Task]:
    """The tasks `user` submitted; every caller's with see_all (a scope says so)."""
    qs = Task.objects.all()
    if not see_all:
        qs = qs.filter(submitted_by=user)
    if status:
        qs = qs.filter(status=status)
    if capability:
        qs = qs.filter(capability=capability)
    return qs


def task_get(*, user, task_id, see_all: bool = False) -> Task | None:
    return task_list(user=user, see_all=see_all).filter(id=task_id).first()


def task_location(*, task_id) -> dict | None:
    """Where a task stands, for the router's task finder: its status,
    capability and times only. The payload, result and error are never read
    (data residency: the router never sees task data)."""
    return Task.objects.filter(id=task_id).values("status", "capability", "created_at", "finished_at").first()


def task_callback(task: Task) -> dict | None:
    """The task's completion callback: its state and every attempt so far."""
    delivery = CallbackDelivery.objects.filter(task_id=task.id).values(
        "state", "attempts", "next_attempt_at", "delivered_at").first()
    if delivery is None:
        return None
    attempts = CallbackAttempt.objects.filter(task_id=task.id).order_by("number").values(
        "number", "at", "outcome", "response_code", "error", "duration_ms")
    return {**delivery, "attempts": list(attempts)}


def tasks_by_id(*, user, ids: list[str], see_all: bool = False) -> dict[str, Task]:
    """The caller's tasks among these ids, by id (others' and unknown ids left out)."""
    return {str(task.id): task for task in task_list(user=user, see_all=see_all).filter(id__in=ids)}


def task_wait_reason(task: Task, *, now: datetime | None = None) -> str:
    """Why the current attempt of an unfinished task is not running yet, from
    its row (no query): its recorded reason (no agent, held by fair dispatch,
    requeued, retrying), or where it waits. Empty for a running or finished
    task. Never the previous attempt's error: that is its attempt's."""
    from wire.protocol import agent_queue, capability_queue

    if task.status not in Task.PENDING:
        return ""
    now = now or timezone.now()
    reason = task.status_reason
    if task.status == Task.Status.RETRYING and task.not_before and task.not_before > now:
        return f"{reason or 'retrying'}; queued again at {task.not_before.astimezone(dt_timezone.utc):%H:%M:%S} UTC"
    if reason:
        return reason
    if task.held:
        return f"held: beyond its caller's fair share on {task.capability}; sent when one of theirs finishes"
    if task.dispatched_at is None:
        return "not on the broker yet: the sweeper sends it"
    where = f"agent {task.target_agent}" if task.target_agent else f"free agent serving {task.capability}"
    queue = agent_queue(task.target_agent) if task.target_agent else capability_queue(task.capability)
    return f"queued on {queue} until a {where} takes it"


def agent_get(*, agent_id: str) -> Agent | None:
    return Agent.objects.filter(agent_id=agent_id).first()


def agent_list(*, status: str | None = None, capability: str | None = None) -> QuerySet[Agent]:
    qs = Agent.objects.all()
    if status:
        qs = qs.filter(status=status)
    if capability:
        qs = qs.filter(json_list_has("capabilities", capability))
    return qs


def agent_running_tasks(*, agent_id: str) -> list[str]:
    return [str(t) for t in Task.objects.filter(agent=agent_id, status=Task.Status.RUNNING)
            .values_list("id", flat=True)]


def agent_live_view(agent: Agent) -> dict:
    """The database row overlaid with Redis's exact liveness, when Redis answers."""
    try:
        seen, busy = liveness.agent_last_seen(agent_id=agent.agent_id)
    except liveness.RedisError:
        return {"live_last_seen": None, "live_busy": None, "liveness": "unavailable"}
    return {"live_last_seen": seen, "live_busy": busy, "liveness": "ok"}


def region_status() -> dict:
    agents = Agent.objects.aggregate(
        online=Count("id", filter=Q(status=Agent.Status.ONLINE)),
        offline=Count("id", filter=Q(status=Agent.Status.OFFLINE)),
        busy=Count("id", filter=Q(status=Agent.Status.ONLINE, busy=True)),
    )
    tasks = dict(Task.objects.filter(status__in=Task.ACTIVE).values_list("status").annotate(n=Count("id")))
    status = {
        "region_id": settings.REGION_ID,
        "regional_orchestrator_url": settings.REGION_URL,
        "agents": agents,
        "tasks_active": tasks,
        "heartbeat_interval": settings.HEARTBEAT_INTERVAL,
        "heartbeat_ttl": settings.HEARTBEAT_TTL,
    }
    try:
        status["liveness"] = {"ok": True, "live_agents": liveness.live_count(), "eviction_hold": liveness.hold_get()}
    except liveness.RedisError as exc:
        status["liveness"] = {"ok": False, "error": f"liveness store unavailable: {exc}"}
    status["clock"] = clock_leadership()
    return status


def clock_leadership() -> dict:
    """Who runs the clock jobs (the clock lease, regions/services/leadership.py)
    and the orchestrators heard standing for it lately, on the database's clock."""
    from regions.models import ClockLease, Orchestrator
    from regions.services.leadership import CLOCK, db_now

    now = db_now()
    recent = now - timedelta(seconds=3 * settings.ORCHESTRATOR_LEASE_SECONDS + 2)
    lease = ClockLease.objects.filter(name=CLOCK).first()
    held = lease is not None and lease.expires_at > now
    leader = lease.holder if held else ""
    heard = list(Orchestrator.objects.filter(seen_at__gte=recent).values_list("name", "seen_at"))
    return {
        "leader": leader,
        "last_leader": lease.holder if lease else "",
        "token": lease.token if lease else 0,
        "expires_in": round((lease.expires_at - now).total_seconds(), 1) if lease else None,
        "leading_since": lease.acquired_at if held else None,
        "orchestrators": [{"name": name, "leading": name == leader, "seen_s_ago": round((now - seen).total_seconds(), 1)}
                          for name, seen in heard],
        "standbys": [name for name, _ in heard if name != leader],
    }


# --- the fleet overview (admin home, manage.py fleet_status) ------------------------
# Counts and GROUP BYs only: the page costs the same at 100 agents and 100,000.

OVERVIEW_WINDOW = LAST_HOUR
WAIT_BUCKET_SECONDS = 300

# Queue wait (queued -> started) and run duration (started -> finished) per
# 5-minute bucket: its count, nearest-rank p50 and p95, in one query each
# (window functions: PostgreSQL, and SQLite for the demo). A bucket is the
# minute the span ended in.
_PERCENTILES_SQL = """
    WITH w AS (
        SELECT bucket, value, ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY value) AS rn,
               COUNT(*) OVER (PARTITION BY bucket) AS n
        FROM (SELECT {bucket} AS bucket, {value} AS value FROM regions_task
              WHERE {end} >= %s AND {end} IS NOT NULL AND {start} IS NOT NULL) AS t
    )
    SELECT bucket, MAX(n), MAX(CASE WHEN rn = (n + 1) / 2 THEN value END),
           MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN value END)
    FROM w GROUP BY bucket"""
# The current attempt's wait: from when it was queued (a retry, a requeue, a
# backoff's end), not from the task's creation (a manual retry two minutes
# after the failure is no queue wait).
_WAIT_START = "COALESCE(queued_at, created_at)"
_SPAN_EXPR = {
    "postgresql": {"bucket": "FLOOR(EXTRACT(EPOCH FROM {end}) / %d)::bigint" % WAIT_BUCKET_SECONDS,
                   "value": "GREATEST(EXTRACT(EPOCH FROM {end} - {start}), 0)"},
    "sqlite": {"bucket": "CAST(strftime('%%%%s', {end}) AS INTEGER) / %d" % WAIT_BUCKET_SECONDS,
               "value": "MAX((julianday({end}) - julianday({start})) * 86400.0, 0)"},
}


def _span_sql(vendor: str, *, start: str, end: str) -> str | None:
    expr = _SPAN_EXPR.get(vendor)
    if expr is None:
        return None
    return _PERCENTILES_SQL.format(bucket=expr["bucket"].format(end=end),
                                   value=expr["value"].format(start=start, end=end), start=start, end=end)


_WAIT_SQL = {vendor: _span_sql(vendor, start=_WAIT_START, end="started_at") for vendor in _SPAN_EXPR}
_RUN_SQL = {vendor: _span_sql(vendor, start="started_at", end="finished_at") for vendor in _SPAN_EXPR}

AGENT_STATES = ("online idle", "online busy", "cordoned", "draining", "offline", "revoked")
_ONLINE, _KEPT = Q(status=Agent.Status.ONLINE), ~Q(desired=Agent.Desired.STOPPED)
# Each agent in exactly one state, as the agent list names it
# (regions.admin.agents.agent_state); the agent list's "state" filter uses the same.
AGENT_STATE_FILTERS: dict[str, Q] = {
    "online idle": _ONLINE & Q(desired=Agent.Desired.ACTIVE, busy=False),
    "online busy": _ONLINE & Q(desired=Agent.Desired.ACTIVE, busy=True),
    "cordoned": _ONLINE & Q(desired=Agent.Desired.CORDONED),
    "draining": _ONLINE & Q(desired=Agent.Desired.DRAINING),
    "offline": Q(status=Agent.Status.OFFLINE) & _KEPT,
    # Revoked whatever its row's status (it goes offline once it stops): not a lost agent.
    "revoked": Q(desired=Agent.Desired.STOPPED),
    "stopped": Q(status=Agent.Status.STOPPED) & _KEPT,  # deregistered: shown when there are any
}


def agent_state_counts() -> dict[str, int]:
    """Agents by the state an operator acts on: online ones by what the region
    wants of them (cordoned, draining) and whether they run something; offline;
    revoked; stopped. One aggregate query."""
    counts = Agent.objects.aggregate(**{name.replace(" ", "_"): Count("id", filter=q)
                                        for name, q in AGENT_STATE_FILTERS.items()})
    return {name.replace("_", " "): n for name, n in counts.items()}


def agent_list_in_state(qs: QuerySet[Agent], *, state: str) -> QuerySet[Agent]:
    """The agents of `qs` in `state` (a key of AGENT_STATE_FILTERS; spaces or underscores)."""
    return qs.filter(AGENT_STATE_FILTERS[state.replace("_", " ")])


def task_throughput(*, since: datetime, until: datetime) -> list[dict]:
    """Tasks finished per minute, [{"minute", "succeeded", "failed", "cancelled"}]
    for every minute of the window (empty minutes included)."""
    rows = (Task.objects.filter(finished_at__gte=since, finished_at__lt=until,
                                status__in=[Task.Status.SUCCEEDED, Task.Status.FAILED, Task.Status.CANCELLED])
            .annotate(minute=TruncMinute("finished_at")).values("minute", "status").annotate(n=Count("id")))
    start = since.replace(second=0, microsecond=0)
    minutes = int((until - start).total_seconds() // 60) + 1
    series = [{"minute": start + timedelta(minutes=i), "succeeded": 0, "failed": 0, "cancelled": 0}
              for i in range(minutes)]
    for row in rows:
        i = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= i < minutes:
            series[i][row["status"]] += row["n"]
    return series


def task_queue_wait(*, since: datetime, until: datetime) -> list[dict]:
    """Queue wait of the attempts started in the window (from when the attempt
    was queued), per 5-minute bucket: [{"start", "count", "p50", "p95"}]
    (seconds; None for a bucket without starts)."""
    return _percentiles(_WAIT_SQL.get(connection.vendor), since=since, until=until)


def task_run_duration(*, since: datetime, until: datetime) -> list[dict]:
    """How long the tasks finished in the window ran (started -> finished), per
    5-minute bucket: [{"start", "count", "p50", "p95"}] as task_queue_wait."""
    return _percentiles(_RUN_SQL.get(connection.vendor), since=since, until=until)


def _percentiles(sql: str | None, *, since: datetime, until: datetime) -> list[dict]:
    found = {}
    if sql is not None:
        with connection.cursor() as cur:
            cur.execute(sql, [since])
            found = {int(bucket): (int(n), float(p50), float(p95)) for bucket, n, p50, p95 in cur.fetchall()}
    first = int(since.timestamp()) // WAIT_BUCKET_SECONDS
    last = int(until.timestamp()) // WAIT_BUCKET_SECONDS
    out = []
    for bucket in range(first, last + 1):
        n, p50, p95 = found.get(bucket, (0, None, None))
        out.append({"start": datetime.fromtimestamp(bucket * WAIT_BUCKET_SECONDS, tz=dt_timezone.utc),
                    "count": n, "p50": p50, "p95": p95})
    return out


def task_outcomes_by_capability(*, since: datetime) -> list[dict]:
    """[{"capability", "succeeded", "failed"}] of tasks finished since, most failures first."""
    rows = (Task.objects.filter(finished_at__gte=since, status__in=[Task.Status.SUCCEEDED, Task.Status.FAILED])
            .values("capability", "status").annotate(n=Count("id")))
    caps: dict[str, dict] = {}
    for row in rows:
        caps.setdefault(row["capability"], {"capability": row["capability"], "succeeded": 0, "failed": 0})
        caps[row["capability"]][row["status"]] = row["n"]
    return sorted(caps.values(), key=lambda c: (-c["failed"], c["capability"]))


BROKER_TIMEOUT_SECONDS = 2.0
# Every open overview asks every 10 s, in each web worker: the broker's answer
# (or its silence) serves the asks of the next few seconds in the same process.
BROKER_DEPTHS_TTL_SECONDS = 5.0
_depths_seen: dict[tuple, tuple[float, dict]] = {}
QUEUES_SHOWN = 30


def overview_queues(*, capabilities: list[str] = ()) -> list[str]:
    """The broker queues the overview shows: the orchestrator's two, and one per
    capability that is served, has tasks in flight or finished some lately
    (`capabilities`); at most QUEUES_SHOWN."""
    from regions.services.capabilities import live_capabilities
    from wire.protocol import CONTROL_QUEUE, REPORTS_QUEUE, capability_queue

    caps = set(capabilities) | live_capabilities()
    caps |= set(Task.objects.filter(status__in=Task.ACTIVE).values_list("capability", flat=True).distinct())
    return [CONTROL_QUEUE, REPORTS_QUEUE] + [capability_queue(c) for c in sorted(caps)][:QUEUES_SHOWN - 2]


def broker_queue_depths(*, queues: list[str], url: str | None = None,
                        timeout: float = BROKER_TIMEOUT_SECONDS) -> dict:
    """broker_queue_depths_now(), as this process saw it within the last
    BROKER_DEPTHS_TTL_SECONDS: a broker that does not answer costs an overview
    `timeout` once in that time, and one connection serves every open page."""
    url = url or settings.CELERY_BROKER_URL
    key, now = (url, tuple(queues)), time.monotonic()
    seen = _depths_seen.get(key)
    if seen is None or now - seen[0] > BROKER_DEPTHS_TTL_SECONDS:
        if len(_depths_seen) > 64:
            _depths_seen.clear()
        seen = _depths_seen[key] = (now, broker_queue_depths_now(queues=queues, url=url, timeout=timeout))
    return seen[1]


def broker_queue_depths_now(*, queues: list[str], url: str, timeout: float = BROKER_TIMEOUT_SECONDS) -> dict:
    """Messages ready and consumers of each queue, from the region's broker (a
    passive declare: nothing is created), as {"ok", "error", "queues": [{"queue",
    "messages", "consumers", "declared"}]}. A broker that does not answer within
    `timeout` is reported, never raised: the page that asks still renders."""
    from wire.broker import QueueRefused, broker_kind, queue_inspector

    amqp = broker_kind(url) == "amqp"
    rows = []
    try:
        with queue_inspector(url, timeout=timeout) as ask:
            for name in queues:
                try:
                    messages, consumers = ask(name)
                    # Redis keeps no consumer count (and the transport answers 0).
                    rows.append({"queue": name, "messages": messages, "consumers": consumers if amqp else None,
                                 "declared": True})
                except QueueRefused:
                    # RabbitMQ: not declared yet (404). Redis: a queue is a list, gone when empty.
                    rows.append({"queue": name, "messages": None if amqp else 0, "consumers": None,
                                 "declared": not amqp})
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the overview degrades
        return {"ok": False, "error": f"broker unavailable: {type(exc).__name__}: {exc}"[:300], "queues": []}
    return {"ok": True, "error": "", "queues": rows}


def liveness_health() -> dict:
    """The liveness store (Redis) as the reaper sees it: reachable, live agents,
    the eviction hold and grace in force, the reaper's last tick."""
    down = {"ok": False, "live_agents": None, "hold": None, "grace": None, "reaped_at": None}
    if not liveness.ping():
        return {**down, "error": "liveness store unavailable: no answer to PING"}
    try:
        return {"ok": True, "live_agents": liveness.live_count(), "hold": liveness.hold_get(),
                "grace": liveness.grace_get(), "reaped_at": liveness.reaped_get(), "error": ""}
    except liveness.RedisError as exc:
        return {**down, "error": f"liveness store unavailable: {exc}"}


def region_attention(*, now: datetime | None = None, health: dict | None = None, dead_count: int | None = None,
                     behind: list[dict] | None = None, queues: dict | None = None,
                     clock: dict | None = None) -> list[dict]:
    """What needs an operator here (regions/attention.py), critical first; the
    overview passes what it has already read so nothing is read twice."""
    from wire.protocol import CONTROL_QUEUE

    now = now or timezone.now()
    if queues is None:
        queues = broker_queue_depths(queues=[CONTROL_QUEUE])
    health = health if health is not None else liveness_health()
    if dead_count is None:
        dead_count = DeadLetter.objects.filter(received_at__gte=now - OVERVIEW_WINDOW).count()
    if behind is None:
        behind = [s for s in schedule_list(now=now) if s["behind"]]
    return attention_items(now=now, health=health, dead_count=dead_count, behind=behind,
                           served=capabilities_served(), queues=queues,
                           clock=clock if clock is not None else clock_leadership())


def fleet_overview(*, now: datetime | None = None) -> dict:
    """What the region's admin home and `manage.py fleet_status` show."""
    now = now or timezone.now()
    since = now - OVERVIEW_WINDOW
    dead = DeadLetter.objects.filter(received_at__gte=since)
    health = liveness_health()
    dead_count = dead.count()
    behind = [s for s in schedule_list(now=now) if s["behind"]]
    outcomes = task_outcomes_by_capability(since=since)
    queues = broker_queue_depths(queues=overview_queues(capabilities=[c["capability"] for c in outcomes]))
    clock = clock_leadership()
    return {
        "role": "region",
        "region_id": settings.REGION_ID,
        "now": now,
        "since": since,
        "agents": agent_state_counts(),
        "tasks_active": dict(Task.objects.filter(status__in=Task.ACTIVE).values_list("status")
                             .annotate(n=Count("id"))),
        "throughput": task_throughput(since=since, until=now),
        "queue_wait": task_queue_wait(since=since, until=now),
        "run_duration": task_run_duration(since=since, until=now),
        "capabilities": outcomes,
        "queues": queues,
        "liveness": health,
        "clock": clock,
        "dead_letters": {"count": dead_count,
                         "latest": list(dead.values("received_at", "source", "queue", "reason")[:5])},
        "config": ConfigVersion.objects.filter(is_active=True).values("sha", "subject", "created_at").first(),
        "schedules_behind": behind,
        "attention": region_attention(now=now, health=health, dead_count=dead_count, behind=behind,
                                      queues=queues, clock=clock),
    }


# --- schedules (schedules.<name> of the configuration repository) ---------------

def schedule_list(*, now: datetime | None = None) -> list[dict]:
    """Each schedule of the active configuration that runs in this region, with
    its next due time, its last run (and that run's task) and whether it is
    behind: a due time passed more than three ticks ago with no run. One query
    for the runs, whatever the number of schedules."""
    from regions.models import ScheduleRun
    from regions.services.config.current import config_current
    from regions.services.schedules.due import (CATCH_UP_DEFAULT, OVERLAP_DEFAULT, late_after, schedule_due_after,
                                                schedule_due_before)

    now = now or timezone.now()
    schedules = config_current().schedules
    last = {}
    if schedules:
        # The latest run of each schedule: PostgreSQL's DISTINCT ON, or a loop elsewhere (the demo's SQLite).
        runs = ScheduleRun.objects.filter(schedule__in=list(schedules)).select_related("task")
        if connection.vendor == "postgresql":
            runs = runs.order_by("schedule", "-due_at").distinct("schedule")
        else:
            runs = [r for name in schedules if (r := runs.filter(schedule=name).order_by("-due_at").first())]
        last = {run.schedule: run for run in runs}
    # A schedule with no run yet is in force since the active configuration was applied, at least.
    applied = ConfigVersion.objects.filter(is_active=True).values_list("created_at", flat=True).first()
    out = []
    for name, definition in schedules.items():
        run = last.get(name)
        overdue = schedule_due_before(definition, now - late_after())
        behind = run.due_at < overdue if run is not None else applied is not None and overdue > applied
        out.append({
            "name": name,
            "cron": definition.get("cron"),
            "timezone": definition.get("timezone", "UTC") if "cron" in definition else None,
            "interval": definition.get("interval"),
            "capability": definition["capability"],
            "priority": definition.get("priority", 5),
            "regions": definition.get("regions", ["*"]),
            "overlap": definition.get("overlap", OVERLAP_DEFAULT),
            "catch_up": definition.get("catch_up", CATCH_UP_DEFAULT),
            "next_due": schedule_due_after(definition, now),
            "behind": behind,
            "behind_since": overdue if behind else None,
            "last_run": None if run is None else {
                "due_at": run.due_at, "created_at": run.created_at, "outcome": run.outcome, "detail": run.detail,
                "task_id": run.task_id, "task_status": run.task.status if run.task else None,
            },
        })
    return out
def workflow_list(*, user, see_all: bool = False, status: str | None = None) -> QuerySet[Workflow]:
    """The workflows `user` submitted (every caller's with see_all), each with
    its steps and their tasks' ids and statuses in two more queries."""
    qs = Workflow.objects.prefetch_related(
        Prefetch("steps", queryset=WorkflowStep.objects.order_by("index", "member")),
        Prefetch("steps__tasks", queryset=Task.objects.only("id", "status", "workflow_step_id")))
    if not see_all:
        qs = qs.filter(submitted_by=user)
    if status:
        qs = qs.filter(status=status)
    return qs


def workflow_get(*, user, workflow_id, see_all: bool = False) -> Workflow | None:
    return workflow_list(user=user, see_all=see_all).filter(id=workflow_id).first()


def workflow_steps(workflow: Workflow) -> list[dict]:
    """Each step in order: its kind (task or group), its state, and each of its
    tasks (a group's members in order) with its id, once created, and status."""
    steps: list[dict] = []
    for row in workflow.steps.all():
        task = next(iter(row.tasks.all()), None)
        if not steps or steps[-1]["index"] != row.index:
            steps.append({"index": row.index, "kind": "group" if row.in_group else "task", "tasks": []})
        steps[-1]["tasks"].append({"member": row.member, "capability": row.capability,
                                   "task_id": task.id if task else None,
                                   "status": task.status if task else "pending"})
    for step in steps:
        step["status"] = step_status([task["status"] for task in step["tasks"]])
    return steps


def step_status(statuses: list[str]) -> str:
    """A step's state from its tasks': failed or cancelled if one is, succeeded
    when all are, pending while none started, else running."""
    for final in (Task.Status.FAILED, Task.Status.CANCELLED):
        if final in statuses:
            return final
    if all(s == Task.Status.SUCCEEDED for s in statuses):
        return Task.Status.SUCCEEDED
    if all(s == "pending" for s in statuses):
        return "pending"
    return Task.Status.RUNNING
