"""A region believes the router only through a signed, fresh, single-use
assertion made for it and for that very request; and admits an agent the router
placed here with the router's registration grant for that agent id only."""
import json
import time

import pytest
from rest_framework.test import APIClient

from project.accounts.assertions import FORWARD, REGISTER, assertion_sign, keypair_generate, private_key_load
from regions.models import Task
from regions.services import liveness
from tests import factories

pytestmark = pytest.mark.django_db

BODY = json.dumps({"capability": "echo", "payload": {"n": 1}}).encode()


@pytest.fixture
def router_key(settings):
    return private_key_load(settings.ROUTER_SIGNING_KEY)


def forward_assertion(key, *, audience=None, body=BODY, path="/api/v1/tasks", subject="alice",
                      scopes=("tasks:submit", "tasks:read"), ttl=30.0, now=None):
    from django.conf import settings
    return assertion_sign(key=key, audience=audience or settings.REGION_ID, subject=subject, purpose=FORWARD,
                          ttl=ttl, scopes=scopes, body=body, method="POST", path=path, now=now)


def post(assertion, body=BODY, path="/api/v1/tasks"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {assertion}")
    return client.post(path, body, content_type="application/json")


def test_a_forwarded_submission_is_stored_as_the_asserted_caller(router_key, redis_clean, sent):
    r = post(forward_assertion(router_key))
    assert r.status_code == 201, r.content
    task = Task.objects.get(id=r.json()["id"])
    assert task.submitted_by.username == "alice" and task.payload == {"n": 1}
    # The caller's own key at this region (same username) sees the task directly.
    _, key = factories.caller("alice")
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert reader.get(f"/api/v1/tasks/{task.id}").status_code == 200


def test_a_forwarded_batch_is_accepted(router_key, redis_clean, sent):
    body = json.dumps({"tasks": [{"capability": "echo"}, {"capability": "echo"}]}).encode()
    r = post(forward_assertion(router_key, body=body, path="/api/v1/tasks/batch"), body=body,
             path="/api/v1/tasks/batch")
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.content


def test_the_asserted_scopes_are_all_the_caller_gets(router_key, redis_clean, sent):
    r = post(forward_assertion(router_key, scopes=("tasks:read",)))
    assert r.status_code == 403 and "tasks:submit" in r.json()["detail"], r.content
    assert not Task.objects.exists()


def test_an_assertion_replayed_is_refused(router_key, redis_clean, sent):
    assertion = forward_assertion(router_key)
    assert post(assertion).status_code == 201
    r = post(assertion)
    assert r.status_code == 401 and "already used" in r.json()["detail"], r.content
    assert r["WWW-Authenticate"].startswith("Bearer")
    assert Task.objects.count() == 1


def test_an_assertion_for_another_region_is_refused(router_key, redis_clean, sent):
    r = post(forward_assertion(router_key, audience="another-region"))
    assert r.status_code == 401 and "another region" in r.json()["detail"], r.content
    assert not Task.objects.exists()


def test_an_expired_assertion_is_refused(router_key, redis_clean, sent, settings):
    then = time.time() - settings.ROUTER_ASSERTION_TTL_SECONDS - settings.ROUTER_ASSERTION_SKEW_SECONDS - 2
    r = post(forward_assertion(router_key, now=then))
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.content


def test_an_assertion_within_the_clock_skew_allowance_is_accepted(router_key, redis_clean, sent, settings):
    r = post(forward_assertion(router_key, now=time.time() + settings.ROUTER_ASSERTION_SKEW_SECONDS - 2))
    assert r.status_code == 201, r.content


def test_an_assertion_with_another_body_is_refused(router_key, redis_clean, sent):
    other = json.dumps({"capability": "echo", "payload": {"n": 2}}).encode()
    r = post(forward_assertion(router_key), body=other)
    assert r.status_code == 401 and "body" in r.json()["detail"], r.content
    assert not Task.objects.exists()


def test_an_assertion_for_a_submission_is_refused_on_another_path(router_key, redis_clean, sent):
    body = json.dumps({"tasks": [{"capability": "echo"}]}).encode()
    r = post(forward_assertion(router_key, body=body), body=body, path="/api/v1/tasks/batch")
    assert r.status_code == 401, r.content


def test_an_assertion_signed_by_another_key_is_refused(redis_clean, sent):
    forged = private_key_load(keypair_generate()[0])
    r = post(forward_assertion(forged))
    assert r.status_code == 401 and "signature" in r.json()["detail"], r.content


def test_an_assertion_with_altered_claims_is_refused(router_key, redis_clean, sent):
    import base64
    assertion = forward_assertion(router_key, scopes=("tasks:read",))
    claims_text, _, signature = assertion[len("mra_"):].partition(".")
    claims = json.loads(base64.urlsafe_b64decode(claims_text + "=" * (-len(claims_text) % 4)))
    claims["scopes"] = ["tasks:submit", "tasks:read_all"]
    altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = post(f"mra_{altered}.{signature}")
    assert r.status_code == 401, r.content


def test_a_region_without_router_keys_takes_no_assertion(router_key, redis_clean, sent, settings):
    settings.ROUTER_PUBLIC_KEYS = []
    r = post(forward_assertion(router_key))
    assert r.status_code == 401 and "ROUTER_PUBLIC_KEYS" in r.json()["detail"], r.content


def test_both_keys_are_accepted_while_the_router_key_is_rotated(router_key, redis_clean, sent, settings):
    new_private, new_public = keypair_generate()
    settings.ROUTER_PUBLIC_KEYS = [new_public, *settings.ROUTER_PUBLIC_KEYS]
    assert post(forward_assertion(router_key)).status_code == 201
    assert post(forward_assertion(private_key_load(new_private))).status_code == 201


def test_an_assertion_is_refused_with_503_when_its_single_use_cannot_be_checked(router_key, sent, monkeypatch):
    class Down:
        def set(self, *a, **k):
            raise liveness.RedisError("down")

    monkeypatch.setattr(liveness, "client", lambda: Down())
    r = post(forward_assertion(router_key))
    assert r.status_code == 503 and r["Retry-After"], r.content
    assert not Task.objects.exists()


# --- registration grants ------------------------------------------------------------

def register(credential, agent_id="ag-1"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client.post("/api/v1/agents/register", {"agent_id": agent_id, "capabilities": ["echo"]}, format="json")


def grant(key, *, agent_id="ag-1", audience=None, ttl=300.0, now=None):
    from django.conf import settings
    return assertion_sign(key=key, audience=audience or settings.REGION_ID, subject=agent_id, purpose=REGISTER,
                          ttl=ttl, now=now)


def test_a_registration_grant_admits_the_agent_it_names(router_key, redis_clean, settings):
    settings.AGENT_REGISTRATION_TOKEN = ""
    r = register(grant(router_key))
    assert r.status_code == 201 and r.json()["agent_id"] == "ag-1", r.content


def test_a_registration_grant_for_another_agent_is_refused(router_key, redis_clean):
    r = register(grant(router_key, agent_id="ag-2"), agent_id="ag-1")
    assert r.status_code == 401 and "another agent" in r.json()["detail"], r.content


def test_a_registration_grant_for_another_region_is_refused(router_key, redis_clean):
    r = register(grant(router_key, audience="another-region"))
    assert r.status_code == 401 and "another region" in r.json()["detail"], r.content


def test_an_expired_registration_grant_is_refused(router_key, redis_clean, settings):
    r = register(grant(router_key, now=time.time() - 300 - settings.ROUTER_ASSERTION_SKEW_SECONDS - 2))
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.content


def test_a_forward_assertion_is_no_registration_grant(router_key, redis_clean):
    r = register(forward_assertion(router_key, subject="ag-1"))
    assert r.status_code == 401, r.content


def test_a_registration_grant_is_no_caller_credential(router_key, redis_clean, sent):
    r = post(grant(router_key, agent_id="alice"))
    assert r.status_code == 401, r.content


def test_a_regions_own_registration_token_still_admits_agents(redis_clean, settings):
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    assert register("reg-secret").status_code == 201
