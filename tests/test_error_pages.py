"""Every error on an API path is JSON, {"error": code, "detail": message},
whichever layer answers it (the URL resolver, a plain Django view's method
check, the request body limit, an unhandled exception); the admin keeps
Django's HTML pages. In-process, both roles' URLs."""
import pytest
from django.test import Client, override_settings

from regions import selectors
from regions.api.views import agents as region_views

pytestmark = pytest.mark.django_db


def _json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert body["error"] == code and body["detail"], body
    return body


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/tasks", "/api/v1/tasks/not-a-uuid", "/nothing-here"])
def test_an_unknown_url_on_a_region_is_404_json(client, path):
    body = _json_error(client.get(path), 404, "not_found")
    assert path in body["detail"]


@pytest.mark.urls("tests.router_urls")
@pytest.mark.parametrize("path", ["/register_agnt", "/api/v1/rout", "/api/v1/regions/x/y"])
def test_an_unknown_url_on_the_router_is_404_json(client, path):
    _json_error(client.get(path), 404, "not_found")


def test_a_wrong_method_on_the_plain_heartbeat_view_is_405_json_naming_the_allowed_one(client):
    response = client.get("/api/v1/agents/some-agent/heartbeat")
    body = _json_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST" and "GET" in body["detail"] and "POST" in body["detail"]


@pytest.mark.parametrize("method", ["TRACE", "POST", "PUT", "DELETE"])
def test_healthz_answers_get_and_head_only(client, method):
    """TRACE /healthz answered 200."""
    response = client.generic(method, "/healthz")
    _json_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD"
    assert client.get("/healthz").status_code == 200 and client.head("/healthz").status_code == 200


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_over_the_upload_limit_is_413_json(client):
    response = client.post("/api/v1/agents/some-agent/heartbeat", b'{"busy": 0, "pad": "' + b"x" * 2000 + b'"}',
                           content_type="application/json", HTTP_AUTHORIZATION="Bearer t")
    body = _json_error(response, 413, "payload_too_large")
    assert "1000" in body["detail"]


def test_a_request_for_a_host_not_allowed_is_400_json(client):
    _json_error(client.get("/api/v1/agents", HTTP_HOST="evil.example"), 400, "bad_request")


def test_an_unhandled_exception_in_a_plain_view_is_500_json(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(region_views, "heartbeat_record", broken)
    response = Client(raise_request_exception=False).post(
        "/api/v1/agents/some-agent/heartbeat", {"busy": 0}, content_type="application/json",
        HTTP_AUTHORIZATION="Bearer t")
    body = _json_error(response, 500, "server_error")
    assert "a bug" not in body["detail"]  # the traceback goes to the log, not to the caller


def test_an_unhandled_exception_in_an_api_view_is_500_json(monkeypatch, admin_user):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "agent_list", broken)
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    _json_error(client.get("/api/v1/agents"), 500, "server_error")


def test_admin_error_pages_stay_html():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")
    response = client.get("/admin/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
