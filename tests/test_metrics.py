"""Prometheus /metrics on both roles: authenticated, and saying what operators need."""
import time

import pytest
from rest_framework.test import APIClient

from regions.models import Task
from router.services.regions import region_create
from router.services.summaries import summary_ingest
from tests import factories

pytestmark = pytest.mark.django_db


def scrape(path="/metrics", token=None, accept=None):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(path, **({"HTTP_ACCEPT": accept} if accept else {}))


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text; version=1.0.0",
                                    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"])
def test_any_scraper_gets_the_text_whatever_it_accepts(redis_clean, settings, accept):
    """Prometheus, an OpenMetrics scraper or a curl script: none is refused 406."""
    settings.METRICS_TOKEN = "scrape-me"
    answer = scrape(token="scrape-me", accept=accept)
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain")
    refused = scrape(accept=accept)
    assert refused.status_code == 401 and refused.json()["error"] == "not_authenticated"


def test_region_metrics_need_the_metrics_token_or_a_key_that_reads_the_fleet(redis_clean, settings):
    settings.METRICS_TOKEN = "scrape-me"
    _, caller_key = factories.caller("plain")
    assert scrape().status_code == 401
    assert scrape(token=caller_key).status_code == 403  # a caller's key: authenticated, without fleet:read
    assert scrape(token="scrape-me").status_code == 200
    _, staff_key = factories.caller("ops", staff=True)
    assert scrape(token=staff_key).status_code == 200


def test_region_metrics_count_agents_tasks_and_liveness(redis_clean, settings):
    settings.METRICS_TOKEN = "scrape-me"
    factories.agent("a1")
    Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED, held=True)
    body = scrape(token="scrape-me").content.decode()
    assert 'meridian_agents{region="unit-1",status="online"} 1.0' in body
    assert 'meridian_tasks_held{region="unit-1"} 1.0' in body
    assert 'meridian_liveness_up{region="unit-1"} 1.0' in body
    assert 'meridian_agents_live{region="unit-1"} 1.0' in body
    assert "meridian_config_info" in body


@pytest.mark.urls("tests.router_urls")
def test_router_metrics_show_staleness_and_drift(settings):
    settings.METRICS_TOKEN = "scrape-me"
    settings.ROLE = "router"
    for region_id, sha in [("us-east-1", "aaa"), ("eu-west-3", "bbb")]:
        region, _ = region_create(region_id=region_id, orchestrator_url="http://x:1")
        summary_ingest(region=region, summary={
            "region_id": region_id, "orchestrator_url": "http://x:1", "available_agents": 3,
            "agent_capabilities_summary": {}, "last_updated": time.time(), "config_version": sha})
    body = scrape(token="scrape-me").content.decode()
    assert 'meridian_router_region_stale{region="eu-west-3"} 0.0' in body
    assert 'meridian_router_region_available_agents{region="us-east-1"} 3.0' in body
    assert "meridian_router_config_commits 2.0" in body
