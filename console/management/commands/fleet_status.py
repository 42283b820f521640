"""`manage.py fleet_status`: the admin home's overview as terminal tables (or
JSON), from the same selectors, its "needs attention" panel first. Both roles
have the command (console is installed in each), each printing its own role's
overview. Its exit status says whether anything needs attention (EXIT_*), so
cron or a monitor can run it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

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


EXIT_NOTHING, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNREADABLE = 0, 1, 2, 3
DEMO_REGIONS = ("us-east-1", "eu-west-3", "ap-southeast-1", "router")


def exit_status(items: list[dict]) -> int:
    """0: nothing needs attention; 1: warnings only; 2: at least one critical item."""
    if any(i["severity"] == "critical" for i in items):
        return EXIT_CRITICAL
    return EXIT_WARNING if items else EXIT_NOTHING


def attention_text(items: list[dict]) -> str:
    lines = [f"Needs attention ({len(items)})"]
    lines += [f"  {i['severity'].upper():8}  {i['text']}" + (f"  <{i['href']}>" if i.get("href") else "")
              for i in items] or ["  Nothing needs attention."]
    return "\n".join(lines)


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
    clock = data["clock"]
    clock_text = (f"led by {clock['leader']} (token {clock['token']}, lease {clock['expires_in']:g} s left)"
                  if clock["leader"] else "NOBODY holds the lease" + (f" (last {clock['last_leader']})"
                                                                      if clock["last_leader"] else ""))
    clock_text += f"; standing by: {', '.join(clock['standbys']) or 'none'}"
    done = data["throughput"]
    wait = [b for b in data["queue_wait"] if b["count"]]
    parts = [
        f"Region {data['region_id']} as of {exact_time(data['now'])}",
        f"Liveness store: {health}",
        f"Eviction hold: {hold_text}",
        f"Clock jobs: {clock_text}",
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
        "Queue wait (queued -> started) per 5 minutes, last hour",
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
    help = ("Print the fleet overview of this role (the admin's home) as tables, or --json, its 'needs attention' "
            "panel first. Exit status: 0 nothing needs attention, 1 warnings only, 2 at least one critical item, "
            "3 the state could not be read (no database, or not this role's). For `make demo`: --demo eu-west-3 "
            "(or us-east-1, ap-southeast-1, router) reads that role's database and Redis.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the overview as JSON")
        parser.add_argument("--demo", metavar="NAME", help="a role of the running `make demo`: us-east-1, "
                                                           "eu-west-3, ap-southeast-1 or router")
        parser.add_argument("--demo-dir", default=str(Path(settings.BASE_DIR) / "var" / "demo"),
                            help="the demo's --dir (default var/demo)")

    exit_code = EXIT_NOTHING

    def run_from_argv(self, argv):
        # From the shell, the status says what needs attention; call_command() returns normally.
        # Whatever else goes wrong is EXIT_UNREADABLE, not Python's 1 (which says "warnings only").
        try:
            super().run_from_argv(argv)
        except Exception as exc:  # noqa: BLE001 - a monitor reads the status: it must not read a crash as 1
            if "--traceback" in argv:
                raise
            self.stderr.write(f"fleet_status: the state could not be read: {type(exc).__name__}: "
                              f"{str(exc)[:300]} (--traceback for the trace)")
            sys.exit(EXIT_UNREADABLE)
        sys.exit(self.exit_code)

    def handle(self, *args, as_json: bool = False, demo: str | None = None, demo_dir: str = "", **options):
        if demo:
            _demo_exec(name=demo, root=Path(demo_dir), as_json=as_json)
        if settings.ROLE == "region" and "REDIS_URL" not in os.environ:
            self.stderr.write(f"note: REDIS_URL is not set; liveness is read from {settings.REDIS_URL} "
                              "(for the demo: --demo <region>)")
        try:
            data = overview_data()
        except DatabaseError as exc:
            where = settings.DATABASES["default"].get("NAME")
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            who = f"region {settings.REGION_ID}" if settings.ROLE == "region" else "router"
            raise CommandError(f"cannot read the {who}'s state from the database {where} ({first}): "
                               "set DATABASE_URL, REDIS_URL and "
                               "REGION_ID (ROLE=router for the router), or for `make demo`: "
                               "manage.py fleet_status --demo eu-west-3", returncode=EXIT_UNREADABLE) from None
        items = data.get("attention", [])
        self.exit_code = exit_status(items)
        if as_json:
            self.stdout.write(json.dumps(data, default=_plain, indent=2, sort_keys=True))
        else:
            text = router_text(data) if data["role"] == "router" else region_text(data)
            self.stdout.write(terminal_safe(attention_text(items) + "\n\n" + text))


def _demo_exec(*, name: str, root: Path, as_json: bool) -> None:
    """Run the command again with the environment `make demo` wrote for `name`
    (its database, its Redis): this process's settings are already read."""
    from regions.management.demo.layout import ENV_FILE, ENV_FILE_KEYS, env_file_read

    path = root / name / ENV_FILE
    if not path.is_file():
        raise CommandError(f"no demo environment at {path}: is `make demo` running (with --dir {root})? "
                           f"Names: {', '.join(DEMO_REGIONS)}", returncode=EXIT_UNREADABLE)
    env = {k: v for k, v in os.environ.items() if k not in (*ENV_FILE_KEYS, "EXTRA_APPS")}
    env.update(env_file_read(path))
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    os.execve(sys.executable, [sys.executable, manage, "fleet_status", *(["--json"] if as_json else [])], env)


def _plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
