"""A region cannot attract what it does not serve: how the router's forwards to a
region went lately counts in its rank. Regions here are real servers on local
ports (an HTTP server answering a chosen status, a TCP listener that accepts
and says nothing, a port nobody listens on); the router runs in-process."""
import re
import socket
import time

import pytest
import requests
from rest_framework.test import APIClient

from router import selectors
from router.models import ForwardOutcomes
from router.services import outcomes
from router.services.regions import region_create
from router.services.routing import route, route_all
from router.services.summaries import summary_ingest
from tests import harness
from tests.harness import wait_for
from tests.router.test_api import caller, push, summary  # noqa: F401 (fixtures)
from tests.router.test_forward import budget, forward, region_at, servers  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]

SECRET = "payload-marker-7f3a"


@pytest.fixture
def regions_http():
    """Local HTTP regions answering POSTs with a fixed status; each counts what it got."""
    made = []

    class Region_:
        def __init__(self, status: int):
            self.status, self.bodies = status, []
            self._server = harness.json_server(self.answer)
            self.url = self._server.__enter__()
            made.append(self)

        def answer(self, method, path, body):
            self.bodies.append(body)
            return self.status, {"id": "t1"} if self.status < 300 else {"detail": "busy"}

    yield Region_
    for region in made:
        region._server.__exit__(None, None, None)


@pytest.fixture
def window(settings):
    settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS = 60.0
    return settings


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there: connections are refused
    return f"http://127.0.0.1:{port}"


def ranked(capability="echo"):
    return [r["region_id"] for r in route(capability=capability, count=5).regions]


def another_web_process():
    """What a fresh router process knows: its caches empty, the database as it is."""
    selectors.regions_directory_reset()


# --- classifying an answer ----------------------------------------------------

@pytest.mark.parametrize("status, outcome", [
    (200, "answered"), (201, "answered"), (400, "answered"), (403, "answered"), (404, "answered"),
    (409, "answered"), (413, "answered"), (401, "refused"), (429, "refused"), (503, "refused"),
    (500, "error"), (502, "error"), (504, "error"),
])
def test_an_answer_is_classified_by_whose_fault_it_is(status, outcome):
    assert outcomes.forward_outcome_of_status(status) == outcome


@pytest.mark.parametrize("body, outcome", [
    ({"error": "quota_exceeded", "quota": "max_in_flight"}, "answered"),
    ({"error": "throttled"}, "refused"), ({"detail": "not json"}, "refused"), (["x"], "refused"), (None, "refused"),
])
def test_a_callers_own_quota_refusal_does_not_cost_the_region_its_rank(body, outcome):
    """A tenant over its own quota at a region (callers.<name>) is told so with a
    429: that says nothing of the region, and must not let one tenant push a
    region down the ranking for everyone by overrunning its quota on purpose."""
    assert outcomes.forward_outcome_of_status(429, body) == outcome


# --- rank ----------------------------------------------------------------------

@pytest.mark.parametrize("status", [503, 429, 500])
def test_a_region_that_refuses_loses_rank_to_an_equal_region(caller, window, regions_http, status):
    good, bad = regions_http(201), regions_http(status)
    region_at("r-good", good.url, idle=3)
    region_at("r-bad", bad.url, idle=3)  # pushed last: fresher, so it ranks first while all is equal
    assert ranked() == ["r-bad", "r-good"]
    r, _ = forward(caller)
    assert r.status_code == status and r.json()["region_id"] == "r-bad", r.content
    assert ranked() == ["r-good", "r-bad"]
    r, _ = forward(caller)
    assert r.status_code == 201 and r.json()["region_id"] == "r-good", r.content
    assert len(bad.bodies) == 1
    another_web_process()  # the outcome is shared by every router process
    assert ranked() == ["r-good", "r-bad"]


def test_a_region_that_answers_the_callers_mistake_keeps_its_rank(caller, window, regions_http):
    good, fussy = regions_http(201), regions_http(409)
    region_at("r-good", good.url, idle=3)
    region_at("r-fussy", fussy.url, idle=3)
    r, _ = forward(caller)
    assert r.status_code == 409, r.content
    assert ranked() == ["r-fussy", "r-good"]


def test_a_region_that_accepts_and_never_answers_loses_rank_after_its_timeout(caller, budget, window, servers,
                                                                             regions_http):
    silent, spare = servers("silent"), regions_http(201)
    region_at("r-spare", spare.url, idle=3)
    region_at("r-silent", silent.url, idle=3)
    r, _ = forward(caller)
    assert r.status_code == 504 and r.json()["region_id"] == "r-silent", r.content
    assert spare.bodies == []  # uncertain: never sent a second time elsewhere
    assert ranked() == ["r-spare", "r-silent"]
    answer = route(capability="echo").regions
    assert answer[1]["forward_failure_rate"] == 1.0 and answer[1]["last_forward_failure"] == "no_answer"
    assert answer[0]["forward_failure_rate"] == 0.0 and "last_forward_failure" not in answer[0]
    r, _ = forward(caller, idempotency_key="k2")
    assert r.status_code == 201 and r.json()["region_id"] == "r-spare", r.content
    assert silent.accepted == 1


def test_a_region_that_refuses_connections_is_passed_over_at_once_and_ranks_after(caller, window, regions_http):
    spare = regions_http(201)
    region_at("r-spare", spare.url, idle=1)
    region_at("r-down", closed_port_url(), idle=5)
    assert ranked() == ["r-down", "r-spare"]
    r, _ = forward(caller)  # never connected: the next region may safely take it
    assert r.status_code == 201 and r.json()["region_id"] == "r-spare", r.content
    assert ranked() == ["r-spare", "r-down"]
    row = ForwardOutcomes.objects.get(region__region_id="r-down")
    assert (row.unreachable_total, row.answered_total, row.last_failure) == (1, 0, "unreachable")


def test_a_region_failing_every_forward_ranks_last_even_with_the_most_idle(caller, window, regions_http):
    bad, small, smaller = regions_http(503), regions_http(201), regions_http(201)
    region_at("r-small", small.url, idle=2)
    region_at("r-smaller", smaller.url, idle=1)
    region_at("r-bad", bad.url, idle=5)
    forward(caller)
    assert ranked() == ["r-small", "r-smaller", "r-bad"]


def test_a_region_with_some_failures_ranks_after_an_equal_one_without(window, regions_http):
    flaky, steady = regions_http(201), regions_http(201)
    region_at("r-steady", steady.url, idle=3)
    region_at("r-flaky", flaky.url, idle=3)
    for _ in range(3):
        outcomes.forward_outcome_record(region_id="r-flaky", outcome="answered")
    outcomes.forward_outcome_record(region_id="r-flaky", outcome="error")
    answer = route(capability="echo").regions
    assert [r["region_id"] for r in answer] == ["r-steady", "r-flaky"]
    assert 0.2 <= answer[1]["forward_failure_rate"] <= 0.3


def test_a_recovered_region_regains_its_rank_after_the_window(caller, settings, regions_http):
    settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS = 1.0
    good, bad = regions_http(201), regions_http(503)
    region_at("r-good", good.url, idle=3)
    region_at("r-bad", bad.url, idle=3)
    forward(caller)
    assert ranked() == ["r-good", "r-bad"]
    time.sleep(1.6)
    assert ranked() == ["r-bad", "r-good"]
    another_web_process()
    assert ranked() == ["r-bad", "r-good"]


def test_the_only_region_serving_a_capability_is_still_chosen_while_failing(caller, window, regions_http):
    bad, other = regions_http(503), regions_http(201)
    region_at("r-bad", bad.url, idle=3)
    _, token = region_create(region_id="r-other", orchestrator_url=other.url)
    assert push(token, summary("r-other", url=other.url, caps={"ingest": {"count": 1, "idle": 1}})).status_code == 200
    for _ in range(3):
        r, _ = forward(caller)
        assert r.status_code == 503 and r.json()["region_id"] == "r-bad", r.content
    assert ranked() == ["r-bad"]
    assert len(bad.bodies) == 3 and other.bodies == []


def test_a_batch_is_ranked_by_forward_outcomes_too(window, regions_http):
    good, bad = regions_http(201), regions_http(503)
    region_at("r-good", good.url, idle=3)
    region_at("r-bad", bad.url, idle=3)
    outcomes.forward_outcome_record(region_id="r-bad", outcome="refused")
    assert [r["region_id"] for r in route_all(capabilities=["echo"], count=5)] == ["r-good", "r-bad"]


# --- what is stored and shown ---------------------------------------------------

def test_what_is_stored_of_a_forward_holds_no_task_data(caller, window, regions_http):
    bad = regions_http(503)
    region_at("r-bad", bad.url, idle=3)
    r = caller.post("/api/v1/tasks", {"capability": "echo", "payload": {"note": SECRET},
                                      "idempotency_key": f"key-{SECRET}"}, format="json")
    assert r.status_code == 503, r.content
    assert SECRET.encode() in bad.bodies[0]  # it did pass through
    rows = list(ForwardOutcomes.objects.values())
    assert len(rows) == 1 and SECRET not in repr(rows) and "echo" not in repr(rows)
    assert set(rows[0]) == {"region_id", "failed", "answered", "at", "failed_at", "last_failure",
                            "answered_total", "refused_total", "unreachable_total", "no_answer_total",
                            "error_total"}
    assert rows[0]["last_failure"] in outcomes.FAILURES


def test_recording_an_outcome_is_one_update_once_the_row_exists(window, django_assert_num_queries):
    region_at("r-one", "http://r-one.example:8000", idle=1)
    outcomes.forward_outcome_record(region_id="r-one", outcome="answered")
    with django_assert_num_queries(1):
        outcomes.forward_outcome_record(region_id="r-one", outcome="no_answer")
    row = ForwardOutcomes.objects.get(region__region_id="r-one")
    assert (row.answered_total, row.no_answer_total) == (1, 1)


@pytest.mark.urls("project.urls")
def test_the_admin_region_list_shows_recent_forward_failures(admin_client, window):
    for region_id in ["r-bad", "r-fine"]:
        region, _ = region_create(region_id=region_id, orchestrator_url=f"http://{region_id}.example:8000")
        summary_ingest(region=region, summary=summary(region_id, caps={"echo": {"count": 1, "idle": 1}}))
    outcomes.forward_outcome_record(region_id="r-bad", outcome="answered")
    outcomes.forward_outcome_record(region_id="r-bad", outcome="no_answer")
    html = admin_client.get("/admin/router/region/").content.decode()
    assert "Forwards lately" in html
    assert html.count('class="mrd-forwards"') == 1
    assert re.search(r"50% failed · last no_answer \d+ s ago", html), html


def test_metrics_count_forward_outcomes_by_region_and_outcome(settings, window):
    settings.METRICS_TOKEN = "scrape-me"
    settings.ROLE = "router"
    region_at("r-one", "http://r-one.example:8000", idle=1)
    for outcome in ["answered", "answered", "refused", "no_answer"]:
        outcomes.forward_outcome_record(region_id="r-one", outcome=outcome)
    body = APIClient(HTTP_AUTHORIZATION="Bearer scrape-me").get("/metrics").content.decode()
    assert 'meridian_router_forwards_total{outcome="answered",region="r-one"} 2.0' in body
    assert 'meridian_router_forwards_total{outcome="refused",region="r-one"} 1.0' in body
    assert 'meridian_router_forwards_total{outcome="no_answer",region="r-one"} 1.0' in body
    assert 'meridian_router_forwards_total{outcome="error",region="r-one"} 0.0' in body
    assert 'meridian_router_region_forward_failure_rate{region="r-one"} 0.5' in body


# --- a real router: every web worker ranks by what any of them saw ----------------

@pytest.mark.integration
def test_a_real_router_ranks_a_refusing_or_silent_region_last_in_every_worker_until_it_recovers(
        router_template, regions_http, servers):
    router = harness.Router(router_template)
    router.env.update(ROUTER_FORWARD_PENALTY_WINDOW_SECONDS="4", ROUTER_FORWARD_CONNECT_TIMEOUT="0.5",
                      ROUTER_FORWARD_BUDGET_SECONDS="2")
    router.start()
    try:
        good, bad, silent = regions_http(201), regions_http(503), servers("silent")
        for region_id, url in [("r-good", good.url), ("r-bad", bad.url), ("r-silent", silent.url)]:
            token = router.manage("router_add_region", region_id, url, "--summary-interval", "60")
            r = requests.post(f"{router.url}/update_regional_status", timeout=10,
                              json=summary(region_id, url=url, caps={"echo": {"count": 5, "idle": 3}}),
                              headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text

        def ranks() -> set[tuple[str, ...]]:
            """The ranking as several requests (so both web workers) answer it."""
            time.sleep(0.6)  # past DIRECTORY_CHECK_SECONDS: each worker has looked at the database
            answers = set()
            for _ in range(8):
                r = router.call("GET", "/api/v1/route?capability=echo&count=5", key=router.user_key)
                assert r.status_code == 200, r.text
                answers.add(tuple(x["region_id"] for x in r.json()["regions"]))
            return answers

        assert ranks() == {("r-silent", "r-bad", "r-good")}  # equal idle: the freshest first
        r = router.call("POST", "/api/v1/tasks", key=router.user_key,
                        json={"capability": "echo", "payload": {"note": SECRET}, "idempotency_key": "k1"})
        assert r.status_code == 504 and r.json()["region_id"] == "r-silent", r.text
        r = router.call("POST", "/api/v1/tasks", key=router.user_key,
                        json={"capability": "echo", "payload": {}, "idempotency_key": "k2"})
        assert r.status_code == 503 and r.json()["region_id"] == "r-bad", r.text
        assert ranks() == {("r-good", "r-silent", "r-bad")}  # both failed: last (freshest first), in every worker
        r = router.call("POST", "/api/v1/tasks", key=router.user_key,
                        json={"capability": "echo", "payload": {}, "idempotency_key": "k3"})
        assert r.status_code == 201 and r.json()["region_id"] == "r-good", r.text
        assert (silent.accepted, len(bad.bodies), len(good.bodies)) == (1, 1, 1)
        stored = router.db_query("SELECT * FROM router_forwardoutcomes")
        assert len(stored) == 3 and SECRET not in repr(stored) and "k1" not in repr(stored)
        wait_for(lambda: ranks() == {("r-silent", "r-bad", "r-good")}, 10, what="recovery after the window")
    finally:
        router.stop()
