"""Every 4xx answer is clear, JSON, and loses nothing; run in-process on the real
PostgreSQL test database and the real Redis."""
import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from project.accounts.models import ApiKey
from regions.models import Task
from tests import factories

pytestmark = pytest.mark.django_db


def post_raw(client, path, body: bytes):
    return client.generic("POST", path, body, content_type="application/json")


def test_malformed_json_is_400_with_the_parse_error(api):
    r = post_raw(api, "/api/v1/tasks", b'{"capability": "echo",')
    assert r.status_code == 400 and r.json()["error"] == "parse_error" and "JSON" in r.json()["detail"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize("capability", ["Echo", "bad cap", "x" * 65, "1abc", ""])
def test_capability_name_of_the_wrong_format_is_400_naming_the_field(api, capability):
    r = api.post("/api/v1/tasks", {"capability": capability}, format="json")
    assert r.status_code == 400 and "capability" in r.json()["fields"]


@pytest.mark.parametrize("field,value", [("priority", 12), ("timeout", 0), ("max_attempts", 0),
                                         ("payload", [1, 2]), ("target_agent", "no spaces")])
def test_out_of_range_fields_are_400(api, field, value):
    r = api.post("/api/v1/tasks", {"capability": "echo", field: value}, format="json")
    assert r.status_code == 400 and field in r.json()["fields"]


def test_payload_over_the_default_256_kib_limit_is_413(api):
    r = api.post("/api/v1/tasks", {"capability": "echo", "payload": {"blob": "x" * 300_000}}, format="json")
    assert r.status_code == 413 and "262144" in r.json()["detail"]
    assert Task.objects.count() == 0


@override_settings(TASK_PAYLOAD_LIMIT_BYTES=1000)
def test_payload_limit_is_configurable(api):
    assert api.post("/api/v1/tasks", {"capability": "echo", "payload": {"b": "x" * 1100}},
                    format="json").status_code == 413
    assert api.post("/api/v1/tasks", {"capability": "echo", "payload": {"b": "x" * 900}},
                    format="json").status_code == 201


@pytest.mark.parametrize("header", [None, "Bearer mk_not-a-real-key", "Basic dXNlcjpwdw=="])
def test_calls_without_a_valid_api_key_are_401(redis_clean, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    for method, path in [("get", "/api/v1/tasks"), ("post", "/api/v1/tasks"), ("get", "/api/v1/agents"),
                         ("get", "/api/v1/region/status")]:
        r = getattr(client, method)(path, {"capability": "echo"} if method == "post" else None, format="json")
        assert r.status_code == 401, (method, path, r.content)
        assert r.json()["error"] in ("not_authenticated", "authentication_failed")


def test_an_agent_token_is_not_an_api_key(redis_clean):
    reg = factories.agent("a1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reg.token}")
    assert client.post("/api/v1/tasks", {"capability": "echo"}, format="json").status_code == 401


def test_a_caller_cannot_see_or_cancel_another_callers_task(api):
    task_id = api.post("/api/v1/tasks", {"capability": "echo"}, format="json").json()["id"]
    _, other_key = factories.caller("mallory")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    assert other.get(f"/api/v1/tasks/{task_id}").status_code == 404
    assert other.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 404
    assert other.get("/api/v1/tasks").json()["results"] == []


def test_fleet_operations_need_staff(api):
    factories.agent("a1")
    r = api.post("/api/v1/agents/a1/drain")
    assert r.status_code == 403 and r.json()["error"] == "permission_denied"
    _, staff_key = factories.caller("ops", staff=True)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_key}")
    assert api.post("/api/v1/agents/a1/drain").json()["desired"] == "draining"
    assert api.post("/api/v1/agents/nope/cordon").status_code == 404


def test_unknown_task_is_404_and_bad_status_filter_is_400(api):
    assert api.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000").status_code == 404
    r = api.get("/api/v1/tasks?status=exploded")
    assert r.status_code == 400 and "status" in r.json()["fields"]


def test_cancelling_a_finished_task_is_409(api):
    task_id = api.post("/api/v1/tasks", {"capability": "echo"}, format="json").json()["id"]
    Task.objects.filter(id=task_id).update(status=Task.Status.SUCCEEDED)
    r = api.post(f"/api/v1/tasks/{task_id}/cancel")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]


# --- agents -------------------------------------------------------------------

def heartbeat(agent_id, token=None, body=b"{}"):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return post_raw(client, f"/api/v1/agents/{agent_id}/heartbeat", body)


def test_heartbeat_with_its_own_token_is_accepted_and_says_what_to_do(redis_clean):
    reg = factories.agent("a1")
    r = heartbeat("a1", reg.token, b'{"busy": 1}')
    assert r.status_code == 200 and r.json()["desired"] == "active" and r.json()["interval"] > 0


def test_heartbeat_without_or_with_a_bad_token_is_401(redis_clean):
    factories.agent("a1")
    assert heartbeat("a1").status_code == 401
    r = heartbeat("a1", "mat_forged")
    assert r.status_code == 401 and r.json()["detail"] == "Invalid agent token."


def test_heartbeat_as_another_agent_is_403(redis_clean):
    a = factories.agent("a1")
    factories.agent("a2")
    r = heartbeat("a2", a.token)
    assert r.status_code == 403 and "a1" in r.json()["detail"]


def test_heartbeat_with_malformed_body_is_400(redis_clean):
    reg = factories.agent("a1")
    assert heartbeat("a1", reg.token, b"{not json").status_code == 400
    assert heartbeat("a1", reg.token, json.dumps({"busy": -3}).encode()).status_code == 400


def test_registration_needs_a_valid_registration_token_and_a_valid_body(redis_clean, settings):
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    client = APIClient()
    body = {"agent_id": "a9", "capabilities": ["echo"]}
    assert client.post("/api/v1/agents/register", body, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer wrong")
    assert client.post("/api/v1/agents/register", body, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-secret")
    bad = client.post("/api/v1/agents/register", {"agent_id": "a b", "capabilities": ["Bad!"]}, format="json")
    assert bad.status_code == 400 and {"agent_id", "capabilities"} <= set(bad.json()["fields"])
    ok = client.post("/api/v1/agents/register", body, format="json")
    assert ok.status_code == 201 and ok.json()["token"].startswith("mat_")
    assert "meridian.cap.echo" in ok.json()["queues"]


def test_agent_token_is_stored_hashed(redis_clean):
    from regions.models import Agent

    reg = factories.agent("a1")
    stored = Agent.objects.get(agent_id="a1").token_hash
    assert reg.token not in stored and len(stored) == 64


def test_deregister_needs_the_agents_own_token(redis_clean):
    a = factories.agent("a1")
    factories.agent("a2")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {a.token}")
    assert client.post("/api/v1/agents/a2/deregister").status_code == 403
    assert client.post("/api/v1/agents/a1/deregister").json()["status"] == "stopped"


def test_agent_list_filters_by_status_and_capability(api):
    ApiKey.objects.filter(user__username="caller").update(scopes=["fleet:read"])
    factories.agent("a1", capabilities=["echo"])
    factories.agent("a2", capabilities=["sleep"])
    r = api.get("/api/v1/agents?status=online&capability=sleep")
    assert r.status_code == 200 and [a["agent_id"] for a in r.json()["results"]] == ["a2"]
    assert api.get("/api/v1/agents/a1").json()["liveness"] == "ok"


# --- the database unavailable (restart, failover, network cut) ----------------

def assert_database_503(r):
    assert r.status_code == 503, r.content
    assert r["Content-Type"] == "application/json"
    assert r.json()["error"] == "unavailable" and "database" in r.json()["detail"]
    assert int(r["Retry-After"]) > 0


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_task_list_while_the_database_is_down_is_503_json_with_retry_after(api, monkeypatch):
    from django.db import OperationalError
    from regions import selectors

    monkeypatch.setattr(selectors, "task_list", _raise(OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused')))
    r = api.get("/api/v1/tasks")
    assert_database_503(r)
    assert "5432" not in r.json()["detail"]  # the server's address is not the caller's business


def test_task_submit_on_a_closed_database_connection_is_503_and_stores_nothing(api, monkeypatch):
    from django.db import InterfaceError
    from regions.api.views import tasks as region_views

    monkeypatch.setattr(region_views, "task_submit", _raise(InterfaceError("connection already closed")))
    assert_database_503(api.post("/api/v1/tasks", {"capability": "echo"}, format="json"))
    assert Task.objects.count() == 0


def test_api_key_check_while_the_database_is_down_is_503_not_401(redis_clean, monkeypatch):
    from django.db import OperationalError
    from project.accounts import authentication

    class DeadKeys:
        def select_related(self, *args):
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(authentication.ApiKey, "objects", DeadKeys())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer mk_not_cached")
    assert_database_503(client.get("/api/v1/tasks"))


def test_heartbeat_view_while_the_database_is_down_is_503_json_with_retry_after(redis_clean, monkeypatch):
    """A plain Django view: the middleware answers, not DRF."""
    from django.db import OperationalError
    from regions.api.views import agents as region_views

    reg = factories.agent("a1")
    monkeypatch.setattr(region_views, "heartbeat_record", _raise(OperationalError("the database system is shutting down")))
    assert_database_503(heartbeat("a1", reg.token))


def test_every_service_unavailable_answer_says_when_to_retry(redis_clean, settings, monkeypatch):
    from regions.api.views import agents as region_views
    from regions.services import liveness

    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    monkeypatch.setattr(region_views, "agent_register", _raise(liveness.RedisError("down")))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-secret")
    r = client.post("/api/v1/agents/register", {"agent_id": "a9", "capabilities": ["echo"]}, format="json")
    assert r.status_code == 503 and r.json()["error"] == "unavailable" and r["Retry-After"] == "2"


@pytest.mark.parametrize("exc", [ValueError("a bug"), "ProgrammingError"])
def test_a_bug_is_still_a_500_not_a_503(api, monkeypatch, exc):
    """Only an unreachable database is "retry later"; a broken query is not."""
    from django.db import ProgrammingError
    from regions import selectors

    exc = ProgrammingError('relation "nope" does not exist') if exc == "ProgrammingError" else exc
    monkeypatch.setattr(selectors, "task_list", _raise(exc))
    with pytest.raises(type(exc)):  # the test client re-raises what became a 500
        api.get("/api/v1/tasks")
