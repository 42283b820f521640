#!/usr/bin/env python
"""Task throughput end to end, side by side in one run on the same broker (the
region's private redis-server) and the same workers (count x concurrency, prefork):

  raw       Celery no-op, publish -> executed (Meridian's Celery app, a task that
            only INCRs a counter): the ceiling.
  baseline  what a team would otherwise build (bench/baseline/): a DRF view calling
            apply_async, Celery workers, django-celery-results storing each result
            in PostgreSQL (CONN_MAX_AGE 0, all defaults), served by gunicorn with
            the same worker count as Meridian's web: sync workers, as Django's
            deployment guide has it (--baseline-web uvicorn: Meridian's exact
            command, project/gunicorn_conf.py, which runs a stock Django project
            through Django's ASGIHandler: slower, see project/asgi.py).
  meridian  POST /api/v1/tasks (echo) -> agent claims, runs, reports -> row
            `succeeded` in PostgreSQL.
  events    Meridian with Celery's task events on vs off (Flower, `celery events`:
            docs/flower.md), the same agents in interleaved rounds (off on on off
            ...), toggled by Celery's enable_events/disable_events, with an event
            receiver attached throughout (what Flower does).

Throughput: --tasks submitted by --clients threads, timed until every result is
stored (after a warm-up of 20 tasks each); CPU ms per task of each process tree
(PostgreSQL's not counted). Then submit -> start one task at a time on an idle fleet (100; 30 with
--quick): the baseline's no-op returns time.time() at its start and the view's
time.time() before apply_async; Meridian's started_at - created_at.

    .venv/bin/python bench/tasks.py [--tasks 2000] [--clients 8] [--workers 2] [--concurrency 2]
    .venv/bin/python bench/tasks.py --quick            # 300 tasks, under 90 s
    .venv/bin/python bench/tasks.py --quick --profile  # py-spy on Meridian's web, agents, orchestrator
    .venv/bin/python bench/tasks.py --quick --events-only [--broker amqp]  # only the events comparison

--profile writes var/profiles/meridian-<role>.speedscope.json (open in
https://www.speedscope.app) and prints the top functions by own time and where
the web's and the agents' CPU goes (submit, claim, report, ...). py-spy samples
at 100 Hz and costs CPU itself: throughput numbers of a profiled run are not the
benchmark's.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line, median, percentile  # noqa: E402
from tests.harness import ROOT, Proc, Region, Template, free_port, pg_admin, pg_url, wait_for, web_command  # noqa: E402

PROFILES = ROOT / "var" / "profiles"
# The region's clocks at their production defaults, not the tests' FAST ones
# (a sweeper every 0.5 s is test speed, not what a region runs).
PRODUCTION_CLOCKS = {"HEARTBEAT_INTERVAL": "5", "HEARTBEAT_TTL": "15", "REAPER_INTERVAL": "5",
                     "SWEEPER_INTERVAL": "2", "LIVENESS_FLUSH_INTERVAL": "10", "TASK_RETRY_BACKOFF_BASE": "2"}
WEB_WORKERS = 2  # tests.harness.Region.start_web's default: Meridian's web and the baseline's alike
WARMUP = 20


class Db:
    """One autocommit connection for polling (not a connection per poll)."""

    def __init__(self, url: str):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def rows(self, sql: str, params=()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def value(self, sql: str, params=()):
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.conn.close()


def wait_progress(count, target: int, what: str, stall: float = 30, limit: float = 900, logs=lambda: "") -> None:
    """Wait until count() >= target; fail when it has not moved for `stall` seconds."""
    start = moved = time.monotonic()
    last = -1
    while True:
        n = count()
        if n >= target:
            return
        now = time.monotonic()
        if n != last:
            last, moved = n, now
        if now - moved > stall or now - start > limit:
            raise AssertionError(f"{what}: {n}/{target} after {now - start:.0f}s (stalled {now - moved:.0f}s)\n"
                                 f"{logs()}")
        time.sleep(0.05)


class Clients:
    """--clients threads POSTing, each with its own keep-alive session."""

    def __init__(self, n: int, url: str, headers: dict):
        self.pool = ThreadPoolExecutor(n)
        self.url, self.headers = url, headers
        self.local = threading.local()

    def post(self, body: dict) -> str:
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        r = session.post(self.url, json=body, headers=self.headers, timeout=60)
        assert r.status_code == 201, f"{r.status_code} {r.text[:500]}"
        return r.json()["id"]

    def burst(self, bodies: list[dict]) -> list[str]:
        return list(self.pool.map(self.post, bodies))

    def close(self) -> None:
        self.pool.shutdown()


def celery_workers(name: str, app: str, queue: str, env: dict, args, logdir: Path) -> list[Proc]:
    """The raw and the baseline workers, started alike."""
    return [Proc(f"{name}-{i}", [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
                                 "-n", f"{name}-{i}@%h", "-P", "prefork", "-c", str(args.concurrency),
                                 "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
                 env, logdir / f"{name}-{i}.log") for i in range(args.workers)]


def wait_workers(app, names: list[str], procs: list[Proc], timeout: float = 60) -> None:
    """Every worker answers a remote-control ping (it is consuming)."""
    def answered():
        for p in procs:
            assert p.alive(), f"{p.name} exited:\n{p.tail()}"
        replies = app.control.ping(destination=names, timeout=0.5) or []
        return {name for reply in replies for name in reply} >= set(names)

    wait_for(answered, timeout, interval=0.2, what=f"workers {names} answering")


class CpuMeter:
    """CPU seconds (user + system) used by process trees between start() and stop():
    exact under contention, where wall-clock samples are not."""

    def __init__(self, roles: dict[str, list[int]]):
        self.roles = roles
        self.ticks = os.sysconf("SC_CLK_TCK")

    def _read(self) -> dict[str, float]:
        parent, cpu = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parent[int(entry)] = int(fields[1])
                cpu[int(entry)] = sum(int(f) for f in fields[11:15]) / self.ticks  # utime stime cutime cstime
        children = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        out = {}
        for role, roots in self.roles.items():
            seen, todo = set(), list(roots)
            while todo:
                pid = todo.pop()
                if pid not in seen:
                    seen.add(pid)
                    todo += children.get(pid, [])
            out[role] = sum(cpu.get(pid, 0.0) for pid in seen)
        return out

    def start(self) -> "CpuMeter":
        self.before = self._read()
        return self

    def stop(self, tasks: int) -> dict[str, float]:
        """CPU milliseconds per task, per role."""
        after = self._read()
        return {role: (after[role] - self.before[role]) * 1000 / tasks for role in self.roles}


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.signal(signal.SIGTERM, group=False)
    for p in procs:
        p.stop(timeout=10)


# --- (a) raw Celery ---------------------------------------------------------------
def run_raw(args, region: Region, app) -> dict:
    counter = redis.Redis.from_url(region.redis.url)
    procs = celery_workers("raw", "project", "bench.noop", region.env, args, region.dir)
    host = socket.gethostname()
    try:
        wait_workers(app, [f"raw-{i}@{host}" for i in range(args.workers)], procs)

        def run(n: int, key: str) -> float:
            meter.start()
            start = time.monotonic()
            for _ in range(n):
                app.send_task("agents.noop", args=[region.redis.url, key], queue="bench.noop")
            wait_progress(lambda: int(counter.get(key) or 0), n, f"raw no-ops ({key})",
                          logs=lambda: "\n".join(p.tail() for p in procs))
            return time.monotonic() - start

        meter = CpuMeter({"workers": [p.pid for p in procs], "redis": [region.redis.proc.pid]})
        run(WARMUP, "bench:noop:warm")
        elapsed = run(args.tasks, "bench:noop")
        return {"rate": args.tasks / elapsed, "cpu": meter.stop(args.tasks)}
    finally:
        stop_all(procs)
        counter.close()


# --- (b) the DRF + Celery + django-celery-results baseline -------------------------
def baseline_prepare(name: str, base_env: dict) -> dict:
    """Its own database, migrated, and a user with a DRF token (run while the
    region's template database migrates)."""
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {name}")
    env = {**base_env, "DJANGO_SETTINGS_MODULE": "bench.baseline.settings", "DATABASE_URL": pg_url(name),
           "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run(
        [sys.executable, "-m", "django", "shell", "-c",
         "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
         "print(Token.objects.create(user=User.objects.create_user('bench')).key)"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.split()[-1]
    return {"name": name, "env": env, "token": token}


def baseline_drop(name: str) -> None:
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def baseline_web_command(kind: str, port: int) -> list[str]:
    """sync: `gunicorn <project>.wsgi -w N`, what Django's deployment guide and a team
    would run. uvicorn: Meridian's exact command (project/gunicorn_conf.py) serving
    the baseline through Django's stock ASGIHandler, which project/asgi.py measured
    at about a third of a sync worker's throughput (a thread hop per request)."""
    if kind == "uvicorn":
        return web_command(port, WEB_WORKERS) + ["bench.baseline.asgi:application"]
    return [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(WEB_WORKERS),
            "--no-control-socket", "bench.baseline.wsgi:application"]  # one control socket per host otherwise


def run_baseline(args, region: Region, prepared: dict) -> dict:
    from celery import Celery

    name, token = prepared["name"], prepared["token"]
    env = {**prepared["env"], "CELERY_BROKER_URL": region.redis.url}
    procs: list[Proc] = []
    db = None
    control = Celery("baseline-bench", broker=region.redis.url)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Token {token}"}
        procs.append(Proc("baseline-web", baseline_web_command(args.baseline_web, port), env,
                          region.dir / "baseline-web.log"))
        workers = celery_workers("baseline", "bench.baseline", "celery", env, args, region.dir)
        procs += workers

        def web_up() -> bool:
            assert procs[0].alive(), procs[0].tail()
            try:
                return requests.get(f"{url}/tasks/none", headers=headers, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(web_up, 30, what="baseline web")
        wait_workers(control, [f"baseline-{i}@{socket.gethostname()}" for i in range(args.workers)], workers)
        db = Db(pg_url(name))
        logs = lambda: "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in procs)  # noqa: E731
        stored = "SELECT count(*) FROM django_celery_results_taskresult"

        def failed() -> None:
            bad = db.value(stored + " WHERE status <> 'SUCCESS'")
            assert not bad, f"{bad} baseline tasks did not succeed\n{logs()}"

        clients = Clients(args.clients, f"{url}/tasks", headers)
        try:
            clients.burst([{"payload": {"warm": i}} for i in range(WARMUP)])
            wait_progress(lambda: db.value(stored), WARMUP, "baseline warm-up", logs=logs)
            meter = CpuMeter({"web": [procs[0].pid], "workers": [p.pid for p in workers],
                              "redis": [region.redis.proc.pid]}).start()
            start = time.monotonic()
            ids = clients.burst([{"payload": {"i": i}} for i in range(args.tasks)])
            submitted = time.monotonic() - start
            wait_progress(lambda: db.value(stored), WARMUP + args.tasks, "baseline results stored", logs=logs)
            elapsed = time.monotonic() - start
            cpu = meter.stop(args.tasks)
        finally:
            clients.close()
        failed()
        loaded = starts_ms(db.rows("SELECT result FROM django_celery_results_taskresult WHERE task_id = ANY(%s)",
                                   (ids,)))
        # One at a time on an idle fleet.
        light = []
        session = requests.Session()
        for i in range(args.light):
            r = session.post(f"{url}/tasks", json={"payload": {"light": i}}, headers=headers, timeout=30)
            assert r.status_code == 201, r.text
            task_id = r.json()["id"]
            row = wait_for(lambda: db.rows("SELECT result FROM django_celery_results_taskresult WHERE task_id = %s",
                                           (task_id,)), 30, interval=0.005, what="baseline light task")
            light += starts_ms(row)
        seen = session.get(f"{url}/tasks/{task_id}", headers=headers, timeout=10).json()
        assert seen["status"] == "SUCCESS" and seen["result"]["payload"] == {"light": args.light - 1}, seen
        failed()
        return {"rate": args.tasks / elapsed, "submit_rate": args.tasks / submitted, "loaded": loaded,
                "light": light, "cpu": cpu}
    finally:
        if db:
            db.close()
        stop_all(procs)
        control.close()


def starts_ms(rows) -> list[float]:
    """submit -> start of the baseline's stored results (JSON text)."""
    out = []
    for (result,) in rows:
        r = json.loads(result)
        out.append((r["started_at"] - r["submitted_at"]) * 1000)
    return out


# --- (c) Meridian --------------------------------------------------------------------
def run_meridian(args, region: Region, app) -> dict:
    region.start()
    host = socket.gethostname()
    agents = []
    for i in range(args.workers):
        agent_id = f"bench-echo-{i}"
        proc = Proc(f"agent-{agent_id}", [
            sys.executable, "manage.py", "run_agent", "--capabilities", "echo", "--agent-id", agent_id,
            "--concurrency", str(args.concurrency), "--region-url", region.url, "--loglevel", "WARNING",
        ], region.env, region.dir / f"agent-{agent_id}.log")
        region.procs.append(proc)
        agents.append(proc)
    names = [f"bench-echo-{i}@{host}" for i in range(args.workers)]
    wait_workers(app, names, agents)
    db = Db(region.database_url)
    logs = region.logs
    done = "SELECT count(*) FROM regions_task WHERE status = 'succeeded'"

    def failed() -> None:
        bad = db.rows("SELECT status, count(*) FROM regions_task WHERE status NOT IN ('succeeded') GROUP BY status")
        assert not bad, f"Meridian tasks not succeeded: {bad}\n{logs()}"

    headers = {"Authorization": f"Bearer {region.api_key}"}
    if args.events_only:
        clients = Clients(args.clients, f"{region.url}/api/v1/tasks", headers)
        try:
            clients.burst([{"capability": "echo", "payload": {"warm": i}} for i in range(WARMUP)])
            wait_progress(lambda: db.value(done), WARMUP, "Meridian warm-up", logs=logs)
            events = run_events(args, region, app, names, agents, clients, db, done, logs)
        finally:
            clients.close()
        failed()
        db.close()
        return {"events": events}
    clients = Clients(args.clients, f"{region.url}/api/v1/tasks", headers)
    profilers = []
    try:
        clients.burst([{"capability": "echo", "payload": {"warm": i}} for i in range(WARMUP)])
        wait_progress(lambda: db.value(done), WARMUP, "Meridian warm-up", logs=logs)
        if args.profile:
            profilers = profile_start(region, agents)
        meter = CpuMeter({"web": [region.web.pid], "agents": [p.pid for p in agents],
                          "orchestrator": [region.orchestrator.pid], "redis": [region.redis.proc.pid]}).start()
        start = time.monotonic()
        ids = clients.burst([{"capability": "echo", "payload": {"i": i}} for i in range(args.tasks)])
        submitted = time.monotonic() - start
        wait_progress(lambda: db.value(done), WARMUP + args.tasks, "Meridian tasks succeeded", logs=logs)
        elapsed = time.monotonic() - start
        cpu = meter.stop(args.tasks)
    finally:
        clients.close()
        profiles = profile_stop(profilers)
    failed()
    # The same tasks submitted 100 per request (POST /api/v1/tasks/batch), same clients.
    batch_size = 100
    batches = [[{"capability": "echo", "payload": {"b": i + j}} for j in range(min(batch_size, args.tasks - i))]
               for i in range(0, args.tasks, batch_size)]
    batch_url = f"{region.url}/api/v1/tasks/batch"
    local = threading.local()

    def post_batch(items: list[dict]) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        r = session.post(batch_url, json={"tasks": items}, headers=headers, timeout=60)
        assert r.status_code == 200 and r.json()["accepted"] == len(items), f"{r.status_code} {r.text[:500]}"
        return len(items)

    before = db.value(done)
    meter = CpuMeter({"web": [region.web.pid], "agents": [p.pid for p in agents],
                      "orchestrator": [region.orchestrator.pid], "redis": [region.redis.proc.pid]}).start()
    start = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        assert sum(pool.map(post_batch, batches)) == args.tasks
    batch_submitted = time.monotonic() - start
    wait_progress(lambda: db.value(done), before + args.tasks, "Meridian batch tasks succeeded", logs=logs)
    batch_elapsed = time.monotonic() - start
    batch_cpu = meter.stop(args.tasks)
    failed()
    ms = "EXTRACT(EPOCH FROM (started_at - created_at)) * 1000"
    loaded = [float(r[0]) for r in db.rows(f"SELECT {ms} FROM regions_task WHERE id = ANY(%s::uuid[])", (ids,))]
    light = []
    session = requests.Session()
    for i in range(args.light):
        r = session.post(f"{region.url}/api/v1/tasks", json={"capability": "echo", "payload": {"light": i}},
                         headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        row = wait_for(lambda: db.rows(f"SELECT {ms} FROM regions_task WHERE id = %s AND status = 'succeeded'",
                                       (task_id,)), 30, interval=0.005, what="Meridian light task")
        light.append(float(row[0][0]))
    seen = session.get(f"{region.url}/api/v1/tasks/{task_id}", headers=headers, timeout=10).json()
    assert seen["status"] == "succeeded", seen
    failed()
    clients = Clients(args.clients, f"{region.url}/api/v1/tasks", headers)
    try:
        events = run_events(args, region, app, names, agents, clients, db, done, logs)
    finally:
        clients.close()
    failed()
    db.close()
    return {"rate": args.tasks / elapsed, "submit_rate": args.tasks / submitted, "loaded": loaded, "light": light,
            "profiles": profiles, "cpu": cpu, "batch_rate": args.tasks / batch_elapsed,
            "batch_submit_rate": args.tasks / batch_submitted, "batch_cpu": batch_cpu, "events": events}


# --- (e) Meridian with task events on vs off -------------------------------------------
def task_events(app, names: list[str], on: bool) -> None:
    """Celery's enable_events / disable_events on these agents, every one answering."""
    command = app.control.enable_events if on else app.control.disable_events
    replies = command(destination=names, reply=True, timeout=5.0) or []
    answered = {name: answer for reply in replies for name, answer in reply.items()}
    assert set(answered) == set(names) and all("ok" in a for a in answered.values()), answered


class EventCounter:
    """A Celery event receiver on the region's broker (what Flower runs), counting by type."""

    def __init__(self, app):
        self.app, self.counts, self.receiver = app, Counter(), None
        self.thread = threading.Thread(target=self._run, name="bench-events", daemon=True)
        self.thread.start()
        wait_for(lambda: self.counts["worker-heartbeat"] > 0, 60, what="an agent's worker-heartbeat event")

    def _run(self) -> None:
        def count(event: dict) -> None:
            self.counts[event["type"]] += 1

        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": count})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)


def run_events(args, region: Region, app, names: list[str], agents: list[Proc], clients: Clients, db: Db,
               done: str, logs) -> dict:
    """The same agents, task events toggled between rounds in the order off on on off
    off on ... (each mode first as often as second: drift of a shared machine falls
    on both); tasks/s and the agents' CPU ms per task of each round."""
    from django.conf import settings

    n = max(args.tasks // 2, 100)
    counter = EventCounter(app)
    rounds: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        # One round unmeasured: the first after a pause ran at half speed.
        before = db.value(done)
        clients.burst([{"capability": "echo", "payload": {"ev-warm": i}} for i in range(n)])
        wait_progress(lambda: db.value(done), before + n, "events warm-up round", logs=logs)
        for r in range(args.event_rounds):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                task_events(app, names, mode == "on")
                seen = counter.counts["task-succeeded"]
                before = db.value(done)
                meter = CpuMeter({"agents": [p.pid for p in agents], "web": [region.web.pid]}).start()
                start = time.monotonic()
                clients.burst([{"capability": "echo", "payload": {"ev": i, "mode": mode}} for i in range(n)])
                wait_progress(lambda: db.value(done), before + n, f"events {mode} round {r}", logs=logs)
                elapsed = time.monotonic() - start
                cpu = meter.stop(n)
                # The last events of a round may still be on the way: give them a moment.
                if mode == "on":
                    wait_for(lambda: counter.counts["task-succeeded"] - seen >= n, 30,
                             what=f"{n} task-succeeded events in round {r}")
                events = counter.counts["task-succeeded"] - seen
                rounds[mode].append({"rate": n / elapsed, "agents_cpu": cpu["agents"], "events": events})
    finally:
        counter.close()
        task_events(app, names, settings.AGENT_TASK_EVENTS)
    assert all(r["events"] == 0 for r in rounds["off"]), rounds
    return {"n": n, "rounds": rounds, "counts": dict(counter.counts)}


# --- --profile ------------------------------------------------------------------------
def profile_start(region: Region, agents: list[Proc]) -> list[tuple[str, subprocess.Popen, Path]]:
    PROFILES.mkdir(parents=True, exist_ok=True)
    targets = [("web", region.web.pid), ("orchestrator", region.orchestrator.pid)]
    targets += [(f"agent{i}", p.pid) for i, p in enumerate(agents)]
    out = []
    for role, pid in targets:
        path = PROFILES / f"meridian-{role}.speedscope.json"
        popen = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--subprocesses",
             "--function", "--nonblocking", "--rate", "100", "--format", "speedscope", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=open(region.dir / f"py-spy-{role}.log", "wb"))
        out.append((role, popen, path, pid))
    time.sleep(1)  # py-spy attached to every process of the tree
    return out


def profile_stop(profilers) -> dict[str, tuple[Path, int]]:
    for _, popen, _, _ in profilers:
        popen.send_signal(signal.SIGINT)
    written = {}
    for role, popen, path, pid in profilers:
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            popen.kill()
        if path.exists():
            written[role] = (path, pid)
    return written


_QUALNAMES: dict[str, dict[int, str]] = {}


def qualname(name: str, file: str, line: int) -> str:
    """Class.method for our own code (py-spy --function gives the def's first line)."""
    if not file.endswith(".py"):
        return f"{name} ({file or '?'})"
    path = Path(file)
    try:
        rel = path.resolve().relative_to(ROOT)
    except (ValueError, OSError):
        rel = None
    if rel is None or rel.parts[0] in (".venv", "venv"):
        short = file.split("site-packages/")[-1] if "site-packages/" in file else path.name
        return f"{name} ({short})"
    if file not in _QUALNAMES:
        table: dict[int, str] = {}
        try:
            tree = ast.parse(path.read_text())

            def visit(node, prefix):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        q = f"{prefix}{child.name}"
                        for ln in [child.lineno] + [d.lineno for d in getattr(child, "decorator_list", [])]:
                            table[ln] = q
                        visit(child, q + ".")

            visit(tree, "")
        except (OSError, SyntaxError):
            pass
        _QUALNAMES[file] = table
    return f"{_QUALNAMES[file].get(line, name)} ({rel}:{line})"


# Where a sample of the web or an agent is, by the first matching frame from the leaf up.
WEB_BUCKETS = [("submit  POST /api/v1/tasks", "TaskListSubmitApi."), ("claim   POST .../claim", "TaskClaimApi."),
               ("report  POST .../report", "TaskReportApi."), ("heartbeat", "agent_heartbeat_view"),
               ("task detail GET", "TaskDetailApi.")]
AGENT_BUCKETS = [("claim over HTTP", "claim (agents/runtime.py"), ("report over HTTP", "report_outcome ("),
                 ("report over HTTP", "report (agents/runtime.py"), ("handler", "agents/handlers/"),
                 ("execute_task other", "execute_task (")]


def profile_summary(profiles: dict[str, tuple[Path, int]], top: int = 15) -> None:
    own_all: Counter = Counter()
    total_all = 0
    print("\nprofile of the Meridian burst (py-spy at 100 Hz, non-idle samples: on a busy box a runnable thread\n"
          "waiting for a core counts as active too):")
    for role, (path, root_pid) in profiles.items():
        data = json.loads(path.read_text())
        frames = [qualname(f["name"], f.get("file") or "", f.get("line") or 0) for f in data["shared"]["frames"]]
        buckets = WEB_BUCKETS if role == "web" else AGENT_BUCKETS if role.startswith("agent") else []
        own: Counter = Counter()
        where: Counter = Counter()
        tasks: Counter = Counter()
        total = 0
        for prof in data["profiles"]:
            in_root = prof["name"].startswith(f"Process {root_pid} ")
            for stack, weight in zip(prof["samples"], prof["weights"]):
                if not stack:
                    continue
                names = [frames[i] for i in stack]
                total += weight
                own[names[-1]] += weight
                bucket = ("main process (consumer, broker I/O, heartbeats)" if in_root and role.startswith("agent")
                          else "gunicorn arbiter" if in_root else "other (event loop, celery, django outside views)")
                for label, needle in buckets:
                    if any(needle in n for n in reversed(names)):
                        bucket = label
                        break
                where[bucket] += weight
                if role == "orchestrator":
                    task = next((n for n in names if "(regions/tasks.py" in n), "other (celery, beat)")
                    tasks[task.split(" (")[0]] += weight
        total_all += total
        for name, n in own.items():
            own_all[f"[{role}] {name}"] += n
        split = where if buckets else tasks
        print(f"  {role}: {total:.1f} s active; " + "; ".join(
            f"{label} {100 * n / max(total, 1e-9):.0f}%" for label, n in split.most_common(8)))
        print(f"    {path}")
    print(f"\n  top {top} functions by own time (all processes, {total_all:.1f} s active):")
    for name, n in own_all.most_common(top):
        print(f"    {100 * n / max(total_all, 1e-9):5.1f}%  {n:6.2f}s  {name}")


# ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="tasks per throughput run (2000; 300 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help="submitting threads")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers / Meridian agents")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker / agent")
    parser.add_argument("--baseline-web", choices=["sync", "uvicorn"], default="sync",
                        help="baseline served by gunicorn sync workers (default) or by Meridian's uvicorn command")
    parser.add_argument("--quick", action="store_true", help="300 tasks, 30 one-at-a-time: under 90 s")
    parser.add_argument("--profile", action="store_true", help="py-spy Meridian's web, orchestrator and agents")
    parser.add_argument("--event-rounds", type=int, default=None,
                        help="rounds of the task events comparison, each one off and one on (4; 2 with --quick)")
    parser.add_argument("--events-only", action="store_true",
                        help="only Meridian's task events on vs off (no raw Celery, no baseline)")
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis",
                        help="the region's broker: its redis-server (default) or a RabbitMQ vhost")
    args = parser.parse_args()
    args.tasks = args.tasks or (300 if args.quick else 2000)
    args.light = 30 if args.quick else 100
    args.event_rounds = args.event_rounds or (2 if args.quick else 4)
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f}s] {what}", file=sys.stderr, flush=True)

    load0 = os.getloadavg()
    base_env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "EXTRA_APPS")}

    prepared: dict = {}
    baseline_db = f"mt_baseline_{os.getpid()}"
    preparing = threading.Thread(target=lambda: prepared.update(baseline_prepare(baseline_db, base_env)))
    if not args.events_only:
        preparing.start()
    template = region = None
    try:
        template = Template()
        phase("region template migrated")
        region = Region(template, region_id="bench-tasks", broker=args.broker, LOG_LEVEL="WARNING",
                        **PRODUCTION_CLOCKS)
        # The bench process publishes the raw no-ops and pings workers with Meridian's own Celery app.
        os.environ.update(region.env)
        import django

        django.setup()
        from project.celery import app

        if args.events_only:
            mer = run_meridian(args, region, app)
            raw = base = None
        else:
            raw = run_raw(args, region, app)
            phase(f"raw: {raw['rate']:.0f} tasks/s")
            preparing.join()
            assert prepared, "the baseline's database could not be prepared (see above)"
            base = run_baseline(args, region, prepared)
            phase(f"baseline: {base['rate']:.0f} tasks/s")
            mer = run_meridian(args, region, app)
            phase(f"Meridian: {mer['rate']:.0f} tasks/s")
    finally:
        if region:
            region.stop()
        if template:
            template.drop()
        if not args.events_only:
            preparing.join()
            baseline_drop(baseline_db)
    load1 = os.getloadavg()
    broker = "the region's redis-server" if args.broker == "redis" else "a RabbitMQ vhost of the region's own"
    if args.events_only:
        print(f"\ntask events benchmark: {args.workers} agents x concurrency {args.concurrency} (prefork); "
              f"broker: {broker}; {args.clients} clients")
        print(f"  load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start, "
              f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end, {os.cpu_count()} CPUs; "
              f"run took {time.monotonic() - t0:.0f} s")
        events_report(mer["events"])
        return

    def p(values, q):
        return percentile(values, q)

    baseline_web = ("gunicorn sync workers" if args.baseline_web == "sync"
                    else "Meridian's command, Django's ASGIHandler")
    print(f"\ntasks benchmark: {args.tasks} tasks from {args.clients} clients; {args.workers} workers x "
          f"concurrency {args.concurrency} (prefork) for each; broker: {broker}; web -w "
          f"{WEB_WORKERS}: Meridian gunicorn -c project/gunicorn_conf.py (uvicorn workers), baseline "
          f"{baseline_web}")
    print(f"  load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start, "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end, {os.cpu_count()} CPUs; "
          f"run took {time.monotonic() - t0:.0f} s")
    print(f"\n  {'':44} {'tasks/s':>8} {'vs raw':>7}  {'submit/s':>8}  {'submit->start under load p50/p99':>33}")
    print(f"  {'(a) raw Celery no-op, publish -> executed':44} {raw['rate']:8.0f} {1:7.2f}x")
    for label, r in (("(b) DRF + Celery + django-celery-results", base), ("(c) Meridian API -> agent -> stored", mer)):
        print(f"  {label:44} {r['rate']:8.0f} {r['rate'] / raw['rate']:7.2f}x  {r['submit_rate']:8.0f}  "
              f"{median(r['loaded']):14.0f} / {p(r['loaded'], 99):.0f} ms")
    print(f"  {'(d) Meridian, submitted 100 per request':44} {mer['batch_rate']:8.0f} "
          f"{mer['batch_rate'] / raw['rate']:7.2f}x  {mer['batch_submit_rate']:8.0f}")
    print("\n  CPU ms per task during the throughput run (process trees; PostgreSQL not counted):")
    for label, cpu in (("(a) raw", raw["cpu"]), ("(b) baseline", base["cpu"]), ("(c) Meridian", mer["cpu"]),
                       ("(d) batch", mer["batch_cpu"])):
        print(f"  {label:14} total {sum(cpu.values()):6.1f}: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    print(f"\n  submit -> start, one task at a time on an idle fleet ({args.light} tasks):")
    for label, r in (("(b) DRF + Celery + django-celery-results", base), ("(c) Meridian", mer)):
        print(f"  {label:44} p50 {median(r['light']):6.1f} ms   p99 {p(r['light'], 99):6.1f} ms")
    if mer.get("profiles"):
        profile_summary(mer["profiles"])
    events_report(mer["events"], bench=False)
    print()
    vs_raw = mer["rate"] / raw["rate"]
    vs_base = mer["rate"] / base["rate"]
    bench_line("tasks_vs_raw", mer["rate"], "tasks/s", ref=raw["rate"], target=">=0.5x", ok=vs_raw >= 0.5)
    bench_line("tasks_vs_drf_celery_results", mer["rate"], "tasks/s", ref=base["rate"], target=">=1.0x",
               ok=vs_base >= 1.0)
    bench_line("tasks_batch_submit_vs_raw", mer["batch_rate"], "tasks/s", ref=raw["rate"], target=">=0.5x",
               ok=mer["batch_rate"] / raw["rate"] >= 0.5)
    p50 = median(mer["light"])
    bench_line("submit_to_start_p50", p50, "ms", ref=20, target="<=20ms", ok=p50 <= 20)
    events_bench_line(mer["events"])


def events_report(ev: dict, bench: bool = True) -> None:
    print(f"\n  (e) Meridian with task events on vs off: {len(ev['rounds']['on'])} rounds of {ev['n']} tasks each, "
          "interleaved, an event receiver attached:")
    for mode in ("off", "on"):
        rs = ev["rounds"][mode]
        print(f"  events {mode:3}  tasks/s median {median([r['rate'] for r in rs]):6.0f}  rounds "
              + " ".join(f"{r['rate']:.0f}" for r in rs)
              + f"   agents' CPU ms/task median {median([r['agents_cpu'] for r in rs]):.2f}"
              + f"   task-succeeded events seen {sum(r['events'] for r in rs)}")
    print("  events received in all: " + ", ".join(f"{k} {v}" for k, v in sorted(ev["counts"].items())))
    if bench:
        print()
        events_bench_line(ev)


def events_bench_line(ev: dict) -> None:
    """Throughput with task events on, against off in the same run: the switch's
    default follows this (on when it costs at most 5%)."""
    on = median([r["rate"] for r in ev["rounds"]["on"]])
    off = median([r["rate"] for r in ev["rounds"]["off"]])
    bench_line("task_events_on_vs_off", on, "tasks/s", ref=off, target=">=0.95x", ok=on / off >= 0.95)


if __name__ == "__main__":
    main()
