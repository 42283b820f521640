"""The region's summary for the router (the article's format), and its push."""
from __future__ import annotations

import json
import logging
import time

import requests
from django.conf import settings
from django.db import DatabaseError, connection

from project.dbbackends import is_postgresql
from project.region_summary import MAX_ATTENTION_ITEMS, MAX_ATTENTION_TEXT, MAX_CAPABILITIES, attention_path_ok
from regions.models import Agent, CapabilityCounter, ConfigVersion
from regions.services import liveness
from regions.services.config.current import config_current

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Where the counters are not kept (SQLite, the embedded demo: a handful of
# agents), one aggregate query over the agents that are online and take work.
_SQL = {
    "postgresql": """
        SELECT c.cap, COUNT(*), COUNT(*) FILTER (WHERE NOT a.busy)
        FROM regions_agent a CROSS JOIN LATERAL jsonb_array_elements_text(a.capabilities) AS c(cap)
        WHERE a.status = %s AND a.desired = %s GROUP BY c.cap""",
    "sqlite": """
        SELECT j.value, COUNT(*), SUM(CASE WHEN a.busy THEN 0 ELSE 1 END)
        FROM regions_agent a, json_each(a.capabilities) j
        WHERE a.status = %s AND a.desired = %s GROUP BY j.value""",
}


def region_summary_build() -> dict:
    """The summary, from the counters PostgreSQL keeps (models.CapabilityCounter):
    one small query whatever the fleet size, no scan of the agents; plus the
    region's attention items (counts and GROUP BYs, regions/attention.py)."""
    config = config_current()
    counts, available = capability_counts()
    # A capability the configuration refuses here is not offered: the router skips it.
    caps = {cap: {"count": count, "idle": idle} for cap, (count, idle) in counts.items()
            if not config.capability_refusal(cap)}
    caps = _capabilities_capped(caps)
    return {
        "region_id": settings.REGION_ID,
        "orchestrator_url": settings.REGION_URL,
        "available_agents": available,
        "agent_capabilities_summary": caps,
        "last_updated": time.time(),
        "config_version": config.sha,
        "config_subject": _config_subject(config.sha),
        "schema_version": SCHEMA_VERSION,
        "summary_interval": config.summary_interval,
        "attention": attention_for_router(),
    }


# The router's own answer is not news to it: these stay in the region's panel.
_NOT_SENT = ("router_refused", "router_unreachable")


def attention_for_router() -> list[dict]:
    """The region's "needs attention" items as the router takes them: kind,
    severity, text, count and the path of the list that shows it (nothing of a task), at most
    MAX_ATTENTION_ITEMS. A failure to read them never holds the summary back."""
    from regions.selectors import region_attention

    try:
        items = region_attention()
    except (DatabaseError, liveness.RedisError):
        logger.warning("summary: attention items not read; sent without them", exc_info=True)
        return []
    return [{"kind": i["kind"], "severity": i["severity"], "count": min(int(i["count"]), 10 ** 9),
             "text": "".join(ch for ch in i["text"] if ch.isprintable())[:MAX_ATTENTION_TEXT],
             **({"path": i["href"]} if attention_path_ok(i["href"]) else {})}
            for i in items if i["kind"] not in _NOT_SENT][:MAX_ATTENTION_ITEMS]


def capability_counts() -> tuple[dict[str, tuple[int, int]], int]:
    """({capability: (online agents taking work, of which idle)}, idle agents
    taking work), capabilities with at least one such agent only."""
    if is_postgresql():
        counts, available = {}, 0
        for cap, count, idle in CapabilityCounter.objects.filter(agents__gt=0).values_list(
                "capability", "agents", "idle"):
            if cap == CapabilityCounter.FLEET:
                available = idle
            else:
                counts[cap] = (count, idle)
        return counts, available
    return capability_counts_scan()


def capability_counts_scan() -> tuple[dict[str, tuple[int, int]], int]:
    """The same from a scan of the agents: where no counters are kept, and for
    tests and bench/summary.py to compare with."""
    with connection.cursor() as cur:
        cur.execute(_SQL[connection.vendor], [Agent.Status.ONLINE, Agent.Desired.ACTIVE])
        counts = {cap: (int(count), int(idle or 0)) for cap, count, idle in cur.fetchall()}
    available = Agent.objects.filter(status=Agent.Status.ONLINE, desired=Agent.Desired.ACTIVE, busy=False).count()
    return counts, available


def _capabilities_capped(caps: dict[str, dict]) -> dict[str, dict]:
    """At most the router's bound: it refuses a whole summary with more, and
    agents joining with a registration token choose their capability names."""
    if len(caps) <= MAX_CAPABILITIES:
        return caps
    kept = sorted(caps.items(), key=lambda item: (-item[1]["idle"], -item[1]["count"], item[0]))[:MAX_CAPABILITIES]
    logger.warning("summary: %d capabilities offered by online agents, the router takes at most %d; "
                   "%d left out (the fewest idle agents)", len(caps), MAX_CAPABILITIES, len(caps) - MAX_CAPABILITIES)
    return dict(kept)


def _config_subject(sha: str) -> str:
    """The commit's subject line as the router stores it (printable, at most 200
    characters); "" when there is no configuration or the row has none."""
    if not sha:
        return ""
    subject = ConfigVersion.objects.filter(is_active=True, sha=sha).values_list("subject", flat=True).first() or ""
    return "".join(ch for ch in subject if ch.isprintable())[:200]


def _due(interval: float) -> bool:
    """Beat ticks often; push once per configured interval (changeable at run
    time: a mark left under a longer interval than the one now in force does not
    hold the next summary back for the rest of the longer one)."""
    px = int(interval * 1000) - 50
    try:
        client, key = liveness.client(), liveness.key("summary_due")
        if client.set(key, 1, nx=True, px=px):
            return True
        return client.pttl(key) > px and bool(client.set(key, 1, px=px))
    except liveness.RedisError:
        return True


# The router's refusal is kept this many summary intervals (and at least
# REFUSAL_KEEP_MIN seconds): long enough to be seen between pushes, not for ever
# once the region stops pushing.
REFUSAL_KEEP_INTERVALS = 5
REFUSAL_KEEP_MIN = 60.0
REFUSAL_TEXT_MAX = 300


def _trimmed(text: str) -> str:
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())[:REFUSAL_TEXT_MAX]


def _router_error(response: requests.Response) -> str:
    """The router's own words: its JSON error's message (or its field errors), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return _trimmed(response.text)
    if isinstance(body, dict):
        words = body.get("detail") or body.get("error") or body
        words = words if isinstance(words, str) else json.dumps(words, sort_keys=True)
        if body.get("fields"):  # the router's field errors name what it refused
            words = f"{words} {json.dumps(body['fields'], sort_keys=True)}"
        return _trimmed(words)
    return _trimmed(json.dumps(body))


def _refusal_keep(info: dict | None, *, interval: float) -> None:
    """Kept where the overview reads it (the liveness store); None clears it (an accepted push)."""
    try:
        liveness.router_refusal_set(info, ttl=max(REFUSAL_KEEP_INTERVALS * interval, REFUSAL_KEEP_MIN))
    except liveness.RedisError:
        logger.warning("router's answer not kept for the overview: liveness store unavailable")


def summary_push(*, force: bool = False) -> dict:
    """Send the summary; the router being down is logged and retried next time.
    The region keeps working without it."""
    if not settings.ROUTER_URL:
        return {"sent": False, "reason": "no ROUTER_URL"}
    interval = config_current().summary_interval
    if not force and not _due(interval):
        return {"sent": False, "reason": "not due"}
    summary = region_summary_build()
    try:
        response = requests.post(f"{settings.ROUTER_URL.rstrip('/')}/update_regional_status", json=summary,
                                 headers={"Authorization": f"Bearer {settings.REGION_TOKEN}"}, timeout=5)
    except requests.RequestException as exc:
        logger.warning("router unreachable, summary not sent (next try in %ss): %s", interval, exc)
        _refusal_keep({"kind": "unreachable", "status": None, "error": _trimmed(str(exc)), "at": time.time()},
                      interval=interval)
        return {"sent": False, "reason": str(exc)}
    if response.status_code != 200:
        logger.warning("router refused the summary: %s %s", response.status_code, response.text[:300])
        _refusal_keep({"kind": "refused", "status": response.status_code, "error": _router_error(response),
                       "at": time.time()}, interval=interval)
        return {"sent": False, "status": response.status_code}
    _refusal_keep(None, interval=interval)
    logger.info("summary pushed to the router (%d agents available)", summary["available_agents"])
    return {"sent": True, "available_agents": summary["available_agents"]}

