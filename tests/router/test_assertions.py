"""No credential leaves the router: a forward carries the router's signed
assertion, made for the chosen region and that body, never the caller's key;
a joining agent gets a registration grant for its region and its id only."""
import hashlib
import json

import pytest
import requests
from rest_framework.test import APIClient
from urllib3.exceptions import MaxRetryError, NewConnectionError

from project.accounts.assertions import (
    FORWARD,
    REGISTER,
    AssertionInvalid,
    assertion_verify,
    router_public_keys,
)
from router.services import forwarding
from router.services.regions import registration_token_create
from tests import factories
from tests.router.test_api import push, register, summary  # noqa: F401
from tests.router.test_forward import region_at

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]


class Created:
    status_code = 201

    def json(self):
        return {"id": "t1"}


@pytest.fixture
def posted(monkeypatch):
    """What the router sends regions: (url, headers, data) of each POST, answered 201."""
    sent = []

    def post(url, *, data, headers, **kwargs):
        sent.append((url, headers, data))
        return Created()

    monkeypatch.setattr(forwarding.requests, "post", post)
    return sent


def verify(raw: str, *, audience: str, purpose: str = FORWARD):
    return assertion_verify(raw, keys=router_public_keys(), audience=audience, purpose=purpose, skew=5)


def test_a_forward_never_relays_the_callers_key(posted):
    region_at("idle", "http://idle.example:8000", idle=5)
    _, key = factories.caller("alice")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {"capability": "echo", "payload": {"n": 1}}
    r = client.post("/api/v1/tasks", body, format="json")
    assert r.status_code == 201, r.content
    [(url, headers, data)] = posted
    assert url == "http://idle.example:8000/api/v1/tasks"
    assert key not in json.dumps(headers) and key.encode() not in data
    scheme, _, assertion = headers["Authorization"].partition(" ")
    assert scheme == "Bearer" and assertion.startswith("mra_")
    claims = verify(assertion, audience="idle")
    assert claims.subject == "alice" and set(claims.scopes) == {"tasks:submit", "tasks:read"}
    assert claims.body == hashlib.sha256(data).hexdigest() and json.loads(data) == body
    assert (claims.method, claims.path) == ("POST", "/api/v1/tasks")
    assert claims.expires_at - claims.issued_at <= 30
    with pytest.raises(AssertionInvalid):  # it is for that region only
        verify(assertion, audience="busy")


def test_a_staff_key_is_not_relayed_either_and_its_scopes_are_asserted(posted):
    region_at("idle", "http://idle.example:8000", idle=5)
    _, key = factories.caller("root", staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {"tasks": [{"capability": "echo"}]}
    assert client.post("/api/v1/tasks/batch", body, format="json").status_code == 201
    [(url, headers, data)] = posted
    assert key not in json.dumps(headers)
    claims = verify(headers["Authorization"].split(" ", 1)[1], audience="idle")
    assert "fleet:operate" in claims.scopes and claims.path == "/api/v1/tasks/batch"


def test_each_region_tried_gets_an_assertion_of_its_own(monkeypatch):
    region_at("first", "http://first.example:8000", idle=5)
    region_at("second", "http://second.example:8000", idle=3)
    sent = []

    def post(url, *, data, headers, **kwargs):
        sent.append((url, headers["Authorization"]))
        if "first" in url:
            raise requests.ConnectionError(MaxRetryError(None, url, NewConnectionError(None, "refused")))
        return Created()

    monkeypatch.setattr(forwarding.requests, "post", post)
    _, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    r = client.post("/api/v1/tasks", {"capability": "echo"}, format="json")
    assert r.status_code == 201 and r.json()["region_id"] == "second", r.content
    (_, to_first), (_, to_second) = sent
    assert verify(to_first.split()[1], audience="first") and verify(to_second.split()[1], audience="second")


def test_a_router_without_a_signing_key_forwards_nothing(settings, monkeypatch):
    settings.ROUTER_SIGNING_KEY = ""
    region_at("idle", "http://idle.example:8000", idle=5)
    monkeypatch.setattr(forwarding.requests, "post", lambda *a, **k: pytest.fail("forwarded"))
    _, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    r = client.post("/api/v1/tasks", {"capability": "echo"}, format="json")
    assert r.status_code == 503 and "ROUTER_SIGNING_KEY" in r.json()["detail"], r.content


def test_an_assertion_is_no_credential_at_the_router(posted):
    region_at("idle", "http://idle.example:8000", idle=5)
    _, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.post("/api/v1/tasks", {"capability": "echo"}, format="json")
    [(_, headers, data)] = posted
    replay = APIClient()
    replay.credentials(HTTP_AUTHORIZATION=headers["Authorization"])
    r = replay.post("/api/v1/tasks", data, content_type="application/json")
    assert r.status_code == 401, r.content
    assert len(posted) == 1


def test_register_agent_hands_a_grant_for_that_region_and_agent_only():
    region_at("idle", "http://idle.example:8000", idle=5)
    _, token = registration_token_create(name="fleet")
    r = register(token, {"agent_id": "ag-7", "capabilities": ["echo"]})
    assert r.status_code == 200, r.content
    answer = r.json()
    assert answer["region_id"] == "idle" and token not in json.dumps(answer)
    grant = verify(answer["registration_grant"], audience="idle", purpose=REGISTER)
    assert grant.subject == "ag-7" and 240 <= grant.expires_at - grant.issued_at <= 300
    for audience, purpose in [("busy", REGISTER), ("idle", FORWARD)]:
        with pytest.raises(AssertionInvalid):
            verify(answer["registration_grant"], audience=audience, purpose=purpose)
