"""The router's contracts, in-process on the real PostgreSQL test database."""
import time
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from router.models import Region
from router.services.regions import region_create, registration_token_create
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]


def summary(region_id="eu-west-3", url=None, caps=None, at=None, **extra):
    url = url or f"http://{region_id}.example:8000"
    return {"region_id": region_id, "orchestrator_url": url, "available_agents": 5,
            "agent_capabilities_summary": caps if caps is not None else {"data_ingestion": {"count": 3, "idle": 2}},
            "last_updated": at or time.time(), **extra}


@pytest.fixture
def regions():
    tokens = {}
    for region_id, labels in [("us-east-1", ["us"]), ("eu-west-3", ["eu"]), ("ap-southeast-1", ["apac"])]:
        _, tokens[region_id] = region_create(region_id=region_id, labels=labels,
                                             orchestrator_url=f"http://{region_id}.example:8000")
    return tokens


def push(token, body):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/update_regional_status", body, format="json")


@pytest.fixture
def caller():
    _, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_region_updates_its_own_summary(regions):
    r = push(regions["eu-west-3"], summary(config_version="abc123"))
    assert r.status_code == 200, r.content
    region = Region.objects.get(region_id="eu-west-3")
    assert region.capabilities == {"data_ingestion": {"count": 3, "idle": 2}}
    assert region.config_version == "abc123" and region.config_since is not None


def test_a_summary_cannot_move_the_regions_registered_url(regions):
    r = push(regions["eu-west-3"], summary(url="http://attacker.example:8000"))
    assert r.status_code == 403 and "differs from the one registered" in r.json()["detail"]


def test_a_summary_from_a_single_label_host_is_accepted(regions):
    """docker-compose's regions are http://us-east-1:8000: no dot, no TLD."""
    region_create(region_id="us-east-1", orchestrator_url="http://us-east-1:8000", token=regions["us-east-1"])
    r = push(regions["us-east-1"], summary("us-east-1", url="http://us-east-1:8000"))
    assert r.status_code == 200, r.content


def test_a_region_cannot_update_another(regions):
    r = push(regions["us-east-1"], summary("eu-west-3"))
    assert r.status_code == 403 and "us-east-1" in r.json()["detail"]


def test_summaries_need_a_region_token(regions):
    assert push("", summary()).status_code == 401
    assert push("mrg_forged", summary()).status_code == 401


def test_an_older_or_replayed_summary_is_refused_with_409(regions):
    now = time.time()
    assert push(regions["eu-west-3"], summary(at=now)).status_code == 200
    assert push(regions["eu-west-3"], summary(at=now)).status_code == 409
    r = push(regions["eu-west-3"], summary(at=now - 60))
    assert r.status_code == 409 and "not newer" in r.json()["detail"]


@pytest.mark.parametrize("field,value", [
    ("available_agents", -1), ("last_updated", "yesterday"), ("orchestrator_url", "not a url"),
    ("agent_capabilities_summary", {"data_ingestion": {"count": 1}}),
    ("agent_capabilities_summary", {"Bad Cap": {"count": 1, "idle": 0}}),
    ("agent_capabilities_summary", {"x": {"count": 1, "idle": 5}}),
])
def test_malformed_summaries_are_400_naming_the_field(regions, field, value):
    r = push(regions["eu-west-3"], {**summary(), field: value})
    assert r.status_code == 400 and field in r.json()["fields"], r.content


def test_missing_summary_fields_are_named(regions):
    r = push(regions["eu-west-3"], {"region_id": "eu-west-3"})
    assert r.status_code == 400
    assert {"orchestrator_url", "available_agents", "agent_capabilities_summary", "last_updated"} <= set(
        r.json()["fields"])


def test_route_ranks_by_idle_capacity_and_respects_residency(regions, caller):
    push(regions["us-east-1"], summary("us-east-1", caps={"echo": {"count": 10, "idle": 1}}))
    push(regions["eu-west-3"], summary("eu-west-3", caps={"echo": {"count": 3, "idle": 3}}))
    push(regions["ap-southeast-1"], summary("ap-southeast-1", caps={"sleep": {"count": 3, "idle": 3}}))
    r = caller.get("/api/v1/route?capability=echo")
    assert [x["region_id"] for x in r.json()["regions"]] == ["eu-west-3", "us-east-1"]
    assert r.json()["skipped"] == {"ap-southeast-1": "no agent serves echo"}
    r = caller.get("/api/v1/route?capability=echo&residency=us")
    assert [x["region_id"] for x in r.json()["regions"]] == ["us-east-1"]
    r = caller.get("/api/v1/route?capability=sleep&residency=eu")
    assert r.status_code == 503 and "residency" in r.json()["detail"]


def test_a_route_answer_names_at_most_twenty_skipped_regions_and_counts_them(caller):
    tokens = {f"r{i:02d}": region_create(region_id=f"r{i:02d}", labels=["eu"],
                                         orchestrator_url=f"http://r{i:02d}.example:8000")[1]
              for i in range(25)}
    for region_id, token in tokens.items():
        caps = {"echo": {"count": 1, "idle": 1}} if region_id == "r24" else {"sleep": {"count": 1, "idle": 1}}
        assert push(token, summary(region_id, caps=caps)).status_code == 200
    body = caller.get("/api/v1/route?capability=echo").json()
    assert [x["region_id"] for x in body["regions"]] == ["r24"]
    assert body["skipped_total"] == 24
    assert body["skipped"] == {f"r{i:02d}": "no agent serves echo" for i in range(20)}


def test_stale_regions_are_skipped_and_come_back_when_summaries_resume(regions, caller):
    push(regions["us-east-1"], summary("us-east-1", caps={"echo": {"count": 1, "idle": 1}}, summary_interval=1))
    push(regions["eu-west-3"], summary("eu-west-3", caps={"echo": {"count": 9, "idle": 9}}, summary_interval=1))
    Region.objects.filter(region_id="eu-west-3").update(received_at=Region.objects.get(
        region_id="eu-west-3").received_at - timedelta(seconds=4))
    r = caller.get("/api/v1/route?capability=echo")
    assert [x["region_id"] for x in r.json()["regions"]] == ["us-east-1"]
    assert "stale" in r.json()["skipped"]["eu-west-3"]
    push(regions["eu-west-3"], summary("eu-west-3", caps={"echo": {"count": 9, "idle": 9}}, summary_interval=1))
    assert caller.get("/api/v1/route?capability=echo").json()["regions"][0]["region_id"] == "eu-west-3"


def test_route_input_errors_and_auth(regions, caller):
    assert caller.get("/api/v1/route").status_code == 400
    assert caller.get("/api/v1/route?capability=Bad!").status_code == 400
    assert caller.get("/api/v1/route?capability=echo&count=0").status_code == 400
    assert APIClient().get("/api/v1/route?capability=echo").status_code == 401


def register(token, body, **extra):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/register_agent", body, format="json", **extra)


def test_register_agent_picks_hint_then_cidr_then_spare_capacity(regions):
    for region_id, idle in [("us-east-1", 1), ("eu-west-3", 7), ("ap-southeast-1", 2)]:
        push(regions[region_id], summary(region_id, caps={"echo": {"count": 9, "idle": idle}}))
    _, token = registration_token_create(name="fleet")
    body = {"agent_id": "a1", "capabilities": ["echo"]}
    assert register(token, body).json()["region_id"] == "eu-west-3"  # most spare capacity
    Region.objects.get(region_id="ap-southeast-1").address_rules.create(cidr="10.20.0.0/16")
    r = register(token, body, REMOTE_ADDR="10.20.3.4")
    assert r.json()["region_id"] == "ap-southeast-1"
    r = register(token, {**body, "region": "us-east-1"}, REMOTE_ADDR="10.20.3.4")
    assert r.status_code == 200 and r.json()["region_id"] == "us-east-1"
    assert r.json()["regional_orchestrator_url"] == "http://us-east-1.example:8000"


def test_register_agent_errors(regions):
    body = {"agent_id": "a1", "capabilities": ["echo"]}
    assert register(None, body).status_code == 401
    assert register("mrt_forged", body).status_code == 401
    _, limited = registration_token_create(name="eu only", regions=["eu-west-3"])
    assert register(limited, body).status_code == 503  # no healthy region it may use
    push(regions["us-east-1"], summary("us-east-1"))
    assert register(limited, {**body, "region": "us-east-1"}).status_code == 403
    r = register(limited, {"agent_id": "bad id", "capabilities": []})
    assert r.status_code == 400 and {"agent_id", "capabilities"} <= set(r.json()["fields"])
    assert register(limited, {**body, "region": "mars-1"}).status_code == 400


def test_the_router_stores_no_per_agent_record(regions):
    push(regions["eu-west-3"], summary())
    _, token = registration_token_create(name="fleet")
    from django.apps import apps

    before = {m._meta.db_table: m.objects.count() for m in apps.get_app_config("router").get_models()}
    for i in range(5):
        assert register(token, {"agent_id": f"a{i}", "capabilities": ["data_ingestion"]}).status_code == 200
    after = {m._meta.db_table: m.objects.count() for m in apps.get_app_config("router").get_models()}
    assert before == after
