#!/usr/bin/env python
"""Task throughput end to end (API -> agent -> result stored) against raw Celery
no-op throughput on the same Redis, side by side in one run, plus submit->start.

    .venv/bin/python bench/tasks.py [--tasks 2000] [--clients 8]

Raw: the same agent command's Celery app, a worker consuming a no-op task that
only INCRs a counter. Meridian: callers POST /api/v1/tasks (echo) from --clients
threads; time until every task is `succeeded` in PostgreSQL.
"""
import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ROOT, Proc, Region, Template, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    template = Template()
    region = Region(template, region_id="bench-tasks", LOG_LEVEL="WARNING").start()
    try:
        # --- raw Celery: publish N no-ops, time until all ran ---------------------
        raw = Proc("raw-worker", [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "bench.noop",
                                  "-c", str(args.concurrency), "--without-mingle", "--without-gossip",
                                  "--without-heartbeat", "-l", "WARNING"], region.env, region.dir / "raw.log")
        region.procs.append(raw)
        counter = redis.Redis.from_url(region.redis.url)
        sys.path.insert(0, str(ROOT))
        import os

        os.environ.update({k: v for k, v in region.env.items() if k in ("CELERY_BROKER_URL", "REDIS_URL")})
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        import django

        django.setup()
        from project.celery import app

        app.conf.broker_url = region.redis.url
        time.sleep(3)
        start = time.monotonic()
        for _ in range(args.tasks):
            app.send_task("agents.noop", args=[region.redis.url, "bench:noop"], queue="bench.noop")
        wait_for(lambda: int(counter.get("bench:noop") or 0) >= args.tasks, 300, interval=0.05, what="raw no-ops")
        raw_rate = args.tasks / (time.monotonic() - start)
        raw.stop()

        # --- Meridian end to end ---------------------------------------------------
        for i in range(2):
            region.agent("echo", agent_id=f"bench-echo-{i}", concurrency=args.concurrency)
        session = requests.Session()

        def submit(i):
            r = session.post(f"{region.url}/api/v1/tasks", json={"capability": "echo", "payload": {"i": i}},
                             headers={"Authorization": f"Bearer {region.api_key}"}, timeout=30)
            assert r.status_code == 201, r.text

        start = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(submit, range(args.tasks)))
        submitted = time.monotonic() - start
        wait_for(lambda: region.db_query("SELECT count(*) FROM regions_task WHERE status = 'succeeded'")[0][0]
                 >= args.tasks, 600, interval=0.2, what="all tasks succeeded")
        e2e = time.monotonic() - start
        rows = region.db_query("SELECT EXTRACT(EPOCH FROM (started_at - created_at)) * 1000 FROM regions_task "
                               "WHERE status = 'succeeded'")
        starts = sorted(float(r[0]) for r in rows)
        e2e_rate = args.tasks / e2e
        # Light load: one task at a time, for latency rather than throughput.
        region.db_query("SELECT 1")
        light = []
        for i in range(100):
            r = session.post(f"{region.url}/api/v1/tasks", json={"capability": "echo", "payload": {"light": i}},
                             headers={"Authorization": f"Bearer {region.api_key}"}, timeout=30)
            task_id = r.json()["id"]
            wait_for(lambda: region.db_query("SELECT status FROM regions_task WHERE id = %s", (task_id,))[0][0]
                     == "succeeded", 30, interval=0.005, what="light task")
            light.append(float(region.db_query(
                "SELECT EXTRACT(EPOCH FROM (started_at - created_at)) * 1000 FROM regions_task WHERE id = %s",
                (task_id,))[0][0]))
        light.sort()
        print(f"\ntasks benchmark: {args.tasks} tasks, worker concurrency {args.concurrency}, same Redis, one 2-core box")
        print(f"  raw Celery no-op (publish -> executed):        {raw_rate:7.0f} tasks/s")
        print(f"  Meridian API -> agent -> result stored:        {e2e_rate:7.0f} tasks/s   "
              f"({e2e_rate / raw_rate:.2f}x raw; submit alone {args.tasks / submitted:.0f}/s from {args.clients} clients)")
        print(f"  submit -> start under that load: p50 {statistics.median(starts):.1f} ms, "
              f"p99 {starts[int(len(starts) * 0.99) - 1]:.1f} ms (queueing)")
        print(f"  submit -> start, one task at a time: p50 {statistics.median(light):.1f} ms, "
              f"p99 {light[98]:.1f} ms")
    finally:
        region.stop()
        template.drop()


if __name__ == "__main__":
    main()
