"""The region's admin lists: a task's reason column says why the current
attempt waits (not the previous attempt's error), and long text wraps inside
its column (the full text in a title) instead of widening the page."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from regions.admin.tasks import TaskAdmin
from regions.models import ConfigVersion, DeadLetter, Task
from regions.services.tasks import dispatch
from regions.services.tasks.claim import task_claim
from regions.services.tasks.outcome import task_fail

pytestmark = pytest.mark.django_db

LONG = "x" * 30 + " " + "y" * 300  # an unbroken run longer than the column, and more text than it shows


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


def _cell(page: str, row_marker: str, field: str) -> str:
    row = page.split(row_marker)[1].split("</tr>")[0]
    return re.search(rf'<td class="field-{field}">(.*?)</td>', row, re.S).group(1)


def _reason(task: Task) -> str:
    return str(TaskAdmin.error_short(None, Task.objects.get(pk=task.pk)))


def test_a_task_retrying_after_a_failure_shows_why_it_waits_not_the_old_error(redis_clean, monkeypatch):
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1").run
    assert task_fail(task_id=task.id, attempt=1, agent_id="a1", error="boom from attempt 1")
    reason = _reason(task)
    assert "boom from attempt 1" not in reason and "retrying" in reason


def test_a_second_attempt_running_shows_no_error_of_the_first(redis_clean, monkeypatch):
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.QUEUED)
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1").run
    assert task_fail(task_id=task.id, attempt=1, agent_id="a1", error="boom from attempt 1")
    Task.objects.filter(pk=task.pk).update(not_before=None)
    assert task_claim(task_id=task.id, attempt=2, agent_id="a2").run
    assert "boom" not in _reason(task)


def test_a_task_queued_behind_busy_agents_says_it_waits_for_a_free_agent(redis_clean):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED,
                               dispatched_at=timezone.now())
    Task.objects.filter(pk=task.pk).update(error="boom from attempt 1", attempt=2)
    reason = _reason(task)
    assert "boom" not in reason and "free agent" in reason and "echo" in reason


def test_a_failed_task_shows_the_error_of_its_final_attempt(redis_clean):
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.FAILED,
                               error="boom on the last attempt", status_reason="failed after 1 attempt(s)")
    assert "boom on the last attempt" in _reason(task)


def test_the_task_lists_reason_wraps_with_the_full_text_in_its_title(staff, redis_clean):
    Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.FAILED, error=LONG)
    page = staff.get("/admin/regions/task/").content.decode()
    cell = re.search(r'<td class="field-error_short">(.*?)</td>', page, re.S).group(1)
    _assert_wraps(cell)


def test_config_versions_and_dead_letters_wrap_their_long_text(staff, redis_clean):
    ConfigVersion.objects.create(sha="a" * 40, subject="s", result="rejected", error=LONG)
    DeadLetter.objects.create(source="orchestrator", queue="meridian.control", reason=LONG[:500])
    _assert_wraps(re.search(r'<td class="field-reason">(.*?)</td>',
                            staff.get("/admin/regions/configversion/").content.decode(), re.S).group(1))
    _assert_wraps(re.search(r'<td class="field-reason[^"]*">(.*?)</td>',
                            staff.get("/admin/regions/deadletter/").content.decode(), re.S).group(1))


def _assert_wraps(cell: str) -> None:
    assert "overflow-wrap:anywhere" in cell and "white-space:normal" in cell and "max-width" in cell, cell[:400]
    assert 'title="' + LONG[:300] in cell  # the whole text one hover away
    assert len(re.sub(r"<[^>]+>", "", cell).strip()) < 250  # the cell shows the start only
