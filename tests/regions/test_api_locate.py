"""The router's task finder at a region: GET /api/v1/tasks/<id>/locate answers
the router, and only the router, with where a task is (found, status,
capability, times) and never with what it holds (payload, result, error)."""
import time
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from project.accounts.assertions import (FORWARD, LOCATE, assertion_sign, keypair_generate, private_key_load)
from regions.models import Task
from tests import factories

pytestmark = pytest.mark.django_db

MARKER = "payload-marker-locate-5c1e"
FIELDS = {"found", "status", "capability", "created_at", "finished_at"}


@pytest.fixture
def router_key(settings):
    return private_key_load(settings.ROUTER_SIGNING_KEY)


@pytest.fixture
def task():
    user, _ = factories.caller("tenant-a")
    return Task.objects.create(capability="echo", payload={"secret": MARKER}, timeout=60, max_attempts=3,
                               status=Task.Status.FAILED, result={"out": MARKER}, error=f"boom {MARKER}",
                               submitted_by=user, finished_at=timezone.now())


def locate_assertion(key, task_id, *, audience=None, ttl=10.0, now=None, purpose=LOCATE):
    from django.conf import settings
    return assertion_sign(key=key, audience=audience or settings.REGION_ID, subject="operator-ann",
                          purpose=purpose, ttl=ttl, task=str(task_id), now=now)


def locate(task_id, credential: str | None):
    client = APIClient()
    if credential:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client.get(f"/api/v1/tasks/{task_id}/locate")


def test_the_router_locates_a_task_and_reads_nothing_of_it(router_key, redis_clean, task):
    r = locate(task.id, locate_assertion(router_key, task.id))
    assert r.status_code == 200, r.content
    body = r.json()
    assert set(body) == FIELDS
    assert body["found"] is True and body["status"] == "failed" and body["capability"] == "echo"
    assert body["created_at"] and body["finished_at"]
    assert MARKER not in r.content.decode()


def test_a_task_this_region_does_not_hold_is_found_false(router_key, redis_clean, task):
    other = uuid.uuid4()
    r = locate(other, locate_assertion(router_key, other))
    assert r.status_code == 200, r.content
    assert r.json() == {"found": False, "status": None, "capability": None, "created_at": None, "finished_at": None}


def test_a_task_id_that_is_not_a_uuid_is_a_400(router_key, redis_clean):
    r = locate("not-a-uuid", locate_assertion(router_key, "not-a-uuid"))
    assert r.status_code == 400, r.content
    assert r.json()["error"] == "invalid" and "task_id" in r.json()["fields"]


def test_no_credential_is_a_401_json(redis_clean, task):
    r = locate(task.id, None)
    assert r.status_code == 401 and r.json()["error"] == "not_authenticated"


@pytest.mark.parametrize("staff", [False, True])
def test_an_api_key_cannot_locate_even_its_own_or_anothers_task(redis_clean, task, staff):
    """Only the router's locate assertion opens this endpoint: no caller's key,
    whatever its scopes, learns here that another tenant's task exists."""
    _, key = factories.caller("tenant-b", staff=staff)
    r = locate(task.id, key)
    assert r.status_code == 401, r.content
    assert MARKER not in r.content.decode() and "echo" not in r.content.decode()


def test_a_forward_assertion_cannot_locate(router_key, redis_clean, task):
    r = locate(task.id, locate_assertion(router_key, task.id, purpose=FORWARD))
    assert r.status_code == 401 and "locate" in r.json()["detail"], r.content


def test_a_locate_assertion_cannot_read_or_submit(router_key, redis_clean, task, sent):
    """The credential locates tasks and does nothing else: the task's own
    detail and a submission refuse it."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {locate_assertion(router_key, task.id)}")
    assert client.get(f"/api/v1/tasks/{task.id}").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {locate_assertion(router_key, task.id)}")
    assert client.post("/api/v1/tasks", {"capability": "echo"}, format="json").status_code == 401
    assert Task.objects.count() == 1


def test_a_forged_assertion_is_a_401(redis_clean, task):
    forged = private_key_load(keypair_generate()[0])
    r = locate(task.id, locate_assertion(forged, task.id))
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Bearer"), r.content


def test_an_expired_assertion_is_a_401(router_key, redis_clean, task):
    r = locate(task.id, locate_assertion(router_key, task.id, ttl=1, now=time.time() - 120))
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.content


def test_an_assertion_for_another_region_is_a_401(router_key, redis_clean, task):
    r = locate(task.id, locate_assertion(router_key, task.id, audience="elsewhere-1"))
    assert r.status_code == 401 and "another region" in r.json()["detail"], r.content


def test_an_assertion_for_another_task_is_a_403(router_key, redis_clean, task):
    r = locate(task.id, locate_assertion(router_key, uuid.uuid4()))
    assert r.status_code == 403 and "another task" in r.json()["detail"], r.content


def test_a_replayed_locate_assertion_is_a_401(router_key, redis_clean, task):
    assertion = locate_assertion(router_key, task.id)
    assert locate(task.id, assertion).status_code == 200
    r = locate(task.id, assertion)
    assert r.status_code == 401 and "already used" in r.json()["detail"], r.content
