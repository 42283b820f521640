"""The audit trail (project/accounts/audit.py): every state change a person, a key
or an operator's command makes is a row (who, what, on what, when, from where,
how it ended) and a line on the meridian.audit stream; the admin shows it
read-only. Once, drain, revoke, cancel, retry, token changes and configuration
left nothing behind (the admin's History was empty after actions)."""
import io
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from project.accounts.models import AuditEvent
from project.accounts.services import api_key_create
from regions.models import Agent, RegistrationToken, Task
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    key, raw = api_key_create(username="ops", scopes=["fleet:operate", "tasks:operate"])
    client = APIClient(REMOTE_ADDR="198.51.100.7")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.key = key
    return client


def test_a_fleet_action_through_the_api_is_recorded_with_who_and_where(redis_clean, operator, caplog):
    factories.agent("a1")
    assert operator.post("/api/v1/agents/a1/drain").status_code == 200
    event = AuditEvent.objects.get()
    assert (event.actor, event.action, event.target, event.outcome, event.address) == (
        f"key {operator.key.prefix}… of ops", "agent.drain", "a1", "done", "198.51.100.7")
    line = next(r for r in caplog.records if r.name == "meridian.audit")
    assert line.audit_action == "agent.drain" and line.audit_outcome == "done" and "a1" in line.getMessage()


def test_a_refused_fleet_action_is_recorded_as_refused_with_the_reason(redis_clean, operator):
    assert operator.post("/api/v1/agents/nobody/revoke").status_code == 404
    event = AuditEvent.objects.get(action="agent.revoke")
    assert event.outcome == "refused" and "nobody" in event.detail and event.target == "nobody"


def test_a_caller_refused_on_its_tasks_in_a_loop_does_not_fill_the_trail(redis_clean, operator):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.SUCCEEDED)
    for _ in range(20):
        assert operator.post(f"/api/v1/tasks/{task.id}/retry").status_code == 409
    assert not AuditEvent.objects.exists()
    cancelled = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED)
    assert operator.post(f"/api/v1/tasks/{cancelled.id}/cancel").status_code == 200
    assert AuditEvent.objects.get().action == "task.cancel"


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


def test_an_admin_action_is_recorded_and_shows_in_the_objects_history(redis_clean, staff):
    factories.agent("a1")
    pk = Agent.objects.get(agent_id="a1").pk
    staff.post("/admin/regions/agent/", {"action": "agent_revoked", "_selected_action": [str(pk)], "post": "yes"})
    assert Agent.objects.get(pk=pk).desired == Agent.Desired.STOPPED
    event = AuditEvent.objects.get()
    assert (event.actor, event.action, event.target, event.outcome) == ("user op", "agent.revoke", "a1", "done")
    assert LogEntry.objects.filter(object_id=str(pk), change_message__contains="revoked").exists()


def test_a_token_form_sent_twice_makes_one_token_and_says_so(staff):
    form = staff.get("/admin/regions/registrationtoken/add/").content.decode()
    ticket = re.search(r'name="shown_once_ticket" value="([^"]+)"', form).group(1)
    first = staff.post("/admin/regions/registrationtoken/add/", {"name": "fleet", "shown_once_ticket": ticket})
    assert first.status_code == 200 and "mrt_" in first.content.decode()
    again = staff.post("/admin/regions/registrationtoken/add/", {"name": "fleet", "shown_once_ticket": ticket})
    assert again.status_code == 409 and "nothing more was made" in again.content.decode()
    assert "mrt_" not in again.content.decode()
    assert RegistrationToken.objects.count() == 1
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor == "user op" and event.target.startswith("registration token fleet")


def test_operator_commands_are_recorded_with_the_command_and_scopes(capsys):
    call_command("create_api_key", "auditor", "--scope", "tasks:read_all")
    event = AuditEvent.objects.get(action="api_key.create")
    assert event.actor.startswith("command create_api_key by ") and event.detail == "scopes: tasks:read_all"
    call_command("create_registration_token", "--name", "edge")
    assert AuditEvent.objects.filter(action="token.create", target__startswith="registration token edge").exists()


def test_the_trail_is_read_only_in_the_admin(staff):
    factories.caller("someone")
    call_command("create_api_key", "x")
    assert staff.get("/admin/accounts/auditevent/").status_code == 200
    assert staff.get("/admin/accounts/auditevent/add/").status_code == 403
    event = AuditEvent.objects.first()
    page = staff.get(f"/admin/accounts/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()
    assert staff.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_rows_past_the_retention_are_pruned_and_the_rest_kept(settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.AUDIT_RETENTION_DAYS = 30
    old = AuditEvent.objects.create(actor="user ada", action="agent.drain", target="a1", outcome="done")
    recent = AuditEvent.objects.create(actor="user ada", action="agent.drain", target="a2", outcome="done")
    AuditEvent.objects.filter(id=old.id).update(at=timezone.now() - timedelta(days=31))
    call_command("audit_prune", stdout=(out := io.StringIO()))
    assert "1 audit rows older than 30 days" in out.getvalue()
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [recent.id]
    settings.AUDIT_RETENTION_DAYS = 0  # keep everything
    AuditEvent.objects.filter(id=recent.id).update(at=timezone.now() - timedelta(days=3000))
    call_command("audit_prune", stdout=io.StringIO())
    assert AuditEvent.objects.filter(id=recent.id).exists()
