#!/usr/bin/env python
"""The agent protocol's Django time per request, through the whole middleware
stack and through the lean handler (project/lean.py), side by side in one run.

    .venv/bin/python bench/hotpath.py [--requests 4000] [--rounds 6] [--quick]

A region's database (a clone of the migrated template) and Redis of its own;
one registered agent; then, in this process, its heartbeat (a 200) and a claim
and a report that DRF refuses at the body (a 400 past authentication, the
same for both sides) through each handler, alternating in rounds (A, B, A,
B, ...) so a burst of other load hits both sides. The time is Django's alone:
no socket, no server (bench/heartbeat.py measures the served request).

Ends with a BENCH line: the heartbeat's microseconds per request through the
lean handler against the whole stack (target: less).
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def environ(method: str, path: str, body: bytes, token: str) -> dict:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {token}"}


def measure(args) -> None:
    """In the region's environment: the rounds, and the BENCH line."""
    import logging

    import django

    django.setup()
    logging.getLogger("django.request").setLevel(logging.ERROR)  # the refusals, by the thousand
    from django.core.wsgi import get_wsgi_application

    from bench.common import bench_line
    from project.lean import LeanHandler
    from regions.services.agents.registry import agent_register
    from wire.endpoints import CLAIM, HEARTBEAT, REPORT

    token = agent_register(agent_id="hotpath-1", capabilities=["echo"]).token
    requests = {"heartbeat": ("POST", HEARTBEAT.url(agent_id="hotpath-1"), b'{"busy": 0}', 200),
                "claim (refused at the body)": ("POST", CLAIM.url(agent_id="hotpath-1"), b"{}", 400),
                "report (refused at the body)": ("POST", REPORT.url(agent_id="hotpath-1"), b"{}", 400)}
    sides = {"whole stack": get_wsgi_application(), "lean": LeanHandler()}
    status = {}

    def start_response(line, headers, exc_info=None):
        status["code"] = int(line.split()[0])

    def run(app, method, path, body, n) -> float:
        began = time.perf_counter()
        for _ in range(n):
            result = app(environ(method, path, body, token), start_response)
            b"".join(result)
            result.close()
        return (time.perf_counter() - began) / n * 1e6

    per_round = max(1, args.requests // args.rounds)
    times = {(r, s): [] for r in requests for s in sides}
    for app in sides.values():  # warm up: first requests load what the rest reuse
        for method, path, body, expected in requests.values():
            run(app, method, path, body, 50)
            assert status["code"] == expected, (path, status)
    for _ in range(args.rounds):
        for name, (method, path, body, expected) in requests.items():
            for side, app in sides.items():
                times[(name, side)].append(run(app, method, path, body, per_round))
                assert status["code"] == expected, (name, side, status)
    print(f"{'request':30} {'whole stack µs':>15} {'lean µs':>10} {'saved':>7}")
    for name in requests:
        full, lean = (statistics.median(times[(name, s)]) for s in sides)
        print(f"{name:30} {full:15.0f} {lean:10.0f} {1 - lean / full:7.0%}")
    full, lean = (statistics.median(times[("heartbeat", s)]) for s in sides)
    bench_line("hotpath heartbeat_django_us", lean, "us", ref=full, target="<1.0x", ok=lean < full)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="per request kind and side")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="1,200 requests in 4 rounds")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 1200, 4
    if args.inner:
        return measure(args)
    from tests.harness import Region, Template

    template = Template()
    region = Region(template)
    try:
        env = {**region.env, "LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, __file__, "--inner", "--requests", str(args.requests),
                        "--rounds", str(args.rounds)], cwd=ROOT, env=env, check=True)
    finally:
        region.stop()
        template.drop()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    main()
