"""Tasks that can never run: a submitter may ask to be refused at once when no
agent would take the task (require_agent: 409 no_agent, nothing stored), and a
task left waiting for an agent fails with reason no_agent at its wait deadline
(tasks.<capability>.wait_deadline, else TASK_WAIT_DEADLINE): nothing waits forever."""
from datetime import timedelta

import pytest
from django.utils import timezone

from regions.clock import wait_deadline
from regions.clock.sweep import task_sweep
from regions.models import Agent, Task, TaskAttempt
from regions.services.config import current as config_services
from regions.services import task_events
from regions.services.agents.registry import agent_set_desired
from regions.services.config.parse import ConfigError, config_parse
from regions.services.tasks import dispatch, submit, waiting
from regions.services.tasks.claim import task_claim
from regions.services.tasks.retry import task_retry
from tests import factories
from tests.harness import wait_for

pytestmark = pytest.mark.django_db


def configure(monkeypatch, content: dict) -> None:
    cfg = config_services.EffectiveConfig(sha="abc", content=content)
    for module in (submit, waiting, wait_deadline):
        monkeypatch.setattr(module, "config_current", lambda **kw: cfg)


def waiting_since(capability: str, seconds_ago: float, **fields) -> Task:
    """A task that has waited `seconds_ago` since its attempt was sent."""
    task = Task.objects.create(capability=capability, timeout=10, max_attempts=3, status=Task.Status.WAITING,
                               status_reason="no live agent serves capability", **fields)
    then = timezone.now() - timedelta(seconds=seconds_ago)
    Task.objects.filter(id=task.id).update(created_at=then, dispatched_at=then)
    return task


# --- require_agent ----------------------------------------------------------------------

def test_require_agent_refuses_a_submission_nobody_serves_with_409_and_stores_nothing(api, sent, settings):
    r = api.post("/api/v1/tasks", {"capability": "nope", "require_agent": True}, format="json")
    assert r.status_code == 409, r.content
    body = r.json()
    assert body["error"] == "no_agent"
    assert f"no live agent serves capability 'nope' in region {settings.REGION_ID}" in body["detail"]
    assert Task.objects.count() == 0 and sent == []


def test_without_require_agent_the_same_submission_waits_and_says_until_when(api, sent, settings):
    settings.TASK_WAIT_DEADLINE = 3600
    before = timezone.now()
    r = api.post("/api/v1/tasks", {"capability": "nope"}, format="json")
    assert r.status_code == 201 and r.json()["status"] == "waiting"
    reason = r.json()["status_reason"]
    assert "no live agent serves capability nope" in reason and "fails (no_agent) at" in reason
    fails_at = (before + timedelta(seconds=3600)).strftime("%Y-%m-%dT%H:%M")
    assert fails_at in reason and len(reason) <= 255


def test_require_agent_refuses_batch_items_nobody_serves_and_stores_the_others(api, sent):
    factories.agent("a1", capabilities=("echo",))
    items = [
        {"capability": "nope", "require_agent": True},                  # 409 no_agent
        {"capability": "echo", "require_agent": True},                  # 201 queued
        {"capability": "nope"},                                         # 201 waiting
        {"capability": "nope", "require_agent": True, "idempotency_key": "k1"},  # 409 on the keyed path too
    ]
    r = api.post("/api/v1/tasks/batch", {"tasks": items}, format="json")
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert [x["status"] for x in results] == [409, 201, 201, 409]
    assert results[0]["error"] == "no_agent" and "'nope'" in results[0]["detail"]
    assert results[3]["error"] == "no_agent"
    assert [results[1]["task"]["status"], results[2]["task"]["status"]] == ["queued", "waiting"]
    assert sorted(Task.objects.values_list("capability", flat=True)) == ["echo", "nope"]
    assert not Task.objects.filter(idempotency_key="k1").exists()


def test_require_agent_accepts_a_submission_a_live_agent_serves(api, sent, django_capture_on_commit_callbacks):
    factories.agent("a1", capabilities=("echo",))
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/tasks", {"capability": "echo", "require_agent": True}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "queued" and len(sent) == 1


def test_require_agent_refuses_a_target_agent_that_is_not_online_or_does_not_serve_it(api, sent):
    factories.agent("a1", capabilities=("echo",))
    r = api.post("/api/v1/tasks", {"capability": "echo", "target_agent": "ghost", "require_agent": True},
                 format="json")
    assert r.status_code == 409 and r.json()["error"] == "no_agent"
    assert "target agent ghost is not online" in r.json()["detail"]
    r = api.post("/api/v1/tasks", {"capability": "sleep", "target_agent": "a1", "require_agent": True},
                 format="json")
    assert r.status_code == 409 and "target agent a1 does not serve sleep" in r.json()["detail"]
    r = api.post("/api/v1/tasks", {"capability": "echo", "target_agent": "a1", "require_agent": True},
                 format="json")
    assert r.status_code == 201 and r.json()["status"] == "queued"
    assert Task.objects.count() == 1


def test_require_agent_refuses_when_the_only_agents_serving_it_are_cordoned(api, sent):
    factories.agent("a1", capabilities=("echo",))
    agent_set_desired(agent_id="a1", desired=Agent.Desired.CORDONED)
    r = api.post("/api/v1/tasks", {"capability": "echo", "require_agent": True}, format="json")
    assert r.status_code == 409 and r.json()["error"] == "no_agent"
    assert "cordoned or draining (a1)" in r.json()["detail"]
    assert Task.objects.count() == 0


def test_a_refused_require_agent_submission_spends_no_rate_limit(api, sent, monkeypatch):
    configure(monkeypatch, {"tasks": {"nope": {"rate_limit": "1/h"}}})
    for _ in range(3):
        r = api.post("/api/v1/tasks", {"capability": "nope", "require_agent": True}, format="json")
        assert r.status_code == 409
    assert api.post("/api/v1/tasks", {"capability": "nope"}, format="json").status_code == 201


@pytest.mark.parametrize("value", ["perhaps", 0, 1, "true", None])
def test_require_agent_must_be_a_json_boolean(api, sent, value):
    r = api.post("/api/v1/tasks", {"capability": "echo", "require_agent": value}, format="json")
    assert r.status_code == 400 and "require_agent" in r.json()["fields"]


# --- the wait deadline ------------------------------------------------------------------

def test_the_sweeper_fails_a_task_waiting_past_its_deadline_with_no_agent(redis_clean, sent, settings):
    settings.TASK_WAIT_DEADLINE = 60
    factories.agent("a1", capabilities=("echo",))
    old = waiting_since("nope", 61)
    young = waiting_since("nope", 30)
    queued = Task.objects.create(capability="nope", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    Task.objects.filter(id=queued.id).update(created_at=timezone.now() - timedelta(hours=1),
                                             dispatched_at=timezone.now())
    backlog = Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    Task.objects.filter(id=backlog.id).update(created_at=timezone.now() - timedelta(hours=1),
                                              dispatched_at=timezone.now() - timedelta(hours=1))
    result = task_sweep()
    assert result["no_agent"] == 1
    backlog.refresh_from_db()
    assert backlog.status == Task.Status.QUEUED  # an agent serves it: an old queue is no reason to fail
    old.refresh_from_db()
    assert old.status == Task.Status.FAILED and old.status_reason == "no_agent" and old.finished_at
    assert old.error.startswith("no_agent:") and "'nope'" in old.error and "60 s" in old.error
    young.refresh_from_db()
    assert young.status == Task.Status.WAITING
    queued.refresh_from_db()
    # a queued task is not the deadline's business (the sweep only moved it to waiting: nobody serves it)
    assert queued.status == Task.Status.WAITING and "fails (no_agent) 60 s after it was sent" in queued.status_reason
    assert task_sweep()["no_agent"] == 0  # done once


def test_the_deadline_of_the_capability_in_the_configuration_wins(redis_clean, sent, settings, monkeypatch):
    settings.TASK_WAIT_DEADLINE = 3600
    configure(monkeypatch, {"tasks": {"short": {"wait_deadline": 5}, "long": {"wait_deadline": 86400}}})
    short = waiting_since("short", 10)
    long = waiting_since("long", 7200)
    other = waiting_since("other", 7200)
    other_young = waiting_since("other", 10)
    assert task_sweep()["no_agent"] == 2
    statuses = {t.capability + ("_young" if t.id == other_young.id else ""): t.status
                for t in Task.objects.all()}
    assert statuses == {"short": "failed", "long": "waiting", "other": "failed", "other_young": "waiting"}
    assert "5 s" in Task.objects.get(id=short.id).error
    assert "3600 s" in Task.objects.get(id=other.id).error
    assert Task.objects.get(id=long.id).status == Task.Status.WAITING


def test_the_wait_counts_from_the_current_attempts_send_not_the_submit(redis_clean, sent, settings):
    """A task retried (or requeued) long after its submit waits its full deadline again."""
    settings.TASK_WAIT_DEADLINE = 60
    retried = waiting_since("nope", 10, attempt=2)
    Task.objects.filter(id=retried.id).update(created_at=timezone.now() - timedelta(days=3))
    assert task_sweep()["no_agent"] == 0
    retried.refresh_from_db()
    assert retried.status == Task.Status.WAITING


def test_a_task_retried_after_failing_with_no_agent_waits_its_full_deadline_again(
        redis_clean, sent, settings, django_capture_on_commit_callbacks):
    settings.TASK_WAIT_DEADLINE = 60
    task = waiting_since("nope", 3600)
    assert task_sweep()["no_agent"] == 1
    task.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        task = task_retry(task=task)
    assert task.status == Task.Status.WAITING and task.attempt == 2 and "fails (no_agent) at" in task.status_reason
    assert task_sweep()["no_agent"] == 0
    task.refresh_from_db()
    assert task.status == Task.Status.WAITING


def test_an_attempt_the_broker_has_not_taken_yet_is_not_counted_as_waiting_for_an_agent(
        redis_clean, settings, monkeypatch):
    settings.TASK_WAIT_DEADLINE = 60

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch.app, "send_task", refuse)
    unsent = waiting_since("nope", 3600)
    Task.objects.filter(id=unsent.id).update(dispatched_at=None)
    assert task_sweep()["no_agent"] == 0  # the sweeper tried to send it, and failed
    unsent.refresh_from_db()
    assert unsent.status == Task.Status.WAITING and unsent.dispatched_at is None


def test_a_waiting_task_an_agent_now_serves_is_woken_not_failed(redis_clean, sent, settings):
    settings.TASK_WAIT_DEADLINE = 60
    task = waiting_since("echo", 3600)
    factories.agent("a1", capabilities=("echo",))
    result = task_sweep()
    assert result["woke"] == 1 and result["no_agent"] == 0
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED


def test_a_task_waiting_for_its_online_target_agent_serving_it_is_not_failed(redis_clean, sent, settings):
    settings.TASK_WAIT_DEADLINE = 60
    factories.agent("a1", capabilities=("echo",))
    busy_target = waiting_since("echo", 3600, target_agent="a1")
    gone_target = waiting_since("echo", 3600, target_agent="ghost")
    wrong_target = waiting_since("sleep", 3600, target_agent="a1")  # a1 is online but never runs it
    assert task_sweep()["no_agent"] == 2
    busy_target.refresh_from_db()
    gone_target.refresh_from_db()
    wrong_target.refresh_from_db()
    assert busy_target.status == Task.Status.WAITING
    assert gone_target.status == Task.Status.FAILED and "target agent ghost" in gone_target.error
    assert wrong_target.status == Task.Status.FAILED and "target agent a1" in wrong_target.error


def test_a_task_claimed_at_the_deadline_is_never_failed(redis_clean, sent, settings):
    """The claim and the deadline are both fenced on the row's status: whichever
    comes second changes nothing."""
    settings.TASK_WAIT_DEADLINE = 60
    task = waiting_since("nope", 3600)
    assert task_claim(task_id=task.id, attempt=1, agent_id="late").run
    assert task_sweep()["no_agent"] == 0
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING

    other = waiting_since("nope", 3600)
    assert task_sweep()["no_agent"] == 1
    claim = task_claim(task_id=other.id, attempt=1, agent_id="late")
    assert not claim.run and "failed" in claim.reason


def test_an_open_attempt_of_a_task_failed_by_the_deadline_is_closed_as_failed(redis_clean, sent, settings):
    settings.TASK_WAIT_DEADLINE = 60
    task = waiting_since("nope", 3600)
    TaskAttempt.objects.create(task=task, number=1, agent="lost", started_at=timezone.now() - timedelta(hours=1))
    assert task_sweep()["no_agent"] == 1
    attempt = TaskAttempt.objects.get(task=task)
    assert attempt.outcome == TaskAttempt.Outcome.FAILED and attempt.error.startswith("no_agent:")


def test_tasks_failed_by_the_deadline_wake_their_long_poll_waiters(
        redis_clean, sent, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.TASK_WAIT_DEADLINE = 60
    monkeypatch.setattr(task_events, "_paused_until", 0.0)
    task = waiting_since("nope", 3600)
    pubsub = redis_clean.pubsub()
    pubsub.subscribe(task_events.channel())
    assert wait_for(lambda: pubsub.get_message(timeout=0.1), 10, what="subscribed")["type"] == "subscribe"
    with django_capture_on_commit_callbacks(execute=True):
        assert task_sweep()["no_agent"] == 1
    message = wait_for(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), 10,
                       what="a task-finished message")
    data = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
    assert str(task.id) in data.split()
    pubsub.close()


def test_the_sweeper_fails_at_most_one_batch_per_tick(redis_clean, sent, settings):
    settings.TASK_WAIT_DEADLINE = 60
    for _ in range(5):
        waiting_since("nope", 3600)
    assert task_sweep(batch=3)["no_agent"] == 3
    assert task_sweep(batch=3)["no_agent"] == 2


@pytest.mark.parametrize("value,ok", [(1, True), (2_592_000, True), (0, False), (2_592_001, False), ("1h", False)])
def test_the_configuration_takes_a_wait_deadline_in_seconds(value, ok):
    files = {"global.yaml": f"schema_version: 1\ntasks:\n  nope:\n    wait_deadline: {value!r}\n"}
    if ok:
        assert config_parse(files)["tasks"]["nope"]["wait_deadline"] == value
    else:
        with pytest.raises(ConfigError, match="wait_deadline"):
            config_parse(files)


# --- on a real region ---------------------------------------------------------------------

@pytest.mark.integration
def test_a_task_nobody_serves_fails_with_no_agent_by_itself_on_a_real_region(fresh_region):
    region = fresh_region(TASK_WAIT_DEADLINE="2")
    refused = region.call("POST", "/api/v1/tasks", json={"capability": "nope", "require_agent": True})
    assert refused.status_code == 409 and refused.json()["error"] == "no_agent", refused.text
    task = region.submit("nope", {})
    assert task["status"] == "waiting" and "fails (no_agent) at" in task["status_reason"]
    # A caller long-polling it is answered when the deadline fails it, not left hanging.
    done = wait_for(lambda: (t := region.call("GET", f"/api/v1/tasks/{task['id']}?wait=8").json())["status"]
                    == "failed" and t, 90, what="the long-poll answered with the failed task")
    assert done["status_reason"] == "no_agent"
    assert done["error"].startswith("no_agent:") and "'nope'" in done["error"] and "2 s" in done["error"]
    assert region.db_query("SELECT count(*) FROM regions_task") == [(1,)]
