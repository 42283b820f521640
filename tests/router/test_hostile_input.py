"""No message, from a region, an agent or a caller, can crash, poison or wedge
the router: every field is bounded, every bad body is a 4xx JSON answer, and
rows already stored with absurd values cannot break a reader."""
import io
import json
import math
import time
from datetime import datetime, timezone as dt_timezone

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from router import inputs
from router.services import forwarding
from router.services.refusals import RouterError
from router.services.regions import region_create, region_watermark_reset, registration_token_create
from router.models import Region
from tests.router.test_api import caller, push, register, regions, summary  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.fixture
def staff():
    from tests import factories

    _, key = factories.caller(username="ops", staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def registration_token():
    return registration_token_create(name="fleet")[1]


def send(token, path, body):
    """Post JSON as a client other than Django's would: ASCII-escaped, so lone
    surrogates arrive as the \\udXXX escapes JSON allows."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post(path, json.dumps(body), content_type="application/json")


def assert_reads_answer(caller, staff, registration_token):
    """Every read endpoint answers (a routing 503 is an answer), in JSON, never 500."""
    answers = {
        "route": caller.get("/api/v1/route?capability=echo"),
        "regions": staff.get("/api/v1/regions"),  # reads of the fleet need fleet:read
        "drift": staff.get("/api/v1/config/drift"),
        "register": register(registration_token, {"agent_id": "a1", "capabilities": ["echo"]}),
        "register hint": register(registration_token, {"agent_id": "a1", "capabilities": ["echo"],
                                                       "region": "eu-west-3"}),
    }
    for name, r in answers.items():
        assert r.status_code in (200, 503), (name, r.status_code, r.content[:300])
        r.json()
    metrics = staff.get("/metrics")
    assert metrics.status_code == 200, metrics.content[:300]
    return answers


# --- summaries: every field bounded -------------------------------------------

def _caps(n):
    return {f"cap{i}": {"count": 1, "idle": 1} for i in range(n)}


@pytest.mark.parametrize("field,value", [
    ("summary_interval", 1e308),
    ("summary_interval", inputs.MAX_SUMMARY_INTERVAL + 1),
    ("summary_interval", True),
    ("last_updated", 1e20),
    ("last_updated", True),
    ("available_agents", 2 ** 40),
    ("available_agents", inputs.MAX_AGENTS + 1),
    ("agent_capabilities_summary", {"echo": {"count": 2 ** 40, "idle": 0}}),
    ("agent_capabilities_summary", {"echo": {"count": inputs.MAX_AGENTS + 1, "idle": 0}}),
    ("agent_capabilities_summary", _caps(inputs.MAX_CAPABILITIES + 1)),
    ("agent_capabilities_summary", {"echo\n": {"count": 1, "idle": 1}}),
    ("agent_capabilities_summary", {"ec\x00ho": {"count": 1, "idle": 1}}),
    ("agent_capabilities_summary", {"\ud800": {"count": 1, "idle": 1}}),
    ("agent_capabilities_summary", {"echo": [1, 2]}),
    ("agent_capabilities_summary", []),
    ("orchestrator_url", "http://eu-west-3.example:8000/" + "a" * 3000),
    ("orchestrator_url", "http://eu-west-3.example:8000/\x00"),
    ("config_version", "a" * 65),
    ("config_version", "ab\x00"),
    ("config_version", "\ud800"),
    ("region_id", "eu-west-3\x00"),
    ("region_id", 3),
    ("orchestrator_url", 8000),
    ("config_version", 12),
    ("schema_version", 2 ** 40),
])
def test_out_of_bounds_summary_fields_are_400_naming_the_field(regions, field, value):
    r = send(regions["eu-west-3"], "/update_regional_status", {**summary(), field: value})
    assert r.status_code == 400, r.content
    assert field in r.json()["fields"], r.json()
    assert Region.objects.get(region_id="eu-west-3").last_updated is None  # nothing stored


def test_a_summary_dated_beyond_the_skew_allowance_is_refused_naming_last_updated(regions, settings):
    settings.ROUTER_SUMMARY_MAX_SKEW_SECONDS = 60
    r = push(regions["eu-west-3"], summary(at=time.time() + 600))
    assert r.status_code == 400, r.content
    reason = " ".join(r.json()["fields"]["last_updated"])
    assert "ROUTER_SUMMARY_MAX_SKEW_SECONDS" in reason and "60" in reason
    assert push(regions["eu-west-3"], summary(at=time.time() + 30)).status_code == 200  # within the allowance


def test_a_year_3000_summary_cannot_lock_the_region_out(regions):
    year_3000 = datetime(3000, 1, 1, tzinfo=dt_timezone.utc).timestamp()
    assert push(regions["eu-west-3"], summary(at=year_3000)).status_code == 400
    assert push(regions["eu-west-3"], summary()).status_code == 200


def test_an_absurd_summary_leaves_every_read_endpoint_answering(regions, caller, staff, registration_token):
    token = regions["eu-west-3"]
    for body in [summary(summary_interval=1e308), summary(at=1e20), summary(available_agents=2 ** 40),
                 summary(caps={"echo": {"count": 2 ** 40, "idle": 2 ** 40}})]:
        assert push(token, body).status_code == 400
    assert push(token, summary(caps={"echo": {"count": 2, "idle": 1}})).status_code == 200
    answers = assert_reads_answer(caller, staff, registration_token)
    assert answers["route"].json()["regions"][0]["region_id"] == "eu-west-3"


# --- readers: rows already stored with absurd values ---------------------------

@pytest.mark.parametrize("interval", [1e308, float("inf"), pytest.param(float("nan"), marks=pytest.mark.postgresql),
                                      -5.0, 0.0])  # SQLite stores a NaN as NULL: no such row there
def test_an_absurd_stored_interval_cannot_500_the_readers(regions, caller, staff, registration_token, interval):
    assert push(regions["eu-west-3"], summary(caps={"echo": {"count": 2, "idle": 1}})).status_code == 200
    Region.objects.filter(region_id="eu-west-3").update(summary_interval=interval)
    assert_reads_answer(caller, staff, registration_token)


def test_absurd_stored_capabilities_labels_and_dates_cannot_500_the_readers(regions, caller, staff,
                                                                           registration_token):
    for region_id in regions:
        assert push(regions[region_id], summary(region_id, caps={"echo": {"count": 2, "idle": 1}})).status_code == 200
    year_3000 = datetime(3000, 1, 1, tzinfo=dt_timezone.utc)
    Region.objects.filter(region_id="us-east-1").update(
        capabilities={"echo": "lots", "Bad Cap": {"count": "many"}, "x": [1]}, labels=7, last_updated=year_3000)
    Region.objects.filter(region_id="ap-southeast-1").update(
        capabilities=[1, 2, 3], labels={"eu": True}, config_version="x" * 64)
    Region.objects.filter(region_id="eu-west-3").update(
        capabilities={"echo": {"count": 2 ** 40, "idle": -3}, "sleep": {"count": True, "idle": 1.5}})
    answers = assert_reads_answer(caller, staff, registration_token)
    route = answers["route"].json()
    assert [r["region_id"] for r in route["regions"]] == ["eu-west-3"]  # the clamped one still routes
    assert route["regions"][0]["idle"] == 0 and route["regions"][0]["count"] == settings.ROUTER_REGION_CEILING
    listed = {r["region_id"]: r for r in answers["regions"].json()["regions"]}
    assert listed["us-east-1"]["capabilities"] == {} and listed["us-east-1"]["labels"] == []
    assert caller.get("/api/v1/route?capability=echo&residency=eu").status_code == 200
    # A later summary puts the row right again.
    assert push(regions["us-east-1"], summary("us-east-1")).status_code == 409  # the watermark holds…
    region_watermark_reset(region_id="us-east-1")
    assert push(regions["us-east-1"], summary("us-east-1")).status_code == 200  # …until an operator resets it


def test_a_registration_token_with_an_absurd_region_list_cannot_500_registration(regions):
    push(regions["eu-west-3"], summary())
    tok, raw = registration_token_create(name="odd")
    for junk in [7, "eu-west-3", {"eu-west-3": 1}, [None, 3, "eu-west-3"]]:
        tok.regions = junk
        tok.save(update_fields=["regions"])
        r = register(raw, {"agent_id": "a1", "capabilities": ["data_ingestion"]})
        assert r.status_code in (200, 403, 503), (junk, r.content[:300])


# --- operators: resetting a region's replay watermark --------------------------

def test_router_reset_region_clears_the_replay_watermark(regions):
    future = datetime(3000, 1, 1, tzinfo=dt_timezone.utc)
    Region.objects.filter(region_id="eu-west-3").update(last_updated=future)  # stored before the bounds
    r = push(regions["eu-west-3"], summary())
    assert r.status_code == 409 and "router_reset_region" in r.json()["detail"]
    out = io.StringIO()
    call_command("router_reset_region", "eu-west-3", stdout=out)
    assert "eu-west-3" in out.getvalue()
    assert Region.objects.get(region_id="eu-west-3").last_updated is None
    assert push(regions["eu-west-3"], summary()).status_code == 200
    with pytest.raises(CommandError, match="mars-1"):
        call_command("router_reset_region", "mars-1")


def test_the_admin_action_resets_the_selected_regions_watermarks(regions, monkeypatch):
    from django.contrib import admin

    from router.admin.regions import RegionAdmin

    Region.objects.update(last_updated=datetime(3000, 1, 1, tzinfo=dt_timezone.utc))
    model_admin = RegionAdmin(Region, admin.site)
    told = []
    monkeypatch.setattr(model_admin, "message_user", lambda request, message, *a, **k: told.append(message))
    model_admin.reset_replay_watermark(None, Region.objects.filter(region_id__in=["eu-west-3", "us-east-1"]))
    assert set(Region.objects.filter(last_updated__isnull=True).values_list("region_id", flat=True)) == {
        "eu-west-3", "us-east-1"}
    assert told and "2" in told[0]


# --- the router's own endpoints: bodies and strings ----------------------------

@pytest.mark.parametrize("body", ["[]", '"echo"', "123", "null", "true"])
def test_a_task_body_that_is_not_an_object_is_400_json(regions, caller, body):
    r = caller.post("/api/v1/tasks", body, content_type="application/json")
    assert r.status_code == 400, r.content
    assert r["Content-Type"].startswith("application/json")
    assert "JSON object" in json.dumps(r.json())


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/tasks", {"capability": "echo", "residency": 0}, "residency"),
    ("/api/v1/tasks", {"capability": 7}, "capability"),
    ("/api/v1/tasks/batch", {"tasks": [{"capability": "echo"}], "residency": 0}, "residency"),
])
def test_a_number_where_a_name_belongs_is_400_not_read_as_text(regions, caller, path, body, field):
    """residency: 0 was read as "0" and routed on."""
    r = caller.post(path, body, content_type="application/json")
    assert r.status_code == 400, r.content
    assert field in r.json()["fields"] and "string" in json.dumps(r.json()["fields"][field]), r.json()


def test_a_null_batch_item_is_left_to_the_region_not_a_refusal_of_the_whole_batch():
    assert inputs.task_batch_forward_parse({"tasks": [None, {"capability": "echo"}]})["capabilities"] == ["echo"]


def test_json_nested_ten_thousand_deep_is_400_json_on_every_router_endpoint(regions, caller, registration_token):
    def post(path, token=None):
        client = APIClient()
        if token:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return (client if token else caller).post(path, DEEP, content_type="application/json")

    answers = {
        "/update_regional_status": post("/update_regional_status", regions["eu-west-3"]),
        "/register_agent": post("/register_agent", registration_token),
        "/api/v1/tasks": post("/api/v1/tasks"),
    }
    for path, r in answers.items():
        assert r.status_code == 400, (path, r.status_code, r.content[:200])
        assert "nested deeper" in r.json()["detail"], path


def test_a_region_answering_deeply_nested_json_cannot_500_the_forward(regions, caller, monkeypatch):
    push(regions["eu-west-3"], summary(caps={"echo": {"count": 1, "idle": 1}}))

    class Deep:
        status_code = 201
        text = DEEP

        def json(self):
            return json.loads(DEEP)

    monkeypatch.setattr(forwarding.requests, "post", lambda *a, **k: Deep())
    r = caller.post("/api/v1/tasks", {"capability": "echo", "payload": {}}, format="json")
    assert r.status_code == 201, r.content[:300]
    assert r.json()["region_id"] == "eu-west-3" and "detail" in r.json()["task"]


@pytest.mark.parametrize("query", [
    "capability=%00", "capability=echo%00", "capability=%ED%A0%80", "capability=echo&residency=%00",
    "capability=echo&residency=eu%ED%A0%80", "capability=echo&count=%00",
])
def test_nul_and_surrogates_in_route_queries_are_4xx_json(regions, caller, query):
    push(regions["eu-west-3"], summary(caps={"echo": {"count": 1, "idle": 1}}))
    r = caller.get(f"/api/v1/route?{query}")
    assert 400 <= r.status_code < 500, (query, r.status_code, r.content[:300])
    r.json()


@pytest.mark.parametrize("path,body", [
    ("/api/v1/tasks", {"capability": "ec\x00ho"}),
    ("/api/v1/tasks", {"capability": "\ud800"}),
    ("/api/v1/tasks", {"capability": "echo", "residency": "e\x00u"}),
    ("/api/v1/tasks", {"capability": "echo", "residency": "\udfff"}),
    ("/api/v1/tasks", {"capability": ["echo"]}),
])
def test_nul_and_surrogates_in_task_bodies_are_4xx_json(regions, caller, path, body):
    r = caller.post(path, json.dumps(body), content_type="application/json")
    assert 400 <= r.status_code < 500, (body, r.status_code, r.content[:300])
    assert "capability" in r.json().get("fields", {}) or "residency" in r.json().get("fields", {})


@pytest.mark.parametrize("extra", [
    {"region": "eu-west-3\x00"}, {"region": "\ud800"}, {"region": "a" * 65}, {"region": None}, {"region": []},
    {"agent_id": "a\x00"}, {"agent_id": "\ud800"},
    {"capabilities": ["ec\x00ho"]}, {"capabilities": ["\ud800"]},
    {"capabilities": ["echo"] * 201}, {"capabilities": "echo"}, {"capabilities": [["echo"]]},
])
def test_register_agent_refuses_bad_strings_and_bounds_with_4xx_json(regions, registration_token, extra):
    push(regions["eu-west-3"], summary())
    r = send(registration_token, "/register_agent", {"agent_id": "a1", "capabilities": ["echo"], **extra})
    assert r.status_code == 400, (extra, r.status_code, r.content[:300])
    assert set(extra) <= set(r.json()["fields"]), r.json()


@pytest.mark.parametrize("body", ["[]", '"x"', "null", "7"])
def test_register_agent_and_summaries_refuse_non_object_bodies_with_400_json(regions, registration_token, body):
    for path, token in [("/register_agent", registration_token), ("/update_regional_status", regions["eu-west-3"])]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        r = client.post(path, body, content_type="application/json")
        assert r.status_code == 400, (path, body, r.content[:300])
        assert r.json()["error"] == "invalid"


def test_region_create_bounds_labels_and_url():
    with pytest.raises(RouterError, match="label"):
        region_create(region_id="x-1", orchestrator_url="http://x.example", labels=["Not A Label"])
    with pytest.raises(RouterError, match="label"):
        region_create(region_id="x-1", orchestrator_url="http://x.example",
                      labels=[f"l{i}" for i in range(inputs.MAX_LABELS + 1)])
    with pytest.raises(RouterError, match="orchestrator_url"):
        region_create(region_id="x-1", orchestrator_url="http://x.example/" + "a" * 300)
    with pytest.raises(RouterError, match="summary_interval"):
        region_create(region_id="x-1", orchestrator_url="http://x.example", summary_interval=math.inf)
    assert not Region.objects.filter(region_id="x-1").exists()
