"""The fleet overview as the admin home shows it: the role's selector
(regions.selectors.fleet_overview or router.selectors.fleet_overview) plus the
presentation (ages, charts). `manage.py fleet_status` prints the same selector."""
from __future__ import annotations


from django.conf import settings

from console.formatting import age_text, exact_time
from console import svg

REFRESH_SECONDS = 10

STATE_COLOURS = {"online idle": "#2e9d57", "online busy": "#2f6fb5", "cordoned": "#d6a100", "draining": "#e07b1a",
                 "offline": "#9aa0a6", "stopping": "#ba2121", "stopped": "#5f6368"}
SUCCEEDED, FAILED, CANCELLED = "#2e9d57", "#ba2121", "#9aa0a6"


def overview_data(role: str | None = None) -> dict:
    """The selector of the role this process runs."""
    if (role or settings.ROLE) == "router":
        from router.selectors import fleet_overview
    else:
        from regions.selectors import fleet_overview
    return fleet_overview()


def overview_context() -> dict:
    data = overview_data()
    context = {"overview": data, "refresh_seconds": REFRESH_SECONDS, "now_text": exact_time(data["now"])}
    context.update(_router(data) if data["role"] == "router" else _region(data))
    return context


def _region(data: dict) -> dict:
    states = data["agents"]
    shown = [name for name in STATE_COLOURS if name in ("stopping", "stopped") and states[name]]
    rows = [(name, states[name], STATE_COLOURS[name]) for name in (*_AGENT_STATES, *shown)]
    throughput = data["throughput"]
    wait = data["queue_wait"]
    liveness = data["liveness"]
    hold = liveness.get("hold")
    grace = liveness.get("grace")
    now_ts = data["now"].timestamp()
    return {
        "agent_rows": [{"state": name, "count": n, "colour": colour} for name, n, colour in rows],
        "agents_total": sum(states.values()),
        "agents_chart": svg.hbars(rows, title="Agents by state"),
        "throughput_chart": svg.columns(throughput, stack=[("succeeded", SUCCEEDED), ("failed", FAILED),
                                                           ("cancelled", CANCELLED)],
                                        labels=[p["minute"].strftime("%H:%M") for p in throughput],
                                        title="Tasks finished per minute, last hour"),
        "throughput_total": {key: sum(p[key] for p in throughput) for key in ("succeeded", "failed", "cancelled")},
        "throughput_last_minute": sum(throughput[-2][k] for k in ("succeeded", "failed", "cancelled"))
        if len(throughput) > 1 else 0,
        "wait_chart": svg.lines([("p50", "#2f6fb5", [b["p50"] for b in wait]),
                                 ("p95", "#e07b1a", [b["p95"] for b in wait])],
                                labels=[b["start"].strftime("%H:%M") for b in wait], unit=" s",
                                title="Queue wait, p50 and p95 per 5 minutes, last hour"),
        "wait_rows": [{**b, "start_text": b["start"].strftime("%H:%M")} for b in wait if b["count"]],
        "failures_chart": svg.hbars([(c["capability"], c["failed"], FAILED) for c in data["capabilities"]
                                     if c["failed"]], title="Failures by capability, last hour") if any(c["failed"] for c in data["capabilities"]) else "",
        "liveness": liveness,
        "hold": hold,
        "hold_since": exact_time(hold.get("since")) if isinstance(hold, dict) and hold.get("since") else "",
        "grace": grace,
        "grace_until": exact_time(grace.get("until")) if isinstance(grace, dict) and grace.get("until") else "",
        "reaped_text": age_text(now_ts - liveness["reaped_at"]) if liveness.get("reaped_at") else "never",
        "dead_letter_rows": [{**d, "at": exact_time(d["received_at"])} for d in data["dead_letters"]["latest"]],
        "config": data["config"],
    }


_AGENT_STATES = ("online idle", "online busy", "cordoned", "draining", "offline")


def _router(data: dict) -> dict:
    regions = []
    for region in data["regions"]:
        regions.append({**region, "age_text": age_text(region["age_seconds"]),
                        "received_text": exact_time(region["received_at"]),
                        "caps": [{**c, "meter": svg.meter(c["idle"], c["count"])} for c in region["capabilities"]]})
    caps = data["capabilities"]
    return {
        "region_rows": regions,
        "capability_rows": [{**c, "meter": svg.meter(c["idle"], c["count"], width=160)} for c in caps],
        "capacity_chart": svg.hbars([(c["capability"], c["idle"], "#2e9d57") for c in caps],
                                    title="Idle agents per capability, fresh regions") if caps else "",
        "drift": data["drift"],
    }
