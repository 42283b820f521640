#!/usr/bin/env python
"""Route query latency and summary ingest at the router with many regions and capabilities.

    .venv/bin/python bench/route.py [--regions 500] [--capabilities 200] [--queries 3000] [--quick]

Starts a real router (gunicorn as deployed, project/gunicorn_conf.py, -w 2
uvicorn workers, its own PostgreSQL database), fills it with one summary per
region, then in one run, side by side:

- GET /api/v1/route from a keep-alive client, one query at a time: plain,
  with a residency constraint, and while summaries arrive;
- POST /update_regional_status with --capabilities capabilities, back to back
  (ingest on its own), and at the realistic rate during the third route phase.

Summaries arrive at regions / --summary-interval per second (500 regions at
the default 60 s: 8.3 a second), round-robin over the regions, each with new
idle counts, from a separate process (so the timing client shares no GIL with
it). --quick keeps the whole run under a minute.
"""
import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line, percentile  # noqa: E402
from tests.harness import Router, Template  # noqa: E402

SEED = """
import json, random
from django.utils import timezone
from router.services.regions import region_create
from router.models import Region
rng = random.Random(1)
caps = [f"cap_{{i:03d}}" for i in range({caps})]
from django.db import transaction
tokens, now = [], timezone.now()
with transaction.atomic():  # one commit, not 1,000: setup time is most of a --quick run
    for r in range({regions}):
        region, token = region_create(region_id=f"region-{{r:03d}}", labels=["eu" if r % 3 == 0 else "us"],
                                      orchestrator_url=f"http://10.{{r // 250}}.{{r % 250}}.1:8000",
                                      summary_interval={interval})
        n = rng.randint(10, 500)
        Region.objects.filter(pk=region.pk).update(available_agents=n, received_at=now,
                                                   capabilities={{c: {{"count": n, "idle": rng.randint(0, n)}} for c in caps}})
        tokens.append(token)
print(json.dumps(tokens))
"""

INGEST_REF_MS = 17.2  # summary ingest p50 measured before issue 10 (BENCHMARKS.md, 50 regions x 200 capabilities)
ROUTE_TARGET_MS = 5.0


def summary(region: int, caps: int, rng: random.Random) -> dict:
    n = rng.randint(10, 500)
    return {"region_id": f"region-{region:03d}", "orchestrator_url": f"http://10.{region // 250}.{region % 250}.1:8000",
            "available_agents": n, "last_updated": time.time(),
            "agent_capabilities_summary": {f"cap_{i:03d}": {"count": n, "idle": rng.randint(0, n)}
                                           for i in range(caps)}}


def post_summary(session, url: str, tokens: list[str], region: int, caps: int, rng) -> float:
    data = json.dumps(summary(region, caps, rng))
    start = time.perf_counter()
    r = session.post(f"{url}/update_regional_status", data=data,
                     headers={"Authorization": f"Bearer {tokens[region]}", "Content-Type": "application/json"})
    elapsed = (time.perf_counter() - start) * 1000
    assert r.status_code == 200, r.text
    return elapsed


def pusher(url: str, tokens: list[str], caps: int, rate: float, start_at: int, stop, out) -> None:
    """Summaries at `rate` a second, round-robin over the regions, until stopped."""
    session, rng = requests.Session(), random.Random(2)
    times, k, t0 = [], 0, time.monotonic()
    while not stop.is_set():
        times.append(post_summary(session, url, tokens, (start_at + k) % len(tokens), caps, rng))
        k += 1
        stop.wait(max(0.0, t0 + k / rate - time.monotonic()))
    out.send((times, time.monotonic() - t0))


def timed(session, url: str, key: str, queries: int, caps: int, residency: str | None,
          seconds: float = float("inf")) -> list[float]:
    """`queries` route queries one at a time, or as many as fit in `seconds`."""
    out = []
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds
    for i in range(queries):
        if time.monotonic() > deadline:
            break
        params = {"capability": f"cap_{i % caps:03d}"}
        if residency:
            params["residency"] = residency
        start = time.perf_counter()
        r = session.get(f"{url}/api/v1/route", params=params, headers=headers)
        out.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--regions", type=int, default=500)
    parser.add_argument("--capabilities", type=int, default=200)
    parser.add_argument("--queries", type=int, default=None, help="per route phase (3000; --quick 800)")
    parser.add_argument("--ingest", type=int, default=None, help="summaries posted back to back (400; --quick 150)")
    parser.add_argument("--summary-interval", type=float, default=60.0,
                        help="each region's summary interval: summaries arrive at regions/interval a second")
    parser.add_argument("--phase-seconds", type=float, default=None,
                        help="cap on each route row's time, whatever --queries says (--quick: 6 s)")
    parser.add_argument("--quick", action="store_true", help="fewer queries: the whole run in under a minute")
    args = parser.parse_args()
    queries = args.queries or (800 if args.quick else 3000)
    cap = args.phase_seconds or (6.0 if args.quick else float("inf"))
    ingest_n = args.ingest or (150 if args.quick else 400)
    rate = args.regions / args.summary_interval
    began = time.monotonic()
    template = Template(role="router")
    router = Router(template)
    router.env["LOG_LEVEL"] = "WARNING"
    router.start()
    try:
        seed = SEED.format(regions=args.regions, caps=args.capabilities, interval=args.summary_interval)
        tokens = json.loads(router.manage("shell", "-c", seed).splitlines()[-1])
        setup = time.monotonic() - began
        session = requests.Session()
        timed(session, router.url, router.api_key, 200, args.capabilities, None)  # warm up
        rows = [("route", timed(session, router.url, router.api_key, queries, args.capabilities, None, cap)),
                ("route + residency=eu", timed(session, router.url, router.api_key, queries,
                                               args.capabilities, "eu", cap))]
        # Summary ingest on its own: back to back, round-robin over the regions.
        rng, ingest_session = random.Random(3), requests.Session()
        post_summary(ingest_session, router.url, tokens, 0, args.capabilities, rng)  # warm up
        ingest_ms, deadline = [], time.monotonic() + cap
        for k in range(ingest_n):
            if time.monotonic() > deadline:
                break
            ingest_ms.append(post_summary(ingest_session, router.url, tokens, 1 + k % (len(tokens) - 1),
                                          args.capabilities, rng))
        # Route queries while summaries arrive at the realistic rate.
        ctx = multiprocessing.get_context("fork")
        stop, (receive, send) = ctx.Event(), ctx.Pipe(duplex=False)
        proc = ctx.Process(target=pusher, args=(router.url, tokens, args.capabilities, rate, len(ingest_ms) + 1, stop,
                                                          send))
        proc.start()
        time.sleep(1.0)  # summaries flowing, and each worker's directory seeing them, before timing
        rows.append(("route while summaries arrive", timed(session, router.url, router.api_key, queries,
                                                           args.capabilities, None, cap)))
        stop.set()
        arriving_ms, seconds = receive.recv()
        proc.join()
        load = os.getloadavg()
        print(f"\n{args.regions} regions x {args.capabilities} capabilities; route: up to {queries} sequential "
              f"keep-alive queries per row{f' or {cap:g} s' if cap != float('inf') else ''} (client-side, gunicorn -w 2 uvicorn workers); summaries while routing: "
              f"{len(arriving_ms)} at {len(arriving_ms) / seconds:.1f}/s (target {rate:.1f}/s = {args.regions} "
              f"regions every {args.summary_interval:g} s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'':36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values in rows:
            print(f"{name:36} {statistics.median(values):8.2f} {percentile(values, 99):8.2f} {max(values):8.2f}"
                  f"   ({len(values)} queries)")
        for name, values in (("summary ingest, back to back", ingest_ms),
                             ("summary ingest, while routing", arriving_ms)):
            print(f"{name:36} {statistics.median(values):8.2f} {percentile(values, 99):8.2f} {max(values):8.2f}"
                  f"   ({len(values)} summaries of {args.capabilities} capabilities)")
        print(f"setup {setup:.1f} s, whole run {time.monotonic() - began:.1f} s\n")
        shape = f"{args.regions}x{args.capabilities}"
        for name, (_, values) in zip(("route_p99", "route_residency_p99", "route_p99_summaries_arriving"), rows):
            p99 = percentile(values, 99)
            bench_line(f"{name}_{shape}", p99, "ms", ref=ROUTE_TARGET_MS, target=f"<{ROUTE_TARGET_MS:g}ms",
                       ok=p99 < ROUTE_TARGET_MS)
        p50 = statistics.median(ingest_ms)
        bench_line(f"summary_ingest_p50_{args.capabilities}caps", p50, "ms", ref=INGEST_REF_MS,
                   target=f"<{INGEST_REF_MS / 2:g}ms", ok=p50 < INGEST_REF_MS / 2)
    finally:
        router.stop()
        template.drop()


if __name__ == "__main__":
    main()
