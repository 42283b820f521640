"""Fault matrix, agents and orchestrator: kill -9 under load, on real processes.

Every test prints a FAULT line with its figures (RELIABILITY.md collects them)."""
from __future__ import annotations

import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.accounting import Ledger, figures
from tests.harness import wait_for

pytestmark = pytest.mark.faults

TERMINAL = ("succeeded", "failed", "cancelled")


def _submit_many(region, n: int, payload_for) -> list[str]:
    def one(i: int) -> str:
        return region.submit("sleep", payload_for(i), max_attempts=10)["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def _final(region, ids: list[str], timeout: float) -> dict[str, dict]:
    """Wait until every task is terminal; the final rows, read from the database."""
    def done():
        rows = region.db_query("SELECT id::text, status, attempt FROM regions_task WHERE id::text = ANY(%s)",
                               (ids,))
        return len(rows) == len(ids) and all(r[1] in TERMINAL for r in rows) and rows

    try:
        rows = wait_for(done, timeout, interval=0.5, what=f"{len(ids)} tasks to finish")
    except AssertionError:
        rows = region.db_query("SELECT id::text, status, attempt FROM regions_task WHERE id::text = ANY(%s)",
                               (ids,))
        stuck = [r for r in rows if r[1] not in TERMINAL]
        raise AssertionError(f"{len(stuck)} tasks not finished, e.g. {stuck[:5]}\n{region.logs()}") from None
    return {r[0]: {"status": r[1], "attempt": r[2]} for r in rows}


def test_kill_9_of_agents_under_load_loses_nothing_and_completes_nothing_twice(fresh_region):
    """1,000 tasks while 3 agents are kill -9ed at random moments and started
    again by their supervisor (here: the test) under the same id."""
    region = fresh_region(HEARTBEAT_INTERVAL="1", HEARTBEAT_TTL="6", REAPER_INTERVAL="1")
    agents = [region.agent("sleep", agent_id=f"k9-{i}", concurrency=2) for i in range(3)]
    n = 1000
    rng = random.Random(7)
    stop = threading.Event()
    kills = []

    def killer():
        for victim in rng.sample(range(3), 3):
            if stop.wait(rng.uniform(2, 6)):
                return
            proc = agents[victim]
            proc.signal(signal.SIGKILL)
            proc.popen.wait(10)
            kills.append((proc.agent_id, time.monotonic()))
            agents[victim] = region.agent("sleep", agent_id=proc.agent_id, concurrency=2, wait=False)

    started = time.monotonic()
    thread = threading.Thread(target=killer)
    thread.start()
    ids = _submit_many(region, n, lambda i: {"seconds": rng.choice((0.0, 0.02, 0.05, 0.2))})
    try:
        final = _final(region, ids, timeout=300)
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    ledger = Ledger.from_logs({p.log for p in region.procs if p.name.startswith("agent-")})
    succeeded = sum(1 for t in final.values() if t["status"] == "succeeded")
    twice = ledger.completed_twice()
    stale = ledger.stale_starts({t: row["attempt"] for t, row in final.items()})
    figures(scenario="agents kill -9 x3 under 1000 tasks", submitted=n, succeeded=succeeded,
            completed_twice=len(twice), stale=len(stale), recovery=elapsed)
    assert len(kills) == 3
    assert succeeded == n, {t: r for t, r in final.items() if r["status"] != "succeeded"}
    assert not twice, [(t, ledger.finishes[t], ledger.starts[t]) for t in twice[:5]]
    assert not stale, [(t, ledger.starts[t], ledger.finishes.get(t), final[t]) for t in stale[:5]]
    assert set(ledger.finishes) == set(ids)  # every handler ran to completion once


def test_orchestrator_kill_9_mid_load_its_reports_are_processed_after_restart(fresh_region):
    """Outcomes reach the region over HTTP; with the web down they go over the
    broker to the orchestrator's collector. Kill -9 the orchestrator while it
    holds them: RabbitMQ gives unacked reports back at once, so they are
    processed within seconds of its restart (no visibility timeout)."""
    region = fresh_region(AGENT_REPORT_PATIENCE_SECONDS="1")
    agent = region.agent("sleep", concurrency=2)
    ids = [region.submit("sleep", {"seconds": 1.5})["id"] for _ in range(2)]
    wait_for(lambda: all(region.task(t)["status"] == "running" for t in ids), 20, what="both running")
    region.web.stop()  # outcomes now fall back to the broker
    region.orchestrator.signal(signal.SIGKILL)
    region.orchestrator.popen.wait(10)
    wait_for(lambda: agent.log.read_text(errors="replace").count("over the broker") >= 2, 30,
             what="both outcomes sent over the broker")
    restarted = time.monotonic()
    region.orchestrator = region._spawn("orchestrator2", [sys.executable, "manage.py", "run_region_worker",
                                                          "--beat"])
    region.start_web()
    for task_id in ids:
        done = region.wait_task(task_id, timeout=30)
        assert done["attempt"] == 1
    recovery = time.monotonic() - restarted
    ledger = Ledger.from_logs([agent.log])
    figures(scenario="orchestrator kill -9 holding reports", submitted=2, succeeded=2,
            completed_twice=len(ledger.completed_twice()), stale=0, recovery=recovery)
    assert not ledger.completed_twice()
    assert recovery < 20
