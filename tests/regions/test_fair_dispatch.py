"""Fair dispatch between tenants: a caller has at most one window of tasks sent
to a capability's queue and unclaimed; the rest wait in the database and go
out as the caller's own tasks are claimed. A flood waits behind itself."""
import pytest

from regions.clock.sweep import task_sweep
from regions.models import Agent, Task
from regions.services.tasks import fair
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.claim import task_claim
from regions.services.tasks.submit import task_submit, task_submit_batch
from tests import factories
from tests.harness import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def window(settings, redis_clean, sent):
    """A window of 3 per caller (one agent of concurrency 1 serves echo: the
    minimum applies)."""
    settings.TENANT_WINDOW_MIN = 3
    settings.TENANT_WINDOW_PER_SLOT = 1.0
    factories.agent("a0", capabilities=("echo",))
    return 3


def _sent_ids(sent) -> list[str]:
    return [message["task_id"].split(":")[0] for message in sent]


def test_a_flood_beyond_its_window_is_held_and_another_caller_is_sent_at_once(window, sent,
                                                                            django_capture_on_commit_callbacks):
    flooder, _ = factories.caller("flooder")
    other, _ = factories.caller("other")
    with django_capture_on_commit_callbacks(execute=True):
        results = task_submit_batch(submitted_by=flooder, items=[{"capability": "echo"} for _ in range(10)])
        mine = task_submit(submitted_by=other, capability="echo", payload={}).task
    tasks = [Task.objects.get(id=r.task.id) for r in results]
    assert [t.held for t in tasks] == [False] * 3 + [True] * 7
    assert all(t.dispatched_at is None and "fair share" in t.status_reason for t in tasks[3:])
    assert not Task.objects.get(id=mine.id).held
    assert _sent_ids(sent) == [str(t.id) for t in tasks[:3]] + [str(mine.id)]


def test_a_single_submission_past_the_window_is_held_too(window, sent, django_capture_on_commit_callbacks):
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        subs = [task_submit(submitted_by=user, capability="echo", payload={}) for _ in range(4)]
    assert [s.task.held for s in subs] == [False, False, False, True]
    assert len(sent) == 3


def test_each_claim_sends_the_callers_next_held_task_highest_priority_first(window, sent,
                                                                           django_capture_on_commit_callbacks):
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        first = [task_submit(submitted_by=user, capability="echo", payload={}).task for _ in range(3)]
        low = task_submit(submitted_by=user, capability="echo", payload={}, priority=1).task
        urgent = task_submit(submitted_by=user, capability="echo", payload={}, priority=9).task
    assert Task.objects.get(id=low.id).held and Task.objects.get(id=urgent.id).held
    with django_capture_on_commit_callbacks(execute=True):
        assert task_claim(task_id=first[0].id, attempt=1, agent_id="a0").run
    assert _sent_ids(sent)[-1] == str(urgent.id)
    released = Task.objects.get(id=urgent.id)
    assert not released.held and released.dispatched_at is not None and released.status_reason == ""
    assert Task.objects.get(id=low.id).held  # the window is full again


def test_a_cancelled_queued_task_makes_room_and_a_held_one_cancelled_needs_none(window, sent,
                                                                               django_capture_on_commit_callbacks):
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        tasks = [task_submit(submitted_by=user, capability="echo", payload={}).task for _ in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        task_cancel(task=Task.objects.get(id=tasks[4].id))  # held: cancelled, nothing released
    assert len(sent) == 3 and not Task.objects.get(id=tasks[4].id).held
    with django_capture_on_commit_callbacks(execute=True):
        task_cancel(task=Task.objects.get(id=tasks[0].id))
    assert _sent_ids(sent)[-1] == str(tasks[3].id)


def test_the_sweeper_sends_held_tasks_when_the_window_grows_and_never_sends_past_it(window, sent,
                                                                                   django_capture_on_commit_callbacks):
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        task_submit_batch(submitted_by=user, items=[{"capability": "echo"} for _ in range(10)])
    with django_capture_on_commit_callbacks(execute=True):
        assert task_sweep()["released"] == 0  # the outbox leaves held tasks alone too
    assert len(sent) == 3
    for n in range(1, 5):  # five agents of concurrency 1: a window of 5
        factories.agent(f"a{n}", capabilities=("echo",))
    fair._slots_seen.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert task_sweep()["released"] == 2
    assert len(sent) == 5 and Task.objects.filter(held=True).count() == 5


def test_the_window_follows_the_concurrency_of_the_agents_serving_the_capability(window):
    factories.agent("a1", capabilities=("echo",))
    Agent.objects.filter(agent_id="a1").update(concurrency=8)
    factories.agent("a2", capabilities=("echo", "sleep"))
    fair._slots_seen.clear()
    # a0 (1) + a1 (8) + a2 (1) serve echo; a2 alone serves sleep: the minimum.
    assert (fair.tenant_window("echo"), fair.tenant_window("sleep"), fair.tenant_window("nothing")) == (10, 3, 3)


def test_tasks_for_a_named_agent_are_not_windowed(window, sent, django_capture_on_commit_callbacks):
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        subs = [task_submit(submitted_by=user, capability="echo", payload={}, target_agent="a0") for _ in range(5)]
    assert not any(s.task.held for s in subs) and len(sent) == 5


def test_off_when_the_window_per_slot_is_zero(window, settings, sent, django_capture_on_commit_callbacks):
    settings.TENANT_WINDOW_PER_SLOT = 0
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        task_submit_batch(submitted_by=user, items=[{"capability": "echo"} for _ in range(10)])
    assert len(sent) == 10 and not Task.objects.filter(held=True).exists()


@pytest.mark.integration
def test_another_callers_task_runs_after_one_window_of_a_flood_not_after_the_flood(region, agents):
    """Real processes: one agent of concurrency 2 serves `sleep`; a caller floods
    80 tasks of 50 ms; another caller's single task starts after at most about
    one window of the flood (FIFO would put it behind all 80)."""
    agents("sleep", concurrency=2)
    flood = region.call("POST", "/api/v1/tasks/batch", key=region.api_key,
                        json={"tasks": [{"capability": "sleep", "payload": {"seconds": 0.05}} for _ in range(80)]})
    assert flood.status_code in (200, 201, 207), flood.text
    mine = region.submit("sleep", {"seconds": 0.05}, key=region.user_key)
    done = region.wait_task(mine["id"], timeout=60)
    started_before = region.db_query(
        "SELECT count(*) FROM regions_task WHERE capability = 'sleep' AND id <> %s AND started_at < %s",
        (mine["id"], done["started_at"]))[0][0]
    held = region.db_query("SELECT count(*) FROM regions_task WHERE held")[0][0]
    assert started_before <= 12, (started_before, held)
    wait_for(lambda: region.db_query("SELECT count(*) FROM regions_task WHERE capability = 'sleep' "
                                     "AND status <> 'succeeded'")[0][0] == 0, 60, what="the flood done")


def test_claims_refill_a_quarter_window_at_a_time(window, settings, sent, django_capture_on_commit_callbacks):
    settings.TENANT_WINDOW_MIN = 8
    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        tasks = [r.task for r in task_submit_batch(submitted_by=user, items=[{"capability": "echo"}] * 12)]
    assert len(sent) == 8
    with django_capture_on_commit_callbacks(execute=True):
        task_claim(task_id=tasks[0].id, attempt=1, agent_id="a0")
    assert len(sent) == 8  # one place free: not yet
    with django_capture_on_commit_callbacks(execute=True):
        task_claim(task_id=tasks[1].id, attempt=1, agent_id="a0")
    assert len(sent) == 10 and Task.objects.filter(held=True).count() == 2


def test_a_retry_takes_its_place_in_the_callers_window(window, sent, django_capture_on_commit_callbacks):
    from regions.services.tasks.retry import task_retry

    user, _ = factories.caller("flooder")
    with django_capture_on_commit_callbacks(execute=True):
        tasks = [task_submit(submitted_by=user, capability="echo", payload={}).task for _ in range(4)]
    with django_capture_on_commit_callbacks(execute=True):
        task_cancel(task=Task.objects.get(id=tasks[3].id))  # held: cancelled without a send
        retried = task_retry(task=Task.objects.get(id=tasks[3].id))
    assert retried.held and retried.dispatched_at is None and "fair share" in retried.status_reason
    assert len(sent) == 3  # the window is still full: the retry waits its turn


def test_the_slot_counts_a_process_keeps_stay_bounded_whatever_names_are_submitted(window):
    for n in range(fair._SLOTS_SEEN_MAX + 5):
        fair._slots_seen[f"cap-{n}"] = (0.0, 0)  # as many names as submissions could bring
    fair.capability_slots("echo")
    assert len(fair._slots_seen) <= fair._SLOTS_SEEN_MAX
