#!/usr/bin/env python
"""Long-poll waiters (GET /api/v1/tasks/<id>?wait=, project/waiting.py) against a
region while heartbeats and submits run, side by side in one run, same server
(gunicorn with the project's uvicorn workers, project/gunicorn_conf.py):

  without  heartbeats (wrk, paced to --beats per second over --connections),
           submits (--submit-rate echo tasks a second, run by a real agent) and
           probes, nothing else.
  with     the same, plus --waiters long-polls held open (wait=60, aiohttp) on
           tasks that do not finish (a capability nobody serves): each held on
           a web worker's event loop, rechecked in the database every
           WAIT_RECHECK_SECONDS, woken by nothing.

Rounds interleave the sides (without, with, with, without, ...), --seconds each;
the waiters are opened before a `with` round (and the web left to settle) and
closed after it (the server drops them at the disconnect).

Probes, in both sides: a `sleep` task of 0.2 s submitted and waited on at once
(?wait=30, so the waiter is held when the task finishes); the latency is from
the task's finished_at (set by the web as it records the agent's report) to the
probe's answer arriving, on the same machine's clock.

    .venv/bin/python bench/waiters.py [--waiters 2000] [--seconds 10] [--rounds 8]
    .venv/bin/python bench/waiters.py --quick     # 2,000 waiters, 4 rounds of 5 s: about 90 s

Ends with two BENCH lines (bench/common.py): heartbeat p99 with the waiters
against without (DESIGN target <= 1.5x), and completion -> waiter answered p50
with the waiters (target < 20 ms).

Needs wrk (bin/ensure-wrk), PostgreSQL and redis-server.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import HEARTBEAT_PATH, HEARTBEAT_SUFFIX, WRK_AGENTS_LUA, bench_line, median, percentile  # noqa: E402
from bench.tasks import PRODUCTION_CLOCKS, CpuMeter  # noqa: E402
from tests.harness import Region, Template  # noqa: E402

# Each connection sends a heartbeat every `delay` ms (wrk's delay()): the fleet's
# pace, not as fast as the server goes, so the p99 is a latency, not a queue.
LUA = WRK_AGENTS_LUA + """
delay = function()
  return %(delay_ms)d
end
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format("HB %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), bad))
end
"""


def run_wrk(url: str, lua: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    requests_, duration_us, p50_us, p99_us, bad = map(int, re.search(r"^HB (.+)$", out, re.M).group(1).split())
    return {"rps": requests_ / (duration_us / 1e6), "p50": p50_us / 1000, "p99": p99_us / 1000, "bad": bad}


def when(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Waiters:
    """`ids` long-polls held open, one connection each (aiohttp on an event loop
    of its own, in a thread), as clients keep them: each asked again with
    wait=60 as soon as it is answered (at its deadline: its task never
    finishes). The first waits are spread from 1 to 60 s, so from the start
    about len(ids)/60 of them end and are asked again every second: the
    steady state of that many clients, not a herd that all began at once."""

    def __init__(self, url: str, key: str, ids: list[str]):
        self.url, self.key, self.ids = url, key, ids
        self.answered = 0  # deadlines reached (each asked again at once)
        self.errors: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks = []
        self.started = 0

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(60)

    async def _open(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # keep-alive, as an HTTP client keeps it
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
            headers={"Authorization": f"Bearer {self.key}"})
        self.tasks = [asyncio.ensure_future(self._hold(task_id)) for task_id in self.ids]

    async def _hold(self, task_id: str) -> None:
        wait = f"{random.uniform(1, 60):.2f}"
        while True:
            self.started += 1
            try:
                async with self.session.get(f"{self.url}/api/v1/tasks/{task_id}", params={"wait": wait}) as r:
                    body = await r.json()
                    if r.status != 200 or body.get("status") != "waiting":
                        self.errors.append(f"{r.status} {str(body)[:200]}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.append(repr(exc)[:200])
                await asyncio.sleep(1)
            self.answered += 1
            wait = "60"

    def close(self) -> None:
        async def _close():
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.session.close()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(60)
        self.tasks = []

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def settle(url: str, timeout: float = 60) -> float:
    """Until /healthz answers in under 20 ms five times running (the web has
    taken every waiter in); returns the seconds it took."""
    start = time.monotonic()
    quick = 0
    with requests.Session() as session:
        while quick < 5:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the web did not settle within {timeout} s")
            t = time.monotonic()
            session.get(f"{url}/healthz", timeout=30)
            quick = quick + 1 if time.monotonic() - t < 0.02 else 0
            time.sleep(0.1)
    return time.monotonic() - start


class Background(threading.Thread):
    """Calls `step` until stopped, at most `rate` times a second (0: back to back)."""

    def __init__(self, step, rate: float = 0):
        super().__init__(daemon=True)
        self.step, self.rate = step, rate
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        period = 1 / self.rate if self.rate else 0
        next_at = time.monotonic()
        while not self.halt.is_set():
            try:
                self.step()
            except Exception as exc:
                self.errors.append(repr(exc)[:300])
                self.halt.wait(0.5)
            if period:
                next_at += period
                self.halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=None, help="per round (10; --quick 5)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved, a multiple of 4 (8; --quick 4)")
    parser.add_argument("--workers", type=int, default=2, help="web workers (the tests' and bench/tasks.py's)")
    parser.add_argument("--beats", type=int, default=1000,
                        help="heartbeats a second the pacing aims at (1000: 5,000 agents at 5 s; each connection "
                             "waits after its answer, so a little less is sent)")
    parser.add_argument("--connections", type=int, default=10, help="wrk connections the beats are paced over")
    parser.add_argument("--agents", type=int, default=5000, help="simulated agents whose heartbeats wrk sends")
    parser.add_argument("--submit-rate", type=float, default=20, help="echo tasks submitted a second, all along")
    parser.add_argument("--probes", type=int, default=3, help="probe threads (each: submit, then wait)")
    parser.add_argument("--quick", action="store_true", help="4 rounds of 5 s: about 90 s in all")
    args = parser.parse_args()
    args.seconds = args.seconds or (5 if args.quick else 10)
    args.rounds = args.rounds or (4 if args.quick else 8)
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: bin/ensure-wrk (apt-get install wrk)")
    sides = ["without", "with", "with", "without"] * (args.rounds // 4) or ["without", "with"]

    template = Template()
    region = Region(template, region_id="bench-waiters", broker="redis", DEBUG="0", LOG_LEVEL="WARNING",
                    **PRODUCTION_CLOCKS)
    waiters = None
    background: list[Background] = []
    try:
        # No orchestrator: nothing here needs its clock jobs, and its reaper would
        # evict the simulated agents between rounds (their beats come from wrk).
        region.start_web(args.workers)
        region.api_key = region.manage("create_api_key", "operator", "--staff")
        tokens = region.dir / "tokens.json"
        region.manage("fleet_seed", "--count", str(args.agents), "--capabilities", "beats_only",
                      "--tokens-out", str(tokens))
        lua = region.dir / "heartbeat.lua"
        delay_ms = max(1, round(args.connections * 1000 / args.beats))
        lua.write_text(LUA % {"tokens": tokens, "delay_ms": delay_ms, "path": HEARTBEAT_PATH,
                               "suffix": HEARTBEAT_SUFFIX})
        region.agent("echo,sleep", agent_id="bench-agent", concurrency=args.probes + 2)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {region.api_key}"

        parked: list[str] = []
        for start in range(0, args.waiters, 500):
            r = api.post(f"{region.url}/api/v1/tasks/batch", json={"tasks": [
                {"capability": "parked", "payload": {"i": i}} for i in range(start, min(start + 500, args.waiters))]},
                timeout=60)
            assert r.status_code == 200 and not r.json()["refused"], r.text[:500]
            parked += [item["task"]["id"] for item in r.json()["results"]]
        waiters = Waiters(region.url, region.api_key, parked)

        def submit() -> None:
            r = api.post(f"{region.url}/api/v1/tasks", json={"capability": "echo", "payload": {}}, timeout=30)
            assert r.status_code == 201, r.text[:300]

        # (round, side, ms from finished_at to the answer, seconds the probe's wait took)
        probes: list[tuple[int, str, float, float]] = []
        now = {"round": 0, "side": ""}
        local = threading.local()

        def probe() -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            headers = {"Authorization": f"Bearer {region.api_key}"}
            r = session.post(f"{region.url}/api/v1/tasks", json={"capability": "sleep", "payload": {"seconds": 0.2}},
                             headers=headers, timeout=30)
            assert r.status_code == 201, r.text[:300]
            number, side, sent = now["round"], now["side"], time.time()
            r = session.get(f"{region.url}/api/v1/tasks/{r.json()['id']}", params={"wait": 30}, headers=headers,
                            timeout=60)
            answered = time.time()
            task = r.json()
            assert r.status_code == 200 and task["status"] == "succeeded", r.text[:300]
            if side and number == now["round"]:  # a probe that straddles two rounds counts for neither
                probes.append((number, side, (answered - when(task["finished_at"])) * 1000, answered - sent))

        # Warm up: the agent takes tasks, every web worker has served the paths.
        for _ in range(10):
            probe()
        run_wrk(region.url, lua, 2, args.connections)
        probes.clear()

        background.append(Background(submit, rate=args.submit_rate))
        background[-1].start()
        web = CpuMeter({"web": [region.web.pid]})
        rows = []
        for number, side in enumerate(sides, 1):
            settled = 0.0
            if side == "with":
                waiters.open()
                settled = settle(region.url)
            now.update(round=number, side=side)
            threads = [Background(probe) for _ in range(args.probes)]
            for t in threads:
                t.start()
            meter = web.start()
            started, answered_before = time.monotonic(), waiters.answered
            hb = run_wrk(region.url, lua, args.seconds, args.connections)
            took = time.monotonic() - started
            cpu = (web._read()["web"] - meter.before["web"]) / took * 100
            repolls = (waiters.answered - answered_before) / took
            now.update(round=0, side="")
            for t in threads:
                t.stop()
            errors = [e for t in threads for e in t.errors]
            assert not errors, errors[:3]
            if side == "with":
                waiters.close()
                settle(region.url)
            wakes = [ms for n, _, ms, _ in probes if n == number]
            rows.append({"round": number, "side": side, **hb, "cpu": cpu, "settle": settled, "repolls": repolls,
                         "probes": len(wakes)})
            print(f"round {number} ({side}): {hb['rps']:.0f} beats/s, p99 {hb['p99']:.2f} ms, web CPU {cpu:.0f}%, "
                  f"{len(wakes)} probes", flush=True)
        for t in background:
            t.stop()
        assert not background[0].errors, background[0].errors[:3]
        assert not waiters.errors, waiters.errors[:5]

        print(f"\nwaiters benchmark: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"{args.waiters} waiters (wait=60, re-polled at their deadline) on gunicorn -w {args.workers} (uvicorn workers); heartbeats paced "
              f"(wrk -c{args.connections}, {delay_ms} ms between a connection's answer and its next beat, "
              f"{args.agents} agents), {args.submit_rate:g} submits/s, "
              f"{args.probes} probe threads; {args.seconds} s rounds; one 2-core machine")
        print(f"{'round':>5} {'side':8} {'beats/s':>8} {'hb p50':>8} {'hb p99':>8} {'hb err':>6} {'web CPU':>8} "
              f"{'settle':>7} {'re-polls':>9} {'probes':>7}")
        for r in rows:
            print(f"{r['round']:5d} {r['side']:8} {r['rps']:8.0f} {r['p50']:7.2f}ms {r['p99']:7.2f}ms {r['bad']:6d} "
                  f"{r['cpu']:7.0f}% {r['settle']:6.1f}s {r['repolls']:7.1f}/s {r['probes']:7d}")
        print(f"\n{'side':8} {'hb p99 (median of rounds)':>26} {'wake p50':>9} {'wake p90':>9} {'wake p99':>9} "
              f"{'probes':>7} {'held':>5}")
        summary = {}
        for side in ("without", "with"):
            p99 = median([r["p99"] for r in rows if r["side"] == side])
            wakes = [ms for _, s, ms, _ in probes if s == side]
            held = sum(1 for _, s, _, took in probes if s == side and took > 0.1)
            summary[side] = (p99, wakes)
            print(f"{side:8} {p99:24.2f}ms {percentile(wakes, 50):7.1f}ms {percentile(wakes, 90):7.1f}ms "
                  f"{percentile(wakes, 99):7.1f}ms {len(wakes):7d} {held:5d}")
        clean = all(r["bad"] == 0 for r in rows)
        p99_with, p99_without = summary["with"][0], summary["without"][0]
        wake_p50 = percentile(summary["with"][1], 50)
        bench_line("waiters_heartbeat_p99", p99_with, "ms", ref=p99_without, target="<=1.5x",
                   ok=clean and p99_with <= 1.5 * p99_without)
        bench_line("waiters_wake_p50", wake_p50, "ms", ref=20, target="<20ms", ok=clean and wake_p50 < 20)
    finally:
        for t in background:
            t.halt.set()
        if waiters is not None:
            try:
                if waiters.tasks:
                    waiters.close()
            finally:
                waiters.stop()
        region.stop()
        template.drop()


if __name__ == "__main__":
    main()
