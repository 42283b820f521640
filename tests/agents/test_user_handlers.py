"""A user's own package on real agents: its handlers are loaded by --handlers,
the agent serves exactly what it loaded, the region checks payloads against
the declared schema, and each way a handler can misbehave (a missing import,
a hang, a result that is not JSON, killing its own process) ends in a clear
failed attempt while the agent goes on."""
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.integration

PKG = str(Path(__file__).resolve().parent.parent / "handlers_pkg")


@pytest.fixture(scope="module")
def region(region_template):
    """hang_hard waits out the hard limit: the region leaves 10 s to report past
    the timeout instead of 60 (AGENT_REPORT_PATIENCE_SECONDS stays below it)."""
    r = harness.Region(region_template, REPORT_ALLOWANCE_SECONDS="10", AGENT_REPORT_PATIENCE_SECONDS="5").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def user_agent(region):
    proc = region.agent(None, handlers="meridian_test_handlers.tasks", env={"PYTHONPATH": PKG})
    yield proc
    proc.stop()


def test_the_agent_serves_every_handler_of_the_users_module_and_nothing_else(region, user_agent):
    info = region.agent_info(user_agent.agent_id)
    assert info["capabilities"] == ["checked", "hang", "hang_hard", "missing_dep", "not_json", "ok", "suicide"]
    assert "with handlers from meridian_test_handlers.tasks" in user_agent.log.read_text()


def test_the_declared_schema_refuses_a_bad_payload_and_the_declared_timeout_applies(region, user_agent):
    r = region.call("POST", "/api/v1/tasks", json={"capability": "checked", "payload": {"n": "three"}})
    assert r.status_code == 400
    assert r.json()["fields"]["payload"][0].startswith('payload.n: "three" is not of type "integer"'), r.text
    task = region.submit("checked", {"n": 12})
    assert task["timeout"] == 7
    assert region.wait_task(task["id"])["result"] == {"square": 144}


@pytest.mark.parametrize("capability, timeout, cause", [
    ("missing_dep", 30, "ModuleNotFoundError: No module named 'meridian_no_such_module'"),
    ("hang", 2, "timed out after 2s"),
    ("hang_hard", 1, "hit its hard time limit"),
    ("not_json", 30, "result refused: result.when: datetime is not a JSON value"),
    ("suicide", 30, "the agent's worker process died while running it"),
])
def test_a_misbehaving_handler_fails_its_attempt_naming_the_cause_and_the_agent_goes_on(
        region, user_agent, capability, timeout, cause):
    task = region.submit(capability, {}, max_attempts=1, timeout=timeout)
    done = region.wait_task(task["id"], statuses=("failed",), timeout=90)
    assert cause in done["error"], done
    assert user_agent.alive()
    after = region.submit("ok", {})
    assert region.wait_task(after["id"], timeout=60)["result"]["ok"] is True
