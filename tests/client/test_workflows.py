"""Workflows through the client, against the real region of tests/client/conftest.py
(an agent serving echo, fail and sleep): a chain with a fan-out and a join, a
failure naming the step, cancel and retry, the async twin."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import meridian_client
from meridian_client import AsyncClient, Client, NotFound, ValidationError, WaitTimeout

pytestmark = pytest.mark.integration
# The workflow errors are looked up as the tests run, not at import: collecting
# (make test-fast) may see an installed client older than this checkout's.


@pytest.fixture
def via_region(fleet):
    with Client(fleet.region.url, fleet.api_key, deadline=60) as client:
        yield client


def test_a_chain_with_a_fan_out_and_a_join_gives_the_join_its_members_results(via_region):
    workflow = via_region.workflow([
        {"capability": "echo", "payload": {"n": 1}},
        {"group": [{"capability": "echo", "payload": {"member": i}} for i in range(3)]},
        {"capability": "echo", "payload": {"join": True}},
    ])
    assert workflow["status"] == "running" and [s["kind"] for s in workflow["steps"]] == ["task", "group", "task"]
    result = via_region.workflow_result(workflow["id"], timeout=60)
    echoed = result["echo"]
    assert echoed["join"] is True
    assert [r["echo"]["member"] for r in echoed["results"]] == [0, 1, 2]
    assert all(r["echo"]["echo"]["n"] == 1 for r in echoed["results"])  # the first step's input reached each member
    state = via_region.workflow_status(workflow)
    assert state["status"] == "succeeded"
    assert all(t["status"] == "succeeded" and t["task_id"] for s in state["steps"] for t in s["tasks"])


def test_a_failed_step_raises_workflow_failed_naming_it_and_retry_resumes(via_region):
    workflow = via_region.workflow([{"capability": "echo"},
                                    {"capability": "fail", "payload": {"message": "nope"}, "max_attempts": 1}])
    with pytest.raises(meridian_client.WorkflowFailed) as failed:
        via_region.workflow_result(workflow["id"], timeout=60)
    assert "step 1, fail" in str(failed.value) and failed.value.workflow["steps"][1]["status"] == "failed"
    retried = via_region.workflow_retry(workflow["id"])
    assert retried["status"] == "running"
    with pytest.raises(meridian_client.WorkflowFailed):  # fail fails again: the step ran a second attempt
        via_region.workflow_result(workflow["id"], timeout=60)


def test_cancel_a_workflow_and_a_wait_that_times_out(via_region):
    workflow = via_region.workflow([{"capability": "sleep", "payload": {"seconds": 30}}, {"capability": "echo"}])
    with pytest.raises(WaitTimeout):
        via_region.workflow_wait(workflow["id"], timeout=0.5)
    cancelled = via_region.workflow_cancel(workflow["id"])
    assert cancelled["status"] == "cancelled"
    with pytest.raises(meridian_client.WorkflowCancelled):
        via_region.workflow_result(workflow["id"], timeout=10)
    assert via_region.workflow_status(workflow)["steps"][1]["tasks"][0]["task_id"] is None


def test_a_malformed_workflow_or_an_unknown_one_is_a_typed_error(via_region):
    with pytest.raises(ValidationError) as invalid:
        via_region.workflow([{"capability": "Not A Capability"}])
    assert "steps[0].capability" in str(invalid.value.fields["steps"])
    with pytest.raises(NotFound):
        via_region.workflow_status(str(uuid.uuid4()))


def test_the_same_idempotency_key_is_one_workflow(fleet, via_region):
    key = uuid.uuid4().hex
    first = via_region.workflow([{"capability": "echo"}], idempotency_key=key)
    assert via_region.workflow([{"capability": "echo"}], idempotency_key=key)["id"] == first["id"]


def test_the_async_client_runs_a_workflow(fleet):
    async def main():
        async with AsyncClient(fleet.region.url, fleet.api_key, deadline=60) as client:
            workflow = await client.workflow([{"capability": "echo", "payload": {"a": 1}},
                                              {"capability": "echo"}])
            return await client.workflow_result(workflow, timeout=60)

    assert asyncio.run(main())["echo"]["echo"]["a"] == 1


def test_the_cli_submits_a_workflow_waits_for_it_and_shows_its_steps(fleet, meridian, tmp_path):
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps({"steps": [{"capability": "echo", "payload": {"a": 1}},
                                           {"group": [{"capability": "echo"}, {"capability": "echo"}]}]}))
    done = meridian("workflow", "submit", "--steps", f"@{steps}", "--wait", "--wait-timeout", "90", "--json",
                    url=fleet.region.url)
    assert done.returncode == 0, done.stderr
    workflow = json.loads(done.stdout)
    assert workflow["status"] == "succeeded" and len(workflow["result"]) == 2
    shown = meridian("workflow", "status", workflow["id"], url=fleet.region.url)
    assert shown.returncode == 0 and "step 1 (group, succeeded): echo succeeded, echo succeeded" in shown.stdout
    failing = meridian("workflow", "submit", "--steps", '[{"capability": "fail", "max_attempts": 1}]', "--wait",
                       url=fleet.region.url)
    assert failing.returncode == 1 and "step 0, fail failed" in failing.stdout
    assert meridian("workflow", "submit", "--steps", "[{", url=fleet.region.url).returncode == 2
