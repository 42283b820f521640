"""A caller's quotas at the region (the configuration repository's callers
section, else the settings): tasks in flight and submissions per second, each
refused with a 429 that names the quota; a capability's rate limit per caller."""
import pytest

from regions.models import Task
from regions.services import liveness
from regions.services.tasks import quotas
from regions.services.tasks.refusals import QuotaExceeded, RateLimited
from regions.services.tasks.submit import ItemRefused, task_submit, task_submit_batch
from tests import factories
from tests.regions.test_config_sync import GLOBAL, repo, sync  # noqa: F401 (repo is a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_second(monkeypatch):
    """Submissions within one second of the quota's clock, however slow the test."""
    monkeypatch.setattr(quotas.time, "time", lambda: 1_800_000_000.5)


def _configure(repo, callers, **tasks):  # noqa: F811
    repo.commit({"global.yaml": {**GLOBAL, "callers": callers, "tasks": {**GLOBAL.get("tasks", {}), **tasks}}})
    assert sync(repo).applied


def test_tasks_in_flight_are_bounded_per_caller_and_free_again_as_they_finish(repo, sent):  # noqa: F811
    _configure(repo, {"default": {"max_in_flight": 3}, "vip": {"max_in_flight": 0}})
    caller, _ = factories.caller("caller")
    vip, _ = factories.caller("vip")
    tasks = [task_submit(submitted_by=caller, capability="echo", payload={}).task for _ in range(3)]
    with pytest.raises(QuotaExceeded) as refused:
        task_submit(submitted_by=caller, capability="echo", payload={})
    assert refused.value.status == 429 and refused.value.retry_after == quotas.IN_FLIGHT_RETRY_AFTER
    assert refused.value.extra == {"quota": "max_in_flight", "limit": 3}
    assert "max_in_flight=3" in str(refused.value)
    for _ in range(5):  # its own entry: no limit
        task_submit(submitted_by=vip, capability="echo", payload={})
    Task.objects.filter(id=tasks[0].id).update(status=Task.Status.SUCCEEDED)
    task_submit(submitted_by=caller, capability="echo", payload={})


def test_submissions_per_second_and_a_batch_admits_what_fits_and_spends_nothing_on_the_rest(
        repo, sent, one_second):  # noqa: F811
    _configure(repo, {"caller": {"submissions_per_second": 4}})
    caller, _ = factories.caller("caller")
    task_submit(submitted_by=caller, capability="echo", payload={})
    results = task_submit_batch(submitted_by=caller, items=[{"capability": "echo"} for _ in range(5)])
    assert [isinstance(r, ItemRefused) for r in results] == [False] * 3 + [True] * 2
    assert (results[4].status, results[4].code) == (429, "quota_exceeded")
    assert "submissions_per_second=4" in results[4].detail
    assert Task.objects.filter(submitted_by=caller).count() == 4
    key = liveness.key(f"quota:{caller.pk}:{int(quotas.time.time())}")
    assert int(liveness.client().get(key)) == 4  # the refused items spent nothing
    with pytest.raises(QuotaExceeded) as refused:
        task_submit(submitted_by=caller, capability="echo", payload={})
    assert refused.value.retry_after == 1 and refused.value.extra["quota"] == "submissions_per_second"


def test_the_quota_is_answered_as_a_429_naming_it(repo, api, sent):  # noqa: F811
    _configure(repo, {api.user.username: {"max_in_flight": 1}})
    assert api.post("/api/v1/tasks", {"capability": "echo"}, format="json").status_code == 201
    response = api.post("/api/v1/tasks", {"capability": "echo"}, format="json")
    assert response.status_code == 429 and response["Retry-After"] == str(quotas.IN_FLIGHT_RETRY_AFTER)
    body = response.json()
    assert (body["error"], body["quota"], body["limit"]) == ("quota_exceeded", "max_in_flight", 1)


def test_the_settings_are_the_default_quota(repo, settings, sent):  # noqa: F811
    settings.CALLER_MAX_IN_FLIGHT = 2
    _configure(repo, {})
    caller, _ = factories.caller("caller")
    task_submit(submitted_by=caller, capability="echo", payload={})
    task_submit(submitted_by=caller, capability="echo", payload={})
    with pytest.raises(QuotaExceeded):
        task_submit(submitted_by=caller, capability="echo", payload={})


def test_a_capability_rate_limit_per_caller_leaves_other_callers_their_own(repo, sent):  # noqa: F811
    _configure(repo, {}, echo={"rate_limit": "2/m", "rate_limit_per": "caller"})
    first, _ = factories.caller("first")
    second, _ = factories.caller("second")
    for _ in range(2):
        task_submit(submitted_by=first, capability="echo", payload={})
    with pytest.raises(RateLimited) as refused:
        task_submit(submitted_by=first, capability="echo", payload={})
    assert "for your tasks" in str(refused.value)
    for _ in range(2):
        task_submit(submitted_by=second, capability="echo", payload={})


def test_a_workflow_reserves_all_its_steps_against_tasks_in_flight(repo, sent):  # noqa: F811
    from regions.services.workflows.submit import workflow_submit

    _configure(repo, {"caller": {"max_in_flight": 10}})
    caller, _ = factories.caller("caller")
    steps = [{"capability": "echo", "payload": {}}, {"group": [{"capability": "echo", "payload": {}}] * 5}]
    workflow_submit(submitted_by=caller, steps=steps)  # 1 task now, 5 reserved
    with pytest.raises(QuotaExceeded) as refused:
        workflow_submit(submitted_by=caller, steps=steps)  # 6 + 6 > 10
    assert refused.value.extra["quota"] == "max_in_flight"
    for _ in range(4):
        task_submit(submitted_by=caller, capability="echo", payload={})
    with pytest.raises(QuotaExceeded):
        task_submit(submitted_by=caller, capability="echo", payload={})


def test_a_retry_answers_to_the_callers_quota(repo, sent):  # noqa: F811
    from regions.services.tasks.cancel import task_cancel
    from regions.services.tasks.retry import task_retry

    _configure(repo, {"caller": {"max_in_flight": 2}})
    caller, _ = factories.caller("caller")
    first = task_submit(submitted_by=caller, capability="echo", payload={}).task
    task_submit(submitted_by=caller, capability="echo", payload={})
    task_cancel(task=Task.objects.get(id=first.id))
    task_submit(submitted_by=caller, capability="echo", payload={})  # its place, taken
    with pytest.raises(QuotaExceeded):
        task_retry(task=Task.objects.get(id=first.id))


def test_a_large_workflow_counts_only_its_first_step_against_submissions_per_second(repo, sent,  # noqa: F811
                                                                                   one_second):
    from regions.services.workflows.submit import workflow_submit

    _configure(repo, {"caller": {"submissions_per_second": 5, "max_in_flight": 0}})
    caller, _ = factories.caller("caller")
    steps = [{"capability": "echo", "payload": {}}, {"group": [{"capability": "echo", "payload": {}}] * 20}]
    workflow_submit(submitted_by=caller, steps=steps)  # 21 tasks, 1 submitted now
    key = liveness.key(f"quota:{caller.pk}:{int(quotas.time.time())}")
    assert int(liveness.client().get(key)) == 1
