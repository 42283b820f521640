"""Faults on real processes: the region's liveness Redis going away,
the orchestrator worker killed, an agent going silent. Nothing accepted is lost."""
import signal
import sys
import time

import pytest
import requests

from tests.harness import REGISTRATION_TOKEN, holds_for, wait_for

pytestmark = pytest.mark.faults


def test_liveness_redis_down_tasks_still_run_heartbeats_get_503_and_nobody_is_evicted(fresh_region):
    """The liveness Redis is not on the task path (the broker is RabbitMQ, claims
    and outcomes go to the region over HTTP): tasks keep running while it is away."""
    region = fresh_region()
    agent = region.agent("echo")
    region.wait_task(region.submit("echo", {"warmup": 1})["id"])

    region.redis.stop()
    down_at = time.monotonic()
    accepted = region.call("POST", "/api/v1/tasks", json={"capability": "echo", "payload": {"n": 42}})
    assert accepted.status_code == 201, accepted.text
    done = region.wait_task(accepted.json()["id"], timeout=30)
    assert done["result"]["echo"] == {"n": 42} and done["attempt"] == 1
    status = region.call("GET", "/api/v1/region/status").json()
    assert status["liveness"]["ok"] is False and "unavailable" in status["liveness"]["error"]
    hb = requests.post(f"{region.url}/api/v1/agents/{agent.agent_id}/heartbeat",
                       headers={"Authorization": "Bearer whatever"}, json={}, timeout=5)
    assert hb.status_code == 503 and "Redis" in hb.json()["detail"] and hb.headers["Retry-After"]
    # Longer than the TTL (2 s) plus ticks: nobody may be evicted for Redis's outage.
    holds_for(lambda: region.agent_info(agent.agent_id)["status"] == "online", 4, what="agent stays online")
    assert time.monotonic() - down_at > 2 + 0.5

    region.redis.start()
    again = region.submit("echo", {"n": 43})
    assert region.wait_task(again["id"], timeout=30)["result"]["echo"] == {"n": 43}
    assert region.agent_info(agent.agent_id)["status"] == "online"


def test_tasks_complete_while_the_orchestrator_worker_is_down(fresh_region):
    """The orchestrator runs the clock jobs (reaper, sweeper, summaries) and the
    fallback report collector; submission, dispatch, claims and outcomes do not
    need it. Killed, it resumes its jobs when started again."""
    region = fresh_region()
    region.agent("echo")
    region.orchestrator.signal(signal.SIGKILL)
    region.orchestrator.popen.wait(10)
    task_id = region.submit("echo", {"while": "orchestrator down"})["id"]
    assert region.wait_task(task_id)["result"]["echo"] == {"while": "orchestrator down"}
    region.orchestrator = region._spawn("orchestrator2", [sys.executable, "manage.py", "run_region_worker",
                                                          "--beat"])
    wait_for(lambda: "regions.agent_reap" in region.orchestrator.log.read_text(errors="replace"), 30,
             what="the restarted orchestrator's reaper tick")


def test_http_agent_that_stops_heartbeating_is_offline_within_ttl_plus_one_tick(region):
    """A plain `requests` agent, as in the article, checks in over HTTP."""
    reg = requests.post(f"{region.url}/api/v1/agents/register", timeout=5,
                        headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
                        json={"agent_id": "http-agent-1", "capabilities": ["echo"], "kind": "http"})
    assert reg.status_code == 201, reg.text
    token = reg.json()["token"]
    for _ in range(3):
        r = requests.post(f"{region.url}/api/v1/agents/http-agent-1/heartbeat",
                          headers={"Authorization": f"Bearer {token}"}, json={"busy": 0}, timeout=5)
        last_beat = time.monotonic()
        assert r.status_code == 200 and r.json()["desired"] == "active"
        time.sleep(0.3)
    wait_for(lambda: region.agent_info("http-agent-1")["status"] == "offline", 10, interval=0.05,
             what="agent offline")
    elapsed = time.monotonic() - last_beat
    ttl, tick = 2.0, 0.5
    assert ttl <= elapsed <= ttl + tick + 0.5, elapsed  # + the test's polling and HTTP time

    # It comes back: welcomed, not duplicated.
    r = requests.post(f"{region.url}/api/v1/agents/http-agent-1/heartbeat",
                      headers={"Authorization": f"Bearer {token}"}, json={}, timeout=5)
    assert r.status_code == 200
    wait_for(lambda: region.agent_info("http-agent-1")["status"] == "online", 5, what="back online")
    online = region.call("GET", "/api/v1/agents?status=online").json()["results"]
    assert [a["agent_id"] for a in online].count("http-agent-1") == 1
