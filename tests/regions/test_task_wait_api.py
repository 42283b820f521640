"""Long-poll requests in-process (the views' half of waiting: what they answer and
when they ask the ASGI layer to hold the answer), and the task-finished
publisher on the real Redis. Holding itself runs on real servers:
tests/regions/test_task_wait.py."""
import uuid

import pytest
from rest_framework.test import APIClient

from project.waiting import WAIT_KEY, WaitAsk
from regions.models import Task
from regions.services import task_events
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.outcome import task_fail, task_succeed
from regions.services.tasks.requeue import tasks_requeue_for_agents
from tests import factories

pytestmark = pytest.mark.django_db


def make_task(user, **fields) -> Task:
    defaults = dict(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED, submitted_by=user)
    return Task.objects.create(**{**defaults, **fields})


def asked(response) -> WaitAsk | None:
    return response.wsgi_request.META.get(WAIT_KEY)


# --- GET /api/v1/tasks/<id>?wait= ---------------------------------------------------

@pytest.mark.parametrize("wait", ["61", "-1", "abc", "nan", "inf", "", "1e9"])
def test_a_wait_that_is_not_a_number_from_0_to_60_is_400_naming_wait(api, wait):
    task = make_task(api.user)
    r = api.get(f"/api/v1/tasks/{task.id}", {"wait": wait})
    assert r.status_code == 400, r.content
    assert r.json()["error"] == "invalid" and list(r.json()["fields"]) == ["wait"], r.json()


def test_waiting_on_an_active_task_asks_to_be_held_for_that_task_and_time(api):
    task = make_task(api.user)
    r = api.get(f"/api/v1/tasks/{task.id}", {"wait": "12.5"})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert asked(r) == WaitAsk(ids=(str(task.id),), seconds=12.5)


def test_a_wait_is_held_no_longer_than_the_operators_bound(api, settings):
    settings.WAIT_HOLD_MAX_SECONDS = 25  # under a proxy's 30 s idle timeout
    task = make_task(api.user)
    assert asked(api.get(f"/api/v1/tasks/{task.id}", {"wait": "60"})) == WaitAsk(ids=(str(task.id),), seconds=25)
    r = api.post("/api/v1/tasks/wait", {"ids": [str(task.id)], "wait": 40}, format="json")
    assert asked(r).seconds == 25


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_waiting_on_a_final_task_answers_at_once(api, status):
    task = make_task(api.user, status=status)
    r = api.get(f"/api/v1/tasks/{task.id}", {"wait": "30"})
    assert r.status_code == 200 and r.json()["status"] == status and asked(r) is None


def test_without_wait_or_with_wait_0_nothing_is_held(api):
    task = make_task(api.user)
    assert asked(api.get(f"/api/v1/tasks/{task.id}")) is None
    assert asked(api.get(f"/api/v1/tasks/{task.id}", {"wait": "0"})) is None


def test_waiting_on_another_callers_task_is_404_as_without_wait(api):
    other, _ = factories.caller("other")
    task = make_task(other)
    assert api.get(f"/api/v1/tasks/{task.id}", {"wait": "5"}).status_code == 404


def test_a_task_says_which_region_holds_it(api, settings):
    task = make_task(api.user)
    assert api.get(f"/api/v1/tasks/{task.id}").json()["region_id"] == settings.REGION_ID


# --- POST /api/v1/tasks/wait ----------------------------------------------------------

def test_wait_many_sorts_ids_into_done_pending_and_missing_and_answers_at_once(api):
    other, _ = factories.caller("other")
    done = make_task(api.user, status=Task.Status.SUCCEEDED, result={"n": 1})
    pending = make_task(api.user)
    theirs = make_task(other, status=Task.Status.SUCCEEDED)
    nowhere = uuid.uuid4()
    r = api.post("/api/v1/tasks/wait", {"ids": [str(pending.id), str(done.id), str(theirs.id), str(nowhere),
                                                str(pending.id)], "wait": 30}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert [t["id"] for t in body["done"]] == [str(done.id)] and body["done"][0]["result"] == {"n": 1}
    assert body["pending"] == [str(pending.id)]
    assert body["missing"] == [str(theirs.id), str(nowhere)]  # another caller's task is not this caller's
    assert asked(r) is None


def test_wait_many_with_a_missing_id_answers_at_once(api):
    pending = make_task(api.user)
    r = api.post("/api/v1/tasks/wait", {"ids": [str(pending.id), str(uuid.uuid4())], "wait": 30}, format="json")
    assert r.status_code == 200 and r.json()["pending"] == [str(pending.id)] and asked(r) is None


def test_wait_many_with_every_id_pending_asks_to_be_held_for_those_ids(api):
    a, b = make_task(api.user), make_task(api.user, status=Task.Status.RUNNING, agent="a1")
    r = api.post("/api/v1/tasks/wait", {"ids": [str(a.id), str(b.id)], "wait": 20}, format="json")
    assert r.status_code == 200 and r.json() == {"done": [], "pending": [str(a.id), str(b.id)], "missing": []}
    assert asked(r) == WaitAsk(ids=(str(a.id), str(b.id)), seconds=20.0)


@pytest.mark.parametrize("body, field", [
    ({"ids": ["x"], "wait": 5}, "ids"),
    ({"ids": [], "wait": 5}, "ids"),
    ({"wait": 5}, "ids"),
    ({"ids": [str(uuid.uuid4()) for _ in range(1001)], "wait": 5}, "ids"),
    ({"ids": [str(uuid.uuid4())], "wait": 61}, "wait"),
    ({"ids": [str(uuid.uuid4())], "wait": -1}, "wait"),
    ({"ids": [str(uuid.uuid4())], "wait": "5"}, "wait"),
    ({"ids": [str(uuid.uuid4())], "wait": True}, "wait"),
    ({"ids": [str(uuid.uuid4())], "wait": None}, "wait"),
])
def test_wait_many_refuses_bad_input_with_400_naming_the_field(api, body, field):
    r = api.post("/api/v1/tasks/wait", body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"] == "invalid" and list(r.json()["fields"]) == [field], r.json()


def test_wait_many_needs_a_credential(redis_clean):
    r = APIClient().post("/api/v1/tasks/wait", {"ids": [str(uuid.uuid4())]}, format="json")
    assert r.status_code == 401


# --- the publisher ------------------------------------------------------------------------

@pytest.fixture
def finished(redis_clean):
    """The ids published on the region's task-finished channel, as a list."""
    pubsub = redis_clean.pubsub()
    pubsub.subscribe(task_events.channel())
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def read() -> list[str]:
        ids = []
        while (message := pubsub.get_message(timeout=0.2)) is not None:
            ids += message["data"].split()
        return ids

    yield read
    pubsub.close()


def test_every_final_transition_publishes_its_task_and_a_retry_does_not(finished, django_capture_on_commit_callbacks):
    succeeded = make_task(None, status=Task.Status.RUNNING, agent="a1")
    failed = make_task(None, status=Task.Status.RUNNING, agent="a1", attempt=3)
    retrying = make_task(None, status=Task.Status.RUNNING, agent="a1")
    cancelled = make_task(None)
    lost = make_task(None, status=Task.Status.RUNNING, agent="gone", attempt=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert task_succeed(task_id=succeeded.id, attempt=1, agent_id="a1", result={})
        assert task_fail(task_id=failed.id, attempt=3, agent_id="a1", error="boom")
        assert task_fail(task_id=retrying.id, attempt=1, agent_id="a1", error="again")
        task_cancel(task=cancelled)
        tasks_requeue_for_agents(agent_ids=["gone"], reason="agent lost")
    assert sorted(finished()) == sorted(str(t.id) for t in (succeeded, failed, cancelled, lost))


def test_a_non_retryable_failure_is_final_and_published(finished, django_capture_on_commit_callbacks):
    task = make_task(None, status=Task.Status.RUNNING, agent="a1")
    with django_capture_on_commit_callbacks(execute=True):
        assert task_fail(task_id=task.id, attempt=1, agent_id="a1", error="bad input", retryable=False)
    assert finished() == [str(task.id)]


def test_nothing_is_published_before_the_commit_nor_after_a_rollback(finished, django_capture_on_commit_callbacks):
    task = make_task(None)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        task_events.task_finished_publish([task.id])
    assert finished() == []  # not yet: the transaction has not committed
    for callback in callbacks:
        callback()
    assert finished() == [str(task.id)]
    from django.db import transaction

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            task_events.task_finished_publish([task.id])
            raise RuntimeError("rolled back")
    assert finished() == []


def test_publishing_with_redis_down_is_dropped_quietly(settings, monkeypatch, django_capture_on_commit_callbacks):
    from regions.services import liveness

    monkeypatch.setattr(liveness, "client", lambda: __import__("redis").Redis(port=1, socket_connect_timeout=0.5))
    monkeypatch.setattr(task_events, "_paused_until", 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        task_events.task_finished_publish(["x"])  # no error: the waiters' recheck finds the task
    assert task_events._paused_until > 0


def test_the_recheck_query_names_only_final_tasks(api):
    final = [make_task(api.user, status=s) for s in ("succeeded", "failed", "cancelled")]
    active = [make_task(api.user, status=s) for s in ("waiting", "queued", "running", "retrying")]
    ids = [str(t.id) for t in final + active] + [str(uuid.uuid4())]
    assert task_events.task_finished_among(ids) == {str(t.id) for t in final}
