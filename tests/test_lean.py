"""The agent protocol's hot path (project/lean.py): heartbeat, claim and report
(and a caller's route query at the router, without a cookie) run through a
Django handler with only the middleware they need, and answer as they do
through the whole stack."""
import io
import json
import sys

import pytest

from project.lean import LEAN_MIDDLEWARE, LeanHandler, lean_for_agents
from tests import factories
from wire.endpoints import CLAIM, HEARTBEAT, REPORT


def environ(method: str, path: str, body: bytes = b"", token: str | None = None, host: str = "127.0.0.1",
            query: str = "") -> dict:
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
           "SERVER_PORT": "80", "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
           "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
           "CONTENT_TYPE": "application/json"}
    if token:
        env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return env


def call(app, *args, **kwargs) -> tuple[int, dict, bytes]:
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=int(status.split()[0]), headers={k.lower(): v for k, v in headers})

    result = app(environ(*args, **kwargs), start_response)
    try:
        return started["status"], started["headers"], b"".join(result)
    finally:
        result.close()


def test_only_the_agent_protocols_paths_take_the_lean_handler():
    taken = []

    def named(name):
        def app(environ, start_response):
            taken.append(name)
            return [b""]
        return app

    app = lean_for_agents(named("full"), named("lean"))
    lean = [HEARTBEAT.url(agent_id="a.b-1"), CLAIM.url(agent_id="x"), REPORT.url(agent_id="x")]
    full = ["/api/v1/tasks", "/api/v1/agents/register", "/api/v1/agents/x", "/api/v1/agents/x/heartbeat/",
            "/api/v1/agents/x/y/heartbeat", "/admin/", "/metrics", HEARTBEAT.url(agent_id="x") + "x"]
    for path in lean + full:
        app({"PATH_INFO": path}, None)
    assert taken == ["lean"] * len(lean) + ["full"] * len(full)
    taken.clear()
    app({"PATH_INFO": "/api/v1/route"}, None)  # an API key's route query
    app({"PATH_INFO": "/api/v1/route", "HTTP_COOKIE": "sessionid=x"}, None)  # perhaps a console user's session
    app({"PATH_INFO": "/api/v1/route/"}, None)
    assert taken == ["lean", "full", "full"]


SEEN = []


class Recorder:
    """A middleware standing for those the lean handler leaves out."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        SEEN.append(request.path)
        return self.get_response(request)


@pytest.fixture
def in_request_cycle():
    """Handlers called here as a server calls them; the test's database
    connection stays open at each request's start and end (as Django's test client does)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.mark.django_db
def test_the_lean_handler_runs_only_its_middleware(settings, redis_clean, in_request_cycle):
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_lean.Recorder"]
    full, lean = WSGIHandler(), LeanHandler()
    beat = HEARTBEAT.url(agent_id="lean-0")
    SEEN.clear()
    assert call(lean, "POST", beat, b"{}", token="at_wrong")[0] == 404  # no such agent
    assert SEEN == []
    assert call(full, "POST", beat, b"{}", token="at_wrong")[0] == 404
    assert SEEN == [beat]
    assert set(LEAN_MIDDLEWARE) < set(settings.MIDDLEWARE)


@pytest.mark.django_db
def test_a_heartbeat_claim_and_report_answer_through_it_as_through_the_whole_stack(redis_clean, in_request_cycle):
    from django.core.wsgi import get_wsgi_application

    full, lean = get_wsgi_application(), LeanHandler()
    reg = factories.agent("lean-1", capabilities=("echo",))
    beat = HEARTBEAT.url(agent_id="lean-1")
    for app in (full, lean):
        status, headers, body = call(app, "POST", beat, json.dumps({"busy": 0}).encode(), token=reg.token)
        assert status == 200 and json.loads(body)["desired"] == "active", body
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"  # they stay
        # A wrong token, a bad body, a wrong method: the same JSON refusals.
        assert call(app, "POST", beat, b"{}", token="at_wrong")[0] == 401
        status, _, body = call(app, "POST", beat, b"[", token=reg.token)
        assert status == 400 and json.loads(body)["error"] == "invalid"
        status, _, body = call(app, "GET", beat, token=reg.token)
        assert status == 405 and json.loads(body)["error"] == "method_not_allowed"
        for endpoint in (CLAIM, REPORT):  # DRF views: a body they refuse, named, never a 500
            status, _, body = call(app, "POST", endpoint.url(agent_id="lean-1"), b"{}", token=reg.token)
            assert status == 400 and json.loads(body)["error"], body
        # A Host the region does not serve: refused as on every path (ALLOWED_HOSTS).
        status, _, body = call(app, "POST", beat, b'{"busy": 0}', token=reg.token, host="evil.example")
        assert status == 400 and json.loads(body)["error"] == "bad_request"
    # Neither sets a cookie or varies on one: nothing read a session.
    status, headers, _ = call(lean, "POST", beat, b'{"busy": 0}', token=reg.token)
    assert status == 200 and "set-cookie" not in headers and "cookie" not in headers.get("vary", "").lower()


@pytest.mark.django_db
def test_a_route_query_answers_through_it_as_through_the_whole_stack(settings, redis_clean, in_request_cycle):
    from django.core.wsgi import get_wsgi_application

    from router.services.regions import region_create
    from router.services.summaries import summary_ingest
    from tests.router.test_api import summary

    settings.ROOT_URLCONF = "tests.router_urls"
    region, _ = region_create(region_id="eu-west-3", labels=["eu"], orchestrator_url="http://eu-west-3.example:8000")
    summary_ingest(region=region, summary=summary("eu-west-3", caps={"echo": {"count": 2, "idle": 1}}))
    _, key = factories.caller("router-caller")
    full, lean = get_wsgi_application(), LeanHandler()
    answers = []
    for app in (full, lean):
        got = [call(app, "GET", "/api/v1/route", token=key, query=query)
               for query in ("capability=echo", "capability=echo&residency=us", "capability=Echo", "count=2")]
        got.append(call(app, "GET", "/api/v1/route", token="mk_wrong", query="capability=echo"))
        got.append(call(app, "POST", "/api/v1/route", token=key, query="capability=echo"))
        answers.append([(status, json.loads(body)) for status, _, body in got])
        assert [status for status, _, _ in got] == [200, 503, 400, 400, 401, 405]
        assert all(headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
                   for _, headers, _ in got)
    full_answers, lean_answers = answers
    for (status, full_body), (_, lean_body) in zip(full_answers, lean_answers):
        if status == 200:  # the summary's age moves on between the two
            for body in (full_body, lean_body):
                body["regions"][0].pop("summary_age_seconds")
        assert full_body == lean_body
