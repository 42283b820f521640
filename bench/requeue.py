#!/usr/bin/env python
"""Time from `kill -9` of an agent mid-task to its task being requeued (attempt 2)
and completed on another agent, on real processes with the region's settings.

    .venv/bin/python bench/requeue.py [--trials 3] [--interval 5 --ttl 15 --tick 5]
    .venv/bin/python bench/requeue.py --quick     # 1 trial, --interval 1 --ttl 3 --tick 1

Defaults are the region's defaults (heartbeat 5 s, TTL 15 s, reaper tick 5 s):
the bound is TTL + one tick = 20 s. Celery on Redis alone would wait out the
visibility timeout (1 h). Ends with a BENCH line (bench/common.py): the slowest
kill -> requeue against the bound TTL + tick.
"""
import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line  # noqa: E402
from tests.harness import Region, Template, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=None, help="3; --quick 1")
    parser.add_argument("--interval", type=float, default=None, help="heartbeat interval (5; --quick 1)")
    parser.add_argument("--ttl", type=float, default=None, help="heartbeat TTL (15; --quick 3)")
    parser.add_argument("--tick", type=float, default=None, help="reaper interval (5; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="one trial with the fast settings: under 60 s")
    args = parser.parse_args()
    for name, full, quick in (("trials", 3, 1), ("interval", 5, 1), ("ttl", 15, 3), ("tick", 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    template = Template()
    region = Region(template, region_id="bench-requeue", HEARTBEAT_INTERVAL=args.interval,
                    HEARTBEAT_TTL=args.ttl, REAPER_INTERVAL=args.tick, LOG_LEVEL="WARNING").start()
    requeue, complete = [], []
    try:
        spare = region.agent("sleep")
        for trial in range(args.trials):
            victim = region.agent("sleep", concurrency=1)
            region.call("POST", f"/api/v1/agents/{spare.agent_id}/cordon")
            time.sleep(args.interval + 0.5)  # the spare hears it: the victim gets the task
            task = region.submit("sleep", {"seconds": 2 * args.ttl})
            region.wait_task(task["id"], statuses=("running",), timeout=60)
            region.call("POST", f"/api/v1/agents/{spare.agent_id}/uncordon")
            killed = time.monotonic()
            victim.signal(signal.SIGKILL)
            wait_for(lambda: region.task(task["id"])["attempt"] == 2, 120, interval=0.05, what="requeue")
            requeue.append(time.monotonic() - killed)
            region.wait_task(task["id"], timeout=4 * args.ttl + 60)
            complete.append(time.monotonic() - killed)
            print(f"trial {trial + 1}: requeued after {requeue[-1]:.2f} s, completed after {complete[-1]:.2f} s",
                  flush=True)
        bound = args.ttl + args.tick
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; kill -9 -> requeue (heartbeat {args.interval:g} s, TTL {args.ttl:g} s, tick {args.tick:g} s): "
              f"median {statistics.median(requeue):.2f} s, max {max(requeue):.2f} s; bound TTL + tick = {bound:g} s "
              f"(max/bound = {max(requeue) / bound:.2f}); Celery+Redis alone: 3600 s visibility timeout")
        bench_line("requeue_after_kill", max(requeue), "s", ref=bound, target=f"<={bound:g}s",
                   ok=max(requeue) <= bound)
    finally:
        region.stop()
        template.drop()


if __name__ == "__main__":
    main()
