"""The region's admin: every page renders with data, and state changes only
through actions that call the services."""
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from regions.clock.sweep import task_sweep
from regions.models import Agent, ConfigVersion, Task, TaskAttempt
from regions.services import liveness
from regions.services.agents.registry import ForbiddenError, agent_set_desired, registration_token_valid
from regions.services.tasks import cancel, requeue
from regions.services.tasks import retry as retry_services
from regions.services.tasks.claim import task_claim
from regions.services.tasks.outcome import task_fail, task_succeed
from regions.services.tasks.requeue import tasks_requeue_for_agents
from regions.services.tasks.submit import task_submit
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Revokes are best effort; no broker is needed to check what the database says."""
    monkeypatch.setattr(cancel, "revoke", lambda *a, **kw: None)
    monkeypatch.setattr(requeue, "revoke", lambda *a, **kw: None)


def _retried_task() -> Task:
    """submit → claim → fail (retryable) → claim attempt 2: a running second attempt."""
    user, _ = factories.caller()
    task = task_submit(submitted_by=user, capability="echo", payload={"n": 1},
                       max_attempts=3).task
    assert task_claim(task_id=task.id, attempt=1, agent_id="host.example.com").run
    assert task_fail(task_id=task.id, attempt=1, agent_id="host.example.com", error="boom <b>")
    Task.objects.filter(id=task.id).update(not_before=None)
    assert task_claim(task_id=task.id, attempt=2, agent_id="a2").run
    return task


def _changelist_post(client, model: str, action: str, ids) -> None:
    response = client.post(reverse(f"admin:regions_{model}_changelist"),
                           {"action": action, "_selected_action": [str(i) for i in ids], "index": 0})
    assert response.status_code == 302, response.content[:2000]


def test_every_region_admin_page_renders_with_data(staff, redis_clean):
    agent = factories.agent("host.example.com", ["echo"]).agent
    factories.agent("a2", ["echo"])
    task = _retried_task()
    ConfigVersion.objects.create(sha="a" * 40, subject="Lower the TTL", result=ConfigVersion.Result.REJECTED,
                                 error="global.yaml: agents.heartbeat_ttl: must be more than the interval")
    ConfigVersion.objects.create(sha="b" * 40, subject="Add echo", result=ConfigVersion.Result.APPLIED,
                                 is_active=True, content={"tasks": {"echo": {"timeout": 5}}},
                                 changes=[{"key": "tasks.echo.timeout", "old": None, "new": 5}])
    for model in ("agent", "task", "configversion", "deadletter", "registrationtoken", "ingestedrecord"):
        response = staff.get(reverse(f"admin:regions_{model}_changelist"))
        assert response.status_code == 200, model
    pages = {
        reverse("admin:regions_agent_change", args=[agent.pk]):
            ["host.example.com", "Recent tasks", "Credential", "boom &lt;b&gt;", "failed"],
        reverse("admin:regions_task_change", args=[task.pk]): ["attempts", "boom &lt;b&gt;", "2/3", "&quot;n&quot;: 1"],
        reverse("admin:regions_configversion_change", args=[ConfigVersion.objects.get(sha="a" * 40).pk]):
            ["agents.heartbeat_ttl", "Lower the TTL"],
    }
    for url, expected in pages.items():
        text = staff.get(url).content.decode()
        for fragment in expected:
            assert fragment in text, (url, fragment)
        assert 'name="_save"' not in text  # nothing to save: changes go through actions


def test_task_list_is_searchable_by_error_and_id(staff, redis_clean):
    failed = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.FAILED,
                                 error="disk quota exceeded on /data")
    other = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
    url = reverse("admin:regions_task_changelist")
    text = staff.get(url, {"q": "quota"}).content.decode()
    assert str(failed.id)[:8] in text and str(other.id)[:8] not in text
    text = staff.get(url, {"q": str(other.id)}).content.decode()
    assert str(other.id)[:8] in text and str(failed.id)[:8] not in text


def test_agent_list_shows_state_slots_credential_and_age(staff, redis_clean):
    factories.agent("busy-1", ["echo"])
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.RUNNING,
                               agent="busy-1")
    factories.agent("cordoned-1", ["echo"])
    agent_set_desired(agent_id="cordoned-1", desired=Agent.Desired.CORDONED)
    text = staff.get(reverse("admin:regions_agent_changelist")).content.decode()
    assert "online busy" in text and "1 / 1" in text and str(task.id)[:8] in text
    assert "cordoned" in text and "active" in text and "s ago" in text


def test_agent_actions_reach_the_agent_through_the_services(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    for action, desired in (("agent_drained", "draining"), ("agent_cordoned", "cordoned"),
                            ("agent_uncordoned", "active")):
        _confirmed_post(staff, "agent", action, [agent.pk])
        agent.refresh_from_db()
        assert agent.desired == desired
        # What the agent hears in its next heartbeat reply.
        assert (liveness.client().hget(liveness.key("desired"), "a1") or "active") == desired
    _confirmed_post(staff, "agent", "agent_revoked", [agent.pk])
    agent.refresh_from_db()
    assert agent.desired == "stopped" and agent.token_hash == ""
    assert liveness.client().hget(liveness.key("desired"), "a1") == "stopped"
    assert liveness.client().hget(liveness.key("tok"), "a1") is None
    text = staff.get(reverse("admin:regions_agent_changelist")).content.decode()
    assert "revoked (no token)" in text


def test_agent_change_form_cannot_change_desired_or_status(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    response = staff.post(reverse("admin:regions_agent_change", args=[agent.pk]),
                          {"agent_id": "a1", "desired": "cordoned", "status": "offline", "capabilities": "[]",
                           "token_hash": "", "concurrency": 1, "kind": "celery"})
    assert response.status_code == 403
    agent.refresh_from_db()
    assert (agent.desired, agent.status, agent.capabilities) == ("active", "online", ["echo"])
    assert agent.token_hash


def test_add_task_and_add_agent_are_not_offered(staff):
    for model in ("task", "agent", "configversion"):
        assert staff.get(reverse(f"admin:regions_{model}_add")).status_code == 403
    assert reverse("admin:regions_task_add") not in staff.get(reverse("admin:regions_task_changelist")).content.decode()


def test_attempt_history_keeps_each_attempt_and_a_new_attempt_clears_the_error(redis_clean):
    task = _retried_task()
    task.refresh_from_db()
    assert (task.status, task.attempt, task.error) == (Task.Status.RUNNING, 2, "")  # attempt 1's error is history
    assert task_succeed(task_id=task.id, attempt=2, agent_id="a2", result={"ok": True})
    rows = list(TaskAttempt.objects.filter(task=task).values_list("number", "agent", "outcome", "error"))
    assert rows == [(1, "host.example.com", "failed", "boom <b>"), (2, "a2", "succeeded", "")]
    assert all(a.finished_at for a in TaskAttempt.objects.filter(task=task))
    # A late report of the superseded attempt changes neither the task nor its history.
    assert not task_fail(task_id=task.id, attempt=1, agent_id="host.example.com", error="late")
    assert TaskAttempt.objects.get(task=task, number=1).error == "boom <b>"


def test_a_requeue_closes_the_lost_attempt_as_requeued(redis_clean):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1").run
    assert tasks_requeue_for_agents(agent_ids=["a1"], reason="agent missed its heartbeat TTL") == 1
    attempt = TaskAttempt.objects.get(task=task, number=1)
    assert attempt.outcome == "requeued" and "missed its heartbeat TTL" in attempt.error


def test_retry_action_starts_a_new_attempt_of_a_failed_task_only(staff, redis_clean):
    failed = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.FAILED,
                                 error="boom", agent="a1")
    done = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.SUCCEEDED)
    _changelist_post(staff, "task", "retry", [failed.pk, done.pk])
    failed.refresh_from_db()
    done.refresh_from_db()
    assert (failed.attempt, failed.max_attempts, failed.error, failed.agent) == (2, 2, "", "")
    assert failed.status in (Task.Status.QUEUED, Task.Status.WAITING)
    assert (done.status, done.attempt) == (Task.Status.SUCCEEDED, 1)


def test_cancel_action_cancels_an_active_task(staff, redis_clean):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
    _confirmed_post(staff, "task", "cancel", [task.pk])
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED


def test_retry_endpoint_retries_the_callers_failed_task_and_refuses_others(client, redis_clean):
    owner, raw = factories.caller("owner")
    _, other_raw = factories.caller("other")
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=2, status=Task.Status.CANCELLED,
                               submitted_by=owner)
    url = f"/api/v1/tasks/{task.id}/retry"
    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {other_raw}").status_code == 404
    response = client.post(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 201, response.content
    assert response.json()["attempt"] == 2
    again = client.post(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert again.status_code == 409 and "cannot retry" in again.content.decode()


def test_manual_retries_stop_at_the_attempt_limit_well_inside_the_wire_bound(client, redis_clean, settings):
    """Cancel and retry in a loop once drove a task past the claim's bound (attempt
    1000): it could never run again and the sweeper re-sent it into dead letters."""
    from wire.protocol import MAX_ATTEMPT
    assert settings.TASK_ATTEMPTS_MAX < MAX_ATTEMPT
    settings.TASK_ATTEMPTS_MAX = 4
    owner, raw = factories.caller("owner")
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.CANCELLED,
                               submitted_by=owner)
    url = f"/api/v1/tasks/{task.id}/retry"
    for attempt in (2, 3, 4):
        response = client.post(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 201 and response.json()["attempt"] == attempt, response.content
        Task.objects.filter(id=task.id).update(status=Task.Status.CANCELLED)
    refused = client.post(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 409, refused.content
    assert refused.json()["error"] == "attempt_limit", refused.content
    assert "4 attempts" in refused.json()["detail"] and "submit it again" in refused.json()["detail"]
    task.refresh_from_db()
    assert task.attempt == 4 and task.status == Task.Status.CANCELLED


def test_waiting_task_says_its_agents_are_cordoned(redis_clean):
    factories.agent("a1", ["echo"])
    agent_set_desired(agent_id="a1", desired=Agent.Desired.CORDONED)
    user, _ = factories.caller()
    task = task_submit(submitted_by=user, capability="echo", payload={}).task
    assert task.status == Task.Status.WAITING
    assert "cordoned or draining (a1)" in task.status_reason


def test_config_admin_shows_why_a_commit_was_rejected(staff):
    ConfigVersion.objects.create(sha="c" * 40, subject="Shorter TTL", result=ConfigVersion.Result.REJECTED,
                                 error="global.yaml: agents.heartbeat_ttl: must be greater than the interval")
    text = staff.get(reverse("admin:regions_configversion_changelist")).content.decode()
    assert "global.yaml: agents.heartbeat_ttl: must be greater than the interval" in text
    assert "c" * 12 in text and f'title="{"c" * 40}"' in text and "rejected" in text and "Shorter TTL" in text


def test_admin_times_show_seconds(staff, redis_clean):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
    text = staff.get(reverse("admin:regions_task_change", args=[task.pk])).content.decode()
    from django.utils import timezone

    assert timezone.localtime(task.created_at).strftime("%Y-%m-%d %H:%M:%S") in text


def _admin_session(region):
    """A staff session on the real server's admin, logged in through its login form."""
    import re

    import requests

    region.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                  "get_user_model().objects.filter(username='console').exists() or "
                  "get_user_model().objects.create_superuser('console', 'c@example.com', 'pw')")
    session = requests.Session()
    login = f"{region.url}/admin/login/"
    session.get(login, timeout=10)
    response = session.post(login, data={"username": "console", "password": "pw", "next": "/admin/",
                                         "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                            headers={"Referer": login}, timeout=10)
    assert response.status_code == 200 and "Log out" in response.text, response.text[:2000]
    session.csrf = lambda page: re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    return session


@pytest.mark.integration
def test_admin_drain_action_makes_a_real_agent_finish_its_task_and_stop(region, agents):
    from tests.harness import wait_for

    session = _admin_session(region)
    agent = agents("sleep")
    running = region.submit("sleep", {"seconds": 4})
    region.wait_task(running["id"], statuses=("running",))
    changelist = f"{region.url}/admin/regions/agent/"
    page = session.get(changelist, timeout=10).text
    assert agent.agent_id in page and "online busy" in page and "1 / 1" in page and running["id"][:8] in page
    (pk,), = region.db_query("SELECT id FROM regions_agent WHERE agent_id = %s", (agent.agent_id,))
    confirm = session.post(changelist, data={"action": "agent_drained", "_selected_action": [pk], "index": 0,
                                             "csrfmiddlewaretoken": session.csrf(page)},
                           headers={"Referer": changelist}, timeout=10)
    assert f"agent {agent.agent_id} is running 1 task; drain lets them finish" in confirm.text, confirm.text[:2000]
    response = session.post(changelist, data={"action": "agent_drained", "_selected_action": [pk], "post": "yes",
                                              "csrfmiddlewaretoken": session.csrf(confirm.text)},
                            headers={"Referer": changelist}, timeout=10)
    assert response.status_code == 200 and "1 agent(s) drained." in response.text, response.text[:2000]
    later = region.submit("sleep", {"seconds": 0})
    assert region.wait_task(running["id"])["agent"] == agent.agent_id  # it finishes what it has
    wait_for(lambda: not agent.alive(), 20, what="drained agent to exit")
    # Exit 0: the demo's supervisor (Restart.ON_FAILURE) leaves it stopped and the rest runs on.
    assert agent.popen.returncode == 0, agent.tail()
    assert region.agent_info(agent.agent_id)["status"] == "stopped"
    assert region.task(later["id"])["status"] in ("queued", "waiting")  # and takes nothing new
    page = session.get(changelist, timeout=10).text
    assert "stopped" in page
    task_page = session.get(f"{region.url}/admin/regions/task/{running['id']}/change/", timeout=10).text
    assert "succeeded" in task_page and agent.agent_id in task_page


def test_agent_page_buttons_run_the_action_and_come_back(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    page = reverse("admin:regions_agent_change", args=[agent.pk])
    text = staff.get(page).content.decode()
    assert 'value="agent_cordoned"' in text and 'value="agent_revoked"' in text
    response = staff.post(reverse("admin:regions_agent_changelist"),
                          {"action": "agent_cordoned", "_selected_action": [agent.pk], "index": 0, "_from_detail": 1})
    assert response.status_code == 302 and response["Location"] == page
    agent.refresh_from_db()
    assert agent.desired == "cordoned"
    assert liveness.client().hget(liveness.key("desired"), "a1") == "cordoned"


def test_sweeper_says_a_queued_task_waits_because_its_agents_are_cordoned(redis_clean):
    from django.utils import timezone

    factories.agent("a1", ["echo"])
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED,
                               dispatched_at=timezone.now())
    agent_set_desired(agent_id="a1", desired=Agent.Desired.DRAINING)
    assert task_sweep()["stalled"] == 1
    task.refresh_from_db()
    assert task.status == Task.Status.WAITING and "cordoned or draining (a1)" in task.status_reason


def test_registration_token_added_in_the_admin_is_made_by_the_service_and_shown_once(staff):
    from regions.models import RegistrationToken

    response = staff.post(reverse("admin:regions_registrationtoken_add"), {"name": "rack-7"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    import re

    raw = re.search(r"<code[^>]*>(mrt[^<]+)</code>", response.content.decode()).group(1)
    token = RegistrationToken.objects.get(name="rack-7")
    assert token.token_hash and raw not in token.token_hash and token.prefix == raw[:10]
    assert registration_token_valid(raw)


def test_revoked_agent_shows_revoked_and_uncordon_re_admits_it(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    _confirmed_post(staff, "agent", "agent_revoked", [agent.pk])
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.OFFLINE)  # the reaper, once it went silent
    text = staff.get(reverse("admin:regions_agent_changelist")).content.decode()
    text = text.split('id="result_list"')[1].split("</table>")[0]  # the rows, not the state filter's choices
    assert ">revoked<" in text and ">offline<" not in text
    with pytest.raises(ForbiddenError):
        factories.agent("a1", ["echo"])
    _changelist_post(staff, "agent", "agent_uncordoned", [agent.pk])
    assert factories.agent("a1", ["echo"]).agent.desired == "active"


def _view_only_staff(client, *models):
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=[f"view_{m}" for m in models]))
    client.force_login(user)
    return client


def test_view_only_staff_see_the_pages_but_cannot_run_an_action(client, redis_clean):
    factories.agent("a1", ["echo"])
    owner, _ = factories.caller("owner")
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=2, status=Task.Status.FAILED,
                               submitted_by=owner)
    viewer = _view_only_staff(client, "agent", "task")
    for model, action, pk in (("agent", "agent_revoked", Agent.objects.get().pk), ("task", "retry", task.pk)):
        page = viewer.get(reverse(f"admin:regions_{model}_changelist"))
        assert page.status_code == 200 and f'value="{action}"'.encode() not in page.content
        viewer.post(reverse(f"admin:regions_{model}_changelist"),
                    {"action": action, "_selected_action": [str(pk)], "index": 0})
        detail = viewer.get(reverse(f"admin:regions_{model}_change", args=[pk]))
        assert detail.status_code == 200 and b'name="_from_detail"' not in detail.content
    assert Agent.objects.get().desired == Agent.Desired.ACTIVE and Agent.objects.get().token_hash
    assert Task.objects.get(id=task.id).status == Task.Status.FAILED


def test_a_retry_is_refused_like_a_submission_when_the_capability_is_blocklisted(client, redis_clean, monkeypatch):
    owner, raw = factories.caller("owner")
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=2, status=Task.Status.FAILED,
                               submitted_by=owner)

    class Blocklisted:
        def capability_refusal(self, capability):
            return f"capability {capability} is blocklisted by configuration abc"

        def task_definition(self, capability):
            return {}

    monkeypatch.setattr(retry_services, "config_current", lambda *a, **kw: Blocklisted())
    response = client.post(f"/api/v1/tasks/{task.id}/retry", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403 and "blocklisted" in response.json()["detail"]
    assert Task.objects.get(id=task.id).status == Task.Status.FAILED


def test_workflow_pages_draw_their_steps_and_the_actions_go_through_the_services(staff, redis_clean, monkeypatch):
    from regions.models import Workflow
    from regions.services.tasks import dispatch
    from regions.services.workflows.submit import workflow_submit

    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    user, _ = factories.caller()
    workflow = workflow_submit(submitted_by=user, steps=[
        {"capability": "echo", "payload": {}},
        {"group": [{"capability": "echo", "payload": {"i": i}} for i in range(15)]},
        {"capability": "sleep", "payload": {}}]).workflow
    first = Task.objects.get(workflow_step__workflow=workflow)
    assert task_claim(task_id=first.id, attempt=1, agent_id="a1").run
    assert task_fail(task_id=first.id, attempt=1, agent_id="a1", error="no <good>", retryable=False)
    listing = staff.get(reverse("admin:regions_workflow_changelist")).content.decode()
    assert "<svg" in listing and "failed" in listing
    page = staff.get(reverse("admin:regions_workflow_change", args=[workflow.pk])).content.decode()
    assert "<svg" in page and "+4 more" in page and "no &lt;good&gt;" in page and "step 0, echo failed" in page
    assert 'name="_save"' not in page
    _changelist_post(staff, "workflow", "retry", [workflow.pk])
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.RUNNING
    _confirmed_post(staff, "workflow", "cancel", [workflow.pk])
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.CANCELLED


# -- Safe actions: a confirmation naming what will happen, only the actions that
#    apply (one rule for the buttons and the server), each in the audit trail.

def _confirmed_post(client, model: str, action: str, ids, **extra):
    """The second step of an action that asks first: its "Yes, I'm sure" form."""
    return client.post(reverse(f"admin:regions_{model}_changelist"),
                       {"action": action, "_selected_action": [str(i) for i in ids], "post": "yes", **extra})


def _running(agent_id: str, count: int) -> list[Task]:
    return [Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.RUNNING,
                                agent=agent_id) for _ in range(count)]


def _text(response) -> str:
    import html
    import re

    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def test_drain_asks_first_naming_the_tasks_it_lets_finish(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    _running("a1", 2)
    confirm = staff.post(reverse("admin:regions_agent_changelist"),
                         {"action": "agent_drained", "_selected_action": [agent.pk], "index": 0})
    assert confirm.status_code == 200
    html, text = confirm.content.decode(), _text(confirm)
    assert "agent a1 is running 2 tasks; drain lets them finish, then stops it" in text
    assert "<h1>Drain 1 agent(s)?</h1>" in html and 'name="csrfmiddlewaretoken"' in html
    assert '<form method="post"' in html and 'name="post" value="yes"' in html
    assert 'type="submit"' in html and "Yes, drain 1 agent" in html
    assert f'href="{reverse("admin:regions_agent_changelist")}"' in html and "No, take me back" in html
    agent.refresh_from_db()
    assert agent.desired == Agent.Desired.ACTIVE  # nothing done yet
    assert _confirmed_post(staff, "agent", "agent_drained", [agent.pk]).status_code == 302
    agent.refresh_from_db()
    assert agent.desired == Agent.Desired.DRAINING


def test_revoke_asks_first_saying_what_becomes_of_its_running_tasks(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    _running("a1", 2)
    confirm = staff.post(reverse("admin:regions_agent_changelist"),
                         {"action": "agent_revoked", "_selected_action": [agent.pk], "index": 0})
    text = _text(confirm)
    assert confirm.status_code == 200 and "revoke withdraws a1's credential now" in text, text[:3000]
    assert "its 2 running tasks are requeued" in text and 'value="Yes, revoke 1 agent"' in confirm.content.decode()
    agent.refresh_from_db()
    assert agent.token_hash and agent.desired == Agent.Desired.ACTIVE
    _confirmed_post(staff, "agent", "agent_revoked", [agent.pk])
    agent.refresh_from_db()
    assert agent.desired == Agent.Desired.STOPPED and agent.token_hash == ""


def test_cordon_and_uncordon_stay_one_click(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    _changelist_post(staff, "agent", "agent_cordoned", [agent.pk])
    assert Agent.objects.get(pk=agent.pk).desired == Agent.Desired.CORDONED
    _changelist_post(staff, "agent", "agent_uncordoned", [agent.pk])
    assert Agent.objects.get(pk=agent.pk).desired == Agent.Desired.ACTIVE


def test_cancel_asks_first_saying_what_happens_to_each_task(staff, redis_clean):
    queued = [Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
              for _ in range(2)]
    running = _running("a1", 1)
    done = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.SUCCEEDED)
    ids = [t.pk for t in (*queued, *running, done)]
    confirm = staff.post(reverse("admin:regions_task_changelist"),
                         {"action": "cancel", "_selected_action": [str(i) for i in ids], "index": 0})
    text = _text(confirm)
    assert confirm.status_code == 200, confirm.content[:2000]
    assert "cancel 3 tasks: 2 queued or waiting are cancelled, 1 running is cancelled and its agent told to stop it" \
        in text, text[:3000]
    assert f"task {str(done.id)[:8]} is succeeded: only an active task can be cancelled" in text
    assert Task.objects.filter(status=Task.Status.CANCELLED).count() == 0
    _confirmed_post(staff, "task", "cancel", ids)
    assert Task.objects.filter(status=Task.Status.CANCELLED).count() == 3
    assert Task.objects.get(pk=done.pk).status == Task.Status.SUCCEEDED


def test_cancelling_all_1100_tasks_a_filter_selects_goes_through_its_confirmation(staff, redis_clean):
    """"Select all 1,100" then Cancel: the confirmation form must stay under
    Django's 1,000 fields (it carried one hidden id per task, and the confirmed
    post was refused with a 400, cancelling nothing)."""
    import re

    Task.objects.bulk_create(Task(capability="bulk", timeout=10, max_attempts=1, status=Task.Status.WAITING)
                             for _ in range(1100))
    Task.objects.create(capability="other", timeout=10, max_attempts=1, status=Task.Status.WAITING)
    url = reverse("admin:regions_task_changelist") + "?capability__exact=bulk"
    page_ids = [str(pk) for pk in Task.objects.filter(capability="bulk").values_list("pk", flat=True)[:100]]
    confirm = staff.post(url, {"action": "cancel", "_selected_action": page_ids, "index": 0, "select_across": 1})
    assert confirm.status_code == 200 and "cancel 1100 tasks" in _text(confirm), _text(confirm)[:2000]
    form = confirm.content.decode().split('<form method="post" aria-labelledby="mrd-confirm-what">')[1]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.split("</form>")[0])
    assert len(fields) < 20, len(fields)
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    done = staff.post(url, data)
    assert done.status_code == 302, done.content[:500]
    assert Task.objects.filter(capability="bulk", status=Task.Status.CANCELLED).count() == 1100
    assert Task.objects.get(capability="other").status == Task.Status.WAITING


def test_the_object_page_button_asks_first_and_comes_back_to_the_object(staff, redis_clean):
    agent = factories.agent("a1", ["echo"]).agent
    page = reverse("admin:regions_agent_change", args=[agent.pk])
    confirm = staff.post(reverse("admin:regions_agent_changelist"),
                         {"action": "agent_drained", "_selected_action": [agent.pk], "index": 0, "_from_detail": 1})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "agent a1 is running no task; drain stops it" in _text(confirm), html[:2000]
    assert 'name="_from_detail"' in html and f'href="{page}"' in html  # "No, take me back" to the agent
    assert Agent.objects.get(pk=agent.pk).desired == Agent.Desired.ACTIVE
    done = _confirmed_post(staff, "agent", "agent_drained", [agent.pk], _from_detail=1)
    assert done.status_code == 302 and done["Location"] == page
    assert Agent.objects.get(pk=agent.pk).desired == Agent.Desired.DRAINING


def test_the_confirmation_is_csrf_protected(redis_clean):
    from django.test import Client

    agent = factories.agent("a1", ["echo"]).agent
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    forged = _confirmed_post(client, "agent", "agent_revoked", [agent.pk])
    assert forged.status_code == 403
    assert Agent.objects.get(pk=agent.pk).token_hash


def _buttons(client, model: str, pk) -> set[str]:
    import re

    html = client.get(reverse(f"admin:regions_{model}_change", args=[pk])).content.decode()
    return set(re.findall(r'name="action" value="([a-z_]+)"', html))


@pytest.mark.parametrize("status, desired, offered", [
    ("online", "active", {"agent_drained", "agent_cordoned", "agent_revoked"}),
    ("online", "cordoned", {"agent_drained", "agent_uncordoned", "agent_revoked"}),
    ("online", "draining", {"agent_cordoned", "agent_uncordoned", "agent_revoked"}),
    ("offline", "active", {"agent_revoked"}),
    ("stopped", "active", set()),
    ("stopped", "cordoned", {"agent_uncordoned"}),
    ("offline", "stopped", {"agent_uncordoned"}),  # revoked: re-admitting is all that is left
])
def test_an_agent_page_offers_only_the_actions_that_apply(staff, redis_clean, status, desired, offered):
    agent = factories.agent("a1", ["echo"]).agent
    Agent.objects.filter(pk=agent.pk).update(status=status, desired=desired)
    assert _buttons(staff, "agent", agent.pk) == offered


@pytest.mark.parametrize("status, desired, action", [
    ("stopped", "active", "agent_drained"), ("offline", "active", "agent_drained"),
    ("online", "draining", "agent_drained"), ("online", "active", "agent_uncordoned"),
    ("stopped", "active", "agent_revoked"), ("offline", "stopped", "agent_revoked"),
])
def test_a_forged_agent_action_that_does_not_apply_is_refused_and_not_applied(staff, redis_clean, status, desired,
                                                                               action):
    from project.accounts.models import AuditEvent

    agent = factories.agent("a1", ["echo"]).agent
    Agent.objects.filter(pk=agent.pk).update(status=status, desired=desired)
    before = Agent.objects.filter(pk=agent.pk).values("status", "desired", "token_hash").get()
    response = _confirmed_post(staff, "agent", action, [agent.pk])
    assert response.status_code == 302
    assert Agent.objects.filter(pk=agent.pk).values("status", "desired", "token_hash").get() == before
    text = _text(staff.get(reverse("admin:regions_agent_changelist")))
    assert "0 agent(s)" in text and "agent a1 is" in text, text[:3000]
    assert AuditEvent.objects.get().outcome == "refused"


@pytest.mark.parametrize("status, offered", [
    ("queued", {"cancel"}), ("running", {"cancel"}), ("waiting", {"cancel"}),
    ("failed", {"retry"}), ("cancelled", {"retry"}), ("succeeded", set()),
])
def test_a_task_page_offers_only_the_actions_that_apply(staff, redis_clean, status, offered):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=status)
    assert _buttons(staff, "task", task.pk) == offered


def test_a_forged_cancel_of_a_finished_task_or_retry_of_a_running_one_is_refused(staff, redis_clean):
    done = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.SUCCEEDED)
    running = _running("a1", 1)[0]
    _confirmed_post(staff, "task", "cancel", [done.pk])
    _changelist_post(staff, "task", "retry", [running.pk])
    assert Task.objects.get(pk=done.pk).status == Task.Status.SUCCEEDED
    running.refresh_from_db()
    assert (running.status, running.attempt) == (Task.Status.RUNNING, 1)
    text = _text(staff.get(reverse("admin:regions_task_changelist")))
    assert f"task {str(done.id)[:8]} is succeeded: only an active task can be cancelled" in text, text[:3000]
    assert f"task {str(running.id)[:8]} is running: only a failed or cancelled task can be retried" in text


def test_a_workflow_page_offers_only_what_applies_and_cancel_asks_first(staff, redis_clean):
    from regions.models import Workflow

    running = Workflow.objects.create(status=Workflow.Status.RUNNING)
    done = Workflow.objects.create(status=Workflow.Status.SUCCEEDED)
    assert _buttons(staff, "workflow", running.pk) == {"cancel"} and _buttons(staff, "workflow", done.pk) == set()
    confirm = staff.post(reverse("admin:regions_workflow_changelist"),
                         {"action": "cancel", "_selected_action": [str(running.pk)], "index": 0})
    assert confirm.status_code == 200 and "Yes, cancel 1 workflow" in confirm.content.decode()
    assert Workflow.objects.get(pk=running.pk).status == Workflow.Status.RUNNING
    _confirmed_post(staff, "workflow", "cancel", [running.pk])
    assert Workflow.objects.get(pk=running.pk).status == Workflow.Status.CANCELLED


def test_dead_letters_and_other_read_only_pages_cannot_be_deleted(staff, redis_clean):
    from django.utils import timezone

    from project.accounts.models import AuditEvent
    from regions.models import DeadLetter, ScheduleRun

    rows = {"deadletter": DeadLetter.objects.create(source="reports", queue="q", reason="bad signature"),
            "configversion": ConfigVersion.objects.create(sha="d" * 40, result=ConfigVersion.Result.APPLIED),
            "schedulerun": ScheduleRun.objects.create(schedule="nightly", due_at=timezone.now(), outcome="created")}
    for model, row in rows.items():
        assert staff.get(reverse(f"admin:regions_{model}_delete", args=[row.pk])).status_code == 403, model
        assert staff.post(reverse(f"admin:regions_{model}_delete", args=[row.pk]), {"post": "yes"}).status_code \
            == 403, model
        listing = staff.get(reverse(f"admin:regions_{model}_changelist")).content.decode()
        assert 'value="delete_selected"' not in listing, model
        staff.post(reverse(f"admin:regions_{model}_changelist"),
                   {"action": "delete_selected", "_selected_action": [str(row.pk)], "post": "yes"})
        assert type(row).objects.filter(pk=row.pk).exists(), model
    from regions.models import IngestedRecord

    record = IngestedRecord.objects.create(task=Task.objects.create(capability="ingest", timeout=10, max_attempts=1,
                                                                    status=Task.Status.SUCCEEDED), line=1, data={})
    # What a task ingested is its output, not an operator's to add, edit or delete.
    assert staff.get(reverse("admin:regions_ingestedrecord_add")).status_code == 403
    assert staff.post(reverse("admin:regions_ingestedrecord_change", args=[record.pk]),
                      {"task": record.task_id, "line": 2, "data": "{}"}).status_code == 403
    assert staff.post(reverse("admin:regions_ingestedrecord_delete", args=[record.pk]), {"post": "yes"}) \
        .status_code == 403
    assert IngestedRecord.objects.filter(pk=record.pk, line=1).exists()
    audit = AuditEvent.objects.create(actor="user op", action="agent.drain", target="a1")
    assert staff.get(reverse("admin:accounts_auditevent_delete", args=[audit.pk])).status_code == 403
    assert 'value="delete_selected"' not in staff.get(reverse("admin:accounts_auditevent_changelist")).content.decode()


def test_every_console_action_is_in_the_audit_trail_with_actor_action_and_target(staff, redis_clean):
    from project.accounts.models import AuditEvent

    agent = factories.agent("a1", ["echo"]).agent
    for action in ("agent_drained", "agent_cordoned", "agent_uncordoned"):
        _confirmed_post(staff, "agent", action, [agent.pk])
    _confirmed_post(staff, "agent", "agent_revoked", [agent.pk])
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
    _confirmed_post(staff, "task", "cancel", [task.pk])
    _confirmed_post(staff, "task", "retry", [task.pk])
    events = list(AuditEvent.objects.order_by("id").values_list("actor", "action", "target", "outcome"))
    assert events == [("user op", "agent.drain", "a1", "done"), ("user op", "agent.cordon", "a1", "done"),
                      ("user op", "agent.uncordon", "a1", "done"), ("user op", "agent.revoke", "a1", "done"),
                      ("user op", "task.cancel", str(task.pk), "done"), ("user op", "task.retry", str(task.pk), "done")]


def test_a_registration_token_revoked_or_deleted_in_the_admin_is_in_the_audit_trail(staff):
    from project.accounts.models import AuditEvent
    from regions.services.agents.registry import registration_token_create

    kept, _ = registration_token_create(name="rack-7")
    gone, _ = registration_token_create(name="rack-8")
    response = staff.post(reverse("admin:regions_registrationtoken_change", args=[kept.pk]),
                          {"name": "rack-7", "revoked_at_0": "2026-01-01", "revoked_at_1": "00:00:00"})
    assert response.status_code == 302, response.content[:3000]
    assert staff.post(reverse("admin:regions_registrationtoken_delete", args=[gone.pk]), {"post": "yes"}) \
        .status_code == 302
    assert list(AuditEvent.objects.order_by("id").values_list("actor", "action", "target")) == [
        ("user op", "token.revoke", f"registration token rack-7 ({kept.prefix}…)"),
        ("user op", "token.delete", f"registration token rack-8 ({gone.prefix}…)")]


def test_an_api_key_deleted_in_the_admin_is_in_the_audit_trail(staff):
    from project.accounts.models import ApiKey, AuditEvent

    owner, _ = factories.caller("owner")
    key = ApiKey.objects.get(user=owner)
    assert staff.post(reverse("admin:accounts_apikey_delete", args=[key.pk]), {"post": "yes"}).status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()
    assert list(AuditEvent.objects.values_list("actor", "action", "target")) == [
        ("user op", "api_key.delete", f"key {key.prefix}… of owner")]


def test_the_rule_of_what_applies_is_pure_and_says_why_not():
    from regions.services.agents.actions import agent_action_refusal, agent_actions_allowed
    from regions.services.tasks.actions import task_action_refusal, task_actions_allowed

    def agent(status, desired):
        return Agent(agent_id="a1", status=status, desired=desired)

    assert agent_actions_allowed(agent("online", "active")) == ["drain", "cordon", "revoke"]
    assert agent_actions_allowed(agent("online", "draining")) == ["cordon", "uncordon", "revoke"]
    assert agent_actions_allowed(agent("offline", "stopped")) == ["uncordon"]
    assert agent_action_refusal(agent("stopped", "active"), "revoke") == \
        "agent a1 is stopped (deregistered): it runs nothing and heartbeats no more"
    assert agent_action_refusal(agent("offline", "active"), "drain") == \
        "agent a1 is offline: only an online agent can be drained"
    task = Task(status=Task.Status.RETRYING)
    assert task_actions_allowed(task) == ["cancel"] and "only a failed or cancelled" in task_action_refusal(task,
                                                                                                          "retry")
