"""POST /api/v1/tasks/batch: each item answered as the single submission would
answer it; the accepted ones stored in one transaction and each sent once."""
import pytest
from rest_framework.test import APIClient

from regions.models import Task
from regions.services.config import current as config_services
from regions.services.tasks import dispatch, submit, waiting
from tests import factories

pytestmark = pytest.mark.django_db


def batch(api, items, **kwargs):
    return api.post("/api/v1/tasks/batch", {"tasks": items}, format="json", **kwargs)


def test_accepted_items_are_stored_and_sent_once_each_after_the_commit(api, sent, django_capture_on_commit_callbacks,
                                                                      settings):
    settings.TENANT_WINDOW_MIN = 50  # all within the caller's fair share (test_fair_dispatch.py holds the rest)
    factories.agent("a1", capabilities=("echo",))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r = batch(api, [{"capability": "echo", "payload": {"i": i}} for i in range(50)])
    assert r.status_code == 200 and r.json()["accepted"] == 50 and r.json()["refused"] == 0
    assert len(callbacks) == 1  # one commit for the whole batch
    ids = [item["task"]["id"] for item in r.json()["results"]]
    assert [item["index"] for item in r.json()["results"]] == list(range(50))
    stored = {str(t.id): t for t in Task.objects.all()}
    assert set(ids) == set(stored) and all(t.dispatched_at is not None for t in stored.values())
    assert {t.status for t in stored.values()} == {Task.Status.QUEUED}
    assert sorted(m["task_id"] for m in sent) == sorted(f"{i}:1" for i in ids)
    assert stored[ids[7]].payload == {"i": 7} and stored[ids[7]].submitted_by == api.user
    # and each is visible to its owner like any task
    assert api.get(f"/api/v1/tasks/{ids[7]}").json()["payload"] == {"i": 7}


def test_each_item_gets_its_own_answer(api, sent, monkeypatch, django_capture_on_commit_callbacks, settings):
    settings.TASK_PAYLOAD_LIMIT_BYTES = 1000
    cfg = config_services.EffectiveConfig(sha="abc", content={"blocklist": {"capabilities": ["banned"]}})
    monkeypatch.setattr(submit, "config_current", lambda **kw: cfg)
    monkeypatch.setattr(waiting, "config_current", lambda **kw: cfg)
    first = api.post("/api/v1/tasks", {"capability": "echo", "idempotency_key": "k1"}, format="json").json()
    items = [
        {"capability": "echo"},                                   # 201, waiting (nobody serves it)
        {"capability": "Bad Name"},                               # 400 naming the field
        "not an object",                                          # 400
        {"capability": "banned"},                                 # 403 blocklisted
        {"capability": "echo", "payload": {"x": "y" * 2000}},     # 413
        {"capability": "echo", "idempotency_key": "k1"},          # 200, the first task
        {"capability": "echo", "idempotency_key": "k1", "priority": 9},  # 409, another request
        None,                                                     # 400, the others still answered
        {"capability": 7},                                        # 400, a number is not a name
    ]
    with django_capture_on_commit_callbacks(execute=True):
        r = batch(api, items)
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 400, 400, 403, 413, 200, 409, 400, 400]
    assert results[0]["task"]["status"] == "waiting"
    assert "capability" in results[1]["detail"]
    assert results[3]["error"] == "permission_denied" and "banned" in results[3]["detail"]
    assert results[4]["error"] == "payload_too_large"
    assert results[5]["task"] == {"id": first["id"], "url": first["url"], "status": first["status"], "created": False}
    assert results[6]["error"] == "idempotency_key_reused"
    assert "JSON object" in results[7]["detail"]
    assert "string" in str(results[8]["detail"]["capability"])
    assert (r.json()["accepted"], r.json()["refused"]) == (2, 7)
    assert Task.objects.count() == 2  # the first single submission and item 0


@pytest.mark.parametrize("body,problem", [
    ({"tasks": []}, "tasks"), ({"tasks": "x"}, "tasks"), ({}, "tasks"),
    ({"tasks": [{"capability": "echo"}] * 501}, "tasks"),
])
def test_a_malformed_batch_is_400_and_stores_nothing(api, sent, body, problem):
    r = api.post("/api/v1/tasks/batch", body, format="json")
    assert r.status_code == 400 and problem in r.json()["fields"]
    assert Task.objects.count() == 0 and not sent


def test_a_batch_needs_a_credential(redis_clean):
    r = APIClient().post("/api/v1/tasks/batch", {"tasks": [{"capability": "echo"}]}, format="json")
    assert r.status_code == 401 and Task.objects.count() == 0


def test_a_broker_refusal_leaves_the_batch_to_the_sweeper(api, monkeypatch, django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(dispatch.app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        r = batch(api, [{"capability": "echo"} for _ in range(3)])
    assert r.json()["accepted"] == 3
    assert Task.objects.filter(dispatched_at__isnull=True).count() == 3  # nothing lost: the outbox has them


def test_keyed_items_are_stored_together_and_a_key_repeated_or_raced_answers_its_first_task(
        api, sent, monkeypatch, django_capture_on_commit_callbacks, settings):
    settings.TENANT_WINDOW_MIN = 50  # all within the caller's fair share
    factories.agent("a1", capabilities=("echo",))
    items = [{"capability": "echo", "idempotency_key": f"k{i}", "payload": {"i": i}} for i in range(3)]
    items += [{"capability": "echo", "idempotency_key": "k0", "payload": {"i": 0}},   # 200: item 0's task
              {"capability": "echo", "idempotency_key": "k1", "payload": {"i": 9}}]   # 409: another request
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r = batch(api, items)
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 201, 200, 409], results
    assert len(callbacks) == 1  # one commit for the batch, keys and all
    assert results[3]["task"]["id"] == results[0]["task"]["id"]
    assert Task.objects.count() == 3 and len(sent) == 3
    # A concurrent request stores k9 between this batch's lookup and its INSERT:
    # the INSERT skips it, and the item is answered with the winner's task.
    winner = {}
    real_filter = Task.objects.filter

    def lookup_then_race(*args, **kwargs):
        result = real_filter(*args, **kwargs)
        if "idempotency_key__in" in kwargs and not winner:
            result = list(result)  # the batch's lookup has run: k9 is not there yet
            winner["task"] = Task.objects.create(capability="echo", timeout=10, max_attempts=1,
                                                 status=Task.Status.QUEUED, submitted_by=api.user,
                                                 idempotency_key="k9",
                                                 request_digest=submit.request_digest(
                                                     capability="echo", payload={}, priority=5, timeout=None,
                                                     max_attempts=None, target_agent=""))
        return result

    monkeypatch.setattr(Task.objects, "filter", lookup_then_race)
    with django_capture_on_commit_callbacks(execute=True):
        r = batch(api, [{"capability": "echo", "idempotency_key": "k9"}, {"capability": "echo"}])
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 201], results
    assert results[0]["task"]["id"] == str(winner["task"].id)
    assert len(sent) == 4  # the unkeyed one only
