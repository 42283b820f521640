"""No request, however malformed, is a 500 or leaves a value behind that can
poison a consumer later: bounded payloads, strict heartbeat bodies, checked
query parameters, the idempotency rule, dead letters. In-process, on the real
PostgreSQL test database and the real Redis."""
import json

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.test import Client
from rest_framework.test import APIClient

from project.accounts.models import SCOPES, ApiKey
from project.jsonsafe import MAX_DEPTH
from regions.models import DeadLetter, Task
from regions.services import reports
from regions.services.deadletters import dead_letter_store
from regions.tasks import agent_reap_task
from tests import factories
from wire import deadletter
from wire.signing import report_signature

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(redis_clean):
    user, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def region_sink():
    """The orchestrator's sink, as run_region_worker sets it."""
    deadletter._window[:] = [0.0, 0, 0]  # a fresh rate window per test
    deadletter.set_sink(dead_letter_store)
    yield
    deadletter.set_sink(None)


def post_raw(client, path, body: bytes, **extra):
    return client.generic("POST", path, body, content_type="application/json", **extra)


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def assert_json_4xx(response, status, *words):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    text = json.dumps(response.json())
    for word in words:
        assert word in text, text


# --- task payloads: bounded at the door -----------------------------------------------

def test_payload_nested_deeper_than_the_bound_is_400_naming_the_path(api):
    r = api.post("/api/v1/tasks", {"capability": "echo", "payload": nested(MAX_DEPTH + 5)}, format="json")
    assert_json_4xx(r, 400, "payload", "nested deeper than 64")
    assert api.post("/api/v1/tasks", {"capability": "echo", "payload": nested(MAX_DEPTH - 2)},
                    format="json").status_code == 201


def test_the_900_deep_echo_payload_of_the_probe_is_refused(api):
    body = b'{"capability": "echo", "payload": {"x": ' + b"[" * 900 + b"]" * 900 + b"}}"
    assert_json_4xx(post_raw(api, "/api/v1/tasks", body), 400, "nested deeper")
    assert Task.objects.count() == 0


@pytest.mark.parametrize("raw,words", [
    (b'{"capability": "echo", "payload": {"s": "a\\u0000b"}}', ["payload.s", "NUL"]),
    (b'{"capability": "echo", "payload": {"k\\u0000": 1}}', ["payload", "NUL"]),
    (b'{"capability": "echo", "payload": {"s": "\\ud800"}}', ["payload.s", "surrogate"]),
    (b'{"capability": "echo", "payload": {"n": 1e400}}', ["payload"]),
    (b'{"capability": "echo", "payload": {"n": [NaN]}}', ["parse"]),
    (b'{"capability": "echo", "payload": {"s": "x"}, "idempotency_key": "k\\u0000"}', ["idempotency_key"]),
    (b'{"capability": "ec\\u0000ho"}', ["capability"]),
])
def test_text_and_numbers_postgresql_cannot_store_are_400_not_500(api, raw, words):
    assert_json_4xx(post_raw(api, "/api/v1/tasks", raw), 400, *words)
    assert Task.objects.count() == 0


@pytest.mark.parametrize("path", ["/api/v1/tasks?capability=ec%00ho", "/api/v1/agents?capability=ec%00ho",
                                  "/api/v1/tasks?status=%00", "/api/v1/agents?status=gone%00",
                                  "/api/v1/tasks?capability=%ED%A0%80"])
def test_nul_or_junk_in_a_list_filter_is_400(api, path):
    ApiKey.objects.filter(user__username="caller").update(scopes=list(SCOPES))  # the agents' list needs fleet:read
    assert_json_4xx(api.get(path), 400)


# --- bodies nested 10,000 deep, on every JSON endpoint of the region ---------------------

DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/agents/register", "/api/v1/agents/a1/heartbeat",
                                  "/api/v1/agents/a1/claim", "/api/v1/agents/a1/report",
                                  "/api/v1/agents/a1/dead-letters"])
def test_json_nested_10000_deep_is_400_on_every_json_endpoint(api, settings, path):
    reg = factories.agent("a1")
    client = APIClient()
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    token = "reg-secret" if "register" in path else (
        reg.token if "/a1/" in path else None)
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    else:
        client = api
    assert_json_4xx(post_raw(client, path, DEEP), 400)


# --- heartbeats: strict busy; who asks is checked first --------------------------------

@pytest.mark.parametrize("body", [b'{"busy": 1e400}', b'{"busy": Infinity}', b'{"busy": -Infinity}',
                                  b'{"busy": NaN}', b'{"busy": true}', b'{"busy": "3"}', b'{"busy": -1}',
                                  b'{"busy": 10000000}', b'{"busy": 1.5}', b'[1]', b'"x"', b'{"busy": [[[[[1]]]]]}',
                                  b"\xff\xfe", b'{"busy": 0' + b" " * 5000 + b"}"])
@pytest.mark.parametrize("token, status", [("own", 400), (None, 401), ("mat_forged", 401)])
def test_heartbeat_with_a_bad_busy_is_400_json_for_the_agent_and_401_for_anyone_else(redis_clean, body, token,
                                                                                     status):
    reg = factories.agent("a1")
    token = reg.token if token == "own" else token
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    assert_json_4xx(post_raw(Client(), "/api/v1/agents/a1/heartbeat", body, **headers), status)


def test_heartbeat_with_a_sane_busy_is_accepted(redis_clean):
    reg = factories.agent("a1")
    r = post_raw(Client(), "/api/v1/agents/a1/heartbeat", b'{"busy": 2}', HTTP_AUTHORIZATION=f"Bearer {reg.token}")
    assert r.status_code == 200 and r.json()["desired"] == "active"


# --- idempotency keys: the same key for another request is 409 ------------------------------

def test_an_idempotency_key_reused_with_a_different_body_is_409(api):
    first = api.post("/api/v1/tasks", {"capability": "echo", "payload": {"a": 1, "b": 2}, "idempotency_key": "k1"},
                     format="json")
    assert first.status_code == 201
    same = post_raw(api, "/api/v1/tasks", b'{"idempotency_key": "k1", "payload": {"b": 2, "a": 1}, '
                                          b'"capability": "echo"}')
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    for other in ({"capability": "echo", "payload": {"a": 2, "b": 2}},
                  {"capability": "echo", "payload": {"a": 1, "b": 2}, "priority": 9},
                  {"capability": "ingest", "payload": {"a": 1, "b": 2}}):
        r = api.post("/api/v1/tasks", {**other, "idempotency_key": "k1"}, format="json")
        assert_json_4xx(r, 409, "idempotency_key_reused", "k1", first.json()["id"])
    assert Task.objects.count() == 1


# --- outcomes an agent reports: storable or refused ------------------------------------------

def _running_task(agent_id="a1"):
    from regions.services.tasks.claim import task_claim
    from regions.services.tasks.submit import task_submit

    reg = factories.agent(agent_id)
    user, _ = factories.caller("owner")
    sub = task_submit(submitted_by=user, capability="echo", payload={"x": 1})
    task = Task.objects.get(id=sub.task.id)
    claim = task_claim(task_id=str(task.id), attempt=task.attempt, agent_id=agent_id,
                       capabilities=["echo"], claim_id="c1")
    assert claim.run
    return reg, task


@pytest.mark.parametrize("result", [{"s": "a\x00b"}, {"s": "\ud800"}, nested(MAX_DEPTH + 3)])
def test_a_report_with_an_unstorable_result_is_400_and_the_task_keeps_running(redis_clean, result):
    reg, task = _running_task()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reg.token}")
    raw = json.dumps({"task_id": str(task.id), "attempt": task.attempt, "kind": "success",
                      "body": {"result": result}}).encode()
    assert_json_4xx(post_raw(client, "/api/v1/agents/a1/report", raw), 400, "body")
    assert Task.objects.get(id=task.id).status == Task.Status.RUNNING


# --- dead letters: recorded, bounded, visible in the admin -----------------------------------

@pytest.mark.parametrize("kwargs,reason", [
    ({}, "agent_id"),
    ({"agent_id": "a\x00", "kind": "success"}, "agent_id"),
    ({"agent_id": "a1", "kind": "bogus"}, "kind"),
    ({"agent_id": "a1", "kind": "success", "task_id": "../../etc", "attempt": 1}, "task_id"),
    ({"agent_id": "a1", "kind": "success", "task_id": "7f1c2a8e-0000-4000-8000-000000000000", "attempt": True},
     "attempt"),
])
def test_a_message_on_the_reports_queue_that_is_not_a_report_is_a_dead_letter(redis_clean, region_sink, kwargs,
                                                                                 reason):
    factories.agent("a1")
    assert reports.report_ingest_message(args=(), kwargs=kwargs, message_id="m1") is False
    letter = DeadLetter.objects.get()
    assert letter.source == "orchestrator" and letter.queue == "meridian.reports" and reason in letter.reason


def test_a_report_with_a_wrong_signature_is_a_dead_letter_and_leaves_the_task_alone(redis_clean, region_sink):
    reg, task = _running_task()
    body = {"error": "forged", "retryable": False}
    sig = report_signature(key="not-the-key", kind="failure", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest_message(args=(), kwargs={"agent_id": "a1", "kind": "failure",
                                                          "task_id": str(task.id), "attempt": 1, "body": body,
                                                          "sig": sig}) is False
    assert Task.objects.get(id=task.id).status == Task.Status.RUNNING
    letter = DeadLetter.objects.get()
    assert "signature" in letter.reason and letter.task_id == str(task.id)


def test_a_good_report_over_the_broker_still_applies(redis_clean, region_sink):
    reg, task = _running_task()
    body = {"result": {"echo": 1}, "started_at": 1.0}
    sig = report_signature(key=reg.report_key, kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest_message(args=(), kwargs={"agent_id": "a1", "kind": "success",
                                                          "task_id": str(task.id), "attempt": 1, "body": body,
                                                          "sig": sig}) is True
    assert Task.objects.get(id=task.id).status == Task.Status.SUCCEEDED
    assert not DeadLetter.objects.exists()


def test_a_clock_job_sent_with_arguments_is_a_dead_letter_not_a_crash(redis_clean, region_sink):
    assert agent_reap_task.run("junk", extra=[1]) == {"skipped": "dead letter"}
    assert "takes no arguments" in DeadLetter.objects.get().reason


def test_dead_letter_text_is_bounded_and_storable(redis_clean, region_sink):
    deadletter.record(queue="q\x00", reason="r" * 5000, task_id="\ud800" * 100, body=b"\x00\xff" * 10_000)
    letter = DeadLetter.objects.get()
    assert len(letter.reason) == 500 and len(letter.excerpt) <= 2000 and "\x00" not in letter.excerpt


def test_dead_letters_are_rate_bounded_per_process(redis_clean, region_sink):
    for i in range(deadletter.RATE_PER_SECOND * 3):
        deadletter.record(queue="q", reason=f"garbage {i}")
    assert 1 <= DeadLetter.objects.count() <= deadletter.RATE_PER_SECOND * 2


def test_an_agent_reports_a_dead_letter_with_its_own_token_only(redis_clean):
    reg = factories.agent("a1")
    other = factories.agent("a2")
    letter = {"queue": "meridian.cap.echo", "reason": "cannot decode", "task_id": "x", "excerpt": "\x01garbage"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other.token}")
    assert client.post("/api/v1/agents/a1/dead-letters", letter, format="json").status_code == 403
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reg.token}")
    assert client.post("/api/v1/agents/a1/dead-letters", letter, format="json").status_code == 201
    row = DeadLetter.objects.get()
    assert row.source == "agent:a1" and row.reason == "cannot decode" and "\x01" not in row.excerpt


def test_dead_letters_are_listed_in_the_admin_read_only(redis_clean, region_sink):
    deadletter.record(queue="meridian.reports", reason="cannot decode: nested deeper than 72 levels",
                      task_id="t-1", body=b"[[[[")
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/regions/deadletter/")
    assert page.status_code == 200 and b"nested deeper than 72 levels" in page.content
    assert client.get("/admin/regions/deadletter/add/").status_code == 403


def test_an_agent_reporting_too_many_dead_letters_gets_429_with_retry_after(redis_clean, settings):
    settings.DEAD_LETTER_AGENT_RATE_PER_MINUTE = 5
    reg = factories.agent("a1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reg.token}")
    answers = [client.post("/api/v1/agents/a1/dead-letters", {"reason": f"garbage {i}"}, format="json")
               for i in range(8)]
    assert [r.status_code for r in answers] == [201] * 5 + [429] * 3
    assert answers[-1]["Retry-After"] and answers[-1].json()["error"] == "throttled"
    assert DeadLetter.objects.count() == 5


def test_dead_letters_are_pruned_by_age_and_by_count(redis_clean, settings):
    from datetime import timedelta

    from django.utils import timezone

    from regions.services.deadletters import dead_letters_prune

    settings.DEAD_LETTER_MAX_ROWS = 3
    old = DeadLetter.objects.create(source="orchestrator", queue="q", reason="old")
    DeadLetter.objects.filter(id=old.id).update(received_at=timezone.now() - timedelta(days=8))
    rows = [DeadLetter.objects.create(source="orchestrator", queue="q", reason=f"new {i}") for i in range(5)]
    assert dead_letters_prune(now=timezone.now()) == 3
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == ["new 2", "new 3", "new 4"]
    assert rows


def test_a_flood_of_agents_cannot_push_the_others_dead_letters_out_of_the_store(redis_clean, settings):
    """The count bound is shared by source (max-min fair): once, 300 agents
    registered with one token, each within its rate, flushed the genuine letters."""
    from django.utils import timezone

    from regions.services.deadletters import dead_letters_prune

    settings.DEAD_LETTER_MAX_ROWS = 20
    for i in range(3):
        DeadLetter.objects.create(source="orchestrator", queue="q", reason=f"ours {i}")
        DeadLetter.objects.create(source="agent:genuine", queue="q", reason=f"genuine {i}")
    for fake in range(5):
        for i in range(10):
            DeadLetter.objects.create(source=f"agent:fake{fake}", queue="q", reason=f"fake {fake} {i}")
    assert dead_letters_prune(now=timezone.now()) == 56 - 20
    kept = dict(DeadLetter.objects.values_list("source").annotate(n=Count("id")))
    assert kept["orchestrator"] >= 2 and kept["agent:genuine"] >= 2, kept  # at least 20 // 7 each
    assert all(kept[f"agent:fake{fake}"] <= 3 for fake in range(5)), kept
    assert DeadLetter.objects.filter(reason="genuine 2").exists()  # the newest of each source stay
