"""Liveness faults on real processes: the region's liveness Redis away for 20 s
(back with its data, or empty), a small fleet frozen (SIGSTOP) past its TTL, and
most of a small fleet killed (kill -9) at once. No healthy agent is evicted,
nobody registers a ghost, every task runs once, and the dead are told from the
frozen by their broker connections: held when frozen, evicted at TTL + tick when
killed.

Every test prints a FAULT line with its figures."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import redis
import requests
from kombu import Connection

from tests.accounting import Ledger, record
from tests.harness import FAST, REGISTRATION_TOKEN, holds_for, wait_for
from wire.protocol import agent_control_queue, agent_node_name, agent_queue

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



def _wait_ticks(hold, first: dict, ticks: int, timeout: float) -> None:
    """Wait until the hold has been re-checked `ticks` more times: distinct
    `checked` stamps, not first + n * interval (beat ticks jitter by a few ms,
    so a timestamp comparison could need one tick more than it says)."""
    seen = {first["checked"]}

    def more():
        h = hold()
        assert h, "the hold lifted while the fleet was still frozen"
        seen.add(h["checked"])
        return len(seen) > ticks

    wait_for(more, timeout, interval=0.2, what=f"{ticks} more reaper ticks")

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
        # Frozen Celery agents keep their broker connections; the HTTP agents hold none to ask about.
        assert first["dead"] == 0 and f"0 gone, 3 connected, {silent - 3} unknown" in first["broker"], first
        _wait_ticks(hold, first, 2, 10)
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


# The region's default timing: a dead agent is requeued within TTL + one reaper tick.
DEFAULT_TIMING = {"HEARTBEAT_INTERVAL": "5", "HEARTBEAT_TTL": "15", "REAPER_INTERVAL": "5"}
DEFAULT_TTL, DEFAULT_TICK = float(DEFAULT_TIMING["HEARTBEAT_TTL"]), float(DEFAULT_TIMING["REAPER_INTERVAL"])
DEAD_BOUND = DEFAULT_TTL + DEFAULT_TICK


def _consumers(region, agent_id: str, control: bool = False) -> int | str | None:
    """Consumers of the agent's own queue (or of its Celery control queue), read
    from the region's RabbitMQ vhost; None: no such queue; "locked": an exclusive
    queue held by another connection (Celery's control queue, while its worker lives)."""
    name = agent_control_queue(agent_node_name(agent_id, socket.gethostname())) if control else agent_queue(agent_id)
    with Connection(region.vhost.url(), connect_timeout=2) as conn:
        try:
            return conn.channel().queue_declare(queue=name, passive=True)[2]
        except conn.channel_errors as exc:
            return {404: None, 405: "locked"}[exc.code]


def test_dead_or_frozen_a_frozen_fleet_is_held_and_two_of_three_killed_are_requeued_within_ttl_plus_tick(
        fresh_region, watch_offline):
    """Three Celery agents at the region's default timing (interval 5 s, TTL 15 s,
    reaper tick 5 s), a task running on each. All three frozen past their TTL:
    held, nobody evicted (they keep their broker connections). Thawed, then two
    of them kill -9ed: 2 of 3 silent at once is a hold by silence alone, but their
    broker connections are gone, so they are evicted at TTL + tick and the
    survivor runs their tasks."""
    region = fresh_region(**DEFAULT_TIMING)
    workers = [region.agent("sleep", agent_id=f"dof-{i}") for i in range(3)]
    by_id = {w.agent_id: w for w in workers}

    def run_one_each(seconds: float) -> dict[str, str]:
        ids = [region.submit("sleep", {"seconds": seconds}, max_attempts=3)["id"] for _ in workers]
        rows = wait_for(lambda: (r := [region.task(t) for t in ids]) and all(x["status"] == "running" for x in r)
                        and len({x["agent"] for x in r}) == 3 and r, 30, what="a task running on each agent")
        return {x["agent"]: x["id"] for x in rows}

    def hold():
        return region.call("GET", "/api/v1/region/status").json()["liveness"]["eviction_hold"]

    # --- frozen: held -----------------------------------------------------------
    frozen_tasks = run_one_each(3)
    watcher = watch_offline(region)
    log_offset = region.orchestrator.log.stat().st_size
    frozen_at = time.monotonic()
    for w in workers:
        w.signal(signal.SIGSTOP)
    try:
        first = wait_for(lambda: watcher.seen or ((h := hold()) and h["missing"] == 3 and h), DEAD_BOUND + 15,
                         interval=0.5, what="a hold with all 3 frozen agents past their TTL (or an eviction)")
        assert not watcher.seen, f"evicted while frozen: {watcher.seen}\n{region.orchestrator.tail()}"
        _wait_ticks(hold, first, 2, 2 * DEFAULT_TICK + 5)
        held = hold()
        connected = [(_consumers(region, a), _consumers(region, a, control=True)) for a in by_id]
    finally:
        for w in workers:
            w.signal(signal.SIGCONT)
    frozen_s = time.monotonic() - frozen_at
    assert first["dead"] == 0 and "0 gone, 3 connected" in first["broker"], first
    assert held["dead"] == 0 and not watcher.seen and connected == [(1, "locked")] * 3, (held, watcher.seen, connected)
    wait_for(lambda: hold() is None, 15, what="the hold lifted")
    lifted_wall = time.time()
    frozen_rows = {t: region.wait_task(t, timeout=30) for t in frozen_tasks.values()}
    assert all(r["status"] == "succeeded" and r["attempt"] == 1 for r in frozen_rows.values()), frozen_rows
    frozen_log = _log_since(region.orchestrator, log_offset)
    # The grace granted when the hold lifted (one TTL) is over before anyone is killed.
    wait_for(lambda: _reaped_after(region, lifted_wall + DEFAULT_TTL + 1), 40,
             interval=0.5, what="the grace after the hold over")
    assert watcher.stop() == {} and not watcher.errors, (watcher.seen, watcher.errors[:3])

    # --- killed: evicted at TTL + tick ------------------------------------------
    running = run_one_each(8)
    survivor, victims = workers[0], workers[1:]
    log_offset = region.orchestrator.log.stat().st_size
    killed_wall, killed_at = time.time(), time.monotonic()
    for w in victims:
        w.signal(signal.SIGKILL)
    last_beats = _redis(region).zmscore(f"m:{region.region_id}:live", [w.agent_id for w in victims])
    gone = wait_for(lambda: all(_consumers(region, w.agent_id) == 0 and _consumers(region, w.agent_id, control=True)
                                is None for w in victims) and time.monotonic(), 10,
                    interval=0.05, what="RabbitMQ to drop the killed agents' consumers")
    victim_tasks = [running[w.agent_id] for w in victims]

    def requeued_at() -> dict[str, float] | None:
        rows = region.db_query("SELECT task_id::text, extract(epoch FROM finished_at) FROM regions_taskattempt "
                               "WHERE number = 1 AND outcome = 'requeued' AND task_id::text = ANY(%s)",
                               (victim_tasks,))
        return len(rows) == len(victim_tasks) and {t: float(at) for t, at in rows}

    try:
        requeued = wait_for(requeued_at, DEAD_BOUND + 15, interval=0.2, what="the killed agents' tasks requeued")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_log_since(region.orchestrator, log_offset)[-3000:]}") from None
    rows = {t: region.wait_task(t, timeout=60) for t in victim_tasks}
    done_s = time.monotonic() - killed_at
    log = _log_since(region.orchestrator, log_offset)
    after = {t: at - killed_wall for t, at in requeued.items()}
    after_beat = {t: at - max(last_beats) for t, at in requeued.items()}
    statuses = {a: region.agent_info(a)["status"] for a in by_id}
    ledger = Ledger.from_logs([w.log for w in workers])

    record(f"FAULT dead-or-frozen: frozen 3 of 3 for {frozen_s:.1f}s -> held, evicted=0; kill -9 2 of 3 -> "
           f"consumers gone {gone - killed_at:.1f}s, requeued after {min(after.values()):.1f}-"
           f"{max(after.values()):.1f}s ({max(after_beat.values()):.1f}s after their last beat; bound "
           f"{DEAD_BOUND:g}s), done by the survivor {done_s:.1f}s after the kill, "
           f"completed_twice={len(ledger.completed_twice())}")
    assert "agents offline" not in frozen_log, frozen_log[-3000:]
    # TTL + one tick from the last beat, which came before the kill; the slack is the
    # tick's own lateness (beat's schedule, the reap's run time), not another tick.
    assert max(after_beat.values()) <= DEAD_BOUND + 1 and max(after.values()) <= DEAD_BOUND + 1, (after, log[-3000:])
    assert all(r["status"] == "succeeded" and r["attempt"] == 2 and r["agent"] == survivor.agent_id
               for r in rows.values()), rows
    assert "eviction hold:" not in log and "broker connection is gone (dead)" in log, log[-3000:]
    assert statuses == {survivor.agent_id: "online", **{w.agent_id: "offline" for w in victims}}, statuses
    assert ledger.completed_twice() == []
