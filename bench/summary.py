#!/usr/bin/env python
"""Summary cost vs fleet size: the region's summary for the router and the
submit-time capability check, built from the counters PostgreSQL keeps
(regions.models.CapabilityCounter, migration 0007) and, side by side in the
same run on the same rows, from a scan of the agents (the code before: one
aggregate over every online agent's capabilities, and a DISTINCT per submit).

    .venv/bin/python bench/summary.py                      # 1k, 10k, 100k registered agents
    .venv/bin/python bench/summary.py --sizes 1000,10000 --repeat 10

Agents are written with COPY (the triggers keep the counters as they arrive):
each has 3 of 200 capability names; 90% online (of which 5% cordoned, 20%
busy), the rest offline. At each size it also times what the counters cost
the writers: the bulk flush's UPDATE of every agent's last_seen (no counted
column changes) and a busy flip of 10% of the agents, with the triggers on and
off.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line, median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the same three sizes, 5 repeats each")
    args = parser.parse_args()
    if args.quick:
        args.repeat = min(args.repeat, 5)
    sizes = [int(x) for x in args.sizes.split(",")]

    from tests.harness import RedisServer, Template, pg_url

    template = Template()
    redis_dir = Path(tempfile.mkdtemp(prefix="meridian-bench-summary-"))
    redis = RedisServer(redis_dir)
    os.environ.update(DATABASE_URL=pg_url(template.name), REDIS_URL=redis.url, ROLE="region",
                      REGION_ID="bench-summary", DJANGO_SETTINGS_MODULE="project.settings")
    os.environ.pop("EXTRA_APPS", None)
    try:
        run(sizes, args.repeat)
    finally:
        from django.db import connections

        connections.close_all()
        redis.stop()
        template.drop()


def timed(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return median(samples) * 1000


def run(sizes: list[int], repeat: int) -> None:
    import django

    django.setup()
    from django.db import connection

    from regions.services import capabilities
    from regions.services import summary

    caps = [f"cap_{i:03d}" for i in range(200)]
    rng = random.Random(7)
    rows = []
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores, shared)")
    print(f"{'agents':>8} {'summary (counters)':>19} {'summary (scan)':>15} {'live caps (counters)':>21} "
          f"{'live caps (scan)':>17} {'flush UPDATE +trg':>18} {'-trg':>8} {'busy flip +trg':>15} {'-trg':>8}")
    results = {}
    done = 0
    for size in sizes:
        buf = io.StringIO()
        for i in range(done, size):
            r = rng.random()
            status = "online" if r < 0.9 else "offline"
            desired = "cordoned" if rng.random() < 0.05 else "active"
            busy = "t" if rng.random() < 0.2 else "f"
            agent_caps = '["' + '","'.join(rng.sample(caps, 3)) + '"]'
            buf.write(f"sim-{i:07d}\t{agent_caps}\t{status}\t{desired}\t{busy}\t\t\thttp\t1\tdigest{i}\t"
                      f"2026-01-01 00:00:00+00\t\\N\t\\N\n")
        buf.seek(0)
        with connection.cursor() as cur:
            cur.copy_expert("COPY regions_agent (agent_id, capabilities, status, desired, busy, version, hostname, "
                            "kind, concurrency, token_hash, registered_at, last_seen, offline_since) FROM STDIN",
                            buf)
            cur.execute("ANALYZE regions_agent")
        done = size

        counters = summary.capability_counts()
        scanned = summary.capability_counts_scan()
        assert counters == scanned, "counters disagree with the scan"
        for idle in (False, True):
            assert capabilities.live_capabilities(idle_only=idle) == \
                capabilities.live_capabilities_scan(idle_only=idle)

        after = timed(summary.region_summary_build, repeat)
        original = summary.capability_counts
        summary.capability_counts = summary.capability_counts_scan
        try:
            before = timed(summary.region_summary_build, repeat)
        finally:
            summary.capability_counts = original
        live_after = timed(capabilities.live_capabilities, repeat)
        live_before = timed(capabilities.live_capabilities_scan, repeat)

        def flush():
            with connection.cursor() as cur:
                cur.execute("UPDATE regions_agent SET last_seen = now()")

        def flip():
            with connection.cursor() as cur:
                cur.execute("UPDATE regions_agent SET busy = NOT busy WHERE id % 10 = 0")

        small = max(3, repeat // 4)
        flush_on, flip_on = timed(flush, small), timed(flip, small)
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE regions_agent DISABLE TRIGGER USER")
        try:
            flush_off, flip_off = timed(flush, small), timed(flip, small)
        finally:
            with connection.cursor() as cur:
                cur.execute("ALTER TABLE regions_agent ENABLE TRIGGER USER")
                # The flips made with the triggers off were not counted: flip back
                # an even number of times overall (timed runs 1 + small each side).
                if (1 + small) % 2:
                    cur.execute("ALTER TABLE regions_agent DISABLE TRIGGER USER")
                    cur.execute("UPDATE regions_agent SET busy = NOT busy WHERE id % 10 = 0")
                    cur.execute("ALTER TABLE regions_agent ENABLE TRIGGER USER")
        assert summary.capability_counts() == summary.capability_counts_scan()
        results[size] = (after, before)
        print(f"{size:>8} {after:>16.2f} ms {before:>12.2f} ms {live_after:>18.2f} ms {live_before:>14.2f} ms "
              f"{flush_on:>15.1f} ms {flush_off:>5.1f} ms {flip_on:>12.1f} ms {flip_off:>5.1f} ms", flush=True)
    first, last = sizes[0], sizes[-1]
    print(f"\nsummary from counters: {results[first][0]:.2f} ms at {first:,} agents, {results[last][0]:.2f} ms at "
          f"{last:,} ({results[last][0] / results[first][0]:.2f}x); from a scan: {results[first][1]:.2f} -> "
          f"{results[last][1]:.2f} ms ({results[last][1] / results[first][1]:.1f}x)")
    after, before = results[last]
    bench_line(f"summary_build_{last // 1000}k", after, "ms", ref=before, target="<50ms", ok=after < 50)


if __name__ == "__main__":
    main()
