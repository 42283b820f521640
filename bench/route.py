#!/usr/bin/env python
"""Route query latency at the router with many regions and capabilities.

    .venv/bin/python bench/route.py [--regions 50] [--capabilities 200] [--queries 3000]

Starts a real router (gunicorn as deployed, project/gunicorn_conf.py, its own PostgreSQL database), fills it with
summaries, then times GET /api/v1/route from a keep-alive client, one query at
a time, with and without a residency constraint, and while summaries arrive.
"""
import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import Router, Template  # noqa: E402

SEED = """
import random, time
from router.services import region_create
from router.models import Region
rng = random.Random(1)
caps = [f"cap_{{i:03d}}" for i in range({caps})]
for r in range({regions}):
    region, token = region_create(region_id=f"region-{{r:02d}}", orchestrator_url=f"http://10.0.{{r}}.1:8000",
                                  labels=["eu" if r % 3 == 0 else "us"], summary_interval=60)
    n = rng.randint(10, 500)
    Region.objects.filter(pk=region.pk).update(
        available_agents=n, received_at=__import__("django.utils.timezone", fromlist=["now"]).now(),
        capabilities={{c: {{"count": n, "idle": rng.randint(0, n)}} for c in caps}})
    if r == 0:
        print(token)
"""


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def timed(session, url: str, key: str, queries: int, caps: int, residency: str | None) -> list[float]:
    out = []
    for i in range(queries):
        params = {"capability": f"cap_{i % caps:03d}"}
        if residency:
            params["residency"] = residency
        start = time.perf_counter()
        r = session.get(f"{url}/api/v1/route", params=params, headers={"Authorization": f"Bearer {key}"})
        out.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--regions", type=int, default=50)
    parser.add_argument("--capabilities", type=int, default=200)
    parser.add_argument("--queries", type=int, default=3000)
    args = parser.parse_args()
    template = Template(role="router")
    router = Router(template)
    router.env["LOG_LEVEL"] = "WARNING"
    router.start()
    try:
        token = router.manage("shell", "-c", SEED.format(regions=args.regions, caps=args.capabilities)).splitlines()[-1]
        session = requests.Session()
        timed(session, router.url, router.api_key, 200, args.capabilities, None)  # warm up
        rows = [("route", timed(session, router.url, router.api_key, args.queries, args.capabilities, None)),
                ("route + residency=eu", timed(session, router.url, router.api_key, args.queries,
                                               args.capabilities, "eu"))]
        # Summaries arriving meanwhile: 2 a second, more than 50 regions at 60 s send.
        stop = threading.Event()
        ingest_ms = []

        def pusher():
            s = requests.Session()
            while not stop.is_set():
                start = time.perf_counter()
                s.post(f"{router.url}/update_regional_status", headers={"Authorization": f"Bearer {token}"}, json={
                    "region_id": "region-00", "orchestrator_url": "http://10.0.0.1:8000", "available_agents": 10,
                    "agent_capabilities_summary": {f"cap_{i:03d}": {"count": 10, "idle": 5}
                                                   for i in range(args.capabilities)},
                    "last_updated": time.time()})
                ingest_ms.append((time.perf_counter() - start) * 1000)
                stop.wait(0.5)

        thread = threading.Thread(target=pusher, daemon=True)
        thread.start()
        rows.append(("route while summaries arrive", timed(session, router.url, router.api_key, args.queries,
                                                            args.capabilities, None)))
        stop.set()
        thread.join()
        print(f"\nroute latency, {args.regions} regions x {args.capabilities} capabilities, "
              f"{args.queries} sequential keep-alive queries each (client-side, gunicorn -w 2, uvicorn workers)")
        print(f"{'query':30} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values in rows:
            print(f"{name:30} {statistics.median(values):8.2f} {percentile(values, 0.99):8.2f} {max(values):8.2f}")
        print(f"{'summary ingest (200 caps)':30} {statistics.median(ingest_ms):8.2f} "
              f"{percentile(ingest_ms, 0.99):8.2f} {max(ingest_ms):8.2f}   ({len(ingest_ms)} summaries)")
    finally:
        router.stop()
        template.drop()


if __name__ == "__main__":
    main()
