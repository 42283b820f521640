"""The fleet overview as the admin home shows it: the role's selector
(regions.selectors.fleet_overview or router.selectors.fleet_overview) plus the
presentation (ages, charts). `manage.py fleet_status` prints the same selector."""
from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from console.formatting import age_text, exact_time
from console import svg

STATE_COLOURS = {"online idle": "#2e9d57", "online busy": "#2f6fb5", "cordoned": "#d6a100", "draining": "#e07b1a",
                 "offline": "#9aa0a6", "revoked": "#ba2121", "stopped": "#5f6368"}
SUCCEEDED, FAILED, CANCELLED = "#2e9d57", "#ba2121", "#9aa0a6"


def overview_data(role: str | None = None) -> dict:
    """The selector of the role this process runs."""
    if (role or settings.ROLE) == "router":
        from router.attention import router_attention
        from router.selectors import fleet_overview

        data = fleet_overview()
        return {**data, "attention": router_attention(now=data["now"])}
    from regions.selectors import fleet_overview
    return fleet_overview()


def overview_context() -> dict:
    data = overview_data()
    context = {"overview": data, "refresh_seconds": settings.OVERVIEW_REFRESH_SECONDS,
               "now_text": exact_time(data["now"]),
               "attention": data.get("attention", [])}
    context.update(_router(data) if data["role"] == "router" else _region(data))
    return context


def _region(data: dict) -> dict:
    states = data["agents"]
    shown = [name for name in STATE_COLOURS if name == "stopped" and states[name]]
    rows = [(name, states[name], STATE_COLOURS[name]) for name in (*_AGENT_STATES, *shown)]
    throughput = data["throughput"]
    wait = data["queue_wait"]
    run = data["run_duration"]
    liveness = data["liveness"]
    hold = liveness.get("hold")
    grace = liveness.get("grace")
    now_ts = data["now"].timestamp()
    since = data["since"]  # the window the numbers count, to the microsecond: the list shows the same rows
    totals = {key: sum(p[key] for p in throughput) for key in ("succeeded", "failed", "cancelled")}
    return {
        "agent_rows": [{"state": name, "count": n, "colour": colour,
                        "href": _list("regions_agent", state=name.replace(" ", "_"))} for name, n, colour in rows],
        "agents_total": sum(states.values()),
        "agents_href": _list("regions_agent"),
        "agents_chart": svg.hbars(rows, title="Agents by state"),
        "throughput_chart": svg.columns(throughput, stack=[("succeeded", SUCCEEDED), ("failed", FAILED),
                                                           ("cancelled", CANCELLED)],
                                        labels=[p["minute"].strftime("%H:%M") for p in throughput],
                                        title="Tasks finished per minute, last hour"),
        "throughput_total": totals,
        "throughput_links": [{"status": key, "count": n, "href": _tasks(since, status__exact=key)}
                             for key, n in totals.items()],
        "throughput_rows": [{**p, "minute_text": p["minute"].strftime("%H:%M")} for p in throughput
                            if p["succeeded"] or p["failed"] or p["cancelled"]],
        "throughput_last_minute": sum(throughput[-2][k] for k in ("succeeded", "failed", "cancelled"))
        if len(throughput) > 1 else 0,
        "wait_chart": _percentile_chart(wait, title="Queue wait (queued → started), p50 and p95 per 5 minutes, "
                                                    "last hour"),
        "wait_rows": _percentile_rows(wait),
        "run_chart": _percentile_chart(run, title="Run duration (started → finished), p50 and p95 per 5 minutes, "
                                                  "last hour"),
        "run_rows": _percentile_rows(run),
        "failures_chart": svg.hbars([(c["capability"], c["failed"], FAILED) for c in data["capabilities"]
                                     if c["failed"]], title="Failures by capability, last hour")
        if any(c["failed"] for c in data["capabilities"]) else "",
        "capability_rows": [{**c, "failed_href": _tasks(since, capability__exact=c["capability"],
                                                        status__exact="failed"),
                             "succeeded_href": _tasks(since, capability__exact=c["capability"],
                                                      status__exact="succeeded")} for c in data["capabilities"]],
        "queues": data["queues"],
        "liveness": liveness,
        "hold": hold,
        "hold_since": exact_time(hold.get("since")) if isinstance(hold, dict) and hold.get("since") else "",
        "grace": grace,
        "grace_until": exact_time(grace.get("until")) if isinstance(grace, dict) and grace.get("until") else "",
        "reaped_text": age_text(now_ts - liveness["reaped_at"]) if liveness.get("reaped_at") else "never",
        "dead_letter_rows": [{**d, "at": exact_time(d["received_at"])} for d in data["dead_letters"]["latest"]],
        "dead_letters_href": _list("regions_deadletter", received_at__gte=since.isoformat()),
        "config": data["config"],
    }


_AGENT_STATES = ("online idle", "online busy", "cordoned", "draining", "offline", "revoked")


def _list(model: str, **params: str) -> str:
    """The admin list of `model` (app_model), filtered by its own query parameters."""
    url = reverse(f"admin:{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _tasks(since: datetime, **params: str) -> str:
    """The task list filtered as an overview number counts: finished in the window."""
    return _list("regions_task", **params, finished_at__gte=since.isoformat())


def _percentile_chart(buckets: list[dict], *, title: str):
    return svg.lines([("p50", "#2f6fb5", [b["p50"] for b in buckets]),
                      ("p95", "#e07b1a", [b["p95"] for b in buckets])],
                     labels=[b["start"].strftime("%H:%M") for b in buckets], unit=" s", title=title)


def _percentile_rows(buckets: list[dict]) -> list[dict]:
    return [{**b, "start_text": b["start"].strftime("%H:%M")} for b in buckets if b["count"]]


def _router(data: dict) -> dict:
    regions = []
    for region in data["regions"]:
        regions.append({**region, "age_text": age_text(region["age_seconds"]),
                        "received_text": exact_time(region["received_at"]),
                        "caps": [{**c, "meter": svg.meter(c["idle"], c["count"])} for c in region["capabilities"]]})
    caps = data["capabilities"]
    return {
        "regions_href": reverse("admin:router_region_changelist"),
        "region_rows": regions,
        "capability_rows": [{**c, "meter": svg.meter(c["idle"], c["count"], width=160)} for c in caps],
        "capacity_chart": svg.hbars([(c["capability"], c["idle"], "#2e9d57") for c in caps],
                                    title="Idle agents per capability, fresh regions") if caps else "",
        "drift": data["drift"],
    }
