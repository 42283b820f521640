"""Fault matrix, workflows: chains and a fan-out with a join while agents and
the orchestrator are kill -9ed at random, on real processes (issue 18, part 3).

Prints a FAULT line with its figures (RELIABILITY.md collects them)."""
from __future__ import annotations

import os
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

# 200 in the issue; WORKFLOW_FAULT_N to run it smaller or larger.
N = int(os.environ.get("WORKFLOW_FAULT_N", "200"))
FAN_OUT = 10
STEP = {"capability": "sleep", "payload": {"seconds": 0.02}, "max_attempts": 10}
STEPS = [STEP, STEP, STEP, {"group": [{**STEP, "payload": {"seconds": 0.05}}] * FAN_OUT}, STEP]
TASKS_PER_WORKFLOW = 3 + FAN_OUT + 1


def test_workflows_finish_and_joins_run_once_while_agents_and_the_orchestrator_are_killed(fresh_region):
    region = fresh_region(HEARTBEAT_INTERVAL="1", HEARTBEAT_TTL="6", REAPER_INTERVAL="1")
    agents = [region.agent("sleep", agent_id=f"wf-{i}", concurrency=4) for i in range(3)]
    rng = random.Random(18)
    stop = threading.Event()
    kills = []

    def killer():
        victims = ["agent", "orchestrator", "agent", "agent", "orchestrator", "agent"]
        for round_, victim in enumerate(victims):
            if stop.wait(rng.uniform(1.5, 4)):
                return
            if victim == "orchestrator":
                region.orchestrator.signal(signal.SIGKILL)
                region.orchestrator.popen.wait(10)
                kills.append(("orchestrator", time.monotonic()))
                region.orchestrator = region._spawn(f"orchestrator-{round_}", [
                    sys.executable, "manage.py", "run_region_worker", "--beat", "--concurrency", "2"])
                continue
            index = rng.randrange(len(agents))
            proc = agents[index]
            proc.signal(signal.SIGKILL)
            proc.popen.wait(10)
            kills.append((proc.agent_id, time.monotonic()))
            agents[index] = region.agent("sleep", agent_id=proc.agent_id, concurrency=4, wait=False)

    def submit(i: int) -> str:
        answer = region.call("POST", "/api/v1/workflows", json={"steps": STEPS, "idempotency_key": f"wf-{i}"})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    started = time.monotonic()
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(submit, range(N)))

        def finished():
            rows = region.db_query("SELECT status, count(*) FROM regions_workflow GROUP BY status")
            return dict(rows).get("succeeded", 0) == N

        try:
            wait_for(finished, 170, interval=1, what=f"{N} workflows to succeed")
        except AssertionError:
            rows = region.db_query("SELECT status, error, count(*) FROM regions_workflow GROUP BY 1, 2")
            raise AssertionError(f"workflows not all succeeded: {rows}\n{region.logs()}") from None
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    per_step = region.db_query(
        "SELECT s.index, s.member, count(t.id) FROM regions_workflowstep s "
        "LEFT JOIN regions_task t ON t.workflow_step_id = s.id GROUP BY s.id, s.index, s.member")
    tasks = dict(region.db_query(
        "SELECT t.id::text, t.attempt FROM regions_task t JOIN regions_workflowstep s ON t.workflow_step_id = s.id"))
    joins = [row[0] for row in region.db_query(
        "SELECT t.id::text FROM regions_task t JOIN regions_workflowstep s ON t.workflow_step_id = s.id "
        "WHERE s.index = 4")]
    ledger = Ledger.from_logs({p.log for p in region.procs if p.name.startswith("agent-")})
    twice = ledger.completed_twice()
    stale = ledger.stale_starts(tasks)
    figures(scenario=f"workflows x{N} (3 chained + {FAN_OUT}-way fan-out + join), agents and orchestrator "
                     f"kill -9", submitted=N * TASKS_PER_WORKFLOW, succeeded=len(tasks),
            completed_twice=len(twice), stale=len(stale), recovery=elapsed)
    # Killed while the workflows ran (the killer stops when they are done).
    assert sum(1 for who, _ in kills if who == "orchestrator") >= 1 and len(kills) >= 3, kills
    assert len(ids) == len(set(ids)) == N
    assert len(per_step) == N * TASKS_PER_WORKFLOW and all(count == 1 for _, _, count in per_step)
    assert len(tasks) == N * TASKS_PER_WORKFLOW
    assert len(joins) == N and all(len(ledger.finishes[j]) == 1 for j in joins)  # every join ran once
    assert set(ledger.finishes) == set(tasks)  # every step's handler ran to completion
    assert not twice, [(t, ledger.finishes[t], ledger.starts[t]) for t in twice[:5]]
    assert not stale, [(t, ledger.starts[t], ledger.finishes.get(t), tasks[t]) for t in stale[:5]]
