"""Workflows in process, on the real PostgreSQL: each step an ordinary task,
the next step created in the transaction of the previous one's success, a join
that fires once, cancel, failure naming the step, retry, and the sweeper."""
import threading

import pytest
from django.db import connection

from regions.clock.sweep import task_sweep
from regions.models import Task, Workflow
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.claim import task_claim
from regions.services.tasks.outcome import task_fail, task_succeed
from regions.services.tasks.refusals import CapabilityRefused, InvalidState
from regions.services.tasks.retry import task_retry
from regions.services.workflows.cancel import workflow_cancel
from regions.services.workflows.retry import workflow_retry
from regions.services.workflows.submit import workflow_submit
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)  # on-commit sends run, threads see commits


def step(capability="echo", **payload) -> dict:
    return {"capability": capability, "payload": payload}


def tasks_of(workflow, index: int) -> list[Task]:
    return list(Task.objects.filter(workflow_step__workflow=workflow, workflow_step__index=index)
                .order_by("workflow_step__member"))


def run(task: Task, result, agent: str = "a1") -> bool:
    assert task_claim(task_id=task.id, attempt=task.attempt, agent_id=agent, capabilities=[task.capability]).run
    return task_succeed(task_id=task.id, attempt=task.attempt, agent_id=agent, result=result,
                        capabilities=[task.capability])


def fail(task: Task, agent: str = "a1") -> bool:
    task.refresh_from_db()
    assert task_claim(task_id=task.id, attempt=task.attempt, agent_id=agent, capabilities=[task.capability]).run
    return task_fail(task_id=task.id, attempt=task.attempt, agent_id=agent, error="boom", retryable=False,
                     capabilities=[task.capability])


@pytest.fixture
def user(redis_clean):
    return factories.caller()[0]


def test_a_chain_runs_in_order_each_step_receiving_its_payload_merged_with_the_previous_result(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(n=1), step(factor=3), step(last=True)]).workflow
    assert [len(tasks_of(workflow, i)) for i in range(3)] == [1, 0, 0]  # only the first step exists
    assert len(sent) == 1
    assert run(tasks_of(workflow, 0)[0], {"n": 2})
    second = tasks_of(workflow, 1)[0]
    assert second.payload == {"factor": 3, "n": 2}
    assert len(sent) == 2  # sent after the commit of the success
    assert run(second, "plain")
    third = tasks_of(workflow, 2)[0]
    assert third.payload == {"last": True, "previous": "plain"}
    assert run(third, {"done": 1})
    workflow.refresh_from_db()
    assert (workflow.status, workflow.result, workflow.error) == (Workflow.Status.SUCCEEDED, {"done": 1}, "")
    assert workflow.finished_at is not None


def test_the_step_after_a_group_receives_the_list_of_its_members_results_in_order(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[
        {"group": [step(i=i) for i in range(4)]}, step("echo", join=True)]).workflow
    members = tasks_of(workflow, 0)
    assert [m.payload for m in members] == [{"i": i} for i in range(4)]
    for member in reversed(members[1:]):
        assert run(member, {"r": member.payload["i"]})
        assert tasks_of(workflow, 1) == []  # the join waits for every member
    assert run(members[0], {"r": 0})
    [join] = tasks_of(workflow, 1)
    assert join.payload == {"join": True, "results": [{"r": 0}, {"r": 1}, {"r": 2}, {"r": 3}]}
    assert run(join, {"sum": 6})
    workflow.refresh_from_db()
    assert (workflow.status, workflow.result) == (Workflow.Status.SUCCEEDED, {"sum": 6})


def test_a_workflow_ending_with_a_group_has_the_list_of_results(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[{"group": [step(), step()]}]).workflow
    for index, member in enumerate(tasks_of(workflow, 0)):
        run(member, index)
    workflow.refresh_from_db()
    assert (workflow.status, workflow.result) == (Workflow.Status.SUCCEEDED, [0, 1])


def test_the_join_fires_exactly_once_when_members_succeed_at_the_same_moment(redis_clean, sent):
    user = factories.caller()[0]
    size = 12
    for _ in range(3):
        workflow = workflow_submit(submitted_by=user, steps=[{"group": [step(i=i) for i in range(size)]},
                                                             step(join=True)]).workflow
        members = tasks_of(workflow, 0)
        for member in members:
            assert task_claim(task_id=member.id, attempt=1, agent_id="a1", capabilities=["echo"]).run
        barrier = threading.Barrier(size)
        outcomes = []

        def succeed(member):
            try:
                barrier.wait()
                outcomes.append(task_succeed(task_id=member.id, attempt=1, agent_id="a1",
                                             result={"i": member.payload["i"]}, capabilities=["echo"]))
            finally:
                connection.close()

        threads = [threading.Thread(target=succeed, args=(m,)) for m in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes == [True] * size
        joins = tasks_of(workflow, 1)
        assert len(joins) == 1
        assert joins[0].payload["results"] == [{"i": i} for i in range(size)]


def test_a_failed_step_fails_the_workflow_naming_it_and_nothing_after_it_starts(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(), {"group": [step(), step("sleep")]},
                                                         step()]).workflow
    run(tasks_of(workflow, 0)[0], {})
    ok, bad = tasks_of(workflow, 1)
    run(ok, {})
    assert fail(bad)
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.FAILED
    assert workflow.error.startswith("step 1 (group member 1), sleep failed: boom")
    assert tasks_of(workflow, 2) == []


def test_retry_of_the_failed_steps_task_resumes_the_workflow(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(), step()]).workflow
    first = tasks_of(workflow, 0)[0]
    assert fail(first)
    task_retry(task=Task.objects.get(id=first.id))
    workflow.refresh_from_db()
    assert (workflow.status, workflow.error) == (Workflow.Status.RUNNING, "")
    run(Task.objects.get(id=first.id), {"again": 1})
    [second] = tasks_of(workflow, 1)
    assert second.payload == {"again": 1}
    run(second, {})
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.SUCCEEDED


def test_retry_of_a_failed_workflow_runs_its_failed_tasks_again_and_goes_on(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[{"group": [step(), step(), step()]}, step()]).workflow
    a, b, c = tasks_of(workflow, 0)
    run(a, 1)
    fail(b)
    fail(c)
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.FAILED
    workflow = workflow_retry(workflow=workflow)
    assert workflow.status == Workflow.Status.RUNNING
    b, c = Task.objects.get(id=b.id), Task.objects.get(id=c.id)
    assert b.status in Task.PENDING and (b.attempt, c.attempt) == (2, 2)
    assert Task.objects.get(id=a.id).attempt == 1  # a succeeded step is not run again
    run(b, 2)
    run(c, 3)
    [join] = tasks_of(workflow, 1)
    assert join.payload == {"results": [1, 2, 3]}
    with pytest.raises(InvalidState):
        workflow_retry(workflow=workflow)


def test_cancel_cancels_the_active_tasks_and_no_further_step_starts(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[{"group": [step(), step()]}, step()]).workflow
    a, b = tasks_of(workflow, 0)
    run(a, {})
    workflow = workflow_cancel(workflow=workflow)
    assert workflow.status == Workflow.Status.CANCELLED
    assert Task.objects.get(id=b.id).status == Task.Status.CANCELLED
    assert Task.objects.get(id=a.id).status == Task.Status.SUCCEEDED
    assert tasks_of(workflow, 1) == []
    with pytest.raises(InvalidState):
        workflow_cancel(workflow=workflow)
    # Retried, it runs what was cancelled and goes on from there.
    workflow_retry(workflow=workflow)
    run(Task.objects.get(id=b.id), {})
    assert len(tasks_of(workflow, 1)) == 1


def test_a_step_succeeding_after_its_workflow_was_cancelled_starts_nothing(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(), step()]).workflow
    first = tasks_of(workflow, 0)[0]
    assert task_claim(task_id=first.id, attempt=1, agent_id="a1", capabilities=["echo"]).run
    from regions.models import Workflow as W
    W.objects.filter(id=workflow.id).update(status=W.Status.CANCELLED)  # cancelled, its tasks not yet
    assert task_succeed(task_id=first.id, attempt=1, agent_id="a1", result={}, capabilities=["echo"])
    assert tasks_of(workflow, 1) == []


def test_the_sweeper_advances_a_workflow_whose_transition_was_lost(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(), step(k=1)]).workflow
    first = tasks_of(workflow, 0)[0]
    # The success recorded without its transition (a path that does not advance).
    Task.objects.filter(id=first.id).update(status=Task.Status.SUCCEEDED, result={"x": 1})
    Workflow.objects.filter(id=workflow.id).update(created_at=workflow.created_at.replace(year=2020))
    assert task_sweep()["workflows"] == 1
    [second] = tasks_of(workflow, 1)
    assert second.payload == {"k": 1, "x": 1}
    assert task_sweep()["workflows"] == 0  # once
    assert len(tasks_of(workflow, 1)) == 1
    Task.objects.filter(id=second.id).update(status=Task.Status.FAILED, error="lost")
    assert task_sweep()["workflows"] == 1
    workflow.refresh_from_db()
    assert (workflow.status, workflow.error) == (Workflow.Status.FAILED, "step 1, echo failed: lost")


def test_the_sweeper_cancels_what_a_cancelled_workflow_left_active(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step()]).workflow
    Workflow.objects.filter(id=workflow.id).update(status=Workflow.Status.CANCELLED)
    assert task_sweep()["workflow_cancels"] == 1
    assert tasks_of(workflow, 0)[0].status == Task.Status.CANCELLED


def test_a_step_whose_capability_is_not_allowed_here_refuses_the_whole_workflow(user, sent, settings):
    from regions.services.config import current

    class Refusing:
        def __getattr__(self, name):
            return getattr(real, name)

        def capability_refusal(self, capability):
            return f"capability {capability} is not allowed in this region" if capability == "forbidden" else ""

    real = current.config_current()
    import regions.services.workflows.submit as submit
    original = submit.config_current
    submit.config_current = lambda **kw: Refusing()
    try:
        with pytest.raises(CapabilityRefused, match="forbidden"):
            workflow_submit(submitted_by=user, steps=[step(), {"group": [step(), step("forbidden")]}])
    finally:
        submit.config_current = original
    assert not Workflow.objects.exists() and not Task.objects.exists() and sent == []


def test_the_same_idempotency_key_answers_the_first_workflow(user, sent):
    first = workflow_submit(submitted_by=user, steps=[step()], idempotency_key="k1")
    again = workflow_submit(submitted_by=user, steps=[step()], idempotency_key="k1")
    assert (first.created, again.created, again.workflow.id) == (True, False, first.workflow.id)
    from regions.services.tasks.refusals import IdempotencyConflict
    with pytest.raises(IdempotencyConflict):
        workflow_submit(submitted_by=user, steps=[step(x=1)], idempotency_key="k1")


def test_a_task_outside_workflows_still_succeeds_in_one_statement(user, sent, django_assert_num_queries):
    from regions.services.tasks.submit import task_submit

    task = task_submit(submitted_by=user, capability="echo", payload={}).task
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1", capabilities=["echo"]).run
    with django_assert_num_queries(1):
        assert task_succeed(task_id=task.id, attempt=1, agent_id="a1", result={}, capabilities=["echo"])


def test_a_late_success_of_a_requeued_step_starts_the_next_step(user, sent):
    from regions.services.tasks.requeue import tasks_requeue_for_agents

    workflow = workflow_submit(submitted_by=user, steps=[step(), step()]).workflow
    first = tasks_of(workflow, 0)[0]
    assert task_claim(task_id=first.id, attempt=1, agent_id="a1", capabilities=["echo"]).run
    assert tasks_requeue_for_agents(agent_ids=["a1"], reason="agent missed its heartbeat TTL") == 1
    assert task_succeed(task_id=first.id, attempt=1, agent_id="a1", result={"late": 1}, capabilities=["echo"])
    [second] = tasks_of(workflow, 1)
    assert second.payload == {"late": 1}


def test_cancel_of_a_steps_task_alone_fails_the_workflow_naming_it(user, sent):
    workflow = workflow_submit(submitted_by=user, steps=[step(), step()]).workflow
    task_cancel(task=tasks_of(workflow, 0)[0])
    Workflow.objects.filter(id=workflow.id).update(created_at=workflow.created_at.replace(year=2020))
    task_sweep()
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.FAILED and workflow.error.startswith("step 0, echo cancelled")


def test_a_step_whose_merged_input_is_over_the_payload_limit_fails_the_workflow_naming_it(user, sent, settings):
    settings.TASK_PAYLOAD_LIMIT_BYTES = 2000
    workflow = workflow_submit(submitted_by=user, steps=[{"group": [step(), step()]}, step("sleep")]).workflow
    for member in tasks_of(workflow, 0):
        run(member, {"blob": "x" * 1500})
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.FAILED
    assert workflow.error.startswith("step 1, sleep: its input") and tasks_of(workflow, 1) == []
    # A retry would fail it again at once: refused (409), and it stays as it was.
    with pytest.raises(InvalidState, match="fails again at once"):
        workflow_retry(workflow=workflow)
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.FAILED and workflow.error.startswith("step 1, sleep: its input")
