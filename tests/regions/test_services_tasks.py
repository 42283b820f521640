"""Fencing and the outbox: state only moves forward, nothing accepted is lost."""
import pytest
from django.conf import settings
from django.utils import timezone

from regions.clock.sweep import task_sweep
from regions.models import Agent, Task
from regions.services import reports
from regions.services.agents.heartbeat import heartbeat_record
from regions.services.agents.registry import (AuthError, agent_deregister, agent_register, agent_set_desired,
                                              report_key_for)
from regions.services.tasks import claim as claim_services
from regions.services.tasks import dispatch
from regions.services.tasks.claim import task_claim
from regions.services.tasks.dispatch import task_dispatch
from regions.services.tasks.outcome import retry_delay, task_fail, task_succeed
from regions.services.tasks.requeue import tasks_requeue_for_agents
from regions.services.tasks.submit import task_submit
from tests import factories
from wire.signing import report_signature

pytestmark = pytest.mark.django_db


def make_task(**fields) -> Task:
    defaults = dict(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    return Task.objects.create(**{**defaults, **fields})


def test_result_of_a_stale_attempt_is_ignored():
    task = make_task(attempt=2, status=Task.Status.RUNNING, agent="b")
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"x": 1}) is False
    assert task_succeed(task_id=task.id, attempt=2, agent_id="b", result={"x": 2}) is True
    task.refresh_from_db()
    assert task.result == {"x": 2}
    assert task_succeed(task_id=task.id, attempt=2, agent_id="b", result={"x": 3}) is False


def _requeued_from(agent_id: str) -> Task:
    """A task whose attempt 1 ran on agent_id, which was then lost: attempt 2 queued."""
    task = make_task()
    assert task_claim(task_id=task.id, attempt=1, agent_id=agent_id, capabilities=["echo"]).run
    assert tasks_requeue_for_agents(agent_ids=[agent_id], reason="agent missed its heartbeat TTL") == 1
    task.refresh_from_db()
    assert (task.status, task.attempt) == (Task.Status.QUEUED, 2)
    return task


def test_a_late_success_of_a_requeued_attempt_stands_while_the_next_is_unclaimed():
    """An agent killed after its handler finished, back after its TTL: its
    outbox delivers the outcome of attempt 1 after the reaper queued attempt 2.
    The work is done: it stands, and attempt 2 never runs."""
    task = _requeued_from("a")
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"x": 1}, capabilities=["echo"]) is True
    task.refresh_from_db()
    assert (task.status, task.attempt, task.agent, task.result, task.status_reason) == (
        Task.Status.SUCCEEDED, 1, "a", {"x": 1}, "")
    assert list(task.attempts.values_list("number", "agent", "outcome")) == [(1, "a", "succeeded")]
    assert task_claim(task_id=task.id, attempt=2, agent_id="b", capabilities=["echo"]).run is False
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"x": 2}, capabilities=["echo"]) is False


def test_a_late_success_is_fenced_out_once_the_next_attempt_is_claimed_or_from_another_agent():
    task = _requeued_from("a")
    assert task_succeed(task_id=task.id, attempt=1, agent_id="b", result={}, capabilities=["echo"]) is False
    assert task_claim(task_id=task.id, attempt=2, agent_id="b", capabilities=["echo"]).run
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"x": 1}, capabilities=["echo"]) is False
    task.refresh_from_db()
    assert (task.status, task.attempt, task.agent) == (Task.Status.RUNNING, 2, "b")
    assert task_succeed(task_id=task.id, attempt=2, agent_id="b", result={"x": 2}, capabilities=["echo"]) is True


def test_another_agent_cannot_complete_a_claimed_attempt():
    task = make_task(status=Task.Status.RUNNING, agent="a")
    assert task_succeed(task_id=task.id, attempt=1, agent_id="mallory", result={}) is False


def test_claim_of_a_cancelled_task_changes_nothing():
    task = make_task(status=Task.Status.CANCELLED)
    claim = task_claim(task_id=task.id, attempt=1, agent_id="a")
    assert claim.run is False and "already cancelled" in claim.reason


def test_a_superseded_attempt_is_never_granted():
    task = make_task(attempt=2)
    claim = task_claim(task_id=task.id, attempt=1, agent_id="a")
    assert claim.run is False and "superseded" in claim.reason
    assert task_claim(task_id=task.id, attempt=2, agent_id="a").run is True


def test_an_attempt_is_granted_to_one_agent_only():
    """A broker redelivery (dead consumer, visibility timeout) reaches a second
    agent while the first still runs the attempt: the second must skip it."""
    task = make_task()
    assert task_claim(task_id=task.id, attempt=1, agent_id="a").run is True
    again = task_claim(task_id=task.id, attempt=1, agent_id="b")
    # Which agent runs it is none of b's business.
    assert again.run is False and again.reason == "attempt 1 is already running on another agent"
    twice = task_claim(task_id=task.id, attempt=1, agent_id="a")  # nor twice on the same one
    assert twice.run is False and "already running on this agent" in twice.reason
    task.refresh_from_db()
    assert (task.status, task.agent) == (Task.Status.RUNNING, "a")


def test_a_claim_refusal_tells_an_agent_nothing_about_a_task_it_could_not_serve():
    """Any agent could learn which agent runs a task id, and its state."""
    task = make_task()
    assert task_claim(task_id=task.id, attempt=1, agent_id="a", capabilities=["echo"]).run is True
    for attempt in (1, 9):  # running on a; superseded
        stranger = task_claim(task_id=task.id, attempt=attempt, agent_id="b", capabilities=["resize"])
        assert stranger.run is False
        assert stranger.reason == f"no task {task.id} that agent b may run in region {settings.REGION_ID}"


def test_only_the_claiming_agent_reports_the_outcome():
    task = make_task()
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={}) is False  # never claimed
    task_claim(task_id=task.id, attempt=1, agent_id="a")
    assert task_succeed(task_id=task.id, attempt=1, agent_id="b", result={}) is False
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"ok": 1}) is True


def test_a_secret_is_resolved_for_the_claimed_attempt_only(monkeypatch):
    """The queued message carries no secret: the claim answer does."""
    from regions.services.config import current as config_services

    monkeypatch.setenv("INGEST_TOKEN", "s3cret-value")
    cfg = config_services.EffectiveConfig(sha="abc", content={"secrets": {"ingest": {
        "ref": "env:INGEST_TOKEN", "hosts": ["data.example.com"]}}})
    monkeypatch.setattr(claim_services, "config_current", lambda: cfg)
    task = make_task(payload={"auth_secret": "ingest", "source": "https://data.example.com/x.csv"})
    sent = []
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: sent.append(kw))
    assert task_dispatch(task_id=task.id)
    assert "s3cret-value" not in repr(sent)
    assert task_claim(task_id=task.id, attempt=1, agent_id="a").secrets == {"ingest": "s3cret-value"}


def test_failure_with_attempts_left_schedules_a_retry_with_backoff(settings):
    settings.TASK_RETRY_BACKOFF_BASE = 4
    task = make_task(status=Task.Status.RUNNING, agent="a")
    assert task_fail(task_id=task.id, attempt=1, agent_id="a", error="boom")
    task.refresh_from_db()
    assert (task.status, task.attempt, task.dispatched_at) == (Task.Status.RETRYING, 2, None)
    assert 3 < (task.not_before - timezone.now()).total_seconds() <= 4
    assert retry_delay(3) == 16


def test_non_retryable_failure_fails_at_once():
    task = make_task(status=Task.Status.RUNNING, agent="a")
    task_fail(task_id=task.id, attempt=1, agent_id="a", error="bad input", retryable=False)
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED and task.attempt == 1


def test_a_failed_send_keeps_the_task_for_the_sweeper(redis_clean, monkeypatch, django_capture_on_commit_callbacks):
    """The outbox logic; the real broker outage is in test_integration_faults."""
    from kombu.exceptions import OperationalError

    user, _ = factories.caller()
    sent = []

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch.app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        sub = task_submit(submitted_by=user, capability="echo", payload={})
    sub.task.refresh_from_db()
    assert sub.task.dispatched_at is None
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: sent.append(kw))
    Task.objects.filter(id=sub.task.id).update(created_at=timezone.now() - timezone.timedelta(seconds=5))
    assert task_sweep()["sent"] == 1
    sub.task.refresh_from_db()
    assert sub.task.dispatched_at is not None and sent[0]["task_id"] == f"{sub.task.id}:1"
    assert task_sweep()["sent"] == 0  # sent once, not again


def test_report_with_a_forged_signature_is_dropped(redis_clean):
    reg = factories.agent("a1")
    task = make_task(status=Task.Status.RUNNING, agent="a1")
    body = {"result": {"ok": True}}
    forged = report_signature(key="guess", kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest(agent_id="a1", kind="success", task_id=str(task.id), attempt=1,
                                 body=body, sig=forged) is False
    key = report_key_for(agent_id="a1", token_digest=Agent.objects.get(agent_id="a1").token_hash)
    assert reg.report_key == key
    good = report_signature(key=key, kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest(agent_id="a1", kind="success", task_id=str(task.id), attempt=1,
                                 body=body, sig=good) is True


def test_one_agent_cannot_sign_for_another(redis_clean):
    a = factories.agent("a1")
    factories.agent("a2")
    task = make_task()
    body = {"result": {"ok": True}}
    sig = report_signature(key=a.report_key, kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest(agent_id="a2", kind="success", task_id=str(task.id), attempt=1,
                                 body=body, sig=sig) is False


def test_waiting_tasks_wake_when_an_agent_serving_them_registers(redis_clean):
    user, _ = factories.caller()
    sub = task_submit(submitted_by=user, capability="file_processing", payload={})
    assert sub.task.status == Task.Status.WAITING
    factories.agent("fp", capabilities=["file_processing"])
    assert task_sweep()["woke"] == 1


def test_an_agent_cannot_report_for_a_task_it_could_not_have_received(redis_clean):
    mallory = factories.agent("mallory", capabilities=["echo"])
    task = make_task(capability="data_ingestion")
    body = {"result": {"forged": True}}
    for kind, data in (("failure", {"error": "forged"}), ("success", body)):
        sig = report_signature(key=mallory.report_key, kind=kind, task_id=str(task.id), attempt=1, body=data)
        assert reports.report_ingest(agent_id="mallory", kind=kind, task_id=str(task.id), attempt=1,
                                     body=data, sig=sig) is False
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED and task.result is None


def test_a_revoked_agent_loses_its_credential(redis_clean):
    reg = factories.agent("a1")
    agent_set_desired(agent_id="a1", desired="stopped")
    with pytest.raises(AuthError):
        heartbeat_record(agent_id="a1", raw_token=reg.token, busy=0)
    task = make_task()
    body = {"result": {"ok": True}}
    sig = report_signature(key=reg.report_key, kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest(agent_id="a1", kind="success", task_id=str(task.id), attempt=1, body=body,
                                 sig=sig) is False


def test_an_attempt_is_sent_once_even_when_dispatch_races(redis_clean, monkeypatch):
    sent = []
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: sent.append(kw["task_id"]))
    task = make_task()
    assert task_dispatch(task_id=task.id) is True
    assert task_dispatch(task_id=task.id) is False  # the sweeper's late copy
    assert sent == [f"{task.id}:1"]


def test_a_backlog_is_not_mistaken_for_lost_messages(redis_clean, monkeypatch, settings,
                                                      django_capture_on_commit_callbacks):
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    settings.TASK_UNCLAIMED_RESEND_AFTER = 60
    factories.agent("busy-1")
    Agent.objects.filter(agent_id="busy-1").update(busy=True)
    old = timezone.now() - timezone.timedelta(seconds=120)
    task = make_task(dispatched_at=old)
    assert task_sweep()["resent"] == 0  # every agent is busy: a queue, not a loss
    Agent.objects.filter(agent_id="busy-1").update(busy=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert task_sweep()["resent"] == 1  # an idle agent never took it: lost in flight
    task.refresh_from_db()
    # The same attempt again: a loss in flight spends no attempt, and the claim
    # grants the attempt once even if the first message turns up after all.
    assert task.attempt == 1 and task.dispatched_at is not None
    assert task_sweep()["resent"] == 0  # just sent: not lost again yet


def test_a_running_attempt_without_any_report_past_its_time_limit_is_retried(redis_clean, monkeypatch):
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    from wire.protocol import hard_time_limit

    started = timezone.now() - timezone.timedelta(seconds=hard_time_limit(10) + 31)
    task = make_task(status=Task.Status.RUNNING, agent="a", timeout=10, started_at=started)
    assert task_sweep()["overdue"] == 1
    task.refresh_from_db()
    assert task.status == Task.Status.RETRYING and task.attempt == 2 and "no result" in task.error


def test_tasks_of_an_agent_that_deregistered_are_requeued_after_a_grace(redis_clean, monkeypatch):
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    factories.agent("a1")
    task = make_task(status=Task.Status.RUNNING, agent="a1")
    agent_deregister(agent_id="a1")
    assert task_sweep()["orphaned"] == 0  # its last reports may still be on the way
    Agent.objects.filter(agent_id="a1").update(offline_since=timezone.now() - timezone.timedelta(seconds=11))
    assert task_sweep()["orphaned"] == 1
    task.refresh_from_db()
    assert (task.status, task.attempt) == (Task.Status.QUEUED, 2)


def test_re_registering_an_agent_requeues_what_its_previous_process_ran(redis_clean, django_capture_on_commit_callbacks):
    first = factories.agent("a1")
    task = make_task(status=Task.Status.RUNNING, agent="a1")
    with django_capture_on_commit_callbacks(execute=True):
        agent_register(agent_id="a1", capabilities=["echo"], current_token=first.token)
    task.refresh_from_db()
    assert task.attempt == 2 and "re-registered" in task.status_reason


def test_a_grant_lost_on_the_way_is_given_again_to_the_same_delivery_only():
    task = make_task(payload={"n": 1})
    first = task_claim(task_id=task.id, attempt=1, agent_id="a", claim_id="d1")
    again = task_claim(task_id=task.id, attempt=1, agent_id="a", claim_id="d1")
    assert first.run and again.run and again.payload == {"n": 1} and again.capability == "echo"
    assert not task_claim(task_id=task.id, attempt=1, agent_id="a", claim_id="d2").run  # a redelivery
    assert not task_claim(task_id=task.id, attempt=1, agent_id="b", claim_id="d1").run


def test_the_grant_names_the_work_from_the_database_not_the_message():
    task = make_task(capability="echo", payload={"source": "https://data.example.com/x.csv"}, timeout=7)
    grant = task_claim(task_id=task.id, attempt=1, agent_id="a", claim_id="d1")
    assert (grant.capability, grant.payload, grant.timeout) == ("echo", {"source": "https://data.example.com/x.csv"}, 7)


@pytest.mark.parametrize("body", [
    {"started_at": 1e20, "result": {}},
    {"started_at": "yesterday", "result": {}},
    {"result": {"records": [1, 2]}},
    {"result": {"records": [{"line": 1}]}},
    {"result": {"records": 5}},
    {"result": [1]},
])
def test_malformed_outcomes_are_refused_before_they_reach_the_task(body, redis_clean):
    reg = factories.agent("a1")
    task = make_task(status=Task.Status.RUNNING, agent="a1")
    with pytest.raises(reports.OutcomeInvalid):
        reports.outcome_clean(kind="success", body=body)
    sig = report_signature(key=reg.report_key, kind="success", task_id=str(task.id), attempt=1, body=body)
    assert reports.report_ingest(agent_id="a1", kind="success", task_id=str(task.id), attempt=1, body=body,
                                 sig=sig) is False  # dropped with a log line, never an exception
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING


def test_a_clock_job_skips_while_the_database_is_away_but_a_query_bug_still_raises():
    from django.db import OperationalError, ProgrammingError

    from regions.tasks import clock_job

    raised = []

    @clock_job
    def tick():
        raise raised[-1]

    raised.append(OperationalError("server closed the connection unexpectedly"))
    assert tick() == {"skipped": "database unavailable"}
    raised.append(ProgrammingError('relation "regions_task" does not exist'))
    with pytest.raises(ProgrammingError):
        tick()


def test_claim_and_success_paths_keep_the_same_fences_and_history():
    """PostgreSQL claims and succeeds in one statement each; the ORM path (SQLite,
    the embedded demo) must give the same answers and rows: this test runs on
    both (on SQLite in tests/test_storage_sqlite.py)."""
    mine = make_task(payload={"n": 1, "deep": {"x": [1, 2]}})
    theirs = make_task(capability="sleep")
    targeted = make_task(capability="sleep", target_agent="a")
    # a task of a capability the agent does not serve, or aimed at another agent
    assert task_claim(task_id=theirs.id, attempt=1, agent_id="a", capabilities=["echo"]).run is False
    assert task_claim(task_id=make_task(target_agent="b").id, attempt=1, agent_id="a",
                      capabilities=["echo"]).run is False
    grant = task_claim(task_id=mine.id, attempt=1, agent_id="a", capabilities=["echo"], claim_id="d1")
    assert (grant.run, grant.capability, grant.payload, grant.timeout) == (True, "echo", {"n": 1, "deep": {"x": [1, 2]}},
                                                                           10)
    assert task_claim(task_id=mine.id, attempt=1, agent_id="a", capabilities=["echo"], claim_id="d1").run
    assert not task_claim(task_id=mine.id, attempt=1, agent_id="a", capabilities=["echo"], claim_id="d2").run
    assert task_claim(task_id=targeted.id, attempt=1, agent_id="a", capabilities=["echo"]).run is True
    # outcomes: only the claimant, only the current attempt, only once
    assert task_succeed(task_id=mine.id, attempt=1, agent_id="b", result={}, capabilities=["echo"]) is False
    assert task_succeed(task_id=mine.id, attempt=2, agent_id="a", result={}, capabilities=["echo"]) is False
    assert task_succeed(task_id=mine.id, attempt=1, agent_id="a", result={"r": [1, {"s": "é"}]},
                        capabilities=["echo"], started_at=1_700_000_000.5) is True
    assert task_succeed(task_id=mine.id, attempt=1, agent_id="a", result={"r": 2}, capabilities=["echo"]) is False
    assert task_succeed(task_id=targeted.id, attempt=1, agent_id="a", result=None, capabilities=[]) is True
    mine.refresh_from_db()
    assert (mine.status, mine.agent, mine.result, mine.error) == (Task.Status.SUCCEEDED, "a", {"r": [1, {"s": "é"}]}, "")
    assert mine.started_at is not None and mine.finished_at >= mine.started_at
    attempts = list(mine.attempts.values_list("number", "agent", "outcome"))
    assert attempts == [(1, "a", "succeeded")]
    targeted.refresh_from_db()
    assert targeted.status == Task.Status.SUCCEEDED and targeted.result is None
    theirs.refresh_from_db()
    assert theirs.status == Task.Status.QUEUED and not theirs.attempts.exists()


def test_success_of_an_attempt_without_a_history_row_writes_one():
    task = make_task(status=Task.Status.RUNNING, agent="a", started_at=timezone.now())  # claimed before rows were kept
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a", result={"ok": True}) is True
    assert list(task.attempts.values_list("number", "agent", "outcome")) == [(1, "a", "succeeded")]
