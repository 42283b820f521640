"""`manage.py fleet_status`: the admin home's overview as terminal tables (or
JSON), from the same selectors. Both roles have the command (console is
installed in each), each printing its own role's overview."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from console.formatting import age_text, exact_time
from console.overview import overview_data


def terminal_safe(text: str) -> str:
    """No control character from stored text (a commit subject, an agent's
    version) reaches the terminal: an escape sequence could rewrite what it shows."""
    return "".join(ch if ch.isprintable() or ch == "\n" else "\ufffd" for ch in text)


def table(headers: list[str], rows: list[list], *, right: set[int] = frozenset()) -> str:
    """A plain text table; columns in `right` are right-aligned (numbers)."""
    cells = [[str(c) for c in headers]] + [["—" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f} s"


def region_text(data: dict) -> str:
    agents = data["agents"]
    states = ["online idle", "online busy", "cordoned", "draining", "offline", "revoked"]
    states += [s for s in ("stopped",) if agents.get(s)]
    live = data["liveness"]
    hold = live.get("hold")
    if not live["ok"]:
        health = f"UNAVAILABLE ({live['error']})"
    else:
        health = f"healthy, {live['live_agents']} agents heard within the TTL"
    hold_text = ("unknown" if not live["ok"] else
                 f"HOLDING ({hold.get('mode')}) since {exact_time(hold.get('since'))}: {hold.get('reason')}"
                 if hold else "none")
    config = data["config"]
    done = data["throughput"]
    wait = [b for b in data["queue_wait"] if b["count"]]
    parts = [
        f"Region {data['region_id']} as of {exact_time(data['now'])}",
        f"Liveness store: {health}",
        f"Eviction hold: {hold_text}",
        f"Configuration: {config['sha'][:12] + ' ' + config['subject'] if config else 'none applied'}",
        f"Dead letters (last hour): {data['dead_letters']['count']}",
        "",
        "Agents by state",
        table(["state", "agents"], [[s, agents[s]] for s in states], right={1}),
        "",
        "Tasks finished per minute, last hour (minutes with any)",
        table(["minute", "succeeded", "failed", "cancelled"],
              [[p["minute"].strftime("%H:%M"), p["succeeded"], p["failed"], p["cancelled"]] for p in done
               if p["succeeded"] or p["failed"] or p["cancelled"]] or [["(none)", 0, 0, 0]], right={1, 2, 3}),
        "",
        "Queue wait (created -> started) per 5 minutes, last hour",
        table(["from", "started", "p50", "p95"],
              [[b["start"].strftime("%H:%M"), b["count"], _seconds(b["p50"]), _seconds(b["p95"])] for b in wait]
              or [["(none)", 0, None, None]], right={1, 2, 3}),
        "",
        "Outcomes by capability, last hour",
        table(["capability", "failed", "succeeded"],
              [[c["capability"], c["failed"], c["succeeded"]] for c in data["capabilities"]]
              or [["(none)", 0, 0]], right={1, 2}),
        "",
        "Schedules behind (a due time passed with no run: is beat running?)",
        table(["schedule", "due since", "last run due", "last outcome"],
              [[s["name"], exact_time(s["behind_since"]),
                exact_time(s["last_run"]["due_at"]) if s["last_run"] else None,
                s["last_run"]["outcome"] if s["last_run"] else None] for s in data.get("schedules_behind", [])]
              or [["(none)", "", "", ""]]),
    ]
    return "\n".join(parts)


def router_text(data: dict) -> str:
    regions = data["regions"]
    drift = data["drift"]
    rows = []
    for r in regions:
        caps = ", ".join(f"{c['capability']} {c['idle']}/{c['count']}" for c in r["capabilities"]) or "no agents"
        freshness = "disabled" if not r["enabled"] else "STALE" if r["stale"] else "fresh"
        commit = f"{r['config_short']} {r['config_subject']}".strip() if r["config_version"] else "(none)"
        rows.append([r["region_id"], freshness, age_text(r["age_seconds"]), caps, commit,
                     "DRIFT" if r["drift"] else ("majority" if r["config_version"] and drift["majority"] else "")])
    parts = [
        f"Router as of {exact_time(data['now'])}: {data['fresh']} fresh, {data['stale']} stale regions; "
        f"configuration {'in sync' if drift['in_sync'] else 'drifting: ' + str(len(drift['groups'])) + ' commits'}",
        "",
        table(["region", "summary", "age", "idle/total per capability", "config", "drift"],
              rows or [["(no region)", "", "", "", "", ""]]),
        "",
        "Idle agents per capability (fresh regions)",
        table(["capability", "idle", "total", "regions"],
              [[c["capability"], c["idle"], c["count"], c["regions"]] for c in data["capabilities"]]
              or [["(none)", 0, 0, 0]], right={1, 2, 3}),
    ]
    return "\n".join(parts)


class Command(BaseCommand):
    help = "Print the fleet overview of this role (the admin's home) as tables, or --json."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the overview as JSON")

    def handle(self, *args, as_json: bool = False, **options):
        data = overview_data()
        if as_json:
            self.stdout.write(json.dumps(data, default=_plain, indent=2, sort_keys=True))
        else:
            text = router_text(data) if data["role"] == "router" else region_text(data)
            self.stdout.write(terminal_safe(text))


def _plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
