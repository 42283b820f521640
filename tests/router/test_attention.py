"""The router's "needs attention" list (router/attention.py): stale regions,
regions without agents, configuration drift, failing forwards, and every
region's own items as its summary carried them (bounded; never task data)."""
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from router.attention import router_attention
from router.models import Region
from router.services.outcomes import forward_outcome_record
from router.services.regions import region_create

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]

ITEM = {"kind": "no_live_agent", "severity": "critical", "text": "capability pdf: 3 pending tasks and no live "
        "agent takes its work", "count": 3}


def summary(region_id: str, *, caps=None, config="a" * 40, **extra) -> dict:
    return {"region_id": region_id, "orchestrator_url": f"http://{region_id}.example:8000", "available_agents": 1,
            "agent_capabilities_summary": {"echo": {"count": 2, "idle": 1}} if caps is None else caps,
            "last_updated": time.time(), "config_version": config, **extra}


@pytest.fixture
def regions():
    tokens = {}
    for region_id in ("us-east-1", "eu-west-3", "ap-southeast-1"):
        _, tokens[region_id] = region_create(region_id=region_id, orchestrator_url=f"http://{region_id}.example:8000")
    return tokens


def push(token: str, body: dict):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/update_regional_status", body, format="json")


def test_a_summary_carries_its_items_and_the_router_stores_them(regions):
    r = push(regions["eu-west-3"], summary("eu-west-3", attention=[ITEM]))
    assert r.status_code == 200, r.content
    assert Region.objects.get(region_id="eu-west-3").attention == [ITEM]
    r = push(regions["eu-west-3"], summary("eu-west-3"))  # a region of an older release: none
    assert r.status_code == 200, r.content
    assert Region.objects.get(region_id="eu-west-3").attention == []


@pytest.mark.parametrize("value,says", [
    ([ITEM] * 51, "at most 50 items"),
    ("everything", "list"),
    ([{**ITEM, "severity": "panic"}], "severity"),
    ([{**ITEM, "text": "x" * 301}], "300"),
    ([{**ITEM, "text": "bell\x07"}], "printable"),
    ([{**ITEM, "count": -1}], "count"),
    ([{**ITEM, "count": True}], "count"),
    ([{**ITEM, "kind": "Bad Kind!"}], "kind"),
    ([{k: v for k, v in ITEM.items() if k != "text"}], "text"),
    ([42], "attention"),
    ([{**ITEM, "path": "https://evil.example/admin/"}], "path"),
    ([{**ITEM, "path": "//evil.example/admin/"}], "path"),
    ([{**ITEM, "path": "/admin/\n"}], "path"),
    ([{**ITEM, "path": "/admin/" + "x" * 300}], "path"),
])
def test_bad_attention_items_are_400_naming_the_field(regions, value, says):
    r = push(regions["eu-west-3"], summary("eu-west-3", attention=value))
    assert r.status_code == 400, r.content
    fields = r.json()["fields"]
    assert "attention" in fields and says in str(fields["attention"]) + "attention", fields


def test_router_lists_stale_empty_drifting_and_failing_regions_and_each_regions_own_items(regions, settings):
    push(regions["us-east-1"], summary("us-east-1", attention=[ITEM]))
    push(regions["eu-west-3"], summary("eu-west-3", caps={}))
    push(regions["ap-southeast-1"], summary("ap-southeast-1", config="b" * 40))
    Region.objects.filter(region_id="ap-southeast-1").update(received_at=timezone.now() - timedelta(minutes=10))
    region_create(region_id="sa-east-1", orchestrator_url="http://sa-east-1.example:8000")  # never reported
    forward_outcome_record(region_id="us-east-1", outcome="refused")
    items = router_attention()
    texts = [(i["severity"], i["text"]) for i in items]
    assert ("critical", "region ap-southeast-1: no summary for 10 min (stale); routing skips it") in texts
    assert ("critical", "region sa-east-1 has never sent a summary; routing skips it") in texts
    assert ("critical", "region eu-west-3 reports no agent taking work") in texts
    assert ("critical", "us-east-1: " + ITEM["text"]) in texts
    assert ("warning", f"region ap-southeast-1 runs configuration {'b' * 12}, the majority {'a' * 12}") in texts
    assert ("warning", "forwards to region us-east-1 failing: 100% lately (last: refused); routing ranks it last") \
        in texts
    assert [i["severity"] for i in items] == sorted((i["severity"] for i in items),
                                                    key=("critical", "warning").index)
    own = next(i for i in items if i["text"].startswith("us-east-1: "))
    assert own["href"] == "http://us-east-1.example:8000/admin/" and own["count"] == 3
    stale = next(i for i in items if "ap-southeast-1: no summary" in i["text"])
    assert stale["href"] == f"/admin/router/region/{Region.objects.get(region_id='ap-southeast-1').pk}/change/"


def test_a_regions_item_links_to_the_list_in_its_console_that_shows_it(regions):
    """The region sends the path of its filtered list (only a path under /admin/):
    the router links it on the region's own address."""
    path = "/admin/regions/task/?capability__exact=pdf&status__in=queued%2Cwaiting"
    assert push(regions["us-east-1"], summary("us-east-1", attention=[{**ITEM, "path": path}])).status_code == 200
    own = next(i for i in router_attention() if i["text"].startswith("us-east-1: "))
    assert own["href"] == "http://us-east-1.example:8000" + path
    # A path stored by other means than a summary is held to the same rule.
    Region.objects.filter(region_id="us-east-1").update(attention=[{**ITEM, "path": "//evil.example/"}])
    own = next(i for i in router_attention() if i["text"].startswith("us-east-1: "))
    assert own["href"] == "http://us-east-1.example:8000/admin/"


def test_a_stale_regions_old_items_are_not_shown_and_malformed_stored_items_are_left_out(regions):
    push(regions["us-east-1"], summary("us-east-1", attention=[ITEM]))
    Region.objects.filter(region_id="us-east-1").update(
        attention=[ITEM, {"kind": "x"}, "text", {**ITEM, "severity": "panic"}, {**ITEM, "text": "a\x1bb"}])
    assert [i["text"] for i in router_attention() if i["text"].startswith("us-east-1: ")] == [
        "us-east-1: " + ITEM["text"], "us-east-1: ab"]
    Region.objects.filter(region_id="us-east-1").update(received_at=timezone.now() - timedelta(hours=1))
    assert not [i for i in router_attention() if i["text"].startswith("us-east-1: ")]


@pytest.mark.urls("project.urls")
def test_router_overview_shows_the_panel(regions, settings, admin_client):
    from router.services.summaries import summary_ingest

    settings.ROLE = "router"
    summary_ingest(region=Region.objects.get(region_id="us-east-1"), summary=summary("us-east-1", attention=[ITEM]))
    page = admin_client.get("/admin/").content.decode()
    panel = page.split('id="ov-attention"')[1].split('id="ov-regions"')[0]
    assert "Needs attention (" in panel and 'href="http://us-east-1.example:8000/admin/"' in panel
    assert "us-east-1: capability pdf" in panel


def test_fleet_status_on_the_router_prints_the_panel_first(regions, settings):
    from io import StringIO

    from django.core.management import call_command

    from console.management.commands.fleet_status import exit_status

    settings.ROLE = "router"
    push(regions["us-east-1"], summary("us-east-1", attention=[{**ITEM, "severity": "warning"}]))
    out = StringIO()
    call_command("fleet_status", stdout=out)
    text = out.getvalue()
    assert text.startswith("Needs attention (")
    assert "  WARNING   us-east-1: capability pdf" in text.split("Router as of")[0]
    assert exit_status(router_attention()) == 2  # eu-west-3 and ap-southeast-1 never reported: critical
    assert exit_status([{**ITEM, "severity": "warning"}]) == 1 and exit_status([]) == 0


def test_a_router_with_no_enabled_region_or_no_signing_key_needs_attention(settings):
    assert [i["kind"] for i in router_attention()] == ["no_regions"]
    region_create(region_id="eu-west-3", orchestrator_url="http://eu-west-3.example:8000")
    Region.objects.update(enabled=False)
    assert [i["kind"] for i in router_attention()] == ["no_regions"]
    Region.objects.update(enabled=True)
    settings.ROUTER_SIGNING_KEY = ""
    kinds = [i["kind"] for i in router_attention()]
    assert "no_signing_key" in kinds and "no_regions" not in kinds, kinds


def test_a_region_saying_it_has_no_agent_is_one_line_not_two(regions):
    own = {"kind": "no_agents", "severity": "critical", "text": "no live agent in this region: no task can run",
           "count": 0, "path": "/admin/regions/agent/?status__exact=online"}
    push(regions["eu-west-3"], summary("eu-west-3", caps={}, attention=[own]))
    push(regions["us-east-1"], summary("us-east-1", caps={}))
    lines = [(i["kind"], i["text"]) for i in router_attention() if "eu-west-3" in i["text"] or "us-east-1" in i["text"]]
    assert ("no_agents", "eu-west-3: no live agent in this region: no task can run") in lines
    assert not [line for line in lines if line[0] == "region_no_agents" and "eu-west-3" in line[1]], lines
    assert ("region_no_agents", "region us-east-1 reports no agent taking work") in lines
