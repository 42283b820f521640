#!/usr/bin/env python
"""Fleet scale: N simulated agents heartbeating through the real HTTP path, then
1% of them go silent.

    .venv/bin/python bench/fleet.py --quick                     # 2,000 agents, 2 s interval, 20 s of beats (< 60 s)
    .venv/bin/python bench/fleet.py --agents 20000 --seconds 300  # 5 s interval, TTL 15 s, reaper 5 s
    .venv/bin/python bench/fleet.py --curve                     # the bounded-chatter rule: N -> interval ...
    .venv/bin/python bench/fleet.py --quick --budget 400         # the rule live: the region slows agents down

A real region (tests/harness.py: gunicorn with the project's uvicorn workers, the
orchestrator worker with beat running the reaper and the bulk flush, PostgreSQL,
its own redis-server). Agents are created in bulk (manage.py fleet_seed, as
bench/heartbeat.py does). One asyncio process plays every agent over raw
HTTP/1.1 keep-alive connections (the request bytes are built once per agent,
the reply is parsed for its "interval", which each agent adopts as
agents/runtime.py does). Each agent beats on its own schedule, at a random
phase; a beat sent late counts as late (lateness is reported).

Measured from the region's database while the fleet runs:
- false offlines: agents marked offline while still beating (the table is read
  every second; an evicted agent stays offline there until the next bulk flush,
  10 s, so none is missed; the reaper's own log lines are counted too),
- detection: for each silenced agent, offline_since (set by the reaper) minus
  the time its last beat was sent, against TTL + one reaper tick.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line, median, percentile  # noqa: E402
from wire.endpoints import HEARTBEAT  # noqa: E402


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the bounded-chatter curve (the product's rule, no region needed) ------------

def curve(args) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("ROLE", "region")
    import django

    django.setup()
    from django.conf import settings

    from regions.services.config.current import EffectiveConfig

    agents = {"heartbeat_interval": args.interval, "heartbeat_ttl": args.ttl}
    if args.budget is not None:
        agents["heartbeat_budget"] = args.budget
    config = EffectiveConfig(sha="", content={"agents": agents})
    tick = args.tick
    print(f"\nbounded chatter: budget {config.heartbeat_budget:g} beats/s, configured interval "
          f"{config.heartbeat_interval:g} s / TTL {config.heartbeat_ttl:g} s, interval at most "
          f"{config.heartbeat_interval_max:g} s, reaper tick {tick:g} s "
          f"(HEARTBEAT_BUDGET_PER_SECOND={settings.HEARTBEAT_BUDGET_PER_SECOND:g})")
    print(f"{'fleet':>9} {'interval':>9} {'TTL':>8} {'beats/s':>9} {'budget':>8} {'worst detection':>16}")
    for n in (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 240_000, 500_000):
        t = config.heartbeat_timing(n)
        rate = n / t.interval
        over = "" if rate <= config.heartbeat_budget * 1.0001 else " over"
        print(f"{n:>9,} {t.interval:>8.1f}s {t.ttl:>7.1f}s {rate:>9.0f} {config.heartbeat_budget:>8.0f} "
              f"{t.ttl + tick:>15.1f}s{over}")
    worst = config.heartbeat_timing(100_000)
    bench_line("chatter_beats_per_s_100k", 100_000 / worst.interval, "beats/s", ref=config.heartbeat_budget,
               target=f"<={config.heartbeat_budget:g}", ok=100_000 / worst.interval <= config.heartbeat_budget)
    bench_line("chatter_detection_100k", worst.ttl + tick, "s", ref=worst.ttl + tick,
               target=f"<={config.heartbeat_ttl * config.heartbeat_interval_max / config.heartbeat_interval + tick:g}s",
               ok=True)


# --- the simulator -----------------------------------------------------------

class Fleet:
    def __init__(self, host: str, port: int, pairs: list[tuple[str, str]], interval: float, connections: int):
        self.host, self.port = host, port
        self.ids = [a for a, _ in pairs]
        self.requests = [
            (f"POST {HEARTBEAT.url(agent_id=agent_id)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
             f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
             '{"busy": 0}').encode()
            for agent_id, token in pairs
        ]
        n = len(pairs)
        self.interval = [interval] * n
        self.last_sent_ok = [0.0] * n
        self.silenced = bytearray(n)
        self.connections = connections
        self.heap: list[tuple[float, int]] = []
        self.queue: asyncio.Queue | None = None
        self.stopping = False
        self.measuring = False
        # statistics
        self.ok = 0
        self.errors: dict[str, int] = {}
        # Beats whose first try failed (a kept-alive connection closed under it):
        # what an agent sending each beat once would have lost; resent here.
        self.first_try_failed: dict[str, int] = {}
        self.latency: list[float] = []
        self.lateness: list[float] = []
        self.intervals_seen: dict[float, int] = {}
        self.ttl_seen = 0.0
        self.sent_at: list[float] = []  # timestamps of successful beats (for beats/s windows)

    def schedule_all(self, start: float, ramp: float) -> None:
        for i in range(len(self.ids)):
            self.heap.append((start + random.random() * ramp, i))
        heapq.heapify(self.heap)

    async def dispatcher(self) -> None:
        while not self.stopping:
            now = time.time()
            while self.heap and self.heap[0][0] <= now:
                due, i = heapq.heappop(self.heap)
                if not self.silenced[i]:
                    self.queue.put_nowait((due, i))
            await asyncio.sleep(0.005)

    async def worker(self) -> None:
        reader = writer = None
        while not self.stopping:
            due, i = await self.queue.get()
            if self.silenced[i]:
                continue
            for attempt in range(3):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    sent = time.time()
                    writer.write(self.requests[i])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    m = re.search(rb"content-length:\s*(\d+)", head.lower())
                    body = await reader.readexactly(int(m.group(1))) if m else b""
                    done = time.time()
                    if b"connection: close" in head.lower():
                        writer.close()
                        reader = writer = None
                    break
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    if attempt == 0:
                        name = type(exc).__name__
                        self.first_try_failed[name] = self.first_try_failed.get(name, 0) + 1
                    if attempt == 2:
                        status, body, done = None, b"", time.time()
                        self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            if status == 200:
                reply = json.loads(body)
                interval = float(reply["interval"])
                self.interval[i] = interval
                self.intervals_seen[interval] = self.intervals_seen.get(interval, 0) + 1
                self.ttl_seen = max(self.ttl_seen, float(reply["ttl"]))
                self.last_sent_ok[i] = sent
                self.ok += 1
                self.latency.append(done - sent)
                if self.measuring:  # once every agent has beaten (the reaper runs from then)
                    self.lateness.append(sent - due)
                self.sent_at.append(sent)
            elif status is not None:
                self.errors[str(status)] = self.errors.get(str(status), 0) + 1
            # The next beat one interval after this one was due (an agent sleeps its
            # interval after each beat; a late beat does not push the schedule back).
            nxt = max(due + self.interval[i], time.time() - self.interval[i] / 2)
            heapq.heappush(self.heap, (nxt, i))
        if writer is not None:
            writer.close()

    async def run(self, until_event: asyncio.Event, ramp: float) -> None:
        self.queue = asyncio.Queue()
        self.schedule_all(time.time(), ramp)
        tasks = [asyncio.create_task(self.dispatcher())]
        tasks += [asyncio.create_task(self.worker()) for _ in range(self.connections)]
        await until_event.wait()
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class OfflineWatch(threading.Thread):
    """Reads the region's database every `every` seconds: which agents are offline
    and since when (the reaper's offline_since)."""

    def __init__(self, database_url: str, every: float):
        super().__init__(daemon=True)
        import psycopg2

        self.conn = psycopg2.connect(database_url)
        self.conn.autocommit = True
        self.every = every
        self.seen: dict[str, float] = {}  # agent -> first offline_since seen
        self.sinces: dict[str, set[float]] = {}  # agent -> every offline_since seen (evicted, back, evicted...)
        self.stop_flag = threading.Event()
        self.reads = 0

    def run(self) -> None:
        while not self.stop_flag.is_set():
            with self.conn.cursor() as cur:
                cur.execute("SELECT agent_id, extract(epoch FROM offline_since) FROM regions_agent "
                            "WHERE status = 'offline'")
                for agent_id, since in cur.fetchall():
                    self.seen.setdefault(agent_id, float(since or time.time()))
                    self.sinces.setdefault(agent_id, set()).add(float(since or time.time()))
            self.reads += 1
            self.stop_flag.wait(self.every)


def migrated_template():
    """tests.harness.Template without collectstatic (heartbeats serve no static
    files): the database to clone the region's from."""
    from tests import harness

    class FleetTemplate(harness.Template):
        def __init__(self):
            self.name = f"mt_tpl_fleet_{os.getpid()}"
            self.static_root = tempfile.mkdtemp(prefix="meridian-static-fleet-")
            harness.pg_admin(f"DROP DATABASE IF EXISTS {self.name}")
            harness.pg_admin(f"CREATE DATABASE {self.name}")
            env = {**os.environ, "DATABASE_URL": harness.pg_url(self.name), "ROLE": "region",
                   "DJANGO_SETTINGS_MODULE": "project.settings"}
            env.pop("EXTRA_APPS", None)
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=harness.ROOT, env=env, check=True)

    return FleetTemplate()


def run_fleet(args) -> None:
    from tests.harness import Region, wait_for, web_command

    started = time.time()
    load_before = loadavg()
    env = dict(HEARTBEAT_INTERVAL=args.interval, HEARTBEAT_TTL=args.ttl, REAPER_INTERVAL=args.tick,
               LIVENESS_FLUSH_INTERVAL=args.flush, SWEEPER_INTERVAL=2, DEBUG="0", LOG_LEVEL="INFO")
    if args.budget is not None:
        env["HEARTBEAT_BUDGET_PER_SECOND"] = args.budget
    if args.interval_max is not None:
        env["HEARTBEAT_INTERVAL_MAX"] = args.interval_max
    template = migrated_template()
    region = Region(template, region_id="fleet", broker="redis", **{k: str(v) for k, v in env.items()})
    result: dict = {}
    try:
        region.web = region._spawn("web", web_command(region.port, args.workers))
        wait_for(region._healthy, 60, what="web")
        tokens = region.dir / "tokens.json"
        t0 = time.time()
        region.manage("fleet_seed", "--count", str(args.agents), "--tokens-out", str(tokens))
        seeded_in = time.time() - t0
        pairs = [tuple(p) for p in json.loads(tokens.read_text())]
        fleet = Fleet("127.0.0.1", region.port, pairs, args.interval, args.connections)
        watch = OfflineWatch(region.database_url, 1.0)
        watch.start()
        print(f"{len(pairs)} agents seeded in {seeded_in:.1f}s; beating for {args.seconds}s "
              f"(interval {args.interval:g}s, TTL {args.ttl:g}s, reaper tick {args.tick:g}s, "
              f"{args.workers} web workers, {args.connections} connections); load {loadavg()}", flush=True)

        async def scenario() -> None:
            done = asyncio.Event()
            runner = asyncio.create_task(fleet.run(done, args.ramp or args.interval))
            # The reaper starts once every agent has beaten (a fleet comes up over
            # time; seeded agents are not beating until the simulator reaches them).
            while min(fleet.last_sent_ok) == 0.0:
                await asyncio.sleep(0.2)
            result["warmup"] = time.time()
            fleet.measuring = True
            await asyncio.to_thread(region.start_orchestrator)
            beat_start = time.time()
            next_report = beat_start + 30
            while time.time() - beat_start < args.seconds:
                await asyncio.sleep(0.5)
                if time.time() >= next_report:
                    next_report += 30
                    recent = sum(1 for t in fleet.sent_at[-50000:] if t > time.time() - 10) / 10
                    print(f"  t={time.time() - beat_start:5.0f}s beats/s(10s)={recent:6.0f} ok={fleet.ok} "
                          f"errors={fleet.errors} offline_seen={len(watch.seen)} load {loadavg()}", flush=True)
                if args.profile and "profile" not in result and time.time() - beat_start > min(60, args.seconds / 3):
                    result["profile"] = start_profile(region, args.profile)
            result["beat_seconds"] = time.time() - beat_start
            result["false_before"] = set(watch.seen)
            # 1% go silent: their last successful beat is their death.
            silent = [i for i in range(len(pairs)) if i % 100 == 0]
            for i in silent:
                fleet.silenced[i] = 1
            silenced_at = time.time()
            result["silent"] = silent
            result["silenced_at"] = silenced_at
            deadline = silenced_at + max(fleet.ttl_seen, args.ttl) + 3 * args.tick + 15
            ids = {fleet.ids[i] for i in silent}
            watch.every = 0.25
            def detected() -> bool:
                return all(any(t > fleet.last_sent_ok[i] for t in watch.sinces.get(fleet.ids[i], ()))
                           for i in silent)

            while time.time() < deadline and not detected():
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.0)
            result["detect_seconds"] = time.time() - silenced_at
            done.set()
            await runner

        asyncio.run(scenario())
        watch.stop_flag.set()
        watch.join(5)
        log = (region.dir / "orchestrator.log").read_text(errors="replace")
        evicted_logged = sum(int(m.group(1)) for m in re.finditer(r"marked (\d+) agents offline", log))
        report(args, fleet, watch, result, evicted_logged, started, load_before, seeded_in)
    finally:
        if result.get("profile"):
            result["profile"].wait(120)
            if result_profile_path and result_profile_path[0].exists():
                profile_summary(result_profile_path[0])
        region.stop()
        template.drop()


result_profile_path: list[Path] = []


def profile_summary(path: Path, top: int = 25) -> None:
    """The frames a web worker spent its sampled time in (inclusive), from py-spy's raw output."""
    import collections

    incl, own, total = collections.Counter(), collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            incl[frame] += int(n)
    print(f"\npy-spy profile of one web worker ({total} samples, {path}): inclusive share, then own share")
    for frame, n in incl.most_common(top):
        print(f"  {n * 100 / total:5.1f}%  {frame[:140]}")
    for frame, n in own.most_common(10):
        print(f"  {n * 100 / total:5.1f}%  own {frame[:140]}")


def start_profile(region, seconds: int):
    """py-spy on the busiest gunicorn worker, collapsed stacks to fleet-profile.txt."""
    out = subprocess.run(["pgrep", "-P", str(region.web.pid)], capture_output=True, text=True).stdout.split()
    if not out:
        return None
    pid = out[0]
    path = Path(tempfile.gettempdir()) / f"fleet-profile-{pid}.txt"
    result_profile_path.append(path)
    print(f"  py-spy record -d {seconds} -p {pid} -> {path}", flush=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-d", str(seconds), "-p", pid,
                             "-f", "raw", "-o", str(path), "-r", "50", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def report(args, fleet: Fleet, watch: OfflineWatch, result: dict, evicted_logged: int, started: float,
           load_before: str, seeded_in: float) -> None:
    silent_ids = {fleet.ids[i] for i in result["silent"]}
    false_offline = {a for a in watch.seen if a not in silent_ids} | result["false_before"]
    delays = []
    undetected = []
    for i in result["silent"]:
        agent_id = fleet.ids[i]
        # The eviction that followed its last beat (an agent evicted falsely before
        # it went silent has earlier ones).
        after = [t for t in watch.sinces.get(agent_id, ()) if t > fleet.last_sent_ok[i]]
        if after:
            delays.append(min(after) - fleet.last_sent_ok[i])
        else:
            undetected.append(agent_id)
    ttl = max(fleet.ttl_seen, args.ttl)
    bound = ttl + args.tick
    during = [t for t in fleet.sent_at if t < result["silenced_at"]]
    window = [t for t in during if t > during[0] + 2 * args.interval] if during else []
    rate = len(window) / (window[-1] - window[0]) if len(window) > 1 else 0.0
    n = len(fleet.ids)
    intervals = ", ".join(f"{k:g}s x{v}" for k, v in sorted(fleet.intervals_seen.items()))
    print(f"\nfleet benchmark: {n} agents, {args.workers} gunicorn workers (uvicorn), {args.connections} "
          f"keep-alive connections, {result['beat_seconds']:.0f}s of beats then 1% silent; "
          f"load average before {load_before}, after {loadavg()} (2 cores, shared)")
    print(f"{'agents':>8} {'beats/s':>8} {'expected':>8} {'non-200':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'late p99':>9} {'false off':>9} {'silent':>6} {'detected':>8} {'det p50':>8} {'det max':>8} "
          f"{'bound':>6}")
    errors = sum(fleet.errors.values())
    expected = n / (sum(fleet.interval) / n)
    print(f"{n:>8} {rate:>8.0f} {expected:>8.0f} {errors:>8} {percentile(fleet.latency, 50) * 1000:>7.1f} "
          f"{percentile(fleet.latency, 99) * 1000:>7.1f} {percentile(fleet.lateness, 99):>8.2f}s "
          f"{len(false_offline):>9} {len(silent_ids):>6} {len(delays):>8} {median(delays):>7.2f}s "
          f"{max(delays or [float('nan')]):>7.2f}s {bound:>5.0f}s")
    print(f"intervals handed out: {intervals}; TTL handed out {fleet.ttl_seen:g}s; errors {fleet.errors}; "
          f"first tries failed (resent) {fleet.first_try_failed}; "
          f"reaper logged {evicted_logged} evictions ({len(silent_ids)} expected); seeding {seeded_in:.1f}s; "
          f"database read {watch.reads} times; simulator CPU {time.process_time():.1f}s "
          f"({time.process_time() / max(fleet.ok, 1) * 1e6:.0f} us/beat); total {time.time() - started:.0f}s")
    if undetected:
        print(f"NOT detected: {len(undetected)} ({', '.join(undetected[:5])} ...)")
    if false_offline:
        print(f"false offlines: {sorted(false_offline)[:10]}")
    bench_line("fleet_false_offlines", len(false_offline), "agents", ref=0, target="=0", ok=not false_offline)
    dmax = max(delays) if delays and not undetected else float("inf")
    bench_line("fleet_detection_max", dmax, "s", ref=bound, target=f"<={bound:g}s", ok=dmax <= bound)
    bench_line("fleet_beats_per_s", rate, "beats/s", ref=expected, target=">=0.95x",
               ok=rate >= 0.95 * expected and errors == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--tick", type=float, default=5.0, help="reaper interval")
    parser.add_argument("--flush", type=float, default=10.0, help="LIVENESS_FLUSH_INTERVAL")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--budget", type=float, default=None, help="HEARTBEAT_BUDGET_PER_SECOND for the region")
    parser.add_argument("--interval-max", type=float, default=None, help="HEARTBEAT_INTERVAL_MAX for the region")
    parser.add_argument("--ramp", type=float, default=0,
                        help="spread the agents' first beats over this many seconds (default: one interval)")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 agents, interval 2 s, TTL 6 s, tick 1 s, 20 s of beats (< 60 s in all)")
    parser.add_argument("--curve", action="store_true", help="print the bounded-chatter curve and exit")
    parser.add_argument("--profile", type=int, default=0, help="py-spy one web worker for this many seconds")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.seconds, args.interval, args.ttl, args.tick, args.flush = 2000, 20, 2.0, 6.0, 1.0, 3.0
    if args.curve:
        curve(args)
        return
    run_fleet(args)


if __name__ == "__main__":
    main()
