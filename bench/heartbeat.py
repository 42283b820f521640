#!/usr/bin/env python
"""Heartbeat throughput, side by side in one run, same server (gunicorn with the
project's uvicorn workers, project/gunicorn_conf.py) and load
generator (wrk): a bare Django JsonResponse view, Meridian's heartbeat (Redis,
no SQL), and the article's design (a PostgreSQL UPDATE per check-in).

    .venv/bin/python bench/heartbeat.py [--agents 20000] [--seconds 10] [--workers 3]
    .venv/bin/python bench/heartbeat.py --quick     # 5,000 agents, 3 s warm-up + 5 s per endpoint

Ends with two BENCH lines (bench/common.py): heartbeat req/s against the bare
view (DESIGN target >= 0.8x) and against a PostgreSQL UPDATE per check-in (the
article's design: >= 1.0x, i.e. faster).

Needs wrk (apt-get install wrk), PostgreSQL and redis-server.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import HEARTBEAT_PATH, HEARTBEAT_SUFFIX, WRK_AGENTS_LUA, bench_line  # noqa: E402
from tests.harness import Region, Template, wait_for, web_command  # noqa: E402


def run_wrk(url: str, lua: Path, seconds: int, connections: int) -> tuple[float, str, int]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return rps, p99, non2xx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=None, help="20000; --quick 5000")
    parser.add_argument("--seconds", type=int, default=None, help="per endpoint, after the warm-up (10; --quick 5)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before each measured run")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="5,000 agents, 5 s per endpoint: about 40 s in all")
    args = parser.parse_args()
    if args.agents is None:
        args.agents = 5000 if args.quick else 20000
    if args.seconds is None:
        args.seconds = 5 if args.quick else 10
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    template = Template()
    # None of the three endpoints touches a broker (and no orchestrator runs): the
    # region's Redis serves as one, no RabbitMQ vhost to make and delete.
    region = Region(template, region_id="bench", broker="redis", BENCH_ENDPOINTS="1", DEBUG="0",
                    LOG_LEVEL="WARNING")
    try:
        region.web = region._spawn("web", web_command(region.port, args.workers))
        wait_for(region._healthy, 30, what="web")
        tokens = region.dir / "tokens.json"
        region.manage("fleet_seed", "--count", str(args.agents), "--tokens-out", str(tokens))
        json.loads(tokens.read_text())  # sanity
        rows = []
        for name, path, suffix in [
            ("bare Django JsonResponse", "/bench/bare/", ""),
            ("Meridian heartbeat (Redis)", HEARTBEAT_PATH, HEARTBEAT_SUFFIX),
            ("PostgreSQL UPDATE per check-in", "/bench/pg-heartbeat/", ""),
        ]:
            lua = region.dir / f"{abs(hash(name))}.lua"
            lua.write_text(WRK_AGENTS_LUA % {"tokens": tokens, "path": path, "suffix": suffix})
            run_wrk(region.url, lua, args.warmup, args.connections)  # warm up
            rps, p99, non2xx = run_wrk(region.url, lua, args.seconds, args.connections)
            rows.append((name, rps, p99, non2xx))
            time.sleep(1)
        base = rows[0][1]
        print(f"\nheartbeat benchmark: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"{args.agents} agents, gunicorn -w {args.workers} (uvicorn workers), "
              f"wrk -t1 -c{args.connections} -d{args.seconds}s, one 2-core machine")
        print(f"{'endpoint':34} {'req/s':>9} {'x bare':>7} {'p99':>9} {'non-2xx':>8}")
        for name, rps, p99, non2xx in rows:
            print(f"{name:34} {rps:9.0f} {rps / base:7.2f} {p99:>9} {non2xx:8d}")
        beats_per_s = rows[1][1]
        print(f"\n{args.agents} agents every 5 s need {args.agents / 5:.0f} beats/s; "
              f"measured {beats_per_s:.0f} ({beats_per_s * 5:.0f} agents at a 5 s interval)")
        bare, pg = rows[0][1], rows[2][1]
        clean = rows[1][3] == 0  # heartbeats answered with errors are not heartbeats served
        bench_line("heartbeat_vs_bare", beats_per_s, "req/s", ref=bare, target=">=0.8x",
                   ok=clean and beats_per_s >= 0.8 * bare)
        bench_line("heartbeat_vs_pg_update", beats_per_s, "req/s", ref=pg, target=">=1.0x",
                   ok=clean and beats_per_s >= pg)
    finally:
        region.stop()
        template.drop()


if __name__ == "__main__":
    main()
