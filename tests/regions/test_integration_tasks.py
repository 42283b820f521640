"""The task lifecycle across real processes: gunicorn, the orchestrator worker
with beat, and agents that are real Celery workers, on PostgreSQL and Redis."""
import hashlib
import signal
import time

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration


def test_submitted_task_runs_on_a_real_worker_and_its_result_is_stored(region, agents):
    agent = agents("echo")
    task = region.submit("echo", {"hello": "world"})
    assert task["status"] == "queued"
    done = region.wait_task(task["id"])
    assert done["result"]["echo"] == {"hello": "world"}
    assert done["agent"] == agent.agent_id and done["attempt"] == 1
    assert done["started_at"] and done["finished_at"]
    stored = region.db_query("SELECT status, result->>'agent' FROM regions_task WHERE id = %s", (task["id"],))
    assert stored == [("succeeded", agent.agent_id)]


def test_data_ingestion_stores_valid_records_in_the_region_and_reports_counts(region, agents):
    agents("data_ingestion")
    (region.dir / "data" / "people.csv").write_text("name,age\nada,36\nalan,x\n,50\ngrace,85\n")
    task = region.submit("data_ingestion", {"source": "people.csv", "schema": {"name": "str", "age": "int"}})
    done = region.wait_task(task["id"])
    result = done["result"]
    assert (result["records_total"], result["records_valid"], result["records_invalid"]) == (4, 2, 2)
    assert "records" not in result  # stored as rows, not kept in the result
    assert [e["line"] for e in result["errors"]] == [3, 4]
    rows = region.db_query("SELECT line, data->>'name', data->'age' FROM regions_ingestedrecord "
                           "WHERE task_id = %s ORDER BY line", (task["id"],))
    assert rows == [(2, "ada", 36), (5, "grace", 85)]
    assert result["checksum"].startswith("sha256:")


def test_data_ingestion_outside_the_data_root_fails_without_retry(region, agents):
    agents("data_ingestion")
    task = region.submit("data_ingestion", {"source": "/etc/passwd"}, max_attempts=3)
    done = region.wait_task(task["id"], statuses=("failed",))
    assert "outside" in done["error"] and done["attempt"] == 1


def test_file_processing_hashes_and_compresses(region, agents):
    agents("file_processing")
    content = b"meridian " * 10_000
    (region.dir / "data" / "blob.bin").write_bytes(content)
    done = region.wait_task(region.submit("file_processing", {"source": "blob.bin"})["id"])
    result = done["result"]
    assert result["size_bytes"] == len(content)
    assert result["digests"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert 0 < result["compressed_bytes"] < len(content)


def test_failed_attempts_are_retried_with_backoff_then_succeed(region, agents):
    agents("fail")
    done = region.wait_task(region.submit("fail", {"until_attempt": 3}, max_attempts=3)["id"])
    assert done["attempt"] == 3 and done["result"] == {"recovered_on_attempt": 3}


def test_task_fails_after_max_attempts_with_its_error_stored(region, agents):
    agents("fail")
    done = region.wait_task(region.submit("fail", {"message": "boom"}, max_attempts=2)["id"],
                            statuses=("failed",))
    assert done["attempt"] == 2 and "boom" in done["error"]


def test_attempt_over_its_timeout_fails(region, agents):
    agents("sleep")
    done = region.wait_task(region.submit("sleep", {"seconds": 30}, timeout=1, max_attempts=1)["id"],
                            statuses=("failed",))
    assert "timed out" in done["error"]


def test_same_idempotency_key_returns_the_same_task(region, agents):
    first = region.call("POST", "/api/v1/tasks", json={"capability": "echo", "idempotency_key": "k-1"})
    again = region.call("POST", "/api/v1/tasks", json={"capability": "echo", "idempotency_key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.json()["created"] is False
    other_caller = region.call("POST", "/api/v1/tasks", key=region.user_key,
                               json={"capability": "echo", "idempotency_key": "k-1"})
    assert other_caller.status_code == 201 and other_caller.json()["id"] != first.json()["id"]


def test_task_without_a_live_agent_is_visibly_waiting_then_runs_when_one_arrives(region, agents):
    task = region.submit("file_processing", {"source": "nothing-yet.bin"}, max_attempts=1)
    assert task["status"] == "waiting" and "no live agent" in task["status_reason"]
    (region.dir / "data" / "nothing-yet.bin").write_bytes(b"x" * 10)
    agents("file_processing")
    done = region.wait_task(task["id"])
    assert done["result"]["size_bytes"] == 10


def test_cancel_a_queued_task_and_a_running_one(region, agents):
    queued = region.submit("no_such_capability")
    r = region.call("POST", f"/api/v1/tasks/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = region.call("POST", f"/api/v1/tasks/{queued['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]

    agents("sleep")
    running = region.submit("sleep", {"seconds": 3})
    region.wait_task(running["id"], statuses=("running",))
    assert region.call("POST", f"/api/v1/tasks/{running['id']}/cancel").status_code == 200
    time.sleep(4)
    assert region.task(running["id"])["status"] == "cancelled"  # the late result changed nothing


def test_killed_worker_task_completes_on_another_worker_with_attempt_2(region, agents):
    first = agents("sleep", concurrency=1)
    task = region.submit("sleep", {"seconds": 4})
    running = region.wait_task(task["id"], statuses=("running",))
    assert running["agent"] == first.agent_id
    killed_at = time.monotonic()
    first.signal(signal.SIGKILL)
    # Started after the kill: an agent's start-up on a loaded machine can take
    # longer than the task, which would then finish before the kill.
    second = agents("sleep")
    requeued = wait_for(lambda: (t := region.task(task["id"]))["attempt"] == 2 and t, 20,
                        what="requeue after kill -9")
    requeue_seconds = time.monotonic() - killed_at
    # requeued by the reaper (its status by then may be anything: queued, waiting for the
    # second agent, woken again, running, done), as the region logs it
    assert requeued["attempt"] == 2
    wait_for(lambda: any(f"task {task['id']} requeued after attempt 1" in p.log.read_text(errors="replace")
                         for p in region.procs), 10, what="the requeue in the region's log")
    done = region.wait_task(task["id"])
    assert done["attempt"] == 2 and done["agent"] == second.agent_id
    assert requeue_seconds <= 2 + 0.5 + 2  # TTL + reaper tick, with slack for the test's polling
    assert region.agent_info(first.agent_id)["status"] == "offline"


def test_late_result_of_a_requeued_attempt_is_ignored_and_the_agent_is_welcomed_back(region, agents):
    slow = agents("sleep")
    task = region.submit("sleep", {"seconds": 2})
    region.wait_task(task["id"], statuses=("running",))
    slow.signal(signal.SIGSTOP)  # frozen, not dead: it will finish attempt 1 later
    try:
        wait_for(lambda: region.task(task["id"])["attempt"] == 2, 15, what="requeue of frozen agent's task")
        other = agents("sleep")
        done = region.wait_task(task["id"])
        assert done["agent"] == other.agent_id
    finally:
        slow.signal(signal.SIGCONT)
    wait_for(lambda: region.agent_info(slow.agent_id)["status"] == "online", 15, what="agent back online")
    # Attempt 1's result arrives and must be fenced out.
    wait_for(lambda: "did not record success" in slow.log.read_text(errors="replace"), 15,
             what="the frozen agent's late report")
    final = region.task(task["id"])
    assert final["status"] == "succeeded" and final["attempt"] == 2 and final["agent"] == other.agent_id


def test_cordoned_agent_takes_no_new_tasks_until_uncordoned(region, agents):
    agent = agents("file_processing")
    assert region.call("POST", f"/api/v1/agents/{agent.agent_id}/cordon").json()["desired"] == "cordoned"
    time.sleep(2)  # next heartbeat tells it
    (region.dir / "data" / "c.bin").write_bytes(b"c")
    task = region.submit("file_processing", {"source": "c.bin"})
    time.sleep(2)
    assert region.task(task["id"])["status"] in ("queued", "waiting")
    assert agent.alive()
    region.call("POST", f"/api/v1/agents/{agent.agent_id}/uncordon")
    region.wait_task(task["id"])


def test_drained_agent_finishes_its_task_then_stops_and_deregisters(region, agents):
    agent = agents("sleep")
    task = region.submit("sleep", {"seconds": 2})
    region.wait_task(task["id"], statuses=("running",))
    assert region.call("POST", f"/api/v1/agents/{agent.agent_id}/drain").status_code == 200
    done = region.wait_task(task["id"])
    assert done["agent"] == agent.agent_id and done["attempt"] == 1
    wait_for(lambda: not agent.alive(), 20, what="drained agent to exit")
    assert region.agent_info(agent.agent_id)["status"] == "stopped"


def test_warm_shutdown_finishes_current_task_and_deregisters(region, agents):
    agent = agents("sleep")
    task = region.submit("sleep", {"seconds": 2})
    region.wait_task(task["id"], statuses=("running",))
    agent.signal(signal.SIGTERM, group=False)
    done = region.wait_task(task["id"])
    assert done["attempt"] == 1 and done["agent"] == agent.agent_id
    wait_for(lambda: not agent.alive(), 20, what="agent exit")
    assert region.agent_info(agent.agent_id)["status"] == "stopped"
