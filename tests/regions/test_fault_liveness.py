"""Liveness faults on real processes: the region's liveness Redis away for 20 s
(back with its data, or empty), and a small fleet frozen (SIGSTOP) past its TTL.
No healthy agent is evicted, nobody registers a ghost, and every task runs once.

Every test prints a FAULT line with its figures."""
from __future__ import annotations

import signal
import threading
import time

import pytest
import redis
import requests

from tests.accounting import Ledger, record
from tests.harness import FAST, REGISTRATION_TOKEN, holds_for, wait_for

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 20.0
TTL = float(FAST["HEARTBEAT_TTL"])
TICK = float(FAST["REAPER_INTERVAL"])


def register(region, agent_id: str, capabilities=("probe",)) -> requests.Response:
    return requests.post(f"{region.url}/api/v1/agents/register", timeout=10,
                         headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
                         json={"agent_id": agent_id, "capabilities": list(capabilities), "kind": "http"})


class HttpFleet:
    """Plain HTTP agents, as in the article: registered, then beating every
    interval from one thread of the test; some can be paused (silent)."""

    def __init__(self, region, ids: list[str], interval: float = float(FAST["HEARTBEAT_INTERVAL"])):
        self.region, self.ids, self.interval = region, ids, interval
        self.tokens = {}
        for agent_id in ids:
            r = register(region, agent_id)
            assert r.status_code == 201, r.text
            self.tokens[agent_id] = r.json()["token"]
        self.paused: set[str] = set()
        self.replies: list[tuple[float, str, int, str | None]] = []  # (monotonic, agent, status, Retry-After)
        self._stop = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for agent_id in self.ids:
                if agent_id in self.paused:
                    continue
                try:
                    r = self._session.post(f"{self.region.url}/api/v1/agents/{agent_id}/heartbeat", timeout=5,
                                           headers={"Authorization": f"Bearer {self.tokens[agent_id]}"}, json={})
                    self.replies.append((time.monotonic(), agent_id, r.status_code, r.headers.get("Retry-After")))
                except requests.RequestException:
                    self.replies.append((time.monotonic(), agent_id, 0, None))
            self._stop.wait(self.interval)

    def since(self, t: float) -> list[tuple[float, str, int, str | None]]:
        return [r for r in list(self.replies) if r[0] >= t]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class OfflineWatcher:
    """Every agent the region ever showed as not online, read from its database
    every 200 ms for the length of the test."""

    def __init__(self, region):
        self.region = region
        self.seen: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.region.db_query("SELECT agent_id, status FROM regions_agent "
                                            "WHERE status <> 'online' OR offline_since IS NOT NULL")
            except Exception as exc:  # keep watching; a dead watcher would see nothing
                self.errors.append(repr(exc))
                rows = []
            for agent_id, status in rows:
                self.seen.setdefault(agent_id, status)
            self._stop.wait(0.2)

    def stop(self) -> dict[str, str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


@pytest.fixture
def watch_offline():
    """OfflineWatcher(region), stopped at the end of the test whatever happens."""
    started: list[OfflineWatcher] = []

    def start(region) -> OfflineWatcher:
        started.append(OfflineWatcher(region))
        return started[-1]

    yield start
    for watcher in started:
        watcher.stop()


@pytest.fixture
def http_fleet():
    started: list[HttpFleet] = []

    def start(region, ids) -> HttpFleet:
        started.append(HttpFleet(region, ids))
        return started[-1]

    yield start
    for fleet in started:
        fleet.stop()


def _redis(region) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=region.redis.port, decode_responses=True, socket_timeout=2)


def _reaped_after(region, wall: float) -> bool:
    """The reaper completed a tick after `wall` (unix time)."""
    try:
        value = _redis(region).get(f"m:{region.region_id}:reaped")
    except redis.RedisError:
        return False
    return value is not None and float(value) > wall


def _log_since(proc, offset: int) -> str:
    with open(proc.log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


@pytest.mark.parametrize("keep_data", [True, False], ids=["back-with-its-data", "back-empty"])
def test_liveness_redis_away_20s_evicts_no_healthy_agent(fresh_region, watch_offline, http_fleet, keep_data):
    """No hold here (EVICTION_HOLD_RATIO=1): only the grace may keep them."""
    region = fresh_region(EVICTION_HOLD_RATIO="1.0")
    if keep_data:
        region.redis.persist_on()
    worker = region.agent("echo")
    fleet = http_fleet(region, ["http-1"])
    agents = [worker.agent_id, "http-1"]
    region.wait_task(region.submit("echo", {"warmup": 1})["id"])
    wait_for(lambda: any(s == 200 for _, _, s, _ in fleet.since(time.monotonic() - 1)), 10, what="HTTP agent heard")
    watcher = watch_offline(region)

    down_at = time.monotonic()
    region.redis.stop()
    try:
        ghost = register(region, "ghost-1")
        assert ghost.status_code == 503 and ghost.headers.get("Retry-After") == "2", (ghost.status_code, ghost.text)
        wait_for(lambda: len([r for r in fleet.since(down_at) if r[2] == 503]) >= 3, 10, what="heartbeats refused")
        holds_for(lambda: all(region.agent_info(a)["status"] == "online" for a in agents),
                  OUTAGE_SECONDS - (time.monotonic() - down_at), interval=0.5, what="every agent online")
    finally:
        if not keep_data:
            region.redis.wipe()
        log_offset = region.orchestrator.log.stat().st_size
        region.redis.start()
    up_at, up_wall = time.monotonic(), time.time()
    outage = up_at - down_at
    refused = [r for r in fleet.since(down_at) if r[0] < up_at and r[2] != 200]
    assert refused and all(r[2] == 503 and r[3] == "2" for r in refused), refused[:5]

    heard = wait_for(lambda: next((t for t, _, s, _ in fleet.since(up_at) if s == 200), None), 15,
                     what="a heartbeat accepted again")
    # The reaper's first tick grants the grace; wait for it to run out and for one more
    # tick (or for an eviction, which fails the test below).
    wait_for(lambda: watcher.seen or "eviction grace over" in _log_since(region.orchestrator, log_offset),
             TTL + 20, what="the grace to run out")
    over_wall = time.time()
    wait_for(lambda: watcher.seen or _reaped_after(region, over_wall + TICK), 10, what="a reaper tick after the grace")
    log = _log_since(region.orchestrator, log_offset)
    task = region.submit("echo", {"after": "outage"})
    done = region.wait_task(task["id"], timeout=30)
    task_s = time.monotonic() - up_at
    offline = watcher.stop()
    fleet.stop()
    assert not watcher.errors, watcher.errors[:3]

    record(f"FAULT liveness-redis-away {'with-data' if keep_data else 'empty'}: outage_s={outage:.1f} "
          f"heartbeats_refused={len(refused)} (503 + Retry-After) evicted={len(offline)} "
          f"recovery_s={heard - up_at:.1f} task_after_s={task_s:.1f}")
    assert ("no reaper tick for" if keep_data else "lost its data") in log, log[-3000:]
    assert offline == {} and "agents offline" not in log, (offline, log[-3000:])
    assert all(region.agent_info(a)["status"] == "online" for a in agents)
    assert done["result"]["echo"] == {"after": "outage"} and done["attempt"] == 1
    assert region.call("GET", "/api/v1/agents/ghost-1").status_code == 404  # no ghost left behind
    assert "region degraded, heartbeat not recorded" in worker.log.read_text(errors="replace")


@pytest.mark.parametrize("size", [3, 12])
def test_a_small_fleet_frozen_past_its_ttl_is_held_and_runs_each_task_once(fresh_region, watch_offline, http_fleet,
                                                                           size):
    """3 Celery agents frozen with a task each; for 12, 9 HTTP agents beat
    alongside and 6 of them fall silent too (9 of 12 silent)."""
    region = fresh_region()
    workers = [region.agent("sleep", agent_id=f"frz-{size}-{i}") for i in range(3)]
    fleet = http_fleet(region, [f"sim-{size}-{i}" for i in range(size - 3)])
    silent_sims = fleet.ids[:max(0, size * 3 // 4 - 3)]
    silent = 3 + len(silent_sims)
    ids = [region.submit("sleep", {"seconds": 2}, target_agent=w.agent_id, max_attempts=5)["id"] for w in workers]
    wait_for(lambda: all(region.task(t)["status"] == "running" for t in ids), 30, what="every task running")
    watcher = watch_offline(region)

    def hold():
        return region.call("GET", "/api/v1/region/status").json()["liveness"]["eviction_hold"]

    log_offset = region.orchestrator.log.stat().st_size
    frozen_at = time.monotonic()
    for w in workers:
        w.signal(signal.SIGSTOP)
    fleet.paused.update(silent_sims)
    try:
        # TTL + 2 reaper ticks as the reaper saw them: every frozen agent past its TTL, held, twice more.
        first = wait_for(lambda: watcher.seen or ((h := hold()) and h["missing"] == silent and h), TTL + 15,
                         what=f"a hold with all {silent} frozen agents past their TTL (or an eviction)")
        assert not watcher.seen, f"evicted while frozen: {watcher.seen}\n{region.orchestrator.tail()}"
        wait_for(lambda: hold()["checked"] >= first["checked"] + 2 * TICK, 10, what="two more reaper ticks")
    finally:
        for w in workers:
            w.signal(signal.SIGCONT)
        fleet.paused.clear()
    frozen_s = time.monotonic() - frozen_at
    wait_for(lambda: hold() is None, 15, what="the hold lifted")
    lifted_wall = time.time()
    rows = {t: region.wait_task(t, timeout=30) for t in ids}
    wait_for(lambda: _reaped_after(region, lifted_wall + TTL + TICK), TTL + 15, what="the grace after the hold over")
    offline = watcher.stop()
    fleet.stop()
    assert not watcher.errors, watcher.errors[:3]
    log = _log_since(region.orchestrator, log_offset)
    ledger = Ledger.from_logs([w.log for w in workers])

    record(f"FAULT frozen-fleet size={size}: silent={silent} frozen_s={frozen_s:.1f} evicted={len(offline)} "
          f"attempts={sorted(r['attempt'] for r in rows.values())} "
          f"completed_twice={len(ledger.completed_twice())}")
    assert offline == {} and "agents offline" not in log, (offline, log[-3000:])
    assert all(r["status"] == "succeeded" and r["attempt"] == 1 for r in rows.values()), rows
    assert {t: ledger.finishes[t] for t in ids} == {t: [1] for t in ids}  # each ran once, to the end
    assert "eviction hold lifted" in log
