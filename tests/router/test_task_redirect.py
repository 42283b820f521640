"""A task reference works from the router alone: its reads and actions are
redirected (307) to the owning region, never proxied; a batch is forwarded
whole to one region that serves every capability in it."""

import pytest
from rest_framework.test import APIClient

from router.services import forwarding
from router.services.regions import region_create, region_update
from tests.router.test_api import caller, push, summary  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]

TASK = "6a1f2c3e-9b7d-4e8a-a5c1-2f3d4e5b6c7d"  # fixed: it is in test ids, which every test process collects alike


def region_at(region_id: str, url: str, caps: dict) -> None:
    _, token = region_create(region_id=region_id, orchestrator_url=url)
    r = push(token, summary(region_id, url=url, caps=caps))
    assert r.status_code == 200, r.content


@pytest.fixture
def eu():
    region_at("eu-west-3", "http://eu.example:8000", {"echo": {"count": 2, "idle": 1}})


@pytest.mark.parametrize("method, path", [
    ("get", f"/api/v1/tasks/{TASK}"), ("post", f"/api/v1/tasks/{TASK}/cancel"),
    ("post", f"/api/v1/tasks/{TASK}/retry"), ("post", "/api/v1/tasks/wait")])
def test_a_tasks_request_is_redirected_to_its_region_with_the_same_path_and_query(caller, eu, method, path):
    r = getattr(caller, method)(f"{path}?wait=30&region=eu-west-3", format="json")
    assert r.status_code == 307, r.content
    assert r["Location"] == f"http://eu.example:8000{path}?wait=30"
    assert r.json() == {"region_id": "eu-west-3", "location": r["Location"]}


def test_a_redirect_carries_no_task_data_and_touches_no_region(caller, eu, monkeypatch):
    monkeypatch.setattr(forwarding.requests, "post", lambda *a, **k: pytest.fail("proxied"))
    monkeypatch.setattr(forwarding.requests, "get", lambda *a, **k: pytest.fail("proxied"), raising=False)
    r = caller.get(f"/api/v1/tasks/{TASK}?region=eu-west-3")
    assert r.status_code == 307 and set(r.json()) == {"region_id", "location"}


def test_a_tasks_request_without_its_region_is_a_400_naming_region(caller, eu):
    for query in ("", "?region=", "?region=eu%20west", "?region=eu-west-3&region=us-east-1"):
        r = caller.get(f"/api/v1/tasks/{TASK}{query}")
        assert r.status_code == 400, (query, r.content)
        assert list(r.json()["fields"]) == ["region"] and "region_id" in r.json()["fields"]["region"][0]


def test_an_unknown_or_disabled_region_is_a_404(caller, eu):
    r = caller.get(f"/api/v1/tasks/{TASK}?region=nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found" and "nowhere" in r.json()["detail"]
    region_update(region_id="eu-west-3", orchestrator_url="http://eu.example:8000", labels=[],
                  enabled=False)
    r = caller.post(f"/api/v1/tasks/{TASK}/cancel?region=eu-west-3")
    assert r.status_code == 404, r.content


def test_a_redirect_needs_an_api_key(eu):
    r = APIClient().get(f"/api/v1/tasks/{TASK}?region=eu-west-3")
    assert r.status_code == 401 and "Location" not in r


class _Answer:
    status_code = 200

    def json(self):
        return {"accepted": 1, "refused": 0, "results": []}


def test_a_batch_goes_whole_to_one_region_serving_all_its_capabilities(caller, monkeypatch):
    region_at("echo-only", "http://echo.example:8000", {"echo": {"count": 9, "idle": 9}})
    region_at("both", "http://both.example:8000", {"echo": {"count": 1, "idle": 1}, "sleep": {"count": 1, "idle": 1}})
    sent = []
    monkeypatch.setattr(forwarding.requests, "post", lambda url, **k: sent.append((url, k["data"])) or _Answer())
    body = {"tasks": [{"capability": "echo", "payload": {"n": 1}}, {"capability": "sleep", "payload": {}}]}
    r = caller.post("/api/v1/tasks/batch", body, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["region_id"] == "both" and r.json()["batch"]["accepted"] == 1
    assert [url for url, _ in sent] == ["http://both.example:8000/api/v1/tasks/batch"]
    assert b'"n": 1' in sent[0][1] or b'"n":1' in sent[0][1]  # the body passes through as sent


def test_a_batch_no_region_can_take_whole_is_a_503_and_sent_nowhere(caller, monkeypatch):
    region_at("echo-only", "http://echo.example:8000", {"echo": {"count": 9, "idle": 9}})
    region_at("sleep-only", "http://sleep.example:8000", {"sleep": {"count": 9, "idle": 9}})
    monkeypatch.setattr(forwarding.requests, "post", lambda *a, **k: pytest.fail("forwarded"))
    r = caller.post("/api/v1/tasks/batch", {"tasks": [{"capability": "echo"}, {"capability": "sleep"}]},
                    format="json")
    assert r.status_code == 503 and "all of echo, sleep" in r.json()["detail"], r.content


def test_a_batch_is_pinned_and_bounded_like_a_single_forward(caller, monkeypatch):
    region_at("busy", "http://busy.example:8000", {"echo": {"count": 1, "idle": 0}})
    region_at("idle", "http://idle.example:8000", {"echo": {"count": 5, "idle": 5}})
    sent = []
    monkeypatch.setattr(forwarding.requests, "post", lambda url, **k: sent.append(url) or _Answer())
    r = caller.post("/api/v1/tasks/batch", {"tasks": [{"capability": "echo"}], "region": "busy"}, format="json")
    assert r.status_code == 200 and sent == ["http://busy.example:8000/api/v1/tasks/batch"], r.content
    for body, field in [({"tasks": []}, "tasks"), ({"tasks": [{"capability": "Bad Name"}, 7]}, "tasks"),
                        ({"tasks": [{"capability": "echo"}], "region": "a b"}, "region"), ([1], "non_field_errors")]:
        r = caller.post("/api/v1/tasks/batch", body, format="json")
        assert r.status_code == 400 and list(r.json()["fields"]) == [field], (body, r.content)
