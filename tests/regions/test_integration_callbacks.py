"""A completion callback across real processes: gunicorn, the orchestrator
worker with beat, and an agent; the configuration applied by sync_config; the
delivery reaches a real receiver, signed, and verifies with the client."""
import pytest

from meridian_client import verify_callback
from tests import harness
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def test_a_finished_task_reaches_the_receiver_signed(region, agents, receiver, tmp_path):
    commit = harness.config_repo(tmp_path / "config")
    sha = commit({"schema_version": 1, "callbacks": {"allowed_hosts": ["127.0.0.1"]}})
    assert "applied" in region.manage("sync_config", "--repo", str(tmp_path / "config"), "--ref", sha)
    r = region.call("POST", "/api/v1/callbacks/secret", key=region.user_key)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    hook = receiver()
    agents("echo")
    task = region.submit("echo", {"hello": "callbacks"}, key=region.user_key, callback_url=hook.url)
    wait_for(lambda: hook.requests, 30, what="the callback at the receiver")
    (request,) = hook.requests
    body = verify_callback(request["body"], request["headers"]["Meridian-Signature"], secret)
    assert body["id"] == task["id"] and body["status"] == "succeeded"
    assert body["result"]["echo"] == {"hello": "callbacks"}
    shown = wait_for(lambda: (t := region.call("GET", f"/api/v1/tasks/{task['id']}", key=region.user_key).json())
                     ["callback"]["state"] == "delivered" and t, 10, what="the delivery recorded")
    assert shown["callback"]["attempts"][0]["response_code"] == 200
