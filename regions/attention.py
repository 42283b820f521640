"""What needs an operator in this region: the "needs attention" panel at the top
of the overview, the first lines of `manage.py fleet_status`, and the items the
region's summary carries to the router.

Each item is {"kind", "severity" ("critical" or "warning"), "text" (one line),
"count", "href" (the admin list that shows it)}. Counts and GROUP BYs only, a
handful of queries whatever the number of agents and tasks; nothing here names
a task or shows a payload. An empty list means nothing needs anyone."""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from project.dbbackends import is_postgresql
from regions.models import Agent, CapabilityCounter, ConfigVersion, Task
from regions.services import liveness

CRITICAL, WARNING = "critical", "warning"
SEVERITIES = (CRITICAL, WARNING)

# A queued task sent this long ago and still not started: its agents are busy (or lost).
QUEUED_LONG = timedelta(minutes=5)
LAST_HOUR = timedelta(hours=1)  # the overview's window, and the panel's
# Failing above the usual rate: the last hour's share of failures against the 24 h before it.
FAILING_WINDOW = LAST_HOUR
FAILING_BASELINE = timedelta(hours=24)
FAILING_MIN_FAILURES = 5  # one failure is not an alarm
FAILING_FACTOR = 2.0  # at least twice the usual share ...
FAILING_MARGIN = 0.10  # ... and ten points above it
MAX_PER_KIND = 10  # lines per kind; the rest summed in one more line
# The reaper has stopped: no tick for this many of its intervals (and at least this long).
REAPER_LATE_TICKS = 6
REAPER_LATE_MIN_SECONDS = 30.0

TASKS = "/admin/regions/task/"
AGENTS = "/admin/regions/agent/"

# Why a pending task is not running, as the task list filters it (?waits_for=...,
# regions/admin/attention.py). One home for the conditions: the panel counts by
# them and the list shows the same rows.
WAIT_REASONS: dict[str, tuple[str, Q]] = {
    "no_agent": ("no live agent serves its capability",
                 Q(status=Task.Status.WAITING, target_agent="") & ~Q(status_reason__startswith="the agents serving")),
    "agents_held": ("its capability's agents are cordoned or draining",
                    Q(status=Task.Status.WAITING, target_agent="", status_reason__startswith="the agents serving")),
    "target_agent": ("the agent it names is not online or does not serve it",
                     Q(status=Task.Status.WAITING) & ~Q(target_agent="")),
    "fair_share": ("held beyond its caller's fair share of the capability",
                   Q(held=True, status__in=Task.PENDING)),
}
QUEUED_LONG_REASON = "queued_long"


def wait_reason_filter(reason: str, *, now: datetime | None = None) -> Q | None:
    """The rows of one wait reason (WAIT_REASONS, or queued_long); None if unknown."""
    if reason == QUEUED_LONG_REASON:
        return Q(status=Task.Status.QUEUED, held=False, dispatched_at__lt=(now or timezone.now()) - QUEUED_LONG)
    found = WAIT_REASONS.get(reason)
    return found[1] if found else None


def _href(path: str, **query: str) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def _item(kind: str, severity: str, text: str, count: int, href: str) -> dict:
    return {"kind": kind, "severity": severity, "text": text, "count": count, "href": href}


def _capped(kind: str, severity: str, items: list[dict], *, what: str, href: str) -> list[dict]:
    if len(items) <= MAX_PER_KIND:
        return items
    rest = items[MAX_PER_KIND:]
    return items[:MAX_PER_KIND] + [_item(kind, severity, f"and {len(rest)} more {what}",
                                         sum(i["count"] for i in rest), href)]


def _s(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- the items, one function per kind --------------------------------------------------

def tasks_waiting(*, now: datetime) -> list[dict]:
    """Pending tasks grouped by why they are not running: one COUNT per reason, in one query."""
    counts = Task.objects.filter(status__in=Task.PENDING).aggregate(
        **{name: Count("id", filter=q) for name, (_, q) in WAIT_REASONS.items()},
        **{QUEUED_LONG_REASON: Count("id", filter=wait_reason_filter(QUEUED_LONG_REASON, now=now))})
    items = []
    for name, (why, _) in WAIT_REASONS.items():
        if counts[name]:
            items.append(_item(f"waiting_{name}", WARNING, f"{_s(counts[name], 'task')} waiting: {why}",
                               counts[name], _href(TASKS, waits_for=name)))
    if counts[QUEUED_LONG_REASON]:
        minutes = int(QUEUED_LONG.total_seconds() // 60)
        items.append(_item(f"waiting_{QUEUED_LONG_REASON}", WARNING,
                           f"{_s(counts[QUEUED_LONG_REASON], 'task')} queued for over {minutes} min: "
                           "their capability's agents are all busy (or lost)",
                           counts[QUEUED_LONG_REASON], _href(TASKS, waits_for=QUEUED_LONG_REASON)))
    return items


def capabilities_unserved(*, served: set[str]) -> list[dict]:
    """Capabilities with pending tasks that no online agent taking work (not
    cordoned, not draining) serves."""
    rows = (Task.objects.filter(status__in=Task.PENDING).exclude(capability__in=served)
            .values("capability").annotate(n=Count("id")).order_by("-n", "capability"))
    items = [_item("no_live_agent", CRITICAL, f"capability {row['capability']}: {_s(row['n'], 'pending task')} "
                   "and no live agent takes its work", row["n"],
                   _href(TASKS, capability__exact=row["capability"], status__in=",".join(Task.PENDING)))
             for row in rows[:MAX_PER_KIND + 1]]
    return _capped("no_live_agent", CRITICAL, items, what="capabilities without a live agent",
                   href=_href(TASKS, waits_for="no_agent"))


def agents_none(*, live: int | None, fleet: int) -> list[dict]:
    """No live agent at all: nothing in this region runs anything. Live agents
    that are all cordoned or draining (`fleet`: the capabilities served by an
    agent taking work is empty): nothing new starts."""
    if (live if live is not None else fleet) <= 0:
        return [_item("no_agents", CRITICAL, "no live agent in this region: no task can run", 0,
                      _href(AGENTS, status__exact="online"))]
    held = Agent.objects.filter(status=Agent.Status.ONLINE, desired__in=[Agent.Desired.CORDONED,
                                                                   Agent.Desired.DRAINING]).count() \
        if fleet == 0 else 0
    if held:
        return [_item("agents_held", WARNING, f"{_s(held, 'online agent')}, every one cordoned or draining: "
                      "no new task can start", held, _href(AGENTS, status__exact="online"))]
    return []


def clock_items(clock: dict | None) -> list[dict]:
    """Nobody has held the clock lease for longer than a takeover takes
    (regions.selectors.clock_leadership): no orchestrator runs the clock jobs."""
    if not clock or clock["leader"] or clock["expires_in"] is None:
        return []
    out = -clock["expires_in"]
    if out <= settings.ORCHESTRATOR_LEASE_SECONDS + settings.ORCHESTRATOR_LEASE_RENEW_SECONDS:
        return []
    return [_item("clock_unled", CRITICAL, f"no orchestrator has held the clock lease for {out:.0f} s (last "
                  f"{clock['last_leader']}): no clock job runs (reaper, sweeper, summaries, schedules); is an "
                  "orchestrator with --beat running and reaching the database?", 1, "/admin/#ov-clock")]


def liveness_items(health: dict, *, now: datetime) -> list[dict]:
    if not health["ok"]:
        return [_item("liveness_down", CRITICAL, f"{health.get('error') or 'liveness store unavailable'}: "
                      "heartbeats are refused and no agent is evicted", 1, AGENTS)]
    items = []
    reaped_at = health.get("reaped_at")
    late = now.timestamp() - reaped_at if reaped_at else 0.0
    if late > max(REAPER_LATE_TICKS * settings.REAPER_INTERVAL, REAPER_LATE_MIN_SECONDS):
        items.append(_item("reaper_stopped", CRITICAL, f"the reaper's last tick was {late:.0f} s ago: a silent "
                           "agent is not evicted and its tasks are not requeued (is the orchestrator with its "
                           "clock jobs running?)", 1, _href(AGENTS, status__exact="online")))
    hold = health.get("hold")
    if hold:
        reason = hold.get("reason", "") if isinstance(hold, dict) else ""
        items.append(_item("eviction_hold", WARNING, "eviction hold in force: silent agents are kept online"
                           + (f" ({reason})" if reason else ""), 1, _href(AGENTS, status__exact="online")))
    return items


def broker_items(queues: dict | None) -> list[dict]:
    """The region's broker did not answer the overview's ask (regions.selectors.broker_queue_depths)."""
    if queues is None or queues["ok"]:
        return []
    return [_item("broker_down", CRITICAL, f"{queues['error']}: no task is sent to an agent and no outcome "
                  "comes back until it answers", 1, _href(TASKS, status__in=",".join(Task.PENDING)))]


def router_items() -> list[dict]:
    """The router's latest refusal of this region's summary, or its being out of reach (kept by summary_push)."""
    try:
        refusal = liveness.router_refusal_get()
    except liveness.RedisError:
        return []
    if not refusal:
        return []
    router = settings.ROUTER_URL.rstrip("/")
    href = f"{router}/admin/router/region/?{urlencode({'q': settings.REGION_ID})}" if router else ""
    if refusal.get("kind") == "unreachable":
        return [_item("router_unreachable", WARNING, f"router unreachable, summaries not delivered: "
                      f"{refusal.get('error', '')}".rstrip(": "), 1, href)]
    return [_item("router_refused", CRITICAL, f"the router refused this region's summary "
                  f"({refusal.get('status')}): {refusal.get('error', '')}".rstrip(": "), 1, href)]


def config_rejected() -> list[dict]:
    """The latest configuration commit was rejected (and none applied since, nor
    the ref found back on the active one)."""
    latest = ConfigVersion.objects.order_by("-created_at", "-id").values("result", "sha", "error",
                                                                         "created_at").first()
    if not latest or latest["result"] != ConfigVersion.Result.REJECTED:
        return []
    try:  # a sync found the ref back on the active commit since (config_sync)
        seen = liveness.config_current_seen_get()
    except liveness.RedisError:
        seen = None
    if seen is not None and seen > latest["created_at"].timestamp():
        return []
    error = " ".join(latest["error"].split())[:200]
    return [_item("config_rejected", CRITICAL, f"configuration commit {latest['sha'][:12]} rejected: {error}", 1,
                  _href("/admin/regions/configversion/", result__exact=ConfigVersion.Result.REJECTED))]


def dead_letters(*, count: int, since: datetime) -> list[dict]:
    if not count:
        return []
    return [_item("dead_letters", WARNING, f"{_s(count, 'dead letter')} in the last hour", count,
                  _href("/admin/regions/deadletter/", received_at__gte=since.isoformat()))]


def schedules_behind(behind: list[dict]) -> list[dict]:
    items = [_item("schedule_behind", WARNING, f"schedule {s['name']} is behind: a due time passed with no run "
                   "(is beat running?)", 1, _href("/admin/regions/schedulerun/", schedule=s["name"]))
             for s in behind]
    return _capped("schedule_behind", WARNING, items, what="schedules behind", href="/admin/regions/schedulerun/")


def capabilities_failing(*, now: datetime) -> list[dict]:
    """Capabilities whose last hour fails well above their previous 24 h: one GROUP BY."""
    since = now - FAILING_WINDOW
    recent = Q(finished_at__gte=since)
    rows = (Task.objects.filter(finished_at__gte=since - FAILING_BASELINE, finished_at__lt=now,
                                status__in=[Task.Status.SUCCEEDED, Task.Status.FAILED])
            .values("capability")
            .annotate(failed=Count("id", filter=recent & Q(status=Task.Status.FAILED)),
                      done=Count("id", filter=recent),
                      usual_failed=Count("id", filter=~recent & Q(status=Task.Status.FAILED)),
                      usual_done=Count("id", filter=~recent))
            .filter(failed__gte=FAILING_MIN_FAILURES))
    items = []
    for row in rows:
        rate = row["failed"] / row["done"]
        usual = row["usual_failed"] / row["usual_done"] if row["usual_done"] else 0.0
        if rate >= usual * FAILING_FACTOR and rate >= usual + FAILING_MARGIN:
            items.append(_item("failing", WARNING, f"capability {row['capability']}: {row['failed']} of "
                               f"{row['done']} failed in the last hour ({rate:.0%}; usually {usual:.0%})",
                               row["failed"], _href(TASKS, capability__exact=row["capability"],
                                                    status__exact=Task.Status.FAILED,
                                                    finished_at__gte=since.isoformat())))
    items.sort(key=lambda i: (-i["count"], i["text"]))
    return _capped("failing", WARNING, items, what="capabilities failing",
                   href=_href(TASKS, status__exact="failed", finished_at__gte=since.isoformat()))


def capabilities_served() -> set[str]:
    """Capabilities with at least one online agent taking work: the counters
    PostgreSQL keeps (models.CapabilityCounter), or a scan where none are kept
    (SQLite, the embedded demo's handful of agents)."""
    if is_postgresql():
        return set(CapabilityCounter.objects.filter(agents__gt=0).exclude(capability=CapabilityCounter.FLEET)
                   .values_list("capability", flat=True))
    served: set[str] = set()
    for caps in Agent.objects.filter(status=Agent.Status.ONLINE, desired=Agent.Desired.ACTIVE).values_list(
            "capabilities", flat=True):
        served.update(c for c in caps if isinstance(c, str))
    return served


def attention_items(*, now: datetime, health: dict, dead_count: int, behind: list[dict],
                    served: set[str], queues: dict | None, clock: dict | None = None) -> list[dict]:
    """Every item, critical first (each kind keeps its order). The reads this
    takes as arguments are the overview's own (regions.selectors.region_attention)."""
    items = [
        *broker_items(queues),
        *clock_items(clock),
        *liveness_items(health, now=now),
        *agents_none(live=health.get("live_agents") if health["ok"] else None, fleet=len(served)),
        *router_items(),
        *config_rejected(),
        *capabilities_unserved(served=served),
        *tasks_waiting(now=now),
        *capabilities_failing(now=now),
        *dead_letters(count=dead_count, since=now - LAST_HOUR),
        *schedules_behind(behind),
    ]
    items.sort(key=lambda i: SEVERITIES.index(i["severity"]))
    return items
